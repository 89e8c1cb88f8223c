"""A sweep submitted with ``ray job submit`` to a real two-node Ray cluster started with ``ray start``.

The store is on a real S3-compatible server and the runs in a real MLflow server, both on 127.0.0.1.
The job's driver is stopped mid-sweep (``ray job stop``) and the sweep resumed as a second job
(``qtrust resume s3://...``); ``qtrust status s3://...`` follows it from outside the cluster and
``ray job logs`` shows the driver's output. The variant needs a GPU, which only the second node
declares, so its worker runs there.
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

from tests.support.pipeline_helpers import FAKE_SOURCE
from tests.support.ray_cluster import local_ray_cluster

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ITEMS = 10


def _spec(root: str) -> dict:
    return {
        "name": "onjob",
        "models": [{"name": "tiny", "source": FAKE_SOURCE, "engine": "fake", "engine_options": {"delay_s": 1.0}}],
        "recipes": [{"name": "ref", "method": "none"}],
        "benchmarks": [
            {"name": "machine_ethics", "limit": ITEMS, "max_new_tokens": 4},
            {"name": "xstest", "limit": ITEMS, "max_new_tokens": 6},
        ],
        "shard_size": 2,
        "quality_probe": False,
        # one GPU: only the second node has one, so the variant's worker is placed there
        "resources": {"num_cpus": 0.5, "num_gpus": 1, "retry_backoff_s": 0.1},
        "storage": {"root": root},
    }


def _submit(cluster, *command: str, env_vars: dict[str, str]) -> str:
    runtime_env = json.dumps({"env_vars": env_vars})
    args = ["job", "submit", "--no-wait", "--working-dir", str(REPO), "--runtime-env-json", runtime_env]
    # A fresh `ray start` cluster's job agent registers a moment after the head answers; until then
    # the server answers "No available agent to submit job, please try again later" — as a user
    # would, submit again. (An agent that never registers — its HTTP port taken by another Ray on
    # the machine — is why tests/support/ray_cluster.py gives each node a free agent port.)
    deadline = time.monotonic() + 60
    while True:
        done = cluster.ray(*args, "--", sys.executable, "-m", "jobs", *command)
        output = done.stdout + done.stderr
        if done.returncode == 0 or "No available agent" not in output or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert done.returncode == 0, output
    job_id = next(
        word.strip("'\"")
        for line in (done.stdout + done.stderr).splitlines()
        if "submitted successfully" in line
        for word in line.split()
        if word.strip("'\"").startswith("raysubmit_")
    )
    return job_id


def _records(sweep_uri: str) -> pd.DataFrame:
    """Every committed generation record under the sweep (on S3)."""
    from pyarrow import fs as pafs

    filesystem, base = pafs.FileSystem.from_uri(sweep_uri)
    selector = pafs.FileSelector(f"{base}/generations", recursive=True, allow_not_found=True)
    files = [
        f.path
        for f in filesystem.get_file_info(selector)
        if f.type == pafs.FileType.File and f.base_name.startswith("shard-") and f.path.endswith(".parquet")
    ]
    frames = [pd.read_parquet(path, filesystem=filesystem) for path in sorted(files)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["item_key", "worker"])


def _manifest(sweep_uri: str) -> dict:
    from pyarrow import fs as pafs

    filesystem, base = pafs.FileSystem.from_uri(sweep_uri)
    with filesystem.open_input_stream(f"{base}/manifest.json") as stream:
        return json.loads(stream.read())


def test_sweep_as_a_ray_job_on_a_two_node_cluster(tmp_path: Path, data_dir: Path, s3_server) -> None:
    from tests.support.mlflow_server import _free_port, _mlflow_server

    bucket = s3_server.create_bucket()
    root = f"s3://{bucket}/runs"
    sweep_uri = f"{root}/onjob"
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(_spec(root)))
    # The job's processes reach the S3 server and the data through their environment (on a real
    # cluster: the nodes' own environment or instance roles; see README, "Run on a cluster").
    env_vars = {"QTRUST_DATA_DIR": str(data_dir), "RAY_USAGE_STATS_ENABLED": "0", **s3_server.env}
    server_root = tmp_path / "mlflow"
    server_root.mkdir()
    port = _free_port()
    tracking = f"http://127.0.0.1:{port}"
    with _mlflow_server(server_root, port), local_ray_cluster(worker_gpus=1) as cluster:
        first = _submit(cluster, "run", str(sweep_file), "--quiet", "--tracking-uri", tracking, env_vars=env_vars)
        # Follow it from outside the cluster (reading S3) until a few shards are stored, then stop its driver.
        deadline = time.monotonic() + 300
        seen_running = False
        while time.monotonic() < deadline:
            status = subprocess.run(
                [sys.executable, "-m", "jobs", "status", sweep_uri, "--json"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if status.returncode == 0:
                seen_running = seen_running or json.loads(status.stdout).get("state") == "running"
            if seen_running and len(_records(sweep_uri)) >= 6:
                break
            assert cluster.job_status(first) in ("PENDING", "RUNNING"), cluster.ray("job", "logs", first).stdout[-3000:]
            time.sleep(0.5)
        assert seen_running, "qtrust status never saw the sweep running"
        stopped = cluster.ray("job", "stop", first)
        assert stopped.returncode == 0, stopped.stderr
        assert cluster.wait_job(first, 120) == "STOPPED"
        partial = _records(sweep_uri)
        assert 0 < partial["item_key"].nunique() < 2 * ITEMS

        second = _submit(cluster, "resume", sweep_uri, "--quiet", "--tracking-uri", tracking, env_vars=env_vars)
        final = cluster.wait_job(second, 600)
        logs = cluster.ray("job", "logs", second).stdout
        assert final == "SUCCEEDED", logs[-4000:]
        assert "Ray: inside a Ray job" in logs and "Items:" in logs, logs[-2000:]

        # The runs are in the MLflow server: the resumed driver finished the same runs.
        search = json.dumps({"experiment_ids": [_manifest(sweep_uri)["mlflow"]["experiment_id"]], "max_results": 50})
        import urllib.request

        request = urllib.request.Request(
            f"{tracking}/api/2.0/mlflow/runs/search", data=search.encode(), headers={"Content-Type": "application/json"}
        )
        runs = json.loads(urllib.request.urlopen(request, timeout=30).read())["runs"]
        assert sorted(r["info"]["status"] for r in runs) == ["FINISHED"] * 3  # the sweep + ref × 2 benchmarks
        status = subprocess.run(
            [sys.executable, "-m", "jobs", "status", sweep_uri], capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0 and "finished" in status.stdout, status.stdout + status.stderr

        # Ray Client (still in Ray 2.60): the driver runs here and joins the cluster at ray://.
        local = _spec(str(tmp_path / "client-runs"))
        local["name"] = "viaclient"
        (tmp_path / "client.yaml").write_text(yaml.safe_dump(local))
        client = subprocess.run(
            [
                sys.executable,
                "-m",
                "jobs",
                "run",
                str(tmp_path / "client.yaml"),
                "--quiet",
                "--address",
                cluster.client_address,
                "--tracking-uri",
                f"sqlite:///{tmp_path}/client.db",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=cluster.env(QTRUST_DATA_DIR=str(data_dir)),
        )
        assert client.returncode == 0, client.stdout[-3000:] + client.stderr[-3000:]
        assert "joined the cluster at --address" in client.stdout and "Items: 20 computed" in client.stdout

    records = _records(sweep_uri)
    # Nothing lost, nothing computed twice: every item once, the stopped job's shards kept.
    assert records["item_key"].nunique() == 2 * ITEMS
    assert len(records) == 2 * ITEMS, records.groupby("item_key").size().sort_values().tail()
    assert set(partial["item_key"]) <= set(records["item_key"])
    # The workers ran on the node that has the GPU.
    workers = {json.dumps(json.loads(w).get("gpu_ids")) for w in records["worker"]}
    assert workers == {json.dumps(["0"])}, workers
    assert _manifest(sweep_uri)["state"] == "finished"
    # The S3 keys reached no stored file and no run data.
    for value in (s3_server.secret_key,):
        assert value not in json.dumps(_manifest(sweep_uri)) and value not in json.dumps(runs)
