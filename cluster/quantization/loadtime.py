"""Methods that quantize while the model loads: bitsandbytes and hqq.

Nothing is written to the variant cache for these methods: every load quantizes again.

* :func:`load_bnb` loads a checkpoint through transformers' ``BitsAndBytesConfig`` (``int8`` →
  ``Linear8bitLt``, ``nf4``/``fp4`` → ``Linear4bit``). bitsandbytes has a CPU backend, so this
  also runs without a GPU.
* :func:`apply_hqq` replaces the linear layers of an already loaded model with hqq's
  ``HQQLinear``, one layer at a time, following :func:`~cluster.quantization.targets.plan_targets`
  so that ``keep_full_precision`` and mixed-precision ``overrides`` work as for the other
  methods. (transformers' own ``HqqConfig`` path is not used: it is broken in transformers 5.)

Both return a flat ``dict[str, str]`` for run records. :func:`load_bnb_variant` and
:func:`load_hqq_variant` are the methods' Transformers loaders in the method table
(:mod:`cluster.quantization.methods`).
"""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cluster.quantization.loading import LoadRequest, TransformersLoader
from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.targets import (
    QuantizationError,
    TargetPlan,
    matches,
    plan_targets,
)

#: What to install when bitsandbytes is missing.
BNB_INSTALL_HINT = "pip install 'qtrust[quant]'"
#: Load-time alternatives that work where bitsandbytes does not.
BNB_ALTERNATIVE = "or use method hqq or gptq on this platform"


# ----------------------------------------------------------------------------- shared helpers


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (a dotted path) by ``module``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The floating-point dtype of the model's parameters (float32 when there are none)."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


# ------------------------------------------------------------------------------ bitsandbytes


def check_bnb_available(device: str | None = None) -> str | None:
    """Return None when bitsandbytes imports and has a backend for ``device``, else a fix.

    ``device`` defaults to this machine's device (``cuda`` when torch sees a GPU, else ``cpu``).
    The message names what to do: install the extra, or use another method.
    """
    device_type = torch.device(device or _default_device()).type
    try:
        import bitsandbytes
        from bitsandbytes import cextension
    except ImportError as exc:
        return f"bitsandbytes is not installed ({exc}); {BNB_INSTALL_HINT}, {BNB_ALTERNATIVE}"
    except Exception as exc:
        return f"bitsandbytes failed to import ({type(exc).__name__}: {exc}); {BNB_ALTERNATIVE}"
    supported = set(getattr(bitsandbytes, "supported_torch_devices", {"cuda"}))
    if device_type not in supported:
        return (
            f"bitsandbytes {bitsandbytes.__version__} has no backend for device {device_type!r} "
            f"(it supports {sorted(supported)}); {BNB_ALTERNATIVE}"
        )
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return f"bitsandbytes was asked for cuda but torch sees no GPU; {BNB_ALTERNATIVE}"
        if isinstance(getattr(cextension, "lib", None), cextension.ErrorHandlerMockBNBNativeLibrary):
            return (
                f"bitsandbytes {bitsandbytes.__version__} found no native library for this GPU/CUDA "
                f"version; reinstall it ({BNB_INSTALL_HINT}) {BNB_ALTERNATIVE}"
            )
    return None


def _bnb_config(recipe: QuantRecipe, dtype: torch.dtype, skip: list[str]) -> Any:
    """The transformers ``BitsAndBytesConfig`` for a bnb recipe."""
    from transformers import BitsAndBytesConfig

    if recipe.bnb_type == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=recipe.bnb_type,
        bnb_4bit_compute_dtype=dtype,
        llm_int8_skip_modules=skip,
    )


