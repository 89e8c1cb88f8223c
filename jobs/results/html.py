"""`qtrust report`: one self-contained HTML file with a sweep's comparisons, tables and plots.

Plots are embedded as base64 PNGs and the styles inline, so the file opens anywhere (a laptop, an
MLflow artifact view, an e-mail) without a server or network access.
"""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from jobs.plan.build import Plan
from jobs.results.compare import Comparison
from jobs.store.adaptive import AdaptiveSummary
from trust.comparison.degenerate import baseline_text

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1200px;color:#1d1d1f;padding:0 1rem}
h1{font-size:1.6rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem} h3{margin-top:1.4rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:right} th{background:#f6f6f8}
td:first-child,th:first-child{text-align:left}
.sig{font-weight:600} .worse{color:#b3261e} .better{color:#1b7f3b} .flag{color:#a15c00;text-align:left}
.note{color:#555;font-size:.88rem} img{max-width:100%;border:1px solid #eee;margin:.4rem 0}
details{margin:.4rem 0} summary{cursor:pointer}
.partial{background:#fff4e5;border:2px solid #b3261e;padding:.6rem 1rem;margin:1rem 0}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, signed: bool = False) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    if math.isnan(number):
        return "–"
    return f"{number:+.3f}" if signed else f"{number:.3f}"


def _p(value: Any) -> str:
    text = _num(value)
    return "&lt;0.001" if text not in ("–",) and float(value) < 0.001 else text


def _interval(value: Any, low: Any, high: Any, signed: bool = False) -> str:
    text = _num(value, signed)
    if text == "–" or any(isinstance(x, float) and math.isnan(x) for x in (low, high)):
        return text
    return f"{text} <span class='note'>[{_num(low, signed)}, {_num(high, signed)}]</span>"


def _img(figure: Any, alt: str) -> str:
    from jobs.results.plots import figure_png

    data = base64.b64encode(figure_png(figure)).decode("ascii")
    return f"<img alt='{_esc(alt)}' src='data:image/png;base64,{data}'>"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="–", float_format=lambda x: f"{x:.3f}")


def render_report(
    plan: Plan,
    comparison: Comparison,
    *,
    title: str | None = None,
    partial: list[str] | None = None,
    adaptive: AdaptiveSummary | None = None,
) -> str:
    """The whole report as one HTML string; ``partial`` (what is missing, one line each) puts a banner on top;
    ``adaptive`` (an adaptive sweep's decisions) adds the section "Adaptive comparisons"."""
    from jobs.results.adaptive_view import adaptive_html
    from jobs.results.plots import flip_matrix_figure, metric_vs_bits, perspective_radar

    spec = plan.spec
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title or spec.name)} · qtrust report</title>"
        f"<style>{_STYLE}</style></head><body>"
    ]
    parts.append(f"<h1>{_esc(title or spec.name)}</h1>")
    if partial:
        listed = "".join(f"<li>{_esc(line.strip())}</li>" for line in partial[1:])
        parts.append(
            f"<div class='partial' id='partial-report'><strong>Partial report.</strong> {_esc(partial[0])}"
            f"<ul>{listed}</ul>Every number below is computed on the stored items only.</div>"
        )
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(
        f"<p class='note'>{_esc(spec.description or '')} — {len(plan.variants)} variant(s) × "
        f"{len(plan.benchmarks)} benchmark(s); reference per model: "
        f"{_esc(', '.join(f'{m}: {r}' for m, r in comparison.references.items()))}. Generated {when}.</p>"
    )
    parts.append(
        "<p class='note'>Intervals are 95%: Wilson for rates of per-item 0/1 values, a percentile bootstrap "
        "over items otherwise. Δ is each variant minus its model's reference on the items both answered "
        "(paired bootstrap interval); p is McNemar's exact test on items that changed. Bold rows differ "
        "from the reference at the 5% level (McNemar for 0/1 metrics, else the interval of Δ excludes 0); "
        "red where the change is for the worse, green where it is for the better.</p>"
    )
    parts.append(adaptive_html(adaptive))
    for bench_name, run in plan.benchmarks.items():
        rows = comparison.frame[comparison.frame["benchmark"] == bench_name]
        if rows.empty:
            continue
        primary = run.benchmark.primary_metric
        parts.append(
            f"<h2>{_esc(bench_name)} <span class='note'>v{_esc(run.benchmark.version)}, {len(run.items)} items, "
            f"primary metric {_esc(primary)}</span></h2>"
        )
        baseline = comparison.baselines.get(bench_name, (None, math.nan))
        if baseline[0] is not None and not math.isnan(baseline[1]):
            text = baseline_text(baseline[0], baseline[1])
            parts.append(f"<p class='note'>{_esc(text[:1].upper() + text[1:])}.</p>")
        parts.append(_primary_table(comparison, rows[rows["primary"]]))
        parts.append(_flags_html(comparison, bench_name))
        parts.append(_img(metric_vs_bits(comparison.frame, bench_name, primary), f"{primary} vs bits"))
        others = rows[~rows["primary"]]
        if not others.empty:
            wide = others.pivot_table(index="short", columns="metric", values="value", aggfunc="first", sort=False)
            parts.append(
                "<details><summary>Every metric (point estimates)</summary>"
                + _table(wide.reset_index().rename(columns={"short": "variant"}))
                + "</details>"
            )
        parts.append(_flips_html(comparison, bench_name, flip_matrix_figure))
    ensembles = comparison.ensembles
    if ensembles is not None and not ensembles.empty:
        parts.append(
            "<h2>Ensemble search</h2><p class='note'>Every subset (size ≥ 2) of a model's quantized variants "
            "of one method, voted with Lu et al.'s rule (refusals filtered, ties to the highest precision) from "
            "the stored labels; no inference.</p>"
        )
        shown = ensembles[
            [
                "benchmark",
                "method",
                "members",
                "metric",
                "value",
                "low",
                "high",
                "best_member",
                "best_value",
                "delta_vs_best",
                "delta_vs_best_low",
                "delta_vs_best_high",
                "delta_vs_reference",
                "delta_vs_reference_low",
                "delta_vs_reference_high",
            ]
        ]
        parts.append(_table(shown))
    if comparison.perspectives:
        parts.append(
            "<h2>Perspectives</h2><p class='note'>DecodingTrust-style 0–100 scores (higher = more "
            "trustworthy), the mean over each perspective's benchmarks.</p>"
        )
        persp = pd.DataFrame(comparison.perspectives).T.reset_index().rename(columns={"index": "variant"})
        parts.append(_table(persp))
        parts.append(_img(perspective_radar(comparison.perspectives), "perspective radar"))
    parts.append("</body></html>")
    return "\n".join(parts)


