"""A real multi-process Ray cluster on this machine: ``ray start --head`` plus a second node process.

The second node declares a GPU (``--num-gpus``, no device needed) and a custom resource, so
placement across nodes is exercised; the head's dashboard serves the job API that ``ray job
submit`` talks to. Only the processes of this cluster are stopped at the end (found by its temp
dir), never another Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRayCluster:
    """Addresses of a running two-node cluster."""

    gcs_address: str
    dashboard_url: str
    temp_dir: Path
    client_address: str = ""
    """``ray://127.0.0.1:PORT``: the head's Ray Client server."""

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for the ``ray`` CLI that talks to this cluster's job API."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        env.update({"RAY_ADDRESS": self.dashboard_url, "RAY_USAGE_STATS_ENABLED": "0", **extra})
        env.setdefault("RAY_AUTH_MODE", "disabled")
        return env

    def ray(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        """Run ``ray <args>`` against this cluster (its output captured)."""
        return subprocess.run([RAY, *args], capture_output=True, text=True, timeout=timeout, env=self.env(**env))

    def job_status(self, job_id: str) -> str:
        with urllib.request.urlopen(f"{self.dashboard_url}/api/jobs/{job_id}", timeout=10) as answer:
            return str(json.loads(answer.read())["status"])

    def wait_job(self, job_id: str, timeout_s: float = 600) -> str:
        """Wait until the job ends; its final status."""
        deadline = time.monotonic() + timeout_s
        status = ""
        while time.monotonic() < deadline:
            status = self.job_status(job_id)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return status
            time.sleep(1.0)
        raise TimeoutError(f"job {job_id} still {status} after {timeout_s:.0f} s")


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _start(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )


def _stop(temp_dir: Path) -> None:
    """Kill the processes of this cluster only (their command lines name its temp dir)."""
    import psutil

    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp_dir) in part for part in proc.info["cmdline"] or []):
                mine.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in mine:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(mine, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


@contextmanager
def local_ray_cluster(*, head_cpus: int = 1, worker_cpus: int = 1, worker_gpus: int = 1) -> Iterator[LocalRayCluster]:
    """Start the head and a second node; stop both afterwards."""
    # Ray's socket paths must stay short: a temp dir directly under /tmp.
    temp_dir = Path(tempfile.mkdtemp(prefix="qtr-ray-", dir="/tmp"))
    port, dash, client = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.setdefault("RAY_AUTH_MODE", "disabled")  # a test cluster on 127.0.0.1 (KubeRay's manifests use tokens)
    common = ["--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    # Each node's dashboard agent serves the job API over HTTP on 52365 unless told otherwise: two
    # nodes on one machine, or any other Ray started here meanwhile (a test's private ``ray.init``),
    # would take it first and leave the head without a job agent ("No available agent to submit job").
    head_agent, worker_agent = free_port(), free_port()
    try:
        _start(
            [
                RAY,
                "start",
                "--head",
                f"--port={port}",
                f"--num-cpus={head_cpus}",
                "--num-gpus=0",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                f"--ray-client-server-port={client}",
                f"--temp-dir={temp_dir}",
                f"--dashboard-agent-listen-port={head_agent}",
                *common,
            ],
            env,
        )
        _start(
            [
                RAY,
                "start",
                f"--address=127.0.0.1:{port}",
                f"--num-cpus={worker_cpus}",
                f"--num-gpus={worker_gpus}",
                '--resources={"second_node": 1}',
                f"--dashboard-agent-listen-port={worker_agent}",
                # Its own temp dir, as a second machine would have: sharing the head's, its runtime-env
                # agent unpacks a job's working_dir again over the head's copy (Ray removes the folder
                # first), under a driver that is importing from it — ModuleNotFoundError, now and then.
                f"--temp-dir={temp_dir / 'n2'}",
                *common,
            ],
            env,
        )
        dashboard = f"http://127.0.0.1:{dash}"
        _wait_http(f"{dashboard}/api/version", 120)
        yield LocalRayCluster(
            gcs_address=f"127.0.0.1:{port}",
            dashboard_url=dashboard,
            temp_dir=temp_dir,
            client_address=f"ray://127.0.0.1:{client}",
        )
    finally:
        _stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
