"""Length-sorted batching across a shard's requests, with results put back in request order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Request indices grouped into batches of at most ``batch_size``, longest first.

    The sort is stable (equal lengths keep request order), so the batches are deterministic;
    the longest batch runs first, so an out-of-memory error shows up at once.
    """
    size = max(1, int(batch_size))
    order = sorted(range(len(lengths)), key=lambda i: -int(lengths[i]))
    return [order[i : i + size] for i in range(0, len(order), size)]


def in_request_order(placed: dict[int, T], count: int) -> list[T]:
    """``placed[i]`` for ``i`` in ``0 .. count - 1``; every index must have been placed."""
    missing = [i for i in range(count) if i not in placed]
    if missing:
        raise RuntimeError(f"no result for request positions {missing[:5]}")
    return [placed[i] for i in range(count)]
