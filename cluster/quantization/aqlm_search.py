"""The search behind AQLM (:mod:`cluster.quantization.aqlm`): codebooks, codes and scales of one layer.

Additive quantization (Egiazarian et al., "Extreme Compression of Large Language Models via
Additive Quantization", ICML 2024) writes a weight ``W [out, in]`` as groups of ``out_group ×
in_group`` weights (``D`` numbers, one *unit* of ``out_group`` rows per scale), each group the sum
of one vector from each of ``M`` learned codebooks of ``K = 2^nbits`` vectors, times the unit's
scale::

    Ŵ[u, j] = s_u · Σ_m C_m[b_ujm]

so a weight costs ``M · nbits / D`` bits plus the (shared) codebooks and the scales. The fit
minimises the layer's output error on calibration inputs, ``tr((W − Ŵ) H (W − Ŵ)ᵀ)`` with
``H = E[x xᵀ]`` (plus ``damp · mean(diag H)`` on its diagonal, 10 %: a few calibration tokens
leave ``H`` rank-deficient), in three alternating steps:

1. **Initialisation**: scales are the units' RMS; codebook ``m`` is k-means (seeded, on a sample
   of the scaled groups) of what codebooks ``1..m−1`` leave over (residual k-means), and every
   group takes its nearest vector.
2. **Code search** (beam search, one codebook slot at a time). Units are independent given the
   codebooks, so every unit is searched at once; input groups are visited in chunks, in order
   (Gauss–Seidel over chunks). For group ``j`` with the other groups fixed, the exact objective is
   ``(ŵ_j − t_j)ᵀ H_jj (ŵ_j − t_j)`` with the target ``t_j = ŵ_j + H_jj⁻¹ (H e)_j`` (``e = w − ŵ``,
   the diagonal block ``H_jj`` of the full ``H``), so the full ``H`` enters through ``t_j``. Within
   a chunk the groups are searched together from the same gradient (their mutual terms are left
   out of the search); a unit whose chunk move raises the exact objective is put back, so the
   (damped) objective never rises. The beam keeps ``beam_size`` code tuples per group; for each slot every
   tuple tries all ``K`` vectors, and the best ``beam_size`` of the ``beam_size · K`` survive.
3. **Codebook update**: given the codes, the codebooks minimising the objective with the full
   ``H`` (a linear least-squares problem in ``M · K · D`` unknowns), solved by conjugate
   gradients (a few steps from the current codebooks, preconditioned by each codeword's own
   block of the normal equations); then each unit's scale by exact least squares.

Steps 2 and 3 repeat ``rounds`` times. Everything is vectorised torch on the weight's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AqSettings:
    """How one layer is searched (the recipe's params, plus internal sizes)."""

    num_codebooks: int
    nbits: int
    in_group_size: int = 8
    out_group_size: int = 1
    beam_size: int = 4
    rounds: int = 3
    kmeans_iters: int = 8
    seed: int = 0
    damp: float = 0.1
    """Added to ``H``'s diagonal, relative to its mean diagonal (measured on SmolLM2-135M at 2 bits: 0.1
    instead of 0.01 cut the probe perplexity from 332 to 215 with 16 calibration texts, and left it at
    171 with 64)."""
    cg_steps: int = 3
    """Conjugate-gradient steps of each codebook update."""
    kmeans_sample: int = 16384
    """Groups drawn for the k-means initialisation."""
    chunk_items: int = 4096
    """(unit, input group) pairs whose codes are searched at once."""

    @property
    def codebook_size(self) -> int:
        return 2**self.nbits

    @property
    def group_dim(self) -> int:
        return self.in_group_size * self.out_group_size


@dataclass
class AqLayer:
    """One layer in AQLM form: ``codes [units, in_groups, M]`` (0..K−1), ``codebooks [M, K, out_group,
    in_group]`` and ``scales [units]``."""

    codes: torch.Tensor
    codebooks: torch.Tensor
    scales: torch.Tensor

    def dequantize(self) -> torch.Tensor:
        """``Ŵ [out, in]`` (float32)."""
        m, k, og, ig = self.codebooks.shape
        groups = decode(self.codes, self.codebooks.reshape(m, k, og * ig)) * self.scales[:, None, None]
        return from_groups(groups, og, ig)


# ------------------------------------------------------------------------------ layout


def to_groups(rows: torch.Tensor, og: int, ig: int) -> torch.Tensor:
    """``[out, in]`` → ``[units, in_groups, og·ig]`` (a group's rows one after the other)."""
    out, inp = rows.shape
    return rows.reshape(out // og, og, inp // ig, ig).permute(0, 2, 1, 3).reshape(out // og, inp // ig, og * ig)


def from_groups(groups: torch.Tensor, og: int, ig: int) -> torch.Tensor:
    """The inverse of :func:`to_groups`."""
    units, num, _ = groups.shape
    return groups.reshape(units, num, og, ig).permute(0, 2, 1, 3).reshape(units * og, num * ig)


def decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """``Σ_m codebooks[m][codes[..., m]]``: ``codes [..., M]``, ``codebooks [M, K, D]`` → ``[..., D]``."""
    out = codebooks[0][codes[..., 0]]
    for m in range(1, codebooks.shape[0]):
        out = out + codebooks[m][codes[..., m]]
    return out


def diagonal_blocks(hessian: torch.Tensor, og: int, ig: int) -> torch.Tensor:
    """``[in_groups, D, D]``: the metric of each input group's vector, ``I_og ⊗ H_jj``."""
    num = hessian.shape[0] // ig
    blocks = hessian.reshape(num, ig, num, ig).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    metric = hessian.new_zeros(num, og, ig, og, ig)
    for a in range(og):
        metric[:, a, :, a, :] = blocks
    return metric.reshape(num, og * ig, og * ig)


def output_error(weight: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor) -> float:
    """``‖(W − Ŵ) X‖ / ‖W X‖`` measured with ``H = X Xᵀ / n``."""
    err = (weight - approx).double()
    h = hessian.double()
    num = ((err @ h) * err).sum()
    den = ((weight.double() @ h) * weight.double()).sum()
    return float((num / den).clamp_min(0).sqrt()) if den > 0 else 0.0


# ------------------------------------------------------------------------------ initialisation


def _nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Index of the nearest centroid (Euclidean) of every row of ``x``."""
    norms = (centroids * centroids).sum(1)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk]
        out[start : start + chunk] = torch.addmm(norms, part, centroids.T, alpha=-2).argmin(1)
    return out


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` centroids of the rows of ``x`` (Lloyd from a random sample; empty clusters re-seeded)."""
    n = x.shape[0]
    pick = torch.randperm(n, generator=generator)[:k] if n >= k else torch.randint(n, (k,), generator=generator)
    centroids = x[pick.to(x.device)].clone()
    if n < k:  # more centroids than points: spread the copies a little
        noise = torch.randn(centroids.shape, generator=generator).to(x.device)
        centroids += 1e-3 * x.std().clamp_min(1e-8) * noise
    for _ in range(iters):
        assign = _nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        used = counts > 0
        centroids[used] = sums[used] / counts[used, None].to(x.dtype)
        empty = int((~used).sum())
        if empty:
            centroids[~used] = x[torch.randint(n, (empty,), generator=generator).to(x.device)]
    return centroids


def initialise(weight: torch.Tensor, settings: AqSettings, generator: torch.Generator) -> AqLayer:
    """Scales from the units' RMS, codebooks by residual k-means, codes by nearest vector."""
    og, ig, m, k = settings.out_group_size, settings.in_group_size, settings.num_codebooks, settings.codebook_size
    units = weight.shape[0] // og
    scales = weight.reshape(units, -1).pow(2).mean(1).sqrt().clamp_min(1e-8)
    residual = to_groups(weight / scales.repeat_interleave(og)[:, None], og, ig).reshape(-1, og * ig).clone()
    sample = torch.randperm(residual.shape[0], generator=generator)[: settings.kmeans_sample].to(weight.device)
    codebooks = torch.empty(m, k, og * ig, dtype=weight.dtype, device=weight.device)
    codes = torch.empty(residual.shape[0], m, dtype=torch.long, device=weight.device)
    for slot in range(m):
        codebooks[slot] = kmeans(residual[sample], k, settings.kmeans_iters, generator)
        codes[:, slot] = _nearest(residual, codebooks[slot])
        residual -= codebooks[slot][codes[:, slot]]
    return AqLayer(codes.reshape(units, -1, m), codebooks.reshape(m, k, og, ig), scales)


# ------------------------------------------------------------------------------ code search


def _beam(
    target: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor, metric: torch.Tensor, beam_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best code tuples for ``target [P, n, D]`` under ``metric [P, D, D]``, starting from ``codes [P, n, M]``.

    Returns ``(codes [P, n, M], reconstruction [P, n, D])``.
    """
    num_codebooks, k, _ = codebooks.shape
    p, n, _ = target.shape
    # per slot and group: C_m H_jj (for the cross term) and the codewords' own norms c H_jj cᵀ
    cm = torch.einsum("mkd,pde->mpke", codebooks, metric)
    cmc = (cm * codebooks[:, None]).sum(-1)  # [M, P, K]
    hyp = codes[:, :, None, :]  # [P, n, b, M]
    rec = decode(hyp, codebooks)  # [P, n, b, D]
    for slot in range(num_codebooks):
        b = hyp.shape[2]
        base = target[:, :, None, :] - rec + codebooks[slot][hyp[..., slot]]  # residual without this slot
        flat = base.reshape(p, n * b, -1)
        score = torch.baddbmm(cmc[slot][:, None, :], flat, cm[slot].transpose(1, 2), alpha=-2)  # [P, n·b, K]
        keep = min(beam_size, b * k)
        if keep == 1 and b == 1:  # greedy: the best vector of this slot, nothing to gather
            chosen = score.argmin(-1)
            hyp = hyp.clone()
            hyp[..., 0, slot] = chosen
            rec = target[:, :, None, :] - base + codebooks[slot][chosen][:, :, None]
            continue
        if b > 1:  # hypotheses of one group differ in ‖base‖²_H: add it before comparing them
            score += ((torch.bmm(flat, metric) * flat).sum(-1))[..., None]
        _, best = score.reshape(p, n, b * k).topk(keep, dim=-1, largest=False, sorted=True)
        source, chosen = best // k, best % k
        hyp = torch.gather(hyp, 2, source[..., None].expand(-1, -1, -1, num_codebooks)).clone()
        hyp[..., slot] = chosen
        picked = torch.gather(base, 2, source[..., None].expand(-1, -1, -1, base.shape[-1]))
        rec = target[:, :, None, :] - picked + codebooks[slot][chosen]
    return hyp[:, :, 0], rec[:, :, 0]


def search_codes(
    weight: torch.Tensor,
    layer: AqLayer,
    hessian: torch.Tensor,
    metric: torch.Tensor,
    settings: AqSettings,
    products: Products,
) -> torch.Tensor:
    """New codes for ``weight [out, in]`` (see the module docstring, step 2); updates ``products.rh``."""
    og, ig = settings.out_group_size, settings.in_group_size
    m, k = layer.codebooks.shape[:2]
    codebooks = layer.codebooks.reshape(m, k, og * ig)
    codes = layer.codes.clone()
    row_scales = layer.scales.repeat_interleave(og)[:, None]
    current = decode(codes, codebooks)  # [U, J, D], scaled space
    grad = (products.wh - products.rh) / row_scales  # H e per row, e = W/s − Ŵ/s
    inverse = torch.linalg.inv(metric)  # [J, D, D]
    units, num, _ = current.shape
    per_chunk = max(1, min(num, settings.chunk_items // max(units, 1)))
    unit_step = max(1, settings.chunk_items // per_chunk)
    for j0 in range(0, num, per_chunk):
        j1 = min(num, j0 + per_chunk)
        cols = slice(j0 * ig, j1 * ig)
        for u0 in range(0, units, unit_step):
            u1 = min(units, u0 + unit_step)
            rows = slice(u0 * og, u1 * og)
            g = to_groups(grad[rows, cols], og, ig).transpose(0, 1)  # [P, n, D]
            old = current[u0:u1, j0:j1].transpose(0, 1)
            target = old + torch.bmm(g, inverse[j0:j1].transpose(1, 2))
            new_codes, new = _beam(
                target, codes[u0:u1, j0:j1].transpose(0, 1), codebooks, metric[j0:j1], settings.beam_size
            )
            delta = from_groups((new - old).transpose(0, 1), og, ig)  # [rows, cols]
            change = -2 * (delta * grad[rows, cols]).sum(1) + ((delta @ hessian[cols, cols]) * delta).sum(1)
            moved = (change.reshape(-1, og).sum(1) < 0) & (new_codes != codes[u0:u1, j0:j1].transpose(0, 1)).any(
                -1
            ).any(0)
            if not bool(moved.any()):
                continue
            unit_index = moved.nonzero()[:, 0]
            codes[u0 + unit_index, j0:j1] = new_codes[:, unit_index].transpose(0, 1)
            current[u0 + unit_index, j0:j1] = new[:, unit_index].transpose(0, 1)
            row_index = (unit_index[:, None] * og + torch.arange(og, device=grad.device)).reshape(-1)
            grad.index_add_(0, u0 * og + row_index, delta[row_index] @ hessian[cols], alpha=-1)
    products.rh = products.wh - grad * row_scales
    return codes


# ------------------------------------------------------------------------------ codebooks and scales


def refit_codebooks(
    layer: AqLayer, hessian: torch.Tensor, metric: torch.Tensor, settings: AqSettings, products: Products
) -> torch.Tensor:
    """Codebooks minimising ``tr((W − Ŵ) H (W − Ŵ)ᵀ)`` given codes and scales (preconditioned CG).

    Updates ``products.rh``.
    """
    og, ig = settings.out_group_size, settings.in_group_size
    m, k = layer.codebooks.shape[:2]
    d = og * ig
    codes, scales = layer.codes, layer.scales
    units, num, _ = codes.shape
    flat_codes = [codes[..., slot].reshape(-1) for slot in range(m)]

    def forward(books: torch.Tensor) -> torch.Tensor:  # codebooks → Ŵ rows
        return from_groups(decode(codes, books) * scales[:, None, None], og, ig)

    def adjoint(rows: torch.Tensor) -> torch.Tensor:  # rows → codebook space
        groups = (to_groups(rows, og, ig) * scales[:, None, None]).reshape(-1, d)
        return torch.stack(
            [torch.zeros(k, d, dtype=rows.dtype, device=rows.device).index_add_(0, c, groups) for c in flat_codes]
        )

    # preconditioner: each codeword's block Σ s_u² H_jj over the groups that use it
    weight_sq = (scales**2)[:, None].expand(units, num).reshape(-1)
    group_index = torch.arange(num, device=codes.device).repeat(units)
    blocks = []
    for c in flat_codes:
        counts = torch.zeros(k * num, dtype=metric.dtype, device=metric.device)
        counts.index_add_(0, c * num + group_index, weight_sq)
        blocks.append(torch.einsum("kj,jde->kde", counts.reshape(k, num), metric))
    precond = torch.stack(blocks)
    ridge = 1e-6 * float(metric.diagonal(dim1=1, dim2=2).mean()) * float(weight_sq.mean()) + 1e-20
    precond += ridge * torch.eye(d, dtype=precond.dtype, device=precond.device)
    chol = torch.linalg.cholesky(precond)

    def solve(r: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(r[..., None], chol)[..., 0]

    x = layer.codebooks.reshape(m, k, d).clone()
    r = adjoint(products.wh - products.rh)  # −½ gradient at the current codebooks
    z = solve(r)
    p = z.clone()
    rz = (r * z).sum()
    for _ in range(settings.cg_steps):
        if float(rz) <= 0:
            break
        ap_rows = forward(p) @ hessian
        ap = adjoint(ap_rows)
        denom = (p * ap).sum()
        if float(denom) <= 0:
            break
        alpha = rz / denom
        x += alpha * p
        products.rh += alpha * ap_rows
        r -= alpha * ap
        z = solve(r)
        rz_new = (r * z).sum()
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x.reshape(m, k, og, ig)


def refit_scales(weight: torch.Tensor, layer: AqLayer, settings: AqSettings, products: Products) -> torch.Tensor:
    """Each unit's scale by least squares given codes and codebooks (kept where undefined); updates ``products.rh``."""
    og, ig = settings.out_group_size, settings.in_group_size
    m, k = layer.codebooks.shape[:2]
    unscaled = from_groups(decode(layer.codes, layer.codebooks.reshape(m, k, og * ig)), og, ig)
    projected = products.rh / layer.scales.repeat_interleave(og)[:, None]  # unscaled Ŵ · H
    num = (projected * weight).sum(1).reshape(-1, og).sum(1)
    den = (projected * unscaled).sum(1).reshape(-1, og).sum(1)
    fitted = num / den.clamp_min(1e-30)
    scales = torch.where((den > 0) & (fitted.abs() > 1e-8), fitted, layer.scales)
    products.rh = projected * scales.repeat_interleave(og)[:, None]
    return scales


# ------------------------------------------------------------------------------ one layer


@dataclass
class Products:
    """``W H`` and ``Ŵ H`` (damped ``H``), kept up to date so that each step multiplies by ``H`` little."""

    wh: torch.Tensor
    rh: torch.Tensor


def fit_layer(weight: torch.Tensor, hessian: torch.Tensor, settings: AqSettings) -> tuple[AqLayer, float]:
    """Quantize ``weight [out, in]`` against ``hessian [in, in]``: the layer and its relative output error."""
    weight = weight.detach().to(torch.float32)
    hessian = hessian.detach().to(device=weight.device, dtype=torch.float32)
    damped = hessian.clone()
    mean_diag = float(damped.diagonal().mean())
    damp = settings.damp * mean_diag if mean_diag > 0 else 1.0
    damped.diagonal().add_(damp)
    metric = diagonal_blocks(damped, settings.out_group_size, settings.in_group_size)
    generator = torch.Generator().manual_seed(settings.seed)
    layer = initialise(weight, settings, generator)
    products = Products(wh=weight @ damped, rh=layer.dequantize() @ damped)
    for _ in range(settings.rounds):
        layer.codes = search_codes(weight, layer, damped, metric, settings, products)
        layer.codebooks = refit_codebooks(layer, damped, metric, settings, products)
        layer.scales = refit_scales(weight, layer, settings, products)
    # relative output error with the undamped H: tr(W H Wᵀ) = tr(W H_damped Wᵀ) − damp ‖W‖²
    err = weight - layer.dequantize()
    num = float(((err @ hessian) * err).sum())
    den = float((products.wh * weight).sum()) - damp * float((weight * weight).sum())
    return layer, (max(num, 0.0) / den) ** 0.5 if den > 0 else 0.0
