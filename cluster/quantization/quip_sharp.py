"""QuIP#: randomized Hadamard incoherence, BlockLDLQ and E8 lattice codebooks, stored dequantized.

Written from Tseng et al., "QuIP#: Even Better LLM Quantization with Hadamard Incoherence and
Lattice Codebooks" (ICML 2024, arXiv 2402.04396), without fine-tuning. For every linear layer of
the target plan (``W [m, n]``, calibration Hessian ``H = E[x xᵀ] [n, n]``):

1. **Incoherence processing** (:mod:`cluster.quantization.hadamard`): ``W̃ = T_m W T_nᵀ`` and
   ``H̃ = T_n (H + λ I) T_nᵀ`` with randomized Hadamard transforms ``T = K · diag(±1)`` whose
   signs come from ``seed``; ``λ = damp · mean(diag H)``. The weights become Gaussian-like with no
   outliers and the Hessian has no dominant direction, so rounding to a fixed codebook works.
   Layers that read the same input (q/k/v, gate/up) share ``T_n`` and so ``H̃``; their rows are
   stacked and go through step 3 together (rows are independent there).
2. **Scale**: each layer's ``W̃`` is divided by one scale ``s = rms(W̃) · k / g``, where ``g`` is
   the input standard deviation at which the codebook's mean squared error on Gaussian vectors is
   lowest (measured: E8P 1.04; 0.95 and 0.90 for the first stage of the 3- and 4-bit codebooks,
   whose residual stages are scaled by 0.45 and 0.26 of the first). The step multiplier ``k`` is
   picked from ``scale_grid``, then (3 and 4 bits) the residual ratio's multiplier from
   ``residual_grid``, each by the lowest proxy error ``tr((W̃ - Ŵ̃) H̃ (W̃ - Ŵ̃)ᵀ)`` of a BlockLDLQ
   run on ``search_rows`` evenly spread rows of the layer (all candidates in one stacked pass).
3. **BlockLDLQ**: ``H̃ = U D Uᵀ`` with ``U`` unit block upper triangular (8 × 8 blocks, from the
   Cholesky factor of the reversed ``H̃``). The 8-column blocks of ``W̃ / s`` are quantized left to
   right, each row's 8 weights as one codebook vector, with linear feedback from the ones already
   quantized: ``Ŵ = Q(W + (W − Ŵ)(U − I))``. The proxy error is then ``Σ_k r_k D_k r_kᵀ`` over the
   rounding residuals ``r_k``, the vector analogue of LDLQ/GPTQ.
4. **Codebooks** (:mod:`cluster.quantization.e8p`): 2 bits: E8P (2^16 points of ``E8 + 1/4``,
   16 bits per 8 weights). 4 bits: E8P and a second E8P on the residual scaled by ``r`` (32 bits
   per 8 weights). 3 bits: E8P and a 1-bit codebook of 256 points of ``E8 + 1/4`` on the residual
   (24 bits per 8 weights).
5. ``Ŵ = T_mᵀ (s · Q) T_n`` replaces the float32 weight before the next decoder block's Hessians
   are measured (:func:`cluster.quantization.layer_inputs.sequential_hessians`), and the model is
   saved dense ("simulated": same numbers a QuIP# kernel would produce, float storage).

``bits_per_weight`` in the report counts what a packed checkpoint would hold: the codes, one
16-bit scale per layer (two with a residual stage) and the ``m + n`` sign bits of the transforms.

This module imports neither torch nor transformers at its top level: recipe validation imports
it for :class:`QuipSharpParams` and :func:`shape_problems`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cluster.quantization.recipes import QuantRecipe

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cluster.quantization.checks import ModelShape
    from cluster.quantization.hadamard import RandomHadamard
    from cluster.quantization.targets import TargetPlan

log = logging.getLogger(__name__)

#: Weights per codebook vector (E8).
GROUP = 8
#: Bits of a stored scale (fp16 in a packed QuIP# checkpoint).
SCALE_BITS = 16
#: Columns whose feedback is applied at once inside BlockLDLQ (GPTQ's lazy batch updates).
_LAZY_COLUMNS = 128


class QuipSharpParams(BaseModel):
    """The ``params`` block of a ``quip_sharp`` recipe (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="seed of the random signs of the Hadamard transforms")
    damp: float = Field(0.01, gt=0, le=1, description="Hessian damping, a share of the mean of its diagonal")
    scale_grid: tuple[float, ...] = Field(
        (0.85, 0.95, 1.05, 1.15, 1.3),
        description="step-size multipliers tried per layer (1: the codebook's best scale for Gaussian weights)",
    )
    residual_grid: tuple[float, ...] = Field(
        (0.85, 1.0, 1.15), description="3 and 4 bits: multipliers of the residual stage's scale ratio tried per layer"
    )
    search_rows: int = Field(64, ge=1, description="rows of each layer the scale search runs BlockLDLQ on")

    @field_validator("scale_grid", "residual_grid")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("needs at least one multiplier, e.g. [1.0]")
        if any(not (0 < v < 100) for v in value):
            raise ValueError(f"multipliers must be positive (and below 100), got {list(value)}")
        return tuple(sorted(set(value)))


