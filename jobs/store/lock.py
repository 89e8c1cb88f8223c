"""One driver per sweep: a sweep-level lock that names its holder.

Two ``qtrust run`` of the same sweep at once would compute every shard twice and log every MLflow run
twice, so the driver takes this lock first and a second driver stops with one line saying who holds it.

Layout (inside the sweep folder; dot-files, so data readers ignore them)::

    <sweep_dir>/.lock                        flock: the locked file, the holder's JSON inside
                                             (host, pid, started, command), truncated on release
    <sweep_dir>/.lock.json                   lease: the holder's JSON plus lease_id and lease_expires
    <sweep_dir>/.tmp-.lock.json-<random>     lease: a renewal being written (local disks only)

Two mechanisms, chosen from the sweep folder (``mode="auto"``):

``flock`` (local paths and ``file://`` URIs)
    ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<sweep_dir>/.lock`` (dot-prefixed, so data readers ignore
    it). The holder's details are written as JSON into the locked file. The kernel drops the lock when
    the holding process dies, SIGKILL included, so a killed driver never blocks a resume. The file is
    never deleted (deleting a lock file races with a process that has just opened it); on release it
    is truncated.

``lease`` (object stores and anything else ``pyarrow.fs`` opens)
    A lease object ``<sweep_dir>/.lock.json``. Object stores offer no conditional PUT through
    ``pyarrow.fs`` (S3's ``If-None-Match`` is not reachable through it), so acquiring is read, write
    ours if absent/ours/expired, wait, read back: the last writer wins and the loser gives up. Writes
    go through :func:`cluster.storage.atomic.write_atomic` (a rename on local disks, one PUT on object
    stores), so a reader never sees half a lease. This is best effort: two drivers starting within
    the settle time of each other could both read their own lease back on a store that is not
    read-after-write consistent (S3 is, since 2020). A daemon thread renews the lease every
    ``lease_s / 3``; a killed driver's lease expires after at most ``lease_s``. Release deletes the
    object only if it is still ours.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from cluster.storage.atomic import read_bytes, write_atomic
from cluster.storage.redact import redact

try:  # Linux and macOS; elsewhere every folder uses the lease.
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

#: Lock file of the flock mechanism, inside the sweep folder.
FLOCK_NAME = ".lock"
#: Lease object of the lease mechanism, inside the sweep folder.
LEASE_NAME = ".lock.json"
#: Seconds between writing our lease and reading it back (lets a concurrent writer's PUT land).
LEASE_SETTLE_S = 0.5
#: How long a refused acquirer keeps retrying a flock (a ``qtrust status`` probe holds a shared lock
#: for microseconds; this keeps such a probe from refusing a starting driver).
FLOCK_RETRY_S = 0.2

MODES = ("auto", "flock", "lease")
#: Environment variable overriding the lease lifetime in seconds (default 60): how long a killed
#: driver's lease on an object store keeps a new driver out.
LEASE_ENV = "QTRUST_SWEEP_LEASE_S"
DEFAULT_LEASE_S = 60.0


def default_lease_s() -> float:
    """``$QTRUST_SWEEP_LEASE_S`` when it is a positive number, else 60 s."""
    try:
        value = float(os.environ.get(LEASE_ENV, DEFAULT_LEASE_S))
    except ValueError:
        return DEFAULT_LEASE_S
    return value if value > 0 else DEFAULT_LEASE_S


class SweepLockHeld(Exception):
    """Another process holds the sweep's lock; ``holder`` says who (may be empty when unknown)."""

    def __init__(self, sweep_dir: str, holder: dict[str, Any] | None):
        self.sweep_dir = sweep_dir
        self.holder: dict[str, Any] = dict(holder or {})
        super().__init__(held_message(sweep_dir, self.holder))


def held_message(sweep_dir: str, holder: dict[str, Any]) -> str:
    """The one user-facing line saying who runs ``sweep_dir`` and what to do about it."""
    pid = holder.get("pid")
    if pid is None:
        who = "another process (its lock gives no details)"
    else:
        who = f"pid {pid} on host {holder.get('host', '?')}"
        if holder.get("started"):
            who += f" since {holder['started']}"
        if holder.get("command"):
            who += f" ({holder['command']})"
    stop = f"stop it (Ctrl-C / kill {pid})" if pid is not None else "stop it"
    return f"sweep {sweep_dir} is being run by {who}; wait for it to finish, {stop}, or use another storage root"


