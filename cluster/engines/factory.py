"""Build the engine a worker config asks for (plain data in, loaded engine out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cluster.engines.base import Engine
from cluster.quantization.recipes import QuantRecipe


def pick_device() -> str:
    """``cuda`` when the worker sees a GPU (Ray sets ``CUDA_VISIBLE_DEVICES`` per bundle), else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_engine(config: dict[str, Any], *, cache_dir: Path | None = None, num_threads: int | None = None) -> Engine:
    """Load the variant described by ``config`` (see ``jobs.plan.build.Variant.worker_config``)."""
    recipe = QuantRecipe.model_validate(config["recipe"])
    options = dict(config.get("engine_options") or {})
    if config["engine"] == "fake":
        from cluster.engines.fake import FakeEngine

        seed = json.dumps([config["source"], config["recipe"]], sort_keys=True)
        if "fail_items" in options:
            options["fail_items"] = set(options["fail_items"])
        return FakeEngine(seed, **options)
    if config["engine"] not in ("hf", "vllm"):
        raise ValueError(f"unknown engine {config['engine']!r}; available: hf, vllm, fake")
    from cluster.models.sources import resolve_model_path
    from cluster.variants.load import VariantSource, load_variant

    prequantized_path = None
    if recipe.method == "prequantized" and recipe.source:
        prequantized_path = resolve_model_path(recipe.source, cache_dir=cache_dir, revision=recipe.revision)
        model_path = prequantized_path
    else:
        model_path = resolve_model_path(config["source"], cache_dir=cache_dir, revision=config.get("revision"))
    source = VariantSource(
        model_path=model_path,
        recipe=recipe,
        variant_key=config.get("variant_key"),
        calibration_texts=config.get("calibration_texts"),
        variant_cache=config.get("variant_cache"),
        cache_dir=cache_dir,
        prequantized_path=prequantized_path,
        describe={"variant": config.get("variant"), "model": config["source"], "recipe": recipe.describe()},
    )
    return load_variant(
        source,
        engine=config["engine"],
        vllm_settings=config.get("vllm"),
        hf_settings=config.get("hf"),
        num_gpus=float(config.get("num_gpus") or 0.0),
        dtype=config.get("dtype", "float32"),
        device=pick_device(),
        trust_remote_code=bool(config.get("trust_remote_code", False)),
        num_threads=num_threads,
        quality_probe=bool(config.get("quality_probe", True)),
    )
