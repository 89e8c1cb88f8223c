"""`qtrust run` as a user runs it, next to a Ray cluster someone started with `ray start`:
the sweep starts its own private Ray (and says so), and `qtrust status` follows it from another
process while it runs and after it ends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.pipeline_helpers import fake_sweep, kill_session, wait_for

pytestmark = pytest.mark.slow

QTRUST = str(Path(sys.executable).parent / "qtrust")
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(sweep_dir: Path, env: dict) -> dict:
    out = subprocess.run(
        [QTRUST, "status", str(sweep_dir), "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture()
def someone_elses_cluster(tmp_path: Path):
    """A Ray head started with `ray start --block` (its own session, killed at the end)."""
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false", "--block"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (
                subprocess.run([RAY, "status", f"--address=127.0.0.1:{port}"], capture_output=True, env=env).returncode
                == 0
            ),
            90,
            1.0,
            "the ray start head",
        )
        yield f"127.0.0.1:{port}"
    finally:
        kill_session(head.pid, [head.pid])


def test_run_starts_a_private_ray_and_status_follows_it(
    someone_elses_cluster: str, tmp_path: Path, data_dir: Path
) -> None:
    spec = fake_sweep(tmp_path, {"delay_s": 2.0}, items=12, shard_size=2, resources={"replicas": 2, "max_in_flight": 1})
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "runs" / "pipe"
    env = {
        **os.environ,
        "RAY_ADDRESS": someone_elses_cluster,
        "RAY_AUTH_MODE": "disabled",
        "QTRUST_DATA_DIR": str(data_dir),
    }
    driver = subprocess.Popen(
        [QTRUST, "run", str(sweep_file), "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:

        def running_with_progress() -> dict | None:
            if not (sweep_dir / "manifest.json").exists():
                return None
            status = _status(sweep_dir, env)
            return status if status["state"] == "running" and status["totals"]["done"] > 0 else None

        during = wait_for(running_with_progress, 180, 0.5, "a running sweep with committed items")
        assert during["lock_holder"]["pid"] == driver.pid and not during["stale"]
        assert 0 < during["totals"]["done"] < during["totals"]["planned"] == 24
        replicas = during["pools"]["generate:tiny-ref"]["replicas"]
        assert len(replicas) == 2
        assert during["ray"]["address"] != someone_elses_cluster
        # a second driver of the same sweep is refused and told who holds it
        second = subprocess.run(
            [QTRUST, "run", str(sweep_file), "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--quiet"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"pid {driver.pid}" in second.stderr and "Traceback" not in second.stderr
        output, _ = driver.communicate(timeout=240)
    finally:
        kill_session(driver.pid, [driver.pid])
    assert driver.returncode == 0, output
    assert "private local Ray started for this sweep" in output
    # its workers run at normal priority (Ray's own default would be nice 15)
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["workers"]["tiny-ref"]["nice"] == 0
    after = _status(sweep_dir, env)
    assert after["state"] == "finished" and after["lock_holder"] is None and not after["stale"]
    assert after["totals"]["done"] == after["totals"]["planned"] == 24 and after["totals"]["pending"] == 0
    assert after["progress"]["tiny-ref"]["xstest"] == {"planned": 12, "done": 12, "failed": 0, "pending": 0}
    assert after["store"]["shards"] == 12 and after["store"]["problems"] == []  # status checked the store
    assert sum(r["items_done"] for r in after["pools"]["generate:tiny-ref"]["replicas"]) == 24
    text = subprocess.run([QTRUST, "status", str(sweep_dir)], capture_output=True, text=True, env=env, timeout=60)
    assert text.returncode == 0 and "finished" in text.stdout and "tiny-ref" in text.stdout
    # a second run with another shard size and a raised limit computes only the new items
    spec["shard_size"] = 3
    for bench in spec["benchmarks"]:
        bench["limit"] = 14
    sweep_file.write_text(yaml.safe_dump(spec))
    again = subprocess.run(
        [QTRUST, "run", str(sweep_file), "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "24 already stored, 4 to compute" in again.stdout
    assert "Items: 4 computed" in again.stdout
    # the report needs no data folder: the run kept the sweep's items in its store
    bare = {k: v for k, v in env.items() if k != "QTRUST_DATA_DIR"}
    report = subprocess.run(
        [QTRUST, "report", str(sweep_dir), "--no-mlflow"], capture_output=True, text=True, env=bare, timeout=120
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert "PARTIAL" not in report.stdout and "machine_ethics" in report.stdout
    assert (sweep_dir / "plan" / "contexts.json").is_file() and (sweep_dir / "report.html").is_file()
