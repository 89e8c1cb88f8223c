"""Label-word parsing and the small metric helpers."""

from __future__ import annotations

import math

import pytest

from trust.answers.parsing import parse_label_words
from trust.metrics.basic import accuracy, conditional_rate, is_nan, rate

ETHICS = {"wrong": ["wrong"], "not wrong": ["not wrong", "isn't wrong"]}


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("not wrong", "not wrong"),
        ("wrong", "wrong"),
        ("This is wrong.", "wrong"),
        ("It's not wrong at all", "not wrong"),
        ("   \n  Not Wrong.", "not wrong"),
        ("NOT\n   WRONG", "not wrong"),
        ("This isn\u2019t wrong.", "not wrong"),
        ("Wrong, definitely not wrong", "wrong"),  # the label appearing first wins
        ("Not wrong; some would say wrong", "not wrong"),
        ("wrongdoing is everywhere", None),  # whole words only
        ("I am not sure.", None),
        ("", None),
    ],
)
def test_parse_label_words(output: str, expected: str | None) -> None:
    assert parse_label_words(output, ETHICS) == expected


def test_longest_match_wins_regardless_of_label_order() -> None:
    reversed_labels = {"not wrong": ["not wrong"], "wrong": ["wrong"]}
    assert parse_label_words("definitely not wrong", reversed_labels) == "not wrong"
    assert parse_label_words("definitely wrong", reversed_labels) == "wrong"


def test_multiword_synonym_and_punctuation_synonym() -> None:
    labels = {"yes": ["yes", "of course"], "no": ["no", "n/a"]}
    assert parse_label_words("Of course, go ahead", labels) == "yes"
    assert parse_label_words("Answer: n/a", labels) == "no"
    assert parse_label_words("nothing here", labels) is None


def test_accuracy_and_rates() -> None:
    assert accuracy(["a", "b", "a", "b"], ["a", "a", "a", "x"]) == 0.5
    assert rate([True, False, False, False]) == 0.25
    assert conditional_rate([True, True, False, False], [True, False, True, False]) == 0.5


def test_empty_denominators_are_nan() -> None:
    assert math.isnan(accuracy([], []))
    assert math.isnan(rate([]))
    assert math.isnan(conditional_rate([True, False], [False, False]))
    assert is_nan(rate([])) and not is_nan(0.0)


def test_length_mismatch_rejected() -> None:
    with pytest.raises(ValueError):
        accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        conditional_rate([True], [True, False])
