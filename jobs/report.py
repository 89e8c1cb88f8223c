"""Print a sweep's results: one table per benchmark, variants then ensembles, metrics as columns."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from jobs.plan import Plan
from jobs.results import ResultRow


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}"


def print_results(console: Console, plan: Plan, results: list[ResultRow]) -> None:
    """One table per benchmark: rows are variants and ensembles, columns their metrics."""
    for bench_name, run in plan.benchmarks.items():
        metric_names = list(run.benchmark.metric_names) + ["error_rate"]
        table = Table(title=f"{bench_name} (v{run.benchmark.version}, {len(run.items)} items)", title_justify="left")
        table.add_column("variant / ensemble")
        table.add_column("bits", justify="right")
        table.add_column("items", justify="right")
        for name in metric_names:
            style = "bold" if name == run.benchmark.primary_metric else None
            table.add_column(name, justify="right", style=style)
        rows = [r for r in results if r.benchmark == bench_name]
        for row in rows:
            if row.kind == "ensemble" and rows.index(row) and rows[rows.index(row) - 1].kind == "variant":
                table.add_section()
            name = f"[magenta]{row.name}[/] (ensemble)" if row.kind == "ensemble" else row.name
            count = f"{row.n_items}/{row.n_planned}" if not row.complete else str(row.n_items)
            table.add_row(name, row.bits, count, *[_fmt(row.metrics.get(m)) for m in metric_names])
        console.print(table)
