"""`qtrust quantize --rebuild-check` through the real CLI: a cached variant is built again and compared.

Apart from tests/jobs/test_cli_quantize.py because it builds only the tiny model's RTN variant: it need
not wait in the chain of modules that keep both cores busy (tests/conftest.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mlflow import MlflowClient
from safetensors.torch import load_file, save_file

from tests.jobs.test_cli_quantize import qtrust
from tests.support.helpers import sweep_dict, write_sweep

pytestmark = pytest.mark.slow


def test_rebuild_check_matches_then_finds_altered_cached_weights(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = sweep_dict(
        tiny_model_dir,
        tmp_path / "runs",
        recipes=[{"name": "ref", "method": "none"}, {"name": "w4", "method": "rtn", "bits": 4, "group_size": 32}],
        ensembles=[],
        quality_probe=False,
    )
    sweep = write_sweep(tmp_path / "sweep.yaml", spec)
    cache = tmp_path / "variants"
    env = dict(os.environ, QTRUST_DATA_DIR=str(data_dir), COLUMNS="400", QTRUST_VARIANT_CACHE=str(cache))
    env.pop("MLFLOW_TRACKING_URI", None)

    first = qtrust("quantize", str(sweep), "--rebuild-check", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    recorded = json.loads((entry / "qtrust-variant.json").read_text())["weights_sha256"]
    assert f"rebuild check tiny-w4: match, weights sha256 {recorded[:16]}" in first.stdout
    assert "rebuild check tiny-ref: skipped" in first.stdout
    manifest = json.loads((tmp_path / "runs" / "t" / "manifest.json").read_text())
    assert manifest["workers"]["tiny-w4"]["quantization"]["weights_sha256"] == recorded
    assert manifest["rebuild_checks"]["tiny-w4"]["rebuilt_sha256"] == recorded
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("qtrust").experiment_id])
    assert run.data.tags["tiny-w4.variant.weights_sha256"] == recorded
    assert run.data.tags["tiny-w4.rebuild_check"] == "match"

    # One weight of the cached variant changed after its build: the rebuilt weights no longer match.
    (weights,) = entry.glob("*.safetensors")
    tensors = load_file(str(weights))
    tensors["model.layers.0.self_attn.q_proj.weight"][0, 0] += 0.5
    save_file(tensors, str(weights), {"format": "pt"})
    second = qtrust("quantize", str(sweep), "--rebuild-check", cwd=tmp_path, env=env)
    assert second.returncode == 1, second.stdout + second.stderr
    out = " ".join(second.stdout.split())
    assert "rebuild check tiny-w4: MISMATCH" in out
    assert "1 of" in out and "largest difference 0.5 in model.layers.0.self_attn.q_proj.weight" in out
    assert f"the cached files changed since they were built (the entry recorded {recorded[:16]})" in out
    assert "rebuild check failed for tiny-w4" in second.stderr
    assert "Traceback" not in second.stderr
