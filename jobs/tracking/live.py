"""Live, non-blocking MLflow tracking.

Every public method of :class:`LiveTracker` only queues an operation (no network, no database).
One background thread opens the store, merges the queue into ``log_batch`` calls and sends them.
What is queued passes the one redactor first (:mod:`jobs.tracking.redacted`): no param, tag, table or
text artifact carries a URI's credentials.
When the store stops answering, the thread warns once, keeps the failed operation and everything
after it, and tries one cheap request every ``retry_interval_s``; when that works it sends what it
kept, in order (an outage costs the sweep nothing but the wait for catching up). An operation the
store refuses (not an outage) is dropped with a warning; the rest goes on. Nothing here raises
into the caller: results live in the sweep store and the next run logs them again.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.tracking.connect import (
    bound_http_requests,
    describe,
    is_outage,
    open_client,
    quiet_mlflow_logging,
)
from jobs.tracking.ops import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
    ArtifactData,
    Call,
    DatasetData,
    FileData,
    FinishData,
    Kind,
    Op,
    RunRequest,
    TableData,
    ViewData,
    chunks,
    plan,
)
from jobs.tracking.redacted import redact_text_file, redacted_bytes, redacted_frame, redacted_items
from jobs.tracking.sender import NOTE_TAG, Sender
from jobs.tracking.uri import redact, run_url

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

STATUSES = frozenset({"FINISHED", "FAILED", "KILLED"})
MAX_BUFFERED_OPS = 200_000  # beyond this (a very long outage), new operations are dropped
MAX_STRIKES = 3  # a call that "fails like an outage" this often right after a good probe is dropped
MAX_ERROR_WARNINGS = 5  # warnings about single dropped operations; later ones are only counted
#: What :meth:`LiveTracker.unsent` counts, per kind of operation.
UNSENT_KINDS = {
    Kind.RUN: "runs",
    Kind.METRICS: "metric_points",
    Kind.PARAMS: "params",
    Kind.TAGS: "tags",
    Kind.TABLE: "artifacts",
    Kind.ARTIFACT: "artifacts",
    Kind.FILE: "artifacts",
    Kind.DATASET: "artifacts",
    Kind.FINISH: "run_ends",
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _as_float(value: Any) -> float | None:
    """``value`` as a float; None for None, NaN and what is not a number."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number


class _Warnings:
    """The warning policy: one line per outage, a few lines about dropped operations, then silence."""

    def __init__(self, warn: Callable[[str], None], uri: str) -> None:
        self._warn = warn
        self._uri = redact(uri)
        self._errors = 0
        self._once: set[str] = set()

    def _say(self, message: str) -> None:
        try:
            self._warn(" ".join(message.split()))
        except Exception:
            log.warning(message)

    def outage(self, err: BaseException, retry_s: float) -> None:
        where = "tracking server" if self._uri.startswith(("http://", "https://")) else "tracking store"
        self._say(
            f"MLflow: {where} {self._uri} is not answering ({describe(err)}); the evaluation goes on, "
            f"tracking is kept in memory and sent when it answers again (checked every {retry_s:g} s)"
        )

    def dropped(self, what: str, err: BaseException) -> None:
        self._errors += 1
        if self._errors <= MAX_ERROR_WARNINGS:
            self._say(f"MLflow: could not {what} at {self._uri}: {describe(err)}")
        if self._errors == MAX_ERROR_WARNINGS:
            self._say("MLflow: further tracking errors are counted but not shown")

    def once(self, topic: str, message: str) -> None:
        if topic not in self._once:
            self._once.add(topic)
            self._say(message)


