"""A benchmark defined by a YAML definition (see :mod:`trust.benchmarks.definition`)."""

from __future__ import annotations

import difflib
import hashlib
import json
import random
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    create_model,
    field_validator,
)

from trust.answers.parsing import parse_label_words
from trust.answers.refusal import detect_refusal, refusal_kind
from trust.answers.short import short_answer
from trust.benchmarks.base import Benchmark
from trust.benchmarks.data import BenchmarkDataError, file_digest
from trust.benchmarks.definition import BenchmarkDefinition, Demonstrations
from trust.benchmarks.expressions import (
    LETTERS,
    evaluate,
    names_in_expression,
    names_in_template,
    render,
)
from trust.benchmarks.metric_plan import (
    CompiledMetric,
    compile_metrics,
    compute,
    direction,
    names_by_entry,
    per_item_values,
)
from trust.benchmarks.records import (
    SOURCE_FILE,
    PathResolver,
    Record,
    is_glob,
    matching_files,
    read_records,
)
from trust.metrics.functions import ScoreInput
from trust.types import INVALID, REFUSED, Item

COMPLIED = "complied"
FULL_REFUSAL = "full_refusal"
PARTIAL_REFUSAL = "partial_refusal"

_CLAUSE_END = re.compile(r"[.;!?\n]")


class DefinitionError(ValueError):
    """A benchmark definition that cannot work; ``problems`` has one line per problem."""

    def __init__(self, where: str, problems: list[str]):
        self.where = where
        self.problems = problems
        super().__init__(f"{where}: " + "; ".join(problems))


class FieldFailure(ValueError):
    """A template or expression of the definition failed on one record; ``field`` names it."""

    def __init__(self, field: str, record: Record, cause: BaseException):
        self.field = field
        self.record = record
        self.cause = cause
        super().__init__(f"{field}: fails on record _index {record.get('_index')}: {cause}")


def _options_model(definition: BenchmarkDefinition) -> type[BaseModel]:
    fields: dict[str, Any] = {name: (Any, spec.default) for name, spec in definition.parameters.items()}
    validators = {}
    for name, spec in definition.parameters.items():
        if spec.allowed is not None:
            allowed = list(spec.allowed)

            def check(cls: Any, value: Any, _allowed: list[Any] = allowed, _name: str = name) -> Any:
                if value not in _allowed:
                    raise ValueError(f"{_name} must be one of {_allowed}")
                return value

            validators[f"check_{name}"] = field_validator(name)(classmethod(check))
    return create_model(
        f"{definition.name}_options",
        __config__=ConfigDict(extra="forbid"),
        __validators__=validators,  # type: ignore[arg-type]
        **fields,
    )


def _parse_option_letter(text: str, n_options: int, option_texts: list[str]) -> str | None:
    """A letter A.. of the options from an answer such as "B", "(C) ...", "Answer: D" or the option text."""
    letters = LETTERS[:n_options]
    stripped = text.strip()
    patterns = [
        rf"^\(?([{letters}])\)?(?:[.):,\s]|$)",
        rf"\b(?:answer|option|choice)(?: is)?\s*:?\s*\(?([{letters}])\)?\b",
    ]
    for pattern in patterns:
        match = re.search(pattern, stripped, flags=re.IGNORECASE if pattern != patterns[0] else 0)
        if match:
            return match.group(1).upper()
    lowered = stripped.lower()
    hits = [i for i, option in enumerate(option_texts) if option and option.lower() in lowered]
    if len(hits) == 1:
        return letters[hits[0]]
    return None


def _match_key(value: Any) -> Any:
    """A demonstration-match value usable as a dict key (lists and dicts compared by their JSON)."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


@dataclass
class _PoolCache:
    """One load's demonstration pool: its records grouped by match value, and the turns rendered per value."""

    pool: list[Record]
    groups: dict[Any, list[Record]] = field(default_factory=dict)
    turns: dict[Any, list[dict[str, str]]] = field(default_factory=dict)


