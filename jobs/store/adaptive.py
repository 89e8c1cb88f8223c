"""Where an adaptive sweep's comparisons stand: ``<sweep>/adaptive.json``.

An adaptive sweep (``adaptive:`` in the sweep file) evaluates each variant × benchmark in a fixed
item order, a round at a time, and stops a pair once its anytime-valid confidence sequence answers
(see :mod:`jobs.pipeline.adaptive` and :mod:`trust.comparison.sequential`). The driver rewrites this
file after every look (atomically, like the manifest); ``qtrust status``, MLflow and the report read
it. It is a *summary*: the decisions are recomputed from the stored answers by every run and resume,
so deleting it loses nothing.

Layout (JSON, one object)::

    {"pairs": [PairDecision, ...], "benchmarks": {name: AdaptiveBenchmark}, "totals": {...}}

Words: ``planned`` is what a full sweep would evaluate for the pair (the benchmark's items), ``used``
the items (positions in the fixed order) the decision rests on, ``computed`` the items of the
variant stored for the benchmark (``used`` plus at most a round of look-ahead), ``saved = planned −
computed``.
"""

from __future__ import annotations

import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.store.sweep import SweepStore

#: File name inside the sweep folder.
ADAPTIVE_FILE = "adaptive.json"

#: What a pair's decision can be. ``worse``/``better`` follow the primary metric's direction
#: (``lower``/``higher`` where the metric has none); ``blocked``: items of its next round failed, a
#: resume computes them and goes on; ``continue``: still running (or interrupted).
DecisionName = Literal["worse", "better", "lower", "higher", "equivalent", "undecided", "continue", "blocked"]

#: Decisions that end a pair (no more items are computed for it).
FINAL = frozenset({"worse", "better", "lower", "higher", "equivalent", "undecided"})


class PairDecision(BaseModel):
    """One variant × benchmark comparison against its model's reference."""

    model_config = ConfigDict(extra="ignore")

    variant: str
    reference: str
    benchmark: str
    metric: str
    """The benchmark's primary metric (a mean over items)."""
    higher_is_better: bool | None = None
    decision: DecisionName = "continue"
    planned: int = 0
    cap: int = 0
    """Most positions the pair may use: ``min(planned, max_items)``."""
    used: int = 0
    paired: int = 0
    """Of the ``used`` positions, the items both sides have a value for (the sequence's n)."""
    computed: int = 0
    delta: float | None = None
    """Mean of ``variant − reference`` over the paired items (None before the first)."""
    low: float | None = None
    high: float | None = None
    """The confidence sequence of Δ at ``used``."""
    rounds: int = 0
    confidence: float = 0.95
    margin: float = 0.02
    method: str = "betting"
    decided_at: str | None = None
    """When the decision was reached (ISO time; None while running)."""

    @property
    def saved(self) -> int:
        """Items of the pair's variant a full sweep would have computed that this one did not."""
        return max(0, self.planned - self.computed)

    @property
    def final(self) -> bool:
        return self.decision in FINAL


class AdaptiveBenchmark(BaseModel):
    """One adaptive benchmark: its settings and the reference's items."""

    model_config = ConfigDict(extra="ignore")

    metric: str
    planned: int
    confidence: float
    margin: float
    min_items: int
    max_items: int | None = None
    round: int
    method: str = "betting"
    references: dict[str, int] = Field(default_factory=dict)
    """Reference variant -> its items stored for this benchmark."""


class AdaptiveSummary(BaseModel):
    """Every adaptive pair of a sweep, with totals."""

    model_config = ConfigDict(extra="ignore")

    pairs: list[PairDecision] = Field(default_factory=list)
    benchmarks: dict[str, AdaptiveBenchmark] = Field(default_factory=dict)
    full_runs: dict[str, str] = Field(default_factory=dict)
    """Benchmark -> why it runs in full although the sweep is adaptive (metric not an item mean, judged, …)."""

    @property
    def planned_total(self) -> int:
        """Items a full sweep would compute for the adaptive benchmarks (variants and references)."""
        refs = {(b, r) for b, bench in self.benchmarks.items() for r in bench.references}
        return sum(p.planned for p in self.pairs) + sum(self.benchmarks[b].planned for b, _ in refs)

    @property
    def computed_total(self) -> int:
        """Items computed for the adaptive benchmarks (variants and references)."""
        return sum(p.computed for p in self.pairs) + sum(
            n for bench in self.benchmarks.values() for n in bench.references.values()
        )

    @property
    def saved_total(self) -> int:
        return max(0, self.planned_total - self.computed_total)

    @property
    def saved_fraction(self) -> float:
        return self.saved_total / self.planned_total if self.planned_total else math.nan

    def pair(self, variant: str, benchmark: str) -> PairDecision | None:
        return next((p for p in self.pairs if p.variant == variant and p.benchmark == benchmark), None)


def adaptive_path(store: SweepStore) -> str:
    return f"{store.path}/{ADAPTIVE_FILE}"


def write_adaptive(store: SweepStore, summary: AdaptiveSummary) -> None:
    """Commit the summary atomically (NaN-free JSON)."""
    store.write_text(adaptive_path(store), json.dumps(summary.model_dump(mode="json"), indent=1, sort_keys=True))


def read_adaptive(store: SweepStore) -> AdaptiveSummary | None:
    """The stored summary; None for a sweep that is not adaptive (or whose file is unreadable)."""
    text = store.read_text(adaptive_path(store))
    if not text:
        return None
    try:
        return AdaptiveSummary.model_validate(json.loads(text))
    except (ValueError, TypeError):
        return None


__all__ = [
    "ADAPTIVE_FILE",
    "FINAL",
    "AdaptiveBenchmark",
    "AdaptiveSummary",
    "PairDecision",
    "adaptive_path",
    "read_adaptive",
    "write_adaptive",
]
