"""Judge templates as data: a YAML file of Jinja prompts, a label vocabulary and an output format.

Built-in templates live in ``trust/judges/templates/*.yaml``; a sweep (or ``qtrust judge``) may name
its own file, so a user adds a judge template without code. A template sees these names:

- ``prompt``: the request the judged model answered (its last user message),
- ``response``: the judged model's answer,
- ``attributes``: the item's attributes (e.g. ``attributes.scenario``),
- every name of the template's ``lookups`` (e.g. ``criterion``, read from a data file by a key
  rendered from the item: OpenSafetyMini's per-scenario safety criterion).

Outputs are read by :mod:`trust.judges.verdicts`: ``json`` (one object; the label in
``label_field``, the reason in ``reason_field``), ``label`` (a label word at the start of the
first line), or ``guard`` (``safe`` / ``unsafe`` on the first line, the categories on the second).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from trust.benchmarks.expressions import names_in_template, render
from trust.judges.verdicts import (
    JUDGE_ERROR,
    Verdict,
    failed,
    find_json_object,
    first_label_word,
    match_label,
)
from trust.yaml_safe import YamlInputError, load_yaml_file

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
INPUT_NAMES = frozenset({"prompt", "response", "attributes"})


class TemplateError(ValueError):
    """A judge template file that cannot be used; the message names the file, the field and the fix."""


class Lookup(BaseModel):
    """A value read from a JSON file of the data folder: ``file`` (a mapping) at the rendered ``key``."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="JSON file (an object) relative to the data folder")
    key: str = Field(description="Jinja template over the item's attributes, e.g. '{{ attributes.scenario }}'")
    default: str | None = Field(None, description="value when the key is missing (else the judgment is an error)")


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["json", "label", "guard"]
    label_field: str = "label"
    reason_field: str | None = "reason"
    category_field: str | None = None


