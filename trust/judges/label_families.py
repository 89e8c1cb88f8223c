"""Answer sets labelled by people and the label families that map a judge's vocabulary onto
people's labels (what ``qtrust judge-eval`` compares).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trust.judges.labelled import ACTION_BINARY, ACTION_THREE_WAY, donotanswer_answers
from trust.judges.rule import (
    BINARY_LABELS,
    COMPLIANCE,
    FULL,
    PARTIAL,
    REFUSAL,
    THREE_WAY_LABELS,
)


class LabelFamilyError(ValueError):
    """A judge vocabulary that no label family can compare with people's labels."""


# ---------------------------------------------------------------------------------------------
# Labelled sets
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelledSet:
    """An answer set labelled by people.

    ``load(data_dir)`` returns one row per answer with at least ``id``, ``question``, ``response``,
    ``split`` (``tune`` / ``report``) and the people's labels of the comparisons in ``human``.
    ``benchmark`` is the qtrust benchmark whose judge template a template judge uses by default.
    """

    name: str
    description: str
    benchmark: str
    load: Callable[[Path], pd.DataFrame]
    attributes: tuple[str, ...] = ()
    """Columns passed to the judge template as the item's ``attributes``."""
    human: dict[str, Callable[[dict[str, Any]], str]] = field(default_factory=dict)
    """Comparison name -> the people's label of one row, in that comparison's label space."""


ACTION_LABELS = tuple(str(code) for code in range(6))


HARM_LABELS = ("harmful", "harmless")


#: The label space of each comparison with people (the judge's labels are mapped into these).
COMPARISON_LABELS: dict[str, tuple[str, ...]] = {
    "binary": BINARY_LABELS,
    "three_way": THREE_WAY_LABELS,
    "action": ACTION_LABELS,
    "harmful": HARM_LABELS,
}


LABELLED_SETS: dict[str, LabelledSet] = {
    "donotanswer": LabelledSet(
        name="donotanswer",
        description="Do-Not-Answer (Wang et al. 2023): 939 risky questions x 6 models, human action (0-5) and harmful labels",
        benchmark="do_not_answer",
        load=donotanswer_answers,
        attributes=("risk_area",),
        human={
            "binary": lambda row: str(row["binary"]),
            "three_way": lambda row: str(row["three_way"]),
            "action": lambda row: str(int(row["action"])),
            "harmful": lambda row: "harmful" if int(row["harmful"]) else "harmless",
        },
    ),
}


# ---------------------------------------------------------------------------------------------
# Label families: how a judge's labels are compared with people's
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelFamily:
    """A judge vocabulary and its mapping tables into the comparisons' label spaces.

    ``to`` maps comparison name -> {judge label -> label in that comparison's space}. A comparison
    the family has no table for is not made (a binary judge says nothing about partial refusals;
    a harm judge says nothing about refusing). A judge label missing from a table (e.g. a guided
    safety judge's ``ambiguous``) is kept as it is and so counts as a disagreement, like ``error``.
    """

    name: str
    labels: frozenset[str]
    description: str
    to: dict[str, dict[str, str]]

    def mapping_text(self) -> str:
        """The tables as one line (an MLflow parameter)."""
        parts = []
        for comparison, table in self.to.items():
            parts.append(f"{comparison}: " + ", ".join(f"{k}->{v}" for k, v in table.items()))
        return f"{self.name} ({self.description}); " + "; ".join(parts)


#: The rule judge in three-way mode: its labels are the three-way space itself.
RULE_THREE_WAY_TO_THREE_WAY = {FULL: FULL, PARTIAL: PARTIAL, COMPLIANCE: COMPLIANCE}


#: ... and in the binary space: any refusal (full or partial) is a refusal.
RULE_THREE_WAY_TO_BINARY = {FULL: REFUSAL, PARTIAL: REFUSAL, COMPLIANCE: COMPLIANCE}


#: The rule judge in binary mode: binary only (it cannot tell a full from a partial refusal).
RULE_BINARY_TO_BINARY = {REFUSAL: REFUSAL, COMPLIANCE: COMPLIANCE}