def _primary_table(comparison: Comparison, rows: pd.DataFrame) -> str:
    head = (
        "<table><tr><th>variant</th><th>method</th><th>bits</th><th>n</th><th>value [95% CI]</th>"
        "<th>Δ vs reference [95% CI]</th><th>p (McNemar)</th><th>flags</th></tr>"
    )
    body = []
    for r in rows.to_dict("records"):
        is_ref = comparison.references.get(r["model"]) == r["name"]
        delta = "reference" if is_ref else _interval(r["delta"], r["delta_low"], r["delta_high"], signed=True)
        cls = ""
        if r["significant"] and not is_ref and not math.isnan(r["delta"]) and r["higher_is_better"] is not None:
            worse = (r["delta"] < 0) == bool(r["higher_is_better"])
            cls = " class='sig worse'" if worse else " class='sig better'"
        body.append(
            f"<tr{cls}><td>{_esc(r['short'])}</td><td>{_esc(r['method'])}</td><td>{_esc(r['bits'])}</td>"
            f"<td>{int(r['n'])}</td><td>{_interval(r['value'], r['low'], r['high'])}</td><td>{delta}</td>"
            f"<td>{'' if is_ref else _p(r['p_value'])}</td><td class='flag'>{_esc(r['flags'])}</td></tr>"
        )
    return head + "".join(body) + "</table>"


def _flags_html(comparison: Comparison, bench_name: str) -> str:
    items = [
        f"<li><b>{_esc(name)}</b>: {_esc(flag.message)}</li>"
        for (name, bench), flags in comparison.flags.items()
        if bench == bench_name
        for flag in flags
    ]
    return f"<p class='flag'>Degenerate-variant flags:</p><ul class='flag'>{''.join(items)}</ul>" if items else ""


def _flips_html(comparison: Comparison, bench_name: str, flip_matrix_figure: Any) -> str:
    out = []
    for (name, bench), table in comparison.flips.items():
        if bench != bench_name:
            continue
        matrix = comparison.matrices.get((name, bench))
        counts = (
            ", ".join(f"{n} {change}" for change, n in table["change"].value_counts().items()) if len(table) else "none"
        )
        out.append(
            f"<details><summary>{_esc(name)}: answers that changed against the reference — {_esc(counts)}</summary>"
        )
        if matrix is not None and not matrix.empty:
            out.append(_img(flip_matrix_figure(matrix, f"{name} vs reference · {bench_name}"), f"flips {name}"))
        if len(table):
            out.append(_table(table))
        out.append("</details>")
    return ("<h3>Flips</h3>" + "".join(out)) if out else ""