class JudgeTemplate(BaseModel):
    """One judge template (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    version: str
    description: str
    for_benchmarks: list[str] = Field(default_factory=list, description="benchmarks this template was written for")
    labels: dict[str, list[str]] = Field(description="label -> other words the judge may use for it")
    label_descriptions: dict[str, str] = Field(default_factory=dict)
    system: str | None = None
    user: str
    lookups: dict[str, Lookup] = Field(default_factory=dict)
    output: OutputSpec
    max_new_tokens: int = Field(256, ge=1, le=8192)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if len(value) < 2:
            raise ValueError("a judge needs at least two labels")
        if JUDGE_ERROR in value:
            raise ValueError(f"'{JUDGE_ERROR}' is reserved for judgments that cannot be read")
        return value

    @model_validator(mode="after")
    def _names(self) -> JudgeTemplate:
        known = INPUT_NAMES | set(self.lookups)
        for where, text in (("system", self.system), ("user", self.user)):
            if text is None:
                continue
            unknown = sorted(names_in_template(text) - known)
            if unknown:
                raise ValueError(f"{where} uses unknown name(s) {unknown}; a template sees {sorted(known)}")
        for name, lookup in self.lookups.items():
            unknown = sorted(names_in_template(lookup.key) - {"attributes"})
            if unknown:
                raise ValueError(f"lookups.{name}.key uses {unknown}; a lookup key sees only 'attributes'")
        return self

    @property
    def identity(self) -> str:
        """What names this template in a judgment's key: name, version and a digest of its content."""
        content = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return f"{self.name}@{self.version}#{hashlib.sha256(content).hexdigest()[:12]}"

    # -- prompts -------------------------------------------------------------------------------
    def messages(
        self, prompt: str, response: str, attributes: dict[str, str] | None = None, data_dir: Path | None = None
    ) -> list[dict[str, str]]:
        """The chat messages asking the judge about one answer."""
        context: dict[str, Any] = {"prompt": prompt, "response": response, "attributes": dict(attributes or {})}
        for name, lookup in self.lookups.items():
            context[name] = self._lookup(name, lookup, context["attributes"], data_dir)
        messages = []
        if self.system:
            messages.append({"role": "system", "content": render(self.system, context)})
        messages.append({"role": "user", "content": render(self.user, context)})
        return messages

    def _lookup(self, name: str, lookup: Lookup, attributes: dict[str, str], data_dir: Path | None) -> str:
        if data_dir is None:
            raise TemplateError(
                f"judge template {self.name!r}: lookups.{name} reads {lookup.file}; pass the data folder"
            )
        table = _json_table(str(Path(data_dir) / lookup.file))
        key = render(lookup.key, {"attributes": attributes}).strip()
        if key in table:
            return str(table[key])
        if lookup.default is not None:
            return lookup.default
        raise TemplateError(
            f"judge template {self.name!r}: {lookup.file} has no entry {key!r} (lookups.{name}); "
            "add one or give the lookup a default"
        )

    # -- verdicts ------------------------------------------------------------------------------
    def parse(self, raw: str | None) -> Verdict:
        """The label in a judge's output, or :data:`JUDGE_ERROR` with the raw text and the reason."""
        text = raw or ""
        if not text.strip():
            return failed(text, "the judge returned nothing")
        out = self.output
        if out.format == "json":
            obj, problem = find_json_object(text)
            if obj is None:
                return failed(text, problem or "no JSON object")
            if out.label_field not in obj:
                return failed(text, f"the JSON has no '{out.label_field}' field")
            label = match_label(obj[out.label_field], self.labels)
            if label is None:
                return failed(text, f"'{obj[out.label_field]}' is not one of {sorted(self.labels)}")
            reason = obj.get(out.reason_field) if out.reason_field else None
            category = obj.get(out.category_field) if out.category_field else None
            return Verdict(
                label=label,
                reason=None if reason is None else str(reason),
                category=None if category is None else str(category),
                raw=text,
            )
        label = first_label_word(text, self.labels)
        if label is None:
            return failed(text, f"the output does not start with one of {sorted(self.labels)}")
        category = None
        if out.format == "guard":
            lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
            category = lines[1] if len(lines) > 1 else None
        return Verdict(label=label, category=category, raw=text)


@lru_cache(maxsize=32)
def _json_table(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"{path} not found (a judge template's lookup reads it from the data folder)") from None
    except json.JSONDecodeError as err:
        raise TemplateError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{path} must hold a JSON object (key -> text)")
    return data


def load_template_file(path: str | Path) -> JudgeTemplate:
    """Read and validate one template file (a :class:`TemplateError` names the file and the field)."""
    path = Path(path).expanduser()
    where = f"judge template {path}"
    if not path.is_file():
        raise TemplateError(f"{where}: file not found")
    try:
        data = load_yaml_file(path, where)
    except YamlInputError as err:
        raise TemplateError(str(err)) from None
    if not isinstance(data, dict):
        raise TemplateError(f"{where}: the file must hold a mapping (name, version, labels, user, output, ...)")
    try:
        return JudgeTemplate.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors())
        raise TemplateError(f"{where}: {problems}") from None


@lru_cache(maxsize=1)
def builtin_templates() -> dict[str, JudgeTemplate]:
    """Every built-in template by name."""
    out = {}
    for path in sorted(TEMPLATES_DIR.glob("*.yaml")):
        template = load_template_file(path)
        if template.name in out:
            raise TemplateError(f"judge template {path}: name {template.name!r} is used twice")
        out[template.name] = template
    return out


def get_template(name_or_path: str | Path) -> JudgeTemplate:
    """A built-in template by name, or a template file by path."""
    text = str(name_or_path)
    templates = builtin_templates()
    if text in templates:
        return templates[text]
    if text.endswith((".yaml", ".yml")) or "/" in text:
        return load_template_file(text)
    raise TemplateError(f"unknown judge template {text!r}; built in: {', '.join(sorted(templates))} (or a .yaml file)")
