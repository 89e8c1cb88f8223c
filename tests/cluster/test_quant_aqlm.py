"""AQLM: recipe checks, the layer search against RTN, and a tiny model written by qtrust and loaded by
Transformers through the aqlm package (its numba CPU kernel), directly and as a prequantized checkpoint."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from cluster.quantization.aqlm import load_aqlm, pack_codes, quantize_aqlm, shape_problems
from cluster.quantization.aqlm_search import AqSettings, fit_layer, output_error
from cluster.quantization.checks import ModelShape
from cluster.quantization.loading import LoadRequest
from cluster.quantization.prequantized import (
    inspect_checkpoint,
    load_prequantized,
    load_prequantized_variant,
    prequantized_vllm_weights,
)
from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.rtn import quantize_tensor_rtn
from cluster.quantization.targets import QuantizationError, plan_targets
from cluster.quantization.texts import load_text_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------ recipes


def test_params_are_completed_and_labelled() -> None:
    recipe = QuantRecipe(method="aqlm", bits=2)
    assert recipe.params["nbits_per_codebook"] == 8 and recipe.params["in_group_size"] == 8
    assert recipe.calibration is not None
    assert recipe.resolved_storage == "packed"
    assert recipe.label == "aqlm-w2-2x8"
    assert QuantRecipe(method="aqlm", bits=3).label == "aqlm-w3-3x8"
    assert QuantRecipe(method="aqlm", bits=2, params={"nbits_per_codebook": 16}).label == "aqlm-w2-1x16"
    assert QuantRecipe(method="aqlm", bits=4, params={"in_group_size": 16}).label == "aqlm-w4-8x8-g16"


@pytest.mark.parametrize(
    ("bits", "params", "message"),
    [
        (3, {"nbits_per_codebook": 16}, r"needs 1.5 codebooks; use nbits_per_codebook 8 \(3x8\)"),
        (2, {"num_codebooks": 3}, r"3x8 codebooks over 1x8 groups = 3 bits per weight, but bits is 2"),
        (5, {}, r"aqlm quantizes to 2, 3 or 4 bits per weight, not 5"),
        (2, {"beam": 4}, r"params.beam: .*method aqlm takes: num_codebooks, nbits_per_codebook"),
        (2, {"nbits_per_codebook": 20}, r"params.nbits_per_codebook"),
    ],
)
def test_bad_recipes_say_what_works(bits: int, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        QuantRecipe(method="aqlm", bits=bits, params=params)


def test_key_changes_with_params() -> None:
    base = QuantRecipe(method="aqlm", bits=2).key_fields()
    assert QuantRecipe(method="aqlm", bits=2, params={"rounds": 3}).key_fields() == base  # the default
    assert QuantRecipe(method="aqlm", bits=2, params={"beam_size": 2}).key_fields() != base
    assert QuantRecipe(method="aqlm", bits=2, params={"seed": 1}).key_fields() != base


def test_shape_problems() -> None:
    recipe = QuantRecipe(method="aqlm", bits=2)
    assert shape_problems(recipe, ModelShape({"hidden_size": 576, "intermediate_size": 1536}, 30)) == []
    problems = shape_problems(recipe, ModelShape({"hidden_size": 100}, 2))
    assert problems == ["aqlm in_group_size 8 does not divide hidden_size 100; use 8 or 16"]
    wide = QuantRecipe(method="aqlm", bits=2, params={"out_group_size": 3, "in_group_size": 12})
    assert any(
        "out_group_size 3 does not divide hidden_size 128" in p
        for p in shape_problems(wide, ModelShape({"hidden_size": 128}, 2))
    )


# ------------------------------------------------------------------------------ the layer search


def test_two_bit_search_beats_rtn_on_gaussian_weights() -> None:
    """At 2 bits (2x8 codebooks over groups of 8), AQLM's output error is well below scalar RTN's."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(128, 256, generator=gen)
    mix = torch.eye(256) + 0.3 * torch.randn(256, 256, generator=gen) / 16
    inputs = torch.randn(1024, 256, generator=gen) @ mix * torch.linspace(0.2, 3.0, 256)
    hessian = inputs.T @ inputs / inputs.shape[0]
    settings = AqSettings(num_codebooks=2, nbits=8, rounds=3)
    layer, error = fit_layer(weight, hessian, settings)
    assert error == pytest.approx(output_error(weight, layer.dequantize(), hessian), rel=1e-3)
    assert layer.codes.shape == (128, 32, 2) and 0 <= int(layer.codes.min()) and int(layer.codes.max()) < 256
    per_channel = min(output_error(weight, quantize_tensor_rtn(weight, 2, None, sym), hessian) for sym in (True, False))
    group8 = min(output_error(weight, quantize_tensor_rtn(weight, 2, 8, sym), hessian) for sym in (True, False))
    # per-channel RTN is ~2 bits per weight; group-8 RTN spends 4 more bits per weight on its scales and zeros
    assert error < 0.6 * per_channel
    assert error < group8
    _, initial = fit_layer(weight, hessian, AqSettings(num_codebooks=2, nbits=8, rounds=0))
    assert error < 0.95 * initial  # the code search and refits improve on the k-means start