def shape_problems(recipe: QuantRecipe, shape: ModelShape) -> list[str]:
    """Why ``recipe`` cannot run on a model of ``shape``: every input width must be a multiple of 8."""
    return [
        f"{what} {width} is not a multiple of {GROUP}: quip_sharp quantizes groups of {GROUP} input weights "
        f"as one E8 lattice vector; use another method (e.g. rtn or gptq) for this model"
        for what, width in shape.input_widths.items()
        if width % GROUP
    ]


# ------------------------------------------------------------------------------- codebooks


@dataclass(frozen=True)
class Codebook:
    """A QuIP# codebook for one bit width: E8P, optionally followed by a residual stage."""

    bits: int
    name: str
    gaussian_std: float
    """Input standard deviation at which the (first stage's) error on Gaussian vectors is lowest."""
    residual_ratio: float | None
    """Scale of the residual stage relative to the first (None: no residual stage)."""
    bits_per_vector: int

    def round(self, x: torch.Tensor, ratio: torch.Tensor | None = None) -> torch.Tensor:
        """The nearest representable vectors to the rows of ``x [N, 8]`` (``ratio [N, 1]``: residual scale)."""
        from cluster.quantization.e8p import e8p_nearest, one_bit_nearest

        first, _ = e8p_nearest(x, index=False)
        if self.residual_ratio is None:
            return first
        if ratio is None:
            raise ValueError(f"the {self.name} codebook needs a residual ratio")
        second = e8p_nearest if self.bits == 4 else one_bit_nearest
        rest, _ = second((x - first) / ratio, index=False)
        return first + ratio * rest


#: The codebook of each bit width (constants measured on 400k Gaussian coordinates).
CODEBOOKS: dict[int, Codebook] = {
    2: Codebook(2, "E8P", gaussian_std=1.04, residual_ratio=None, bits_per_vector=16),
    3: Codebook(3, "E8P+1-bit E8 residual", gaussian_std=0.95, residual_ratio=0.45, bits_per_vector=24),
    4: Codebook(4, "E8P+E8P residual", gaussian_std=0.90, residual_ratio=0.26, bits_per_vector=32),
}


def codebook_for(bits: int) -> Codebook:
    """The codebook of ``bits`` (2, 3 or 4).

    Raises:
        ValueError: another width.
    """
    try:
        return CODEBOOKS[bits]
    except KeyError:
        raise ValueError(f"quip_sharp quantizes to 2, 3 or 4 bits, not {bits}") from None


# ------------------------------------------------------------------------------- BlockLDLQ


