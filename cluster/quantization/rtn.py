"""Round-to-nearest (RTN) fake quantization of a model's linear layers.

Each weight row is cut into groups of ``group_size`` consecutive input features (or one group per
row when ``group_size`` is None). Each group gets its own scale:

* asymmetric (default): ``scale = (max - min) / (2^b - 1)``, ``zero = round(-min / scale)``,
  ``q = clamp(round(w / scale) + zero, 0, 2^b - 1)``, ``w' = (q - zero) * scale``. The group's
  range always contains 0 (min is capped at 0, max floored at 0) so that zero stays exact.
* symmetric: ``scale = absmax / (2^(b-1) - 1)``, ``q = clamp(round(w / scale), -(2^(b-1)-1),
  2^(b-1)-1)``, ``w' = q * scale`` (the level ``-2^(b-1)`` is not used, so the grid is
  symmetric around zero).

The weights are replaced by their dequantized values and stay in floating point: the model runs
as before, with the rounding error of a ``b``-bit checkpoint. Deterministic: a pure function of
the weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.targets import TargetPlan, plan_targets, scalar_bits_per_weight

log = logging.getLogger(__name__)

_EPS = 1e-12


@dataclass
class RtnReport:
    """What :func:`quantize_model_rtn` did."""

    bits: int
    group_size: int | None
    symmetric: bool
    layers_quantized: int = 0
    layers_skipped: list[str] = field(default_factory=list)
    mean_relative_error: float = 0.0
    """Mean over layers of ``||W' - W||_F / ||W||_F``."""
    max_relative_error: float = 0.0
    per_layer: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict[str, str]:
        """Flat string description for run records."""
        return {
            "rtn_layers_quantized": str(self.layers_quantized),
            "rtn_layers_skipped": ",".join(self.layers_skipped),
            "rtn_mean_relative_error": f"{self.mean_relative_error:.6g}",
            "rtn_max_relative_error": f"{self.max_relative_error:.6g}",
        }


def quantize_tensor_rtn(weight: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> torch.Tensor:
    """Return the RTN quantize-dequantize of a 2-D weight ``[out, in]`` (same shape and dtype).

    Computation runs in float32 whatever the input dtype.
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    out_features, in_features = weight.shape
    size = in_features if group_size is None else group_size
    if in_features % size != 0:
        raise ValueError(f"group_size {size} does not divide in_features {in_features}")
    w = weight.detach().to(torch.float32).reshape(out_features, in_features // size, size)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = w.abs().amax(dim=-1, keepdim=True).clamp_min(_EPS) / qmax
        q = torch.clamp(torch.round(w / scale), -qmax, qmax)
        deq = q * scale
    else:
        qmax = 2**bits - 1
        wmin = w.amin(dim=-1, keepdim=True).clamp_max(0.0)
        wmax = w.amax(dim=-1, keepdim=True).clamp_min(0.0)
        scale = ((wmax - wmin) / qmax).clamp_min(_EPS)
        zero = torch.round(-wmin / scale)
        q = torch.clamp(torch.round(w / scale) + zero, 0, qmax)
        deq = (q - zero) * scale
    return deq.reshape(out_features, in_features).to(weight.dtype)


def apply_rtn(model: nn.Module, plan: TargetPlan, symmetric: bool) -> RtnReport:
    """Fake-quantize the layers of ``plan`` in place (each with its own bits and group size)."""
    modules = dict(model.named_modules())
    first = next(iter(plan.layers.values()))
    report = RtnReport(bits=first.bits, group_size=first.group_size, symmetric=symmetric)
    report.layers_skipped = list(plan.full_precision)
    errors: list[float] = []
    with torch.no_grad():
        for name, quant in plan.layers.items():
            module = modules[name]
            original = module.weight.data
            new = quantize_tensor_rtn(original, quant.bits, quant.group_size, symmetric)
            norm = original.float().norm().item()
            rel = (new.float() - original.float()).norm().item() / norm if norm > 0 else 0.0
            module.weight.data.copy_(new)
            report.per_layer[name] = rel
            errors.append(rel)
    report.layers_quantized = len(plan.layers)
    report.mean_relative_error = sum(errors) / len(errors) if errors else 0.0
    report.max_relative_error = max(errors) if errors else 0.0
    log.info(
        "RTN %s %s: %d layers quantized, %d left in full precision, mean relative error %.4g",
        plan.bits_histogram(),
        "sym" if symmetric else "asym",
        report.layers_quantized,
        len(report.layers_skipped),
        report.mean_relative_error,
    )
    return report


def quantize_model_rtn(
    model: nn.Module,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    skip: Iterable[str] = ("lm_head",),
) -> RtnReport:
    """Fake-quantize every ``nn.Linear`` of ``model`` in place with RTN at one bit width.

    Skipped: linears matching a pattern in ``skip`` (default: the LM head), and any linear whose
    weight shares storage with the input embeddings (tied heads). Every layer is checked before
    any is changed, so a bad ``group_size`` leaves the model intact.

    Raises:
        ValueError: ``bits`` outside 2..8, or ``group_size`` does not divide a layer's in-features
            (the message names the layer and a group size that works).
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be from 2 to 8 (got {bits})")
    recipe = QuantRecipe(
        method="rtn", bits=bits, group_size=group_size, symmetric=symmetric, keep_full_precision=list(skip)
    )
    return apply_rtn(model, plan_targets(model, recipe), symmetric)


def quantize_rtn(
    model: nn.Module,
    tokenizer: Any,
    recipe: QuantRecipe,
    plan: TargetPlan,
    calibration_texts: list[str] | None,
    out_dir: Path,
) -> dict[str, str]:
    """The ``build`` of method ``rtn``: quantize ``model`` and save it with ``tokenizer`` in ``out_dir``.

    Simulated storage is qtrust's own RTN (dense dequantized weights); packed storage runs
    llm-compressor's round-to-nearest (:func:`cluster.quantization.llmc.quantize_with_llmcompressor`).
    Returns the report fields kept in the cache entry.
    """
    if recipe.resolved_storage != "simulated":
        from cluster.quantization.llmc import quantize_with_llmcompressor

        return quantize_with_llmcompressor(model, tokenizer, recipe, plan, calibration_texts, out_dir)
    quantize_started = time.perf_counter()
    rtn = apply_rtn(model, plan, recipe.symmetric)
    quantize_s = time.perf_counter() - quantize_started
    model.to("cpu")
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    report = plan.describe()
    report.update(
        {
            "storage": "simulated",
            "backend": "qtrust rtn",
            "quantize_s": f"{quantize_s:.3f}",
            "calibration_samples": "0",
            "mean_relative_error": f"{rtn.mean_relative_error:.6g}",
            "bits_per_weight": f"{scalar_bits_per_weight(model, plan, recipe.symmetric):.3f}",
        }
    )
    return report
