"""Print a sweep's results: one table per benchmark, variants then ensembles, metrics as columns."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from jobs.plan import Plan
from jobs.scoring import RUN_STATS, ResultRow, perspective_table


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}"


def print_results(console: Console, plan: Plan, results: list[ResultRow]) -> None:
    """One table per benchmark: rows are variants and ensembles, columns their metrics."""
    for bench_name, run in plan.benchmarks.items():
        metric_names = list(run.benchmark.metric_names)
        extra = sorted({m for r in results if r.benchmark == bench_name for m in r.metrics
                        if not m.startswith(JUDGE_METRIC_PREFIXES)} - set(metric_names))
        metric_names += [m for m in extra if m not in RUN_STATS] + ["error_rate"]
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
        if run.spec.judges:
            print_judges(console, plan, bench_name, [r for r in rows if r.kind == "variant"])


#: Metric names that belong to the judges' table, not the benchmark's.
JUDGE_METRIC_PREFIXES = ("judge/", "judge_kappa/", "judge_agreement/", "judge_pairs/")


def print_judges(console: Console, plan: Plan, bench_name: str, rows: list[ResultRow]) -> None:
    """Per variant: the primary metric under each judge (and their majority), unreadable judgments, kappa."""
    from jobs.judging import selected_judge

    run = plan.benchmarks[bench_name]
    primary = run.benchmark.primary_metric
    judges = list(run.spec.judges) + (["majority"] if len(run.spec.judges) >= 2 else [])
    chosen = selected_judge(run)
    table = Table(title=f"{bench_name}: {primary} by judge (labels from {chosen}; unreadable judgments in brackets)",
                  title_justify="left")
    table.add_column("variant")
    for judge in judges:
        table.add_column(judge, justify="right", style="bold" if judge == chosen else None)
    pairs = sorted({m.split("/", 1)[1] for r in rows for m in r.metrics if m.startswith("judge_kappa/")})
    for pair in pairs:
        table.add_column(f"κ {pair}", justify="right")
    for row in rows:
        cells = []
        for judge in judges:
            value = _fmt(row.metrics.get(f"judge/{judge}/{primary}"))
            unreadable = row.metrics.get(f"judge/{judge}/unreadable_rate")
            cells.append(value if unreadable is None or judge == "majority" else f"{value} ({_fmt(unreadable)})")
        cells += [_fmt(row.metrics.get(f"judge_kappa/{pair}")) for pair in pairs]
        table.add_row(row.name, *cells)
    console.print(table)


def print_perspectives(console: Console, plan: Plan, results: list[ResultRow]) -> None:
    """Perspective scores on DecodingTrust's 0-100 scale, one row per variant or ensemble."""
    table_data = perspective_table(plan, results)
    if not table_data:
        return
    perspectives = sorted({p for scores in table_data.values() for p in scores})
    table = Table(title="Perspective scores (0-100, higher = more trustworthy)", title_justify="left")
    table.add_column("variant / ensemble")
    for name in perspectives:
        table.add_column(name, justify="right")
    for name, scores in table_data.items():
        table.add_row(name, *[f"{scores[p]:.1f}" if p in scores else "–" for p in perspectives])
    console.print(table)


def print_variants(console: Console, variants: dict, quant_reports: dict[str, dict]) -> None:
    """One row per variant: recipe, storage, size, build and load times, cache use, probe perplexity."""
    from jobs.variant_reports import variants_table

    frame = variants_table(variants, quant_reports)
    if frame.empty:
        return
    table = Table(title="variants", show_lines=False)
    for column in frame.columns:
        table.add_column(column, justify="right" if column not in ("variant", "label", "storage", "cache") else "left")
    for record in frame.to_dict("records"):
        table.add_row(*(_cell(v) for v in record.values()))
    console.print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return _fmt(value) if abs(value) < 1e4 or math.isnan(value) else f"{value:.3g}"
    return "–" if value is None else str(value)
