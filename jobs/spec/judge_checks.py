"""Checks of a sweep's judges: kinds, models, endpoints, templates (no model loads)."""

from __future__ import annotations

from cluster.models.sources import validate_model_source
from jobs.spec.schema import (
    SweepSpec,
    duplicates,
)
from trust.benchmarks.catalog import (
    get_benchmark,
)


def judge_problems(spec: SweepSpec) -> list[str]:
    """Judges that cannot run: missing fields per kind, unknown names, templates that do not exist."""
    from cluster.judges.kinds import judge_kind
    from trust.judges.templates import TemplateError

    problems: list[str] = []
    names = [j.name for j in spec.judges]
    for dup in duplicates(names):
        problems.append(f"judges: the name '{dup}' is used more than once; give each judge its own name")
    for i, judge in enumerate(spec.judges):
        if judge.kind == "model" and not judge.model:
            problems.append(f"judges[{i}].model: a model judge needs 'model' (a built-in name, local folder or hub id)")
        if judge.kind == "model" and judge.model:
            message = validate_model_source(judge.model)
            if message:
                problems.append(f"judges[{i}].model: {message}")
        if judge.kind == "endpoint" and judge.endpoint is None:
            problems.append(f"judges[{i}].endpoint: an endpoint judge needs 'endpoint' (base_url, model, api_key_env)")
        if judge.kind != "endpoint" and judge.endpoint is not None:
            problems.append(
                f"judges[{i}].endpoint: only endpoint judges take 'endpoint'; remove it or set kind: endpoint"
            )
        if judge.decoding == "choose" and judge.kind != "model":
            problems.append(
                f"judges[{i}].decoding: 'choose' scores labels by log-likelihood, which only model judges "
                "offer; use decoding: generate"
            )
        if judge.kind == "rule" and judge.template is not None:
            problems.append(f"judges[{i}].template: the rule judge reads no template; remove it")
    by_name = {j.name: j for j in spec.judges}
    for i, bench in enumerate(spec.benchmarks):
        for j, name in enumerate(bench.judges):
            if name not in by_name:
                problems.append(
                    f"benchmarks[{i}].judges[{j}]: '{name}' is not a judge of this sweep; "
                    f"judges: {', '.join(by_name) or '(none: add a judges: section)'}"
                )
        if bench.judge is not None and bench.judge not in bench.judges:
            problems.append(
                f"benchmarks[{i}].judge: '{bench.judge}' must be one of this benchmark's judges ({', '.join(bench.judges) or 'none'})"
            )
        if not bench.judges:
            continue
        try:
            benchmark = get_benchmark(bench.name, bench.options, bench.definition)
        except Exception:
            continue
        if benchmark.task != "generate":
            problems.append(
                f"benchmarks[{i}].judges: {bench.run_name} is scored by log-likelihood; only open answers are judged"
            )
            continue
        for name in bench.judges:
            judge = by_name.get(name)
            if judge is None or not judge_kind(judge.kind).needs_template:
                continue
            try:
                from jobs.plan.judges import template_for

                template_for(judge, benchmark)
            except TemplateError as err:
                problems.append(f"judges.{name}.template (for {bench.run_name}): {err}")
    return problems
