"""Uncertainty for qtrust's numbers: intervals on rates and means, and paired variant-vs-reference deltas.

Everything here is a pure function over numpy arrays and is deterministic given ``seed``.

* :func:`rate_estimate` — a Wilson score interval on ``k`` successes out of ``n`` (statsmodels).
* :func:`item_mean_estimate` — the mean of per-item values: Wilson when the values are 0/1, otherwise a
  percentile bootstrap (scipy).
* :func:`bootstrap_estimate` — any metric computed from a set of item positions (fairness gaps,
  composites), by a percentile bootstrap over the items.
* :func:`paired_delta` — variant minus reference on the same items: a paired bootstrap interval, and
  McNemar's exact test when both sides are 0/1.
* :func:`paired_bootstrap_delta` — the same for any metric computed from item positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.stats
from pydantic import BaseModel, ConfigDict
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

#: The default confidence level of every interval.
CONFIDENCE: float = 0.95

#: Resample index matrices are built in chunks of at most this many entries (bounds memory).
_CHUNK_ENTRIES = 4_000_000

NAN = float("nan")


class Estimate(BaseModel):
    """A point estimate with its standard error and an interval at ``confidence``."""

    model_config = ConfigDict(frozen=True)

    value: float
    """The point estimate (nan when ``n == 0``)."""
    se: float
    """Standard error (nan when undefined)."""
    low: float
    """Lower end of the interval."""
    high: float
    """Upper end of the interval."""
    n: int
    """Items that count (non-NaN)."""
    k: int | None = None
    """Successes, for a rate of 0/1 values."""
    method: str
    """How the interval was computed, e.g. ``"wilson"`` or ``"bootstrap percentile, B=1000, seed 0"``."""
    confidence: float = CONFIDENCE
    """The confidence level of ``[low, high]``."""


class PairedDelta(BaseModel):
    """A variant compared with its reference on the same items (``delta = value - reference``)."""

    model_config = ConfigDict(frozen=True)

    n: int
    """Items where both sides have a value."""
    reference: float
    """The reference's value on those items."""
    value: float
    """The variant's value on those items."""
    delta: float
    """``value - reference``."""
    low: float
    """Lower end of the interval of ``delta`` (paired bootstrap percentile)."""
    high: float
    """Upper end of the interval of ``delta``."""
    method: str
    """How the interval was computed, e.g. ``"paired bootstrap percentile, B=2000, seed 0"``."""
    mcnemar_p: float | None
    """McNemar's exact test p-value when both per-item vectors are 0/1, else None."""
    worse: int | None
    """Items where the reference has 1 and the variant 0 (binary only)."""
    better: int | None
    """Items where the reference has 0 and the variant 1 (binary only)."""
    significant: bool
    """McNemar's p below ``1 - confidence`` when binary; otherwise the interval excludes 0."""
    se: float = NAN
    """Bootstrap standard error of ``delta`` (nan when undefined)."""
    confidence: float = CONFIDENCE
    """The confidence level of ``[low, high]``."""


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _check_resampling(n_boot: int) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")


def _bootstrap_method(n_boot: int, seed: int, paired: bool = False) -> str:
    return f"{'paired ' if paired else ''}bootstrap percentile, B={n_boot}, seed {seed}"


def _is_binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0.0) | (values == 1.0)))


