"""Scoring parsed labels keyed by item id (single variants and ensembles alike)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from trust.benchmarks.base import Benchmark
from trust.types import Item


def scored_items(items: list[Item], labels_by_id: Mapping[str, str]) -> list[Item]:
    """The items that have a label in ``labels_by_id``, in ``items`` order: the order every score
    and every per-item array of this module uses."""
    return [item for item in items if item.id in labels_by_id]


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
    scored = scored_items(items, labels_by_id)
    labels = [labels_by_id[item.id] for item in scored]
    if logprobs_by_id is None:
        return benchmark.score(scored, labels)
    return benchmark.score(scored, labels, [logprobs_by_id.get(item.id) for item in scored])


def item_values(
    benchmark: Benchmark,
    items: list[Item],
    labels_by_id: Mapping[str, str],
    logprobs_by_id: Mapping[str, list[float] | None] | None = None,
) -> dict[str, np.ndarray]:
    """Per-item values of ``benchmark``'s metrics that are means over items.

    Metric name -> a float array aligned with :func:`scored_items` (NaN where an item does not
    count, e.g. outside an attribute filter), so ``np.nanmean`` of it equals the metric that
    :func:`score_labels` reports. Metrics without a per-item form (composites, fairness gaps,
    knowledge_score's combined score) are absent; a benchmark that cannot give per-item values
    gives an empty dict.
    """
    per_item = getattr(benchmark, "item_values", None)
    if per_item is None:
        return {}
    scored = scored_items(items, labels_by_id)
    labels = [labels_by_id[item.id] for item in scored]
    logprobs = None if logprobs_by_id is None else [logprobs_by_id.get(item.id) for item in scored]
    return per_item(scored, labels, logprobs)
