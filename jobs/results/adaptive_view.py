"""How an adaptive sweep's decisions are shown: one row per variant × benchmark and the items saved.

``qtrust status`` (from the manifest's ``adaptive`` entry), ``qtrust report`` (console and HTML, from
``<sweep>/adaptive.json``) and MLflow (the ``adaptive.json`` table) show the same columns, built here
from :class:`jobs.store.adaptive.AdaptiveSummary`: the decision, the items it rests on of those
planned (and computed), Δ with its confidence sequence at the pair's confidence, and the items saved.
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from jobs.store.adaptive import AdaptiveSummary, PairDecision

#: Rich style of each decision (worse red, better green, still running cyan, blocked on failures red).
DECISION_STYLE = {
    "worse": "bold red",
    "better": "bold green",
    "lower": "magenta",
    "higher": "magenta",
    "equivalent": "green",
    "undecided": "yellow",
    "continue": "cyan",
    "blocked": "red",
}

#: CSS class of each decision in the HTML report (the report's own ``worse`` / ``better`` colours).
DECISION_CLASS = {"worse": "worse", "better": "better", "blocked": "worse"}

#: Order decisions are counted in (the summary line).
DECISION_ORDER = ("worse", "better", "lower", "higher", "equivalent", "undecided", "continue", "blocked")

#: The MLflow table and the report's section title.
TITLE = "Adaptive comparisons"


def summary_from_manifest(manifest: dict[str, Any]) -> AdaptiveSummary | None:
    """The manifest's ``adaptive`` entry as a summary; None when absent or not readable."""
    entry = manifest.get("adaptive")
    if not isinstance(entry, dict):
        return None
    try:
        return AdaptiveSummary.model_validate(entry)
    except ValueError:
        return None


def _signed(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.3f}"


def delta_text(pair: PairDecision, *, confidence: bool = True) -> str:
    """``+0.012 [-0.004, +0.028] 95%``: Δ with its confidence sequence (``confidence``: with its level);
    ``-`` before the first item."""
    if pair.delta is None:
        return "-"
    if pair.low is None or pair.high is None:
        return _signed(pair.delta)
    text = f"{_signed(pair.delta)} [{_signed(pair.low)}, {_signed(pair.high)}]"
    return f"{text} {pair.confidence:.0%}" if confidence else text


def _one_confidence(summary: AdaptiveSummary) -> float | None:
    """The confidence every pair shares (a table header then says it once); None when they differ."""
    levels = {p.confidence for p in summary.pairs}
    return levels.pop() if len(levels) == 1 else None


def items_text(pair: PairDecision) -> str:
    """``120/500 (128)``: items the decision rests on of those planned, and (when more) those computed."""
    text = f"{pair.used}/{pair.planned}"
    return text if pair.computed == pair.used else f"{text} ({pair.computed})"


def saved_text(pair: PairDecision) -> str:
    """``372 (74%)``: items of the pair not computed, and their share of the planned."""
    if not pair.planned:
        return str(pair.saved)
    return f"{pair.saved} ({pair.saved / pair.planned:.0%})"


def decision_counts(summary: AdaptiveSummary) -> dict[str, int]:
    """Decision -> number of pairs, in :data:`DECISION_ORDER`, decisions no pair has left out."""
    counts = {name: sum(1 for p in summary.pairs if p.decision == name) for name in DECISION_ORDER}
    return {name: n for name, n in counts.items() if n}


def saved_line(summary: AdaptiveSummary) -> str:
    """``Adaptive: 1200 of 4000 planned items saved (30.0%), 2800 computed · 3 equivalent, 1 worse``."""
    planned, saved = summary.planned_total, summary.saved_total
    share = f" ({100.0 * saved / planned:.1f}%)" if planned else ""
    counts = ", ".join(f"{n} {name}" for name, n in decision_counts(summary).items())
    return f"Adaptive: {saved} of {planned} planned items saved{share}, {summary.computed_total} computed" + (
        f" · {counts}" if counts else ""
    )


def full_run_lines(summary: AdaptiveSummary) -> list[str]:
    """One line per benchmark that runs in full although the sweep is adaptive, with the reason."""
    return [f"{bench} runs in full: {why}" for bench, why in sorted(summary.full_runs.items())]


