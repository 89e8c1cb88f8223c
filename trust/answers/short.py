"""Short free-text answers (extractive and multi-hop QA): the answer a model gave, normalised for comparison.

The normalisation is the usual one of SQuAD-style evaluation (written here from its description):
lower case, punctuation removed, the articles a/an/the removed, whitespace collapsed.
"""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_LEAD_IN = re.compile(r"^\s*(?:final\s+)?answer\s*[:\-]\s*", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces."""
    lowered = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", lowered).split())


def short_answer(output: str) -> str:
    """The normalised answer of ``output``: its first non-empty line, without a leading "Answer:"."""
    for line in output.splitlines():
        if line.strip():
            return normalize_answer(_LEAD_IN.sub("", line))
    return ""
