"""QuIP#: the E8P lattice codebooks, randomized Hadamard transforms, BlockLDLQ and a build on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.quantization import e8p
from cluster.quantization.checks import ModelShape, recipe_shape_problems
from cluster.quantization.hadamard import (
    RandomHadamard,
    factor_width,
    restore_weight,
    transform_hessian,
    transform_weight,
)
from cluster.quantization.quip_sharp import (
    QuipSharpParams,
    block_ldl,
    block_ldlq,
    codebook_for,
    proxy_error,
    quantize_group,
    shape_problems,
)
from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.rtn import quantize_tensor_rtn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _on_shifted_e8(points: torch.Tensor) -> torch.Tensor:
    """Whether each row lies on E8 + 1/4: after the shift all coordinates are integers or all
    half-integers, with an even sum."""
    y = points.double() - 0.25
    integer = (y == y.round()).all(dim=1)
    half = (y - 0.5 == (y - 0.5).round()).all(dim=1)
    even = torch.remainder(y.sum(dim=1), 2) == 0
    return (integer | half) & even


# ------------------------------------------------------------------------------- E8P


@pytest.fixture(scope="module")
def book() -> torch.Tensor:
    return e8p.e8p_codebook()


def test_e8p_has_65536_distinct_points_of_the_shifted_e8_lattice(book: torch.Tensor) -> None:
    assert book.shape == (e8p.E8P_SIZE, 8)
    assert torch.unique(book, dim=0).shape[0] == 1 << 16
    assert bool(_on_shifted_e8(book).all())
    # Symmetric under negation, like the weights it quantizes.
    negated = {tuple(row) for row in (-book).tolist()}
    assert negated == {tuple(row) for row in book.tolist()}


def test_e8p_is_the_paper_construction(book: torch.Tensor) -> None:
    source = e8p.source_vectors()
    norms = (source**2).sum(dim=1)
    assert source.shape == (256, 8) and torch.unique(source, dim=0).shape[0] == 256
    # 227 absolute-value vectors of D̂8 with squared norm ≤ 10 (all of them), padded with 29 of norm 12.
    assert int((norms <= 10).sum()) == 227 and int((norms == 12).sum()) == 29
    assert set(torch.unique(source).tolist()) == {0.5, 1.5, 2.5}
    # Every entry is source ⊙ signs ± 1/4 with an even signed sum (7 free sign bits + 1 shift bit).
    for shift in (0.25, -0.25):
        half_integer = ((book - shift).abs() - 0.5).remainder(1).eq(0).all(dim=1)
        part = book[half_integer] - shift
        assert part.shape[0] == 1 << 15
        assert bool((torch.remainder(part.sum(dim=1), 2) == 0).all())
        abs_rows = {tuple(r) for r in part.abs().tolist()}
        assert abs_rows == {tuple(r) for r in source.tolist()}
    # The first 227 sources hold every half-integer absolute vector of squared norm ≤ 10.
    levels = torch.cartesian_prod(*[torch.tensor([0.5, 1.5, 2.5, 3.5])] * 8)
    assert int(((levels**2).sum(dim=1) <= 10).sum()) == 227


def test_e8p_indices_decode_to_their_codewords(book: torch.Tensor) -> None:
    index = torch.tensor([0, 1, 255, 256, 40000, 65535])
    assert torch.equal(e8p.e8p_decode(index), book[index])


@pytest.mark.parametrize("scale", [0.4, 1.04, 2.5])
def test_e8p_nearest_equals_brute_force(scale: float) -> None:
    x = torch.randn(1500, 8, generator=torch.Generator().manual_seed(7)) * scale
    fast, index = e8p.e8p_nearest(x)
    slow, _ = e8p.e8p_brute_force(x)
    d_fast = ((x - fast) ** 2).sum(dim=1)
    d_slow = ((x - slow) ** 2).sum(dim=1)
    assert torch.allclose(d_fast, d_slow, atol=1e-5), float((d_fast - d_slow).abs().max())
    assert torch.equal(e8p.e8p_decode(index), fast)
    unindexed, none = e8p.e8p_nearest(x, index=False)
    assert none is None and torch.equal(unindexed, fast)


def test_e8p_beats_scalar_two_bit_quantization_on_gaussians() -> None:
    x = torch.randn(20000, 8, generator=torch.Generator().manual_seed(3))
    std = codebook_for(2).gaussian_std
    q, _ = e8p.e8p_nearest(x * std)
    mse = float(((x * std - q) ** 2).mean()) / std**2
    # Lloyd-Max (the best scalar 2-bit quantizer) reaches 0.1175 on a unit Gaussian; E8P ≈ 0.092.
    assert mse < 0.095


def test_one_bit_codebook_on_the_lattice_and_searched_exactly() -> None:
    ones = e8p.one_bit_codebook()
    assert ones.shape == (256, 8) and torch.unique(ones, dim=0).shape[0] == 256
    assert bool(_on_shifted_e8(ones).all())
    x = torch.randn(2000, 8, generator=torch.Generator().manual_seed(5)) * 0.6
    fast, index = e8p.one_bit_nearest(x)
    slow, _ = e8p.nearest_in(x, ones)
    assert torch.allclose(((x - fast) ** 2).sum(dim=1), ((x - slow) ** 2).sum(dim=1), atol=1e-5)
    assert torch.equal(ones[index], fast)


def test_one_bit_lattice_residual_beats_a_sign_quantizer() -> None:
    """The 3-bit mode's residual codebook against the plain 1-bit alternative, both at their best scale."""
    x = torch.randn(12000, 8, generator=torch.Generator().manual_seed(9)) * codebook_for(3).gaussian_std
    first, _ = e8p.e8p_nearest(x)
    residual = x - first
    lattice = min(float(((residual - r * e8p.one_bit_nearest(residual / r)[0]) ** 2).mean()) for r in (0.4, 0.45, 0.5))
    sign = min(float(((residual - c * residual.sign()) ** 2).mean()) for c in (0.2, 0.22, 0.25, 0.28, 0.3))
    assert lattice < 0.98 * sign