def bnb_skip_modules(path: Path, recipe: QuantRecipe, *, trust_remote_code: bool = False) -> list[str]:
    """Full names of the linear layers bnb must leave alone, resolved on an empty (meta) model.

    These are the linears matching ``recipe.keep_full_precision`` (any pattern form, ``re:``
    included) plus the output head when it is tied to the input embeddings. Passing exact names
    keeps transformers' own, looser substring matching from skipping more than asked.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    head = skeleton.get_output_embeddings()
    tied = bool(getattr(config.get_text_config(), "tie_word_embeddings", False))
    skip = []
    for name, module in skeleton.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if any(matches(name, p) for p in recipe.keep_full_precision) or (tied and module is head):
            skip.append(name)
    return skip


def _bnb_report(model: nn.Module, recipe: QuantRecipe, seconds: float) -> dict[str, str]:
    """Count the bnb layers and the linears left in full precision after loading."""
    import bitsandbytes as bnb

    quantized, kept = 0, []
    for name, module in model.named_modules():
        if isinstance(module, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)):
            quantized += 1
        elif isinstance(module, nn.Linear):
            kept.append(name)
    return {
        "layers_quantized": str(quantized),
        "layers_full_precision": ",".join(kept) or "-",
        "bits_per_layer": f"{recipe.bits}:{quantized}",
        "quantize_s": f"{seconds:.3f}",
        "backend": f"bitsandbytes {_package_version('bitsandbytes')}",
        "bnb_type": str(recipe.bnb_type),
    }


def load_bnb(
    path: Path,
    recipe: QuantRecipe,
    *,
    dtype: str,
    trust_remote_code: bool,
    device: str = "cpu",
) -> tuple[Any, dict[str, str]]:
    """Load the checkpoint at ``path`` quantized by bitsandbytes as ``recipe`` says.

    Returns the model (on ``device``) and a run-record description.

    Raises:
        QuantizationError: the recipe is not a bnb recipe, bitsandbytes is missing or has no
            backend for ``device``, or loading with bitsandbytes failed. The message names the
            recipe and an alternative method.
    """
    from transformers import AutoModelForCausalLM

    from cluster.models.dtype import parse_dtype

    if recipe.bnb_type is None:  # only bnb recipes have one
        raise QuantizationError(f"load_bnb needs a bnb recipe, got {recipe.label}")
    problem = check_bnb_available(device)
    if problem:
        raise QuantizationError(f"recipe {recipe.label}: {problem}")
    torch_dtype = parse_dtype(dtype)
    skip = bnb_skip_modules(path, recipe, trust_remote_code=trust_remote_code)
    device_map = "cpu" if torch.device(device).type == "cpu" else {"": device}
    started = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            quantization_config=_bnb_config(recipe, torch_dtype, skip),
            device_map=device_map,
        )
    except (ImportError, RuntimeError, NotImplementedError) as exc:
        raise QuantizationError(
            f"recipe {recipe.label}: bitsandbytes could not quantize the model on {device} "
            f"({type(exc).__name__}: {exc}); {BNB_ALTERNATIVE}"
        ) from exc
    model.eval()
    return model, _bnb_report(model, recipe, time.perf_counter() - started)


# ------------------------------------------------------------------------------------- hqq


def _check_hqq_plan(plan: TargetPlan, recipe: QuantRecipe) -> None:
    """Reject group sizes and bit widths hqq cannot use, before any layer is changed."""
    from hqq.core.quantize import Quantizer

    supported = {b for b in Quantizer.SUPPORTED_BITS if isinstance(b, int) and b >= 2}
    for name, quant in plan.layers.items():
        if quant.group_size is None:
            raise QuantizationError(
                f"recipe {recipe.label}: hqq needs a group size (layer {name!r} has none); "
                "set group_size: 64 (or another multiple of 8 that divides the layer widths)"
            )
        if quant.group_size % 8 != 0:
            raise QuantizationError(
                f"recipe {recipe.label}: hqq group sizes must be multiples of 8 (layer {name!r} has "
                f"{quant.group_size}); use group_size 64 or 32"
            )
        if quant.bits not in supported:
            raise QuantizationError(
                f"recipe {recipe.label}: hqq cannot quantize layer {name!r} to {quant.bits} bits "
                f"(supported: {sorted(supported)})"
            )


def apply_hqq(model: nn.Module, recipe: QuantRecipe, *, device: str) -> dict[str, str]:
    """Quantize ``model``'s linear layers with hqq in place, layer by layer.

    Each layer of ``plan_targets(model, recipe)`` becomes an ``HQQLinear`` with its own bits and
    group size (axis 1, hqq's zero-point quantizer; ``recipe.symmetric`` does not apply). Layers
    kept in full precision, and heads tied to the input embeddings, stay ``nn.Linear``. The
    compute dtype is the model's dtype.

    Returns a run-record description.

    Raises:
        QuantizationError: the recipe is not hqq, a group size is missing or not a multiple of
            8, a bit width is unsupported, or ``plan_targets`` rejects the recipe. Nothing is
            changed in that case.
    """
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    if recipe.method != "hqq":  # this module's own method
        raise QuantizationError(f"apply_hqq needs an hqq recipe, got {recipe.label}")
    plan = plan_targets(model, recipe)
    _check_hqq_plan(plan, recipe)
    compute_dtype = _model_dtype(model)
    started = time.perf_counter()
    for name, quant in plan.layers.items():
        linear = model.get_submodule(name)
        config = BaseQuantizeConfig(nbits=quant.bits, group_size=quant.group_size, axis=1)
        layer = HQQLinear(linear, quant_config=config, compute_dtype=compute_dtype, device=device)
        _set_submodule(model, name, layer)
    seconds = time.perf_counter() - started
    info = plan.describe()
    info.update(
        {
            "quantize_s": f"{seconds:.3f}",
            "backend": f"hqq {_package_version('hqq')}",
            "group_size": str(recipe.group_size),
        }
    )
    return info


# --------------------------------------------------------------------- method table loaders


def load_bnb_variant(request: LoadRequest, hf: TransformersLoader) -> tuple[Any, dict[str, Any]]:
    """``bnb``: load the checkpoint quantized by bitsandbytes, as an engine; and its report."""
    from transformers import AutoTokenizer

    model, details = load_bnb(
        request.path, request.recipe, dtype=request.dtype, trust_remote_code=request.trust_remote_code
    )
    tokenizer = AutoTokenizer.from_pretrained(str(request.path), trust_remote_code=request.trust_remote_code)
    engine = hf.wrap(model, tokenizer, str(model.device))
    report: dict[str, Any] = dict(details)
    report["size_bytes"] = int(model.get_memory_footprint())
    report["size_kind"] = "memory footprint"
    return engine, report


def load_hqq_variant(request: LoadRequest, hf: TransformersLoader) -> tuple[Any, dict[str, Any]]:
    """``hqq``: load the checkpoint, then replace its linear layers with hqq's; and the report."""
    engine = hf.from_pretrained(request.path)
    report: dict[str, Any] = dict(apply_hqq(engine.model, request.recipe, device=request.device))
    report["size_bytes"] = int(engine.model.get_memory_footprint())
    report["size_kind"] = "memory footprint"
    return engine, report
