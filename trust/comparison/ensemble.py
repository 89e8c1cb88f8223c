"""The precision-ensemble vote (Lu et al., 2025).

Several variants of one model (e.g. 4-, 8- and 16-bit) answer the same item; their parsed labels
are combined by an unweighted majority vote after dropping refused, invalid and errored answers.

:func:`vote` states the rule for one item; :func:`ensemble_labels_array` applies the same rule to a
whole (members × items) table at once with numpy (8 members × 1,000,000 items in about a second),
and :func:`ensemble_labels` — what scoring calls — goes through it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from trust.types import FILTERED_LABELS, REFUSED


def vote(labels: Sequence[str], precisions: Sequence[float]) -> str:
    """Return the ensemble label for one item.

    ``labels[i]`` is member ``i``'s parsed label and ``precisions[i]`` its precision in bits
    (higher is more precise). Labels in ``FILTERED_LABELS`` are dropped; the most frequent
    remaining label wins. A tie goes to the tied label held by the most precise member (between
    members of equal precision, the earlier one). If every label is filtered the result is REFUSED.
    """
    if len(labels) != len(precisions):
        raise ValueError(f"{len(labels)} labels but {len(precisions)} precisions")
    kept = [
        (label, precision, index)
        for index, (label, precision) in enumerate(zip(labels, precisions))
        if label not in FILTERED_LABELS
    ]
    if not kept:
        return REFUSED
    counts = Counter(label for label, _, _ in kept)
    top = max(counts.values())
    tied = {label for label, count in counts.items() if count == top}
    for label, _, _ in sorted(kept, key=lambda entry: (-entry[1], entry[2])):
        if label in tied:
            return label
    raise AssertionError("unreachable: a tied label is always held by a member")


def _winners(codes: np.ndarray, kept: np.ndarray, precisions: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """For each item (column): the member whose label wins, and whether any member was kept.

    The winning label is held by the members with the highest count of kept equal labels; among
    them the most precise (then the earliest) member decides, which is :func:`vote`'s tie rule:
    every member holding a tied label has the top count, and every member with the top count
    holds a tied label.
    """
    n_members, n_items = codes.shape
    # Preference of each member: 0 = most precise (earlier first among equal precision).
    order = np.lexsort((np.arange(n_members), -np.asarray(precisions, dtype=float)))
    preference = np.empty(n_members, dtype=np.int64)
    preference[order] = np.arange(n_members)
    count_type = np.int16 if n_members < 2**15 else np.int32
    best_score = np.full(n_items, -1, dtype=np.int64)
    winner = np.zeros(n_items, dtype=np.int64)
    for m in range(n_members):
        count = np.zeros(n_items, dtype=count_type)
        row = codes[m]
        for other in range(n_members):
            count += (codes[other] == row) & kept[other]  # type: ignore[misc]  # numpy stubs: int += bool
        # Higher count first, then lower preference; filtered members never win.
        score = count.astype(np.int64) * n_members + (n_members - 1 - preference[m])
        score[~kept[m]] = -1
        better = score > best_score
        best_score[better] = score[better]
        winner[better] = m
    return winner, best_score >= 0


def ensemble_labels_array(
    labels: Any,
    precisions: Sequence[float],
    *,
    filtered: Iterable[int] | None = None,
    refused: int = -1,
) -> np.ndarray:
    """The vote of :func:`vote` for every item of a (members × items) table, vectorised.

    ``labels`` has shape ``(n_members, n_items)`` and holds either label strings (any object or
    unicode array; labels in ``FILTERED_LABELS`` are dropped, the result holds strings and REFUSED
    where every member was filtered) or integer label codes (codes in ``filtered`` are dropped —
    by default every negative code — and ``refused`` marks items where every member was filtered).
    ``precisions[i]`` is member ``i``'s precision in bits. Results equal :func:`vote` item by item.
    """
    array = np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(f"labels must have shape (n_members, n_items), got {array.shape}")
    n_members, n_items = array.shape
    if len(precisions) != n_members:
        raise ValueError(f"{n_members} members' labels but {len(precisions)} precisions")
    integer = np.issubdtype(array.dtype, np.integer)
    if n_items == 0:
        return np.empty(0, dtype=array.dtype if integer else object)
    if n_members == 0:
        return np.full(n_items, refused if integer else REFUSED, dtype=np.int64 if integer else object)
    if integer:
        codes = array
        if filtered is None:
            kept = codes >= 0
        else:
            kept = ~np.isin(codes, np.fromiter(filtered, dtype=np.int64))
        winner, any_kept = _winners(codes, kept, precisions)
        out = codes[winner, np.arange(n_items)].astype(np.int64, copy=True)
        out[~any_kept] = refused
        return out
    flat = array.astype(object, copy=False).ravel()
    flat_codes, uniques = pd.factorize(flat, use_na_sentinel=False)
    uniques = np.asarray(uniques, dtype=object)
    codes = flat_codes.reshape(n_members, n_items)
    is_filtered = np.fromiter((u in FILTERED_LABELS for u in uniques), dtype=bool, count=len(uniques))
    kept = ~is_filtered[codes]
    winner, any_kept = _winners(codes, kept, precisions)
    out = uniques[codes[winner, np.arange(n_items)]]
    out[~any_kept] = REFUSED
    return out


def ensemble_labels(member_labels: Mapping[str, Mapping[str, str]], precisions: Mapping[str, float]) -> dict[str, str]:
    """Vote item by item across members.

    ``member_labels`` maps member name -> {item id -> label}; ``precisions`` maps member name ->
    bits. Only items present in *every* member are voted on (an item some member lacks, e.g. a
    run cut short by ``limit``, is left out rather than voted with fewer members). Members are
    taken in the mapping's order, which breaks ties between members of equal precision. The
    result keeps the first member's item order.
    """
    if not member_labels:
        raise ValueError("an ensemble needs at least one member")
    members = list(member_labels)
    missing = [member for member in members if member not in precisions]
    if missing:
        raise ValueError(f"no precision given for members {missing}")
    member_precisions = [float(precisions[member]) for member in members]
    first = member_labels[members[0]]
    ids = list(first)
    maps = [member_labels[m] for m in members]
    if all(len(m) == len(ids) and list(m) == ids for m in maps[1:]):
        # Every member has the same items in the same order (the usual case; comparing the id lists
        # is far cheaper than comparing key sets, which hashes every id again).
        rows = [list(labels.values()) for labels in maps]
    else:
        common = set(first)
        for labels in maps[1:]:
            common &= labels.keys()
        ids = [i for i in ids if i in common]
        rows = [[labels[i] for i in ids] for labels in maps]
    if not ids:
        return {}
    table = np.empty((len(rows), len(ids)), dtype=object)
    for m, row in enumerate(rows):
        table[m, :] = row
    return dict(zip(ids, ensemble_labels_array(table, member_precisions).tolist()))
