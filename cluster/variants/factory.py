"""Build the engine a worker config asks for (plain data in, loaded engine out).

The engine comes from the engine table (:mod:`cluster.engines.kinds`): engines that need no
weights (``fake``) are built from the config alone; the others load the variant through
:func:`cluster.variants.load.load_variant`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.engines.base import Engine
from cluster.engines.device import pick_device
from cluster.engines.kinds import engine_kind
from cluster.quantization.recipes import QuantRecipe
from cluster.variants.source import VariantSource


def build_engine(config: dict[str, Any], *, cache_dir: Path | None = None, num_threads: int | None = None) -> Engine:
    """Load the variant described by ``config`` (see ``jobs.plan.build.Variant.worker_config``)."""
    kind = engine_kind(config["engine"])
    if not kind.needs_weights:
        return kind.load(config)
    from cluster.variants.load import load_variant  # transformers and torch: in the worker only

    source = variant_source(config, cache_dir=cache_dir)
    return load_variant(
        source,
        engine=kind.name,
        vllm_settings=config.get("vllm"),
        hf_settings=config.get("hf"),
        num_gpus=float(config.get("num_gpus") or 0.0),
        dtype=config.get("dtype", "float32"),
        device=pick_device(),
        trust_remote_code=bool(config.get("trust_remote_code", False)),
        num_threads=num_threads,
        quality_probe=bool(config.get("quality_probe", True)),
    )


def variant_source(config: dict[str, Any], *, cache_dir: Path | None = None) -> VariantSource:
    """Where the variant of a worker config comes from (the model folder is resolved, fetched if needed)."""
    from cluster.models.sources import resolve_model_path

    recipe = QuantRecipe.model_validate(config["recipe"])
    prequantized_path = None
    checkpoint = recipe.checkpoint_source
    if checkpoint:
        prequantized_path = resolve_model_path(checkpoint, cache_dir=cache_dir, revision=recipe.revision)
        model_path = prequantized_path
    else:
        model_path = resolve_model_path(config["source"], cache_dir=cache_dir, revision=config.get("revision"))
    return VariantSource(
        model_path=model_path,
        recipe=recipe,
        variant_key=config.get("variant_key"),
        calibration_texts=config.get("calibration_texts"),
        variant_cache=config.get("variant_cache"),
        cache_dir=cache_dir,
        prequantized_path=prequantized_path,
        describe={"variant": config.get("variant"), "model": config["source"], "recipe": recipe.describe()},
    )
