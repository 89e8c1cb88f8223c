"""A benchmark's judge labels: which judge label becomes which benchmark label."""

from __future__ import annotations

from trust.benchmarks.base import Benchmark
from trust.judges.verdicts import JUDGE_ERROR
from trust.types import ERROR


def judge_labels_of(benchmark: Benchmark) -> dict[str, str]:
    """The benchmark's mapping of judge labels onto its own labels (empty: labels used as they are)."""
    definition = getattr(benchmark, "definition", None)
    return dict(getattr(definition, "judge_labels", {}) or {})


def benchmark_label(mapping: dict[str, str], judge_label: str | None) -> str:
    """A judge's label in the benchmark's label space (a missing judgment counts as the error label)."""
    if judge_label is None:
        judge_label = JUDGE_ERROR
    return mapping.get(judge_label, ERROR if judge_label == JUDGE_ERROR else judge_label)
