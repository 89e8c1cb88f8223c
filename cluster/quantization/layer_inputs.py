"""What a layer sees on calibration text: the second moments of its inputs, block by block.

Methods that fit weights to a layer's output error (``||W X - Ŵ X||²``: AQLM's code search, QuIP#'s
BlockLDLQ, QUIK's GPTQ and outlier choice) need, for every linear layer, ``H = Σ x xᵀ / n`` over
the calibration tokens ``x`` that reach it. :func:`sequential_hessians` computes them the way GPTQ
does, one decoder block at a time:

1. the calibration texts are run up to the first decoder block, and its inputs (hidden states and
   the keyword arguments the model passes to every block: position embeddings, masks) are kept;
2. for each block, forward hooks on its linear layers accumulate ``H`` while the kept inputs run
   through it; the caller gets ``(block, {layer name: H})`` and quantizes that block in place;
3. the block then runs again, now quantized, and its outputs become the next block's inputs, so
   each block is fitted to what its quantized predecessors actually produce.

Only one block's matrices are alive at a time, so memory stays at one block's worth (a 7B model's
MLP down-projection is 11008² floats: 0.5 GB), and the model may sit on a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cluster.quantization.targets import QuantizationError, decoder_blocks

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cluster.quantization.recipes import QuantRecipe


@dataclass
class BlockInputs:
    """Per-sample inputs of one decoder block: hidden states ``[1, T, d]`` and keyword arguments."""

    hidden: list[torch.Tensor]
    kwargs: list[dict[str, Any]]


class _Stop(Exception):
    """Raised by the capture hook once the first block's inputs are kept."""


def calibration_ids(
    method: str, tokenizer: Any, texts: Sequence[str] | None, recipe: QuantRecipe
) -> list[torch.Tensor]:
    """A calibrated method's texts tokenized to the recipe's ``calibration.seq_len``.

    Raises:
        ValueError: no text (the message names the method), or no text with a token.
    """
    if not texts:
        raise ValueError(f"{method} needs calibration texts (got none); check the recipe's calibration source")
    seq_len = recipe.calibration.seq_len if recipe.calibration is not None else 512
    return tokenize(tokenizer, texts, seq_len)


def check_inside_blocks(method: str, model: nn.Module, names: Sequence[str]) -> None:
    """Raise ``QuantizationError`` for layers outside the decoder blocks (never visited here)."""
    blocks = decoder_blocks(model)
    outside = [name for name in names if not any(name.startswith(b + ".") for b in blocks)]
    if outside:
        raise QuantizationError(
            f"{method} quantizes the linear layers of the decoder blocks only, not {', '.join(outside[:3])}; "
            "add them to keep_full_precision"
        )


def tokenize(tokenizer: Any, texts: Sequence[str], seq_len: int) -> list[torch.Tensor]:
    """Each text as ``input_ids [1, ≤ seq_len]`` (texts without tokens dropped).

    Raises:
        ValueError: no text has a token.
    """
    ids = []
    for text in texts:
        encoded = tokenizer(text, truncation=True, max_length=seq_len, return_tensors="pt")["input_ids"]
        if encoded.shape[-1] > 0:
            ids.append(encoded)
    if not ids:
        raise ValueError(f"none of the {len(texts)} calibration texts has a token after tokenization")
    return ids


def first_block_inputs(model: nn.Module, input_ids: Sequence[torch.Tensor]) -> BlockInputs:
    """Run each sample up to the first decoder block and keep what that block receives."""
    import torch

    blocks = decoder_blocks(model)
    if not blocks:
        raise ValueError("the model has no decoder blocks (no nn.ModuleList of layers)")
    first = model.get_submodule(blocks[0])
    device = next(model.parameters()).device
    kept = BlockInputs(hidden=[], kwargs=[])

    def capture(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kept.hidden.append(hidden.detach())
        kept.kwargs.append({k: v for k, v in kwargs.items() if k != "hidden_states"})
        raise _Stop

    handle = first.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            for ids in input_ids:
                try:
                    model(input_ids=ids.to(device), use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return kept


def _block_output(output: Any) -> torch.Tensor:
    """A decoder block's hidden states (blocks return a tensor or a tuple starting with it)."""
    return output[0] if isinstance(output, tuple | list) else output


def run_block(block: nn.Module, inputs: BlockInputs) -> BlockInputs:
    """``inputs`` passed through ``block``: the next block's inputs (same keyword arguments)."""
    import torch

    with torch.no_grad():
        hidden = [_block_output(block(h, **kw)).detach() for h, kw in zip(inputs.hidden, inputs.kwargs, strict=True)]
    return BlockInputs(hidden=hidden, kwargs=inputs.kwargs)


class HessianHooks:
    """Forward hooks accumulating ``H = Σ x xᵀ / n`` (float32) of the inputs of linear layers ``names``.

    ``with HessianHooks(root, names) as hooks:`` run inputs through ``root``; then
    ``hooks.hessians()``. ``names`` are full module names; ``prefix`` is ``root``'s own name.
    """

    def __init__(self, root: nn.Module, names: Sequence[str], prefix: str = "") -> None:
        self.root, self.names, self.prefix = root, list(names), prefix
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._handles: list[Any] = []

    def _hook(self, name: str):
        import torch

        def accumulate(_module: nn.Module, args: tuple, _output: Any) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float32)
            if name not in self._sums:
                self._sums[name] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32, device=x.device)
                self._counts[name] = 0
            self._sums[name].addmm_(x.T, x)
            self._counts[name] += x.shape[0]

        return accumulate

    def __enter__(self) -> HessianHooks:
        skip = len(self.prefix) + 1 if self.prefix else 0
        for name in self.names:
            module = self.root.get_submodule(name[skip:])
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *_exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def hessians(self) -> dict[str, torch.Tensor]:
        """``H`` of every layer that saw an input."""
        return {name: self._sums[name] / max(self._counts[name], 1) for name in self._sums}


def block_hessians(block: nn.Module, prefix: str, inputs: BlockInputs, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """``H = Σ x xᵀ / n`` (float32, on the layer's device) of each linear layer ``names`` inside ``block``."""
    with HessianHooks(block, names, prefix) as hooks:
        run_block(block, inputs)
    return hooks.hessians()


def sequential_hessians(
    model: nn.Module, input_ids: Sequence[torch.Tensor], layers: Sequence[str]
) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """Yield ``(block prefix, {layer: H})`` for every decoder block holding some of ``layers``.

    The caller quantizes the block's layers in place before asking for the next block: the next
    block's inputs are computed after that (see the module docstring). Layers outside the decoder
    blocks are not visited.
    """
    wanted = set(layers)
    inputs = first_block_inputs(model, input_ids)
    for prefix in decoder_blocks(model):
        block = model.get_submodule(prefix)
        names = [name for name in wanted if name.startswith(prefix + ".")]
        if names:
            yield prefix, block_hessians(block, prefix, inputs, sorted(names))
        inputs = run_block(block, inputs)
