"""Sweep validation: every user mistake gets one clear line naming the field, before any heavy work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs.spec.load import load_spec, parse_spec
from jobs.spec.schema import SpecError
from tests.support.helpers import problems_of, sweep_dict, write_sweep


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
    spec = load_spec(Path(__file__).resolve().parents[2] / "examples" / "demo.yaml")
    assert [r.name for r in spec.recipes] == ["ref", "w8", "w4", "w3", "gptq-w4", "awq-w4"]
    assert [r.resolved_storage for r in spec.recipes][-2:] == ["packed", "packed"]
    assert spec.ensembles[0].members == ["w8", "w4", "w3"]


def test_resources_are_overridden_per_model_and_per_recipe(model_dir: Path, tmp_path: Path) -> None:
    spec_dict = sweep_dict(model_dir, tmp_path)
    spec_dict["resources"] = {"replicas": 2, "num_cpus_per_worker": 2, "memory": "2GiB", "custom": {"a100": 1}}
    spec_dict["models"][0]["resources"] = {"num_gpus": 1, "placement": "spread"}
    spec_dict["recipes"][2]["resources"] = {"replicas": 4, "num_gpus": 0.5}
    spec = parse_spec(spec_dict)
    model = spec.models[0]
    ref = spec.resources_for(model, spec.recipe("ref"))
    w4 = spec.resources_for(model, spec.recipe("w4"))
    assert (ref.replicas, ref.num_cpus, ref.num_gpus, ref.placement, ref.memory) == (2, 2.0, 1.0, "spread", 2 * 2**30)
    assert ref.custom == {"a100": 1.0}
    assert (w4.replicas, w4.num_gpus, w4.num_cpus) == (4, 0.5, 2.0)
    # resources are not part of what a recipe computes
    assert "resources" not in spec.recipe("w4").key_fields()


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"replicas": 0}, "resources.replicas: Input should be greater than or equal to 1"),
        ({"memory": "lots"}, "resources.memory: 'lots' is not a memory size; write e.g. 8GiB"),
        ({"placement": "scatter"}, "resources.placement: Input should be 'pack' or 'spread'"),
        ({"num_cpu": 1}, "resources.num_cpu: unknown field; allowed fields: replicas, num_cpus"),
    ],
)
def test_bad_resources_name_the_field(model_dir: Path, tmp_path: Path, resources: dict, expected: str) -> None:
    problems = problems_of(sweep_dict(model_dir, tmp_path, resources=resources))
    assert any(p.startswith(expected) for p in problems), problems


def test_recipe_resources_errors_name_the_recipe(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path)
    spec["recipes"][1]["resources"] = {"replicas": -1}
    assert any(p.startswith("recipes[1].resources.replicas:") for p in problems_of(spec))


def test_validate_and_help_import_neither_torch_nor_ray(model_dir: Path, tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path / "s.yaml", sweep_dict(model_dir, tmp_path))
    code = (
        "import sys\n"
        "from jobs.cli import app\n"
        "from typer.testing import CliRunner\n"
        f"r = CliRunner().invoke(app, ['validate', {str(sweep)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'transformers', 'vllm') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2]
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_adaptive_settings_are_checked_field_by_field(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path)
    spec["adaptive"] = {"confidence": 1.5}
    (problem,) = problems_of(spec)
    assert problem.startswith("adaptive.confidence")
    # A benchmark's own max_items under the sweep's min_items: named where it was set, with the fix.
    spec["adaptive"] = {"min_items": 200}
    spec["benchmarks"][0]["adaptive"] = {"max_items": 100}
    (problem,) = problems_of(spec)
    assert problem.startswith("benchmarks[0].adaptive.max_items: 100 is below min_items (200)")
    assert "raise max_items" in problem
    spec["benchmarks"][0]["adaptive"] = {"rounds": 10}
    (problem,) = problems_of(spec)
    assert problem.startswith("benchmarks[0].adaptive") and "rounds" in problem


def test_adaptive_applies_to_every_benchmark_unless_it_says_false(model_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(model_dir, tmp_path)
    spec["adaptive"] = {"margin": 0.05, "round": 25}
    spec["benchmarks"][0]["adaptive"] = False
    parsed = parse_spec(spec)
    assert parsed.adaptive_for(parsed.benchmarks[0]) is None
    assert all(parsed.adaptive_for(b).margin == 0.05 for b in parsed.benchmarks[1:])
    # Without a sweep-wide section a benchmark can still opt in with its own fields over the defaults.
    del spec["adaptive"]
    spec["benchmarks"][0]["adaptive"] = {"round": 10}
    parsed = parse_spec(spec)
    assert parsed.adaptive_for(parsed.benchmarks[0]).round == 10
    assert all(parsed.adaptive_for(b) is None for b in parsed.benchmarks[1:])
