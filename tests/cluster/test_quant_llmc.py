"""llm-compressor backend: GPTQ, AWQ and packed RTN, real runs on the tiny model and the built-in one."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, CompressedTensorsConfig

from cluster.quantization.llmc import quantize_with_llmcompressor, verify_quantized
from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.rtn import quantize_tensor_rtn
from cluster.quantization.targets import LayerQuant, TargetPlan, plan_targets
from tests.support.tiny_model import _CORPUS

TEXTS = _CORPUS * 2
PROBE = ["The capital of France is Paris.", "Please answer with a single letter: A, B, C or D."]


@dataclass
class Run:
    """One quantization run: the model before and after, the plan, the report and the folder."""

    original: dict[str, torch.Tensor]
    original_logits: torch.Tensor
    model: torch.nn.Module
    tokenizer: object
    plan: TargetPlan
    report: dict[str, str]
    out_dir: Path


def _logits(model: torch.nn.Module, tokenizer: object) -> torch.Tensor:
    if tokenizer.pad_token is not None:
        batch = tokenizer(PROBE, return_tensors="pt", padding=True)
    else:  # the built-in model's tokenizer has no pad token
        batch = tokenizer(PROBE[:1], return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def _run(model_dir: Path, out_dir: Path, texts: list[str] | None = TEXTS, **recipe: object) -> Run:
    """Load ``model_dir``, quantize it with ``recipe`` into ``out_dir``."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    original_logits = _logits(model, tokenizer)
    quant = QuantRecipe(**recipe)
    plan = plan_targets(model, quant)
    report = quantize_with_llmcompressor(model, tokenizer, quant, plan, texts, out_dir)
    return Run(original, original_logits, model, tokenizer, plan, report, out_dir)


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _load_packed(folder: Path) -> torch.nn.Module:
    with warnings.catch_warnings():  # "the model already has a quantization_config": expected
        warnings.simplefilter("ignore", UserWarning)
        return AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=CompressedTensorsConfig(dequantize=True), dtype=torch.float32
        ).eval()


def _load_dense(folder: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _max_distinct_per_group(weight: torch.Tensor, group_size: int) -> int:
    groups = weight.detach().reshape(-1, group_size)
    return max(int(torch.unique(row).numel()) for row in groups)


def _relative_error(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new - old).norm() / old.norm())


# --- tiny model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gptq_packed(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("gptq-packed")
    return _run(tiny_model_dir, out, method="gptq", bits=4, group_size=32, calibration={"seq_len": 64})


def test_gptq_packed_reloads_with_the_same_logits(gptq_packed: Run) -> None:
    run = gptq_packed
    qconfig = _config(run.out_dir)["quantization_config"]
    assert qconfig["quant_method"] == "compressed-tensors"
    assert qconfig["format"] == "pack-quantized"
    assert {g["weights"]["num_bits"] for g in qconfig["config_groups"].values()} == {4}
    assert "lm_head" in qconfig["ignore"]

    report = run.report
    assert report["storage"] == "packed"
    assert report["layers_quantized"] == str(2 * 7) == str(len(run.plan.layers))
    assert report["bits_per_layer"] == "4:14"
    assert report["layers_full_precision"] == "lm_head"
    assert report["calibration_samples"] == str(len(TEXTS))
    assert report["backend"].startswith("llm-compressor 0.")
    assert float(report["quantize_s"]) > 0

    in_memory = _logits(run.model, run.tokenizer)
    reloaded = _logits(_load_packed(run.out_dir), run.tokenizer)
    assert torch.allclose(reloaded, in_memory, atol=1e-4)
    assert (reloaded - run.original_logits).abs().max() > 1e-2


def test_verify_quantized_rejects_a_different_plan(gptq_packed: Run) -> None:
    verify_quantized(gptq_packed.model, gptq_packed.plan)  # what was applied
    first = next(iter(gptq_packed.plan.layers))
    wrong = TargetPlan(layers={**gptq_packed.plan.layers, first: LayerQuant(8, 32)}, full_precision=["lm_head"])
    with pytest.raises(RuntimeError, match="8 / 32"):
        verify_quantized(gptq_packed.model, wrong)
    fewer = TargetPlan(layers={k: v for k, v in gptq_packed.plan.layers.items() if k != first})
    with pytest.raises(RuntimeError, match="plan leaves it in full precision"):
        verify_quantized(gptq_packed.model, fewer)


