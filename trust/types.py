"""Data types shared by benchmarks, scoring and ensembles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: Parsed label of an answer that refuses to answer (or, for an ensemble, where every member was filtered).
REFUSED = "REFUSED"
#: Parsed label of an answer that neither refuses nor matches the answer space.
INVALID = "INVALID"
#: Parsed label of an item whose inference failed (the row carries the error).
ERROR = "ERROR"

#: Labels that the precision-ensemble vote filters out before counting.
FILTERED_LABELS = frozenset({REFUSED, INVALID, ERROR})

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""

TaskKind = Literal["generate", "loglikelihood"]


@dataclass
class Item:
    """One benchmark item, ready to be sent to an engine.

    ``id`` is stable across runs (derived from the source file, never from a random draw).
    ``messages`` is the rendered chat prompt. ``choices`` is set for log-likelihood items (the
    continuations to score). ``reference`` is the gold label in the benchmark's answer space, or
    ``None`` when there is none. ``attributes`` carries group attributes and other per-item facts
    used by metrics (e.g. ``{"label": "safe", "type": "homonyms"}``).
    """

    id: str
    messages: list[Message]
    reference: str | None = None
    choices: list[str] | None = None
    attributes: dict[str, str] = field(default_factory=dict)
