"""Every built-in benchmark through a real sweep (local Ray, HF engine on a tiny Llama, MLflow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from jobs.runner import run_sweep
from jobs.spec.load import parse_spec
from jobs.spec.run_options import RunOptions
from tests.support.data_folders import completed_data_folder
from tests.support.mlflow_store import sqlite_store
from trust.benchmarks import BENCHMARKS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def test_a_sweep_over_every_built_in_benchmark(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    names = sorted(BENCHMARKS)
    spec = parse_spec(
        {
            "name": "every",
            "models": [{"name": "tiny", "source": str(tiny_model_dir)}],
            "recipes": [
                {"name": "ref", "method": "none"},
                {"name": "w4", "method": "rtn", "bits": 4, "group_size": 32},
            ],
            "benchmarks": [{"name": n, "limit": 2, "max_new_tokens": 4} for n in names],
            "ensembles": [{"name": "vote", "members": ["ref", "w4"]}],
            "storage": {"root": str(tmp_path / "runs")},
            "resources": {"num_cpus_per_worker": 1},
        }
    )
    data_dir = completed_data_folder(data_dir, tmp_path)  # SafetyBench's questions on a small file
    outcome = run_sweep(spec, RunOptions(data_dir=data_dir, tracking_uri=sqlite_store(tmp_path / "m.db"), quiet=True))
    assert not outcome.failed
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    runs = client.search_runs([outcome.experiment_id], max_results=500)
    by_key = {
        (r.data.tags.get("qtrust.kind"), r.data.params.get("variant"), r.data.tags.get("qtrust.benchmark")): r
        for r in runs
    }
    rows = {(r.name, r.benchmark): r for r in outcome.results}
    for name in names:
        run = by_key[("variant", "tiny-w4", name)]
        definition = BENCHMARKS[name]
        metrics = rows[("tiny-w4", name)].metrics
        assert definition.primary_metric in metrics, name
        # Every metric that has a value is in MLflow (nan, e.g. no answered item, is not logged).
        logged = {k for k, v in metrics.items() if v == v}
        assert logged <= set(run.data.metrics), (name, logged - set(run.data.metrics))
        assert run.data.metrics["n_items"] == 2, name
        assert run.data.params["benchmark.name"] == name
        assert run.inputs.dataset_inputs, f"{name}: no dataset input"
        if definition.perspective_score is not None and "perspective_score" in metrics:
            assert 0 <= run.data.metrics["perspective_score"] <= 100, name
    parent = client.get_run(outcome.parent_run_id)
    # perspective scores per variant are the parent's summary table, never a metric named after a variant
    assert not any(key.startswith("tiny-w4.") for key in parent.data.metrics)
    summary = pd.read_json(
        client.download_artifacts(parent.info.run_id, "summary.json", str(tmp_path / "dl")), orient="split"
    )
    assert any(column.endswith("_score") for column in summary.columns) and "tiny-w4" in set(summary["name"])
    truthful = next(r for r in outcome.results if r.name == "tiny-ref" and r.benchmark == "truthfulqa_mc2")
    assert 0.0 <= truthful.metrics["mc2"] <= 1.0
