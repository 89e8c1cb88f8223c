"""The judges of a sweep, planned: which judge judges which benchmark, with which template and identity.

A judge (``judges:`` in the sweep) judges the answers of the benchmarks that list it. For each
(judge, benchmark) the plan fixes the judge's **identity** — kind, model or endpoint model,
template name@version#digest, decoding — and each judgment's **key** hashes the item key of the
judged answer, that identity and the judge request itself (the rendered prompt), so a new template,
judge model or answer is judged again and nothing else is.

Labels: a judge speaks its own vocabulary (the template's labels, or the rule judge's
``full_refusal`` / ``partial_refusal`` / ``compliance``); a benchmark definition's ``judge_labels``
maps them onto the benchmark's labels, which its metric functions read."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.judges.kinds import JudgeKind, judge_kind
from jobs.spec.schema import JudgeSpec, ResourcesSpec, SweepSpec
from trust.benchmarks.base import Benchmark
from trust.judges.templates import (
    JudgeTemplate,
    TemplateError,
    builtin_templates,
    get_template,
)
from trust.judges.verdicts import Verdict, failed
from trust.types import Item

"""The judges of a sweep, planned: which judge judges which benchmark, with which template and identity.

A judge (``judges:`` in the sweep) judges the answers of the benchmarks that list it. For each
(judge, benchmark) the plan fixes the judge's **identity** — kind, model or endpoint model,
template name@version#digest, decoding — and each judgment's **key** hashes the item key of the
judged answer, that identity and the judge request itself (the rendered prompt), so a new template,
judge model or answer is judged again and nothing else is.

