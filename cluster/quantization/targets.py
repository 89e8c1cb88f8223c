"""Which linear layers of a loaded model a recipe quantizes, and with which bits and group size.

Every method (qtrust's RTN, llm-compressor's GPTQ/AWQ, hqq) asks :func:`plan_targets` so that
``keep_full_precision`` and mixed-precision ``overrides`` mean the same thing everywhere.

Module patterns: an exact module name (``model.layers.0.mlp.down_proj``), a dotted suffix
(``down_proj``, ``mlp.down_proj``), or ``re:<regex>`` matched against the whole module name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cluster.quantization.recipes import QuantRecipe

if TYPE_CHECKING:  # torch is imported where a model is at hand, never by validation
    from torch import nn


class QuantizationError(ValueError):
    """A recipe that cannot be applied to this model (the message says why and what works)."""


@dataclass(frozen=True)
class LayerQuant:
    """How one linear layer is quantized."""

    bits: int
    group_size: int | None


@dataclass
class TargetPlan:
    """The layers a recipe quantizes (by module name) and the linear layers it leaves alone."""

    layers: dict[str, LayerQuant] = field(default_factory=dict)
    full_precision: list[str] = field(default_factory=list)

    def bits_histogram(self) -> dict[int, int]:
        """How many layers get each bit width."""
        counts: dict[int, int] = {}
        for quant in self.layers.values():
            counts[quant.bits] = counts.get(quant.bits, 0) + 1
        return dict(sorted(counts.items()))

    def describe(self) -> dict[str, str]:
        """Flat string description for run records."""
        return {
            "layers_quantized": str(len(self.layers)),
            "layers_full_precision": ",".join(self.full_precision) or "-",
            "bits_per_layer": ",".join(f"{bits}:{count}" for bits, count in self.bits_histogram().items()),
        }


def scalar_bits_per_weight(model: nn.Module, plan: TargetPlan, symmetric: bool) -> float:
    """Bits per quantized weight of a scalar (per-group) method, scales and zero points included.

    Each group stores a 16-bit scale, and asymmetric ones a ``bits``-bit zero point; a layer
    without a group size has one group per output row. Layers left in full precision are not
    counted (see ``layers_full_precision``).
    """
    modules = dict(model.named_modules())
    weights = bits = 0.0
    for name, quant in plan.layers.items():
        out_features, in_features = modules[name].weight.shape
        groups = out_features * (in_features // quant.group_size if quant.group_size else 1)
        weights += out_features * in_features
        bits += out_features * in_features * quant.bits + groups * (16 + (0 if symmetric else quant.bits))
    return bits / weights if weights else 0.0


def matches(name: str, pattern: str) -> bool:
    """Whether module ``name`` matches ``pattern`` (exact, dotted suffix, or ``re:`` full match)."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return name == pattern or name.endswith("." + pattern)


def decoder_blocks(model: nn.Module) -> list[str]:
    """Module-name prefixes of the decoder blocks, in order (e.g. ``model.layers.0``).

    The blocks are the children of the longest ``nn.ModuleList`` in the model.
    """
    from torch import nn

    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best[1])):
            best = (name, module)
    if best is None:
        return []
    prefix, blocks = best
    return [f"{prefix}.{i}" if prefix else str(i) for i in range(len(blocks))]


def _tied_to_embeddings(model: nn.Module) -> set[int]:
    """Storage pointers of the input embedding weights (linears tied to them stay unquantized)."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    if not callable(get_embeddings):
        return set()
    try:
        embeddings = get_embeddings()
    except (NotImplementedError, AttributeError):
        return set()
    weight = getattr(embeddings, "weight", None)
    return {weight.data_ptr()} if weight is not None else set()


def largest_divisor_at_most(n: int, wanted: int) -> int:
    """The largest divisor of ``n`` not above ``wanted`` (at least 1)."""
    for size in range(min(wanted, n), 0, -1):
        if n % size == 0:
            return size
    return 1


def group_size_hint(in_features: int, wanted: int) -> str:
    """A sentence suggesting group sizes that divide ``in_features``."""
    powers = [g for g in (256, 128, 64, 32, 16) if in_features % g == 0 and g <= wanted]
    if powers:
        return f"use a group size that divides {in_features}, such as {powers[0]}, or null (one scale per row)"
    return f"use a divisor of {in_features} such as {largest_divisor_at_most(in_features, wanted)}, or null (one scale per row)"


def plan_targets(model: nn.Module, recipe: QuantRecipe) -> TargetPlan:
    """Resolve ``recipe`` against ``model``'s linear layers.

    Raises:
        QuantizationError: a group size does not divide a layer's input width, or an override
            names a block the model does not have, or selects nothing.
    """
    if recipe.bits is None:
        raise QuantizationError(f"recipe {recipe.label} quantizes nothing (no bits)")
    blocks = decoder_blocks(model)
    tied = _tied_to_embeddings(model)
    from torch import nn

    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    plan = TargetPlan()

    override_of: dict[str, LayerQuant] = {}
    for index, override in enumerate(recipe.overrides):
        prefixes = []
        for block in override.blocks:
            if not -len(blocks) <= block < len(blocks):
                raise QuantizationError(
                    f"overrides[{index}].blocks: the model has {len(blocks)} decoder blocks "
                    f"(indices 0..{len(blocks) - 1} or -{len(blocks)}..-1), not {block}"
                )
            prefixes.append(blocks[block] + ".")
        selected = 0
        for name, _ in linears:
            in_block = any(name.startswith(p) for p in prefixes)
            by_name = any(matches(name, p) for p in override.modules)
            if (not override.blocks or in_block) and (not override.modules or by_name):
                override_of[name] = LayerQuant(override.bits, override.group_size or recipe.group_size)
                selected += 1
        if selected == 0:
            raise QuantizationError(
                f"overrides[{index}] selects no linear layer of this model; check blocks and modules"
            )

    for name, module in linears:
        kept = any(matches(name, p) for p in recipe.keep_full_precision)
        if kept or module.weight.data_ptr() in tied:
            plan.full_precision.append(name)
            continue
        quant = override_of.get(name, LayerQuant(recipe.bits, recipe.group_size))
        in_features = module.weight.shape[1]
        if quant.group_size is not None and in_features % quant.group_size != 0:
            raise QuantizationError(
                f"group_size {quant.group_size} does not divide in_features {in_features} of layer {name!r}; "
                + group_size_hint(in_features, quant.group_size)
            )
        plan.layers[name] = quant
    if not plan.layers:
        raise QuantizationError("the recipe leaves every linear layer in full precision; check keep_full_precision")
    return plan
