"""Where a variant comes from, the variant cache, and the load request the method table's loaders get.

Shared by the engine-specific variant loaders (:mod:`cluster.variants.hf`, :mod:`cluster.variants.vllm`),
which import this module and never each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.quantization.build import build_checkpoint
from cluster.quantization.digest import checkpoint_digest
from cluster.quantization.loading import LoadRequest
from cluster.quantization.recipes import QuantRecipe

#: Environment variable naming the variant cache (a folder or an fsspec URL).
VARIANT_CACHE_ENV = "QTRUST_VARIANT_CACHE"


@dataclass
class VariantSource:
    """Where a variant comes from and how it is built (plain data, from the worker config)."""

    model_path: Path
    recipe: QuantRecipe
    variant_key: str | None = None
    calibration_texts: list[str] | None = None
    variant_cache: str | None = None
    cache_dir: Path | None = None
    prequantized_path: Path | None = None
    describe: dict[str, Any] = field(default_factory=dict)


def variant_cache_of(source: VariantSource):  # -> VariantCache
    """The variant cache: the source's own, else ``$QTRUST_VARIANT_CACHE``, else ``<cache dir>/variants``."""
    from cluster.variants.cache import VariantCache

    root = source.variant_cache or os.environ.get(VARIANT_CACHE_ENV)
    if root:
        return VariantCache(root)
    return VariantCache.default(source.cache_dir)


def prepare_cached_variant(
    source: VariantSource, *, dtype: str, device: str, trust_remote_code: bool
) -> tuple[Path, dict[str, Any]]:
    """The cache folder of a cached variant (rtn, gptq, awq), building it first if needed; and its report."""
    if source.variant_key is None:
        raise ValueError("a cached variant needs its variant_key")
    recipe = source.recipe

    def build(out_dir: Path) -> dict[str, Any]:
        return build_checkpoint(
            source.model_path,
            recipe,
            out_dir,
            calibration_texts=source.calibration_texts,
            dtype=dtype,
            device=device,
            trust_remote_code=trust_remote_code,
        )

    cache = variant_cache_of(source)
    entry = cache.get_or_build(source.variant_key, build, label=recipe.label, describe=source.describe)
    if "weights_sha256" not in entry.meta:  # built before digests were recorded: record it now
        digest = checkpoint_digest(entry.path)
        if digest is not None:
            entry.meta = cache.annotate(entry.key, {"weights_sha256": digest, "weights_sha256_recorded": "at load"})
    report = {k: v for k, v in entry.meta.items() if not isinstance(v, (dict, list))}
    report["cache"] = "hit" if entry.hit else "built"
    report["cache_path"] = str(entry.path)
    return entry.path, report


def load_request(
    source: VariantSource, report: dict[str, Any], *, dtype: str, device: str, trust_remote_code: bool
) -> LoadRequest:
    """What the method's loader loads: the built cache folder for cached methods (its cache report
    is added to ``report``), else the model's own folder."""
    common = {"dtype": dtype, "device": device, "trust_remote_code": trust_remote_code}
    if source.recipe.quant_method.is_cached:
        path, cached = prepare_cached_variant(source, **common)
        report.update(cached)
        return LoadRequest(path, source.recipe, built=cached, **common)
    return LoadRequest(source.model_path, source.recipe, prequantized_path=source.prequantized_path, **common)


def inspect_prequantized(source: VariantSource):  # -> tuple[Path, PrequantizedInfo]
    """The folder of a prequantized variant and what it holds (bits checked against the recipe)."""
    from cluster.quantization.prequantized import inspect_for_recipe

    path = source.prequantized_path or source.model_path
    return path, inspect_for_recipe(path, source.recipe)
