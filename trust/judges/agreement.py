"""How far a judge agrees with people: accuracy, Cohen's kappa (scikit-learn) and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sklearn.metrics import cohen_kappa_score, confusion_matrix


def agreement(human: Sequence[str], judged: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Agreement of ``judged`` with ``human`` over the items both label (a judge's errors count as disagreement).

    Returns ``n``, ``accuracy``, ``kappa`` (NaN when people used one label only) and ``confusion``
    (rows: people's labels, columns: the judge's labels plus ``error`` and any other label it gave).
    """
    if len(human) != len(judged):
        raise ValueError(f"{len(human)} human labels but {len(judged)} judged")
    if not human:
        return {"n": 0, "accuracy": float("nan"), "kappa": float("nan"), "confusion": {}, "labels": list(labels)}
    columns = list(labels) + sorted(set(judged) - set(labels))
    matrix = confusion_matrix(list(human), list(judged), labels=columns)
    accuracy = sum(h == j for h, j in zip(human, judged)) / len(human)
    kappa = float(cohen_kappa_score(list(human), list(judged), labels=columns)) if len(set(human)) > 1 else float("nan")
    confusion = {
        row: {col: int(matrix[i][j]) for j, col in enumerate(columns)} for i, row in enumerate(columns) if row in labels
    }
    return {"n": len(human), "accuracy": accuracy, "kappa": kappa, "confusion": confusion, "labels": columns}