def adaptive_table(summary: AdaptiveSummary) -> Table:
    """The per-pair table (rich): variant, benchmark, decision, items, Δ [confidence sequence], saved."""
    level = _one_confidence(summary)
    table = Table(title=TITLE, title_justify="left", expand=False)
    table.add_column("Variant", overflow="fold", max_width=30)
    table.add_column("Benchmark", overflow="fold", max_width=22)
    table.add_column("Decision")
    table.add_column("Items used/planned (computed)", justify="right")
    table.add_column(
        f"Δ [{level:.0%} conf. seq.]" if level is not None else "Δ [conf. seq.]", justify="right", no_wrap=True
    )
    table.add_column("Saved", justify="right", no_wrap=True)
    for pair in summary.pairs:
        table.add_row(
            Text(pair.variant),
            Text(pair.benchmark),
            Text(pair.decision, style=DECISION_STYLE.get(pair.decision, "")),
            Text(items_text(pair)),
            Text(delta_text(pair, confidence=level is None)),
            Text(saved_text(pair)),
        )
    return table


def adaptive_renderable(summary: AdaptiveSummary) -> RenderableType:
    """The table, the saved total and the benchmarks that run in full, as one renderable."""
    parts: list[RenderableType] = []
    if summary.pairs:
        parts.append(adaptive_table(summary))
    parts.append(Text(saved_line(summary), style="bold"))
    parts.extend(Text(line, style="dim") for line in full_run_lines(summary))
    return Group(*parts)


def print_adaptive(console: Console, summary: AdaptiveSummary | None) -> None:
    """``qtrust report``'s section (nothing for a sweep that is not adaptive)."""
    if summary is not None:
        console.print(adaptive_renderable(summary))


def adaptive_document(summary: AdaptiveSummary) -> dict[str, Any]:
    """The summary as JSON for ``qtrust status --json``: each pair with ``saved`` and ``final``, and
    ``totals`` (planned, computed, saved, saved_fraction, decisions)."""
    document = summary.model_dump(mode="json")
    document["pairs"] = [{**p.model_dump(mode="json"), "saved": p.saved, "final": p.final} for p in summary.pairs]
    fraction = summary.saved_fraction
    document["totals"] = {
        "planned": summary.planned_total,
        "computed": summary.computed_total,
        "saved": summary.saved_total,
        "saved_fraction": None if math.isnan(fraction) else fraction,
        "decisions": decision_counts(summary),
    }
    return document


def adaptive_frame(summary: AdaptiveSummary) -> pd.DataFrame:
    """One row per pair with every field and ``saved`` (the MLflow table ``adaptive.json``)."""
    columns = [
        "variant",
        "reference",
        "benchmark",
        "metric",
        "decision",
        "used",
        "paired",
        "planned",
        "computed",
        "saved",
        "delta",
        "low",
        "high",
        "confidence",
        "margin",
        "method",
        "rounds",
        "cap",
        "decided_at",
    ]
    rows = [{**p.model_dump(mode="json"), "saved": p.saved} for p in summary.pairs]
    return pd.DataFrame(rows, columns=columns)


def adaptive_html(summary: AdaptiveSummary | None) -> str:
    """The report's section (empty for a sweep that is not adaptive)."""
    if summary is None:
        return ""
    esc = html.escape
    parts = [
        f"<h2 id='adaptive'>{TITLE}</h2><p class='note'>Each variant × benchmark was evaluated in a fixed item "
        "order and stopped once the anytime-valid confidence sequence of Δ (variant − reference on the items "
        "both answered) excluded 0 (worse / better), lay within ± the margin (equivalent) or reached its "
        "item cap (undecided). Used: the items the decision rests on.</p>"
    ]
    if summary.pairs:
        parts.append(
            "<table><tr><th>variant</th><th>benchmark</th><th>decision</th><th>items used / planned (computed)</th>"
            "<th>Δ [confidence sequence]</th><th>saved</th></tr>"
        )
        for pair in summary.pairs:
            css = DECISION_CLASS.get(pair.decision)
            decision = f"<td class='{css}'>{esc(pair.decision)}</td>" if css else f"<td>{esc(pair.decision)}</td>"
            parts.append(
                f"<tr><td>{esc(pair.variant)}</td><td>{esc(pair.benchmark)}</td>{decision}"
                f"<td>{esc(items_text(pair))}</td><td>{esc(delta_text(pair))}</td><td>{esc(saved_text(pair))}</td></tr>"
            )
        parts.append("</table>")
    parts.append(f"<p><strong>{esc(saved_line(summary))}</strong></p>")
    parts.extend(f"<p class='note'>{esc(line)}</p>" for line in full_run_lines(summary))
    return "\n".join(parts)


__all__ = [
    "DECISION_STYLE",
    "TITLE",
    "adaptive_document",
    "adaptive_frame",
    "adaptive_html",
    "adaptive_renderable",
    "adaptive_table",
    "decision_counts",
    "delta_text",
    "full_run_lines",
    "items_text",
    "print_adaptive",
    "saved_line",
    "saved_text",
    "summary_from_manifest",
]
