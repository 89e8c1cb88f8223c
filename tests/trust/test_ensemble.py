"""The precision-ensemble vote."""

from __future__ import annotations

import pytest

from trust.comparison.ensemble import ensemble_labels, vote
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


# -- the vectorised vote equals the scalar rule ------------------------------------------------------


def _random_table(rng, n_members: int, n_items: int):
    """Labels drawn from a small space (many ties) with filtered labels, and some all-filtered items."""
    import numpy as np

    space = np.array(["a", "b", "c", "not wrong", REFUSED, INVALID, ERROR], dtype=object)
    weights = np.array([0.2, 0.2, 0.1, 0.1, 0.15, 0.15, 0.1])
    table = rng.choice(space, size=(n_members, n_items), p=weights)
    all_filtered = rng.random(n_items) < 0.05
    table[:, all_filtered] = rng.choice(
        np.array([REFUSED, INVALID, ERROR], dtype=object), size=(n_members, int(all_filtered.sum()))
    )
    return table


def test_array_vote_equals_scalar_vote_on_random_items() -> None:
    import numpy as np

    from trust.comparison.ensemble import ensemble_labels_array

    rng = np.random.default_rng(20250101)
    checked = ties = refused = 0
    for n_members in (1, 2, 3, 4, 5, 8):
        for _ in range(3):
            # Equal precisions (earlier member breaks ties), distinct ones, and repeats mixed.
            precisions = rng.choice([2, 3, 4, 8, 8, 16, 16, 32], size=n_members).astype(float).tolist()
            table = _random_table(rng, n_members, 2000)
            got = ensemble_labels_array(table, precisions)
            want = [vote(list(table[:, i]), precisions) for i in range(table.shape[1])]
            assert got.tolist() == want, (n_members, precisions)
            checked += len(want)
            refused += sum(1 for w in want if w == REFUSED)
            for i in range(table.shape[1]):
                kept = [x for x in table[:, i] if x not in (REFUSED, INVALID, ERROR)]
                counts = sorted((kept.count(x) for x in set(kept)), reverse=True)
                ties += len(counts) > 1 and counts[0] == counts[1]
    assert checked >= 30_000 and ties > 1000 and refused > 1000


def test_array_vote_on_integer_codes_and_unicode_arrays() -> None:
    import numpy as np

    from trust.comparison.ensemble import ensemble_labels_array

    rng = np.random.default_rng(7)
    codes = rng.integers(-2, 3, size=(5, 3000))  # negative codes are filtered by default
    precisions = [4, 8, 8, 16, 3]
    names = {-2: REFUSED, -1: INVALID, 0: "a", 1: "b", 2: "c"}
    got = ensemble_labels_array(codes, precisions)
    want = [vote([names[c] for c in codes[:, i]], precisions) for i in range(codes.shape[1])]
    assert [REFUSED if g == -1 else names[g] for g in got] == want

    # An explicit set of filtered codes, and the code that marks an all-filtered item.
    got = ensemble_labels_array(codes + 2, precisions, filtered={0, 1}, refused=99)
    assert [REFUSED if g == 99 else names[g - 2] for g in got] == want

    unicode = np.array([["a", "b", REFUSED], ["b", "a", INVALID]])  # numpy 'U' strings
    assert ensemble_labels_array(unicode, [4, 16]).tolist() == ["b", "a", REFUSED]


def test_array_vote_edges() -> None:
    import numpy as np

    from trust.comparison.ensemble import ensemble_labels_array

    assert ensemble_labels_array(np.empty((3, 0), dtype=object), [4, 8, 16]).tolist() == []
    assert ensemble_labels_array(np.empty((0, 2), dtype=object), []).tolist() == [REFUSED, REFUSED]
    with pytest.raises(ValueError):
        ensemble_labels_array(np.array([["a"], ["b"]], dtype=object), [4])
    with pytest.raises(ValueError):
        ensemble_labels_array(np.array(["a", "b"], dtype=object), [4, 8])


def test_ensemble_labels_equals_item_by_item_vote_with_missing_and_reordered_items() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    names = ["q4", "q8", "fp16", "q3"]
    precisions = {"q4": 4, "q8": 8, "fp16": 16, "q3": 3}
    table = _random_table(rng, len(names), 3000)
    ids = [f"x{i}" for i in range(table.shape[1])]
    members = {}
    for m, name in enumerate(names):
        pairs = list(zip(ids, table[m]))
        if m == 2:
            pairs = pairs[::-1]  # another order: the first member's order is kept
        if m == 3:
            pairs = [p for p in pairs if not p[0].endswith("7")]  # items this member lacks are left out
        members[name] = dict(pairs)
    result = ensemble_labels(members, precisions)
    expected = {
        i: vote([members[n][i] for n in names], [precisions[n] for n in names]) for i in ids if not i.endswith("7")
    }
    assert result == expected and list(result) == list(expected)

    # Every member complete and in the same order (the fast path).
    aligned = {name: dict(zip(ids, table[m])) for m, name in enumerate(names)}
    assert ensemble_labels(aligned, precisions) == {
        i: vote(list(table[:, k]), [precisions[n] for n in names]) for k, i in enumerate(ids)
    }