def block_ldl(hessian: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, D)`` with ``hessian = U · blockdiag(D) · Uᵀ``, ``U`` unit block upper triangular.

    ``D`` is ``[n / group, group, group]``. Computed in float64 from the Cholesky factor of the
    reversed matrix, returned in ``hessian``'s dtype.

    Raises:
        torch.linalg.LinAlgError: ``hessian`` is not positive definite.
    """
    import torch

    n = hessian.shape[0]
    if n % group:
        raise ValueError(f"width {n} is not a multiple of the block size {group}")
    flipped = hessian.to(torch.float64).flip(0, 1)
    upper = torch.linalg.cholesky(flipped).flip(0, 1)  # hessian = upper · upperᵀ
    blocks = n // group
    index = torch.arange(blocks, device=hessian.device)
    diag = upper.reshape(blocks, group, blocks, group)[index, :, index, :]
    u = torch.einsum("ikg,kgh->ikh", upper.reshape(n, blocks, group), torch.linalg.inv(diag)).reshape(n, n)
    d = diag @ diag.transpose(1, 2)
    return u.to(hessian.dtype), d.to(hessian.dtype)


def block_ldlq(
    weight: torch.Tensor, u: torch.Tensor, codebook: Codebook, ratio: torch.Tensor | None = None
) -> torch.Tensor:
    """BlockLDLQ of the (scaled, transformed) ``weight [r, n]`` with factor ``u``: the quantized ``[r, n]``.

    Column block ``k`` (8 columns) of every row is rounded to the codebook after adding the
    feedback ``Σ_{j<k} (W_j − Ŵ_j) U_{jk}`` of the blocks already rounded.
    """
    import torch

    rows, n = weight.shape
    target = weight.clone()
    out = torch.empty_like(weight)
    for lazy_start in range(0, n, _LAZY_COLUMNS):
        lazy_stop = min(n, lazy_start + _LAZY_COLUMNS)
        for start in range(lazy_start, lazy_stop, GROUP):
            stop = start + GROUP
            rounded = codebook.round(target[:, start:stop], ratio)
            out[:, start:stop] = rounded
            if stop < lazy_stop:
                error = weight[:, start:stop] - rounded
                target[:, stop:lazy_stop] += error @ u[start:stop, stop:lazy_stop]
        if lazy_stop < n:
            error = weight[:, lazy_start:lazy_stop] - out[:, lazy_start:lazy_stop]
            target[:, lazy_stop:] += error @ u[lazy_start:lazy_stop, lazy_stop:]
    return out


def proxy_error(error: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """``e H eᵀ`` of every row ``e`` of ``error [r, n]``: ``[r]``."""
    return ((error @ hessian) * error).sum(dim=1)


# ------------------------------------------------------------------------------- one group of layers


@dataclass
class LayerResult:
    """What quantizing one layer gave."""

    weight: torch.Tensor | None
    """The dequantized weight in the layer's own basis ``[m, n]`` (float32; dropped once copied)."""
    relative_error: float
    """``‖(W − Ŵ) X‖ / ‖W X‖`` on the calibration inputs (through ``H``)."""
    scale_multiplier: float
    residual_multiplier: float | None
    stored_bits: int
    """Bits a packed checkpoint would hold for the layer (codes, scales, transform signs)."""


def _damped(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, float]:
    import torch

    mean_diag = float(torch.diagonal(hessian).mean())
    level = damp * (mean_diag if mean_diag > 0 else 1.0)
    return hessian + level * torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device), level


def _factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """``U`` of the damped ``hessian`` (damping raised tenfold until the factorization succeeds)."""
    import torch

    for attempt in range(6):
        damped, _ = _damped(hessian, damp * 10**attempt)
        try:
            return block_ldl(damped)[0]
        except torch.linalg.LinAlgError:
            log.warning("quip_sharp: Hessian not positive definite at damp %.3g; trying more", damp * 10**attempt)
    raise ValueError("quip_sharp: the calibration Hessian stays singular even with damp × 1e5")


def _search_rows(m: int, count: int, device: Any) -> torch.Tensor:
    """``count`` evenly spread row indices of ``m`` (rows are alike after the output-side transform)."""
    import torch

    return torch.linspace(0, m - 1, min(m, count), device=device).round().long().unique()


def _stacked_ldlq(
    parts: list[tuple[torch.Tensor, float, float]], u: torch.Tensor, codebook: Codebook
) -> list[torch.Tensor]:
    """BlockLDLQ of several row sets in one pass; each part is ``(rows [r, n], scale, residual ratio)``.

    Rows are independent in BlockLDLQ, so sets with other scales (other layers, other candidate
    scales) share the column loop. Returns each part's dequantized rows (``scale · Q``).
    """
    import torch

    scaled = torch.cat([rows / scale for rows, scale, _ in parts])
    ratio = None
    if codebook.residual_ratio is not None:
        ratio = torch.cat([torch.full((rows.shape[0], 1), r, device=rows.device) for rows, _, r in parts])
    quantized = block_ldlq(scaled, u, codebook, ratio)
    out, offset = [], 0
    for rows, scale, _ in parts:
        out.append(quantized[offset : offset + rows.shape[0]] * scale)
        offset += rows.shape[0]
    return out


