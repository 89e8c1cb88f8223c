"""LiveTracker against real MLflow stores: a local SQLite file, a closed port, a real ``mlflow server``
that is killed and restarted, a damaged database, and two processes opening a new store at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from jobs.tracking import LiveTracker
from jobs.tracking.connect import is_outage
from jobs.tracking.ops import Call, Kind, Op, plan
from tests.support.mlflow_server import _free_port, _kill, _mlflow_server

REPO = Path(__file__).resolve().parents[2]


# -- helpers ------------------------------------------------------------------------------------


def _timed(calls: list) -> float:
    """Seconds spent running ``calls`` (zero-argument callables)."""
    started = time.perf_counter()
    for call in calls:
        call()
    return time.perf_counter() - started


def _flush_until(tracker: LiveTracker, timeout_s: float) -> bool:
    """Flush, retrying while the tracker waits for a server to come back."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if tracker.flush(min(5.0, max(0.1, deadline - time.monotonic()))):
            return True
        time.sleep(0.2)
    return False


# -- planning and error classes (no store) ------------------------------------------------------


def test_plan_merges_per_run_within_mlflow_limits_and_keeps_order() -> None:
    ops = [
        Op(Kind.RUN, "a", None),
        Op(Kind.METRICS, "a", [("m", 1.0, 1, s) for s in range(600)]),
        Op(Kind.PARAMS, "a", [("p", "1")]),
        Op(Kind.METRICS, "b", [("m", 1.0, 1, 0)]),
        Op(Kind.METRICS, "a", [("m", 2.0, 1, s) for s in range(600)]),  # 1200 metrics: a second batch
        Op(Kind.FINISH, "a", None),
        Op(Kind.TAGS, "a", {"t": "late"}),
    ]
    calls = plan(ops)
    assert [(c.kind, c.run_key, len(c.ops)) for c in calls] == [
        (Kind.RUN, "a", 1),
        (Kind.BATCH, "a", 2),
        (Kind.BATCH, "b", 1),
        (Kind.BATCH, "a", 1),
        (Kind.FINISH, "a", 1),
        (Kind.BATCH, "a", 1),
    ]
    assert all(len(c.metrics) <= 1000 for c in calls)
    assert Call.single(ops[1]).kind is Kind.BATCH


def test_outages_are_told_from_bad_requests() -> None:
    import sqlite3

    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    try:
        try:
            raise requests.exceptions.ConnectionError("refused")
        except requests.exceptions.ConnectionError as inner:
            raise MlflowException("API request to http://x failed with exception refused") from inner
    except MlflowException as wrapped:
        assert is_outage(wrapped)
    assert is_outage(MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE))
    assert is_outage(sqlite3.OperationalError("database is locked"))
    assert not is_outage(MlflowException.invalid_parameter_value("Changing param values is not allowed"))
    assert not is_outage(MlflowException("a bug"))  # INTERNAL_ERROR raised locally


# -- a local SQLite store -----------------------------------------------------------------------


