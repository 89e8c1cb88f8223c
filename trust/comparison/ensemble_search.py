"""The candidate precision ensembles of one model: every subset of its quantized variants, voted.

Each candidate's labels come from :func:`trust.comparison.ensemble.ensemble_labels` (Lu et al., 2025), so the
search and the sweep's declared ensembles vote by the same rule.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from trust.comparison.ensemble import ensemble_labels


class Candidate(BaseModel):
    """One candidate ensemble and its voted labels."""

    model_config = ConfigDict(frozen=True)

    members: tuple[str, ...]
    """Variant names, most precise first (equal precisions by name)."""
    labels: dict[str, str]
    """Item id -> voted label, for the items every member has."""

    @property
    def name(self) -> str:
        """A readable name, the members joined by ``+``."""
        return "+".join(self.members)


def count_candidates(n_members: int, min_size: int, max_size: int) -> int:
    """How many subsets of ``n_members`` have between ``min_size`` and ``max_size`` members."""
    return sum(math.comb(n_members, size) for size in range(min_size, max_size + 1))


def ensemble_candidates(
    member_labels: Mapping[str, Mapping[str, str]],
    precisions: Mapping[str, float],
    *,
    min_size: int = 2,
    max_size: int | None = None,
    max_candidates: int = 256,
) -> list[Candidate]:
    """Vote every subset of the given variants with ``min_size`` to ``max_size`` members.

    ``member_labels`` maps variant name -> {item id -> parsed label}; ``precisions`` maps variant
    name -> bits. Candidates come in a stable order: by size, then by their sorted member names.
    Raises ValueError when a precision is missing, the sizes are impossible, or the subsets would
    number more than ``max_candidates`` (they grow as 2^n).
    """
    names = list(member_labels)
    missing = [name for name in names if name not in precisions]
    if missing:
        raise ValueError(f"no precision given for variants {missing}")
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1, got {min_size}")
    top = len(names) if max_size is None else min(max_size, len(names))
    if max_size is not None and max_size < min_size:
        raise ValueError(f"max_size ({max_size}) is smaller than min_size ({min_size})")
    total = count_candidates(len(names), min_size, top) if top >= min_size else 0
    if total > max_candidates:
        raise ValueError(
            f"{len(names)} variants give {total} candidate ensembles of {min_size} to {top} members, more than "
            f"max_candidates={max_candidates}; pass fewer variants, set max_size, or raise max_candidates"
        )
    # Most precise first; equal precisions by name, which also fixes the vote's tie-break between them.
    ordered = sorted(names, key=lambda name: (-float(precisions[name]), name))
    subsets = [subset for size in range(min_size, top + 1) for subset in itertools.combinations(ordered, size)]
    subsets.sort(key=lambda subset: (len(subset), sorted(subset)))
    return [
        Candidate(
            members=subset,
            labels=ensemble_labels({name: member_labels[name] for name in subset}, precisions),
        )
        for subset in subsets
    ]
