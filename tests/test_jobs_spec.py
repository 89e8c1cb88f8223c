"""Sweep validation: every user mistake gets one clear line naming the field, before any heavy work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs.spec import SpecError, load_spec, parse_spec
from tests.helpers import problems_of, sweep_dict, write_sweep


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def test_valid_spec_expands_defaults(model_dir: Path, tmp_path: Path) -> None:
    spec = parse_spec(sweep_dict(model_dir, tmp_path))
    assert [spec.variant_name(spec.models[0], r) for r in spec.recipes] == ["tiny-ref", "tiny-w8", "tiny-w4"]
    assert spec.generation.temperature == 0.0
    assert spec.recipe("w4").precision_bits == 4


def test_unknown_benchmark_lists_available(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path, benchmarks=[{"name": "machine_ethic"}])
    (problem,) = problems_of(spec)
    assert problem.startswith("benchmarks[0].name: unknown benchmark 'machine_ethic'")
    assert "machine_ethics" in problem and "xstest" in problem


def test_bits_out_of_range_names_the_field(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path)
    spec["recipes"][2]["bits"] = 9
    problems = problems_of(spec)
    assert len(problems) == 1
    assert problems[0].startswith("recipes[2].bits")
    assert "8" in problems[0]


def test_missing_model_path(tmp_path: Path) -> None:
    spec = sweep_dict(tmp_path / "no-such-model", tmp_path)
    (problem,) = problems_of(spec)
    assert problem.startswith("models[0].source:")
    assert "no-such-model" in problem


def test_duplicate_variant_names(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path)
    spec["models"] = [{"name": "a-b", "source": str(model_dir)}, {"name": "a", "source": str(model_dir)}]
    spec["recipes"] = [{"name": "c", "method": "none"}, {"name": "b-c", "method": "none"}]
    problems = problems_of(spec)
    assert any(p.startswith("variants:") and "'a-b-c'" in p for p in problems), problems


def test_duplicate_recipe_names(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path)
    spec["recipes"].append({"name": "w4", "method": "rtn", "bits": 4})
    problems = problems_of(spec)
    assert any(p.startswith("recipes:") and "'w4'" in p for p in problems)


def test_ensemble_naming_a_missing_variant(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path, ensembles=[{"name": "e", "members": ["w8", "w5"]}])
    (problem,) = problems_of(spec)
    assert problem.startswith("ensembles[0].members[1]: 'w5' is not a recipe")
    assert "ref, w8, w4" in problem


def test_every_problem_is_reported_at_once(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path, shard_size=0)
    spec["recipes"][1]["bits"] = 1
    spec["generation"] = {"temperature": 0.7}
    problems = problems_of(spec)
    fields = sorted(p.split(":")[0] for p in problems)
    assert fields == ["generation.temperature", "recipes[1].bits", "shard_size"]


def test_unknown_field_lists_allowed_fields(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path)
    spec["benchmarks"][0]["limt"] = 3
    (problem,) = problems_of(spec)
    assert problem.startswith("benchmarks[0].limt: unknown field")
    assert "limit" in problem


def test_bad_benchmark_option(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path)
    spec["benchmarks"][1]["options"] = {"shots": 3}
    (problem,) = problems_of(spec)
    assert problem.startswith("benchmarks[1].options.shots")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodels: [\n  - a\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "line" in info.value.problems[0] and "not valid YAML" in info.value.problems[0]


def test_cli_validate_prints_problems_without_traceback(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path, benchmarks=[{"name": "nope"}])
    path = write_sweep(tmp_path / "s.yaml", spec)
    proc = subprocess.run(
        [sys.executable, "-m", "jobs", "validate", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "benchmarks[0].name: unknown benchmark 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_demo_spec_is_valid() -> None:
    spec = load_spec(Path(__file__).resolve().parents[1] / "examples" / "demo.yaml")
    assert [r.name for r in spec.recipes] == ["ref", "w8", "w4", "w3", "gptq-w4", "awq-w4"]
    assert [r.resolved_storage for r in spec.recipes][-2:] == ["packed", "packed"]
    assert spec.ensembles[0].members == ["w8", "w4", "w3"]