def test_local_store_runs_values_tables_and_a_resumed_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    warnings: list[str] = []
    frame = pd.DataFrame({"question": ["q1", "q2", "q3"], "score": [0.5, 1.0, 0.0]})
    artifact = tmp_path / "report.txt"
    artifact.write_text("first")

    first = LiveTracker(uri, "live", warn=warnings.append, flush_interval_s=0.05)
    first.start()
    first.ensure_run("sweep", "demo", {"qtrust.sweep": "demo"}, description="the demo sweep")
    first.ensure_run("v/b", "v · b", {"qtrust.sweep": "demo"}, parent_key="sweep")
    first.ensure_run("orphan", "orphan", {"qtrust.sweep": "demo"}, parent_key="sweep")  # never finished
    first.log_params("v/b", {"bits": 4, "long": "x" * 7000})
    for step in range(3):
        first.log_metrics("v/b", {"acc": step / 10, "nan": float("nan"), "none": None}, step=step)  # type: ignore[dict-item]
    first.log_table("v/b", frame, "tables/items.json")
    first.log_table("v/b", frame, "tables/items.json")
    first.log_artifact("v/b", artifact)
    artifact.write_text("changed after logging")
    first.log_dataset("v/b", frame, "items", "file:///data/items", "abc123")
    first.set_tags("v/b", {"qtrust.state": "done"})
    first.finish("v/b")
    assert first.flush(60)
    assert first.pending == 0 and first.experiment_id is not None
    ids = first.run_ids()
    assert set(ids) == {"sweep", "v/b", "orphan"}
    assert first.run_url("v/b") == f"http://127.0.0.1:5000/#/experiments/{first.experiment_id}/runs/{ids['v/b']}"
    summary = first.close()
    assert summary["dropped"] == 0 and summary["failures"] == 0 and summary["sent"] > 0

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(ids["v/b"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == ids["sweep"]
    assert run.data.tags["qtrust.state"] == "done"
    assert run.data.params["bits"] == "4" and len(run.data.params["long"]) == 6000
    assert [(m.step, m.value) for m in client.get_metric_history(ids["v/b"], "acc")] == [(0, 0.0), (1, 0.1), (2, 0.2)]
    assert "nan" not in run.data.metrics and "none" not in run.data.metrics
    assert json.loads(run.data.tags["mlflow.loggedArtifacts"]) == [{"path": "tables/items.json", "type": "table"}]
    table = client.load_table(first.experiment_id, "tables/items.json", run_ids=[ids["v/b"]])
    assert len(table) == len(frame)  # logged twice, not duplicated
    assert Path(client.download_artifacts(ids["v/b"], "report.txt", str(tmp_path / "dl"))).read_text() == "first"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["items"]
    sweep_run = client.get_run(ids["sweep"])
    assert sweep_run.data.tags["mlflow.note.content"] == "the demo sweep"
    assert client.get_run(ids["orphan"]).info.status == "RUNNING"

    # A driver killed before it wrote its manifest left this one; another sweep's run is not touched.
    here, there = {"qtrust.sweep": "demo", "qtrust.store": "/root/demo"}, {"qtrust.store": "/other/root/demo"}
    lost = client.create_run(first.experiment_id, run_name="lost", tags=here).info.run_id
    other = client.create_run(first.experiment_id, run_name="other", tags={"qtrust.sweep": "another"}).info.run_id
    # a sweep of the same name under another storage root, running now: not this sweep's to close
    elsewhere = client.create_run(first.experiment_id, run_name="elsewhere", tags={**here, **there}).info.run_id

    second = LiveTracker(uri, "live", warn=warnings.append, known_runs=ids, flush_interval_s=0.05)
    second.start()
    second.ensure_run("sweep", "demo", {"qtrust.sweep": "demo"})
    second.ensure_run("v/b", "v · b", {"qtrust.sweep": "demo"}, parent_key="sweep")
    second.close_stale_runs("demo", "/root/demo")  # runs without a store tag (orphan) are closed too
    second.log_params("v/b", {"bits": 4})  # same value: skipped silently
    second.log_params("v/b", {"bits": 8})  # a change MLflow refuses: skipped with one warning
    second.log_metrics("v/b", {"acc": 0.3}, step=3)
    second.log_table("v/b", frame, "tables/items.json")
    assert second.flush(60)
    assert client.get_run(ids["v/b"]).info.status == "RUNNING"  # reopened
    second.finish("v/b")
    second.finish("sweep")
    assert second.close()["dropped"] == 0

    assert second.run_ids() == {"sweep": ids["sweep"], "v/b": ids["v/b"]}
    runs = client.search_runs([first.experiment_id], run_view_type=ViewType.ALL)
    assert len(runs) == 6  # sweep, v/b, orphan, lost, other, elsewhere: nothing new
    assert client.get_run(ids["orphan"]).info.status == "KILLED"
    assert client.get_run(lost).info.status == "KILLED"
    assert client.get_run(other).info.status == "RUNNING"
    assert client.get_run(elsewhere).info.status == "RUNNING"
    assert client.get_run(ids["v/b"]).info.status == "FINISHED"
    assert client.get_run(ids["v/b"]).data.params["bits"] == "4"
    assert [m.step for m in client.get_metric_history(ids["v/b"], "acc")] == [0, 1, 2, 3]
    assert len(client.load_table(first.experiment_id, "tables/items.json", run_ids=[ids["v/b"]])) == len(frame)
    assert len(warnings) == 1 and "'bits'" in warnings[0], warnings


# -- outages ------------------------------------------------------------------------------------


def test_public_methods_never_wait_for_a_dead_server(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    warnings: list[str] = []
    tracker = LiveTracker(uri, "live", warn=warnings.append, flush_interval_s=0.05, retry_interval_s=0.2)
    frame = pd.DataFrame({"a": [1, 2]})
    artifact = tmp_path / "a.txt"
    artifact.write_text("x")
    tracker.start()
    calls = [lambda: tracker.ensure_run("sweep", "s", {"qtrust.sweep": "s"})]
    for i in range(990):
        calls.append(lambda i=i: tracker.log_metrics("sweep", {"m": float(i)}, step=i))
    calls += [
        lambda: tracker.log_params("sweep", {"p": 1}),
        lambda: tracker.set_tags("sweep", {"t": "v"}),
        lambda: tracker.log_table("sweep", frame, "t.json"),
        lambda: tracker.log_artifact("sweep", artifact),
        lambda: tracker.log_dataset("sweep", frame, "d", "src", "digest"),
        lambda: tracker.close_stale_runs("s"),
        lambda: tracker.run_ids(),
        lambda: tracker.run_url("sweep"),
        lambda: tracker.finish("sweep"),
    ]
    assert len(calls) == 1000
    assert _timed(calls) < 0.05
    assert tracker.flush(5) is False
    started = time.monotonic()
    summary = tracker.close(timeout_s=3)
    assert time.monotonic() - started < 5
    assert summary["dropped"] > 0 and summary["sent"] == 0 and summary["failures"] >= 1
    assert tracker.pending == 0 and tracker.experiment_id is None
    # What never reached the store, told by kind (the closing line of a run says it).
    assert tracker.unsent() == {
        "runs": 1,
        "metric_points": 990,
        "params": 1,
        "tags": 1,
        "artifacts": 3,
        "run_ends": 1,
    }
    assert len(warnings) == 1 and uri in warnings[0] and "Connection refused" in warnings[0], warnings


def test_close_returns_in_time_while_a_request_hangs() -> None:
    with socket.socket() as hung:  # accepts connections (kernel backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        uri = f"http://127.0.0.1:{hung.getsockname()[1]}"
        tracker = LiveTracker(uri, "live", warn=lambda m: None, flush_interval_s=0.05, request_timeout_s=1)
        tracker.start()
        calls = [lambda: tracker.ensure_run("sweep", "s", {})]
        calls += [lambda i=i: tracker.log_metrics("sweep", {"m": float(i)}, step=i) for i in range(200)]
        assert _timed(calls) < 0.05
        time.sleep(0.1)  # the thread is now waiting for an answer that never comes
        started = time.monotonic()
        summary = tracker.close(timeout_s=0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert summary["sent"] == 0 and summary["dropped"] == 201
    assert tracker.pending == 0


@pytest.mark.slow
def test_killed_server_is_caught_up_after_restart(tmp_path: Path) -> None:
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    warnings: list[str] = []
    tracker = LiveTracker(
        uri, "live", warn=warnings.append, flush_interval_s=0.1, retry_interval_s=0.5, request_timeout_s=2
    )
    steps, kill_at, restart_at = 60, 20, 40
    slowest = 0.0
    with _mlflow_server(tmp_path, port) as server:
        tracker.start()
        tracker.ensure_run("sweep", "sweep", {"qtrust.sweep": "s"})
        tracker.ensure_run("child", "child", {"qtrust.sweep": "s"}, parent_key="sweep")
        tracker.log_params("child", {"bits": 4})
        for step in range(kill_at):
            slowest = max(
                slowest,
                _timed([lambda step=step: tracker.log_metrics("child", {"acc": step / 100, "loss": 1.0}, step=step)]),
            )
            time.sleep(0.02)
        assert tracker.flush(30)
        _kill(server)
    for step in range(kill_at, restart_at):  # the server is dead: calls still return at once
        slowest = max(
            slowest,
            _timed([lambda step=step: tracker.log_metrics("child", {"acc": step / 100, "loss": 1.0}, step=step)]),
        )
        if step == kill_at + 5:
            slowest = max(
                slowest, _timed([lambda: tracker.ensure_run("late", "late", {"qtrust.sweep": "s"}, parent_key="sweep")])
            )
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while tracker.failures == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tracker.failures >= 1 and tracker.pending > 0
    assert tracker.flush(1) is False
    tracker.log_metrics("late", {"acc": 1.0}, step=0)
    tracker.finish("late")
    with _mlflow_server(tmp_path, port):  # same port, same backend
        for step in range(restart_at, steps):
            slowest = max(
                slowest,
                _timed([lambda step=step: tracker.log_metrics("child", {"acc": step / 100, "loss": 1.0}, step=step)]),
            )
        tracker.finish("child")
        tracker.finish("sweep")
        assert _flush_until(tracker, 60)
        summary = tracker.close(timeout_s=10)
        client = MlflowClient(tracking_uri=uri)
        ids = tracker.run_ids()
        history = client.get_metric_history(ids["child"], "acc")
        runs = client.search_runs([tracker.experiment_id], run_view_type=ViewType.ALL)
        statuses = {key: client.get_run(run_id).info.status for key, run_id in ids.items()}
        late = client.get_run(ids["late"])
    assert slowest < 0.05  # no call waited for the network
    assert sorted(m.step for m in history) == list(range(steps))  # each step once: none lost, none doubled
    assert {m.step: m.value for m in history} == {s: s / 100 for s in range(steps)}
    assert len(runs) == 3
    assert statuses == {"sweep": "FINISHED", "child": "FINISHED", "late": "FINISHED"}
    assert late.data.tags["mlflow.parentRunId"] == ids["sweep"] and late.data.metrics == {"acc": 1.0}
    assert summary["dropped"] == 0 and summary["failures"] >= 1
    assert tracker.unsent() == {}  # caught up: nothing to tell at the end of a run
    assert len(warnings) == 1 and uri in warnings[0], warnings


def test_damaged_sqlite_file_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    database = tmp_path / "mlflow.db"
    garbage = os.urandom(8192)
    database.write_bytes(garbage)
    warnings: list[str] = []
    tracker = LiveTracker(f"sqlite:///{database}", "live", warn=warnings.append, flush_interval_s=0.05)
    tracker.start()
    tracker.ensure_run("sweep", "s", {"qtrust.sweep": "s"})
    tracker.log_metrics("sweep", {"m": 1.0})
    tracker.finish("sweep")
    assert tracker.flush(10) is False
    started = time.monotonic()
    summary = tracker.close(timeout_s=3)
    assert time.monotonic() - started < 4
    assert summary == {"sent": 0, "dropped": 3, "failures": 1}
    assert len(warnings) == 1 and "mlflow.db" in warnings[0] and "not a database" in warnings[0], warnings
    assert database.read_bytes() == garbage


_WORKER = """
import json, sys, time
from pathlib import Path
from jobs.tracking import LiveTracker
import mlflow  # imported before the start line, so that both open the store at the same moment

uri, name, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
(folder / f"ready-{name}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
warnings = []
tracker = LiveTracker(uri, "shared", warn=warnings.append, flush_interval_s=0.05)
tracker.start()
tracker.ensure_run(name, name, {"qtrust.sweep": name})
for step in range(5):
    tracker.log_metrics(name, {"m": float(step)}, step=step)
tracker.finish(name)
summary = tracker.close(timeout_s=120)
print(json.dumps({"summary": summary, "warnings": warnings, "runs": tracker.run_ids()}))
"""


def test_two_processes_open_a_new_sqlite_store_at_once(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), uri, name, str(tmp_path)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("one", "two")
    ]
    deadline = time.monotonic() + 90
    while not all((tmp_path / f"ready-{n}").exists() for n in ("one", "two")):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers)
        time.sleep(0.01)
    (tmp_path / "go").touch()
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=150)
        assert worker.returncode == 0, err
        assert "Traceback" not in err, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    for report in reports:
        assert report["summary"]["dropped"] == 0 and report["summary"]["failures"] == 0, report
        assert report["warnings"] == []
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("shared")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["one", "two"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "m")] == [0, 1, 2, 3, 4]


