"""Checks of a sweep's judges: kinds, models, endpoints, templates (no model loads).

What each kind needs is the kind's own check (:meth:`cluster.judges.kind_base.JudgeKind.problems`).
"""

from __future__ import annotations

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
    from trust.judges.template_choice import template_for
    from trust.judges.templates import TemplateError

    problems: list[str] = []
    names = [j.name for j in spec.judges]
    for dup in duplicates(names):
        problems.append(f"judges: the name '{dup}' is used more than once; give each judge its own name")
    for i, judge in enumerate(spec.judges):
        for field, message in judge_kind(judge.kind).problems(judge):
            problems.append(f"judges[{i}].{field}: {message}")
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
            listed = by_name.get(name)
            if listed is None or not judge_kind(listed.kind).needs_template:
                continue
            try:
                template_for(listed.template, benchmark)
            except TemplateError as err:
                problems.append(f"judges.{name}.template (for {bench.run_name}): {err}")
    return problems