def test_awq_packed_reloads_with_the_same_logits(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = _run(tiny_model_dir, tmp_path / "awq", method="awq", bits=4, group_size=32, calibration={"seq_len": 64})
    assert _config(run.out_dir)["quantization_config"]["format"] == "pack-quantized"
    assert run.report["storage"] == "packed" and int(run.report["awq_mappings"]) > 0
    reloaded = _logits(_load_packed(run.out_dir), run.tokenizer)
    assert torch.allclose(reloaded, _logits(run.model, run.tokenizer), atol=1e-4)
    assert (reloaded - run.original_logits).abs().max() > 1e-2


def test_awq_simulated_3bit_is_dense_on_grid_and_keeps_full_precision_layers(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = _run(
        tiny_model_dir,
        tmp_path / "awq3",
        method="awq",
        bits=3,
        group_size=32,
        storage="simulated",
        keep_full_precision=["lm_head", "down_proj"],
        calibration={"seq_len": 64},
    )
    assert "quantization_config" not in _config(run.out_dir)
    assert run.report["storage"] == "simulated"
    assert run.report["layers_full_precision"] == "model.layers.0.mlp.down_proj,model.layers.1.mlp.down_proj,lm_head"
    assert run.report["bits_per_layer"] == "3:12"

    dense = _load_dense(run.out_dir)
    state = dense.state_dict()
    assert dense.lm_head.weight is dense.model.embed_tokens.weight  # still tied
    for name in run.plan.layers:
        weight = state[f"{name}.weight"]
        assert _max_distinct_per_group(weight, 32) <= 2**3, name
        error = _relative_error(weight, run.original[f"{name}.weight"])
        assert 0.05 < error < 0.35, (name, error)  # measured about 0.17-0.20
    kept = ("model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight", "model.embed_tokens.weight")
    for name in kept:
        assert torch.equal(state[name], run.original[name]), name
    # AWQ moved scale into the layer norms; the dense copy runs exactly like the in-memory model.
    norm = "model.layers.0.input_layernorm.weight"
    assert not torch.equal(state[norm], run.original[norm])
    assert torch.allclose(_logits(dense, run.tokenizer), _logits(run.model, run.tokenizer), atol=1e-4)


def test_mixed_precision_first_block_at_8_bits(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = _run(
        tiny_model_dir,
        tmp_path / "mixed",
        method="gptq",
        bits=4,
        group_size=64,
        storage="simulated",
        overrides=[{"blocks": [0], "bits": 8}],
        calibration={"seq_len": 64},
    )
    assert run.report["bits_per_layer"] == "4:7,8:7"
    assert "quantization_config" not in _config(run.out_dir)
    state = _load_dense(run.out_dir).state_dict()
    errors: dict[int, list[float]] = {0: [], 1: []}
    distinct: dict[int, int] = {0: 0, 1: 0}
    for name, quant in run.plan.layers.items():
        block = int(name.split(".")[2])
        assert quant.bits == (8 if block == 0 else 4)
        weight = state[f"{name}.weight"]
        count = _max_distinct_per_group(weight, 64)
        assert count <= 2**quant.bits, name
        distinct[block] = max(distinct[block], count)
        errors[block].append(_relative_error(weight, run.original[f"{name}.weight"]))
    assert distinct[0] > 2**4  # the 8-bit block really uses more than 16 levels
    assert max(errors[0]) < min(errors[1])
    assert 0 < max(errors[0]) < 0.02


def test_gptq_depends_on_calibration_text_and_is_deterministic(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = [" ".join(reversed(text.split())) + " 42 and 17 more words." for text in _CORPUS] * 2
    common = {
        "method": "gptq",
        "bits": 4,
        "group_size": 32,
        "storage": "simulated",
        "calibration": {"seq_len": 64, "seed": 3},
    }
    first = _run(tiny_model_dir, tmp_path / "a", TEXTS, **common)
    again = _run(tiny_model_dir, tmp_path / "b", TEXTS, **common)
    different = _run(tiny_model_dir, tmp_path / "c", other, **common)
    names = [f"{n}.weight" for n in first.plan.layers]
    a, b, c = (_load_dense(r.out_dir).state_dict() for r in (first, again, different))
    assert all(torch.equal(a[n], b[n]) for n in names)
    assert sum(not torch.equal(a[n], c[n]) for n in names) >= len(names) // 2


def test_gptq_without_calibration_text_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration texts"):
        _run(tiny_model_dir, tmp_path / "none", None, method="gptq", bits=4, group_size=32)
    assert not (tmp_path / "none" / "config.json").exists()


def test_rtn_packed_needs_no_data_and_matches_qtrust_rtn(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = _run(tiny_model_dir, tmp_path / "rtn", None, method="rtn", bits=4, group_size=32, storage="packed")
    assert run.report["calibration_samples"] == "0"
    assert _config(run.out_dir)["quantization_config"]["format"] == "pack-quantized"
    state = _load_packed(run.out_dir).state_dict()
    for name in run.plan.layers:
        expected = quantize_tensor_rtn(run.original[f"{name}.weight"], 4, 32, symmetric=False)
        assert torch.allclose(state[f"{name}.weight"], expected, atol=1e-6), name
    assert torch.equal(state["model.embed_tokens.weight"], run.original["model.embed_tokens.weight"])
