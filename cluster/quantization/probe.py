"""A quick quality probe: perplexity on a few plain English paragraphs.

Run it on every variant before reading trust numbers: a variant whose perplexity has exploded is
broken (bad group size, failed kernel, wrong dtype), and its benchmark scores mean little.

Each text is scored on its own (no padding, no batching effects): the negative log-likelihood of
every token after the first, given the ones before it. The result is the token-weighted mean over
all texts, exponentiated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from cluster.quantization.texts import load_text_set


def load_probe_texts() -> list[str]:
    """The built-in probe paragraphs (``cluster/quantization/texts/probe.txt``)."""
    return load_text_set("probe")


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _encode(tokenizer: Any, text: str, max_length: int) -> list[int]:
    """Token ids of ``text`` (with the tokenizer's usual special tokens), cut to ``max_length``."""
    ids = list(tokenizer(text)["input_ids"])
    return ids[:max_length]


def text_nll(model: Any, ids: list[int], device: torch.device) -> tuple[float, int]:
    """Sum of negative log-likelihoods of ``ids[1:]`` and how many tokens that is."""
    if len(ids) < 2:
        return 0.0, 0
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    logits = model(input_ids=input_ids).logits[0, :-1].float()
    targets = input_ids[0, 1:]
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    return float(nll), len(ids) - 1


def probe_perplexity(
    model: Any,
    tokenizer: Any,
    texts: list[str] | None = None,
    *,
    max_length: int = 256,
) -> dict[str, float]:
    """Perplexity of ``model`` on ``texts`` (default: the built-in probe paragraphs).

    Returns ``{"perplexity": exp(total NLL / tokens), "tokens": tokens}``. Texts are cut to
    ``max_length`` tokens. ``perplexity`` is ``inf`` when the NLL overflows or is NaN.

    Raises:
        ValueError: the texts give no token to score (each needs at least two tokens).
    """
    texts = load_probe_texts() if texts is None else texts
    device = _model_device(model)
    with torch.no_grad():
        return perplexity_from(lambda ids: text_nll(model, ids, device), probe_token_ids(tokenizer, texts, max_length))


def probe_token_ids(tokenizer: Any, texts: list[str] | None = None, max_length: int = 256) -> list[list[int]]:
    """Token ids of each probe text (default: the built-in paragraphs), cut to ``max_length``."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (got {max_length})")
    texts = load_probe_texts() if texts is None else texts
    return [_encode(tokenizer, text, max_length) for text in texts]


def perplexity_from(
    text_nll_fn: Callable[[list[int]], tuple[float, int]], token_ids: list[list[int]]
) -> dict[str, float]:
    """Token-weighted perplexity from a function giving ``(sum NLL of ids[1:], count)`` per text.

    Engines other than transformers (vLLM: prompt log-probabilities) pass their own function, so
    every engine reports the same quantity on the same tokens.
    """
    total, count = 0.0, 0
    for ids in token_ids:
        if len(ids) < 2:
            continue
        nll, n = text_nll_fn(ids)
        total += nll
        count += n
    if count == 0:
        raise ValueError("the probe texts give no token to score; pass texts of at least two tokens")
    mean = total / count
    perplexity = math.exp(mean) if math.isfinite(mean) and mean < 700 else math.inf
    return {"perplexity": perplexity, "tokens": count}