Labels: a judge speaks its own vocabulary (the template's labels, or the rule judge's
``full_refusal`` / ``partial_refusal`` / ``compliance``); a benchmark definition's ``judge_labels``
maps them onto the benchmark's labels, which its metric functions read.
"""


#: Characters of the judgment key (hex digits of a sha256).
JUDGMENT_KEY_CHARS = 40


def template_for(judge: JudgeSpec, benchmark: Benchmark) -> JudgeTemplate:
    """The template ``judge`` uses on ``benchmark`` (see :class:`jobs.spec.schema.JudgeSpec.template`)."""
    chosen = judge.template
    if isinstance(chosen, dict):
        chosen = chosen.get(benchmark.name)
    if chosen:
        return get_template(chosen)
    definition = getattr(benchmark, "definition", None)
    templates = builtin_templates()
    wanted = getattr(definition, "judge", None)
    if wanted in templates:
        return templates[wanted]
    for template in templates.values():
        if benchmark.name in template.for_benchmarks:
            return template
    raise TemplateError(
        f"no judge template for benchmark {benchmark.name!r}; set the judge's template "
        f"(built in: {', '.join(sorted(templates))}, or a .yaml file)"
    )


def judgment_key(item_key: str, identity: str, request: dict[str, Any]) -> str:
    """The key of one judgment: the judged answer's item key, the judge's identity and the request it reads."""
    text = json.dumps([item_key, identity, request], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:JUDGMENT_KEY_CHARS]


@dataclass
class PlannedJudge:
    """One judge of the sweep with its templates per benchmark (see the module docstring)."""

    spec: JudgeSpec
    kind: JudgeKind
    resources: ResourcesSpec
    templates: dict[str, JudgeTemplate] = field(default_factory=dict)
    """Benchmark run name -> template (judges that read templates)."""
    benchmarks: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def identity(self, bench: str) -> str:
        """What makes two judgments comparable: kind, model, template and decoding."""
        spec = self.spec
        if spec.kind == "rule":
            from trust.judges.rule import RuleJudge

            return RuleJudge(spec.mode).identity
        template = self.templates[bench]
        decoding = "choose" if spec.decoding == "choose" else f"greedy,max{self.max_new_tokens(bench)}"
        if spec.kind == "endpoint":
            assert spec.endpoint is not None
            return f"endpoint:{spec.endpoint.model}|t={spec.endpoint.temperature:g}|{decoding}|{template.identity}"
        return f"{spec.kind}:{spec.model}@{spec.revision or 'main'}|{spec.dtype}|{spec.engine}|{decoding}|{template.identity}"

    def max_new_tokens(self, bench: str) -> int:
        if self.spec.max_new_tokens:
            return self.spec.max_new_tokens
        template = self.templates.get(bench)
        return template.max_new_tokens if template is not None else 1

    def labels(self, bench: str) -> list[str]:
        if self.spec.kind == "rule":
            from trust.judges.rule import RuleJudge

            return list(RuleJudge(self.spec.mode).labels)
        return list(self.templates[bench].labels)

    def request(self, bench: str, item: Item, output: str | None, data_dir: Path) -> dict[str, Any]:
        """What the judge reads about one answer: the answer (rule) or the rendered judge prompt."""
        if self.spec.kind == "rule":
            return {"response": output or ""}
        prompt = next((m["content"] for m in reversed(item.messages) if m.get("role") == "user"), "")
        template = self.templates[bench]
        messages = template.messages(prompt, output or "", item.attributes, data_dir)
        if self.spec.decoding == "choose":
            return {"messages": messages, "continuations": list(template.labels)}
        return {"messages": messages}

    @property
    def task(self) -> str:
        """What the judge's workers are asked: ``generate`` text, or score labels (``loglikelihood``)."""
        return "loglikelihood" if self.spec.decoding == "choose" else "generate"

    def read(self, bench: str, result: dict[str, Any]) -> tuple[str | None, Verdict]:
        """The raw text kept and the verdict of one worker result (a chosen label, or text to parse)."""
        if self.spec.decoding == "choose":
            labels = list(self.templates[bench].labels)
            logprobs = list(result.get("logprobs") or [])
            if len(logprobs) != len(labels):
                return None, failed("", f"expected {len(labels)} label scores, got {len(logprobs)}")
            best = max(range(len(labels)), key=lambda i: logprobs[i])
            raw = json.dumps({"choice": labels[best], "logprobs": dict(zip(labels, logprobs))})
            return raw, Verdict(label=labels[best], raw=raw)
        raw = result.get("text")
        return raw, self.parse(bench, raw)

    def parse(self, bench: str, raw: str | None) -> Verdict:
        """The verdict in a judge's raw output (never raises)."""
        if self.spec.kind == "rule":
            text = (raw or "").strip()
            if text in self.labels(bench):
                return Verdict(label=text, raw=text)
            return failed(raw or "", "the answer was empty" if not text else f"not a rule label: {text[:80]}")
        try:
            return self.templates[bench].parse(raw)
        except Exception as err:
            return failed(raw or "", f"{type(err).__name__}: {err}")

    def worker_config(self) -> dict[str, Any]:
        """What the judge's workers are built from (plain data; no secret: the API key stays in the environment)."""
        spec = self.spec
        if spec.kind == "model":
            from cluster.engines.vllm_settings import VLLMSettings
            from cluster.quantization.recipes import QuantRecipe

            source = spec.model or ""
            if Path(source).expanduser().is_dir():
                source = str(Path(source).expanduser().resolve())
            return {
                "variant": f"judge-{spec.name}",
                "source": source,
                "revision": spec.revision,
                "dtype": spec.dtype,
                "trust_remote_code": False,
                "engine": spec.engine,
                "engine_options": {},
                "vllm": VLLMSettings().model_dump(),
                "recipe": QuantRecipe().model_dump(),
                "variant_key": None,
                "calibration_texts": None,
                "variant_cache": None,
                "quality_probe": False,
                "num_gpus": self.resources.num_gpus,
            }
        if spec.kind == "endpoint":
            assert spec.endpoint is not None
            return {"kind": "endpoint", "endpoint": spec.endpoint.model_dump(mode="json")}
        return {"kind": spec.kind, "mode": spec.mode}

    def describe(self) -> dict[str, str]:
        """Tracking parameters of this judge (never a secret: the endpoint's key variable's name only)."""
        spec = self.spec
        out = {"kind": spec.kind}
        if spec.kind == "rule":
            out["mode"] = spec.mode
        if spec.model:
            out["model"] = spec.model
        if spec.endpoint is not None:
            out["endpoint.model"] = spec.endpoint.model
            out["endpoint.base_url"] = spec.endpoint.base_url
        for bench in self.benchmarks:
            out[f"identity.{bench}"] = self.identity(bench)
        return out


def plan_judges(spec: SweepSpec, benchmarks: dict[str, Any]) -> dict[str, PlannedJudge]:
    """Every judge some benchmark uses, with its templates (raises :class:`TemplateError` on a bad template)."""
    judges: dict[str, PlannedJudge] = {}
    by_name = {j.name: j for j in spec.judges}
    for run_name, run in benchmarks.items():
        for name in run.spec.judges:
            judge_spec = by_name[name]
            kind = judge_kind(judge_spec.kind)
            planned = judges.get(name)
            if planned is None:
                resources = ResourcesSpec.model_validate(
                    {**spec.resources.model_dump(), "num_cpus": kind.default_num_cpus, "replicas": 1}
                ).merged(judge_spec.resources)
                planned = judges[name] = PlannedJudge(spec=judge_spec, kind=kind, resources=resources)
            planned.benchmarks.append(run_name)
            if kind.needs_template:
                planned.templates[run_name] = template_for(judge_spec, run.benchmark)
    return judges


def selected_judge(run: Any) -> str | None:
    """The judge whose labels give a benchmark run's metrics (None: the benchmark's own parser)."""
    if not run.spec.judges:
        return None
    return run.spec.judge or run.spec.judges[0]
