"""Load one model variant: a checkpoint plus a quantization recipe, ready as an engine.

* ``none``: the checkpoint as it is.
* ``rtn`` / ``gptq`` / ``awq``: built once into the variant cache (see
  :mod:`cluster.variants.cache`), then loaded from there; packed compressed-tensors
  checkpoints are loaded with dense (dequantized) weights by the Hugging Face engine.
* ``bnb`` / ``hqq``: quantized while loading.
* ``prequantized``: an already quantized checkpoint, loaded as it is.

What each method does is in the method table (:mod:`cluster.quantization.methods`); the engine's
own variant loader (:mod:`cluster.variants.hf`, :mod:`cluster.variants.vllm`) follows it. Every
load records a quantization report (method, bits, storage, size, times, cache hit) and, unless
disabled, a perplexity probe on a fixed local text set, so broken variants show up before trust
numbers are read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from cluster.engines.hf import HFEngine
from cluster.variants.hf import load_hf_variant
from cluster.variants.source import (  # noqa: F401 - re-exported: older imports name this module
    VARIANT_CACHE_ENV,
    VariantSource,
    inspect_prequantized,
    prepare_cached_variant,
    variant_cache_of,
)
from cluster.variants.vllm import load_vllm_variant

log = logging.getLogger(__name__)

#: The variant loader of each engine that needs weights (see :data:`cluster.engines.kinds.ENGINE_KINDS`).
VARIANT_LOADERS: dict[str, Callable[..., tuple[Any, dict[str, Any]]]] = {
    "hf": load_hf_variant,
    "vllm": load_vllm_variant,
}


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
    loader = VARIANT_LOADERS.get(engine)
    if loader is None:
        raise ValueError(f"unknown engine {engine!r}; available: {', '.join(VARIANT_LOADERS)}")
    settings = {"hf": hf_settings, "vllm": vllm_settings}[engine]
    loaded, report = loader(source, settings=settings, num_gpus=num_gpus, **common)
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
