"""Anytime-valid confidence sequences for a paired difference, and the early-stopping rule built on them.

A variant is compared with its reference on the same items, one item at a time in a fixed order. Each
item gives a paired difference ``Δ_i = variant_i − reference_i`` of two per-item scores in ``[0, 1]``, so
``Δ_i ∈ [−1, 1]``. A *confidence sequence* is a sequence of intervals ``C_1, C_2, …`` for the mean of
``Δ`` that holds at every ``n`` at once: ``P(∀n: mean ∈ C_n) ≥ confidence``. So the comparison may be
looked at after every round and stopped as soon as ``C_n`` answers the question, and the error rates
stay at ``1 − confidence`` however often it looks — unlike a fixed 95% interval checked after every
round, whose false alarms grow with the number of looks.

Two sequences, written from Waudby-Smith & Ramdas, "Estimating means of bounded random variables by
betting" (JRSS-B 2023); both work on ``X_i = (Δ_i + 1) / 2 ∈ [0, 1]`` and map back:

* :class:`BettingSequence` (the default, ``method="betting"``) — the hedged capital process. For a
  candidate mean ``m`` two bettors start with capital 1 and bet fractions ``λ⁺_i(m)`` on ``X_i > m`` and
  ``λ⁻_i(m)`` on ``X_i < m``; the hedged capital ``½ ∏(1 + λ⁺_i (X_i − m)) + ½ ∏(1 − λ⁻_i (X_i − m))``
  is a nonnegative martingale under ``mean = m``, so by Ville's inequality it reaches ``1/α`` with
  probability at most ``α``. ``C_n`` is the set of ``m`` whose capital has not reached ``1/α`` *at any
  time so far* (the running intersection). The bets are the predictable plug-in
  ``λ̇_i = sqrt(2 log(2/α) / (σ̂²_{i−1} · i · log(1 + i)))`` from the running (prior-smoothed) mean and
  variance of the items before ``i``, truncated to ``λ⁺_i(m) = min(λ̇_i, c/m)`` and
  ``λ⁻_i(m) = min(λ̇_i, c/(1−m))`` with ``c = ½``. Candidate means are a grid over ``[−1, 1]`` (in
  ``Δ``) that always holds ``0`` and ``±margin`` exactly; the reported interval is the hull of the
  surviving grid points widened by one grid step each side, so a true mean between two grid points
  is still covered. Cost: ``O(grid)`` per item, vectorised with numpy.
* :class:`BernsteinSequence` (``method="bernstein"``) — the predictable plug-in empirical-Bernstein
  sequence of the same paper (cf. Howard et al. 2021, "Time-uniform, nonparametric, nonasymptotic
  confidence sequences", AoS): closed form, ``O(1)`` per item, somewhat wider than the betting
  sequence when the pair mostly agrees.

Both are deterministic: the same values in the same order give bit-identical intervals however they
are split into updates (sums are always accumulated item by item in order), so a resumed sweep that
replays its stored answers reaches the same decision.

The rule (:func:`decide`, :class:`SequentialComparison`, :func:`replay`): never decide before
``min_items``; then ``worse`` when the sequence lies at or below 0, ``better`` when at or above 0
(a sequence that excludes 0 is reported as worse/better even if it also lies inside ±margin: the
change is real, only small), ``equivalent`` when it lies inside ``[−margin, margin]``, ``undecided``
once ``max_items`` (or the last item) is reached, else ``continue``. :func:`paired_differences` turns
two per-item score arrays into the paired differences, leaving out items either side lacks.

**Which metrics qualify.** The sequence is for the mean of per-item values, so any metric that *is*
an item mean does: accuracy, exact match, token F1, refusal / toxicity / attack-success rates, any
0/1 or ``[0, 1]`` per-item score averaged with equal weights. Metrics that are not item means — fairness
gaps (a difference of group rates), composites of several metrics, macro averages with per-group
weights, ratios — have no sequential rule here: run them in full.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Bets are truncated at ``c / m`` (and ``c / (1 − m)``) for the betting sequence, and at ``c`` for the
#: empirical-Bernstein one; Waudby-Smith & Ramdas suggest ½ or ¾.
TRUNCATION: float = 0.5

#: Items × streams × grid points held in memory at once while updating (bounds memory per update).
_CHUNK_ENTRIES = 2_000_000

Array = NDArray[np.float64]


class Decision(str, Enum):
    """What a sequential comparison says after a look."""

    WORSE = "worse"
    """The variant's mean is below the reference's (the sequence lies at or below 0)."""
    BETTER = "better"
    """The variant's mean is above the reference's (the sequence lies at or above 0)."""
    EQUIVALENT = "equivalent"
    """The difference lies inside ``±margin``."""
    UNDECIDED = "undecided"
    """``max_items`` (or the last item) was reached without an answer."""
    CONTINUE = "continue"
    """No answer yet: evaluate another round."""


class SequentialConfig(BaseModel):
    """How a variant × benchmark comparison stops early (the ``adaptive:`` settings of a sweep)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """The confidence sequence holds at every ``n`` at once with this probability."""
    margin: float = Field(0.02, ge=0.0, lt=1.0)
    """Equivalence margin on the primary metric: inside ``±margin`` counts as no change."""
    min_items: int = Field(100, ge=1)
    """Never decide on fewer paired items than this."""
    max_items: int | None = Field(None, ge=1)
    """Stop as ``undecided`` at this many paired items (None: at the benchmark's last item)."""
    round: int = Field(50, ge=1)
    """Items per round: the comparison is looked at after each round."""
    method: Literal["betting", "bernstein"] = "betting"
    """``betting`` (hedged capital, tighter) or ``bernstein`` (empirical Bernstein, closed form)."""
    grid: int = Field(2000, ge=10, le=100_000)
    """Grid intervals over ``[−1, 1]`` for the betting sequence (2000: a step of 0.001)."""

    @model_validator(mode="after")
    def _items_in_order(self) -> SequentialConfig:
        if self.max_items is not None and self.max_items < self.min_items:
            raise ValueError(f"max_items ({self.max_items}) is below min_items ({self.min_items}); raise max_items")
        return self

    @property
    def alpha(self) -> float:
        """``1 − confidence``: the error rate the sequence allows over all looks together."""
        return 1.0 - self.confidence


