"""What a stored answer means under a benchmark's current definition: its label, and which way its metrics point.

Pure functions of a :class:`jobs.plan.build.BenchmarkRun`, used by scoring (``jobs/results``) and by the
adaptive feed (``jobs/pipeline/adaptive.py``), which labels answers as they are committed.
"""

from __future__ import annotations

from typing import Any

from jobs.plan.build import BenchmarkRun
from trust.types import ERROR, Item


def label_for(run: BenchmarkRun, item: Item, output: str | None, logprobs: Any, error: str | None) -> str:
    """The label of one stored answer under the benchmark's current parser."""
    if error:
        return ERROR
    if run.benchmark.task == "loglikelihood":
        values = list(logprobs) if logprobs is not None else []
        if not item.choices or len(values) != len(item.choices):
            return ERROR
        best = max(range(len(values)), key=lambda i: values[i])
        return item.choices[best]
    return run.benchmark.parse(item, output or "")


def higher_is_better(run: BenchmarkRun, metric: str) -> bool | None:
    """Direction of a metric, where it is known: what the definition declares (the metric entry's
    ``higher_is_better``, the perspective score, the metric function's registration); else by name,
    accuracies and scores are higher-is-better, failure rates (``invalid_rate``, ``over_refusal``, gaps)
    lower-is-better; None otherwise (a refusal rate is good on harmful prompts and bad on benign ones).
    """
    declared = getattr(run.benchmark, "higher_is_better", None)
    if declared is not None:
        found = declared(metric)
        if found is not None:
            return bool(found)
    definition = getattr(run.benchmark, "definition", None)
    spec = getattr(definition, "perspective_score", None)
    if spec is not None and spec.metric == metric:
        return bool(spec.higher_is_better)
    lowered = metric.lower()
    if any(
        word in lowered
        for word in ("invalid", "error", "over_refusal", "abstain", "difference", "gap", "unsafe", "attack_success")
    ):
        return False
    if any(word in lowered for word in ("accuracy", "score", "mc1", "mc2", "safe", "agreement")):
        return True
    return None


__all__ = ["higher_is_better", "label_for"]
