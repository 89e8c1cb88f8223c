"""Per-item flips: which items change outcome between the reference and a quantized variant.

An item's *outcome* is what a reader cares about: ``correct``/``wrong`` against a gold reference,
or, for open-ended (judged) items without one, the label itself (``complied``, ``safe``, ...).
Refused, unparsed and failed answers keep their own outcomes (``refused``, ``invalid``, ``error``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from trust.types import ERROR, INVALID, REFUSED

#: Columns of :func:`flip_table`'s output, in order.
FLIP_COLUMNS: tuple[str, ...] = (
    "item_id",
    "reference_label",
    "variant_label",
    "reference",
    "reference_outcome",
    "variant_outcome",
    "change",
)

#: How :func:`flip_matrix` orders outcomes it knows; other outcomes follow alphabetically.
_OUTCOME_ORDER: tuple[str, ...] = ("correct", "wrong", "refused", "invalid", "error")

_SPECIAL_OUTCOMES: dict[str, str] = {ERROR: "error", INVALID: "invalid", REFUSED: "refused"}

#: Labels that name a behaviour (refusing, complying, a safety verdict) rather than an answer to a
#: question: where the label or the reference is one, the outcome is the label itself
#: ("refused→complied" says more than "correct→wrong" on a refusal benchmark).
BEHAVIOUR_LABELS: frozenset[str] = frozenset(
    {REFUSED, "complied", "compliance", "full_refusal", "partial_refusal", "refusal", "safe", "unsafe"}
)


def outcome(label: str, reference: str | None) -> str:
    """The outcome of one answer.

    ``"error"``, ``"invalid"`` and ``"refused"`` for ERROR, INVALID and REFUSED labels; otherwise,
    with a gold ``reference``, ``"correct"`` when the label equals it and ``"wrong"`` when not;
    without one (open-ended or judged items), or where the label or the reference names a behaviour
    (:data:`BEHAVIOUR_LABELS`), the label lower-cased (``"complied"``, ``"unsafe"``).
    """
    special = _SPECIAL_OUTCOMES.get(label)
    if special is not None:
        return special
    if reference is not None and label not in BEHAVIOUR_LABELS and reference not in BEHAVIOUR_LABELS:
        return "correct" if label == reference else "wrong"
    return label.lower()


def change_name(reference_outcome: str, variant_outcome: str) -> str:
    """The name of a change of outcome, e.g. ``"correct→wrong"``."""
    return f"{reference_outcome}→{variant_outcome}"


def _check_lengths(**sequences: Sequence[object]) -> None:
    lengths = {name: len(values) for name, values in sequences.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise ValueError(f"per-item sequences must have the same length, got {described}")


def flip_table(
    item_ids: Sequence[str],
    reference_labels: Sequence[str],
    variant_labels: Sequence[str],
    references: Sequence[str | None],
) -> pd.DataFrame:
    """One row per item whose outcome differs between the reference model and the variant.

    All four sequences are aligned on the same items. Columns: ``item_id``, ``reference_label``,
    ``variant_label``, ``reference`` (the gold label or None), ``reference_outcome``,
    ``variant_outcome`` and ``change`` (e.g. ``"correct→wrong"``, ``"refused→complied"``). Items
    keep their input order.
    """
    _check_lengths(
        item_ids=item_ids, reference_labels=reference_labels, variant_labels=variant_labels, references=references
    )
    rows = []
    for item_id, ref_label, var_label, gold in zip(item_ids, reference_labels, variant_labels, references):
        before = outcome(ref_label, gold)
        after = outcome(var_label, gold)
        if before != after:
            rows.append((item_id, ref_label, var_label, gold, before, after, change_name(before, after)))
    return pd.DataFrame(rows, columns=list(FLIP_COLUMNS))


def _outcome_sort_key(name: str) -> tuple[int, str]:
    try:
        return (_OUTCOME_ORDER.index(name), "")
    except ValueError:
        return (len(_OUTCOME_ORDER), name)


def flip_matrix(reference_outcomes: Sequence[str], variant_outcomes: Sequence[str]) -> pd.DataFrame:
    """A square crosstab of outcomes over all items: rows the reference's, columns the variant's.

    Both axes list every outcome seen on either side (``correct``, ``wrong``, ``refused``,
    ``invalid``, ``error`` first, then the others alphabetically), so the diagonal counts the items
    that kept their outcome. Cells are ints; the axes are named ``reference`` and ``variant``.
    """
    _check_lengths(reference_outcomes=reference_outcomes, variant_outcomes=variant_outcomes)
    categories = sorted(set(reference_outcomes) | set(variant_outcomes), key=_outcome_sort_key)
    counts = pd.crosstab(
        pd.Categorical(list(reference_outcomes), categories=categories),
        pd.Categorical(list(variant_outcomes), categories=categories),
        dropna=False,
    )
    matrix = counts.reindex(index=categories, columns=categories, fill_value=0).astype(int)
    matrix.index.name = "reference"
    matrix.columns.name = "variant"
    return matrix


def flip_counts(table: pd.DataFrame) -> dict[str, int]:
    """Change -> number of items, from :func:`flip_table`'s output (most frequent first, then by name)."""
    if table.empty:
        return {}
    counts = table["change"].value_counts()
    return {str(change): int(count) for change, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
