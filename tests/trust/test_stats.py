"""Statistics of results: intervals, paired comparisons, flips, degenerate flags, ensemble search."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from trust.comparison.degenerate import (
    CHANCE,
    Thresholds,
    baseline_text,
    chance_baseline,
    degenerate_flags,
    majority_baseline,
)
from trust.comparison.ensemble import ensemble_labels
from trust.comparison.ensemble_search import ensemble_candidates
from trust.comparison.flips import flip_counts, flip_matrix, flip_table, outcome
from trust.comparison.stats import (
    bootstrap_estimate,
    item_mean_estimate,
    paired_bootstrap_delta,
    paired_delta,
    rate_estimate,
)
from trust.types import ERROR, INVALID, REFUSED

# --- rates and means ---------------------------------------------------------------------------


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson score interval from its closed form."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(24, 48), (3, 40)])
def test_rate_estimate_matches_closed_form_wilson(k: int, n: int) -> None:
    estimate = rate_estimate(k, n)
    low, high = _wilson(k, n, 1.959963984540054)
    assert estimate.value == pytest.approx(k / n)
    assert estimate.low == pytest.approx(low, abs=1e-9)
    assert estimate.high == pytest.approx(high, abs=1e-9)
    assert estimate.se == pytest.approx(math.sqrt(k / n * (1 - k / n) / n))
    assert (estimate.n, estimate.k, estimate.method) == (n, k, "wilson")


def test_rate_estimate_other_confidence_and_bad_counts() -> None:
    low, high = _wilson(24, 48, scipy.stats.norm.ppf(0.95))
    estimate = rate_estimate(24, 48, confidence=0.90)
    assert (estimate.low, estimate.high) == pytest.approx((low, high))
    with pytest.raises(ValueError, match="k <= n"):
        rate_estimate(5, 4)


def test_empty_rate_is_nan() -> None:
    estimate = rate_estimate(0, 0)
    assert estimate.n == 0
    assert all(math.isnan(v) for v in (estimate.value, estimate.se, estimate.low, estimate.high))
    assert math.isnan(item_mean_estimate(np.array([np.nan, np.nan])).value)


def test_item_mean_of_binary_values_is_wilson_and_skips_nan() -> None:
    values = np.array([1, 0, 1, 1, np.nan, 0, 1, np.nan])
    estimate = item_mean_estimate(values)
    assert estimate == rate_estimate(4, 6)


def test_item_mean_of_other_values_uses_bootstrap() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(0.4, 0.2, size=300)
    values[::10] = np.nan
    estimate = item_mean_estimate(values, n_boot=1000, seed=3)
    finite = values[~np.isnan(values)]
    assert estimate.n == finite.size == 270
    assert estimate.k is None
    assert estimate.method.startswith("bootstrap percentile")
    assert estimate.value == pytest.approx(finite.mean())
    # The bootstrap SE of a mean is close to the textbook s / sqrt(n).
    assert estimate.se == pytest.approx(finite.std(ddof=1) / math.sqrt(finite.size), rel=0.15)
    assert estimate.low < estimate.value < estimate.high
    assert item_mean_estimate(values, n_boot=1000, seed=3) == estimate
    assert item_mean_estimate(values, n_boot=1000, seed=4) != estimate


def test_generic_bootstrap_is_deterministic_and_drops_nan_resamples() -> None:
    rng = np.random.default_rng(0)
    group = rng.random(200) < 0.5
    positive = rng.random(200) < np.where(group, 0.7, 0.4)

    def gap(idx: np.ndarray) -> float:
        g, p = group[idx], positive[idx]
        if g.all() or not g.any():
            return float("nan")
        return float(p[g].mean() - p[~g].mean())

    first = bootstrap_estimate(gap, 200, seed=5)
    assert first == bootstrap_estimate(gap, 200, seed=5)
    assert first != bootstrap_estimate(gap, 200, seed=6)
    assert first.value == pytest.approx(gap(np.arange(200)))
    assert first.low < first.value < first.high
    assert bootstrap_estimate(gap, 200, point=0.123).value == 0.123

    # A statistic that is NaN on every other call still gives an interval from the rest.
    calls = itertools.count()
    half_nan = bootstrap_estimate(lambda idx: float("nan") if next(calls) % 2 else float(idx.mean()), 50, n_boot=200)
    assert not math.isnan(half_nan.low) and half_nan.low < half_nan.high


# --- paired comparisons ------------------------------------------------------------------------


def test_paired_delta_of_identical_vectors_is_zero() -> None:
    values = (np.random.default_rng(1).random(500) < 0.6).astype(float)
    result = paired_delta(values, values)
    assert result.delta == 0.0
    assert result.low <= 0.0 <= result.high
    assert result.mcnemar_p == 1.0
    assert (result.worse, result.better) == (0, 0)
    assert not result.significant


def test_paired_delta_with_many_worse_items_is_significant() -> None:
    n = 200
    reference = np.ones(n)
    reference[150:] = 0.0
    variant = reference.copy()
    variant[:20] = 0.0  # 20 items the variant gets wrong that the reference got right
    variant[150:152] = 1.0  # 2 items the other way
    reference[-3] = np.nan  # a missing pair is dropped
    result = paired_delta(reference, variant)
    assert result.n == n - 1
    assert (result.worse, result.better) == (20, 2)
    expected_p = scipy.stats.binomtest(20, 22, 0.5, alternative="two-sided").pvalue
    assert result.mcnemar_p == pytest.approx(expected_p)
    assert result.mcnemar_p < 0.001
    assert result.delta == pytest.approx(-18 / (n - 1))
    assert result.high < 0.0
    assert result.significant


def test_paired_delta_on_scores_uses_the_interval() -> None:
    rng = np.random.default_rng(2)
    reference = rng.random(400)
    variant = reference - 0.05 + rng.normal(0, 0.02, 400)
    result = paired_delta(reference, variant)
    assert result.mcnemar_p is None and result.worse is None
    assert result.high < 0 and result.significant
    assert result == paired_delta(reference, variant)
    with pytest.raises(ValueError, match="aligned"):
        paired_delta(reference, variant[:-1])


def test_paired_bootstrap_delta_agrees_with_the_item_mean_version() -> None:
    rng = np.random.default_rng(3)
    reference = rng.random(300)
    variant = reference + rng.normal(0.02, 0.05, 300)
    generic = paired_bootstrap_delta(lambda idx: (reference[idx].mean(), variant[idx].mean()), 300, n_boot=2000)
    direct = paired_delta(reference, variant, n_boot=2000)
    assert generic.delta == pytest.approx(direct.delta)
    assert generic.low == pytest.approx(direct.low, abs=0.003)
    assert generic.high == pytest.approx(direct.high, abs=0.003)
    assert generic.mcnemar_p is None and generic.better is None
    assert generic.significant == (generic.low > 0 or generic.high < 0)


def test_paired_bootstrap_of_2000_by_1000_is_fast() -> None:
    rng = np.random.default_rng(4)
    reference = (rng.random(1000) < 0.7).astype(float)
    variant = np.where(rng.random(1000) < 0.1, 1 - reference, reference)
    start = time.perf_counter()
    result = paired_delta(reference, variant, n_boot=2000)
    assert time.perf_counter() - start < 5.0
    assert result.n == 1000


# --- flips -------------------------------------------------------------------------------------


def test_outcome() -> None:
    assert outcome("wrong", "wrong") == "correct"
    assert outcome("not wrong", "wrong") == "wrong"
    assert outcome(REFUSED, "wrong") == "refused"
    assert outcome(INVALID, None) == "invalid"
    assert outcome(ERROR, "a") == "error"
    assert outcome("Complied", None) == "complied"


def test_flip_table_and_matrix_on_a_small_example() -> None:
    ids = ["q1", "q2", "q3", "q4", "q5", "q6"]
    refs = ["A", "B", "C", "A", None, None]
    reference_labels = ["A", "B", "A", REFUSED, REFUSED, "safe"]
    variant_labels = ["A", "C", INVALID, "A", "complied", "unsafe"]
    table = flip_table(ids, reference_labels, variant_labels, refs)
    assert list(table.columns) == [
        "item_id",
        "reference_label",
        "variant_label",
        "reference",
        "reference_outcome",
        "variant_outcome",
        "change",
    ]
    assert list(table["item_id"]) == ["q2", "q3", "q4", "q5", "q6"]
    assert list(table["change"]) == [
        "correct→wrong",
        "wrong→invalid",
        "refused→correct",
        "refused→complied",
        "safe→unsafe",
    ]
    assert flip_counts(table) == {
        "correct→wrong": 1,
        "refused→complied": 1,
        "refused→correct": 1,
        "safe→unsafe": 1,
        "wrong→invalid": 1,
    }

    before = [outcome(label, ref) for label, ref in zip(reference_labels, refs)]
    after = [outcome(label, ref) for label, ref in zip(variant_labels, refs)]
    matrix = flip_matrix(before, after)
    assert matrix.index.name == "reference" and matrix.columns.name == "variant"
    assert list(matrix.index) == list(matrix.columns)
    assert matrix.to_numpy().sum() == 6
    assert matrix.loc["correct", "correct"] == 1
    assert matrix.loc["refused", "correct"] == 1
    assert matrix.loc["refused", "complied"] == 1
    assert matrix.loc["wrong", "correct"] == 0
    assert all(pd.api.types.is_integer_dtype(dtype) for dtype in matrix.dtypes)
    # Off-diagonal cells are exactly the flip table's rows.
    off_diagonal = int(matrix.to_numpy().sum() - np.trace(matrix.to_numpy()))
    assert off_diagonal == len(table)


def test_flip_table_without_flips_is_empty_with_columns() -> None:
    table = flip_table(["a"], ["x"], ["x"], ["x"])
    assert table.empty and "change" in table.columns
    assert flip_counts(table) == {}
    with pytest.raises(ValueError, match="same length"):
        flip_table(["a", "b"], ["x"], ["x"], ["x"])


# --- degenerate variants -----------------------------------------------------------------------


def test_majority_baseline() -> None:
    assert majority_baseline(["wrong", "not wrong", "wrong", None]) == ("wrong", pytest.approx(2 / 3))
    label, share = majority_baseline([None, None])
    assert label is None and math.isnan(share)


def test_chance_level_when_the_options_differ_per_item() -> None:
    # TruthfulQA-like: every item has its own option texts, so no answer is a majority class
    choices = [["a", "b"], ["c", "d", "e", "f"], None]
    assert chance_baseline(choices) == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert chance_baseline([["A", "B"], ["A", "B"]]) is None  # the same options everywhere: majority class
    assert baseline_text(CHANCE, 0.375) == "chance level 0.375 (1 / number of options)"
    assert baseline_text("wrong", 0.5) == "majority-class baseline 0.500 (always 'wrong')"


def test_single_label_variant_is_flagged_with_the_baseline() -> None:
    references = ["wrong"] * 56 + ["not wrong"] * 44
    labels = ["wrong"] * 100
    flags = degenerate_flags(labels, references)
    assert [flag.code for flag in flags] == ["single_label"]
    assert flags[0].value == 1.0
    assert "'wrong'" in flags[0].message and "100%" in flags[0].message
    assert "baseline 0.56" in flags[0].message

    # Just under the threshold: 94 of 100 items get the same label.
    mixed = ["wrong"] * 94 + ["not wrong"] * 6
    assert degenerate_flags(mixed, references) == []
    # ERROR labels are left out: 95 "wrong" among 95 counted answers is degenerate.
    assert [f.code for f in degenerate_flags(["wrong"] * 95 + [ERROR] * 5)] == ["single_label"]


def test_always_refusing_is_single_label() -> None:
    flags = degenerate_flags([REFUSED] * 20)
    assert [flag.code for flag in flags] == ["single_label"]
    assert "refuses 100%" in flags[0].message


def test_invalid_share_flag() -> None:
    labels = [INVALID] * 70 + ["A"] * 15 + ["B"] * 15
    flags = degenerate_flags(labels)
    assert [flag.code for flag in flags] == ["invalid"]
    assert flags[0].value == pytest.approx(0.7)
    assert flags[0].message == "70% of answers did not parse"
    assert degenerate_flags([INVALID] * 10 + ["A"] * 45 + ["B"] * 45) == []
    # ERROR is not INVALID.
    assert degenerate_flags([ERROR] * 70 + ["A"] * 15 + ["B"] * 15) == []
    assert degenerate_flags([INVALID] * 70 + ["A"] * 30, thresholds=Thresholds(invalid_rate=0.8)) == []


def test_perplexity_flag() -> None:
    labels = ["A", "B"] * 10
    assert degenerate_flags(labels, perplexity_ratio=1.4) == []
    flags = degenerate_flags(labels, perplexity_ratio=2.5)
    assert [(f.code, f.value, f.threshold) for f in flags] == [("perplexity", 2.5, 1.5)]


# --- ensemble search ---------------------------------------------------------------------------


def _member_labels() -> tuple[dict[str, dict[str, str]], dict[str, float]]:
    rng = np.random.default_rng(8)
    choices = ["A", "B", "C", REFUSED, INVALID]
    names = {"w4": 4.0, "w8": 8.0, "w3": 3.0}
    labels = {name: {f"i{j}": str(rng.choice(choices)) for j in range(60)} for name in names}
    del labels["w3"]["i5"]  # an item one member lacks is left out of its ensembles
    return labels, names


def test_ensemble_candidates_enumerates_subsets_and_votes_like_ensemble_labels() -> None:
    labels, precisions = _member_labels()
    candidates = ensemble_candidates(labels, precisions)
    assert len(candidates) == math.comb(3, 2) + math.comb(3, 3) == 4
    assert [c.members for c in candidates] == [("w4", "w3"), ("w8", "w3"), ("w8", "w4"), ("w8", "w4", "w3")]
    for candidate in candidates:
        expected = ensemble_labels({name: labels[name] for name in candidate.members}, precisions)
        assert candidate.labels == expected
        assert ("i5" in candidate.labels) == ("w3" not in candidate.members)
    # The vote is not trivial: a pair and the triple disagree somewhere.
    assert candidates[2].labels != candidates[3].labels
    assert [c.members for c in ensemble_candidates(labels, precisions, min_size=3)] == [("w8", "w4", "w3")]


def test_ensemble_candidates_refuses_too_many_subsets() -> None:
    labels = {f"v{i}": {"x": "A"} for i in range(10)}
    precisions = dict.fromkeys(labels, 4.0)
    with pytest.raises(ValueError, match="1013 candidate ensembles.*max_candidates=256"):
        ensemble_candidates(labels, precisions)
    assert len(ensemble_candidates(labels, precisions, max_size=2)) == math.comb(10, 2)
    with pytest.raises(ValueError, match="no precision"):
        ensemble_candidates({"a": {}, "b": {}}, {"a": 4.0})
