"""Load one model variant: a checkpoint plus a quantization recipe, ready as an engine.

* ``none``: the checkpoint as it is.
* ``rtn`` / ``gptq`` / ``awq``: built once into the variant cache (see
  :mod:`cluster.variants.cache`), then loaded from there; packed compressed-tensors
  checkpoints are loaded with dense (dequantized) weights by the Hugging Face engine.
* ``bnb`` / ``hqq``: quantized while loading.
* ``prequantized``: an already quantized checkpoint, loaded as it is.

Every load records a quantization report (method, bits, storage, size, times, cache hit) and,
unless disabled, a perplexity probe on a fixed local text set, so broken variants show up before
trust numbers are read.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.engines.hf import HFEngine
from cluster.engines.hf_settings import HFSettings
from cluster.quantization.build import build_checkpoint, folder_size_bytes
from cluster.quantization.recipes import QuantRecipe

log = logging.getLogger(__name__)


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


#: Environment variable naming the variant cache (a folder or an fsspec URL).
VARIANT_CACHE_ENV = "QTRUST_VARIANT_CACHE"


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
    """The cache folder of a rtn/gptq/awq variant, building it first if needed; and its report."""
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

    entry = variant_cache_of(source).get_or_build(
        source.variant_key, build, label=recipe.label, describe=source.describe
    )
    report = {k: v for k, v in entry.meta.items() if not isinstance(v, (dict, list))}
    report["cache"] = "hit" if entry.hit else "built"
    report["cache_path"] = str(entry.path)
    return entry.path, report


def _packed_kwargs(path: Path, device: str) -> dict[str, Any]:
    from cluster.quantization.prequantized import (
        inspect_checkpoint,
        prequantized_model_kwargs,
    )

    return prequantized_model_kwargs(inspect_checkpoint(path), path, device=device)


def load_variant(
    source: VariantSource,
    *,
    engine: str = "hf",
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    num_threads: int | None = None,
    quality_probe: bool = True,
    vllm_settings: Any = None,
    num_gpus: float = 0.0,
    hf_settings: Any = None,
) -> Any:
    """Build (if needed) and load the variant as an engine (``hf``: :class:`HFEngine`, ``vllm``: ``VLLMEngine``).

    The engine's ``describe()`` carries the recipe (``recipe_*``); ``engine.quantization`` holds
    the quantization report (method, storage, size, times, cache hit, probe perplexity).
    """
    recipe = source.recipe
    started = time.perf_counter()
    common = {"dtype": dtype, "device": device, "trust_remote_code": trust_remote_code, "num_threads": num_threads}
    if engine == "vllm":
        from cluster.variants.vllm import load_vllm_variant

        loaded, report = load_vllm_variant(source, settings=vllm_settings, num_gpus=num_gpus, **common)
    elif engine == "hf":
        loaded, report = _load_hf_variant(source, **common)
        loaded.configure(HFSettings.model_validate(hf_settings or {}))
    else:
        raise ValueError(f"unknown engine {engine!r}; available: hf, vllm")
    report["engine"] = engine
    report["load_s"] = f"{time.perf_counter() - started:.2f}"
    if quality_probe:
        probe = _probe(loaded)
        report["probe_perplexity"] = probe["perplexity"]
        report["probe_tokens"] = probe["tokens"]
    loaded.quantization = report
    extra = {f"recipe_{key}": value for key, value in recipe.describe().items()}
    loaded.extra_description.update(extra)
    loaded.extra_description["load_s"] = report["load_s"]
    log.info("loaded variant %s on %s from %s in %s s", recipe.label, engine, source.model_path, report["load_s"])
    return loaded


def _probe(engine: Any) -> dict[str, float]:
    """The perplexity probe through whichever engine holds the variant."""
    from cluster.quantization.probe import (
        perplexity_from,
        probe_perplexity,
        probe_token_ids,
    )

    if isinstance(engine, HFEngine):
        return probe_perplexity(engine.model, engine.tokenizer)
    return perplexity_from(engine.text_nll, probe_token_ids(engine.tokenizer))


def _load_hf_variant(
    source: VariantSource, *, dtype: str, device: str, trust_remote_code: bool, num_threads: int | None
) -> tuple[HFEngine, dict[str, Any]]:
    """The variant as an :class:`HFEngine`, and its quantization report."""
    recipe = source.recipe
    common = {"dtype": dtype, "device": device, "trust_remote_code": trust_remote_code, "num_threads": num_threads}
    report: dict[str, Any] = {"method": recipe.method, "storage": recipe.resolved_storage}
    if recipe.method == "none":
        engine = HFEngine.from_pretrained(source.model_path, **common)
        report["size_bytes"] = folder_size_bytes(source.model_path)
    elif recipe.is_cached:
        path, cached = prepare_cached_variant(source, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        report.update(cached)
        kwargs = _packed_kwargs(path, device) if cached.get("storage") == "packed" else {}
        engine = HFEngine.from_pretrained(path, model_kwargs=kwargs, **common)
    elif recipe.method == "bnb":
        from transformers import AutoTokenizer

        from cluster.quantization.loadtime import load_bnb

        model, details = load_bnb(source.model_path, recipe, dtype=dtype, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(str(source.model_path), trust_remote_code=trust_remote_code)
        engine = HFEngine(model, tokenizer, device=str(model.device), num_threads=num_threads)
        report.update(details)
        report["size_bytes"] = int(model.get_memory_footprint())
        report["size_kind"] = "memory footprint"
    elif recipe.method == "hqq":
        from cluster.quantization.loadtime import apply_hqq

        engine = HFEngine.from_pretrained(source.model_path, **common)
        report.update(apply_hqq(engine.model, recipe, device=device))
        report["size_bytes"] = int(engine.model.get_memory_footprint())
        report["size_kind"] = "memory footprint"
    elif recipe.method == "prequantized":
        from cluster.quantization.prequantized import prequantized_model_kwargs

        path, info = inspect_prequantized(source)
        kwargs = prequantized_model_kwargs(info, path, device=device)
        engine = HFEngine.from_pretrained(path, model_kwargs=kwargs, **common)
        report.update({f"checkpoint_{k}": v for k, v in info.describe().items()})
        report["size_bytes"] = folder_size_bytes(path)
    else:  # pragma: no cover - QuantRecipe validation forbids it
        raise ValueError(f"unknown quantization method {recipe.method!r}")
    return engine, report


def inspect_prequantized(source: VariantSource):  # -> tuple[Path, PrequantizedInfo]
    """The folder of a prequantized variant and what it holds (bits checked against the recipe)."""
    from cluster.quantization.prequantized import inspect_checkpoint

    recipe = source.recipe
    path = source.prequantized_path or source.model_path
    info = inspect_checkpoint(path)
    if recipe.bits is not None and info.bits is not None and recipe.bits != info.bits:
        raise ValueError(f"recipe says {recipe.bits} bits but the checkpoint at {path} holds {info.bits}-bit weights")
    return path, info
