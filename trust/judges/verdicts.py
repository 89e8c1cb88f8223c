"""Reading a judge's raw output: a label of the template's vocabulary, or ``error`` with the text kept.

A judge is a language model: it may answer in prose around its JSON, wrap it in a code fence, stop
mid-object when it hits its token budget, say nothing, or use a word the template did not ask for.
None of that may crash a sweep: every failure becomes :data:`JUDGE_ERROR` with the raw text and the
reason, so it is counted, shown and retried by re-judging, never silently dropped.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

#: The label of a judgment that could not be read (or of a judge call that failed).
JUDGE_ERROR = "error"


class Verdict(BaseModel):
    """One judgment: the label, the judge's stated reason (if any), the raw text and what went wrong."""

    model_config = ConfigDict(frozen=True)

    label: str
    reason: str | None = None
    category: str | None = None
    raw: str = ""
    problem: str | None = None
    """Why the label is :data:`JUDGE_ERROR` (``None`` for a readable judgment)."""

    @property
    def ok(self) -> bool:
        return self.label != JUDGE_ERROR


def failed(raw: str, problem: str) -> Verdict:
    return Verdict(label=JUDGE_ERROR, raw=raw, problem=problem)


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def find_json_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The first complete JSON object in ``text`` (inside a code fence or bare), or why there is none."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    saw_open = False
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start in [m.start() for m in re.finditer(r"\{", candidate)]:
            saw_open = True
            try:
                value, _end = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value, None
    if saw_open:
        return None, "the JSON object is malformed or cut off (truncated output?)"
    return None, "no JSON object in the output"


def normalise(word: str) -> str:
    return re.sub(r"[\s_\-]+", " ", word.strip().lower()).strip(" .,:;!\"'`*")


def match_label(value: Any, synonyms: dict[str, list[str]]) -> str | None:
    """The template label whose name or synonym equals ``value`` (case, spaces, dashes and underscores ignored)."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = normalise(str(value))
    for label, words in synonyms.items():
        if text == normalise(label) or any(text == normalise(w) for w in words):
            return label
    return None


def first_label_word(text: str, synonyms: dict[str, list[str]]) -> str | None:
    """The label whose name or synonym starts ``text`` (the first line, markdown and a leading 'Answer:' ignored).

    Longer words are tried first, so "unsafe" is never read as "safe" and "not harmful" never as "harmful".
    """
    first = ""
    for line in text.strip().splitlines():
        if line.strip():
            first = line
            break
    head = normalise(
        re.sub(
            r"^\W*(?:final )?(?:answer|verdict|label|classification|output)\s*[:\-]\s*",
            "",
            first.replace("*", "").strip(),
            flags=re.IGNORECASE,
        )
    )
    pairs = sorted(
        ((normalise(w), label) for label, words in synonyms.items() for w in [label, *words]), key=lambda p: -len(p[0])
    )
    for word, label in pairs:
        if word and (head == word or re.match(rf"{re.escape(word)}\b", head)):
            return label
    return None
