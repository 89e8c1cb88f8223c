"""`qtrust quantize` through the real CLI: variants are built into the cache by Ray tasks, then reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.support.helpers import sweep_dict, write_sweep

pytestmark = pytest.mark.slow


def qtrust(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_quantize_builds_once_then_run_reuses(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    recipes = [
        {"name": "ref", "method": "none"},
        {"name": "rtn4", "method": "rtn", "bits": 4, "group_size": 32},
        {"name": "gptq4", "method": "gptq", "bits": 4, "group_size": 32, "calibration": {"samples": 8, "seq_len": 64}},
    ]
    spec = sweep_dict(
        tiny_model_dir,
        tmp_path / "runs",
        recipes=recipes,
        ensembles=[],
        benchmarks=[{"name": "machine_ethics", "limit": 2, "max_new_tokens": 2}],
    )
    sweep = write_sweep(tmp_path / "sweep.yaml", spec)
    env = dict(
        os.environ, QTRUST_DATA_DIR=str(data_dir), COLUMNS="220", QTRUST_VARIANT_CACHE=str(tmp_path / "variants")
    )
    env.pop("MLFLOW_TRACKING_URI", None)

    first = qtrust("quantize", str(sweep), cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "ready t-" not in first.stdout  # variants are named <model>-<recipe>
    for name in ("tiny-ref", "tiny-rtn4", "tiny-gptq4"):
        assert f"ready {name}" in first.stdout
    assert first.stdout.count("built") >= 2 and "packed" in first.stdout
    entries = [p for p in (tmp_path / "variants").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 2  # rtn4 and gptq4; ref and load-time methods are not cached

    run = qtrust("run", str(sweep), "--quiet", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    manifest = json.loads((tmp_path / "runs" / "t" / "manifest.json").read_text())
    assert manifest["workers"]["tiny-gptq4"]["quantization"]["cache"] == "hit"  # built by `quantize`, not again
    assert manifest["workers"]["tiny-rtn4"]["quantization"]["cache"] == "hit"

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("qtrust")
    quantize_runs = client.search_runs([experiment.experiment_id], "tags.`qtrust.kind` = 'quantize'")
    assert len(quantize_runs) == 1
    assert quantize_runs[0].data.metrics["tiny-gptq4.probe_perplexity"] > 1
    # The weights digest the build recorded follows the variant into the sweep's manifest and MLflow runs.
    digest = manifest["workers"]["tiny-gptq4"]["quantization"]["weights_sha256"]
    assert quantize_runs[0].data.tags["tiny-gptq4.variant.weights_sha256"] == digest
    variant_runs = client.search_runs(
        [experiment.experiment_id], "tags.`qtrust.kind` = 'variant' and tags.variant = 'tiny-gptq4'"
    )
    assert variant_runs and all(r.data.tags["variant.weights_sha256"] == digest for r in variant_runs)
    assert all(len(r.data.tags["variant.loaded_sha256"]) == 64 for r in variant_runs)


def test_quantize_rejects_a_bad_recipe_before_starting_ray(tmp_path: Path, data_dir: Path) -> None:
    spec = sweep_dict(tmp_path, tmp_path / "runs", ensembles=[])
    spec["models"] = [{"name": "smol", "source": "smollm2-135m"}]
    spec["recipes"] = [{"name": "awq3", "method": "awq", "bits": 3, "storage": "packed"}]
    sweep = write_sweep(tmp_path / "sweep.yaml", spec)
    result = qtrust("quantize", str(sweep), cwd=tmp_path, env=dict(os.environ, QTRUST_DATA_DIR=str(data_dir)))
    assert result.returncode == 2
    assert "awq at 3 bits cannot be stored packed" in result.stderr and "storage: simulated" in result.stderr
    assert "Ray:" not in result.stdout
