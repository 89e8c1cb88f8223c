"""Mapping free-text answers onto a benchmark's answer space."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_QUOTES).lower()


def _synonym_pattern(synonym: str) -> re.Pattern[str]:
    words = _normalize(synonym).split()
    body = r"\s+".join(re.escape(word) for word in words)
    return re.compile(rf"(?<!\w){body}(?!\w)")


def parse_label_words(output: str, labels: Mapping[str, Sequence[str]]) -> str | None:
    """Return the label whose synonym occurs in ``output``, or ``None`` if none does.

    Matching ignores case, treats curly and straight apostrophes alike, allows any whitespace
    between the words of a synonym, and only matches whole words. Among all matches the one
    starting first wins, and at the same start the longest wins, so ``"not wrong"`` beats the
    ``"wrong"`` it contains, and when two different labels both appear the earlier one wins.
    """
    text = _normalize(output)
    best: tuple[int, int, str] | None = None  # (start, -length, label)
    for label, synonyms in labels.items():
        for synonym in synonyms:
            if not synonym.strip():
                continue
            match = _synonym_pattern(synonym).search(text)
            if match is None:
                continue
            candidate = (match.start(), -(match.end() - match.start()), label)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
    return None if best is None else best[2]
