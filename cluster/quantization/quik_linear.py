"""QUIK's tensor-level pieces: outlier-aware GPTQ for one layer, and run-time activation quantization.

Written from Ashkboos et al., "QUIK: Towards End-to-End 4-Bit Inference on Generative Large
Language Models" (arXiv 2310.09259). :mod:`cluster.quantization.quik` drives them over a model.

A QUIK layer computes ``y = Q(x_n) Ŵ_nᵀ + x_o W_oᵀ``: the input features are split into a few
*outlier* features ``o`` (the ones with the largest calibration activations), which stay in full
precision on both sides, and the rest ``n``, whose weights are quantized (symmetric, one scale per
output row) and whose activations are quantized per token at run time.

Weights (:func:`quantize_layer`): GPTQ over the input columns in the order *non-outliers first
(largest ``diag(H)`` first), outliers last*. Each non-outlier column is rounded to its row's grid
and its error is spread, through the inverse Hessian, over the columns not yet visited; the
outlier columns come last and are never rounded, so with ``compensate_outliers`` they absorb the
error of every quantized column (the paper's ordering). Without it they are left exactly as they
were and GPTQ runs on the Hessian restricted to the non-outlier columns.

Activations (:func:`fake_quantize_activations`): each token's non-outlier features are quantized
to ``bits`` with that token's own range (asymmetric by default, as QUIK's kernels do; symmetric
on request) and dequantized again; the outlier features pass unchanged.

Everything is simulated: the results are floating-point tensors with the values the integer
kernels would compute with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_EPS = 1e-12
#: Clipping ratios tried for each weight row's range (1.0: the row's absolute maximum).
CLIP_RATIOS = tuple(1.0 - 0.025 * i for i in range(17))  # 1.0 .. 0.6


# ----------------------------------------------------------------------------- weights


def symmetric_levels(bits: int) -> int:
    """The largest integer level of a symmetric ``bits``-bit grid (levels ``-q..q``, zero exact)."""
    return 2 ** (bits - 1) - 1


def round_to_grid(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` rounded to the symmetric grid ``scale * {-q..q}`` (``scale`` broadcasts over ``w``)."""
    q = symmetric_levels(bits)
    return torch.clamp(torch.round(w / scale), -q, q) * scale


