"""Anytime-valid confidence sequences for paired differences and the early-stopping rule on them."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from trust.comparison.sequential import (
    BettingSequence,
    Decision,
    SequentialComparison,
    SequentialConfig,
    decide,
    delta_grid,
    make_sequence,
    paired_differences,
    replay,
)

METHODS = ("betting", "bernstein")


def paired(delta: float, agreement: float, shape: int | tuple[int, int], seed: int) -> np.ndarray:
    """0/1 answers of a pair as differences in {−1, 0, 1}: they agree on ``agreement``, with mean ``delta``."""
    up = (1.0 - agreement + delta) / 2.0
    down = (1.0 - agreement - delta) / 2.0
    u = np.random.default_rng(seed).random(shape)
    return np.where(u < up, 1.0, np.where(u < up + down, -1.0, 0.0))


@pytest.mark.parametrize("method", METHODS)
def test_interval_holds_the_sample_mean_and_shrinks_with_n(method: str) -> None:
    values = paired(0.05, 0.7, 4000, seed=1)
    cmp = SequentialComparison(SequentialConfig(method=method))
    widths = []
    for n in (100, 400, 1600, 4000):
        cmp.update(values[cmp.n : n])
        low, high = cmp.interval()
        assert low <= cmp.mean <= high
        assert cmp.mean == pytest.approx(values[:n].mean())
        widths.append(high - low)
    assert all(later < earlier for earlier, later in zip(widths, widths[1:], strict=False))
    assert widths[-1] < 0.25 * widths[0]


@pytest.mark.parametrize("method", METHODS)
def test_false_worse_or_better_stays_below_alpha_with_a_look_every_round(method: str) -> None:
    streams, items, look = 300, 600, 10
    config = SequentialConfig(method=method, min_items=look, max_items=items, round=look, grid=200)
    data = paired(0.0, 0.8, (streams, items), seed=2)
    seq = make_sequence(config, streams=streams)
    stopped_wrong = np.zeros(streams, dtype=bool)
    covered = np.ones(streams, dtype=bool)
    naive = np.zeros(streams, dtype=bool)
    for n in range(look, items + 1, look):
        seq.update(data[:, n - look : n])
        low, high = seq.interval()
        covered &= (low <= 0.0) & (high >= 0.0)
        decisions = decide(low, high, n, config)
        stopped_wrong |= (decisions == "worse") | (decisions == "better")
        mean, se = data[:, :n].mean(axis=1), data[:, :n].std(axis=1, ddof=1) / np.sqrt(n)
        naive |= np.abs(mean) > 1.96 * se
    assert stopped_wrong.mean() <= 0.05
    assert covered.mean() >= 0.95
    # the same streams looked at as often with a fixed 95% interval: far more false alarms
    assert naive.mean() > 0.15


@pytest.mark.parametrize("method", METHODS)
def test_a_clear_drop_is_decided_worse_well_before_max_items(method: str) -> None:
    config = SequentialConfig(method=method, min_items=20, max_items=2000, round=20)
    result = replay(paired(-0.3, 0.6, 2000, seed=3), config)
    assert result.decision is Decision.WORSE
    assert result.items_used <= 200
    assert result.high < 0 and result.low <= result.delta <= result.high
    assert replay(paired(0.3, 0.6, 2000, seed=3), config).decision is Decision.BETTER


@pytest.mark.parametrize("method", METHODS)
def test_same_values_in_the_same_order_give_the_same_interval_however_split(method: str) -> None:
    values = np.random.default_rng(4).uniform(-1, 1, 700) * np.random.default_rng(5).random(700) ** 3
    config = SequentialConfig(method=method, min_items=50, round=30)
    whole = SequentialComparison(config)
    whole.update(values)
    pieces = SequentialComparison(config)
    for start in range(0, 700, 7):
        pieces.update(values[start : start + 7])
    assert whole.interval() == pieces.interval()
    assert whole.mean == pieces.mean
    assert replay(values, config) == replay(values.copy(), config)


@pytest.mark.parametrize("method", METHODS)
def test_min_and_max_items_bound_the_decision(method: str) -> None:
    strong = paired(-0.5, 0.5, 1000, seed=6)
    late = replay(strong, SequentialConfig(method=method, min_items=230, round=50))
    assert late.decision is Decision.WORSE
    assert late.items_used == 250  # the first look at or past min_items
    cmp = SequentialComparison(SequentialConfig(method=method, min_items=230))
    cmp.update(strong[:200])
    assert cmp.decide() is Decision.CONTINUE

    flat = paired(0.0, 0.3, 5000, seed=7)
    capped = replay(flat, SequentialConfig(method=method, min_items=50, max_items=330, round=50))
    assert capped.decision is Decision.UNDECIDED
    assert (capped.items_used, capped.items_available) == (330, 5000)

    short = flat[:120]
    assert replay(short, SequentialConfig(method=method, min_items=50)).decision is Decision.UNDECIDED
    waiting = replay(short, SequentialConfig(method=method, min_items=50), complete=False)
    assert (waiting.decision, waiting.items_used) == (Decision.CONTINUE, 120)


@pytest.mark.parametrize("method", METHODS)
def test_no_change_with_high_agreement_is_found_equivalent(method: str) -> None:
    config = SequentialConfig(method=method, margin=0.05, min_items=100, round=100)
    result = replay(paired(0.0, 0.95, 4000, seed=8), config)
    assert result.decision is Decision.EQUIVALENT
    assert -0.05 <= result.low and result.high <= 0.05
    assert result.items_used < 4000
    # the same data with a tight margin cannot be called equivalent
    tight = config.model_copy(update={"margin": 0.001})
    assert replay(paired(0.0, 0.95, 4000, seed=8), tight).decision is Decision.UNDECIDED


def test_betting_is_tighter_than_bernstein_when_the_pair_mostly_agrees() -> None:
    values = paired(0.0, 0.95, 1500, seed=9)
    widths = {}
    for method in METHODS:
        cmp = SequentialComparison(SequentialConfig(method=method))
        cmp.update(values)
        low, high = cmp.interval()
        widths[method] = high - low
    assert widths["betting"] < widths["bernstein"]


def test_grid_holds_zero_and_the_margins_exactly() -> None:
    grid = delta_grid(7, margin=0.0123, extra=[0.3])
    for point in (0.0, 0.0123, -0.0123, 0.3, -1.0, 1.0):
        assert point in grid
    with pytest.raises(ValueError, match="strictly increasing"):
        BettingSequence([0.0, 0.0, 1.0], alpha=0.05)


def test_bad_inputs_say_what_to_fix() -> None:
    with pytest.raises(ValidationError, match="raise max_items"):
        SequentialConfig(min_items=500, max_items=100)
    cmp = SequentialComparison()
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        cmp.update([0.5, 1.5])
    with pytest.raises(ValueError, match="finite"):
        cmp.update([0.0, float("nan")])
    assert cmp.n == 0


def test_each_betting_interval_is_one_piece() -> None:
    """The surviving candidate means form one run of the grid at every look (the bench's coarse grid relies on it)."""
    streams = 100
    seq = BettingSequence(delta_grid(200, margin=0.02), alpha=0.05, streams=streams)
    data = paired(0.03, 0.85, (streams, 400), seed=10)
    threshold = np.log(20.0)
    for n in range(20, 401, 20):
        seq.update(data[:, n - 20 : n])
        alive = np.logaddexp(seq.log_up, seq.log_down) - np.log(2.0) < threshold
        for row in alive:
            where = np.flatnonzero(row)
            assert where.size > 0 and where[-1] - where[0] + 1 == where.size


def test_paired_differences_keep_items_both_sides_answered_in_order() -> None:
    nan = float("nan")
    out = paired_differences([1.0, nan, 0.0, 0.5, 1.0], [0.0, 1.0, 1.0, nan, 1.0])
    assert out.tolist() == [1.0, -1.0, 0.0]
    with pytest.raises(ValueError, match="run this metric in full"):
        paired_differences([2.0], [1.0])
    with pytest.raises(ValueError, match="one length"):
        paired_differences([1.0, 0.0], [1.0])
