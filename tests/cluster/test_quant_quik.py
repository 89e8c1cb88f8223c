"""QUIK (outlier-aware GPTQ weights, per-token 4-bit activations) on the tiny model and on single layers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.engines.base import GenerationRequest, GenerationSettings
from cluster.quantization.build import build_checkpoint
from cluster.quantization.checks import ModelShape, recipe_shape_problems
from cluster.quantization.layer_inputs import tokenize
from cluster.quantization.loading import LoadRequest
from cluster.quantization.quik import QUIK_FILE, QuikParams, layer_bits, load_quik
from cluster.quantization.quik_linear import (
    fake_quantize_activations,
    install_activation_quantization,
    quantize_layer,
)
from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.rtn import quantize_model_rtn
from cluster.quantization.texts import load_text_set
from cluster.variants.hf import HFLoader
from cluster.variants.key import variant_key

SEQ_LEN = 48
TEXTS = load_text_set("calibration")[:6]
TINY_SHAPE = ModelShape(input_widths={"hidden_size": 128, "intermediate_size": 256}, num_blocks=2)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _recipe(**params) -> QuantRecipe:
    return QuantRecipe(method="quik", bits=4, calibration={"samples": len(TEXTS), "seq_len": SEQ_LEN}, params=params)


def _build(model_dir: Path, out: Path, **params) -> dict[str, str]:
    return build_checkpoint(model_dir, _recipe(**params), out, calibration_texts=TEXTS)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.fixture(scope="module")
def built(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The default QUIK build of the tiny model (8 outliers of 128, down_proj 8-bit with 16 of 256)."""
    out = tmp_path_factory.mktemp("quik") / "default"
    return out, _build(tiny_model_dir, out)