def test_codes_are_stored_as_the_aqlm_package_does() -> None:
    from aqlm.utils import unpack_int_data

    codes = torch.tensor([0, 1, 127, 128, 200, 255])
    packed = pack_codes(codes, 8)
    assert packed.dtype == torch.int8
    assert torch.equal(unpack_int_data(packed, 8), codes)
    assert pack_codes(torch.tensor([40000]), 16).dtype == torch.int16


# ------------------------------------------------------------------------------ a built checkpoint


class _Loader:
    """The Hugging Face engine as the method loaders see it: here the bare model."""

    def __init__(self, dtype: str = "float32") -> None:
        self.dtype = dtype

    def from_pretrained(self, path: Path, model_kwargs: dict[str, Any] | None = None) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **(model_kwargs or {})).eval()

    def wrap(self, model: Any, tokenizer: Any, device: str) -> Any:
        return model


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(3, 400, (1, 24), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def built(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, ids: torch.Tensor) -> dict[str, Any]:
    """The tiny model quantized at 2 bits, its folder, report and the dequantized model's logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = QuantRecipe(method="aqlm", bits=2, calibration={"samples": 8, "seq_len": 64})
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        original = model(input_ids=ids).logits
    plan = plan_targets(model, recipe.model_copy(update={"group_size": None}))
    out = tmp_path_factory.mktemp("aqlm") / "w2"
    report = quantize_aqlm(model, tokenizer, recipe, plan, load_text_set("calibration")[:8], out)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return {"recipe": recipe, "path": out, "report": report, "logits": logits, "original": original}


def test_build_report_and_config(built: dict[str, Any]) -> None:
    report, path = built["report"], built["path"]
    assert report["storage"] == "packed" and report["backend"] == "qtrust aqlm"
    assert report["codebooks"] == "2x8" and report["layers_quantized"] == "14"
    assert report["calibration_samples"] == "8"
    # 2 bits of codes + float32 codebooks (2·256·8 floats per layer) and scales: large on 128-wide layers
    assert 2.0 < float(report["bits_per_weight"]) < 12.0
    assert 0.0 < float(report["mean_relative_output_error"]) < 0.5
    quant = json.loads((path / "config.json").read_text())["quantization_config"]
    assert {k: quant[k] for k in ("quant_method", "num_codebooks", "nbits_per_codebook", "in_group_size")} == {
        "quant_method": "aqlm",
        "num_codebooks": 2,
        "nbits_per_codebook": 8,
        "in_group_size": 8,
    }
    assert "lm_head" in quant["linear_weights_not_to_quantize"]
    assert not torch.equal(built["logits"], built["original"])  # the weights did change


def test_transformers_loads_it_with_the_numba_kernel(built: dict[str, Any], ids: torch.Tensor) -> None:
    """Loaded through the method's loader (two numba threads on this machine): the dequantized model's logits."""
    from aqlm import QuantizedLinear
    from aqlm.inference_kernels import numba_kernel

    request = LoadRequest(path=built["path"], recipe=built["recipe"], built=built["report"])
    model, report = load_aqlm(request, _Loader())
    assert report["size_bytes"] > 0 and report["bits_per_weight"] == built["report"]["bits_per_weight"]
    quantized = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(quantized) == 14 and all(m.codebooks.shape[1] == 256 for m in quantized)
    assert isinstance(model.lm_head, torch.nn.Linear)
    numba_kernel.COMPILED_KERNELS.clear()
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        first = model(input_ids=ids[:, :3]).logits  # the one-token-at-a-time path too
    assert numba_kernel.COMPILED_KERNELS  # the numba lookup-table kernel ran
    torch.testing.assert_close(logits, built["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(first, built["logits"][:, :3], atol=1e-4, rtol=1e-4)


def test_loader_refusals(built: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    request = LoadRequest(path=built["path"], recipe=built["recipe"], dtype="bfloat16")
    with pytest.raises(QuantizationError, match="aqlm's CPU kernel runs float32 only"):
        load_aqlm(request, _Loader())
    monkeypatch.setitem(sys.modules, "aqlm", None)
    with pytest.raises(QuantizationError, match=r"pip install 'aqlm\[cpu\]'"):
        load_aqlm(LoadRequest(path=built["path"], recipe=built["recipe"]), _Loader())


def test_prequantized_aqlm_checkpoints(built: dict[str, Any], ids: torch.Tensor, tmp_path: Path) -> None:
    """``method: prequantized`` reads the format, also with the aqlm authors' ``.weight`` names for kept layers."""
    published = tmp_path / "published"
    shutil.copytree(built["path"], published)
    config = json.loads((published / "config.json").read_text())
    config["quantization_config"]["linear_weights_not_to_quantize"] = ["model.embed_tokens.weight", "lm_head.weight"]
    (published / "config.json").write_text(json.dumps(config))

    info = inspect_checkpoint(published)
    assert (info.method, info.bits, info.group_size, info.fmt) == ("aqlm", 2, None, "2x8-1x8")
    model, _, described = load_prequantized(published)
    assert described["prequantized_method"] == "aqlm"
    assert isinstance(model.lm_head, torch.nn.Linear)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, built["logits"], atol=1e-4, rtol=1e-4)

    recipe = QuantRecipe(method="prequantized", source=str(published))
    engine, report = load_prequantized_variant(LoadRequest(path=published, recipe=recipe), _Loader())
    assert report["checkpoint_prequantized_format"] == "2x8-1x8"
    with torch.no_grad():
        torch.testing.assert_close(engine(input_ids=ids).logits, built["logits"], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="vLLM does not serve AQLM checkpoints"):
        prequantized_vllm_weights(LoadRequest(path=published, recipe=recipe))


