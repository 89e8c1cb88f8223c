"""Multiple-choice scoring that computes each shared prompt prefix once (a helper of the HF engine).

Every option of a multiple-choice item repeats the same prompt; only its tail differs. Instead of
running each option as a full sequence, :class:`PrefixScorer`

1. runs the part shared by *all* items of a call (system prompt, demonstrations) once, and keeps
   its key/value cache (at most ``keep_shared`` such caches, keyed by their token ids);
2. runs, for a batch of items, each item's own prefix (the longest common token prefix of its
   option sequences) once, left-padded, on top of the shared cache;
3. scores all option tails of the batch in one right-padded forward from those caches, with an
   attention mask over shared prefix + item prefix + tail and explicit position ids.

Prefixes are cut on token ids, never on text: an option whose first token merges with the
prompt's last token simply makes the item's prefix one token shorter. The log-probability of a
tail's first token comes from the prefix's last position.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

#: One option as :meth:`PromptTokens.continuation_sequences` gives it: full ids, tokens to score.
OptionSequence = tuple[list[int], int]


def common_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by every row (0 for no rows)."""
    if not rows:
        return 0
    first = rows[0]
    n = min(len(r) for r in rows)
    for i in range(n):
        tok = first[i]
        if any(r[i] != tok for r in rows):
            return i
    return n


def item_prefix_len(sequences: Sequence[OptionSequence]) -> int:
    """Where an item's shared prefix ends: the longest common prefix of its options' ids, cut
    so that every scored token lies after it (each scored token needs the position before it)."""
    split = common_prefix_len([ids for ids, _ in sequences])
    for ids, n_cont in sequences:
        if n_cont > 0:
            split = min(split, len(ids) - n_cont)
    return split


@dataclass
class _PrefixState:
    """Key/value cache over some prefix tokens, one batch row per item."""

    cache: DynamicCache
    mask: torch.Tensor  # (rows, cache length) long, 1 where a cache position is a real token
    last_logp: torch.Tensor  # (rows, vocab) float32: log-probs of the token after each prefix