# ------------------------------------------------------------------------------- Hadamard


@pytest.mark.parametrize(("n", "kind"), [(576, "paley"), (1536, "paley"), (256, "none"), (680, "random")])
def test_rht_is_orthogonal_and_invertible(n: int, kind: str) -> None:
    t = RandomHadamard.create(n, seed=11)
    assert t.kind == kind == factor_width(n)[2]
    matrix = t.matrix()
    assert torch.allclose(matrix @ matrix.T, torch.eye(n), atol=1e-5)
    x = torch.randn(5, n)
    assert torch.allclose(t.invert(t.apply(x)), x, atol=1e-5)
    assert torch.allclose(t.apply(x), x @ matrix.T, atol=1e-4)
    if kind != "random":  # a Hadamard matrix: every entry ±1/√n, the most incoherent possible
        assert torch.allclose(matrix.abs(), torch.full((n, n), n**-0.5), atol=1e-6)
    # Other seeds, other signs.
    assert not torch.equal(RandomHadamard.create(n, seed=12).signs, t.signs)


def test_rht_of_weights_and_hessians() -> None:
    out_t, in_t = RandomHadamard.create(192, seed=1), RandomHadamard.create(576, seed=2)
    w = torch.randn(192, 576)
    w_t = transform_weight(w, out_t, in_t)
    assert torch.allclose(w_t, out_t.matrix() @ w @ in_t.matrix().T, atol=1e-4)
    assert torch.allclose(restore_weight(w_t, out_t, in_t), w, atol=1e-4)
    x = torch.randn(300, 576)
    h = x.T @ x / 300
    assert torch.allclose(transform_hessian(h, in_t), in_t.matrix() @ h @ in_t.matrix().T, atol=1e-4)


# ------------------------------------------------------------------------------- BlockLDLQ


