"""Round-to-nearest weight quantization on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from cluster.quantization.rtn import quantize_model_rtn, quantize_tensor_rtn

try:
    from tests.support.tiny_model import build_tiny_model
except ImportError:  # pytest run without the repository root on sys.path
    from tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def _load(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _linear_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def test_rtn_changes_linears_but_not_head_or_embeddings(tiny_path: Path) -> None:
    model = _load(tiny_path)
    before = _linear_weights(model)
    embed_before = model.get_input_embeddings().weight.detach().clone()
    report = quantize_model_rtn(model, bits=4, group_size=32, symmetric=False)
    after = _linear_weights(model)
    body = [n for n in before if n != "lm_head"]
    assert report.layers_quantized == len(body) == 2 * 7  # q,k,v,o,gate,up,down per layer
    assert "lm_head" in report.layers_skipped
    for name in body:
        assert not torch.equal(before[name], after[name]), name
    assert torch.equal(before["lm_head"], after["lm_head"])
    assert torch.equal(embed_before, model.get_input_embeddings().weight)
    assert 0 < report.mean_relative_error < 1


def test_tied_head_is_skipped_even_under_another_name(tiny_path: Path) -> None:
    model = _load(tiny_path)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    embed_before = model.get_input_embeddings().weight.detach().clone()
    report = quantize_model_rtn(model, bits=2, group_size=32, symmetric=False, skip=())
    assert "lm_head" in report.layers_skipped
    assert torch.equal(embed_before, model.get_input_embeddings().weight)


@pytest.mark.parametrize("symmetric", [False, True])
def test_error_shrinks_with_more_bits(tiny_path: Path, symmetric: bool) -> None:
    errors = {}
    for bits in (2, 4, 8):
        model = _load(tiny_path)
        errors[bits] = quantize_model_rtn(model, bits, 64, symmetric).mean_relative_error
    assert errors[8] < errors[4] < errors[2]
    # Uniform rounding of a roughly Gaussian group: 8 bits leaves well under 1 % relative error.
    assert errors[8] < 0.01


def test_rtn_is_deterministic(tiny_path: Path) -> None:
    a, b = _load(tiny_path), _load(tiny_path)
    quantize_model_rtn(a, 3, 32, False)
    quantize_model_rtn(b, 3, 32, False)
    for (name, wa), wb in zip(_linear_weights(a).items(), _linear_weights(b).values()):
        assert torch.equal(wa, wb), name


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("group_size", [16, None])
def test_per_element_error_within_half_a_step(symmetric: bool, group_size: int | None) -> None:
    torch.manual_seed(1)
    weight = torch.randn(24, 64) * 0.05
    weight[0, :16] = 0.0  # an all-zero group must stay exactly zero
    bits = 8
    deq = quantize_tensor_rtn(weight, bits, group_size, symmetric)
    size = weight.shape[1] if group_size is None else group_size
    groups = weight.reshape(weight.shape[0], -1, size)
    if symmetric:
        step = groups.abs().amax(-1, keepdim=True) / (2 ** (bits - 1) - 1)
    else:
        span = groups.amax(-1, keepdim=True).clamp_min(0) - groups.amin(-1, keepdim=True).clamp_max(0)
        step = span / (2**bits - 1)
    error = (deq - weight).abs().reshape_as(groups)
    # Round-to-nearest: each value moves by at most half a quantization step (plus float slack).
    assert torch.all(error <= step / 2 * (1 + 1e-4) + 1e-9)
    assert torch.equal(deq[0, :16], torch.zeros(16))
    levels = {len(torch.unique(g)) for g in deq.reshape_as(groups).reshape(-1, size)}
    assert max(levels) <= 2**bits


def test_two_bits_use_at_most_four_levels() -> None:
    torch.manual_seed(2)
    weight = torch.randn(8, 32)
    for symmetric, allowed in ((False, 4), (True, 3)):
        deq = quantize_tensor_rtn(weight, 2, 32, symmetric)
        for row in deq:
            assert len(torch.unique(row)) <= allowed


def test_group_size_must_divide_in_features(tiny_path: Path) -> None:
    model = _load(tiny_path)
    before = _linear_weights(model)
    with pytest.raises(ValueError) as info:
        quantize_model_rtn(model, bits=4, group_size=48, symmetric=False)
    text = str(info.value)
    assert "group_size 48" in text
    assert "in_features 128" in text
    assert "model.layers.0.self_attn.q_proj" in text
    assert "such as 32" in text
    # Nothing was changed before the error.
    for name, weight in _linear_weights(model).items():
        assert torch.equal(weight, before[name]), name


def test_per_channel_group(tiny_path: Path) -> None:
    model = _load(tiny_path)
    report = quantize_model_rtn(model, bits=4, group_size=None, symmetric=True)
    assert report.layers_quantized == 14
    assert report.describe()["rtn_layers_quantized"] == "14"
