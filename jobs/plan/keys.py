"""Item keys: a hash of what makes an answer (variant, engine, decoding settings, rendered request).

Benchmark names, versions, shard boundaries, batch sizes, limits and cluster shape are not in
any key, so equal requests get equal keys in any sweep.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from trust.types import Item

#: Bumped when the meaning of a key changes, so old shards are recomputed instead of misread.
KEY_SCHEMA = 3


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def context_digest(*, variant_key: str, engine: str, task: str, max_new_tokens: int, temperature: float) -> str:
    """What every request of one variant and one benchmark shares: variant, engine, decoding settings.

    For log-likelihood scoring ``max_new_tokens`` does not change the answer and is left out.
    """
    generation: dict[str, Any] = {"temperature": temperature}
    if task != "loglikelihood":
        generation["max_new_tokens"] = max_new_tokens
    return _digest(
        {"schema": KEY_SCHEMA, "variant": variant_key, "engine": engine, "task": task, "generation": generation}
    )


def request_digest(task: str, item: Item) -> str:
    """The rendered request alone: chat messages and, for scoring, the continuations."""
    return _digest([task, item.messages, item.choices if task == "loglikelihood" else None])


def item_key(context: str, request: str) -> str:
    """An item request's key: 24 hex digits of its context digest + 40 of its request digest.

    Both halves are sha256 digests of content (no names, versions, ids or shard boundaries), so
    equal requests get equal keys in any sweep, and the first 24 digits group a variant's
    requests (the response cache is laid out by them).
    """
    return context[:CONTEXT_CHARS] + request[:40]


#: How many leading hex digits of an item key name its context (variant, engine, decoding).
CONTEXT_CHARS = 24
