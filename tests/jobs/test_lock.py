"""The sweep lock: one driver per sweep, across processes, with flock and with a lease object."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jobs.store.lock import FLOCK_NAME, LEASE_NAME, SweepLock, SweepLockHeld

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)

HOLD = textwrap.dedent(
    """
    import sys, time
    from jobs.store.lock import SweepLock
    lock = SweepLock(sys.argv[1], mode=sys.argv[2], lease_s=float(sys.argv[3])).acquire()
    print("ready", flush=True)
    time.sleep(120)
    """
)

TRY = textwrap.dedent(
    """
    import sys
    from jobs.store.lock import SweepLock, SweepLockHeld
    try:
        SweepLock(sys.argv[1], mode=sys.argv[2]).acquire()
    except SweepLockHeld as err:
        print(err)
        sys.exit(3)
    print("acquired")
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture
def spawn_holder():
    """Start a process holding the lock of a folder; it is killed at teardown if still alive."""
    procs: list[subprocess.Popen] = []

    def start(sweep_dir: Path, mode: str = "auto", lease_s: float = 60.0) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(sweep_dir), mode, str(lease_s)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=_env(),
        )
        procs.append(proc)
        line = proc.stdout.readline()
        assert line.strip() == "ready", (
            f"holder did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        )
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _try_in_other_process(sweep_dir: Path, mode: str = "auto") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", TRY, str(sweep_dir), mode],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=60,
    )


# --------------------------------------------------------------------------------------------- message
def test_held_message_is_one_line_naming_the_holder():
    holder = {"host": "h", "pid": 1234, "started": "2026-12-01T22:00:00Z", "command": "qtrust run x.yaml"}
    err = SweepLockHeld("qtrust-runs/x", holder)
    assert str(err) == (
        "sweep qtrust-runs/x is being run by pid 1234 on host h since 2026-12-01T22:00:00Z (qtrust run x.yaml); "
        "wait for it to finish, stop it (Ctrl-C / kill 1234), or use another storage root"
    )
    assert err.holder == holder
    assert "\n" not in str(SweepLockHeld("d", None)) and "another process" in str(SweepLockHeld("d", None))


def test_mechanism_follows_the_folder(tmp_path: Path):
    assert SweepLock(str(tmp_path)).mode == "flock"
    assert SweepLock(f"file://{tmp_path}").mode == "flock"
    assert SweepLock("s3://bucket/qtrust-runs/x").mode == "lease"
    assert SweepLock(str(tmp_path), mode="lease").mode == "lease"
    with pytest.raises(ValueError):
        SweepLock(str(tmp_path), mode="nfs")
    with pytest.raises(ValueError):
        SweepLock("s3://bucket/x", mode="flock")


# --------------------------------------------------------------------------------------------- flock
def test_second_process_is_refused_with_pid_and_host(tmp_path: Path):
    sweep = tmp_path / "runs" / "demo"
    with SweepLock(str(sweep)) as lock:
        assert (sweep / FLOCK_NAME).is_file()
        result = _try_in_other_process(sweep)
        assert result.returncode == 3, result.stdout + result.stderr
        message = result.stdout.strip()
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
        assert f"kill {os.getpid()}" in message and str(sweep) in message
        assert lock.held
    # Released: the other process gets it now.
    assert _try_in_other_process(sweep).stdout.strip() == "acquired"


