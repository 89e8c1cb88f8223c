"""The benchmark definitions a sweep uses, checked against their answer space (and their records).

``qtrust validate`` runs every check (with the data folder: templates, reference maps, labels and
attribute values the metrics name, against every record); ``qtrust run`` runs the data-free ones
before any heavy work, so a label that can never occur stops the sweep with exit 2, not a 0 metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.spec.schema import SweepSpec


def judge_vocabulary(spec: SweepSpec, bench_spec: Any, benchmark: Any) -> list[str]:
    """The raw labels of the judges a sweep runs on one benchmark (for the answer-space check)."""
    from cluster.judges.kinds import judge_kind
    from trust.judges.template_choice import template_for
    from trust.judges.templates import TemplateError

    by_name = {j.name: j for j in spec.judges}
    labels: list[str] = []
    for name in bench_spec.judges:
        judge = by_name.get(name)
        if judge is None:
            continue
        kind = judge_kind(judge.kind)
        try:
            template = template_for(judge.template, benchmark) if kind.needs_template else None
        except TemplateError:
            continue  # reported by the spec's own checks
        labels.extend(kind.labels(judge, template))
    return labels


def benchmark_problems(
    spec: SweepSpec, data_dir: Path | None, own_data_dir: Path | None = None
) -> tuple[list[str], list[str]]:
    """(problems, lines to show): each problem names the benchmark, its definition file and the field.

    ``data_dir`` checks every definition against its records; ``own_data_dir`` only the user's own
    definition files (``definition:``), as ``qtrust run`` does before any work (the built-in ones are
    checked by the test suite). Without either, a definition whose files sit beside it (``./``) is
    checked against them all the same."""
    from trust.benchmarks.catalog import definition_location, get_benchmark
    from trust.benchmarks.data_check import check_definition

    problems: list[str] = []
    lines: list[str] = []
    for i, bench_spec in enumerate(spec.benchmarks):
        benchmark = get_benchmark(bench_spec.name, bench_spec.options, bench_spec.definition)
        folder = data_dir if data_dir is not None or bench_spec.definition is None else own_data_dir
        report = check_definition(benchmark, folder, judge_vocabulary(spec, bench_spec, benchmark))
        where = definition_location(benchmark.name, bench_spec.definition)
        problems.extend(f"benchmarks[{i}] ({bench_spec.run_name}): {where}: {p}" for p in report.problems)
        if report.data_checked and not report.problems:
            lines.append(f"  {bench_spec.run_name}: {report.items} item(s) checked against the data")
    return problems, lines
