"""A sweep submitted with ``ray job submit`` to a real two-node Ray cluster started with ``ray start``.

The job's driver is stopped mid-sweep (``ray job stop``) and the sweep resumed as a second job;
``qtrust status`` follows it from outside the cluster and ``ray job logs`` shows the driver's output.
The variant needs a GPU, which only the second node declares, so its worker runs there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.pipeline_helpers import FAKE_SOURCE
from tests.ray_cluster import local_ray_cluster

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ITEMS = 10


def _spec(root: Path) -> dict:
    return {
        "name": "onjob",
        "models": [{"name": "tiny", "source": FAKE_SOURCE, "engine": "fake", "engine_options": {"delay_s": 0.25}}],
        "recipes": [{"name": "ref", "method": "none"}],
        "benchmarks": [{"name": "machine_ethics", "limit": ITEMS, "max_new_tokens": 4},
                       {"name": "xstest", "limit": ITEMS, "max_new_tokens": 6}],
        "shard_size": 2,
        "quality_probe": False,
        # one GPU: only the second node has one, so the variant's worker is placed there
        "resources": {"num_cpus": 0.5, "num_gpus": 1, "retry_backoff_s": 0.1},
        "storage": {"root": str(root / "runs")},
    }


def _submit(cluster, *command: str, env_vars: dict[str, str]) -> str:
    runtime_env = json.dumps({"env_vars": env_vars})
    done = cluster.ray("job", "submit", "--no-wait", "--working-dir", str(REPO), "--runtime-env-json", runtime_env,
                       "--", sys.executable, "-m", "jobs", *command)
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = next(word.strip("'\"") for line in (done.stdout + done.stderr).splitlines() if "submitted successfully" in line
                  for word in line.split() if word.strip("'\"").startswith("raysubmit_"))
    return job_id


def _records(sweep_dir: Path) -> pd.DataFrame:
    files = sorted(sweep_dir.glob("generations/variant=*/benchmark=*/shard-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def test_sweep_as_a_ray_job_on_a_two_node_cluster(tmp_path: Path, data_dir: Path) -> None:
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(_spec(tmp_path)))
    sweep_dir = tmp_path / "runs" / "onjob"
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    env_vars = {"QTRUST_DATA_DIR": str(data_dir), "RAY_USAGE_STATS_ENABLED": "0"}
    with local_ray_cluster(worker_gpus=1) as cluster:
        first = _submit(cluster, "run", str(sweep_file), "--quiet", "--tracking-uri", tracking, env_vars=env_vars)
        # Follow it from outside the cluster until a few shards are stored, then stop its driver.
        deadline = time.monotonic() + 300
        seen_running = False
        while time.monotonic() < deadline:
            if (sweep_dir / "manifest.json").is_file():
                status = subprocess.run([sys.executable, "-m", "jobs", "status", str(sweep_dir), "--json"],
                                        capture_output=True, text=True, timeout=60)
                if status.returncode == 0:
                    doc = json.loads(status.stdout)
                    seen_running = seen_running or doc.get("state") == "running"
            if len(_records(sweep_dir)) >= 6:
                break
            assert cluster.job_status(first) in ("PENDING", "RUNNING"), cluster.ray("job", "logs", first).stdout[-3000:]
            time.sleep(0.5)
        assert seen_running, "qtrust status never saw the sweep running"
        stopped = cluster.ray("job", "stop", first)
        assert stopped.returncode == 0, stopped.stderr
        assert cluster.wait_job(first, 120) == "STOPPED"
        partial = _records(sweep_dir)
        assert 0 < partial["item_key"].nunique() < 2 * ITEMS

        second = _submit(cluster, "resume", str(sweep_dir), "--quiet", "--tracking-uri", tracking, env_vars=env_vars)
        final = cluster.wait_job(second, 600)
        logs = cluster.ray("job", "logs", second).stdout
        assert final == "SUCCEEDED", logs[-4000:]
        assert "Ray: inside a Ray job" in logs and "Items:" in logs, logs[-2000:]

    records = _records(sweep_dir)
    # Nothing lost, nothing computed twice: every item once, the stopped job's shards kept.
    assert records["item_key"].nunique() == 2 * ITEMS
    assert len(records) == 2 * ITEMS, records.groupby("item_key").size().sort_values().tail()
    assert set(partial["item_key"]) <= set(records["item_key"])
    # The workers ran on the node that has the GPU.
    workers = {json.dumps(json.loads(w).get("gpu_ids")) for w in records["worker"]}
    assert workers == {json.dumps(["0"])}, workers
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["state"] == "finished"
