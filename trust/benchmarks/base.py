"""The :class:`Benchmark` interface every benchmark implements, and deterministic subsetting."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Hashable
from pathlib import Path

from pydantic import BaseModel

from trust.types import Item, TaskKind


class Benchmark(ABC):
    """One benchmark: loads items, renders prompts, parses answers and computes metrics.

    Implementations set the attributes below (see :class:`~trust.benchmarks.declarative.DeclarativeBenchmark`). ``version`` must be bumped whenever prompts,
    parsing or scoring change: it is part of cache keys, so stale results are not reused.

    Scoring convention (all benchmarks): labels are aligned with items. An ``ERROR`` label
    (inference failed) is kept in every denominator and never counts as a correct answer, so a
    failing run lowers accuracy instead of silently shrinking the test set.
    """

    name: str
    version: str
    task: TaskKind = "generate"
    description: str
    metric_names: tuple[str, ...]
    primary_metric: str
    options: BaseModel

    @abstractmethod
    def load_all(self, data_dir: Path) -> list[Item]:
        """Return every item, in stable source order with stable ids.

        Raises :class:`trust.benchmarks.data.BenchmarkDataError` when a data file is missing.
        """

    def load(self, data_dir: Path, limit: int | None = None) -> list[Item]:
        """Return the items, or the deterministic subset of ``limit`` of them (see :func:`limit_items`)."""
        return limit_items(self.load_all(data_dir), limit)

    @abstractmethod
    def parse(self, item: Item, output: str) -> str:
        """Map a model output to a label of the answer space, or ``REFUSED`` / ``INVALID``."""

    def parse_context(self, item: Item) -> Hashable:
        """What of ``item`` :meth:`parse` reads: equal contexts and equal outputs give equal labels.

        Scoring parses each distinct (context, output) once. The default, the item id, shares
        nothing between items; a benchmark whose parser reads less of the item says so.
        """
        return item.id

    @abstractmethod
    def score(
        self, items: list[Item], labels: list[str], logprobs: list[list[float] | None] | None = None
    ) -> dict[str, float]:
        """Compute :attr:`metric_names` from parsed labels aligned with ``items`` (and, for
        log-likelihood tasks, the per-choice log-probabilities).

        A metric whose denominator is empty is ``float('nan')``.
        """

    @abstractmethod
    def dataset_digest(self, data_dir: Path) -> str:
        """One sha256 over the benchmark's data files (for tracking which data was used)."""

    def describe(self) -> dict[str, str]:
        """Return flat string parameters for tracking: name, version, task and options (JSON)."""
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "options": json.dumps(self.options.model_dump(mode="json"), sort_keys=True),
        }


def rank_key(item_id: str) -> str:
    """An item's place in the fixed random order of its benchmark: the sha256 of its id (hex).

    ``limit`` keeps the items that come first in this order; an adaptive sweep runs its items in it.
    """
    return hashlib.sha256(item_id.encode("utf-8")).hexdigest()


_rank_key = rank_key


def limit_items(items: list[Item], limit: int | None) -> list[Item]:
    """Return a deterministic subset of ``limit`` items, in their original order.

    Items are ranked by the sha256 of their id and the first ``limit`` are kept, so the subset
    depends only on ids (not on file order or a random seed) and a smaller limit's subset is
    contained in a larger one's. ``None`` keeps everything; a negative limit is an error.
    """
    if limit is None:
        return list(items)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if limit >= len(items):
        return list(items)
    ranked = sorted(range(len(items)), key=lambda index: (_rank_key(items[index].id), index))
    keep = set(ranked[:limit])
    return [item for index, item in enumerate(items) if index in keep]