_OPENER = """
import sys
from jobs.tracking.connect import open_client
open_client(sys.argv[1], "shared")
"""


def test_a_process_killed_while_creating_a_sqlite_store_leaves_none_half_made(tmp_path: Path) -> None:
    script = tmp_path / "opener.py"
    script.write_text(_OPENER)
    store = tmp_path / "mlflow.db"
    uri = f"sqlite:///{store}"
    opener = subprocess.Popen(
        [sys.executable, str(script), uri], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO))
    )
    deadline = time.monotonic() + 120
    try:
        while not list(tmp_path.glob(".mlflow.db.creating-*")):  # MLflow is running its migrations
            assert opener.poll() is None, "the opener ended before creating the store"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        opener.kill()
    finally:
        opener.kill()
        opener.wait(timeout=30)
    assert not store.exists()  # nothing half-made where the store belongs

    from jobs.tracking.connect import open_client

    client, experiment_id = open_client(uri, "shared")  # made whole now; the dead process's leftover removed
    client.create_run(experiment_id, run_name="after")
    assert [r.info.run_name for r in client.search_runs([experiment_id])] == ["after"]
    assert list(tmp_path.glob(".mlflow.db.creating-*")) == []


def test_bytes_artifacts_replace_their_copy_and_bad_ones_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    warnings: list[str] = []
    tracker = LiveTracker(uri, "bytes", warn=warnings.append, flush_interval_s=0.05)
    tracker.start()
    tracker.ensure_run("p", "parent", {})
    tracker.log_artifact_bytes("p", b"\x89PNG first", "plots/a.png")
    tracker.log_artifact_bytes("p", b"\x89PNG second", "plots/a.png")  # replaces the first copy
    tracker.log_artifact_bytes("p", b"<html></html>", "report.html")
    tracker.log_artifact_bytes("p", "not bytes", "plots/b.png")  # type: ignore[arg-type]
    tracker.report_error("draw plots/c.png", ValueError("no data"))
    assert tracker.flush(60)
    run_id = tracker.run_ids()["p"]
    summary = tracker.close()
    assert summary["failures"] == 2 and summary["dropped"] == 2
    assert any("plots/b.png" in w for w in warnings) and any("plots/c.png" in w and "no data" in w for w in warnings)
    client = MlflowClient(tracking_uri=uri)
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/a.png"]
    assert (
        Path(client.download_artifacts(run_id, "plots/a.png", str(tmp_path / "dl"))).read_bytes() == b"\x89PNG second"
    )
    assert "report.html" in [a.path for a in client.list_artifacts(run_id)]
    assert "mlflow.loggedArtifacts" not in client.get_run(run_id).data.tags  # figures are files, not tables
