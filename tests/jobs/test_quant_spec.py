"""Sweep validation of quantization recipes: each problem names the variant and what works, before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.spec.load import load_spec, parse_spec
from jobs.spec.schema import SpecError
from tests.support.helpers import problems_of, sweep_dict, write_sweep


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2})
    )
    return folder


def test_every_method_is_a_recipe(model_dir: Path, tmp_path: Path) -> None:
    recipes = [
        {"name": "ref", "method": "none"},
        {"name": "rtn4", "method": "rtn", "bits": 4, "group_size": 32},
        {"name": "gptq4", "method": "gptq", "bits": 4, "group_size": 32, "calibration": {"samples": 8, "seed": 1}},
        {"name": "awq3", "method": "awq", "bits": 3, "group_size": 32},
        {"name": "nf4", "method": "bnb", "bnb_type": "nf4"},
        {"name": "hqq2", "method": "hqq", "bits": 2, "group_size": 32},
        {"name": "mixed", "method": "gptq", "bits": 3, "overrides": [{"blocks": [0, -1], "bits": 8}]},
    ]
    spec = parse_spec(sweep_dict(model_dir, tmp_path, recipes=recipes, ensembles=[]))
    assert [r.resolved_storage for r in spec.recipes] == [
        "none",
        "simulated",
        "packed",
        "simulated",
        "load-time",
        "load-time",
        "simulated",
    ]


def test_group_size_that_does_not_divide_the_builtin_model_is_refused(tmp_path: Path) -> None:
    spec = sweep_dict(tmp_path, tmp_path, ensembles=[])
    spec["models"] = [{"name": "smol", "source": "smollm2-135m"}]
    spec["recipes"] = [{"name": "g128", "method": "gptq", "bits": 4, "group_size": 128}]
    (problem,) = problems_of(spec)
    assert problem.startswith("variant smol-g128: group_size 128 does not divide hidden_size 576")
    assert "such as 64" in problem


def test_override_blocks_are_checked_against_the_model(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path, ensembles=[])
    spec["recipes"] = [
        {"name": "m", "method": "rtn", "bits": 4, "group_size": 32, "overrides": [{"blocks": [2], "bits": 8}]}
    ]
    (problem,) = problems_of(spec)
    assert problem.startswith("variant tiny-m: overrides[0].blocks: the model has 2 blocks")


def test_per_model_recipes_and_ensembles_over_them(model_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"hidden_size": 64}))
    spec_dict = sweep_dict(model_dir, tmp_path)
    spec_dict["models"].append({"name": "other", "source": str(other), "recipes": ["ref", "w8"]})
    spec = parse_spec(spec_dict)
    names = [spec.variant_name(m, r) for m, r in spec.variant_pairs()]
    assert names == ["tiny-ref", "tiny-w8", "tiny-w4", "other-ref", "other-w8"]

    spec_dict["models"][1]["recipes"] = ["ref", "w9"]
    (problem,) = problems_of(spec_dict)
    assert problem.startswith("models[1].recipes[1]: 'w9' is not a recipe of this sweep")

    spec_dict["models"][0]["recipes"] = ["ref"]
    spec_dict["models"][1]["recipes"] = ["ref", "w8"]
    (problem,) = problems_of(spec_dict)
    assert problem.startswith("ensembles[0]: no model has every member recipe")


def test_prequantized_folder_without_quantization_config(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path, ensembles=[])
    spec["recipes"] = [{"name": "pre", "method": "prequantized"}]
    (problem,) = problems_of(spec)
    assert problem.startswith("variant tiny-pre:")
    assert "method: none" in problem


def test_already_quantized_model_needs_the_prequantized_method(tmp_path: Path) -> None:
    folder = tmp_path / "awq-model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"hidden_size": 128, "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}})
    )
    spec = sweep_dict(folder, tmp_path, ensembles=[])
    spec["recipes"] = [
        {"name": "w4", "method": "rtn", "bits": 4, "group_size": 32},
        {"name": "pre", "method": "prequantized"},
    ]
    (problem,) = problems_of(spec)
    assert problem.startswith("variant tiny-w4: model tiny is already quantized (awq)")
    ok = parse_spec(dict(spec, recipes=[{"name": "pre", "method": "prequantized"}]))
    assert ok.recipes[0].method == "prequantized"
    with pytest.raises(SpecError, match="bits is 8 but the checkpoint's config says 4"):
        parse_spec(dict(spec, recipes=[{"name": "pre", "method": "prequantized", "bits": 8}]))


def test_calibration_sources_are_checked_and_resolved_next_to_the_sweep(model_dir: Path, tmp_path: Path) -> None:
    sweep = sweep_dict(model_dir, tmp_path, ensembles=[])
    sweep["recipes"] = [
        {"name": "g", "method": "gptq", "bits": 4, "group_size": 32, "calibration": {"source": "texts/cal.txt"}}
    ]
    path = write_sweep(tmp_path / "sweep.yaml", sweep)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (problem,) = info.value.problems
    assert problem.startswith("recipes[0] (g).calibration.source: calibration text file")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "cal.txt").write_text("One paragraph.\n\nAnother one.\n")
    spec = load_spec(path)
    assert spec.recipes[0].calibration.source == str(tmp_path / "texts" / "cal.txt")
    sweep["recipes"][0]["calibration"] = {"source": "benchmark:no_such_benchmark"}
    (problem,) = problems_of(sweep)
    assert "unknown benchmark 'no_such_benchmark'" in problem


def test_a_recipe_grid_crosses_bits_group_sizes_and_calibration_seeds(model_dir: Path, tmp_path: Path) -> None:
    grid = {
        "name": "gptq",
        "method": "gptq",
        "bits": [4, 3],
        "group_size": [64, 32],
        "calibration": {"samples": 8, "seed": [0, 1]},
    }
    spec = parse_spec(
        sweep_dict(
            model_dir,
            tmp_path,
            recipes=[{"name": "ref", "method": "none"}, grid],
            ensembles=[
                {"name": "vote", "members": ["gptq-w4-g64-seed0", "gptq-w3-g64-seed0"]},
            ],
        )
    )
    names = [r.name for r in spec.recipes]
    assert len(names) == 1 + 8 and names[1] == "gptq-w4-g64-seed0" and names[-1] == "gptq-w3-g32-seed1"
    last = spec.recipe("gptq-w3-g32-seed1")
    assert (last.bits, last.group_size, last.calibration.seed, last.calibration.samples) == (3, 32, 1, 8)
    single = parse_spec(
        sweep_dict(
            model_dir, tmp_path, recipes=[{"name": "r", "method": "rtn", "bits": [4], "group_size": 32}], ensembles=[]
        )
    )
    assert [r.name for r in single.recipes] == ["r"]
    bad = sweep_dict(
        model_dir, tmp_path, recipes=[{"name": "r", "method": "rtn", "bits": [4, 9], "group_size": 32}], ensembles=[]
    )
    (problem,) = problems_of(bad)
    assert problem.startswith("recipes[1].bits") and "2 to 8" in problem
