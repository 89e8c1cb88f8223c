"""A real `mlflow server` on 127.0.0.1 for tests (one worker, no job runner), started and killed by them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _mlflow_server(root: Path, port: int) -> Iterator[subprocess.Popen]:
    """A real ``mlflow server`` (one worker, no job runner) on 127.0.0.1:``port``; killed on exit."""
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / f"server-{time.time():.0f}.log", "wb")
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--default-artifact-root", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_healthy(port, server, timeout_s=90)
        yield server
    finally:
        _kill(server)
        log.close()


def _wait_healthy(port: int, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "mlflow server exited while starting"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("mlflow server did not answer /health")


def _kill(server: subprocess.Popen) -> None:
    """SIGKILL the server and its worker processes (its own process group)."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(timeout=30)


def mlflow_rest(base: str, endpoint: str, body: dict[str, Any] | None = None, **query: str) -> dict[str, Any]:
    """One call to an MLflow server's REST API: POST with a JSON ``body``, else GET with ``query``."""
    url = f"{base}/api/2.0/mlflow/{endpoint}"
    if body is None:
        request = urllib.request.Request(f"{url}?{urllib.parse.urlencode(query)}")
    else:
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())
