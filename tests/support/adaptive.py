"""Adaptive summaries with known numbers, for the tests of what status, MLflow and the report show."""

from __future__ import annotations

from typing import Any

from jobs.store.adaptive import AdaptiveBenchmark, AdaptiveSummary, PairDecision


def pair(
    variant: str,
    benchmark: str,
    decision: str,
    used: int,
    planned: int,
    computed: int,
    delta: float | None = None,
    low: float | None = None,
    high: float | None = None,
    *,
    reference: str = "tiny-ref",
    **extra: Any,
) -> PairDecision:
    """One pair against ``reference`` on the benchmark's ``accuracy``."""
    return PairDecision(
        variant=variant,
        reference=reference,
        benchmark=benchmark,
        metric="accuracy",
        higher_is_better=True,
        decision=decision,
        planned=planned,
        cap=planned,
        used=used,
        paired=used,
        computed=computed,
        delta=delta,
        low=low,
        high=high,
        rounds=max(1, used // 4),
        **extra,
    )


def summary(pairs: list[PairDecision], references: dict[str, dict[str, int]], **extra: Any) -> AdaptiveSummary:
    """The summary of ``pairs``; ``references``: benchmark -> {reference: its items stored}."""
    benchmarks = {
        bench: AdaptiveBenchmark(
            metric="accuracy",
            planned=next(p.planned for p in pairs if p.benchmark == bench),
            confidence=0.95,
            margin=0.02,
            min_items=4,
            round=4,
            references=refs,
        )
        for bench, refs in references.items()
    }
    return AdaptiveSummary(pairs=pairs, benchmarks=benchmarks, **extra)


def three_pairs() -> AdaptiveSummary:
    """tiny-w8 × xstest equivalent, tiny-w4 × xstest worse, tiny-w2 × machine_ethics still running.

    Planned 500 + 500 + 300 (variants) + 500 + 300 (the reference) = 2100; computed 128 + 64 + 48 +
    128 + 48 = 416; saved 1684 (80.2%)."""
    return summary(
        [
            pair(
                "tiny-w8",
                "xstest",
                "equivalent",
                120,
                500,
                128,
                0.004,
                -0.011,
                0.019,
                decided_at="2026-12-08T01:00:00Z",
            ),
            pair("tiny-w4", "xstest", "worse", 64, 500, 64, -0.21, -0.33, -0.08, decided_at="2026-12-08T00:58:00Z"),
            pair("tiny-w2", "machine_ethics", "continue", 40, 300, 48, -0.05, -0.4, 0.3),
        ],
        {"xstest": {"tiny-ref": 128}, "machine_ethics": {"tiny-ref": 48}},
        full_runs={"bbq": "its primary metric (bias score) is not an item mean"},
    )