class LiveTracker:
    """Non-blocking MLflow tracking of one sweep into one experiment (see the module docstring).

    ``known_runs`` maps run keys to run ids of a previous (maybe killed) driver: ``ensure_run``
    reopens those runs when they still exist in this store and experiment.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        *,
        warn: Callable[[str], None] | None = None,
        known_runs: dict[str, str] | None = None,
        flush_interval_s: float = 1.0,
        retry_interval_s: float = 5.0,
        request_timeout_s: float = 5.0,
    ) -> None:
        self.uri = uri
        self.experiment_name = experiment
        self.flush_interval_s = max(0.01, flush_interval_s)
        self.retry_interval_s = max(0.05, retry_interval_s)
        self._known_runs = dict(known_runs or {})
        self._notes = _Warnings(warn or log.warning, uri)
        bound_http_requests(request_timeout_s)
        quiet_mlflow_logging()

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._incoming: list[Op] = []  # queued by callers, taken by the thread
        self._enqueued = self._completed = self._sent = self._dropped = self._failures = 0
        self._unsent: dict[str, int] = {}  # what was dropped, by UNSENT_KINDS
        self._run_ids: dict[str, str] = {}
        self._experiment_id: str | None = None
        self._flush_asked = self._closing = self._stopped = self._finished = False
        self._down = False  # in an outage
        self._thread: threading.Thread | None = None
        self._spool: Path | None = None  # private copies of artifacts
        self._close_deadline = float("inf")

        # Owned by the thread.
        self._buffer: list[Op] = []
        self._sender: Sender | None = None
        self._next_probe = 0.0
        self._final_probe_done = False
        self._just_recovered = False
        self._last_error: BaseException | None = None

    # -- public API: queueing -------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (it opens or creates the experiment); returns at once."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._main, name=f"qtrust-mlflow-{id(self):x}", daemon=True)
        self._thread.start()

    def ensure_run(
        self,
        run_key: str,
        name: str,
        tags: dict[str, str],
        *,
        parent_key: str | None = None,
        description: str | None = None,
    ) -> None:
        """Create the run (RUNNING), or reopen ``known_runs[run_key]`` and set it RUNNING again."""
        all_tags = {k: v[:MAX_TAG_VAL_LENGTH] for k, v in redacted_items(tags).items()}
        if description is not None:
            all_tags[NOTE_TAG] = redact(str(description))[:MAX_TAG_VAL_LENGTH]
        self._put(Op(Kind.RUN, run_key, RunRequest(redact(str(name)), all_tags, parent_key, uuid.uuid4().hex)))

    def log_params(self, run_key: str, params: dict[str, Any]) -> None:
        """Params as strings cut to 6000 characters; one already logged is not sent again (a changed
        value is refused by MLflow: it is skipped with one warning)."""
        items = [(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in redacted_items(params).items()]
        for part in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self._put(Op(Kind.PARAMS, run_key, part))

    def log_metrics(self, run_key: str, metrics: dict[str, float], step: int | None = None) -> None:
        """Metrics stamped now (not when sent); None, NaN and non-numbers are left out."""
        stamp, at = _now_ms(), int(step or 0)
        points = [(str(k), number, stamp, at) for k, v in metrics.items() if (number := _as_float(v)) is not None]
        for part in chunks(points, MAX_METRICS_PER_BATCH):
            self._put(Op(Kind.METRICS, run_key, part))

    def set_tags(self, run_key: str, tags: dict[str, str]) -> None:
        """Set run tags (a later value of a key wins)."""
        items = [(k, v[:MAX_TAG_VAL_LENGTH]) for k, v in redacted_items(tags).items()]
        for part in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self._put(Op(Kind.TAGS, run_key, dict(part)))

    def log_table(self, run_key: str, frame: pd.DataFrame, artifact_file: str) -> None:
        """Log ``frame`` as a table the MLflow UI renders (``.json``, or ``.parquet``).

        Written like ``mlflow.log_table`` (JSON ``{"columns", "data"}``) but replacing an earlier
        copy instead of appending to it, so re-logging is idempotent; the file is listed in the
        run's ``mlflow.loggedArtifacts`` tag, which is what makes the UI show it as a table.
        """
        try:
            content = _serialize_table(redacted_frame(frame), artifact_file)
        except Exception as err:
            self._reject(f"log table {artifact_file}", err)
            return
        self._put(Op(Kind.TABLE, run_key, TableData(artifact_file, content)))

    def log_artifact(self, run_key: str, path: Path, artifact_path: str | None = None) -> None:
        """Log a file as it is now (a private copy is made at once; the file may change later)."""
        try:
            copy = self._copy_to_spool(Path(path))
        except Exception as err:
            self._reject(f"log artifact {path}", err)
            return
        self._put(Op(Kind.ARTIFACT, run_key, ArtifactData(str(copy), artifact_path)))

    def log_artifact_bytes(self, run_key: str, content: bytes, artifact_file: str) -> None:
        """Log ``content`` as the artifact ``artifact_file`` (e.g. ``plots/x.png``), replacing an earlier
        copy. Render figures to bytes before calling (:func:`jobs.results.plots.figure_png`): the tracking
        thread only uploads."""
        if not isinstance(content, (bytes, bytearray)) or not str(artifact_file).strip("/"):
            self._reject(f"log artifact {artifact_file}", ValueError("an artifact needs bytes and a file name"))
            return
        self._put(
            Op(Kind.FILE, run_key, FileData(str(artifact_file), redacted_bytes(bytes(content), str(artifact_file))))
        )

    def report_error(self, what: str, err: BaseException) -> None:
        """Count and warn (with the same limits as dropped operations) about something the caller
        could not prepare for logging, e.g. a figure that failed to render."""
        self._reject(what, err)

    def share_view(self, key: str, state: dict[str, Any], expand_run_key: str | None = None) -> None:
        """Store a view of the experiment's runs table under ``key`` (columns, grouping, expanded
        runs); the UI opens it at :meth:`view_url`. ``expand_run_key``: a run whose children show."""
        self._put(Op(Kind.VIEW, None, ViewData(str(key), dict(state), expand_run_key)))

    def view_url(self, key: str) -> str | None:
        """UI address of the runs table in the view stored by :meth:`share_view` (None before the experiment is known)."""
        from jobs.tracking.uri import ui_base_url

        experiment_id = self.experiment_id
        return (
            f"{ui_base_url(self.uri)}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}"
            if experiment_id
            else None
        )

    def log_dataset(self, run_key: str, frame: pd.DataFrame, name: str, source: str, digest: str) -> None:
        """Record the items a run was evaluated on as an MLflow dataset input (context "eval")."""
        self._put(
            Op(
                Kind.DATASET,
                run_key,
                DatasetData(redacted_frame(frame).copy(), str(name), redact(str(source)), str(digest)),
            )
        )

    def finish(self, run_key: str, status: str = "FINISHED") -> None:
        """End the run: FINISHED, FAILED or KILLED."""
        status = str(status).upper()
        if status not in STATUSES:
            self._reject(f"finish run {run_key}", ValueError(f"status {status!r} is not one of {sorted(STATUSES)}"))
            return
        self._put(Op(Kind.FINISH, run_key, FinishData(status, _now_ms())))

    def close_stale_runs(self, sweep_tag_value: str, store: str | None = None) -> None:
        """Set KILLED the runs tagged ``qtrust.sweep=<value>`` still RUNNING that this tracker has not
        opened (so far in its queue): a killed driver left them. With ``store``, a run tagged with
        another ``qtrust.store`` is left alone: a sweep of the same name under another storage root."""
        self._put(Op(Kind.STALE, None, (str(sweep_tag_value), store)))

    # -- public API: state ----------------------------------------------------------------------

    def run_ids(self) -> dict[str, str]:
        """Run key -> run id of the runs opened so far."""
        with self._lock:
            return dict(self._run_ids)

    def run_url(self, run_key: str) -> str | None:
        """UI address of the run (None until it and the experiment are known)."""
        with self._lock:
            run_id, experiment_id = self._run_ids.get(run_key), self._experiment_id
        return run_url(self.uri, experiment_id, run_id) if run_id and experiment_id else None

    @property
    def experiment_id(self) -> str | None:
        """Id of the experiment; None until the thread has opened it."""
        with self._lock:
            return self._experiment_id

    @property
    def failures(self) -> int:
        """Failed calls so far (the first failure of each outage, and each dropped operation)."""
        with self._lock:
            return self._failures

    @property
    def pending(self) -> int:
        """Operations queued and not yet sent (or dropped)."""
        with self._lock:
            return self._enqueued - self._completed

    def unsent(self) -> dict[str, int]:
        """What was dropped so far, never reaching the store: ``runs`` (not opened), ``metric_points``,
        ``params``, ``tags``, ``artifacts`` (tables, files, datasets) and ``run_ends`` (runs left
        without their final status); kinds with nothing dropped are left out. After :meth:`close`
        it includes what was still waiting for a store that did not answer."""
        with self._lock:
            return dict(self._unsent)

    def _tally(self, ops: list[Op]) -> None:
        """Count ``ops`` as dropped in :meth:`unsent` (the caller holds the lock)."""
        for op in ops:
            kind = UNSENT_KINDS.get(op.kind)
            if kind is not None:
                weight = len(op.data) if op.kind in (Kind.METRICS, Kind.PARAMS, Kind.TAGS) else 1
                self._unsent[kind] = self._unsent.get(kind, 0) + weight

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued so far is sent (True); False on timeout or during an outage.
        Operations dropped as errors count as handled. Never raises."""
        try:
            deadline = time.monotonic() + max(0.0, timeout_s)
            with self._wake:
                target = self._enqueued
                if self._thread is None or self._finished:
                    return self._completed >= target
                self._flush_asked = True
                self._wake.notify_all()
                while self._completed < target and not self._down and not self._finished:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                return self._completed >= target
        except Exception:
            return False

    def close(self, timeout_s: float = 10.0) -> dict[str, int]:
        """Send what is queued (for at most ``timeout_s``; at once gives up in an outage), stop the
        thread and return ``{"sent", "dropped", "failures"}``. Never raises."""
        try:
            deadline = time.monotonic() + max(0.0, timeout_s)
            with self._wake:
                self._closing = True
                self._close_deadline = deadline
                self._wake.notify_all()
                thread = self._thread
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
            with self._wake:
                self._stopped = True  # a thread still in a request ends after it, counting nothing more
                self._tally([op for op in [*self._buffer, *self._incoming] if not op.done])
                left = self._enqueued - self._completed
                self._completed += left
                self._dropped += left
                summary = {"sent": self._sent, "dropped": self._dropped, "failures": self._failures}
                self._wake.notify_all()
            if self._spool is not None:
                shutil.rmtree(self._spool, ignore_errors=True)
            return summary
        except Exception:
            return {"sent": self._sent, "dropped": self._enqueued - self._sent, "failures": self._failures}

    # -- queueing helpers -----------------------------------------------------------------------

    def _put(self, op: Op) -> None:
        with self._lock:
            if self._stopped:
                self._dropped += 1
                self._tally([op])
                return
            if self._enqueued - self._completed >= MAX_BUFFERED_OPS:
                self._dropped += 1
                self._tally([op])
                overflow = True
            else:
                self._incoming.append(op)
                self._enqueued += 1
                overflow = False
        if overflow:
            self._notes.once(
                "overflow",
                f"MLflow: more than {MAX_BUFFERED_OPS} tracking operations are waiting; new ones are dropped",
            )

    def _reject(self, what: str, err: BaseException) -> None:
        """An operation refused before it was queued (bad input)."""
        with self._lock:
            self._failures += 1
            self._dropped += 1
        self._notes.dropped(what, err)

    def _copy_to_spool(self, path: Path) -> Path:
        with self._lock:
            if self._spool is None:
                self._spool = Path(tempfile.mkdtemp(prefix="qtrust-mlflow-spool-"))
            spool = self._spool
        folder = Path(tempfile.mkdtemp(dir=spool))
        target = folder / path.name
        shutil.copyfile(path, target)
        redact_text_file(target)  # sweep.yaml, report.html...: no secret leaves in an artifact
        return target

    # -- the thread -----------------------------------------------------------------------------

    def _main(self) -> None:
        """Thread body: take, send, wait; until closed. Survives anything it raises."""
        try:
            while True:
                self._take_incoming()
                if self._must_stop():
                    break
                if self._reachable():
                    self._process()
                self._publish()
                if self._closing and (self._down or not self._has_work()):
                    break
                if not self._closing:
                    self._wait()
        except BaseException as err:
            with self._lock:
                self._failures += 1
            self._notes.once("thread", f"MLflow: tracking stopped after an unexpected error: {describe(err)}")
        finally:
            with self._wake:
                self._finished = True
                self._wake.notify_all()

    def _take_incoming(self) -> None:
        with self._lock:
            taken, self._incoming = self._incoming, []
            self._flush_asked = False
        self._buffer.extend(taken)

    def _has_work(self) -> bool:
        with self._lock:
            return bool(self._buffer or self._incoming)

    def _must_stop(self) -> bool:
        with self._lock:
            return self._stopped or (self._closing and time.monotonic() >= self._close_deadline)

    def _wait(self) -> None:
        """Sleep until the next send (or probe in an outage), a flush or close."""
        delay = max(0.0, self._next_probe - time.monotonic()) if self._down else self.flush_interval_s
        with self._wake:
            if not (self._flush_asked or self._closing or self._stopped):
                self._wake.wait(delay)

    def _publish(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _reachable(self) -> bool:
        """Connected and not in an outage; in an outage, try one cheap request when it is due."""
        if self._sender is not None and not self._down:
            return True
        if self._down:
            final = self._closing and not self._final_probe_done
            if not final and time.monotonic() < self._next_probe:
                return False
            self._final_probe_done = self._final_probe_done or self._closing
        try:
            if self._sender is None:
                self._connect()
            else:
                self._sender.probe()
        except Exception as err:
            self._enter_outage(err)
            return False
        self._leave_outage()
        return True

    def _connect(self) -> None:
        client, experiment_id = open_client(self.uri, self.experiment_name)
        self._sender = Sender(client, experiment_id, self._known_runs, self._run_opened, self._param_changed)
        with self._lock:
            self._experiment_id = experiment_id

    def _enter_outage(self, err: BaseException) -> None:
        """First failure of an outage: count and warn once; later ones only move the next probe."""
        self._next_probe = time.monotonic() + self.retry_interval_s
        self._last_error = err
        self._just_recovered = False
        with self._wake:
            first = not self._down
            self._down = True
            if first:
                self._failures += 1
            self._wake.notify_all()
        if first:
            self._notes.outage(err, self.retry_interval_s)

    def _leave_outage(self) -> None:
        with self._lock:
            was_down, self._down = self._down, False
        if was_down:
            self._just_recovered = True
            log.info("MLflow: %s answers again; sending %d kept operations", redact(self.uri), len(self._buffer))

    def _process(self) -> None:
        """Send the buffer as planned calls, stopping at the first outage."""
        for call in plan(self._buffer):
            if self._must_stop() or not self._execute(call):
                break
        self._buffer = [op for op in self._buffer if not op.done]

    def _execute(self, call: Call) -> bool:
        """Send one call; False when the store stopped answering (the call stays in the buffer)."""
        assert self._sender is not None
        try:
            self._sender.execute(call)
        except Exception as err:
            if is_outage(err) and not self._struck_out(call):
                self._enter_outage(err)
                return False
            if len(call.ops) > 1:
                with self._lock:
                    self._failures += 1
                return all(self._execute(single) for single in call.split())
            self._complete(call.ops, sent=False)
            self._notes.dropped(_what(call), err)
            with self._lock:
                self._failures += 1
            return True
        self._just_recovered = False
        self._complete(call.ops, sent=True)
        return True

    def _struck_out(self, call: Call) -> bool:
        """An "outage" right after a good probe, for the MAX_STRIKES-th time: the request is the problem."""
        if not self._just_recovered:
            return False
        for op in call.ops:
            op.strikes += 1
        return any(op.strikes >= MAX_STRIKES for op in call.ops)

    def _complete(self, ops: list[Op], *, sent: bool) -> None:
        with self._lock:
            if self._stopped:
                return
            for op in ops:
                op.done = True
            self._completed += len(ops)
            if sent:
                self._sent += len(ops)
            else:
                self._dropped += len(ops)
                self._tally(ops)

    def _run_opened(self, run_key: str, run_id: str) -> None:
        with self._lock:
            self._run_ids[run_key] = run_id

    def _param_changed(self, run_key: str, key: str, kept: str, refused: str) -> None:
        self._notes.once(
            "param-changed",
            f"MLflow: param {key!r} of run {run_key!r} was logged as {kept[:60]!r} and cannot change to "
            f"{refused[:60]!r}; the first value is kept (later changes are not reported)",
        )


def _what(call: Call) -> str:
    """Words for a warning about a dropped call."""
    target = f" of {call.run_key}" if call.run_key else ""
    data = call.ops[0].data if call.ops else None
    if isinstance(data, (TableData, FileData)):
        return f"log {'table' if isinstance(data, TableData) else 'artifact'} {data.artifact_file}{target}"
    return {
        Kind.BATCH: f"log metrics/params/tags{target}",
        Kind.RUN: f"open run {call.run_key}",
        Kind.ARTIFACT: f"log an artifact{target}",
        Kind.DATASET: f"log a dataset{target}",
        Kind.FINISH: f"end run {call.run_key}",
        Kind.STALE: "close runs a killed driver left RUNNING",
        Kind.VIEW: "store the shared runs-table view",
    }.get(call.kind, call.kind.value)


def _serialize_table(frame: pd.DataFrame, artifact_file: str) -> bytes:
    """The table file's bytes, as ``mlflow.log_table`` writes it."""
    if artifact_file.endswith(".json"):
        return frame.to_json(orient="split", index=False, date_format="iso").encode()
    if artifact_file.endswith(".parquet"):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    raise ValueError(f"a table file must end with .json or .parquet, not {artifact_file!r}")


__all__ = ["LiveTracker"]
