"""An adaptive sweep's decisions in MLflow (see :mod:`jobs.store.adaptive`).

Each variant × benchmark run gets the metrics ``adaptive.items_used``, ``adaptive.items_planned``,
``adaptive.items_computed``, ``adaptive.items_saved``, ``adaptive.delta``, ``adaptive.delta_low``
and ``adaptive.delta_high`` (its confidence sequence; left out while unknown) at step = items used,
so a run's chart shows the sequence narrowing, and the tag ``qtrust.adaptive.decision``. The
sweep's parent run gets ``adaptive.items_saved_total``, ``adaptive.items_planned_total`` and
``adaptive.saved_fraction`` (step = items computed so far) and, at the end, the table
``adaptive.json`` (one row per pair). The driver reports after every look: only what changed since
the last report is sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from jobs.results.adaptive_view import adaptive_frame
from jobs.store.adaptive import AdaptiveSummary, PairDecision
from jobs.tracking.live import LiveTracker

#: The parent run's table of every pair's decision.
ADAPTIVE_TABLE = "adaptive.json"
#: The tag holding a pair run's decision.
DECISION_TAG = "qtrust.adaptive.decision"


def pair_metrics(pair: PairDecision) -> dict[str, float]:
    """A pair run's adaptive metrics; Δ and its bounds only once known."""
    metrics: dict[str, float] = {
        "adaptive.items_used": pair.used,
        "adaptive.items_planned": pair.planned,
        "adaptive.items_computed": pair.computed,
        "adaptive.items_saved": pair.saved,
    }
    for name, value in (("delta", pair.delta), ("delta_low", pair.low), ("delta_high", pair.high)):
        if value is not None and math.isfinite(value):
            metrics[f"adaptive.{name}"] = value
    return metrics


def sweep_metrics(summary: AdaptiveSummary) -> dict[str, float]:
    """The parent run's totals (the saved fraction only when something is planned)."""
    metrics: dict[str, float] = {
        "adaptive.items_saved_total": summary.saved_total,
        "adaptive.items_planned_total": summary.planned_total,
    }
    if summary.planned_total:
        metrics["adaptive.saved_fraction"] = summary.saved_fraction
    return metrics


class AdaptiveLog:
    """What this driver last sent of the sweep's adaptive summary, so that each report sends only
    the metrics and tags that changed; keeps the last summary for the final table."""

    def __init__(self, tracker: LiveTracker, parent_key: str, run_key: Callable[[str, str], str | None]) -> None:
        self._tracker = tracker
        self._parent_key = parent_key
        self._run_key = run_key
        self._sent: dict[tuple[str, str], float] = {}
        self._tags: dict[str, str] = {}
        self._table: str | None = None
        self.last: AdaptiveSummary | None = None
        """The summary of the latest report."""

    def report(self, summary: AdaptiveSummary) -> None:
        """Queue the metrics and tags of ``summary`` that differ from what was sent before."""
        self.last = summary
        for pair in summary.pairs:
            key = self._run_key(pair.variant, pair.benchmark)
            if key is None:
                continue
            self._send(key, pair_metrics(pair), pair.used)
            if self._tags.get(key) != pair.decision:
                self._tracker.set_tags(key, {DECISION_TAG: pair.decision})
                self._tags[key] = pair.decision
        self._send(self._parent_key, sweep_metrics(summary), summary.computed_total)

    def _send(self, key: str, metrics: dict[str, float], step: int) -> None:
        changed = {name: value for name, value in metrics.items() if self._sent.get((key, name)) != value}
        if changed:
            self._tracker.log_metrics(key, changed, step=step)
            self._sent.update({(key, name): value for name, value in changed.items()})

    def log_table(self) -> None:
        """Log the latest summary as the parent's table ``adaptive.json`` (not again when unchanged)."""
        if self.last is None:
            return
        content = json.dumps(self.last.model_dump(mode="json"), sort_keys=True)
        if content == self._table:
            return
        self._tracker.log_table(self._parent_key, adaptive_frame(self.last), ADAPTIVE_TABLE)
        self._table = content


__all__ = ["ADAPTIVE_TABLE", "DECISION_TAG", "AdaptiveLog", "pair_metrics", "sweep_metrics"]