def _search(
    picked: list[torch.Tensor],
    base_scales: list[float],
    grids: list[list[tuple[float, float]]],
    u: torch.Tensor,
    h_t: torch.Tensor,
    codebook: Codebook,
) -> list[tuple[float, float]]:
    """The ``(step multiplier, residual multiplier)`` of each layer's grid with the lowest proxy error.

    ``picked[i]`` are rows of layer ``i``; ``grids[i]`` its candidates (one shared grid when
    ``grids`` has a single entry). All candidates of all layers run in one BlockLDLQ pass.
    """
    residual = codebook.residual_ratio or 1.0
    grids = grids * len(picked) if len(grids) == 1 else grids
    parts = [(rows, base * k, residual * r) for rows, base, grid in zip(picked, base_scales, grids) for k, r in grid]
    trials = iter(_stacked_ldlq(parts, u, codebook))
    chosen = []
    for rows, grid in zip(picked, grids):
        errors = [float(proxy_error(rows - next(trials), h_t).sum()) for _ in grid]
        chosen.append(grid[min(range(len(grid)), key=errors.__getitem__)])
    return chosen


def quantize_group(
    weights: list[torch.Tensor],
    hessian: torch.Tensor,
    codebook: Codebook,
    params: QuipSharpParams,
    out_transforms: list[RandomHadamard],
    in_transform: RandomHadamard,
) -> list[LayerResult]:
    """QuIP# of layers that share an input (and so ``hessian [n, n]``), each ``[m_i, n]``.

    ``out_transforms[i]`` is layer ``i``'s output-side transform, ``in_transform`` the shared
    input-side one. Returns each layer's dequantized weight and errors.
    """
    import torch

    from cluster.quantization.hadamard import restore_weight, transform_hessian, transform_weight

    hessian = hessian.to(torch.float32)
    h_t = transform_hessian(hessian, in_transform)
    u = _factor(h_t, params.damp)
    transformed = [transform_weight(w.to(torch.float32), t, in_transform) for w, t in zip(weights, out_transforms)]
    base_scales = [(float(w.pow(2).mean().sqrt()) or 1.0) / codebook.gaussian_std for w in transformed]
    picked = [w[_search_rows(w.shape[0], params.search_rows, w.device)] for w in transformed]
    # Scale search on a few rows of each layer: first the step multiplier (residual ratio as
    # measured), then, with a residual stage, its ratio multiplier at the chosen step.
    chosen = _search(picked, base_scales, [[(k, 1.0) for k in params.scale_grid]], u, h_t, codebook)
    if codebook.residual_ratio is not None:
        grids = [sorted({(k, 1.0)} | {(k, r) for r in params.residual_grid}) for k, _ in chosen]
        chosen = _search(picked, base_scales, grids, u, h_t, codebook)

    # The full layers with their chosen scales.
    residual = codebook.residual_ratio or 1.0
    parts = [(w, base * k, residual * r) for w, base, (k, r) in zip(transformed, base_scales, chosen)]
    dequantized = _stacked_ldlq(parts, u, codebook)

    results = []
    stored_scales = 1 if codebook.residual_ratio is None else 2
    for w, deq_t, (k, r), t_out in zip(weights, dequantized, chosen, out_transforms):
        m, n = w.shape
        original = w.to(torch.float32)
        restored = restore_weight(deq_t, t_out, in_transform)
        signal = float(proxy_error(original, hessian).sum())
        noise = float(proxy_error(original - restored, hessian).sum())
        results.append(
            LayerResult(
                weight=restored,
                relative_error=math.sqrt(noise / signal) if signal > 0 else 0.0,
                scale_multiplier=k,
                residual_multiplier=r if codebook.residual_ratio else None,
                stored_bits=m * n // GROUP * codebook.bits_per_vector + stored_scales * SCALE_BITS + m + n,
            )
        )
    return results


# ------------------------------------------------------------------------------- build


