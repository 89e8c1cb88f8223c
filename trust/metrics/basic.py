"""Small metric helpers. Every function returns ``float('nan')`` when its denominator is empty."""

from __future__ import annotations

import math
from collections.abc import Sequence

NAN = float("nan")


def accuracy(refs: Sequence[object], preds: Sequence[object]) -> float:
    """Fraction of positions where ``preds`` equals ``refs`` (the sequences must have equal length)."""
    if len(refs) != len(preds):
        raise ValueError(f"refs and preds differ in length ({len(refs)} vs {len(preds)})")
    if not refs:
        return NAN
    return sum(1 for ref, pred in zip(refs, preds) if ref == pred) / len(refs)


def rate(flags: Sequence[bool]) -> float:
    """Fraction of true flags."""
    if not flags:
        return NAN
    return sum(1 for flag in flags if flag) / len(flags)


def conditional_rate(flags: Sequence[bool], condition: Sequence[bool]) -> float:
    """Fraction of true ``flags`` among the positions where ``condition`` is true."""
    if len(flags) != len(condition):
        raise ValueError(f"flags and condition differ in length ({len(flags)} vs {len(condition)})")
    return rate([flag for flag, keep in zip(flags, condition) if keep])


def is_nan(value: float) -> bool:
    """Whether ``value`` is NaN (a metric with an empty denominator)."""
    return isinstance(value, float) and math.isnan(value)
