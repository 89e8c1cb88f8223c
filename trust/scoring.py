"""Scoring parsed labels keyed by item id (single variants and ensembles alike)."""

from __future__ import annotations

from collections.abc import Mapping

from trust.benchmarks.base import Benchmark
from trust.types import Item


def score_labels(benchmark: Benchmark, items: list[Item], labels_by_id: Mapping[str, str]) -> dict[str, float]:
    """Score ``benchmark`` on the items that have a label in ``labels_by_id`` (others are skipped).

    Using this one entry point for variants and ensembles guarantees they get the same metrics.
    """
    scored = [item for item in items if item.id in labels_by_id]
    return benchmark.score(scored, [labels_by_id[item.id] for item in scored])