@pytest.fixture(scope="module")
def built_frozen(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build whose outlier columns are not touched by GPTQ (``compensate_outliers: false``)."""
    out = tmp_path_factory.mktemp("quik") / "frozen"
    _build(tiny_model_dir, out, compensate_outliers=False)
    return out


# ------------------------------------------------------------------------------ recipe


def test_params_are_validated_with_clear_messages() -> None:
    assert _recipe().params == QuikParams().model_dump(mode="json")  # defaults filled in and keyed
    with pytest.raises(ValueError, match=r"params\.outlier_features: .*greater than or equal to 0.*method quik takes"):
        _recipe(outlier_features=-1)
    with pytest.raises(ValueError, match=r"params\.activation_bits"):
        _recipe(activation_bits=3)
    with pytest.raises(ValueError, match=r"params\.codebooks"):
        _recipe(codebooks=2)
    with pytest.raises(ValueError, match="quik quantizes weights to 4 bits"):
        QuantRecipe(method="quik", bits=3)


def test_outlier_count_must_fit_the_model() -> None:
    assert recipe_shape_problems(_recipe(), TINY_SHAPE) == []
    assert recipe_shape_problems(_recipe(outlier_features=127), TINY_SHAPE) == []
    problems = recipe_shape_problems(_recipe(outlier_features=128), TINY_SHAPE)
    assert len(problems) == 1
    assert "params.outlier_features 128 must be below hidden_size 128" in problems[0]
    problems = recipe_shape_problems(_recipe(sensitive_outlier_features=300), TINY_SHAPE)
    assert problems == ["params.sensitive_outlier_features 300 must be below intermediate_size 256; use at most 255"]


def test_key_changes_with_outlier_features() -> None:
    keys = {
        variant_key("tiny", _recipe(**params).key_fields(), "digest", "float32")
        for params in ({}, {"outlier_features": 8}, {"outlier_features": 16}, {"activation_bits": 8})
    }
    assert len(keys) == 4


# ------------------------------------------------------------------------------ single layers


def test_activation_quantization_is_per_token_and_keeps_outliers() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 16, generator=gen)
    x[..., 3] *= 100.0  # an outlier feature
    mask = torch.zeros(16, dtype=torch.bool)
    mask[[3, 7]] = True
    for symmetric in (False, True):
        out = fake_quantize_activations(x, mask, bits=4, symmetric=symmetric)
        assert torch.equal(out[..., mask], x[..., mask])
        assert not torch.equal(out[..., ~mask], x[..., ~mask])
        for token in out.reshape(-1, 16):
            assert token[~mask].unique().numel() <= 16  # one 4-bit grid per token
        # the outlier does not widen the grid: the error stays a fraction of the normal features' range
        err = (out - x)[..., ~mask].abs().amax(dim=-1)
        assert torch.all(err <= x[..., ~mask].abs().amax(dim=-1) / 6)
        # per token: scaling one token rescales its own result only
        y = x.clone()
        y[0, 1] *= 1000.0
        out_y = fake_quantize_activations(y, mask, bits=4, symmetric=symmetric)
        torch.testing.assert_close(out_y[0, 1], out[0, 1] * 1000.0, rtol=1e-5, atol=1e-3)
        keep = torch.ones(2, 5, dtype=torch.bool)
        keep[0, 1] = False
        assert torch.equal(out_y[keep], out[keep])


def test_activation_hook_quantizes_the_layer_input() -> None:
    layer = torch.nn.Sequential(torch.nn.Linear(16, 4))
    x = torch.randn(3, 16)
    plain = layer(x)
    handles = install_activation_quantization(layer, {"0": ([1, 5], 4)})
    mask = torch.zeros(16, dtype=torch.bool)
    mask[[1, 5]] = True
    expected = torch.nn.functional.linear(fake_quantize_activations(x, mask, 4), layer[0].weight, layer[0].bias)
    assert torch.equal(layer(x), expected)
    assert not torch.equal(layer(x), plain)
    handles["0"].remove()
    assert torch.equal(layer(x), plain)
    with pytest.raises(ValueError, match="out of range"):
        install_activation_quantization(layer, {"0": ([16], 4)})
    with pytest.raises(ValueError, match="no such layer"):
        install_activation_quantization(layer, {"1": ([0], 4)})


def _planted(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 64, generator=gen)
    planted = [5, 17, 40, 63]
    x[:, planted] *= 40.0
    w = torch.randn(32, 64, generator=gen) / 8
    return x, w, planted


def _output_error(x: torch.Tensor, w: torch.Tensor, outliers: int, **kwargs) -> tuple[float, list[int]]:
    h = x.T @ x / x.shape[0]
    layer = quantize_layer(w, h, x.abs().amax(dim=0), outliers, 4, **kwargs)
    mask = torch.zeros(x.shape[1], dtype=torch.bool)
    mask[layer.outliers] = True
    y = x @ w.T
    y_hat = fake_quantize_activations(x, mask, 4) @ layer.weight.T
    return float((y_hat - y).norm() / y.norm()), layer.outliers


def test_outliers_are_the_largest_features_and_cut_the_output_error() -> None:
    x, w, planted = _planted()
    with_outliers, found = _output_error(x, w, outliers=4)
    without, none = _output_error(x, w, outliers=0)
    assert found == planted and none == []
    assert with_outliers < without / 3, (with_outliers, without)


def test_outlier_columns_absorb_error_or_stay_frozen() -> None:
    x, w, planted = _planted(1)
    h = x.T @ x / x.shape[0]
    frozen = quantize_layer(w, h, x.abs().amax(dim=0), 4, 4, compensate_outliers=False)
    compensating = quantize_layer(w, h, x.abs().amax(dim=0), 4, 4)
    assert torch.equal(frozen.weight[:, planted], w[:, planted])
    assert not torch.equal(compensating.weight[:, planted], w[:, planted])
    assert compensating.relative_error < frozen.relative_error
    rest = [j for j in range(64) if j not in planted]
    for layer in (frozen, compensating):
        for row in layer.weight[:, rest]:
            assert row.unique().numel() <= 15  # symmetric 4-bit grid: levels -7..7


# ------------------------------------------------------------------------------ the tiny model


def test_build_report_and_file(built: tuple[Path, dict]) -> None:
    out, report = built
    assert report["storage"] == "simulated" and report["backend"] == "qtrust quik"
    assert report["calibration_samples"] == str(len(TEXTS))
    assert report["outlier_features"] == "8" and report["sensitive_outlier_features"] == "16"
    assert report["activation_bits"] == "4" and report["bits_per_layer"] == "4:12,8:2"
    assert 0 < float(report["mean_relative_output_error"]) < 0.2
    meta = json.loads((out / QUIK_FILE).read_text())
    layers = meta["layers"]
    assert len(layers) == 14 and "lm_head" not in layers
    down = layers["model.layers.0.mlp.down_proj"]
    q = layers["model.layers.0.self_attn.q_proj"]
    assert (down["weight_bits"], down["activation_bits"], len(down["outliers"])) == (8, 8, 16)
    assert (q["weight_bits"], q["activation_bits"], len(q["outliers"])) == (4, 4, 8)
    expected = 2 * (4 * layer_bits(128, 128, 8, 4) + 2 * layer_bits(256, 128, 8, 4) + layer_bits(128, 256, 16, 8))
    weights = 2 * (4 * 128 * 128 + 3 * 128 * 256)
    assert float(report["bits_per_weight"]) == pytest.approx(expected / weights, abs=1e-3)
    assert 4 < float(report["bits_per_weight"]) < 8


def test_outliers_are_the_top_magnitude_features_and_stay_full_precision(
    tiny_model_dir: Path, built: tuple[Path, dict], built_frozen: Path
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.o_proj", "model.layers.0.mlp.down_proj"]
    seen: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def record(_module, args) -> None:
            m = args[0].reshape(-1, args[0].shape[-1]).abs().amax(dim=0)
            seen[name] = torch.maximum(seen[name], m) if name in seen else m

        return record

    for name in names:
        model.get_submodule(name).register_forward_pre_hook(hook_for(name))
    with torch.no_grad():
        for ids in tokenize(tokenizer, TEXTS, SEQ_LEN):
            model(input_ids=ids)
    original = _weights(tiny_model_dir)
    for folder, frozen in ((built[0], False), (built_frozen, True)):
        meta = json.loads((folder / QUIK_FILE).read_text())["layers"]
        stored = _weights(folder)
        for name in names:
            outliers = meta[name]["outliers"]
            top = sorted(int(i) for i in torch.topk(seen[name], len(outliers)).indices)
            assert outliers == top, name
            rest = [j for j in range(original[name].shape[1]) if j not in outliers]
            levels = 2 ** meta[name]["weight_bits"] - 1
            assert all(row.unique().numel() <= levels for row in stored[name][:, rest]), name
            assert not torch.equal(stored[name][:, rest], original[name][:, rest])
            same = torch.equal(stored[name][:, outliers], original[name][:, outliers])
            assert same == frozen, (name, frozen)
    assert torch.equal(_weights(built[0])["lm_head"], original["lm_head"])


def test_load_quik_quantizes_activations_and_stays_close(tiny_model_dir: Path, built: tuple[Path, dict]) -> None:
    out, _ = built
    hf = HFLoader("float32", "cpu", False, 1)
    engine, info = load_quik(LoadRequest(out, _recipe()), hf)
    assert info["activation_bits"] == "4,8" and info["quik_layers"] == 14
    assert info["size_bytes"] > 0 and 4 < float(info["bits_per_weight"]) < 8
    hooked = [n for n, m in engine.model.named_modules() if isinstance(m, torch.nn.Linear) and m._forward_pre_hooks]
    assert len(hooked) == 14 and "lm_head" not in hooked

    ids = tokenize(engine.tokenizer, load_text_set("probe")[:4], 48)
    rtn = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    float_logits = _logits(rtn, ids)
    quantize_model_rtn(rtn, bits=4, group_size=None, symmetric=True)
    quik = _logits(engine.model, ids)
    for name in hooked:
        engine.model.get_submodule(name)._forward_pre_hooks.clear()
    weights_only = _logits(engine.model, ids)

    def distance(logits: torch.Tensor) -> float:
        return float((logits - float_logits).norm() / float_logits.norm())

    # 4-bit weights and activations stay about as close to the float model as 4-bit round-to-nearest
    # weights alone; QUIK's own weights alone are closer than those.
    assert 0 < distance(weights_only) < distance(quik) < 1.25 * distance(_logits(rtn, ids)) < 0.75
    assert distance(weights_only) < distance(_logits(rtn, ids))

    engine, _ = load_quik(LoadRequest(out, _recipe()), hf)
    settings = GenerationSettings(max_new_tokens=6)
    [result] = engine.generate([GenerationRequest(id="q", messages=[{"role": "user", "content": "Hello"}])], settings)
    assert result.error is None and result.completion_tokens > 0


def _logits(model: torch.nn.Module, ids: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(input_ids=i).logits[0] for i in ids])


def test_missing_or_damaged_quik_file_is_one_clear_line(built: tuple[Path, dict], tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(built[0], folder)
    hf = HFLoader("float32", "cpu", False, 1)
    meta = json.loads((folder / QUIK_FILE).read_text())
    cases = {
        "not json {": "is damaged (JSONDecodeError",
        json.dumps({**meta, "version": 99}): "version 99",
        json.dumps(
            {
                **meta,
                "layers": {
                    "model.layers.0.mlp.down_proj": {
                        **meta["layers"]["model.layers.0.mlp.down_proj"],
                        "outliers": [999],
                    }
                },
            }
        ): "no valid outlier",
        json.dumps(
            {
                **meta,
                "layers": {"model.nothing": {"in_features": 4, "weight_bits": 4, "activation_bits": 4, "outliers": []}},
            }
        ): "does not fit the checkpoint",
    }
    for text, expected in cases.items():
        (folder / QUIK_FILE).write_text(text)
        with pytest.raises(ValueError, match=re.escape(expected)) as err:
            load_quik(LoadRequest(folder, _recipe()), hf)
        assert "\n" not in str(err.value) and QUIK_FILE in str(err.value)
    (folder / QUIK_FILE).unlink()
    with pytest.raises(ValueError, match="is missing: the folder is not a qtrust QUIK checkpoint"):
        load_quik(LoadRequest(folder, _recipe()), hf)