class DeclarativeBenchmark(Benchmark):
    """Loads, renders, parses and scores items as its definition says."""

    def __init__(
        self,
        definition: BenchmarkDefinition,
        options: dict[str, Any] | None = None,
        definition_path: Path | None = None,
    ) -> None:
        self.definition = definition
        self.definition_path = definition_path
        self.name = definition.name
        self.version = definition.version
        self.task = definition.task
        self.description = definition.description
        self.Options = _options_model(definition)
        self.options = self.Options.model_validate(options or {})
        self._params: dict[str, Any] | None = None
        self._pool_cache: _PoolCache | None = None
        self._metrics, problems = compile_metrics(definition)
        if problems:
            raise DefinitionError(f"benchmark {definition.name!r}", problems)
        self.metric_names = tuple(name for entry in self._metrics for name in entry.names)
        self.primary_metric = definition.primary_metric

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        if self._params is None:
            self._params = self.options.model_dump()
        return self._params

    def _resolver(self, data_dir: Path) -> PathResolver:
        folder = self.definition_path.parent if self.definition_path else None
        return PathResolver(data_dir, folder, lambda text: render(text, {"params": self.params}))

    @property
    def data_files(self) -> tuple[str, ...]:
        d = self.definition
        files = [d.data.path, *d.data.side_arrays.values(), *(j.path for j in d.data.join)]
        demos = d.prompt.demonstrations
        if demos and demos.pool:
            files += [demos.pool.path, *demos.pool.side_arrays.values(), *(j.path for j in demos.pool.join)]
        return tuple(render(f, {"params": self.params}) for f in files)

    def dataset_digest(self, data_dir: Path) -> str:
        resolve = self._resolver(data_dir)
        combined = hashlib.sha256()
        for relative in self.data_files:
            paths = matching_files(resolve, relative) if is_glob(relative) else [resolve(relative)]
            for path in paths:
                name = relative if len(paths) == 1 and not is_glob(relative) else f"{relative}:{path.name}"
                combined.update(name.encode() + b"\0" + file_digest(path).encode() + b"\n")
        return combined.hexdigest()

    @property
    def id_template(self) -> str:
        """The item id template; a multi-file source left at the default id also names the file."""
        d = self.definition
        if is_glob(d.data.path) and "id" not in d.model_fields_set:
            return "{{ " + SOURCE_FILE + " }}/{{ _index }}"
        return d.id

    def _context(self, record: Record) -> dict[str, Any]:
        """The names templates see: the record's fields, ``record`` (the whole record, for fields that only
        some records have, e.g. ``record.premise`` under a task conditional; a field named ``record`` wins) and ``params``."""
        return {"record": record, **record, "params": self.params}

    def _demo_count(self, demos: Demonstrations) -> int | None:
        """How many demonstrations: ``count`` as given, or its template rendered over the options."""
        if demos.count is None or isinstance(demos.count, int):
            return demos.count
        text = render(demos.count, {"params": self.params}).strip()
        if not text.isdigit():
            raise DefinitionError(
                f"benchmark {self.definition.name!r}",
                [f"prompt.demonstrations.count rendered {text!r}, not a whole number >= 0"],
            )
        return int(text)

    def _demonstrations(self, demos: Demonstrations, record: Record, pool: list[Record] | None) -> list[dict[str, str]]:
        if demos.source == "item":
            entries = record.get(demos.field or "") or []
            shots = [e if isinstance(e, dict) else dict(zip(demos.columns or ["input", "label"], e)) for e in entries]
            count = self._demo_count(demos)
            if count is not None:
                shots = shots[:count]
        else:
            shots = pool or []
        messages = []
        joined = self.definition.prompt.style == "completion"
        for shot in shots:
            context = {"record": shot, **shot, "params": self.params}
            question, answer = render(demos.user, context), render(demos.assistant, context)
            if joined:  # one block of the completion text: question, separator, answer
                messages.append({"role": "user", "content": question + demos.completion_separator + answer})
            else:
                messages.append({"role": "user", "content": question})
                messages.append({"role": "assistant", "content": answer})
        return messages

    def _pool(self, data_dir: Path) -> list[Record] | None:
        """The pool's records: the demonstrations themselves, or (with ``match``) every candidate."""
        demos = self.definition.prompt.demonstrations
        if demos is None or demos.source != "pool" or demos.pool is None:
            return None
        wanted = self._demo_count(demos)
        if wanted == 0:
            return []
        records = read_records(demos.pool, self._resolver(data_dir))
        if demos.match:
            return records  # chosen per item, among those matching it
        return self._choose(demos, records, wanted)

    @staticmethod
    def _choose(demos: Demonstrations, records: list[Record], wanted: int | None) -> list[Record]:
        count = len(records) if wanted is None else min(wanted, len(records))
        if count >= len(records):
            return records
        if demos.order == "first":
            return records[:count]
        return random.Random(demos.seed).sample(records, count)

    def _pool_turns(self, demos: Demonstrations, record: Record, pool: list[Record]) -> list[dict[str, str]]:
        """The demonstration turns of ``record`` from the pool, rendered once per pool (and per match value)."""
        cache = self._pool_cache
        if cache is None or cache.pool is not pool:
            cache = self._pool_cache = _PoolCache(pool)
            if demos.match:
                for candidate in pool:
                    cache.groups.setdefault(_match_key(evaluate(demos.match, self._context(candidate))), []).append(
                        candidate
                    )
        key = _match_key(evaluate(demos.match, self._context(record))) if demos.match else None
        if key not in cache.turns:
            shots = self._choose(demos, cache.groups.get(key, []), self._demo_count(demos)) if demos.match else pool
            cache.turns[key] = self._demonstrations(demos, record, shots)
        return [dict(m) for m in cache.turns[key]]

    def _messages(self, record: Record, pool: list[Record] | None, options: list[str] | None) -> list[dict[str, str]]:
        prompt = self.definition.prompt
        context = self._context(record)
        if options is not None:
            context["options"] = options
        messages: list[dict[str, str]] = []
        if prompt.system is not None:
            messages.append({"role": "system", "content": render(prompt.system, context)})
        for turn in prompt.preamble:
            messages.append({"role": turn.role, "content": render(turn.content, context)})
        if prompt.demonstrations is not None:
            if prompt.demonstrations.source == "item":
                messages.extend(self._demonstrations(prompt.demonstrations, record, pool))
            else:
                messages.extend(self._pool_turns(prompt.demonstrations, record, pool or []))
        messages.append({"role": "user", "content": render(prompt.user, context)})
        if prompt.style == "completion":
            text = "\n\n".join(m["content"] for m in messages)
            return [{"role": "completion", "content": text}]
        return messages

    # -- the Benchmark interface ------------------------------------------------------------------
    def records(self, data_dir: Path) -> list[Record]:
        """The records the items come from (after the data source's filters)."""
        return read_records(self.definition.data, self._resolver(Path(data_dir)))

    def load_all(self, data_dir: Path) -> list[Item]:
        records = self.records(data_dir)
        if records:
            self.check_fields(records[0])
        pool = self._pool(Path(data_dir))
        items: list[Item] = []
        seen: set[str] = set()
        for record in records:
            try:
                item = self.item(record, pool)
            except FieldFailure as err:
                raise BenchmarkDataError(f"{self.definition.name}: {err}; fix that field of the definition") from None
            if item.id in seen:
                hint = (
                    " (the data has several files: include {{ _file }})" if is_glob(self.definition.data.path) else ""
                )
                raise BenchmarkDataError(
                    f"{self.definition.name}: item id {item.id!r} repeats; make 'id' unique per record{hint}"
                )
            seen.add(item.id)
            items.append(item)
        return items

    def reference_of(self, record: Record) -> str | None:
        """The record's raw reference value (before ``reference.map``)."""
        d = self.definition
        if d.reference is None:
            return None
        raw = evaluate(d.reference.value, self._context(record))
        return str(raw) if raw is not None else None

    def item(self, record: Record, pool: list[Record] | None) -> Item:
        """The item of one record (templates rendered, reference mapped, attributes evaluated).

        A template or expression that fails raises :class:`FieldFailure` naming its field."""
        try:
            return self._item(record, pool)
        except (BenchmarkDataError, FieldFailure):
            raise
        except Exception as err:
            raise FieldFailure(self._failing_field(record), record, err) from err

    def _failing_field(self, record: Record) -> str:
        """The field whose template or expression fails on ``record``, tried in the order :meth:`item` uses them."""
        d = self.definition
        context = self._context(record)
        steps: list[tuple[str, str, bool]] = []
        if d.answer is not None and d.answer.kind == "options":
            steps.append(("answer.choices", d.answer.choices or "[]", True))
        if d.task == "loglikelihood" and d.loglikelihood is not None:
            steps.append(("loglikelihood.choices", d.loglikelihood.choices, True))
        if d.reference is not None:
            steps.append(("reference.value", d.reference.value, True))
        steps += [(f"attributes.{name}", expr, True) for name, expr in d.attributes.items()]
        steps.append(("id", self.id_template, False))
        for name, source, is_expression in steps:
            try:
                value = (evaluate if is_expression else render)(source, context)
                if name.startswith(("attributes.", "reference.")):
                    str(value)  # as item() uses it: an undefined value fails here
            except Exception:
                return name
            if name == "answer.choices":
                context["options"] = [str(o) for o in value]
        prompt = [("prompt.system", d.prompt.system)] if d.prompt.system is not None else []
        prompt += [(f"prompt.preamble[{i}].content", turn.content) for i, turn in enumerate(d.prompt.preamble)]
        prompt.append(("prompt.user", d.prompt.user))
        for name, source in prompt:
            try:
                render(source or "", context)
            except Exception:
                return name
        return "prompt.demonstrations" if d.prompt.demonstrations is not None else "item"

    def _item(self, record: Record, pool: list[Record] | None) -> Item:
        d = self.definition
        context = self._context(record)
        options = None
        if d.answer is not None and d.answer.kind == "options":
            options = [str(o) for o in evaluate(d.answer.choices or "[]", context)] + list(d.answer.extra_options)
        choices = None
        if d.task == "loglikelihood" and d.loglikelihood is not None:
            choices = [d.loglikelihood.prefix + str(c) for c in evaluate(d.loglikelihood.choices, context)]
        reference = self.reference_of(record)
        if d.reference is not None and d.reference.map is not None:
            if reference not in d.reference.map:
                raise BenchmarkDataError(
                    f"{d.name}: record {record['_index']} has reference {reference!r}, "
                    f"not one of {sorted(d.reference.map)} in reference.map"
                )
            reference = d.reference.map[reference]
        if choices is not None and reference is not None and reference.isdigit():
            if int(reference) >= len(choices):
                raise BenchmarkDataError(
                    f"{d.name}: record {record['_index']} has reference index {reference} but only "
                    f"{len(choices)} choice(s); the reference and the choices do not belong together"
                )
            reference = choices[int(reference)]
        attributes = {name: str(evaluate(expr, context)) for name, expr in d.attributes.items()}
        if SOURCE_FILE in record and SOURCE_FILE not in attributes:
            attributes[SOURCE_FILE] = str(record[SOURCE_FILE])
        if options is not None:
            attributes["options"] = json.dumps(options, ensure_ascii=False)
        return Item(
            id=render(self.id_template, context),
            messages=self._messages(record, pool, options),
            reference=reference,
            choices=choices,
            attributes=attributes,
        )

    def check_fields(self, record: Record) -> None:
        """Fail with a clear message when a template names a field the records do not have."""
        d = self.definition
        known = set(record) | {"params", "options", "LETTERS", "record"}
        problems = []
        checks: list[tuple[str, set[str]]] = [
            ("id", names_in_template(self.id_template)),
            ("prompt.user", names_in_template(d.prompt.user)),
        ]
        if d.prompt.system:
            checks.append(("prompt.system", names_in_template(d.prompt.system)))
        for i, turn in enumerate(d.prompt.preamble):
            checks.append((f"prompt.preamble[{i}]", names_in_template(turn.content)))
        if d.reference:
            checks.append(("reference.value", names_in_expression(d.reference.value)))
        if d.answer and d.answer.choices:
            checks.append(("answer.choices", names_in_expression(d.answer.choices)))
        if d.loglikelihood:
            checks.append(("loglikelihood.choices", names_in_expression(d.loglikelihood.choices)))
        for name, expr in d.attributes.items():
            checks.append((f"attributes.{name}", names_in_expression(expr)))
        fields = sorted(set(record) - {"_index"})
        for where, names in checks:
            unknown = sorted(names - known)
            if unknown:
                close = [m for name in unknown for m in difflib.get_close_matches(name, fields, n=2, cutoff=0.6)]
                hint = f" (did you mean {' or '.join(repr(m) for m in dict.fromkeys(close))}?)" if close else ""
                problems.append(
                    f"{where} uses unknown field(s) {unknown}{hint}; the records have: {', '.join(fields)}, _index"
                )
        if problems:
            raise DefinitionError(f"benchmark {d.name!r}", problems)

    def parse_context(self, item: Item) -> Hashable:
        """Only option answers read the item (its ``options``); label and open answers read the output alone."""
        answer = self.definition.answer
        if answer is not None and answer.kind not in ("open", "labels", "short"):
            return item.attributes.get("options", "[]")
        return None

    def parse(self, item: Item, output: str) -> str:
        answer = self.definition.answer
        if answer is None:
            return INVALID
        if answer.kind == "open":
            if not output.strip():
                return INVALID
            if answer.refusal_kinds:
                kind = refusal_kind(output)
                return {"full": FULL_REFUSAL, "partial": PARTIAL_REFUSAL}.get(kind, COMPLIED)
            return REFUSED if detect_refusal(output) else COMPLIED
        if answer.refusal and detect_refusal(output):
            return REFUSED
        if answer.kind == "short":
            return short_answer(output) or INVALID
        text = output
        if answer.first_clause:
            text = _CLAUSE_END.split(output.strip(), maxsplit=1)[0]
        if answer.kind == "labels":
            label = parse_label_words(text, answer.labels)
            return INVALID if label is None else label
        options = json.loads(item.attributes.get("options", "[]"))
        letter = _parse_option_letter(text, len(options), options)
        return INVALID if letter is None else letter

    def score(
        self, items: list[Item], labels: list[str], logprobs: list[list[float] | None] | None = None
    ) -> dict[str, float]:
        return compute(self._metrics, self._score_input(items, labels, logprobs))

    @property
    def compiled_metrics(self) -> list[CompiledMetric]:
        """The ``metrics:`` entries, compiled (validated arguments, parsed expressions)."""
        return self._metrics

    def names_by_entry(self, items: list[Item], labels: list[str]) -> dict[int, list[str]]:
        """The metric names each ``metrics:`` entry gives on these items and labels (entry index -> names)."""
        return names_by_entry(self._metrics, self._score_input(items, labels, None))

    def higher_is_better(self, metric: str) -> bool | None:
        """The declared direction of ``metric``: its entry's ``higher_is_better``, else the perspective
        score's for that metric, else its function's; None when nothing declares one."""
        entry = next((e for e in self._metrics if metric in e.names), None)
        if entry is not None and entry.spec.higher_is_better is not None:
            return entry.spec.higher_is_better
        score = self.definition.perspective_score
        if score is not None and score.metric == metric:
            return score.higher_is_better
        return direction(self._metrics, metric)

    def template_context(self, record: Record) -> dict[str, Any]:
        """The names the templates of this definition see for ``record``."""
        return self._context(record)

    def demonstration_pool(self, data_dir: Path) -> list[Record] | None:
        """The demonstration records shared by every item (None without a pool)."""
        return self._pool(Path(data_dir))

    def item_values(
        self, items: list[Item], labels: list[str], logprobs: list[list[float] | None] | None = None
    ) -> dict[str, np.ndarray]:
        """Per-item values of the metrics that are means over items (metric name -> array aligned with
        ``items``, NaN where an item does not count; ``np.nanmean`` of each equals the metric)."""
        return per_item_values(self._metrics, self._score_input(items, labels, logprobs))

    @staticmethod
    def _score_input(items: list[Item], labels: list[str], logprobs: list[list[float] | None] | None) -> ScoreInput:
        if len(items) != len(labels):
            raise ValueError(f"{len(items)} items but {len(labels)} labels")
        return ScoreInput(list(items), list(labels), list(logprobs) if logprobs is not None else [None] * len(items))

    def describe(self) -> dict[str, str]:
        info = super().describe()
        info["license"] = self.definition.license
        if self.definition_path is not None:
            info["definition"] = str(self.definition_path)
        return info


