"""The demo sweep through the real CLI on the real built-in model (a few items), run twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def qtrust(*args: str, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, QTRUST_DATA_DIR=str(data_dir), COLUMNS="200")
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200
    )


def test_demo_runs_then_resumes_with_nothing_to_compute(tmp_path: Path, data_dir: Path) -> None:
    demo = REPO / "examples" / "demo.yaml"
    first = qtrust("run", str(demo), "--limit", "3", "--quiet", cwd=tmp_path, data_dir=data_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    # One comparison table per benchmark (short names, intervals, deltas against the reference).
    assert "machine_ethics v" in out and "xstest v" in out and "Δ vs ref [95% CI]" in out and "reference" in out
    lines = out.splitlines()
    for row in ("ref", "w8", "w4", "w3", "gptq-w4", "awq-w4", "vote-w8-w4-w3"):
        assert any(line.split()[:1] == [row] for line in lines), row
    assert "Ensemble search" in out
    assert "probe ppl" in out and "packed" in out  # the variants table
    assert (
        "mlflow ui --backend-store-uri sqlite:///" in out
        and "viewStateShareKey=" in out
        and "viewStateShareKey=***" not in out
    )
    assert (tmp_path / "qtrust-runs" / "demo" / "report.html").is_file() and "HTML report:" in out

    table = ds.dataset(
        tmp_path / "qtrust-runs" / "demo" / "generations", format="parquet", partitioning="hive"
    ).to_table()
    assert table.num_rows == 6 * 2 * 3
    frame = table.to_pandas()
    assert frame["error"].isna().all()
    assert frame["output"].str.len().gt(0).all(), "the real model answered every prompt"

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("qtrust-demo")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 + 6 * 2 + 2

    second = qtrust("resume", "qtrust-runs/demo", "--quiet", cwd=tmp_path, data_dir=data_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Nothing to compute" in second.stdout
    assert "36 already stored, 0 to compute" in second.stdout
    assert len(client.search_runs([experiment.experiment_id])) == len(runs)