def row_scales(w: torch.Tensor, bits: int, importance: torch.Tensor | None = None, clip: bool = True) -> torch.Tensor:
    """One symmetric scale per row of ``w [rows, cols]`` (shape ``[rows, 1]``).

    Without ``clip`` the scale maps each row's absolute maximum to the top level. With it, each
    row tries the ranges ``ratio × max`` (:data:`CLIP_RATIOS`) and keeps the one whose rounding
    error ``Σ_j importance_j (w_j - ŵ_j)²`` is smallest (``importance``: ``diag(H)``, how much each
    input feature weighs in the layer's output; None weighs them equally).
    """
    absmax = w.abs().amax(dim=1, keepdim=True).clamp_min(_EPS)
    top = symmetric_levels(bits)
    if not clip:
        return absmax / top
    weights = importance.reshape(1, -1) if importance is not None else torch.ones_like(w[:1])
    best_scale = absmax / top
    best_err = torch.full_like(absmax, float("inf"))
    for ratio in CLIP_RATIOS:
        scale = absmax * ratio / top
        err = ((w - round_to_grid(w, scale, bits)) ** 2 * weights).sum(dim=1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
    return best_scale


def _inverse_hessian_factor(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + λI)⁻¹``, ``λ = damp × mean diag(H)`` (more damping if needed)."""
    h = h.clone()
    diag = torch.diagonal(h)
    dead = diag <= 0
    diag[dead] = 1.0  # features never seen: no error spreads through them
    mean = float(diag.mean())
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    for attempt in range(6):
        try:
            chol = torch.linalg.cholesky(h + (damp * 10**attempt) * mean * eye)
            return torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)
        except torch.linalg.LinAlgError:
            continue
    raise RuntimeError("the layer's Hessian stays singular after damping; use more or longer calibration samples")


def gptq(
    w: torch.Tensor,
    h: torch.Tensor,
    quantized: int,
    scale: torch.Tensor,
    bits: int,
    damp: float = 0.01,
    block: int = 128,
) -> torch.Tensor:
    """GPTQ of the first ``quantized`` columns of ``w [rows, cols]`` under Hessian ``h [cols, cols]``.

    Columns are visited left to right; column ``j < quantized`` is rounded to ``scale * {-q..q}``
    and its error, divided by the inverse-Hessian pivot, is subtracted from every later column
    (lazy batch updates of ``block`` columns). Columns from ``quantized`` on are never rounded but
    receive those updates. Returns the new weights (float32).
    """
    wt = w.to(torch.float32).t().contiguous()  # [cols, rows]: a column's updates touch contiguous memory
    u = _inverse_hessian_factor(h.to(torch.float32), damp)
    row_scale = scale.reshape(-1)
    for i1 in range(0, quantized, block):
        i2 = min(i1 + block, quantized)
        w1 = wt[i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            q = round_to_grid(w1[i], row_scale, bits)
            err = (w1[i] - q) / u1[i, i]
            w1[i:] -= u1[i, i:].unsqueeze(1) * err.unsqueeze(0)
            w1[i] = q
            err1[i] = err
        wt[i1:i2] = w1
        wt[i2:] -= u[i1:i2, i2:].t() @ err1
    w = wt.t().contiguous()
    return w


def relative_output_error(w: torch.Tensor, w_new: torch.Tensor, h: torch.Tensor) -> float:
    """``||(Ŵ - W) X|| / ||W X||`` over the calibration inputs, from ``H = E[x xᵀ]``."""
    w = w.to(torch.float32)
    delta = w_new.to(torch.float32) - w
    h = h.to(torch.float32)
    num = float(((delta @ h) * delta).sum())
    den = float(((w @ h) * w).sum())
    return (max(num, 0.0) / den) ** 0.5 if den > 0 else 0.0


@dataclass
class QuikLayer:
    """One layer quantized by :func:`quantize_layer`."""

    weight: torch.Tensor
    """The new weight (dequantized, float32, original column order)."""
    outliers: list[int]
    """The outlier input features, ascending."""
    relative_error: float | None
    """``||(Ŵ - W) X|| / ||W X||`` on the calibration inputs (weights only; None when not measured)."""


def select_outliers(act_absmax: torch.Tensor, count: int) -> list[int]:
    """The ``count`` input features with the largest calibration magnitude, ascending."""
    if count <= 0:
        return []
    return sorted(int(i) for i in torch.topk(act_absmax.to(torch.float32), count).indices)


def quantize_layer(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    act_absmax: torch.Tensor,
    outlier_count: int,
    bits: int,
    *,
    damp: float = 0.01,
    clip: bool = True,
    compensate_outliers: bool = True,
    measure_error: bool = True,
) -> QuikLayer:
    """QUIK's weight quantization of one linear layer (see the module docstring).

    ``hessian``: ``E[x xᵀ]`` of the layer's inputs ``[in, in]``; ``act_absmax``: the largest
    ``|x_j|`` seen per input feature, which picks the ``outlier_count`` outliers.
    """
    w = weight.detach().to(torch.float32)
    in_features = w.shape[1]
    if not 0 <= outlier_count < in_features:
        raise ValueError(f"outlier count {outlier_count} must be from 0 to {in_features - 1} for {in_features} inputs")
    h = hessian.to(device=w.device, dtype=torch.float32)
    outliers = select_outliers(act_absmax.to(w.device), outlier_count)
    is_outlier = torch.zeros(in_features, dtype=torch.bool, device=w.device)
    is_outlier[outliers] = True
    diag = torch.diagonal(h)
    rest = torch.nonzero(~is_outlier).flatten()
    rest = rest[torch.argsort(diag[rest], descending=True, stable=True)]  # GPTQ's activation order
    order = torch.cat([rest, torch.tensor(outliers, dtype=torch.long, device=w.device)])
    n = rest.numel()
    wp = w[:, order]
    hp = h[order][:, order]
    scale = row_scales(wp[:, :n], bits, torch.diagonal(hp)[:n], clip)
    if compensate_outliers:
        qp = gptq(wp, hp, n, scale, bits, damp)
    else:
        qp = torch.cat([gptq(wp[:, :n], hp[:n, :n], n, scale, bits, damp), wp[:, n:]], dim=1)
    new = torch.empty_like(w)
    new[:, order] = qp
    return QuikLayer(new, outliers, relative_output_error(w, new, h) if measure_error else None)


# ----------------------------------------------------------------------------- activations


def fake_quantize_activations(
    x: torch.Tensor, outlier_mask: torch.Tensor, bits: int, symmetric: bool = False
) -> torch.Tensor:
    """Per-token quantize-dequantize of the non-outlier features of ``x [..., in]`` to ``bits``.

    Each token (each vector along the last dimension) gets its own scale from its non-outlier
    features: asymmetric ``[min, max] → {0..2^b-1}`` with a zero point (zero stays exact), or
    symmetric ``absmax → {-(2^(b-1)-1)..2^(b-1)-1}``. ``outlier_mask [in]`` (bool) marks the
    features that pass unchanged. Computed in float32, returned in ``x``'s dtype.
    """
    xf = x.to(torch.float32)
    keep = ~outlier_mask.to(device=x.device)
    if symmetric:
        top = symmetric_levels(bits)
        absmax = torch.where(keep, xf.abs(), torch.zeros_like(xf)).amax(dim=-1, keepdim=True)
        scale = absmax.clamp_min(_EPS) / top
        deq = torch.clamp(torch.round(xf / scale), -top, top) * scale
    else:
        top = 2**bits - 1
        low = torch.where(keep, xf, torch.full_like(xf, float("inf"))).amin(dim=-1, keepdim=True).clamp_max(0.0)
        high = torch.where(keep, xf, torch.full_like(xf, float("-inf"))).amax(dim=-1, keepdim=True).clamp_min(0.0)
        scale = ((high - low) / top).clamp_min(_EPS)
        zero = torch.round(-low / scale)
        deq = (torch.clamp(torch.round(xf / scale) + zero, 0, top) - zero) * scale
    return torch.where(keep, deq, xf).to(x.dtype)


class ActivationQuantizer:
    """A forward pre-hook quantizing a linear layer's input the QUIK way (see :func:`fake_quantize_activations`)."""

    def __init__(self, in_features: int, outliers: Sequence[int], bits: int, symmetric: bool = False) -> None:
        self.bits = bits
        self.symmetric = symmetric
        self.outliers = list(outliers)
        self.mask = torch.zeros(in_features, dtype=torch.bool)
        self.mask[self.outliers] = True

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        if self.mask.device != x.device:
            self.mask = self.mask.to(x.device)
        return (fake_quantize_activations(x, self.mask, self.bits, self.symmetric), *args[1:])


def install_activation_quantization(
    model: nn.Module, layers: Mapping[str, tuple[Sequence[int], int]], symmetric: bool = False
) -> dict[str, Any]:
    """Hook an :class:`ActivationQuantizer` onto each linear layer ``name → (outliers, bits)`` of ``model``.

    Returns the hook handles by layer name (``handle.remove()`` undoes one).

    Raises:
        ValueError: a layer is missing, is not ``nn.Linear``, or an outlier index is out of range.
    """
    modules = dict(model.named_modules())
    handles = {}
    for name, (outliers, bits) in layers.items():
        module = modules.get(name)
        if not isinstance(module, nn.Linear):
            what = "has no such layer" if module is None else f"has a {type(module).__name__} there, not a Linear"
            raise ValueError(f"QUIK layer {name!r}: the model {what}")
        bad = [i for i in outliers if not 0 <= i < module.in_features]
        if bad:
            raise ValueError(
                f"QUIK layer {name!r}: outlier features {bad[:3]} out of range 0..{module.in_features - 1}"
            )
        hook = ActivationQuantizer(module.in_features, outliers, bits, symmetric)
        handles[name] = module.register_forward_pre_hook(hook)
    return handles
