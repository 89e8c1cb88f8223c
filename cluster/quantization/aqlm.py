"""AQLM: additive quantization of the linear layers, written in the ``aqlm`` package's checkpoint format.

Egiazarian et al., "Extreme Compression of Large Language Models via Additive Quantization" (ICML
2024). Each linear layer's weight is cut into groups of ``out_group_size × in_group_size`` weights;
a group is stored as ``num_codebooks`` codes of ``nbits_per_codebook`` bits, indices into that
many learned codebooks whose vectors add up to the group, times one scale per output row (unit of
``out_group_size`` rows). At ``num_codebooks × nbits_per_codebook / (in_group_size ×
out_group_size)`` bits per weight the codebooks are fitted to each layer's output error on the
calibration text (:mod:`cluster.quantization.aqlm_search` holds the search), block after block,
each block fitted to the inputs its already quantized predecessors produce.

The checkpoint holds the ``aqlm`` package's ``QuantizedLinear`` tensors (``codes``,
``codebooks``, ``scales``) and a ``quantization_config`` with ``quant_method: aqlm``, so
Transformers loads it (``AutoModelForCausalLM.from_pretrained``) when ``aqlm`` is installed:
``pip install 'aqlm[cpu]'`` (a numba kernel for codebooks of 256 vectors and ``out_group_size``
1, float32 only; other shapes are dequantized per call) or ``aqlm[gpu]`` (CUDA kernels). vLLM
does not serve AQLM. Published AQLM checkpoints load with ``method: prequantized``.

This module imports neither torch nor aqlm at its top level: recipe validation reads
:class:`AqlmParams`, :func:`check_recipe` and :func:`shape_problems`.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from cluster.quantization.loading import folder_size_bytes
from cluster.quantization.targets import QuantizationError

if TYPE_CHECKING:
    from torch import nn

    from cluster.quantization.aqlm_search import AqLayer, AqSettings
    from cluster.quantization.checks import ModelShape
    from cluster.quantization.loading import LoadRequest, TransformersLoader
    from cluster.quantization.recipes import QuantRecipe
    from cluster.quantization.targets import TargetPlan

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'aqlm[cpu]' (or 'aqlm[gpu]' on CUDA)"
#: Codebook sizes tried when a recipe's combination does not work (for the message).
_NBITS_CHOICES = (8, 16, 12, 10, 6, 4)


class AqlmParams(BaseModel):
    """The ``params`` of method ``aqlm`` (see the module docstring and :mod:`cluster.quantization.aqlm_search`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_codebooks: int | None = Field(
        None, ge=1, le=16, description="codebooks per group; null: bits · in_group_size · out_group_size / nbits"
    )
    nbits_per_codebook: int = Field(8, ge=4, le=16, description="bits per code (codebooks of 2^nbits vectors)")
    in_group_size: int = Field(8, ge=1, le=64, description="input features per group")
    out_group_size: int = Field(1, ge=1, le=16, description="output rows per group (and per scale)")
    beam_size: int = Field(1, ge=1, le=64, description="code tuples kept per group by the beam search")
    rounds: int = Field(3, ge=0, le=50, description="code search + codebook and scale refits")
    kmeans_iters: int = Field(6, ge=0, le=100, description="Lloyd iterations of the codebook initialisation")
    seed: int = Field(0, ge=0, description="seed of the k-means initialisation")


# ------------------------------------------------------------------------------ recipe checks


def _params(recipe: QuantRecipe) -> AqlmParams:
    return AqlmParams.model_validate(recipe.params or {})


def num_codebooks(recipe: QuantRecipe) -> int | None:
    """The recipe's codebooks per group (derived from ``bits`` when not given; None when impossible)."""
    p = _params(recipe)
    if p.num_codebooks is not None:
        return p.num_codebooks
    total = (recipe.bits or 0) * p.in_group_size * p.out_group_size
    return total // p.nbits_per_codebook if total and total % p.nbits_per_codebook == 0 else None


def _what_works(bits: int, p: AqlmParams) -> str:
    """Settings that reach ``bits`` per weight, for messages."""
    area = p.in_group_size * p.out_group_size
    options = [
        f"nbits_per_codebook {n} ({bits * area // n}x{n})"
        for n in _NBITS_CHOICES
        if (bits * area) % n == 0 and bits * area // n <= 16
    ][:2]
    options += [
        f"in_group_size {g} ({bits * g * p.out_group_size // p.nbits_per_codebook}x{p.nbits_per_codebook})"
        for g in (8, 16, 32)
        if g != p.in_group_size and (bits * g * p.out_group_size) % p.nbits_per_codebook == 0
    ][:1]
    return " or ".join(options) if options else "nbits_per_codebook 8 with in_group_size 8"


def check_recipe(recipe: QuantRecipe) -> str | None:
    """Why the recipe's bits and params do not fit together (one line), or None."""
    p = _params(recipe)
    bits = recipe.bits
    if bits is None:
        return None
    area = p.in_group_size * p.out_group_size
    shape = f"{p.out_group_size}x{p.in_group_size} groups"
    if p.num_codebooks is None:
        if (bits * area) % p.nbits_per_codebook:
            return (
                f"aqlm at {bits} bits per weight with {p.nbits_per_codebook}-bit codebooks and {shape} needs "
                f"{bits * area / p.nbits_per_codebook:g} codebooks; use {_what_works(bits, p)}"
            )
        if bits * area // p.nbits_per_codebook > 16:
            return f"aqlm at {bits} bits with {shape} needs more than 16 codebooks; use a smaller in_group_size"
        return None
    per_weight = p.num_codebooks * p.nbits_per_codebook / area
    if per_weight != bits:
        return (
            f"aqlm params give {p.num_codebooks}x{p.nbits_per_codebook} codebooks over {shape} = {per_weight:g} bits "
            f"per weight, but bits is {bits}; drop num_codebooks (it is derived from bits) or change bits"
        )
    return None


def shape_problems(recipe: QuantRecipe, shape: ModelShape) -> list[str]:
    """Group sizes that do not divide the model's layer widths."""
    p = _params(recipe)
    problems = []
    for what, width in shape.input_widths.items():
        if width % p.in_group_size:
            problems.append(f"aqlm in_group_size {p.in_group_size} does not divide {what} {width}; use 8 or 16")
        if width % p.out_group_size:
            problems.append(
                f"aqlm out_group_size {p.out_group_size} does not divide {what} {width} (an output width); use 1"
            )
    return problems


def recipe_label(recipe: QuantRecipe) -> str:
    """``aqlm-w2-2x8`` (``-g16``, ``-o2`` when the group shape is not 1x8)."""
    p = _params(recipe)
    label = f"aqlm-w{recipe.bits}-{num_codebooks(recipe)}x{p.nbits_per_codebook}"
    if p.in_group_size != 8:
        label += f"-g{p.in_group_size}"
    if p.out_group_size != 1:
        label += f"-o{p.out_group_size}"
    return label


def settings_for(recipe: QuantRecipe) -> AqSettings:
    """The search settings of ``recipe``."""
    from cluster.quantization.aqlm_search import AqSettings

    p = _params(recipe)
    count = num_codebooks(recipe)
    if count is None:
        raise QuantizationError(check_recipe(recipe) or "aqlm: cannot derive num_codebooks")
    return AqSettings(
        num_codebooks=count,
        nbits=p.nbits_per_codebook,
        in_group_size=p.in_group_size,
        out_group_size=p.out_group_size,
        beam_size=p.beam_size,
        rounds=p.rounds,
        kmeans_iters=p.kmeans_iters,
        seed=p.seed,
    )


# ------------------------------------------------------------------------------ build


def _check_layers(model: nn.Module, names: list[str], settings: AqSettings) -> None:
    for name in names:
        weight = model.get_submodule(name).weight
        out_features, in_features = weight.shape
        if in_features % settings.in_group_size or out_features % settings.out_group_size:
            raise QuantizationError(
                f"aqlm groups of {settings.out_group_size}x{settings.in_group_size} do not tile layer {name!r} "
                f"({out_features}x{in_features}); use in_group_size 8 and out_group_size 1"
            )


def _outside_hessians(model: nn.Module, input_ids: list[Any], names: list[str]) -> dict[str, Any]:
    """``H`` of layers outside the decoder blocks (e.g. an untied head), from one pass of the model."""
    import torch

    from cluster.quantization.layer_inputs import HessianHooks

    device = next(model.parameters()).device
    with HessianHooks(model, names) as hooks, torch.no_grad():
        for ids in input_ids:
            model(input_ids=ids.to(device), use_cache=False)
    return hooks.hessians()


def quantize_aqlm(
    model: nn.Module,
    tokenizer: Any,
    recipe: QuantRecipe,
    plan: TargetPlan,
    calibration_texts: list[str] | None,
    out_dir: Path,
) -> dict[str, str]:
    """The ``build`` of method ``aqlm``: fit every layer of ``plan`` and save the aqlm checkpoint in ``out_dir``.

    Afterwards ``model``'s linear layers hold the dequantized weights (the checkpoint's values).

    Raises:
        ValueError: no calibration text.
        QuantizationError: the groups do not tile a layer.
    """
    import torch

    from cluster.quantization.aqlm_search import fit_layer
    from cluster.quantization.layer_inputs import calibration_ids, sequential_hessians

    input_ids = calibration_ids("aqlm", tokenizer, calibration_texts, recipe)
    settings = settings_for(recipe)
    names = list(plan.layers)
    _check_layers(model, names, settings)
    started = time.perf_counter()
    layers: dict[str, AqLayer] = {}
    errors: dict[str, float] = {}

    def fit(name: str, hessian: torch.Tensor) -> None:
        module = model.get_submodule(name)
        layer, errors[name] = fit_layer(module.weight.data, hessian, settings)
        module.weight.data.copy_(layer.dequantize().to(module.weight.dtype))
        layers[name] = layer

    with torch.no_grad():
        for prefix, hessians in sequential_hessians(model, input_ids, names):
            for name in sorted(hessians):
                fit(name, hessians[name])
            log.info("aqlm: %s quantized (%d/%d layers)", prefix, len(layers), len(names))
            del hessians
        rest = [name for name in names if name not in layers]
        if rest:
            for name, hessian in _outside_hessians(model, input_ids, rest).items():
                fit(name, hessian)
    quantize_s = time.perf_counter() - started

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu")
    bits = save_checkpoint(model, layers, settings, out_dir)
    tokenizer.save_pretrained(str(out_dir))
    report = plan.describe()
    report.update(
        {
            "storage": "packed",
            "backend": "qtrust aqlm",
            "quantize_s": f"{quantize_s:.3f}",
            "calibration_samples": str(len(input_ids)),
            "bits_per_weight": f"{bits:.4f}",
            "codebooks": f"{settings.num_codebooks}x{settings.nbits}",
            "group": f"{settings.out_group_size}x{settings.in_group_size}",
            "mean_relative_output_error": f"{sum(errors.values()) / len(errors):.6g}",
        }
    )
    return report


def pack_codes(codes: Any, nbits: int) -> Any:
    """Codes ``0..2^nbits−1`` as the aqlm package stores them: signed ints of the smallest width."""
    import torch

    dtype = torch.int8 if nbits <= 8 else torch.int16
    shifted = torch.where(codes >= 2 ** (nbits - 1), codes - 2**nbits, codes)
    return shifted.to(dtype)


def quantization_config(settings: AqSettings, keep: list[str]) -> dict[str, Any]:
    """The ``quantization_config`` of ``config.json``.

    ``linear_weights_not_to_quantize`` lists the module names (what Transformers 5 matches) and
    the same names with ``.weight`` (what Transformers 4 and the aqlm package's own checkpoints use).
    """
    return {
        "quant_method": "aqlm",
        "in_group_size": settings.in_group_size,
        "out_group_size": settings.out_group_size,
        "num_codebooks": settings.num_codebooks,
        "nbits_per_codebook": settings.nbits,
        "linear_weights_not_to_quantize": [*keep, *(f"{name}.weight" for name in keep)],
    }


def save_checkpoint(model: nn.Module, layers: dict[str, AqLayer], settings: AqSettings, out_dir: Path) -> float:
    """Save ``model`` with ``layers`` as aqlm ``QuantizedLinear`` modules; return the real bits per weight.

    The model is put back as it was (dense linear layers) afterwards.
    """
    from torch import nn

    try:
        from aqlm import QuantizedLinear
    except ImportError as exc:
        raise QuantizationError(f"writing an aqlm checkpoint needs the aqlm package: {INSTALL_HINT}") from exc

    originals: dict[str, nn.Module] = {}
    stored_bits = 0
    weights = 0
    try:
        for name, layer in layers.items():
            linear = model.get_submodule(name)
            dtype = linear.weight.dtype
            quantized = QuantizedLinear(
                linear.in_features,
                linear.out_features,
                in_group_size=settings.in_group_size,
                out_group_size=settings.out_group_size,
                num_codebooks=settings.num_codebooks,
                nbits_per_codebook=settings.nbits,
                bias=linear.bias is not None,
                dtype=dtype,
            )
            quantized.codes.data = pack_codes(layer.codes.cpu(), settings.nbits)
            quantized.codebooks.data = layer.codebooks.cpu().to(dtype).contiguous()
            quantized.scales.data = layer.scales.cpu().to(dtype).reshape(-1, 1, 1, 1)
            if linear.bias is not None:
                quantized.bias.data = linear.bias.data.detach().cpu().clone()
            for tensor in (quantized.codes, quantized.codebooks, quantized.scales):
                stored_bits += tensor.numel() * tensor.element_size() * 8
            weights += linear.weight.numel()
            originals[name] = linear
            model.set_submodule(name, quantized)
        keep = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        model.config.quantization_config = quantization_config(settings, keep)
        model.save_pretrained(str(out_dir))
    finally:
        for name, linear in originals.items():
            model.set_submodule(name, linear)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return stored_bits / max(weights, 1)


# ------------------------------------------------------------------------------ load


def require_aqlm() -> None:
    """Raise a one-line :class:`QuantizationError` when the aqlm package is not importable."""
    try:
        import aqlm  # noqa: F401
    except ImportError as exc:
        raise QuantizationError(f"loading an aqlm checkpoint needs the aqlm package: {INSTALL_HINT}") from exc


def serial_numba_kernel() -> None:
    """Run aqlm's CPU (numba) kernel on one numba thread.

    aqlm 1.1.7's ``numba_gemm_lut`` adds into shared output entries from a parallel loop: with more
    than one numba thread its results are wrong (measured: errors of a third of the output's
    range on two threads). The wrapper sets the calling thread's numba thread count to 1 before
    each call. Idempotent.
    """
    try:
        import numba
        from aqlm.inference_kernels import numba_kernel
    except ImportError:  # no numba: aqlm dequantizes on CPU instead
        return
    kernel = numba_kernel.numba_gemm_lut
    if getattr(kernel, "_qtrust_serial", False):
        return

    @functools.wraps(kernel)
    def serial(*args: Any, **kwargs: Any) -> Any:
        numba.set_num_threads(1)
        return kernel(*args, **kwargs)

    serial._qtrust_serial = True  # type: ignore[attr-defined]
    numba_kernel.numba_gemm_lut = serial


def checkpoint_settings(path: Path) -> dict[str, Any]:
    """The ``quantization_config`` of the aqlm checkpoint at ``path`` (empty when there is none)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    quant = config.get("quantization_config")
    return quant if isinstance(quant, dict) else {}


def cpu_dtype_problem(settings: dict[str, Any], dtype: str, device: str) -> str | None:
    """Why aqlm's CPU kernel cannot run the checkpoint in ``dtype`` on ``device`` (None when it can)."""
    numba_path = settings.get("nbits_per_codebook") == 8 and settings.get("out_group_size", 1) == 1
    if not str(device).startswith("cuda") and numba_path and dtype != "float32":
        return f"aqlm's CPU kernel runs float32 only; set dtype: float32 for this variant (not {dtype})"
    return None


def nominal_bits(settings: dict[str, Any]) -> float | None:
    """Bits per weight of the codes alone (``num_codebooks · nbits / group area``)."""
    try:
        area = int(settings["in_group_size"]) * int(settings.get("out_group_size", 1))
        return int(settings["num_codebooks"]) * int(settings["nbits_per_codebook"]) / area
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def load_aqlm(request: LoadRequest, hf: TransformersLoader) -> tuple[Any, dict[str, Any]]:
    """``aqlm``: the built checkpoint through Transformers and the aqlm package's kernels.

    Raises:
        QuantizationError: aqlm is not installed, or the CPU kernel cannot run the requested dtype.
    """
    require_aqlm()
    settings = checkpoint_settings(request.path)
    problem = cpu_dtype_problem(settings, request.dtype, request.device)
    if problem:
        raise QuantizationError(problem)
    serial_numba_kernel()
    engine = hf.from_pretrained(request.path, {})
    built = request.built or {}
    bits = built.get("bits_per_weight") or nominal_bits(settings)
    return engine, {"size_bytes": folder_size_bytes(request.path), "bits_per_weight": bits}
