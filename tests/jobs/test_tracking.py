"""Tracking: where runs go, and an outage that must not stop an evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.runner import run_sweep
from jobs.spec.load import parse_spec
from jobs.spec.run_options import RunOptions
from jobs.tracking import Tracker, resolve_tracking_uri, ui_command
from tests.support.helpers import sweep_dict


def test_tracking_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, None) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri(None, "http://spec:5000") == "http://spec:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, "http://spec:5000") == "http://env:5000"
    assert resolve_tracking_uri("http://cli:5000", "http://spec:5000") == "http://cli:5000"


def test_ui_command_for_local_and_server_stores() -> None:
    assert "ui --backend-store-uri sqlite:////x/mlflow.db" in ui_command("sqlite:////x/mlflow.db")
    assert ui_command("http://mlflow:5000") == ""


def test_unreachable_tracking_server_warns_and_continues(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    warnings: list[str] = []
    tracker = Tracker("http://127.0.0.1:9", "x", warn=warnings.append)
    assert not tracker.available
    assert tracker.run(None, "r", {}) is None
    tracker.log_metrics(None, {"a": 1.0})
    assert warnings and "127.0.0.1:9" in warnings[0]


@pytest.mark.usefixtures("ray_local")
def test_sweep_completes_during_a_tracking_outage(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    spec = sweep_dict(tiny_model_dir, tmp_path / "runs")
    spec["models"][0]["engine"] = "fake"
    outcome = run_sweep(parse_spec(spec), RunOptions(data_dir=data_dir, tracking_uri="http://127.0.0.1:9", quiet=True))
    assert not outcome.failed and outcome.items_computed == outcome.plan.n_requests
    assert outcome.tracking_failures >= 1 and outcome.run_ids == {}
    assert all(r.metrics for r in outcome.results)
