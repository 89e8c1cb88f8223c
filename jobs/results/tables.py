"""Print a sweep's results: one table per benchmark, variants then ensembles, metrics as columns."""

from __future__ import annotations

import math

from rich import box
from rich.console import Console
from rich.table import Table

from jobs.plan.build import Plan
from jobs.results.scoring import ResultRow, perspective_table
from trust.comparison.degenerate import baseline_text


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}"


#: Widest a table may be (the issue's terminal budget); tables are laid out to fit it.
MAX_WIDTH = 100


def _ci(value: float, low: float, high: float, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    short = "{:+.2f}" if signed else "{:.2f}"
    if math.isnan(low) or math.isnan(high):
        return fmt.format(value)
    return f"{fmt.format(value)} [{short.format(low)}, {short.format(high)}]"


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


#: Short codes of degenerate-variant flags shown in table cells (the messages follow the table).
FLAG_CODES = {"invalid": "unparsed", "single_label": "one-label", "perplexity": "ppl"}


def print_results(
    console: Console,
    plan: Plan,
    results: list[ResultRow],
    comparison=None,
    metrics: list[str] | None = None,
    long: bool = False,
) -> None:
    """Per benchmark: each variant and ensemble against its model's reference, with intervals and flags.

    One table per benchmark and metric (the primary metric unless ``metrics`` names others, ``["all"]``
    for every metric), at most :data:`MAX_WIDTH` columns wide; ``long`` prints one row per metric instead.
    """
    from jobs.results.compare import compare_results

    comparison = comparison if comparison is not None else compare_results(plan, results)
    for bench_name, run in plan.benchmarks.items():
        frame = comparison.frame[comparison.frame["benchmark"] == bench_name]
        if frame.empty:
            continue
        console.print()
        if long:
            _print_long(console, plan, bench_name, frame)
        else:
            wanted = _wanted_metrics(frame, run.benchmark.primary_metric, metrics)
            for metric in wanted:
                _print_metric_table(console, plan, comparison, bench_name, metric, frame[frame["metric"] == metric])
        _print_flags(console, comparison, bench_name)
        _print_flips(console, comparison, bench_name)
        if run.spec.judges:
            print_judges(
                console, plan, bench_name, [r for r in results if r.benchmark == bench_name and r.kind == "variant"]
            )
    print_ensemble_search(console, comparison)


def _wanted_metrics(frame, primary: str, metrics: list[str] | None) -> list[str]:
    available = list(dict.fromkeys(frame["metric"].tolist()))
    if not metrics:
        return [primary] if primary in available else available[:1]
    if metrics == ["all"]:
        return available
    return [m for m in metrics if m in available]


def _print_metric_table(console: Console, plan: Plan, comparison, bench_name: str, metric: str, rows) -> None:
    run = plan.benchmarks[bench_name]
    first = rows.iloc[0]
    direction = first["higher_is_better"]
    arrow = (
        ""
        if direction is None or direction != direction
        else (" (higher is better)" if direction else " (lower is better)")
    )
    title = f"{bench_name} v{run.benchmark.version} · {len(run.items)} items · {metric}{arrow}"
    baseline = comparison.baselines.get(bench_name, (None, math.nan))
    caption_bits = [f"95% CI: {first['interval'].split(',')[0]}"]
    if bool(first["primary"]) and baseline[0] is not None and not math.isnan(baseline[1]):
        caption_bits.append(baseline_text(baseline[0], baseline[1]))
    methods = {m for m in rows["delta_method"].tolist() if m}
    if methods:
        caption_bits.append(
            "Δ: " + sorted(methods)[0].split(",")[0] + "; p: McNemar exact; * = significant at 5% "
            "(McNemar for 0/1 metrics, else the CI excludes 0)"
        )
    table = Table(
        title=title,
        title_justify="left",
        caption=" · ".join(caption_bits),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("variant", max_width=20, overflow="fold")
    table.add_column("bits", justify="right", max_width=9, overflow="fold")
    table.add_column("n", justify="right")
    table.add_column("value [95% CI]", justify="right", no_wrap=True)
    table.add_column("Δ vs ref [95% CI]", justify="right", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("flags", max_width=16, overflow="fold")
    previous_kind = None
    for record in rows.to_dict("records"):
        if previous_kind == "variant" and record["kind"] == "ensemble":
            table.add_section()
        previous_kind = record["kind"]
        name = record["short"]
        is_ref = comparison.references.get(record["model"]) == record["name"]
        delta = "reference" if is_ref else _ci(record["delta"], record["delta_low"], record["delta_high"], signed=True)
        if record["significant"] and not is_ref:
            delta += "*"
        flags = comparison.flags.get((record["name"], bench_name), [])
        table.add_row(
            name,
            str(record["bits"]),
            str(int(record["n"])),
            _ci(record["value"], record["low"], record["high"]),
            delta,
            "" if is_ref else _p(record["p_value"]),
            ",".join(FLAG_CODES.get(f.code, f.code) for f in flags),
        )
    console.print(table, width=min(MAX_WIDTH, console.width))


def _print_long(console: Console, plan: Plan, bench_name: str, frame) -> None:
    table = Table(
        title=f"{bench_name}: every metric (long format)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for column, justify in (
        ("variant", "left"),
        ("metric", "left"),
        ("value [95% CI]", "right"),
        ("Δ vs ref [95% CI]", "right"),
        ("p", "right"),
    ):
        table.add_column(column, justify=justify, overflow="fold")
    for record in frame.to_dict("records"):
        table.add_row(
            record["short"],
            record["metric"],
            _ci(record["value"], record["low"], record["high"]),
            _ci(record["delta"], record["delta_low"], record["delta_high"], signed=True)
            + ("*" if record["significant"] else ""),
            _p(record["p_value"]),
        )
    console.print(table, width=min(MAX_WIDTH, console.width))


def _print_flags(console: Console, comparison, bench_name: str) -> None:
    for (name, bench), flags in comparison.flags.items():
        if bench != bench_name or not flags:
            continue
        short = comparison.frame.loc[comparison.frame["name"] == name, "short"]
        label = short.iloc[0] if len(short) else name
        for flag in flags:
            console.print(f"  [yellow]flag[/] {label}: {flag.message}", width=min(MAX_WIDTH, console.width))


def _print_flips(console: Console, comparison, bench_name: str, show_ids: int = 3) -> None:
    lines = []
    for (name, bench), table in comparison.flips.items():
        if bench != bench_name or table.empty:
            continue
        counts = table["change"].value_counts()
        short = comparison.frame.loc[comparison.frame["name"] == name, "short"]
        label = short.iloc[0] if len(short) else name
        parts = [f"{n} {change}" for change, n in counts.items()]
        ids = ", ".join(table["item_id"].astype(str).head(show_ids))
        lines.append(f"  {label}: " + ", ".join(parts) + f" (e.g. {ids})")
    if lines:
        console.print(
            "[dim]Answers that changed against the reference (item ids; all in the HTML report):[/]",
            width=min(MAX_WIDTH, console.width),
        )
        for line in lines:
            console.print(line, width=min(MAX_WIDTH, console.width), overflow="fold")


def print_ensemble_search(console: Console, comparison) -> None:
    """Every subset of a model's quantized variants of one method as a precision ensemble (no inference)."""
    frame = comparison.ensembles
    if frame is None or frame.empty:
        return
    for bench_name, rows in frame.groupby("benchmark", sort=False):
        metric = rows.iloc[0]["metric"]
        table = Table(
            title=f"Ensemble search · {bench_name} · {metric} (Lu et al. vote over stored labels)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            collapse_padding=True,
            caption="Δ: paired bootstrap 95% CI on the items both answered",
            caption_justify="left",
        )
        table.add_column("members", max_width=22, overflow="fold")
        table.add_column("value [95% CI]", justify="right", no_wrap=True)
        table.add_column("best member", max_width=14, overflow="fold")
        table.add_column("Δ vs best", justify="right", no_wrap=True)
        table.add_column("Δ vs ref", justify="right", no_wrap=True)
        for record in rows.to_dict("records"):
            table.add_row(
                _strip_model(record["members"], record["model"]),
                _ci(record["value"], record["low"], record["high"]),
                f"{_strip_model(record['best_member'], record['model'])} {_fmt(record['best_value'])}",
                _ci(record["delta_vs_best"], record["delta_vs_best_low"], record["delta_vs_best_high"], signed=True),
                _ci(
                    record["delta_vs_reference"],
                    record["delta_vs_reference_low"],
                    record["delta_vs_reference_high"],
                    signed=True,
                ),
            )
        console.print(table, width=min(MAX_WIDTH, console.width))


def _strip_model(names: str, model: str) -> str:
    return "+".join(n[len(model) + 1 :] if n.startswith(f"{model}-") else n for n in names.split("+"))


#: Metric names that belong to the judges' table, not the benchmark's.
JUDGE_METRIC_PREFIXES = ("judge/", "judge_kappa/", "judge_agreement/", "judge_pairs/")


def print_judges(console: Console, plan: Plan, bench_name: str, rows: list[ResultRow]) -> None:
    """Per variant: the primary metric under each judge (and their majority), unreadable judgments, kappa."""
    from jobs.plan.judges import selected_judge

    run = plan.benchmarks[bench_name]
    primary = run.benchmark.primary_metric
    judges = list(run.spec.judges) + (["majority"] if len(run.spec.judges) >= 2 else [])
    chosen = selected_judge(run)
    table = Table(
        title=f"{bench_name}: {primary} by judge (labels from {chosen}; unreadable judgments in brackets)",
        title_justify="left",
    )
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
    from jobs.plan.naming import short_names

    short = short_names(plan)
    perspectives = sorted({p for scores in table_data.values() for p in scores})
    table = Table(
        title="Perspective scores (0-100, higher = more trustworthy)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        min_width=60,
    )
    table.add_column("variant / ensemble", max_width=22, overflow="fold")
    for name in perspectives:
        table.add_column(name, justify="right", overflow="fold")
    for name, scores in table_data.items():
        table.add_row(short.get(name, name), *[f"{scores[p]:.1f}" if p in scores else "–" for p in perspectives])
    console.print(table, width=min(MAX_WIDTH, console.width))


#: Columns of the variants table, with the heading each gets (fits 100 columns).
_VARIANT_COLUMNS = {
    "variant": "variant",
    "label": "recipe",
    "engine": "engine",
    "storage": "storage",
    "bits_per_weight": "bits/w",
    "size_mb": "MB",
    "build_s": "build s",
    "load_s": "load s",
    "cache": "cache",
    "probe_perplexity": "probe ppl",
}


def print_variants(console: Console, variants: dict, quant_reports: dict[str, dict]) -> None:
    """One row per variant: recipe, storage, size, build and load times, cache use, probe perplexity."""
    from jobs.plan.naming import short_name
    from jobs.results.variant_reports import variants_table

    frame = variants_table(variants, quant_reports)
    if frame.empty:
        return
    n_models = len({v.model.name for v in variants.values()})
    frame = frame.assign(variant=[short_name(v.name, v.model.name, n_models) for v in variants.values()])
    table = Table(title="Variants", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column, heading in _VARIANT_COLUMNS.items():
        table.add_column(
            heading,
            justify="left" if column in ("variant", "label", "storage", "cache", "engine") else "right",
            max_width=20,
            overflow="fold",
        )
    for record in frame.to_dict("records"):
        digits = {"probe_perplexity": 2, "bits_per_weight": 2}
        table.add_row(*(_cell(record.get(c), digits.get(c, 1)) for c in _VARIANT_COLUMNS))
    console.print(table, width=min(MAX_WIDTH, console.width))


def _cell(value: object, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"
    return "–" if value is None else str(value)
