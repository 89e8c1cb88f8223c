"""Checks of a recipe against a model's shape, done before any model loads.

The shape comes from ``config.json``: the built-in models declare theirs, local folders are
read, and hub ids are read from the local hub cache when present (never downloaded here).
When the shape is unknown the same checks run again when the worker loads the model
(:func:`cluster.quantization.targets.plan_targets`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.models.builtin import BUILTIN_MODELS
from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.targets import group_size_hint


@dataclass(frozen=True)
class ModelShape:
    """The input widths of a decoder's linear layers and its number of blocks."""

    input_widths: dict[str, int]
    """What each width is (``hidden_size``, ``intermediate_size``, ...) → number of input features."""
    num_blocks: int | None


def shape_from_config(config: dict[str, Any]) -> ModelShape | None:
    """The shape of a decoder-only transformer from its ``config.json`` (None if it has no hidden size)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    hidden = text.get("hidden_size") or text.get("n_embd") or text.get("d_model")
    if not isinstance(hidden, int):
        return None
    widths = {"hidden_size": hidden}
    intermediate = text.get("intermediate_size") or text.get("n_inner") or text.get("ffn_dim")
    if isinstance(intermediate, int):
        widths["intermediate_size"] = intermediate
    heads = text.get("num_attention_heads")
    head_dim = text.get("head_dim")
    if isinstance(heads, int) and isinstance(head_dim, int) and heads * head_dim != hidden:
        widths["num_attention_heads × head_dim"] = heads * head_dim
    blocks = text.get("num_hidden_layers") or text.get("n_layer")
    return ModelShape(input_widths=widths, num_blocks=blocks if isinstance(blocks, int) else None)


def read_model_config(source: str, revision: str | None = None) -> dict[str, Any] | None:
    """``config.json`` of a model source without downloading anything (None when not available)."""
    if source in BUILTIN_MODELS:
        return dict(BUILTIN_MODELS[source].config) or None
    folder = Path(source).expanduser()
    try:
        candidate: Path | None = folder / "config.json" if folder.is_dir() else None
    except OSError:  # a name the filesystem refuses (too long, ...): the source check says so
        return None
    if candidate is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source, "config.json", revision=revision)
        except Exception:
            cached = None
        candidate = Path(cached) if isinstance(cached, str) else None
    if candidate is None or not candidate.is_file():
        return None
    try:
        return json.loads(candidate.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def recipe_shape_problems(recipe: QuantRecipe, shape: ModelShape) -> list[str]:
    """Why ``recipe`` cannot apply to a model of ``shape`` (empty when it can)."""
    method = recipe.quant_method
    if method.shape_check is not None:
        from cluster.quantization.methods import resolve

        return list(resolve(method.shape_check)(recipe, shape))
    if not method.layerwise:
        return []
    problems = []
    sizes = {recipe.group_size, *(o.group_size for o in recipe.overrides if o.group_size is not None)}
    for size in sorted(s for s in sizes if s is not None):
        for what, width in shape.input_widths.items():
            if width % size:
                problems.append(f"group_size {size} does not divide {what} {width}; {group_size_hint(width, size)}")
    if method.group_size_required and recipe.group_size is None:
        problems.append(f"{method.name} needs a group size; use group_size: 64")
    if shape.num_blocks is not None:
        for i, override in enumerate(recipe.overrides):
            for block in override.blocks:
                if not -shape.num_blocks <= block < shape.num_blocks:
                    problems.append(
                        f"overrides[{i}].blocks: the model has {shape.num_blocks} blocks "
                        f"(0..{shape.num_blocks - 1}, or -{shape.num_blocks}..-1), not {block}"
                    )
    return problems