def _finite_values(values: np.ndarray | list[float], name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array[~np.isnan(array)]


def _batch(n: int) -> int:
    """Resamples per chunk so that one (resamples x n) index matrix stays under ``_CHUNK_ENTRIES``."""
    return max(1, _CHUNK_ENTRIES // max(n, 1))


def _resample_indices(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (chunk x n) matrices of item positions drawn with replacement, ``n_boot`` rows in all."""
    rng = np.random.default_rng(seed)
    step = _batch(n)
    for start in range(0, n_boot, step):
        yield rng.integers(0, n, size=(min(step, n_boot - start), n))


def _percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(low, high, se) of finite bootstrap draws; nan when fewer than two remain."""
    finite = draws[np.isfinite(draws)]
    if finite.size < 2:
        return NAN, NAN, NAN
    alpha = 1.0 - confidence
    low, high = np.quantile(finite, [alpha / 2, 1.0 - alpha / 2])
    return float(low), float(high), float(np.std(finite, ddof=1))


def rate_estimate(k: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """``k`` successes out of ``n`` with a Wilson score interval; ``se = sqrt(p (1 - p) / n)``.

    ``n == 0`` gives nan for the value, the standard error and the interval.
    """
    _check_confidence(confidence)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"a rate needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Estimate(value=NAN, se=NAN, low=NAN, high=NAN, n=0, k=0, method="wilson", confidence=confidence)
    p = k / n
    low, high = proportion_confint(k, n, alpha=1.0 - confidence, method="wilson")
    return Estimate(
        value=p,
        se=math.sqrt(p * (1.0 - p) / n),
        low=float(low),
        high=float(high),
        n=n,
        k=k,
        method="wilson",
        confidence=confidence,
    )


def _mean_bootstrap(values: np.ndarray, n_boot: int, seed: int, confidence: float) -> Any:
    """scipy's percentile bootstrap of the mean of ``values`` (vectorised, in bounded batches)."""
    return scipy.stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=n_boot,
        batch=_batch(len(values)),
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )


def item_mean_estimate(
    values: np.ndarray | list[float], confidence: float = CONFIDENCE, n_boot: int = 1000, seed: int = 0
) -> Estimate:
    """The mean of per-item values (NaN entries excluded) with an interval.

    When every value is 0 or 1 this is :func:`rate_estimate` (Wilson); otherwise a percentile
    bootstrap over the items with ``n_boot`` resamples (``scipy.stats.bootstrap``). With a single
    item the interval and standard error are nan.
    """
    _check_confidence(confidence)
    _check_resampling(n_boot)
    finite = _finite_values(values)
    n = int(finite.size)
    if n == 0 or _is_binary(finite):
        return rate_estimate(int(finite.sum()), n, confidence)
    method = _bootstrap_method(n_boot, seed)
    mean = float(finite.mean())
    if n == 1:
        return Estimate(value=mean, se=NAN, low=NAN, high=NAN, n=1, method=method, confidence=confidence)
    result = _mean_bootstrap(finite, n_boot, seed, confidence)
    return Estimate(
        value=mean,
        se=float(result.standard_error),
        low=float(result.confidence_interval.low),
        high=float(result.confidence_interval.high),
        n=n,
        method=method,
        confidence=confidence,
    )


def bootstrap_estimate(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    point: float | None = None,
    confidence: float = CONFIDENCE,
    n_boot: int = 500,
    seed: int = 0,
) -> Estimate:
    """A percentile bootstrap interval on any metric of ``n`` items.

    ``statistic(idx)`` computes the metric on the items at positions ``idx`` (an integer array; a
    resample with replacement of ``range(n)``). Resamples where it is NaN (e.g. a group that drew no
    item) are dropped. ``point`` defaults to ``statistic(np.arange(n))``.
    """
    _check_confidence(confidence)
    _check_resampling(n_boot)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    method = _bootstrap_method(n_boot, seed)
    if n == 0:
        return Estimate(value=NAN, se=NAN, low=NAN, high=NAN, n=0, method=method, confidence=confidence)
    value = float(statistic(np.arange(n)) if point is None else point)
    draws = np.array([float(statistic(idx)) for chunk in _resample_indices(n, n_boot, seed) for idx in chunk])
    low, high, se = _percentile_interval(draws, confidence)
    return Estimate(value=value, se=se, low=low, high=high, n=n, method=method, confidence=confidence)


def _aligned_pairs(
    reference: np.ndarray | list[float], variant: np.ndarray | list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of per-item values where neither side is NaN."""
    ref = np.asarray(reference, dtype=float)
    var = np.asarray(variant, dtype=float)
    if ref.ndim != 1 or var.ndim != 1:
        raise ValueError(f"per-item values must be one-dimensional, got shapes {ref.shape} and {var.shape}")
    if ref.shape != var.shape:
        raise ValueError(
            f"reference and variant must be aligned on the same items, got {ref.size} and {var.size} values"
        )
    keep = ~(np.isnan(ref) | np.isnan(var))
    return ref[keep], var[keep]


def paired_delta(
    reference: np.ndarray | list[float],
    variant: np.ndarray | list[float],
    *,
    confidence: float = CONFIDENCE,
    n_boot: int = 2000,
    seed: int = 0,
) -> PairedDelta:
    """Compare a variant's per-item values with the reference's on the same items.

    ``reference[i]`` and ``variant[i]`` belong to the same item; pairs with a NaN on either side
    are dropped. The interval of ``mean(variant) - mean(reference)`` is a paired percentile
    bootstrap (items resampled together). When both vectors are 0/1, McNemar's exact test gives
    ``mcnemar_p`` and decides ``significant``, and ``worse``/``better`` count the discordant items.
    """
    _check_confidence(confidence)
    _check_resampling(n_boot)
    ref, var = _aligned_pairs(reference, variant)
    n = int(ref.size)
    method = _bootstrap_method(n_boot, seed, paired=True)
    binary = n > 0 and _is_binary(ref) and _is_binary(var)
    mcnemar_p: float | None = None
    worse: int | None = None
    better: int | None = None
    if binary:
        worse = int(np.sum((ref == 1.0) & (var == 0.0)))
        better = int(np.sum((ref == 0.0) & (var == 1.0)))
        both = int(np.sum((ref == 1.0) & (var == 1.0)))
        neither = n - worse - better - both
        mcnemar_p = float(mcnemar([[both, worse], [better, neither]], exact=True).pvalue)
    if n == 0:
        return PairedDelta(
            n=0,
            reference=NAN,
            value=NAN,
            delta=NAN,
            low=NAN,
            high=NAN,
            method=method,
            mcnemar_p=None,
            worse=None,
            better=None,
            significant=False,
            confidence=confidence,
        )
    diffs = var - ref
    low = high = se = NAN
    if n >= 2:
        result = _mean_bootstrap(diffs, n_boot, seed, confidence)
        low = float(result.confidence_interval.low)
        high = float(result.confidence_interval.high)
        se = float(result.standard_error)
    if mcnemar_p is not None:
        significant = mcnemar_p < 1.0 - confidence
    else:
        significant = bool(low > 0.0 or high < 0.0)
    return PairedDelta(
        n=n,
        reference=float(ref.mean()),
        value=float(var.mean()),
        delta=float(diffs.mean()),
        low=low,
        high=high,
        method=method,
        mcnemar_p=mcnemar_p,
        worse=worse,
        better=better,
        significant=significant,
        se=se,
        confidence=confidence,
    )


def paired_bootstrap_delta(
    statistic: Callable[[np.ndarray], tuple[float, float]],
    n: int,
    *,
    confidence: float = CONFIDENCE,
    n_boot: int = 500,
    seed: int = 0,
) -> PairedDelta:
    """A paired percentile bootstrap on any metric, for a variant against its reference.

    ``statistic(idx)`` returns ``(reference_value, variant_value)`` computed on the items at
    positions ``idx`` — the same resample for both sides. Resamples where the delta is NaN are
    dropped. ``mcnemar_p``, ``worse`` and ``better`` are None; ``significant`` means the interval
    excludes 0.
    """
    _check_confidence(confidence)
    _check_resampling(n_boot)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    method = _bootstrap_method(n_boot, seed, paired=True)
    if n == 0:
        return PairedDelta(
            n=0,
            reference=NAN,
            value=NAN,
            delta=NAN,
            low=NAN,
            high=NAN,
            method=method,
            mcnemar_p=None,
            worse=None,
            better=None,
            significant=False,
            confidence=confidence,
        )
    ref_value, var_value = (float(v) for v in statistic(np.arange(n)))
    draws = []
    for chunk in _resample_indices(n, n_boot, seed):
        for idx in chunk:
            r, v = statistic(idx)
            draws.append(float(v) - float(r))
    low, high, se = _percentile_interval(np.array(draws), confidence)
    return PairedDelta(
        n=n,
        reference=ref_value,
        value=var_value,
        delta=var_value - ref_value,
        low=low,
        high=high,
        method=method,
        mcnemar_p=None,
        worse=None,
        better=None,
        significant=bool(low > 0.0 or high < 0.0),
        se=se,
        confidence=confidence,
    )
