"""The precision-ensemble vote (Lu et al., 2025).

Several variants of one model (e.g. 4-, 8- and 16-bit) answer the same item; their parsed labels
are combined by an unweighted majority vote after dropping refused, invalid and errored answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

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
    kept = [(label, precision, index) for index, (label, precision) in enumerate(zip(labels, precisions))
            if label not in FILTERED_LABELS]
    if not kept:
        return REFUSED
    counts = Counter(label for label, _, _ in kept)
    top = max(counts.values())
    tied = {label for label, count in counts.items() if count == top}
    for label, _, _ in sorted(kept, key=lambda entry: (-entry[1], entry[2])):
        if label in tied:
            return label
    raise AssertionError("unreachable: a tied label is always held by a member")


def ensemble_labels(
    member_labels: Mapping[str, Mapping[str, str]], precisions: Mapping[str, float]
) -> dict[str, str]:
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
    common = set(member_labels[members[0]])
    for member in members[1:]:
        common &= set(member_labels[member])
    return {
        item_id: vote([member_labels[member][item_id] for member in members], member_precisions)
        for item_id in member_labels[members[0]]
        if item_id in common
    }
