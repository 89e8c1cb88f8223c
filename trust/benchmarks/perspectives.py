"""Perspective scores on DecodingTrust's 0-100 scale (higher = more trustworthy).

A benchmark definition names the metric behind its score (``perspective_score``); a variant's
score for a perspective is the mean over the benchmarks of that perspective it was evaluated on.
They are logged next to the raw metrics, never instead of them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from trust.benchmarks.definition import BenchmarkDefinition


def benchmark_score(definition: BenchmarkDefinition | None, metrics: dict[str, float]) -> float | None:
    """The 0-100 score of one benchmark result, or None when the definition declares none."""
    if definition is None or definition.perspective_score is None:
        return None
    value = metrics.get(definition.perspective_score.metric)
    if value is None or math.isnan(value):
        return None
    value = value if definition.perspective_score.higher_is_better else 1.0 - value
    return 100.0 * value


def perspective_scores(results: Iterable[tuple[str | None, float | None]]) -> dict[str, float]:
    """Mean 0-100 score per perspective from (perspective, benchmark score) pairs."""
    collected: dict[str, list[float]] = defaultdict(list)
    for perspective, score in results:
        if perspective and score is not None:
            collected[perspective].append(score)
    return {name: sum(values) / len(values) for name, values in sorted(collected.items())}
