"""A real S3-compatible server on 127.0.0.1 for the tests: moto's standalone server (``moto[server]``).

:func:`start_s3_server` runs ``moto_server -H 127.0.0.1 -p <free port>`` as a subprocess, waits until
it answers, and returns an :class:`S3Server` with the endpoint, test credentials, a bucket helper and
the server's request log (one line per HTTP request: what a test reads to count PUTs).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    """A running moto server: where it listens and the credentials it accepts (any, for moto)."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def env(self) -> dict[str, str]:
        """What a process needs in its environment to reach the server (endpoint and credentials)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique one by default) and return its name."""
        bucket = name or f"qtrust-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(f"{self.endpoint_url}/{bucket}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200, reply.status
        return bucket

    def requests(self) -> list[str]:
        """The request lines the server logged so far (``"PUT /bucket/key HTTP/1.1"``)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line.split('"')[1] for line in lines if line.count('"') >= 2 and " HTTP/" in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_s3_server(log_dir: Path, timeout_s: float = 30.0) -> S3Server:
    """Start moto's server on a free port of 127.0.0.1; fail loudly if it is not installed or does not answer."""
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if binary is None:
        raise RuntimeError("moto_server not found; install the test extra: pip install -e '.[test]' (moto[server])")
    port = _free_port()
    log_path = log_dir / "moto.log"
    handle = open(log_path, "w")
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = S3Server(
        f"http://127.0.0.1:{port}",
        "qtrust-test-access-AKIA7EXAMPLE",
        "qtrust-test-secret-wJalrXUtnFEMI",
        "us-east-1",
        log_path,
        process,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.endpoint_url}/", timeout=2):
                return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"moto_server did not answer within {timeout_s:g}s: {log_path.read_text()[-2000:]}")