def delta_grid(resolution: int, margin: float = 0.0, extra: ArrayLike = ()) -> Array:
    """Candidate means of ``Δ``: ``resolution`` equal steps over ``[−1, 1]`` plus ``0``, ``±margin`` and ``extra``."""
    points = np.concatenate(
        [np.linspace(-1.0, 1.0, resolution + 1), [0.0, -margin, margin], np.asarray(extra, dtype=np.float64)]
    )
    return np.unique(np.clip(points, -1.0, 1.0))


def _check_deltas(values: ArrayLike, streams: int) -> Array:
    """``values`` as a float array [streams, items] of paired differences in ``[−1, 1]``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and streams == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] != streams:
        raise ValueError(f"expected paired differences of shape [{streams}, items], got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("paired differences must be finite: drop items where either side has no value")
    if arr.size and (arr.min() < -1.0 or arr.max() > 1.0):
        raise ValueError("paired differences must lie in [-1, 1] (per-item scores in [0, 1])")
    return arr


def _running_sum(previous: Array, values: Array) -> Array:
    """Cumulative sums along axis 1 that continue ``previous`` item by item (same rounding however split)."""
    return np.cumsum(np.concatenate([previous[:, None], values], axis=1), axis=1)[:, 1:]


class _PlugIn:
    """The running, prior-smoothed mean and variance of ``X`` behind the predictable plug-in bets.

    ``μ̂_t = (½ + Σ_{i≤t} X_i) / (t + 1)`` and ``σ̂²_t = (¼ + Σ_{i≤t} (X_i − μ̂_i)²) / (t + 1)``; the bet
    for item ``t`` uses only ``σ̂²_{t−1}`` (and the empirical-Bernstein width uses ``μ̂_{t−1}``).
    """

    def __init__(self, streams: int, alpha: float) -> None:
        self.n = 0
        self.sum_x = np.zeros(streams)
        self.sum_sq = np.zeros(streams)
        self._log_term = 2.0 * math.log(2.0 / alpha)

    def step(self, x: Array) -> tuple[Array, Array, Array]:
        """Advance over ``x`` [streams, k]; return (raw bets ``λ̇``, previous means ``μ̂_{t−1}``, times ``t``)."""
        k = x.shape[1]
        t = self.n + np.arange(1, k + 1, dtype=np.float64)
        sums = _running_sum(self.sum_x, x)
        means = (0.5 + sums) / (t + 1.0)
        sq = _running_sum(self.sum_sq, (x - means) ** 2)
        prev_mean = np.concatenate([((0.5 + self.sum_x) / (self.n + 1.0))[:, None], means[:, :-1]], axis=1)
        prev_var = np.concatenate(
            [((0.25 + self.sum_sq) / (self.n + 1.0))[:, None], ((0.25 + sq) / (t + 1.0))[:, :-1]], axis=1
        )
        bets = np.sqrt(self._log_term / (prev_var * t * np.log1p(t)))
        self.n += k
        self.sum_x = sums[:, -1].copy()
        self.sum_sq = sq[:, -1].copy()
        return bets, prev_mean, t


class BettingSequence:
    """The hedged-capital betting confidence sequence for the mean of ``Δ``, for ``streams`` streams at once.

    ``update`` takes the next items of every stream ([streams, k], the same ``k`` for all); ``interval``
    gives the running-intersection interval per stream. ``grid`` holds the candidate means in ``Δ``
    (see :func:`delta_grid`); the decision points (0, ±margin) must be on it.
    """

    def __init__(self, grid: ArrayLike, alpha: float, streams: int = 1) -> None:
        self.grid = np.asarray(grid, dtype=np.float64)
        if self.grid.ndim != 1 or self.grid.size < 2 or np.any(np.diff(self.grid) <= 0):
            raise ValueError("grid must be a strictly increasing 1-D array of at least two candidate means")
        self.alpha = alpha
        self.streams = streams
        self._m = (self.grid + 1.0) / 2.0
        with np.errstate(divide="ignore"):
            self._cap_up = TRUNCATION / self._m
            self._cap_down = TRUNCATION / (1.0 - self._m)
        self._threshold = math.log(1.0 / alpha)
        self._plug_in = _PlugIn(streams, alpha)
        shape = (streams, self.grid.size)
        self.log_up = np.zeros(shape)
        self.log_down = np.zeros(shape)
        self.rejected = np.zeros(shape, dtype=bool)

    @property
    def n(self) -> int:
        """Items seen per stream."""
        return self._plug_in.n

    def update(self, deltas: ArrayLike) -> None:
        """Add the next paired differences of every stream ([streams, k], or [k] for one stream)."""
        values = _check_deltas(deltas, self.streams)
        step = max(1, _CHUNK_ENTRIES // (self.streams * self.grid.size))
        for start in range(0, values.shape[1], step):
            self._update_chunk((values[:, start : start + step] + 1.0) / 2.0)

    def _update_chunk(self, x: Array) -> None:
        bets, _, _ = self._plug_in.step(x)
        gap = x.T[:, :, None] - self._m  # [k, streams, grid]: accumulating over the first axis is fast
        lam = bets.T[:, :, None]
        up = np.minimum(lam, self._cap_up)
        up *= gap
        np.log1p(up, out=up)
        down = np.minimum(lam, self._cap_down)
        down *= gap
        np.negative(down, out=down)
        np.log1p(down, out=down)
        # start from the capital so far, then add item by item (the same rounding however items are split)
        up[0] += self.log_up
        down[0] += self.log_down
        np.add.accumulate(up, axis=0, out=up)
        np.add.accumulate(down, axis=0, out=down)
        self.rejected |= self._reaches_threshold(up, down).any(axis=0)
        self.log_up = up[-1].copy()
        self.log_down = down[-1].copy()

    def _reaches_threshold(self, log_up: Array, log_down: Array) -> NDArray[np.bool_]:
        """Where the hedged capital ``½ e^a + ½ e^b`` reaches ``1/α`` (``a``, ``b``: the log capitals).

        Its log lies in ``[max(a, b) − log 2, max(a, b)]``, so the exact value is computed only in between.
        """
        top = np.maximum(log_up, log_down)
        hit = top >= self._threshold + math.log(2.0)
        unsure = (top >= self._threshold) & ~hit
        if unsure.any():
            hedged = np.logaddexp(log_up[unsure], log_down[unsure]) - math.log(2.0)
            hit[unsure] = hedged >= self._threshold
        return hit

    def interval(self) -> tuple[Array, Array]:
        """(low, high) of ``Δ`` per stream: the surviving grid points' hull widened by one grid step.

        Should every grid point have been rejected (an event of probability at most ``α``), the
        interval is the grid cell around the point with the least current evidence against it.
        """
        alive = ~self.rejected
        size = self.grid.size
        any_alive = alive.any(axis=1)
        first = np.argmax(alive, axis=1)
        last = size - 1 - np.argmax(alive[:, ::-1], axis=1)
        fallback = np.argmin(np.logaddexp(self.log_up, self.log_down), axis=1)
        first = np.where(any_alive, first, fallback)
        last = np.where(any_alive, last, fallback)
        low = self.grid[np.maximum(first - 1, 0)]
        high = self.grid[np.minimum(last + 1, size - 1)]
        return low, high


class BernsteinSequence:
    """The predictable plug-in empirical-Bernstein confidence sequence for the mean of ``Δ``, per stream.

    ``C_t = Σλ_i X_i / Σλ_i ± (log(2/α) + Σ v_i ψ(λ_i)) / Σλ_i`` with ``v_i = 4 (X_i − μ̂_{i−1})²``,
    ``ψ(λ) = (−log(1 − λ) − λ) / 4`` and ``λ_i = min(λ̇_i, c)``, intersected over time.
    """

    def __init__(self, alpha: float, streams: int = 1) -> None:
        self.alpha = alpha
        self.streams = streams
        self._plug_in = _PlugIn(streams, alpha)
        self._log_term = math.log(2.0 / alpha)
        self.sum_bets = np.zeros(streams)
        self.sum_weighted = np.zeros(streams)
        self.sum_penalty = np.zeros(streams)
        self.low = np.full(streams, -1.0)
        self.high = np.full(streams, 1.0)
        self.current_low = np.full(streams, -1.0)
        self.current_high = np.full(streams, 1.0)

    @property
    def n(self) -> int:
        """Items seen per stream."""
        return self._plug_in.n

    def update(self, deltas: ArrayLike) -> None:
        """Add the next paired differences of every stream ([streams, k], or [k] for one stream)."""
        values = _check_deltas(deltas, self.streams)
        if values.shape[1] == 0:
            return
        x = (values + 1.0) / 2.0
        raw, prev_mean, _ = self._plug_in.step(x)
        bets = np.minimum(raw, TRUNCATION)
        penalty = 4.0 * (x - prev_mean) ** 2 * (-np.log1p(-bets) - bets) / 4.0
        sum_bets = _running_sum(self.sum_bets, bets)
        sum_weighted = _running_sum(self.sum_weighted, bets * x)
        sum_penalty = _running_sum(self.sum_penalty, penalty)
        centre = sum_weighted / sum_bets
        half = (self._log_term + sum_penalty) / sum_bets
        lows = 2.0 * np.clip(centre - half, 0.0, 1.0) - 1.0
        highs = 2.0 * np.clip(centre + half, 0.0, 1.0) - 1.0
        self.low = np.maximum.accumulate(np.concatenate([self.low[:, None], lows], axis=1), axis=1)[:, -1]
        self.high = np.minimum.accumulate(np.concatenate([self.high[:, None], highs], axis=1), axis=1)[:, -1]
        self.current_low, self.current_high = lows[:, -1], highs[:, -1]
        self.sum_bets, self.sum_weighted, self.sum_penalty = sum_bets[:, -1], sum_weighted[:, -1], sum_penalty[:, -1]

    def interval(self) -> tuple[Array, Array]:
        """(low, high) of ``Δ`` per stream (the running intersection; should it be empty, an event of
        probability at most ``α``, the latest interval alone)."""
        empty = self.low > self.high
        return np.where(empty, self.current_low, self.low), np.where(empty, self.current_high, self.high)


ConfidenceSequence = BettingSequence | BernsteinSequence
"""Either confidence sequence: both have ``n``, ``update`` and ``interval``."""


def make_sequence(config: SequentialConfig, streams: int = 1, extra_grid: ArrayLike = ()) -> ConfidenceSequence:
    """The confidence sequence ``config.method`` names, for ``streams`` streams."""
    if config.method == "bernstein":
        return BernsteinSequence(config.alpha, streams)
    return BettingSequence(delta_grid(config.grid, config.margin, extra_grid), config.alpha, streams)


def decide(low: ArrayLike, high: ArrayLike, n: int, config: SequentialConfig, last: bool = False) -> NDArray[np.str_]:
    """The decision per stream from its interval ``[low, high]`` of ``Δ`` after ``n`` paired items.

    ``last`` says no further item exists (the benchmark ran out), so an open question is ``undecided``.
    """
    lo = np.asarray(low, dtype=np.float64)
    hi = np.asarray(high, dtype=np.float64)
    out = np.full(lo.shape, Decision.CONTINUE.value, dtype=object)
    if n < config.min_items:
        if last:
            out[:] = Decision.UNDECIDED.value
        return out.astype(str)
    if last or (config.max_items is not None and n >= config.max_items):
        out[:] = Decision.UNDECIDED.value
    out[(lo >= -config.margin) & (hi <= config.margin)] = Decision.EQUIVALENT.value
    out[hi <= 0.0] = Decision.WORSE.value
    out[lo >= 0.0] = Decision.BETTER.value
    return out.astype(str)


class SequentialResult(BaseModel):
    """Where a sequential comparison stands: its decision, the items it used, and ``Δ`` with its sequence."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    items_used: int
    """Paired items the decision rests on."""
    items_available: int
    """Paired items that were offered (stored, or the benchmark's size)."""
    delta: float
    """Mean of the paired differences over ``items_used`` (nan when none)."""
    low: float
    """Lower end of the confidence sequence of ``Δ`` at ``items_used``."""
    high: float
    """Upper end of the confidence sequence of ``Δ`` at ``items_used``."""
    confidence: float
    method: str


