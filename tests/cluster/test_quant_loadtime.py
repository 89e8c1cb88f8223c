"""Load-time quantization (bitsandbytes, hqq) on the tiny model, with the real libraries."""

from __future__ import annotations

from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from hqq.core.quantize import HQQLinear
from torch import nn

from cluster.quantization.loadtime import apply_hqq, check_bnb_available, load_bnb
from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.targets import QuantizationError

#: Relative logit difference of bnb int8 on the tiny model measured at 0.032; nf4 0.32, fp4 0.48.
INT8_MAX_RELATIVE_DIFF = 0.1


def _load(path: Path) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _linears(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear-like layer: nn.Linear (bnb layers subclass it) and HQQLinear."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, HQQLinear))}


def _generates(model: nn.Module, ids: torch.Tensor) -> None:
    with torch.no_grad():
        out = model.generate(input_ids=ids[:, :6], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 10)
    assert torch.equal(out[:, :6], ids[:, :6])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(3, 400, (1, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    return _logits(_load(tiny_model_dir), ids)


# ----------------------------------------------------------------------------------- bnb


def test_bnb_available_on_this_machine() -> None:
    assert check_bnb_available() is None
    assert check_bnb_available("cpu") is None


def test_bnb_rejects_other_recipes(tiny_model_dir: Path) -> None:
    with pytest.raises(QuantizationError, match="bnb recipe"):
        load_bnb(tiny_model_dir, QuantRecipe(method="hqq", bits=4), dtype="float32", trust_remote_code=False)


@pytest.mark.parametrize("kind", ["int8", "nf4", "fp4"])
def test_bnb_quantizes_at_load(tiny_model_dir: Path, ids: torch.Tensor, reference: torch.Tensor, kind: str) -> None:
    recipe = QuantRecipe(method="bnb", bnb_type=kind)
    model, info = load_bnb(tiny_model_dir, recipe, dtype="float32", trust_remote_code=False)
    expected = bnb.nn.Linear8bitLt if kind == "int8" else bnb.nn.Linear4bit
    layers = _linears(model)
    quantized = [n for n, m in layers.items() if isinstance(m, expected)]
    assert sorted(set(layers) - set(quantized)) == ["lm_head"]
    assert len(quantized) == 14
    # The tied head stays a plain linear sharing the embedding table.
    assert type(model.lm_head) is nn.Linear
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()

    logits = _logits(model, ids)
    diff = _relative_diff(logits, reference)
    assert torch.isfinite(logits).all()
    assert diff > 1e-4  # something was quantized
    if kind == "int8":
        assert diff < INT8_MAX_RELATIVE_DIFF
    else:
        assert diff < 1.0
    _generates(model, ids)

    assert info["layers_quantized"] == "14"
    assert info["layers_full_precision"] == "lm_head"
    assert info["bits_per_layer"] == f"{recipe.bits}:14"
    assert info["bnb_type"] == kind
    assert info["backend"] == f"bitsandbytes {bnb.__version__}"
    assert float(info["quantize_s"]) >= 0


def test_bnb_8bit_is_closer_than_4bit(tiny_model_dir: Path, ids: torch.Tensor, reference: torch.Tensor) -> None:
    diffs = {}
    for kind in ("int8", "nf4"):
        model, _ = load_bnb(
            tiny_model_dir, QuantRecipe(method="bnb", bnb_type=kind), dtype="float32", trust_remote_code=False
        )
        diffs[kind] = _relative_diff(_logits(model, ids), reference)
    assert diffs["int8"] < diffs["nf4"] / 3


def test_bnb_keeps_named_layers(tiny_model_dir: Path) -> None:
    recipe = QuantRecipe(method="bnb", bnb_type="nf4", keep_full_precision=["lm_head", "down_proj"])
    model, info = load_bnb(tiny_model_dir, recipe, dtype="float32", trust_remote_code=False)
    for name, module in _linears(model).items():
        if name.endswith("down_proj") or name == "lm_head":
            assert type(module) is nn.Linear, name
        else:
            assert isinstance(module, bnb.nn.Linear4bit), name
    assert info["layers_quantized"] == "12"
    assert info["layers_full_precision"].split(",") == [
        "model.layers.0.mlp.down_proj",
        "model.layers.1.mlp.down_proj",
        "lm_head",
    ]


# ----------------------------------------------------------------------------------- hqq


@pytest.fixture(scope="module")
def hqq_runs(tiny_model_dir: Path, ids: torch.Tensor, reference: torch.Tensor) -> dict[int, dict[str, object]]:
    """The tiny model quantized by hqq at 8, 4, 3 and 2 bits (group size 64)."""
    original = _load(tiny_model_dir)
    weights = {n: m.weight.detach().clone() for n, m in original.named_modules() if isinstance(m, nn.Linear)}
    runs: dict[int, dict[str, object]] = {}
    for bits in (8, 4, 3, 2):
        model = _load(tiny_model_dir)
        info = apply_hqq(model, QuantRecipe(method="hqq", bits=bits, group_size=64), device="cpu")
        errors = [
            float((layer.dequantize().float() - weights[name]).norm() / weights[name].norm())
            for name, layer in model.named_modules()
            if isinstance(layer, HQQLinear)
        ]
        runs[bits] = {
            "model": model,
            "info": info,
            "logit_diff": _relative_diff(_logits(model, ids), reference),
            "weight_error": sum(errors) / len(errors),
        }
    return runs


def test_hqq_replaces_target_layers(hqq_runs: dict[int, dict[str, object]]) -> None:
    for bits, run in hqq_runs.items():
        model = run["model"]
        layers = _linears(model)
        hqq_layers = {n: m for n, m in layers.items() if isinstance(m, HQQLinear)}
        assert len(hqq_layers) == 14
        assert all(m.meta["nbits"] == bits for m in hqq_layers.values())
        assert all(m.meta["group_size"] == 64 for m in hqq_layers.values())
        assert type(model.lm_head) is nn.Linear
        assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        info = run["info"]
        assert info["layers_quantized"] == "14"
        assert info["layers_full_precision"] == "lm_head"
        assert info["bits_per_layer"] == f"{bits}:14"
        assert info["backend"].startswith("hqq ")


def test_hqq_error_grows_as_bits_shrink(hqq_runs: dict[int, dict[str, object]]) -> None:
    order = [8, 4, 3, 2]
    logit_diffs = [hqq_runs[b]["logit_diff"] for b in order]
    weight_errors = [hqq_runs[b]["weight_error"] for b in order]
    assert logit_diffs == sorted(logit_diffs) and len(set(logit_diffs)) == 4, logit_diffs
    assert weight_errors == sorted(weight_errors) and len(set(weight_errors)) == 4, weight_errors
    assert weight_errors[0] < 0.01  # 8 bits: close to the original weights
    assert logit_diffs[0] < 0.05


def test_hqq_model_still_generates(hqq_runs: dict[int, dict[str, object]], ids: torch.Tensor) -> None:
    _generates(hqq_runs[4]["model"], ids)


def test_hqq_mixed_precision(tiny_model_dir: Path) -> None:
    model = _load(tiny_model_dir)
    recipe = QuantRecipe(method="hqq", bits=4, group_size=32, overrides=[{"blocks": [0], "bits": 8}])
    info = apply_hqq(model, recipe, device="cpu")
    for name, module in _linears(model).items():
        if name == "lm_head":
            assert type(module) is nn.Linear
            continue
        assert isinstance(module, HQQLinear), name
        assert module.meta["nbits"] == (8 if ".layers.0." in name else 4), name
        assert module.meta["group_size"] == 32
    assert info["bits_per_layer"] == "4:7,8:7"


def test_hqq_keeps_named_layers(tiny_model_dir: Path) -> None:
    model = _load(tiny_model_dir)
    info = apply_hqq(
        model, QuantRecipe(method="hqq", bits=4, keep_full_precision=["lm_head", "down_proj"]), device="cpu"
    )
    for name, module in _linears(model).items():
        kept = name.endswith("down_proj") or name == "lm_head"
        assert (type(module) is nn.Linear) if kept else isinstance(module, HQQLinear), name
    assert info["layers_quantized"] == "12"


def test_hqq_needs_a_group_size(tiny_model_dir: Path) -> None:
    model = _load(tiny_model_dir)
    with pytest.raises(QuantizationError, match="group_size: 64"):
        apply_hqq(model, QuantRecipe(method="hqq", bits=4, group_size=None), device="cpu")
    with pytest.raises(QuantizationError, match="multiples of 8"):
        apply_hqq(model, QuantRecipe(method="hqq", bits=4, group_size=4), device="cpu")
    assert not any(isinstance(m, HQQLinear) for m in model.modules())  # nothing was changed
