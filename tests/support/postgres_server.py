"""A real PostgreSQL server on 127.0.0.1 for tests: a fresh cluster in a temporary folder, password
authentication over TCP, started and stopped by the test.

PostgreSQL refuses to run as root; tests in CI run as root, so the server then runs as the
``postgres`` user (Debian's ``postgresql`` package creates it) through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Where Debian's ``postgresql`` package puts the server programs (one folder per major version).
DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin"
SYSTEM_USER = "postgres"


@dataclass(frozen=True)
class Postgres:
    """A running server: how to reach it, and the one database made for the test."""

    host: str
    port: int
    user: str
    password: str
    database: str

    def uri(self, driver: str = "psycopg") -> str:
        """SQLAlchemy URI of the database (``postgresql+psycopg://user:password@host:port/db``)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def connect(self):  # -> psycopg.Connection
        """A psycopg connection to the database (autocommit)."""
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.database,
            autocommit=True,
            connect_timeout=5,
        )


def binaries() -> Path:
    """The folder holding ``initdb`` and ``postgres`` (the newest Debian version); fails with how to install it."""
    found = sorted(
        glob.glob(DEBIAN_BINARIES), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0
    )
    for folder in reversed(found):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "postgres").is_file():
            return Path(folder)
    pytest.fail(
        "PostgreSQL server programs not found under /usr/lib/postgresql/*/bin; install them with "
        "`apt-get install -y postgresql` (Debian/Ubuntu; `make test` does it as root)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    """``command`` run as ``postgres`` when this process is root (PostgreSQL refuses root), else as is."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser") is None:
        pytest.fail("running as root needs `runuser` (util-linux) to start PostgreSQL as the postgres user")
    return ["runuser", "-u", SYSTEM_USER, "--", *command]


def _hand_over(folder: Path) -> None:
    """Give ``folder`` (and what is in it) to the server's user when running as root."""
    if os.geteuid() != 0:
        return
    import pwd

    owner = pwd.getpwnam(SYSTEM_USER)
    for root, dirs, files in os.walk(folder):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, owner.pw_uid, owner.pw_gid)


def _wait_ready(server: subprocess.Popen, pg: Postgres, log: Path, timeout_s: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"postgres exited while starting:\n{log.read_text()[-3000:]}")
        try:
            with psycopg.connect(
                host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname="postgres", connect_timeout=2
            ):
                return
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise AssertionError(f"postgres did not accept connections within {timeout_s:g} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT to the postmaster's process group); SIGKILL when it lingers."""
    for sig, wait_s in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def postgres_server(database: str = "mlflow", user: str = "qtrust") -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1 (a free port, scram-sha-256 passwords over TCP, no
    Unix socket outside its folder) holding an empty ``database``; stopped and removed on exit."""
    import psycopg

    bindir = binaries()
    # Not under pytest's tmp_path: its parent folders are private to root, the server runs as postgres.
    home = Path(tempfile.mkdtemp(prefix="qtrust-pg-"))
    data, log = home / "data", home / "server.log"
    password = secrets.token_urlsafe(18)
    pg = Postgres("127.0.0.1", _free_port(), user, password, database)
    (home / "pw").write_text(password + "\n")
    _hand_over(home)
    server: subprocess.Popen | None = None
    try:
        init = subprocess.run(
            _as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={home / 'pw'}",
                             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync"]),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert init.returncode == 0, f"initdb failed:\n{init.stdout[-2000:]}\n{init.stderr[-2000:]}"
        (home / "pw").unlink()
        with open(log, "wb") as out:
            server = subprocess.Popen(
                _as_server_user([str(bindir / "postgres"), "-D", str(data), "-p", str(pg.port),
                                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={home}",
                                 "-c", "fsync=off", "-c", "max_connections=40"]),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        _wait_ready(server, pg, log, timeout_s=60)
        with psycopg.connect(
            host=pg.host, port=pg.port, user=user, password=password, dbname="postgres", autocommit=True
        ) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        yield pg
    finally:
        if server is not None:
            _stop(server)
        shutil.rmtree(home, ignore_errors=True)


__all__ = ["Postgres", "postgres_server", "binaries"]
