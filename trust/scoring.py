"""Scoring parsed labels keyed by item id (single variants and ensembles alike)."""

from __future__ import annotations

from collections.abc import Mapping

from trust.benchmarks.base import Benchmark
from trust.types import Item


def score_labels(
    benchmark: Benchmark,
    items: list[Item],
    labels_by_id: Mapping[str, str],
    logprobs_by_id: Mapping[str, list[float] | None] | None = None,
) -> dict[str, float]:
    """Score ``benchmark`` on the items that have a label in ``labels_by_id`` (others are skipped).

    Using this one entry point for variants and ensembles guarantees they get the same metrics.
    ``logprobs_by_id`` (per-choice log-likelihoods) feeds metrics such as TruthfulQA MC2.
    """
    scored = [item for item in items if item.id in labels_by_id]
    labels = [labels_by_id[item.id] for item in scored]
    if logprobs_by_id is None:
        return benchmark.score(scored, labels)
    return benchmark.score(scored, labels, [logprobs_by_id.get(item.id) for item in scored])
