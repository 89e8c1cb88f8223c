"""Flags for degenerate variants: a quantized model that stopped answering meaningfully.

A variant is flagged when most of its answers do not parse, when it gives one label to nearly every
item (its accuracy then only echoes the benchmark's class balance), or when its perplexity on a probe
text has blown up against the reference model's. ERROR labels (inference failures) are reported
elsewhere and are left out of every share here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trust.types import ERROR, INVALID, REFUSED


class Thresholds(BaseModel):
    """When a variant counts as degenerate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    invalid_rate: float = Field(0.5, ge=0.0, le=1.0)
    """Share of INVALID (unparsed) answers above which a variant is flagged."""
    single_label_share: float = Field(0.95, gt=0.0, le=1.0)
    """A variant giving one label to at least this share of items is flagged."""
    perplexity_ratio: float = Field(1.5, gt=0.0)
    """Probe perplexity divided by the reference's above which a variant is flagged."""


class Flag(BaseModel):
    """One reason a variant looks degenerate."""

    model_config = ConfigDict(frozen=True)

    code: Literal["invalid", "single_label", "perplexity"]
    """Which check fired."""
    value: float
    """The measured share or ratio."""
    threshold: float
    """The threshold it crossed."""
    message: str
    """A short sentence for tables and reports, e.g. ``"72% of answers did not parse"``."""


def majority_baseline(references: Sequence[str | None]) -> tuple[str | None, float]:
    """The most common gold label and its share among items that have one.

    That share is the accuracy of always answering the most common label. Ties go to the label seen
    first. ``(None, nan)`` when no item has a reference.
    """
    counts = Counter(ref for ref in references if ref is not None)
    if not counts:
        return None, math.nan
    label, count = counts.most_common(1)[0]
    return label, count / sum(counts.values())


#: The label of a chance-level baseline (see :func:`chance_baseline`), in place of a majority class.
CHANCE = "<chance>"


def chance_baseline(choices: Sequence[Sequence[str] | None]) -> float | None:
    """The accuracy of picking an option at random, ``mean(1 / number of options)``, when the items'
    option lists differ (a majority class means nothing when every item has its own options); None
    when every item offers the same options (or none)."""
    lists = [tuple(c) for c in choices if c]
    if len(set(lists)) < 2:
        return None
    return sum(1 / len(c) for c in lists) / len(lists)


def baseline_text(label: str | None, share: float) -> str:
    """How tables and reports quote a baseline: a majority class, or chance level."""
    if label == CHANCE:
        return f"chance level {share:.3f} (1 / number of options)"
    return f"majority-class baseline {share:.3f} (always '{label}')"


def _percent(share: float) -> str:
    return f"{share * 100:.0f}%"


def _single_label_message(label: str, share: float, references: Sequence[str | None] | None) -> str:
    if label == REFUSED:
        text = f"refuses {_percent(share)} of items"
    else:
        text = f"says '{label}' to {_percent(share)} of items"
    if references is not None:
        majority, baseline = majority_baseline(references)
        if majority is not None:
            text += f" (majority-class baseline {baseline:.2f})"
    return text


def degenerate_flags(
    labels: Sequence[str],
    references: Sequence[str | None] | None = None,
    *,
    perplexity_ratio: float | None = None,
    thresholds: Thresholds | None = None,
) -> list[Flag]:
    """Every degenerate-variant check that fires for one variant on one benchmark.

    ``labels`` are the variant's parsed labels; ``references`` the items' gold labels (used only to
    quote the majority-class baseline); ``perplexity_ratio`` the variant's probe perplexity divided
    by the reference model's, when measured. ERROR labels are left out of both shares; the
    single-label check counts every other label, REFUSED included. Flags come in the order invalid,
    single_label, perplexity; an empty list means nothing looked wrong.
    """
    thresholds = thresholds or Thresholds()
    flags: list[Flag] = []
    counted = [label for label in labels if label != ERROR]
    if counted:
        invalid_share = sum(1 for label in counted if label == INVALID) / len(counted)
        if invalid_share > thresholds.invalid_rate:
            flags.append(
                Flag(
                    code="invalid",
                    value=invalid_share,
                    threshold=thresholds.invalid_rate,
                    message=f"{_percent(invalid_share)} of answers did not parse",
                )
            )
        top_label, top_count = Counter(counted).most_common(1)[0]
        top_share = top_count / len(counted)
        if top_share >= thresholds.single_label_share:
            flags.append(
                Flag(
                    code="single_label",
                    value=top_share,
                    threshold=thresholds.single_label_share,
                    message=_single_label_message(top_label, top_share, references),
                )
            )
    if perplexity_ratio is not None and not math.isnan(perplexity_ratio):
        if perplexity_ratio > thresholds.perplexity_ratio:
            flags.append(
                Flag(
                    code="perplexity",
                    value=perplexity_ratio,
                    threshold=thresholds.perplexity_ratio,
                    message=f"probe perplexity {perplexity_ratio:.2f}× the reference's",
                )
            )
    return flags