def quantize_quip_sharp(
    model: nn.Module,
    tokenizer: Any,
    recipe: QuantRecipe,
    plan: TargetPlan,
    calibration_texts: list[str] | None,
    out_dir: Path,
) -> dict[str, str]:
    """The ``build`` of method ``quip_sharp``: quantize ``model`` in place, save it with ``tokenizer`` in ``out_dir``.

    Raises:
        ValueError: no calibration text.
        QuantizationError: a plan layer lies outside the decoder blocks, has an input width that is
            not a multiple of 8, or no calibration input reached it.
    """
    import torch

    from cluster.quantization.hadamard import RandomHadamard, layer_seed
    from cluster.quantization.layer_inputs import calibration_ids, check_inside_blocks, sequential_hessians
    from cluster.quantization.targets import QuantizationError

    params: QuipSharpParams = recipe.method_params()
    input_ids = calibration_ids("quip_sharp", tokenizer, calibration_texts, recipe)
    modules = dict(model.named_modules())
    check_inside_blocks("quip_sharp", model, list(plan.layers))
    odd = [f"{name} ({modules[name].in_features})" for name in plan.layers if modules[name].in_features % GROUP]
    if odd:
        raise QuantizationError(
            f"quip_sharp needs input widths that are multiples of {GROUP}, not {', '.join(odd[:3])}"
        )
    started = time.perf_counter()
    results: dict[str, LayerResult] = {}
    with torch.no_grad():
        for prefix, hessians in sequential_hessians(model, input_ids, list(plan.layers)):
            for names in _shared_inputs(hessians):
                # Layers of one group may still differ in bits (overrides are not taken, but keep it exact).
                by_bits: dict[int, list[str]] = {}
                for name in names:
                    by_bits.setdefault(plan.layers[name].bits, []).append(name)
                for bits, group in by_bits.items():
                    device = modules[group[0]].weight.device
                    n = modules[group[0]].in_features
                    in_t = RandomHadamard.create(n, layer_seed(params.seed, group[0], "in"), device)
                    outs = [
                        RandomHadamard.create(modules[name].out_features, layer_seed(params.seed, name, "out"), device)
                        for name in group
                    ]
                    found = quantize_group(
                        [modules[name].weight.data for name in group],
                        hessians[group[0]],
                        codebook_for(bits),
                        params,
                        outs,
                        in_t,
                    )
                    for name, result in zip(group, found):
                        weight = modules[name].weight
                        weight.data.copy_(result.weight.to(weight.dtype))  # type: ignore[union-attr]
                        result.weight = None
                        results[name] = result
            log.info("quip_sharp: block %s quantized", prefix)
    missing = [name for name in plan.layers if name not in results]
    if missing:
        raise QuantizationError(f"quip_sharp saw no calibration input reach {', '.join(missing[:3])}")
    quantize_s = time.perf_counter() - started

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu")
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))

    weights = sum(modules[name].weight.numel() for name in results)
    errors = [r.relative_error for r in results.values()]
    codebooks = sorted({codebook_for(plan.layers[name].bits).name for name in results})
    report = plan.describe()
    report.update(
        {
            "storage": "simulated",
            "backend": "qtrust quip_sharp",
            "quantize_s": f"{quantize_s:.3f}",
            "calibration_samples": str(len(input_ids)),
            "calibration_tokens": str(sum(int(ids.shape[-1]) for ids in input_ids)),
            "bits_per_weight": f"{sum(r.stored_bits for r in results.values()) / weights:.4f}",
            "codebook": ", ".join(codebooks),
            "mean_relative_output_error": f"{sum(errors) / len(errors):.6g}",
            "max_relative_output_error": f"{max(errors):.6g}",
            "mean_scale_multiplier": f"{sum(r.scale_multiplier for r in results.values()) / len(results):.4g}",
            "quip_sharp_seed": str(params.seed),
        }
    )
    return report


def _shared_inputs(hessians: dict[str, torch.Tensor]) -> list[list[str]]:
    """The layer names grouped by identical Hessians (layers reading the same input: q/k/v, gate/up)."""
    import torch

    groups: list[list[str]] = []
    for name in sorted(hessians):
        h = hessians[name]
        for group in groups:
            first = hessians[group[0]]
            if first.shape == h.shape and torch.equal(first, h):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups
