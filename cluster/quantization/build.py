"""Build the checkpoint of a cached variant (rtn, gptq, awq) into a folder.

Runs where the variant runs (its worker, or a Ray task with the worker's resources from
``qtrust quantize``), on the GPU when the worker has one; the variant cache calls it at most once
per key. :func:`load_built` and :func:`built_vllm_weights` are the cached methods' loaders in
the method table (:mod:`cluster.quantization.methods`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from cluster.quantization.digest import checkpoint_digest
from cluster.quantization.loading import (  # noqa: F401 - folder_size_bytes re-exported for older imports
    LoadRequest,
    TransformersLoader,
    VLLMWeights,
    folder_size_bytes,
)
from cluster.quantization.methods import resolve
from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.targets import plan_targets

log = logging.getLogger(__name__)


def build_checkpoint(
    model_path: Path,
    recipe: QuantRecipe,
    out_dir: Path,
    *,
    calibration_texts: list[str] | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Quantize the model at ``model_path`` with ``recipe`` and save it (with its tokenizer) in ``out_dir``.

    The method's ``build`` function (see :mod:`cluster.quantization.methods`) quantizes the loaded
    model and saves it: qtrust's RTN writes dense dequantized weights ("simulated"); GPTQ, AWQ and
    packed RTN go through llm-compressor (packed compressed-tensors at 4/8 bits, dense dequantized
    otherwise). Returns the report fields kept in the cache entry, with ``weights_sha256``: the
    digest of the tensors written (:func:`cluster.quantization.digest.checkpoint_digest`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster.models.dtype import parse_dtype

    if recipe.quant_method.build is None:
        raise ValueError(f"method {recipe.method!r} is not built into the variant cache")
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_path), dtype=parse_dtype(dtype), trust_remote_code=trust_remote_code
    )
    model.to(device)
    model.eval()
    # Methods that are not layerwise (aqlm, quip_sharp, quik) have no group size of qtrust's kind.
    plan = plan_targets(
        model, recipe if recipe.quant_method.layerwise else recipe.model_copy(update={"group_size": None})
    )
    loaded_s = time.perf_counter() - started
    report: dict[str, Any] = {"device": device, "dtype": dtype}
    quantize = resolve(recipe.quant_method.build)
    report.update(quantize(model, tokenizer, recipe, plan, calibration_texts, out_dir))
    digest = checkpoint_digest(out_dir)
    if digest is not None:  # the weights this build wrote (see cluster.quantization.digest)
        report["weights_sha256"] = digest
    report["load_base_s"] = f"{loaded_s:.3f}"
    report["build_s"] = f"{time.perf_counter() - started:.3f}"
    log.info("built %s in %s s (%s)", recipe.label, report["build_s"], report.get("storage"))
    return report


# ------------------------------------------------------------------------ cached methods


def _built_packed(request: LoadRequest) -> bool:
    return (request.built or {}).get("storage") == "packed"


def load_built(request: LoadRequest, hf: TransformersLoader) -> tuple[Any, dict[str, Any]]:
    """rtn / gptq / awq: the checkpoint built into the variant cache (packed ones dequantized on CPU)."""
    kwargs: dict[str, Any] = {}
    if _built_packed(request):
        from cluster.quantization.prequantized import inspect_checkpoint, prequantized_model_kwargs

        kwargs = prequantized_model_kwargs(inspect_checkpoint(request.path), request.path, device=request.device)
    return hf.from_pretrained(request.path, kwargs), {}


def built_vllm_weights(request: LoadRequest) -> VLLMWeights:
    """rtn / gptq / awq: simulated checkpoints are dense; packed ones need WNA16 kernels or a dense copy."""
    return VLLMWeights(request.path, packed=_built_packed(request))