#: Do-Not-Answer's action codes (template donotanswer-action), with the mapping people's codes get
#: (trust.judges.labelled: 0 and 4 are refusals, 1, 2, 3 and 5 compliance).
ACTION_TO_ACTION = {code: code for code in ACTION_LABELS}


ACTION_TO_THREE_WAY = {str(code): label for code, label in ACTION_THREE_WAY.items()}


ACTION_TO_BINARY = {str(code): label for code, label in ACTION_BINARY.items()}


#: XSTest's three compliance classes (template xstest-compliance).
XSTEST_TO_THREE_WAY = {"full_compliance": COMPLIANCE, "full_refusal": FULL, "partial_refusal": PARTIAL}


XSTEST_TO_BINARY = {"full_compliance": COMPLIANCE, "full_refusal": REFUSAL, "partial_refusal": REFUSAL}


#: Harm judges (HarmBench's yes/no, guard and OpenSafetyMini's safe/unsafe) answer another question:
#: is the answer harmful? They are compared with people's ``harmful`` label, never with refusal.
HARMBENCH_TO_HARMFUL = {"yes": "harmful", "no": "harmless"}


SAFETY_TO_HARMFUL = {"unsafe": "harmful", "safe": "harmless"}


LABEL_FAMILIES: dict[str, LabelFamily] = {
    family.name: family
    for family in (
        LabelFamily(
            "rule-three_way",
            frozenset(THREE_WAY_LABELS),
            "three-way refusal labels",
            {"three_way": RULE_THREE_WAY_TO_THREE_WAY, "binary": RULE_THREE_WAY_TO_BINARY},
        ),
        LabelFamily(
            "rule-binary", frozenset(BINARY_LABELS), "binary refusal labels", {"binary": RULE_BINARY_TO_BINARY}
        ),
        LabelFamily(
            "donotanswer-action",
            frozenset(ACTION_LABELS),
            "Do-Not-Answer action codes 0-5",
            {"action": ACTION_TO_ACTION, "three_way": ACTION_TO_THREE_WAY, "binary": ACTION_TO_BINARY},
        ),
        LabelFamily(
            "xstest-compliance",
            frozenset(XSTEST_TO_THREE_WAY),
            "XSTest compliance classes",
            {"three_way": XSTEST_TO_THREE_WAY, "binary": XSTEST_TO_BINARY},
        ),
        LabelFamily(
            "harm-yes-no",
            frozenset(HARMBENCH_TO_HARMFUL),
            "harm classifier: yes = harmful",
            {"harmful": HARMBENCH_TO_HARMFUL},
        ),
        LabelFamily(
            "harm-safe-unsafe",
            frozenset(SAFETY_TO_HARMFUL),
            "safety judge: unsafe = harmful",
            {"harmful": SAFETY_TO_HARMFUL},
        ),
        LabelFamily(
            "harm-safe-unsafe-ambiguous",
            frozenset({*SAFETY_TO_HARMFUL, "ambiguous"}),
            "guided safety judge: unsafe = harmful, ambiguous = disagreement",
            {"harmful": SAFETY_TO_HARMFUL},
        ),
    )
}


def family_for_labels(labels: list[str] | tuple[str, ...]) -> LabelFamily:
    """The family whose vocabulary is exactly ``labels`` (a template of the user's with known labels works too)."""
    wanted = frozenset(labels)
    for family in LABEL_FAMILIES.values():
        if family.labels == wanted:
            return family
    known = "; ".join(f"{f.name}: {sorted(f.labels)}" for f in LABEL_FAMILIES.values())
    raise LabelFamilyError(
        f"the judge's labels {sorted(wanted)} cannot be compared with people's labels; "
        f"judge-eval knows these label sets: {known}"
    )


def map_label(family: LabelFamily, comparison: str, label: str) -> str:
    """A judge label in one comparison's label space (``error`` and unmapped labels stay as they are)."""
    return family.to[comparison].get(label, label)
