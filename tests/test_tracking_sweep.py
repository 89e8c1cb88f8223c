"""Live tracking of a whole sweep: MLflow shows it while it runs, and survives the server dying."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from rich.console import Console

from tests.mlflow_server import _free_port, _kill, _mlflow_server
from tests.pipeline_helpers import fake_sweep, run, wait_for

pytestmark = pytest.mark.usefixtures("ray_local")


class SweepThread(threading.Thread):
    """``run_sweep`` in a background thread (the test reads MLflow meanwhile)."""

    def __init__(self, spec: dict, root: Path, data_dir: Path, tracking_uri: str):
        super().__init__(daemon=True)
        self.args = (spec, root, data_dir, tracking_uri)
        self.outcome: Any = None
        self.error: BaseException | None = None
        self.console = Console(file=io.StringIO(), width=300)

    def run(self) -> None:
        spec, root, data_dir, uri = self.args
        try:
            self.outcome = run(spec, root, data_dir, console=self.console, tracking_uri=uri)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.error = err


def _child_runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [r for r in client.search_runs([found.experiment_id], max_results=200) if r.data.tags.get("qtrust.kind") == "variant"]


def test_mlflow_shows_the_sweep_running_with_progress(tmp_path: Path, data_dir: Path) -> None:
    uri = f"sqlite:///{tmp_path}/live.db"
    spec = fake_sweep(tmp_path, {"delay_s": 0.25}, items=8, shard_size=2)
    spec["tracking"] = {"experiment": "live"}
    sweep = SweepThread(spec, tmp_path, data_dir, uri)
    sweep.start()
    client = MlflowClient(uri)

    def running_with_progress() -> list:
        if not sweep.is_alive():
            return []
        runs = _child_runs(client, "live")
        return [r for r in runs if r.info.status == "RUNNING" and r.data.metrics.get("progress.items_done", 0) > 0]

    seen = wait_for(running_with_progress, 120, 0.3, "a RUNNING run with progress while the sweep runs")
    assert sweep.is_alive(), "the sweep ended before MLflow showed it running"
    assert all(0 < r.data.metrics["progress.items_done"] <= 8 for r in seen)
    sweep.join(180)
    assert sweep.error is None and sweep.outcome is not None and not sweep.outcome.failed
    runs = _child_runs(client, "live")
    assert "MLflow" not in sweep.console.file.getvalue(), sweep.console.file.getvalue()  # no tracking warning
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        history = sorted(client.get_metric_history(r.info.run_id, "progress.items_done"), key=lambda m: m.step)
        # at most one point a second (the step is the number of shards landed), ending at all 4 shards
        assert history[-1].step == 4 and history[-1].value == 8
        assert [m.value for m in history] == sorted(m.value for m in history)
        assert r.data.metrics["n_items"] == 8 and r.info.end_time - r.info.start_time > 500  # a real duration
    parent = client.get_run(sweep.outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["progress.items_done"] == 16


def test_a_corrupt_sqlite_store_is_a_warning_not_a_crash(tmp_path: Path, data_dir: Path) -> None:
    db = tmp_path / "broken.db"
    db.write_bytes(b"this is not a database" * 100)
    outcome = run(fake_sweep(tmp_path, items=4, shard_size=2), tmp_path, data_dir, tracking_uri=f"sqlite:///{db}")
    assert not outcome.failed and outcome.items_computed == 8
    assert outcome.tracking_failures >= 1 and outcome.run_ids == {}
    assert all(r.metrics for r in outcome.results)


@pytest.mark.slow
def test_a_tracking_server_killed_mid_sweep_costs_seconds_and_catches_up(tmp_path: Path, data_dir: Path) -> None:
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    spec = fake_sweep(tmp_path, {"delay_s": 1.0}, items=12, shard_size=2, resources={"max_in_flight": 1})
    spec["tracking"] = {"experiment": "outage"}
    server_root = tmp_path / "server"
    server_root.mkdir()
    with _mlflow_server(server_root, port) as server:
        sweep = SweepThread(spec, tmp_path, data_dir, uri)
        sweep.start()
        client = MlflowClient(uri)
        wait_for(
            lambda: any(r.data.metrics.get("progress.items_done", 0) > 0 for r in _child_runs(client, "outage")),
            120, 0.5, "progress on the server",
        )
        _kill(server)
        killed_at = time.monotonic()
    time.sleep(2)
    assert sweep.is_alive(), "the sweep should still be running while the server is down"
    with _mlflow_server(server_root, port):
        sweep.join(300)
        # 24 items × 1 s on one replica: the outage must cost seconds, not the minutes MLflow's
        # default client retries would (each call to a dead server retried for minutes).
        assert time.monotonic() - killed_at < 24 + 60
        assert sweep.error is None and sweep.outcome is not None and not sweep.outcome.failed
        assert sweep.outcome.items_computed == 24
        warnings = sweep.console.file.getvalue()
        assert warnings.count(f"127.0.0.1:{port}") >= 1  # the outage was reported ...
        # ... once per outage, not once per call
        assert warnings.count("MLflow") <= 3, warnings
        # What could not be sent while the server was down is sent now, or by the next run of the
        # sweep (which computes nothing and finishes the same runs).
        again = run(spec, tmp_path, data_dir, tracking_uri=uri)
        assert again.items_computed == 0 and again.run_ids == sweep.outcome.run_ids or not sweep.outcome.run_ids
        client = MlflowClient(uri)
        runs = _child_runs(client, "outage")
        assert len(runs) == 2, "runs must not be duplicated by the outage"
        assert all(r.info.status == "FINISHED" for r in runs)
        for r in runs:
            assert r.data.metrics["n_items"] == 12 and r.data.metrics["progress.items_done"] == 12
            history = client.get_metric_history(r.info.run_id, "progress.items_done")
            points = [(m.step, m.timestamp) for m in history]
            assert len(points) == len(set(points)), points  # a caught-up point is never delivered twice
            assert {m.step for m in history} >= {6}
