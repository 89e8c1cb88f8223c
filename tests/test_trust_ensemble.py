"""The precision-ensemble vote."""

from __future__ import annotations

import pytest

from trust.ensemble import ensemble_labels, vote
from trust.types import ERROR, INVALID, REFUSED


def test_clear_majority_beats_precision() -> None:
    assert vote(["a", "a", "b"], [4, 8, 16]) == "a"


def test_tie_goes_to_highest_precision_member() -> None:
    assert vote(["a", "b"], [4, 16]) == "b"
    assert vote(["b", "a"], [16, 4]) == "b"
    assert vote(["a", "b", "a", "b"], [4, 8, 16, 3]) == "a"


def test_tie_with_equal_precision_goes_to_earlier_member() -> None:
    assert vote(["a", "b"], [8, 8]) == "a"
    assert vote(["b", "a"], [8, 8]) == "b"


def test_all_filtered_is_refused() -> None:
    assert vote([REFUSED, REFUSED, REFUSED], [4, 8, 16]) == REFUSED
    assert vote([INVALID, ERROR], [4, 16]) == REFUSED
    assert vote([], []) == REFUSED


def test_single_member() -> None:
    assert vote(["wrong"], [16]) == "wrong"


def test_invalid_and_error_are_filtered() -> None:
    # Without filtering INVALID (2 votes) would win; "b" is held by the most precise counted member.
    assert vote([INVALID, INVALID, "a", "b"], [2, 3, 4, 8]) == "b"
    assert vote([ERROR, ERROR, "a"], [16, 16, 4]) == "a"
    # A filtered label held by the most precise member does not break the tie.
    assert vote([REFUSED, "a", "b"], [32, 8, 4]) == "a"


def test_length_mismatch_rejected() -> None:
    with pytest.raises(ValueError):
        vote(["a", "b"], [4])


def test_ensemble_labels_three_members() -> None:
    members = {
        "q4": {"x1": "a", "x2": "b", "x3": REFUSED, "x4": "a"},
        "q8": {"x1": "a", "x2": "a", "x3": REFUSED, "x4": "b"},
        "fp16": {"x1": "b", "x2": "b", "x3": REFUSED},  # lacks x4
    }
    result = ensemble_labels(members, {"q4": 4, "q8": 8, "fp16": 16})
    assert result == {"x1": "a", "x2": "b", "x3": REFUSED}
    assert list(result) == ["x1", "x2", "x3"]


def test_ensemble_labels_tie_uses_precision_mapping() -> None:
    members = {"q4": {"x": "a"}, "fp16": {"x": "b"}}
    assert ensemble_labels(members, {"q4": 4, "fp16": 16}) == {"x": "b"}
    assert ensemble_labels(members, {"q4": 32, "fp16": 16}) == {"x": "a"}


def test_ensemble_labels_rejects_missing_precision_and_no_members() -> None:
    with pytest.raises(ValueError, match="fp16"):
        ensemble_labels({"q4": {"x": "a"}, "fp16": {"x": "a"}}, {"q4": 4})
    with pytest.raises(ValueError):
        ensemble_labels({}, {})