def template_fields(definition: BenchmarkDefinition) -> list[tuple[str, str, bool]]:
    """(field, source, is_expression) of every Jinja template and expression of a definition."""
    d = definition
    out = [("id", d.id, False), ("data.path", d.data.path, False), ("prompt.user", d.prompt.user, False)]
    if d.prompt.system is not None:
        out.append(("prompt.system", d.prompt.system, False))
    out += [(f"prompt.preamble[{i}].content", turn.content, False) for i, turn in enumerate(d.prompt.preamble)]
    if d.prompt.demonstrations is not None:
        out += [
            ("prompt.demonstrations.user", d.prompt.demonstrations.user, False),
            ("prompt.demonstrations.assistant", d.prompt.demonstrations.assistant, False),
        ]
    if d.reference is not None:
        out.append(("reference.value", d.reference.value, True))
    if d.answer is not None and d.answer.choices:
        out.append(("answer.choices", d.answer.choices, True))
    if d.loglikelihood is not None:
        out.append(("loglikelihood.choices", d.loglikelihood.choices, True))
    out += [(f"attributes.{name}", expr, True) for name, expr in d.attributes.items()]
    return out


def validate_definition(definition: BenchmarkDefinition, where: str) -> None:
    """Checks that need no data: templates parse, metric functions exist and get valid arguments,
    composite expressions parse and read earlier metrics, the attributes metrics name exist, the
    primary metric is produced."""
    from jinja2 import TemplateSyntaxError

    problems = []
    for field_name, source, is_expression in template_fields(definition):
        try:
            (names_in_expression if is_expression else names_in_template)(source)
        except TemplateSyntaxError as err:
            problems.append(f"{field_name}: Jinja syntax error ({err.message}, line {err.lineno}); fix the template")
    problems.extend(compile_metrics(definition)[1])
    if problems:
        raise DefinitionError(where, problems)


def format_validation_error(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return lines