def test_holder_in_another_process_is_reported_and_killing_it_frees_the_lock(tmp_path: Path, spawn_holder):
    proc = spawn_holder(tmp_path)
    with pytest.raises(SweepLockHeld) as caught:
        SweepLock(str(tmp_path)).acquire()
    assert caught.value.holder["pid"] == proc.pid
    assert f"pid {proc.pid} on host {socket.gethostname()}" in str(caught.value)
    assert SweepLock(str(tmp_path)).holder()["pid"] == proc.pid

    _kill(proc)
    assert SweepLock(str(tmp_path)).holder() is None  # stale JSON stays in the file but nobody holds it
    start = time.monotonic()
    lock = SweepLock(str(tmp_path)).acquire()
    assert time.monotonic() - start < 1.0
    assert lock.holder()["pid"] == os.getpid()
    assert json.loads((tmp_path / FLOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_holder_probe_leaves_the_lock_in_place(tmp_path: Path):
    lock = SweepLock(str(tmp_path)).acquire()
    other = SweepLock(str(tmp_path))
    for _ in range(3):
        seen = other.holder()
        assert seen["pid"] == os.getpid() and seen["host"] == socket.gethostname()
        assert seen["started"].endswith("Z") and seen["command"]
    assert _try_in_other_process(tmp_path).returncode == 3
    with pytest.raises(SweepLockHeld):
        other.acquire()  # flock conflicts between two open files of one process too
    lock.release()
    lock.release()  # idempotent
    assert other.holder() is None
    assert (tmp_path / FLOCK_NAME).read_text() == ""  # no stale holder details after a clean release


def test_holder_of_a_missing_folder_is_none_and_creates_nothing(tmp_path: Path):
    missing = tmp_path / "nope"
    assert SweepLock(str(missing)).holder() is None
    assert not missing.exists()


# --------------------------------------------------------------------------------------------- lease
def test_lease_refuses_a_second_holder_and_is_renewed(tmp_path: Path, spawn_holder):
    proc = spawn_holder(tmp_path, mode="lease", lease_s=1.0)
    lease = json.loads((tmp_path / LEASE_NAME).read_text())
    assert lease["pid"] == proc.pid and lease["lease_expires"].endswith("Z")
    time.sleep(1.5)  # past the first expiry: only renewal keeps it held
    with pytest.raises(SweepLockHeld) as caught:
        SweepLock(str(tmp_path), mode="lease", lease_s=1.0).acquire()
    assert f"pid {proc.pid} on host {socket.gethostname()}" in str(caught.value)
    assert caught.value.holder["lease_expires"]
    assert SweepLock(str(tmp_path), mode="lease").holder()["pid"] == proc.pid


def test_lease_of_a_killed_holder_expires_and_is_taken_over(tmp_path: Path, spawn_holder):
    proc = spawn_holder(tmp_path, mode="lease", lease_s=1.0)
    _kill(proc)
    time.sleep(1.2)
    assert SweepLock(str(tmp_path), mode="lease").holder() is None
    lock = SweepLock(str(tmp_path), mode="lease", lease_s=1.0).acquire()
    assert json.loads((tmp_path / LEASE_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LEASE_NAME).exists()


def test_lease_release_deletes_only_its_own_lease(tmp_path: Path):
    first = SweepLock(str(tmp_path), mode="lease", lease_s=1.0).acquire()
    first._stop_renewal()  # a driver stalled past its lease
    time.sleep(1.2)
    second = SweepLock(str(tmp_path), mode="lease", lease_s=1.0).acquire()
    second_id = json.loads((tmp_path / LEASE_NAME).read_text())["lease_id"]
    first.release()
    assert json.loads((tmp_path / LEASE_NAME).read_text())["lease_id"] == second_id
    with pytest.raises(SweepLockHeld):
        SweepLock(str(tmp_path), mode="lease").acquire()
    second.release()
    second.release()
    assert not (tmp_path / LEASE_NAME).exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_renewal_notices_a_takeover(tmp_path: Path):
    lock = SweepLock(str(tmp_path), mode="lease", lease_s=0.6).acquire()
    record = json.loads((tmp_path / LEASE_NAME).read_text())
    (tmp_path / LEASE_NAME).write_text(json.dumps({**record, "lease_id": "someone-else", "pid": 1}))
    deadline = time.monotonic() + 3
    while not lock.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.lost
    assert json.loads((tmp_path / LEASE_NAME).read_text())["lease_id"] == "someone-else"
    lock.release()
    assert (tmp_path / LEASE_NAME).exists()
