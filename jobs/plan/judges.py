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
from trust.judges import template_choice
from trust.judges.templates import JudgeTemplate
from trust.judges.verdicts import Verdict
from trust.types import Item

#: Characters of the judgment key (hex digits of a sha256).
JUDGMENT_KEY_CHARS = 40


def template_for(judge: JudgeSpec, benchmark: Benchmark) -> JudgeTemplate:
    """The template ``judge`` uses on ``benchmark`` (see :func:`trust.judges.template_choice.template_for`)."""
    return template_choice.template_for(judge.template, benchmark)


def judgment_key(item_key: str, identity: str, request: dict[str, Any]) -> str:
    """The key of one judgment: the judged answer's item key, the judge's identity and the request it reads."""
    text = json.dumps([item_key, identity, request], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:JUDGMENT_KEY_CHARS]


@dataclass
class PlannedJudge:
    """One judge of the sweep with its templates per benchmark (see the module docstring).

    What differs between judge kinds is asked of :attr:`kind` (:mod:`cluster.judges.kinds`).
    """

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
        return self.kind.identity(self.spec, self.templates.get(bench), self.max_new_tokens(bench))

    def max_new_tokens(self, bench: str) -> int:
        if self.spec.max_new_tokens:
            return self.spec.max_new_tokens
        template = self.templates.get(bench)
        return template.max_new_tokens if template is not None else 1

    def labels(self, bench: str) -> list[str]:
        return self.kind.labels(self.spec, self.templates.get(bench))

    def request(self, bench: str, item: Item, output: str | None, data_dir: Path) -> dict[str, Any]:
        """What the judge reads about one answer: the answer (rule) or the rendered judge prompt."""
        return self.kind.request(self.spec, self.templates.get(bench), item, output, data_dir)

    @property
    def task(self) -> str:
        """What the judge's workers are asked: ``generate`` text, or score labels (``loglikelihood``)."""
        return "loglikelihood" if self.spec.decoding == "choose" else "generate"

    def read(self, bench: str, result: dict[str, Any]) -> tuple[str | None, Verdict]:
        """The raw text kept and the verdict of one worker result (a chosen label, or text to parse)."""
        return self.kind.read(self.spec, self.templates.get(bench), result)

    def parse(self, bench: str, raw: str | None) -> Verdict:
        """The verdict in a judge's raw output (never raises)."""
        return self.kind.parse(self.spec, self.templates.get(bench), raw)

    def worker_config(self) -> dict[str, Any]:
        """What the judge's workers are built from (plain data; no secret: the API key stays in the environment)."""
        return self.kind.worker_config(self.spec, self.resources.num_gpus)

    def worker_args(self) -> tuple[Any, ...]:
        """Extra worker constructor arguments after ``(config, cache_dir, num_threads)`` (an endpoint's key)."""
        return self.kind.worker_args(self.spec)

    def eval_params(self, bench: str) -> dict[str, str]:
        """The kind's own parameters of a ``qtrust judge-eval`` run on ``bench`` (unprefixed)."""
        return self.kind.eval_params(self.spec, self.templates.get(bench), self.max_new_tokens(bench))

    def describe(self) -> dict[str, str]:
        """Tracking parameters of this judge (never a secret: the endpoint's key variable's name only)."""
        spec = self.spec
        out = {"kind": spec.kind, **self.kind.tracking_params(spec)}
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