def utc_iso(moment: datetime | None = None, *, millis: bool = False) -> str:
    """``moment`` (default now) as ISO-8601 UTC with a ``Z`` suffix, to the second (or millisecond)."""
    moment = (moment or datetime.now(timezone.utc)).astimezone(timezone.utc)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> datetime | None:
    """Parse an ISO-8601 time (``Z`` or offset; naive counts as UTC); None when absent or malformed."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def current_command() -> str:
    """The command line of this process as the user typed it, roughly (``qtrust run x.yaml``)."""
    argv = list(sys.argv) or ["python"]
    first = argv[0]
    if first.endswith("__main__.py"):
        head = ["python", "-m", Path(first).parent.name]
    elif first in ("-c", ""):
        head = ["python", "-c"]
    else:
        head = [Path(first).name]
    return redact(shlex.join(head + argv[1:]))


def local_path(sweep_dir: str) -> str | None:
    """The local folder behind ``sweep_dir`` (a plain path or ``file://`` URI); None for other URIs."""
    text = str(sweep_dir)
    if "://" not in text:
        return os.path.abspath(text)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return unquote(parsed.path) or "/"
    return None


def _holder_record(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": utc_iso(),
        "command": current_command(),
    }
    record.update(extra or {})
    return record


class SweepLock:
    """Sweep-level lock; ``with SweepLock(dir):`` or ``acquire()`` / ``release()``.

    ``sweep_dir`` is a local path or any URI ``pyarrow.fs.FileSystem.from_uri`` accepts. ``mode``:
    ``"auto"`` (flock for local folders, lease elsewhere), ``"flock"`` or ``"lease"`` (a local path
    through pyarrow's LocalFileSystem, mostly for tests). ``lease_s`` is the lease lifetime (default
    ``$QTRUST_SWEEP_LEASE_S`` or 60 s).
    """

    def __init__(self, sweep_dir: str, *, lease_s: float | None = None, mode: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        lease_s = default_lease_s() if lease_s is None else lease_s
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, got {lease_s}")
        self.sweep_dir = str(sweep_dir)
        self.lease_s = float(lease_s)
        self.mode = self._choose_mode(mode)
        #: Set when the renewal thread found our lease taken over by someone else.
        self.lost = False
        self._fd: int | None = None
        self._record: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._fs: Any = None
        self._lease_path = ""

    # ----------------------------------------------------------------------------- public API
    def acquire(self) -> SweepLock:
        """Take the lock or raise :class:`SweepLockHeld`; returns ``self``."""
        if self.held:
            return self
        if self.mode == "flock":
            self._flock_acquire()
        else:
            self._lease_acquire()
        return self

    def release(self) -> None:
        """Give the lock up; safe to call more than once or without holding it."""
        if self.mode == "flock":
            self._flock_release()
        else:
            self._lease_release()

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now (None when free); never disturbs the holder or creates files."""
        if self.mode == "flock":
            return self._flock_holder()
        return self._lease_holder()

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._record is not None

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"SweepLock({self.sweep_dir!r}, mode={self.mode!r}, held={self.held})"

    # ----------------------------------------------------------------------------- mechanism choice
    def _choose_mode(self, mode: str) -> str:
        local = local_path(self.sweep_dir)
        if mode == "flock" and (local is None or fcntl is None):
            raise ValueError(f"flock needs a local folder on a POSIX system, got {self.sweep_dir}")
        if mode == "auto":
            return "flock" if local is not None and fcntl is not None else "lease"
        return mode

    # ----------------------------------------------------------------------------- flock
    def _flock_file(self) -> str:
        return os.path.join(local_path(self.sweep_dir) or "", FLOCK_NAME)

    def _flock_acquire(self) -> None:
        path = self._flock_file()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # non-inheritable: exec'd children don't hold it
        if not _try_flock(fd, fcntl.LOCK_EX, retry_s=FLOCK_RETRY_S):
            holder = _read_flock_json(path, wait_s=0.5)
            os.close(fd)
            raise SweepLockHeld(self.sweep_dir, holder)
        record = _holder_record()
        data = json.dumps(record, indent=1).encode() + b"\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd, self._record = fd, record

    def _flock_release(self) -> None:
        fd, self._fd, self._record = self._fd, None, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # a later reader finds no stale holder details
        except OSError:
            pass
        os.close(fd)  # closing the only descriptor drops the flock

    def _flock_holder(self) -> dict[str, Any] | None:
        path = self._flock_file()
        if self._fd is not None:
            return dict(self._record or {})
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            if _try_flock(fd, fcntl.LOCK_SH, retry_s=0.0):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
        finally:
            os.close(fd)
        return _read_flock_json(path, wait_s=0.5) or {}

    # ----------------------------------------------------------------------------- lease
    def _lease_setup(self) -> None:
        if self._fs is not None:
            return
        from pyarrow import fs as pafs

        local = local_path(self.sweep_dir)
        if local is not None:
            self._fs, base = pafs.LocalFileSystem(), local
        else:
            from cluster.storage.uri import open_location

            location = open_location(self.sweep_dir, "sweep")
            self._fs, base = location.fs, location.path
        self._lease_path = f"{base.rstrip('/')}/{LEASE_NAME}"

    def _lease_acquire(self) -> None:
        self._lease_setup()
        current = self._read_lease()
        if current is not None and not _lease_expired(current):
            raise SweepLockHeld(self.sweep_dir, current)
        record = _holder_record({"lease_id": uuid.uuid4().hex})
        self._write_lease(record)
        time.sleep(LEASE_SETTLE_S)
        winner = self._read_lease()
        if winner is None or winner.get("lease_id") != record["lease_id"]:
            raise SweepLockHeld(self.sweep_dir, winner)
        self._record, self.lost = record, False
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="qtrust-sweep-lease", daemon=True)
        self._renewer.start()

    def _lease_release(self) -> None:
        self._stop_renewal()
        record, self._record = self._record, None
        if record is None:
            return
        current = self._read_lease()
        if current is not None and current.get("lease_id") == record["lease_id"]:
            try:
                self._fs.delete_file(self._lease_path)
            except (FileNotFoundError, OSError):
                pass

    def _lease_holder(self) -> dict[str, Any] | None:
        self._lease_setup()
        current = self._read_lease()
        if current is None or _lease_expired(current):
            return None
        return current

    def _stop_renewal(self) -> None:
        """Stop the renewal thread (keeps the lease object; it expires after ``lease_s``)."""
        self._stop.set()
        thread, self._renewer = self._renewer, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(5.0, self.lease_s))

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            record = self._record
            if record is None:
                return
            try:
                current = self._read_lease()
                if current is not None and current.get("lease_id") != record["lease_id"]:
                    self.lost = True  # someone took over an expired lease of ours: stop renewing
                    print(
                        f"qtrust: lost the lease on sweep {self.sweep_dir} to pid {current.get('pid')} "
                        f"on host {current.get('host')}",
                        file=sys.stderr,
                    )
                    return
                self._write_lease(record)
            except OSError as err:  # a transient storage error: try again next round
                print(f"qtrust: could not renew the lease on sweep {self.sweep_dir}: {err}", file=sys.stderr)

    def _write_lease(self, record: dict[str, Any]) -> None:
        """Write ``record`` with a fresh expiry (:func:`cluster.storage.atomic.write_atomic`: a rename on
        local disks, a single PUT on object stores)."""
        record["lease_expires"] = utc_iso(datetime.now(timezone.utc) + timedelta(seconds=self.lease_s), millis=True)
        data = json.dumps(record, indent=1).encode() + b"\n"
        write_atomic(self._fs, self._lease_path, data)

    def _read_lease(self) -> dict[str, Any] | None:
        """The lease object's JSON, or None when absent or unreadable after a few tries."""
        for attempt in range(3):
            raw = read_bytes(self._fs, self._lease_path)
            if raw is None:
                return None
            try:
                value = json.loads(raw.decode())
                return value if isinstance(value, dict) else None
            except (ValueError, UnicodeDecodeError):
                time.sleep(0.1 * (attempt + 1))  # a PUT in flight on a store without atomic writes
        return None


def _try_flock(fd: int, kind: int, *, retry_s: float) -> bool:
    """Try a non-blocking flock of ``kind`` for up to ``retry_s`` seconds; True when taken."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def _read_flock_json(path: str, *, wait_s: float) -> dict[str, Any] | None:
    """The holder JSON in a flock file; retries briefly while a new holder is still writing it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            raw = read_bytes(None, path)
            value = None if raw is None else json.loads(raw.decode())
            if isinstance(value, dict):
                return value
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _lease_expired(record: dict[str, Any]) -> bool:
    expires = parse_iso(record.get("lease_expires"))
    return expires is None or expires <= datetime.now(timezone.utc)