class SequentialComparison:
    """One variant × benchmark comparison updated round by round with paired differences.

    >>> cmp = SequentialComparison(SequentialConfig(min_items=10))
    >>> cmp.update([-1.0, 0.0, -1.0] * 20)
    >>> cmp.decide()
    <Decision.WORSE: 'worse'>
    """

    def __init__(self, config: SequentialConfig | None = None) -> None:
        self.config = config or SequentialConfig()
        self._sequence = make_sequence(self.config)
        self._sum = 0.0

    @property
    def n(self) -> int:
        """Paired items seen."""
        return self._sequence.n

    @property
    def mean(self) -> float:
        """Mean paired difference so far (nan before the first item)."""
        return self._sum / self.n if self.n else math.nan

    def update(self, deltas: ArrayLike) -> None:
        """Add the next paired differences ``variant − reference``, each in ``[−1, 1]``, in the fixed item order."""
        values = _check_deltas(deltas, 1)
        self._sequence.update(values)
        self._sum = float(_running_sum(np.array([self._sum]), values)[0, -1]) if values.size else self._sum

    def interval(self) -> tuple[float, float]:
        """(low, high) of ``Δ``: holds at every ``n`` at once with probability ``confidence``."""
        low, high = self._sequence.interval()
        return float(low[0]), float(high[0])

    def decide(self, last: bool = False) -> Decision:
        """The decision now (``last``: no further item exists)."""
        low, high = self._sequence.interval()
        return Decision(str(decide(low, high, self.n, self.config, last=last)[0]))

    def result(self, items_available: int, last: bool = False) -> SequentialResult:
        """The decision with its interval, items used and ``items_available``."""
        low, high = self.interval()
        return SequentialResult(
            decision=self.decide(last=last),
            items_used=self.n,
            items_available=items_available,
            delta=self.mean,
            low=low,
            high=high,
            confidence=self.config.confidence,
            method=self.config.method,
        )