def _problem(m: int = 96, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian weights and a correlated Hessian with uneven input scales and a few outlier features."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(m, n, generator=g)
    mix = torch.eye(n) + torch.randn(n, n, generator=g) / n**0.5
    scales = torch.exp(torch.randn(n, generator=g))
    scales[:4] *= 20
    x = torch.randn(2048, n, generator=g) @ mix * scales
    return w, x.T @ x / x.shape[0]


def _relative(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> float:
    return math.sqrt(float(proxy_error(w - w_hat, h).sum() / proxy_error(w, h).sum()))


def test_block_ldl_factors_the_hessian() -> None:
    _, h = _problem(n=64)
    u, d = block_ldl(h.double())
    blocks = torch.block_diag(*d)
    assert torch.allclose(u @ blocks @ u.T, h.double(), rtol=1e-8, atol=1e-8 * float(h.abs().max()))
    for k in range(8):  # unit diagonal blocks, zero below them
        block = slice(8 * k, 8 * k + 8)
        assert torch.allclose(u[block, block], torch.eye(8, dtype=u.dtype))
        assert bool((u[8 * k + 8 :, block] == 0).all())


def _quip(w: torch.Tensor, h: torch.Tensor, bits: int, seed: int = 0):
    params = QuipSharpParams(seed=seed)
    outs = [RandomHadamard.create(w.shape[0], seed + 1)]
    return quantize_group([w], h, codebook_for(bits), params, outs, RandomHadamard.create(w.shape[1], seed + 2))[0]


def test_two_bit_quip_sharp_beats_rtn_and_more_bits_help() -> None:
    w, h = _problem()
    results = {bits: _quip(w, h, bits) for bits in (2, 3, 4)}
    for result in results.values():
        assert result.weight is not None and result.weight.shape == w.shape
        assert result.relative_error == pytest.approx(_relative(w, result.weight, h), rel=1e-4)
    rtn_group = _relative(w, quantize_tensor_rtn(w, 2, 64, symmetric=False), h)  # 2.5 bits with its scales
    rtn_channel = _relative(w, quantize_tensor_rtn(w, 2, None, symmetric=False), h)
    two = results[2].relative_error
    assert two < 0.5 * rtn_group and two < rtn_channel
    assert results[4].relative_error < results[3].relative_error < two
    assert results[4].relative_error < 0.4 * two
    # Bits a packed checkpoint would hold: the codes plus scales and transform signs.
    for bits, result in results.items():
        assert bits <= result.stored_bits / w.numel() < bits + 0.02


def test_feedback_and_incoherence_each_lower_the_error() -> None:
    w, h = _problem()
    book = codebook_for(2)
    out_t, in_t = RandomHadamard.create(w.shape[0], 1), RandomHadamard.create(w.shape[1], 2)
    w_t = transform_weight(w, out_t, in_t)
    scale = float(w_t.pow(2).mean().sqrt()) / book.gaussian_std
    plain = book.round((w_t / scale).reshape(-1, 8)).reshape(w.shape) * scale
    no_feedback = _relative(w, restore_weight(plain, out_t, in_t), h)
    damped = h + 0.01 * torch.diagonal(h).mean() * torch.eye(h.shape[0])
    u, _ = block_ldl(damped)
    scale_raw = float(w.pow(2).mean().sqrt()) / book.gaussian_std
    no_rht = _relative(w, block_ldlq(w / scale_raw, u, book) * scale_raw, h)
    full = _quip(w, h, 2).relative_error
    assert full < 0.8 * no_feedback
    assert full < 0.8 * no_rht


def test_quantize_group_is_deterministic_per_seed() -> None:
    w, h = _problem(m=32, n=64)
    assert torch.equal(_quip(w, h, 2, seed=0).weight, _quip(w, h, 2, seed=0).weight)
    assert not torch.equal(_quip(w, h, 2, seed=0).weight, _quip(w, h, 2, seed=5).weight)


# ------------------------------------------------------------------------------- recipes


def test_params_and_shape_checks() -> None:
    recipe = QuantRecipe(method="quip_sharp", bits=2)
    assert recipe.params == QuipSharpParams().model_dump(mode="json")
    assert recipe.calibration is not None
    with pytest.raises(ValueError, match="quip_sharp quantizes to 2 bits"):
        QuantRecipe(method="quip_sharp", bits=5)
    with pytest.raises(ValueError, match="params.fine_tune"):
        QuantRecipe(method="quip_sharp", bits=2, params={"fine_tune": True})
    with pytest.raises(ValueError, match="scale_grid"):
        QuantRecipe(method="quip_sharp", bits=2, params={"scale_grid": []})
    good = ModelShape(input_widths={"hidden_size": 576, "intermediate_size": 1536}, num_blocks=30)
    assert shape_problems(recipe, good) == [] == recipe_shape_problems(recipe, good)
    bad = ModelShape(input_widths={"hidden_size": 100, "intermediate_size": 256}, num_blocks=2)
    problems = recipe_shape_problems(recipe, bad)
    assert len(problems) == 1 and "hidden_size 100 is not a multiple of 8" in problems[0]


# ------------------------------------------------------------------------------- build


def test_build_on_the_tiny_model_loads_and_generates(tiny_model_dir: Path, tmp_path: Path) -> None:
    from cluster.quantization.build import build_checkpoint
    from cluster.quantization.texts import load_text_set

    recipe = QuantRecipe(method="quip_sharp", bits=2, calibration={"samples": 6, "seq_len": 64})
    out = tmp_path / "quip"
    report = build_checkpoint(tiny_model_dir, recipe, out, calibration_texts=load_text_set("calibration")[:6])
    assert report["storage"] == "simulated" and report["backend"] == "qtrust quip_sharp"
    assert report["layers_quantized"] == "14" and report["codebook"] == "E8P"
    assert report["calibration_samples"] == "6"
    assert 2.0 <= float(report["bits_per_weight"]) < 2.05
    assert 0 < float(report["mean_relative_output_error"]) < 0.5
    json.dumps(report)
    assert all(isinstance(v, str) for k, v in report.items() if k not in ("device", "dtype"))

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    before = base.model.layers[0].mlp.down_proj.weight
    after = model.model.layers[0].mlp.down_proj.weight
    assert after.shape == before.shape and not torch.equal(after, before)
    assert torch.equal(model.get_input_embeddings().weight, base.get_input_embeddings().weight)
    ids = tokenizer("The capital of France is", return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 5
    assert torch.isfinite(model(**ids).logits).all()
