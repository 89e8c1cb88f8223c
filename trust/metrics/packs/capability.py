"""Capability baselines beside the trust perspectives: multiple-choice accuracy per group and its macro
average (MMLU, SafetyBench), and short-answer exact match and token F1 (HotpotQA).

Short answers are stored as their parsed label: the answer's first line, normalised the standard way
for extractive QA (lower case, punctuation and the articles a/an/the removed, whitespace collapsed;
:func:`trust.answers.short.normalize_answer`). Exact match and F1 compare that label with the normalised reference.

An answer-correctness judge (the ``qa-correctness`` template) replaces that label with a verdict,
mapped by the definition's ``judge_labels`` onto :data:`JUDGED_CORRECT` / :data:`JUDGED_INCORRECT`
(upper case, so they never equal a normalised answer). ``judged_accuracy`` reads only verdicts and
exact match / F1 only answers: under the rule parser ``judged_accuracy`` has no value, and under a
judge's labels (``judge/<j>/...``) exact match and F1 have none, so neither is ever a silent 0.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from trust.answers.short import normalize_answer
from trust.metrics.functions import ScoreInput, mean_metric
from trust.metrics.registry import Attribute, flags
from trust.types import FILTERED_LABELS

#: A judge's verdict that a short answer is correct / incorrect (see ``judge_labels`` of hotpotqa).
JUDGED_CORRECT = "JUDGED_CORRECT"
JUDGED_INCORRECT = "JUDGED_INCORRECT"
VERDICT_LABELS = frozenset({JUDGED_CORRECT, JUDGED_INCORRECT})


def _hits(score: ScoreInput) -> list[bool]:
    return [it.reference == lab for it, lab in zip(score.items, score.labels)]


def _groups(score: ScoreInput, attribute: str) -> list[str]:
    return sorted({str(v) for v in score.attribute(attribute) if v is not None})


@mean_metric("per_group_accuracy", outputs=lambda args: [])
def per_group_accuracy(score: ScoreInput, attribute: Attribute, prefix: str = "") -> dict[str, np.ndarray]:
    """Accuracy within each group of ``attribute`` (one metric per group, named ``<prefix><group>``)."""
    hits = _hits(score)
    return {f"{prefix}{group}": flags(hits, score.where(attribute, group)) for group in _groups(score, attribute)}


@mean_metric("macro_accuracy")
def macro_accuracy(score: ScoreInput, attribute: Attribute) -> np.ndarray:
    """The unweighted mean of the per-group accuracies over the groups of ``attribute``.

    Written as per-item values whose mean is exactly that average (an item of a group of ``n_g``
    items out of ``G`` groups and ``N`` items weighs ``N / (G * n_g)``), so its interval is a
    bootstrap over items like any other mean.
    """
    values = np.full(len(score.items), np.nan)
    groups = [None if v is None else str(v) for v in score.attribute(attribute)]
    sizes = Counter(g for g in groups if g is not None)
    counted = sum(sizes.values())
    if not sizes:
        return values
    for index, (group, hit) in enumerate(zip(groups, _hits(score))):
        if group is not None:
            values[index] = float(hit) * counted / (len(sizes) * sizes[group])
    return values


def _judged(score: ScoreInput) -> bool:
    """Whether the labels are a correctness judge's verdicts rather than parsed answers."""
    return any(lab in VERDICT_LABELS for lab in score.labels)


def _reference_text(reference: str | None) -> str:
    return normalize_answer(reference or "")


@mean_metric("exact_match")
def exact_match(score: ScoreInput) -> np.ndarray:
    """The normalised answer equals the normalised reference (refused, invalid or failed answers score 0)."""
    if _judged(score):
        return np.full(len(score.labels), math.nan)
    return flags(
        [
            lab not in FILTERED_LABELS and lab == _reference_text(it.reference)
            for it, lab in zip(score.items, score.labels)
        ]
    )


def _f1(answer: str, reference: str) -> float:
    ours, theirs = answer.split(), reference.split()
    if not ours or not theirs:
        return float(ours == theirs)
    common = sum((Counter(ours) & Counter(theirs)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(ours), common / len(theirs)
    return 2 * precision * recall / (precision + recall)


@mean_metric("token_f1")
def token_f1(score: ScoreInput) -> np.ndarray:
    """F1 of the answer's tokens against the reference's, both normalised (0 for refused, invalid or failed answers)."""
    if _judged(score):
        return np.full(len(score.labels), math.nan)
    return np.asarray(
        [
            0.0 if lab in FILTERED_LABELS else _f1(lab, _reference_text(it.reference))
            for it, lab in zip(score.items, score.labels)
        ],
        dtype=float,
    )


@mean_metric("judged_accuracy")
def judged_accuracy(score: ScoreInput) -> np.ndarray:
    """Share of answers a correctness judge called correct (refused, invalid or failed answers count as wrong).

    Without such a judge no label is a verdict and the metric has no value (never a silent 0); items
    whose label is a parsed answer have none either.
    """
    if not _judged(score):
        return np.full(len(score.labels), math.nan)
    return np.asarray(
        [
            1.0 if lab == JUDGED_CORRECT else 0.0 if lab == JUDGED_INCORRECT or lab in FILTERED_LABELS else math.nan
            for lab in score.labels
        ],
        dtype=float,
    )