def paired_differences(variant: ArrayLike, reference: ArrayLike) -> Array:
    """``variant − reference`` per item, in item order, over the items where both have a value.

    Both are per-item scores in ``[0, 1]`` on the same items in the same (fixed) order; an item where
    either side is NaN (not answered, or an error row) is left out.
    """
    v = np.asarray(variant, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if v.shape != r.shape or v.ndim != 1:
        raise ValueError(
            f"variant and reference must be 1-D per-item scores of one length, got {v.shape} and {r.shape}"
        )
    both = ~np.isnan(v) & ~np.isnan(r)
    v, r = v[both], r[both]
    if v.size and (min(v.min(), r.min()) < 0.0 or max(v.max(), r.max()) > 1.0):
        raise ValueError("per-item scores must lie in [0, 1] for a sequential comparison; run this metric in full")
    return v - r


def replay(deltas: ArrayLike, config: SequentialConfig, complete: bool = True) -> SequentialResult:
    """Replay stored paired differences in their fixed order, a round at a time, until a decision.

    Looks come after every ``config.round`` items (and at ``max_items``). ``complete`` says the array
    holds every item the benchmark has, so running out of items is ``undecided``; with
    ``complete=False`` (answers still arriving) running out is ``continue``.
    """
    values = _check_deltas(deltas, 1)[0]
    available = values.size
    cap = available if config.max_items is None else min(available, config.max_items)
    cmp = SequentialComparison(config)
    while True:
        stop = min(cmp.n + config.round, cap)
        cmp.update(values[cmp.n : stop])
        ran_out = cmp.n >= available
        decision = cmp.decide(last=ran_out and complete)
        if decision != Decision.CONTINUE or cmp.n >= cap:
            return cmp.result(items_available=available, last=ran_out and complete)


class SequentialPair:
    """A variant × benchmark comparison fed by *positions* in the fixed item order, a round at a time.

    A sweep looks after positions ``round, 2·round, …`` (capped at ``min(planned, max_items)``); each
    look adds the paired differences of the positions since the last one (items where either side has
    no value are left out, so ``paired ≤ used``). This is what the adaptive pipeline and the savings
    replay both run, so a replay on a complete stored sweep reaches the decision the sweep reached.

    >>> pair = SequentialPair(SequentialConfig(min_items=10, round=10), planned=100)
    >>> pair.look([0.0] * 10, [1.0] * 10)
    <Decision.WORSE: 'worse'>
    >>> pair.used, pair.paired
    (10, 10)
    """

    def __init__(self, config: SequentialConfig, planned: int) -> None:
        self.config = config
        self.planned = planned
        self.cap = planned if config.max_items is None else min(planned, config.max_items)
        self.used = 0
        self.rounds = 0
        self.decision = Decision.CONTINUE if self.cap > 0 else Decision.UNDECIDED
        self._cmp = SequentialComparison(config)

    @property
    def paired(self) -> int:
        return self._cmp.n

    @property
    def done(self) -> bool:
        return self.decision != Decision.CONTINUE

    @property
    def next_look(self) -> int:
        """The position the next look comes after (``used`` when the pair is done)."""
        return self.used if self.done else min(self.used + self.config.round, self.cap)

    def look(self, variant: ArrayLike, reference: ArrayLike) -> Decision:
        """Add the per-item scores of positions ``[used, next_look)`` (both sides, NaN: no value) and decide."""
        if self.done:
            raise ValueError("the comparison is decided already")
        stop = self.next_look
        v = np.asarray(variant, dtype=np.float64)
        r = np.asarray(reference, dtype=np.float64)
        if v.shape != (stop - self.used,) or r.shape != v.shape:
            raise ValueError(
                f"a look takes the {stop - self.used} positions after {self.used}, got {v.shape} and {r.shape}"
            )
        self._cmp.update(paired_differences(v, r))
        self.used = stop
        self.rounds += 1
        last = self.used >= self.cap
        decision = self._cmp.decide(last=last)
        if last and decision == Decision.CONTINUE:
            decision = Decision.UNDECIDED
        self.decision = decision
        return decision

    def interval(self) -> tuple[float, float]:
        """The confidence sequence of Δ now ((nan, nan) before any paired item)."""
        if not self._cmp.n:
            return math.nan, math.nan
        return self._cmp.interval()

    @property
    def mean(self) -> float:
        return self._cmp.mean


def replay_pair(variant: ArrayLike, reference: ArrayLike, config: SequentialConfig) -> SequentialPair:
    """Replay two complete per-item score arrays (fixed order, NaN: no value) look by look until decided."""
    v = np.asarray(variant, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    pair = SequentialPair(config, planned=len(v))
    while not pair.done:
        start, stop = pair.used, pair.next_look
        pair.look(v[start:stop], r[start:stop])
    return pair