def _layers_kv(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _select(cache: DynamicCache, index: torch.Tensor) -> DynamicCache:
    """A new cache holding batch rows ``index`` of ``cache`` (the source is left untouched)."""
    return DynamicCache(
        ddp_cache_data=[(k.index_select(0, index), v.index_select(0, index)) for k, v in _layers_kv(cache)]
    )


def broadcast_cache(cache: DynamicCache, rows: int) -> DynamicCache:
    """A new cache repeating a one-row cache ``rows`` times (views: the model's update copies)."""
    return DynamicCache(
        ddp_cache_data=[(k.expand(rows, *k.shape[1:]), v.expand(rows, *v.shape[1:])) for k, v in _layers_kv(cache)]
    )


def supports_prefix_cache(cache: Any) -> bool:
    """True for a cache made only of plain (full-attention) dynamic layers, which this module can
    slice and extend; sliding-window or linear-attention layers are not handled."""
    layers = getattr(cache, "layers", None)
    return (
        isinstance(cache, DynamicCache)
        and bool(layers)
        and all(type(layer) is DynamicLayer and getattr(layer, "keys", None) is not None for layer in layers)
    )


class PrefixScorer:
    """Scores option continuations of many items, computing every shared prefix once."""

    def __init__(
        self,
        model: Any,
        pad_id: int,
        device: torch.device,
        *,
        token_budget: int = 16384,
        keep_shared: int = 2,
        min_shared: int = 8,
    ) -> None:
        self.model = model
        self.pad_id = int(pad_id)
        self.device = device
        #: At most this many cache positions (rows x length) per tail forward; bounds memory.
        self.token_budget = max(1, int(token_budget))
        self.keep_shared = max(0, int(keep_shared))
        #: A call-wide prefix shorter than this is not worth a cache of its own.
        self.min_shared = max(1, int(min_shared))
        self._shared: OrderedDict[tuple[int, ...], _PrefixState] = OrderedDict()
        #: Forward passes and tokens run through the model (including padding), for benchmarks.
        self.forward_passes = 0
        self.tokens_computed = 0

    # ------------------------------------------------------------------ model calls

    def _forward(
        self,
        input_ids: torch.Tensor,
        attention: torch.Tensor,
        positions: torch.Tensor,
        past: DynamicCache | None,
        last_only: bool,
    ) -> Any:
        kwargs: dict[str, Any] = {}
        if last_only:
            kwargs["logits_to_keep"] = 1
        self.forward_passes += 1
        self.tokens_computed += int(input_ids.numel())
        with torch.inference_mode():
            return self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                position_ids=positions.to(self.device),
                past_key_values=past if past is not None else DynamicCache(),
                use_cache=True,
                **kwargs,
            )

    def shared_state(self, ids: Sequence[int]) -> _PrefixState:
        """The one-row cache over ``ids``, computed once and kept (least recently used dropped)."""
        key = tuple(int(t) for t in ids)
        state = self._shared.get(key)
        if state is not None:
            self._shared.move_to_end(key)
            return state
        input_ids = torch.tensor([key], dtype=torch.long)
        attention = torch.ones_like(input_ids)
        positions = torch.arange(len(key), dtype=torch.long).unsqueeze(0)
        out = self._forward(input_ids, attention, positions, None, last_only=True)
        if not supports_prefix_cache(out.past_key_values):
            raise TypeError("this model's cache cannot be shared across sequences")
        state = _PrefixState(
            cache=out.past_key_values,
            mask=attention,
            last_logp=torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu(),
        )
        if self.keep_shared:
            self._shared[key] = state
            while len(self._shared) > self.keep_shared:
                self._shared.popitem(last=False)
        return state

    def _item_prefixes(self, prefixes: list[list[int]], shared: _PrefixState | None, s: int) -> _PrefixState:
        """Run each item's prefix after the first ``s`` (shared) tokens, left-padded, one row per item."""
        rows = len(prefixes)
        segments = [p[s:] for p in prefixes]
        width = max(len(seg) for seg in segments)
        if width == 0:
            assert shared is not None
            return _PrefixState(
                cache=broadcast_cache(shared.cache, rows),
                mask=shared.mask.expand(rows, -1),
                last_logp=shared.last_logp.expand(rows, -1),
            )
        input_ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        seg_mask = torch.zeros((rows, width), dtype=torch.long)
        for row, seg in enumerate(segments):
            if seg:
                input_ids[row, width - len(seg) :] = torch.tensor(seg, dtype=torch.long)
                seg_mask[row, width - len(seg) :] = 1
        positions = (s + seg_mask.cumsum(-1) - 1).clamp_min(0)
        if shared is not None:
            past = broadcast_cache(shared.cache, rows)
            mask = torch.cat([shared.mask.expand(rows, -1), seg_mask], dim=1)
        else:
            past, mask = None, seg_mask
        out = self._forward(input_ids, mask, positions, past, last_only=True)
        if not supports_prefix_cache(out.past_key_values):
            raise TypeError("this model's cache cannot be shared across sequences")
        last = torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()
        empty = [row for row, seg in enumerate(segments) if not seg]
        if empty:  # the whole prefix was shared: its last log-probs come from the shared run
            assert shared is not None
            last[empty] = shared.last_logp[0]
        return _PrefixState(cache=out.past_key_values, mask=mask, last_logp=last)

    # ------------------------------------------------------------------ scoring

    def score(self, items: list[list[OptionSequence]], shared_len: int = 0) -> list[list[float]]:
        """Summed log-probabilities of the scored tokens of every option, per item, in order.

        ``items`` hold each item's option sequences (full ids, number of tokens to score); all
        items share their first ``shared_len`` tokens (0: nothing shared across items).
        """
        splits = [item_prefix_len(seqs) for seqs in items]
        if any(split < 1 for split in splits):
            raise ValueError("an item has no common prefix token to start scoring from")
        prefixes = [seqs[0][0][:split] for seqs, split in zip(items, splits)]
        s = min([shared_len, *splits])
        shared = None
        if s >= self.min_shared:
            shared = self.shared_state(prefixes[0][:s])
        else:
            s = 0
        state = self._item_prefixes(prefixes, shared, s)

        results = [[0.0] * len(seqs) for seqs in items]
        rows = [
            (i, k, ids[split:], n_cont)
            for i, (seqs, split) in enumerate(zip(items, splits))
            for k, (ids, n_cont) in enumerate(seqs)
            if n_cont > 0
        ]
        rows.sort(key=lambda r: len(r[2]), reverse=True)  # similar tail lengths share a chunk
        start = 0
        while start < len(rows):
            tail_width = len(rows[start][2])
            per_chunk = max(1, self.token_budget // (state.mask.shape[1] + tail_width))
            chunk = rows[start : start + per_chunk]
            for (i, k, _, _), value in zip(chunk, self._score_tails(chunk, state, splits)):
                results[i][k] = value
            start += len(chunk)
        return results

    def _score_tails(
        self, chunk: list[tuple[int, int, list[int], int]], state: _PrefixState, splits: list[int]
    ) -> list[float]:
        width = max(len(tail) for _, _, tail, _ in chunk)
        rows = len(chunk)
        item_index = torch.tensor([i for i, _, _, _ in chunk], dtype=torch.long)
        input_ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        tail_mask = torch.zeros((rows, width), dtype=torch.long)
        positions = torch.zeros((rows, width), dtype=torch.long)
        for row, (i, _, tail, _) in enumerate(chunk):
            input_ids[row, : len(tail)] = torch.tensor(tail, dtype=torch.long)
            tail_mask[row, : len(tail)] = 1
            positions[row] = splits[i] + torch.arange(width)
        mask = torch.cat([state.mask.index_select(0, item_index), tail_mask], dim=1)
        past = _select(state.cache, item_index.to(self.device))
        logits = self._forward(input_ids, mask, positions, past, last_only=False).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        # Tail token j is predicted by tail position j - 1, the first one by the prefix's last.
        preds = torch.cat([state.last_logp.index_select(0, item_index).unsqueeze(1), logp[:, :-1]], dim=1)
        out = []
        for row, (_, _, tail, n_cont) in enumerate(chunk):
            m = len(tail)
            targets = input_ids[row, m - n_cont : m]
            out.append(float(preds[row, m - n_cont : m].gather(-1, targets.unsqueeze(-1)).sum()))
        return out
