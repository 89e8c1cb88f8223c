"""Opening an MLflow store safely: bounded HTTP retries, a serialized first use of SQLite, and
telling an outage (try again later) from a bad request (drop it)."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.tracking.uri import redact, sqlite_path

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

#: MLflow error codes that mean "the store cannot answer now" (raised locally or sent by a server).
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
_SQLALCHEMY_OUTAGES = {"OperationalError", "InterfaceError", "DisconnectionError", "TimeoutError"}
_HTTP_CODE = re.compile(r"failed with error code (\d{3})")
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")\]]*")
_SQLITE_LOCK_TIMEOUT_S = 120.0
_APPLIED: dict[str, str] = {}  # MLFLOW_HTTP_* values this module set (the user's are never changed)


def bound_http_requests(request_timeout_s: float) -> dict[str, str]:
    """Make MLflow's HTTP client fail fast in this process: no retries, no backoff, a short timeout.

    MLflow reads these variables on every request (``mlflow/utils/rest_utils.py``), so setting them
    before the first call is enough. A variable the user set is left alone (one set by an earlier
    tracker in this process is updated). Returns what was set.
    """
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",  # an int in MLflow 3.17
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(request_timeout_s))),  # an int in MLflow 3.17
    }
    applied = {
        name: value
        for name, value in wanted.items()
        if name not in os.environ or os.environ[name] == _APPLIED.get(name)
    }
    os.environ.update(applied)
    _APPLIED.update(applied)
    # MLflow prints "View run ... at: <url>" on stdout whenever a run ends on a server; qtrust prints
    # the experiment's URL once itself.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    return applied


class _OtherThreadsOnly(logging.Filter):
    """Drops records logged from the tracking threads (their errors are reported as one-line warnings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not threading.current_thread().name.startswith("qtrust-mlflow")


_FILTER = _OtherThreadsOnly()


def quiet_mlflow_logging() -> None:
    """No INFO chatter from MLflow or alembic, and no tracebacks from the tracking threads."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for name in ("mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store", "mlflow.tracking.client"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_corrupt_database(err: BaseException) -> bool:
    """The SQLite file is not a database or is damaged: retrying at once will not help."""
    return any(type(exc) is sqlite3.DatabaseError for exc in _chain(err))


def is_outage(err: BaseException) -> bool:
    """True when the store cannot answer now (connection, timeout, 5xx, locked or damaged database).

    Anything else (an invalid parameter, a run that does not exist, a bad value, a bug) is a
    problem of the one operation that raised it.
    """
    import requests

    for exc in _chain(err):
        if isinstance(
            exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, TimeoutError)
        ):
            return True
        if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
            return True
        module = type(exc).__module__ or ""
        if module.startswith("sqlalchemy") and type(exc).__name__ in _SQLALCHEMY_OUTAGES:
            return True
    if getattr(err, "error_code", None) in _TRANSIENT_CODES:
        return True
    status = _http_status(err)
    return status is not None and (status >= 500 or status == 429)


def _http_status(err: BaseException) -> int | None:
    """HTTP status of a failed request to a tracking server (None for errors raised locally)."""
    if type(err).__name__ == "RestException":  # the server answered with an MLflow error body
        try:
            return int(err.get_http_status_code())  # type: ignore[attr-defined]
        except Exception:
            return None
    found = _HTTP_CODE.search(str(err))  # a non-JSON answer (a proxy's 502 page, say)
    return int(found.group(1)) if found else None


def describe(err: BaseException) -> str:
    """One short line about an error, with credentials removed."""
    text = " ".join(str(err).split()).split(" [SQL:", 1)[0]  # SQLAlchemy appends the statement
    errno = _ERRNO.search(text)
    if errno:
        text = errno.group(0).strip()
    elif len(text) > 240:
        text = text[:240] + "…"
    return redact(f"{type(err).__name__}: {text}")


@contextmanager
def _first_use_lock(uri: str) -> Iterator[None]:
    """Serialize opening one SQLite store across processes on this machine.

    Two processes that open a brand-new SQLite store at the same moment both run MLflow's schema
    migrations and can leave it broken for good (seen with MLflow 3.17: "table _alembic_tmp_metrics
    already exists" on every later open). Other stores need no lock.
    """
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    digest = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    lock = FileLock(str(Path(tempfile.gettempdir()) / f"qtrust-mlflow-{digest}.lock"), timeout=_SQLITE_LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except (Timeout, OSError) as err:  # a lock file of another user, a read-only /tmp: go on unlocked
        log.debug("MLflow first-use lock not taken: %s", err)
        yield
        return
    try:
        _create_sqlite_store(path)
        yield
    finally:
        lock.release()


def _create_sqlite_store(path: Path) -> None:
    """Create a missing SQLite store whole or not at all.

    MLflow builds a new SQLite store by running its schema migrations one after another in the file
    itself; a process killed meanwhile leaves a half-made store that fails on every later open
    ("table logged_models already exists"). The store is made in a temporary file beside ``path``
    and hard-linked into place (which never replaces a store someone else made meanwhile). Where
    the filesystem refuses hard links, MLflow makes the store in place as before.
    """
    if path.exists() or not path.parent.is_dir():
        return
    from mlflow import MlflowClient

    for stale in path.parent.glob(f".{path.name}.creating-*"):  # left by a process killed while creating
        stale.unlink(missing_ok=True)
    temporary = path.parent / f".{path.name}.creating-{os.getpid()}"
    try:
        client = MlflowClient(tracking_uri=f"sqlite:///{temporary}")
        client.search_experiments(max_results=1)
        engine = getattr(getattr(client._tracking_client, "store", None), "engine", None)
        if engine is not None:
            engine.dispose()
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another program made the store meanwhile: theirs is used
        except OSError as err:
            log.debug("MLflow store not linked into place (%s); MLflow makes it in place", err)
    finally:
        temporary.unlink(missing_ok=True)


def open_client(uri: str, experiment: str, *, attempts: int = 3, pause_s: float = 0.5) -> tuple[MlflowClient, str]:
    """An ``MlflowClient`` for ``uri`` and the id of ``experiment`` (created or restored as needed).

    SQLite stores are opened under a cross-process lock, and a failed open is retried a few times
    after a short pause (another program may be creating the schema); a damaged file is not retried.
    """
    from mlflow import MlflowClient

    tries = attempts if sqlite_path(uri) is not None else 1
    for attempt in range(1, tries + 1):
        try:
            with _first_use_lock(uri):
                client = MlflowClient(tracking_uri=uri)
                return client, open_experiment(client, experiment)
        except Exception as err:
            if attempt == tries or is_corrupt_database(err):
                raise
            time.sleep(pause_s * attempt)
    raise AssertionError("unreachable")


def open_store(uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``uri``, for writing to runs that already exist (no experiment opened).

    Made under the same SQLite first-use lock as :func:`open_client`.
    """
    from mlflow import MlflowClient

    with _first_use_lock(uri):
        return MlflowClient(tracking_uri=uri)


def open_experiment(client: Any, name: str) -> str:
    """Id of the experiment ``name``: found, restored when deleted, or created (a concurrent creation is survived)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name)
        except MlflowException as err:
            found = client.get_experiment_by_name(name)  # someone else created it meanwhile
            if found is None:
                raise err
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id