def test_quip_sharp_checkpoints_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "quip_params": {"codebook": "E8P12"}}))
    with pytest.raises(QuantizationError, match="QuIP# checkpoints need the quip-sharp CUDA kernels"):
        inspect_checkpoint(tmp_path)


def test_an_untied_head_outside_the_blocks_is_quantized_too(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Layers outside the decoder blocks get their ``H`` from a pass of the quantized model."""
    from aqlm import QuantizedLinear
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    model.config.tie_word_embeddings = False
    head = model.lm_head.weight.detach().clone()
    recipe = QuantRecipe(method="aqlm", bits=2, keep_full_precision=[], calibration={"samples": 4, "seq_len": 32})
    plan = plan_targets(model, recipe.model_copy(update={"group_size": None}))
    assert "lm_head" in plan.layers
    texts = load_text_set("calibration")[:4]
    report = quantize_aqlm(model, AutoTokenizer.from_pretrained(str(tiny_model_dir)), recipe, plan, texts, tmp_path)
    assert report["layers_quantized"] == "15" and not torch.equal(model.lm_head.weight, head)
    loaded, _ = load_aqlm(LoadRequest(path=tmp_path, recipe=recipe), _Loader())
    assert isinstance(loaded.lm_head, QuantizedLinear)
    ids = torch.randint(3, 400, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
