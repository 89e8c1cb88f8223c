"""Tracking URIs with credentials in them (``http://user:token@host``, ``postgresql://user:password@…``,
``?token=…``) are masked wherever qtrust stores or shows them; the real URI stays in memory only.

The end-to-end test runs ``qtrust`` as a user does against a real ``mlflow server`` reached through a
URI that carries ``user:token@`` (MLflow's client sends it as basic auth; a server without auth
ignores it) and looks for the token everywhere: the manifest, the stored ``sweep.yaml``, the lock
file, MLflow's params, tags, artifacts and database, the driver's output and ``qtrust status``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from jobs.tracking.uri import (
    TrackingUriError,
    is_redacted,
    redact,
    resolve_tracking_uri,
    run_url,
    stored_tracking_uri,
    ui_base_url,
    ui_command,
)
from tests.support.mlflow_server import _free_port, _mlflow_server, mlflow_rest
from tests.support.pipeline_helpers import fake_sweep

QTRUST = str(Path(sys.executable).parent / "qtrust")
TOKEN = "tok-5ecr3t-QX7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://alice:s3cret@mlflow.example:5000", "http://alice:***@mlflow.example:5000"),
        ("https://ghp_abcdef@github.example/x", "https://***@github.example/x"),
        ("postgresql+psycopg://mlflow:pa@ss@db:5432/mlflow", "postgresql+psycopg://mlflow:***@db:5432/mlflow"),
        ("http://host/api?token=abc123&x=1", "http://host/api?token=***&x=1"),
        (
            "s3://b/k?X-Amz-Signature=ff00&X-Amz-Credential=AK/x&part=2",
            "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***&part=2",
        ),
        ("postgresql://db/mlflow?user=u&password=pw", "postgresql://db/mlflow?user=u&password=***"),
        ("at http://u:p@h:1/x (HTTPError) mail a@b.c", "at http://u:***@h:1/x (HTTPError) mail a@b.c"),
        ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_redact_masks_secrets_and_keeps_themlflow_rest(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent


def test_is_redacted_tells_a_masked_uri_from_a_usable_one() -> None:
    assert is_redacted("http://alice:***@host") and is_redacted("http://host/?token=***")
    assert not is_redacted("http://alice:s3cret@host") and not is_redacted("http://host/***")
    assert not is_redacted("sqlite:///tmp/***.db")


def test_printed_urls_and_commands_carry_no_credentials() -> None:
    assert ui_base_url("http://alice:s3cret@host:5000/?token=t") == "http://host:5000"
    assert run_url("https://alice:s3cret@host/", "3", "abc") == "https://host/#/experiments/3/runs/abc"
    command = ui_command("postgresql://mlflow:pw123@db:5432/mlflow")
    assert "pw123" not in command and "mlflow:***@db" in command


def test_a_redacted_stored_uri_needs_the_real_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackingUriError, match="--tracking-uri.*MLFLOW_TRACKING_URI"):
        resolve_tracking_uri(None, "http://alice:***@host")
    with pytest.raises(TrackingUriError, match="MLFLOW_TRACKING_URI"):
        stored_tracking_uri("http://alice:***@host", None)
    assert resolve_tracking_uri("http://alice:t@cli", "http://alice:***@host") == "http://alice:t@cli"
    assert resolve_tracking_uri(None, "http://alice:t@spec") == "http://alice:t@spec"
    assert stored_tracking_uri("http://plain:5000", None) == "http://plain:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:t@env")
    assert resolve_tracking_uri(None, "http://alice:***@host") == "http://alice:t@env"
    assert stored_tracking_uri("http://alice:***@host", None) == "http://alice:t@env"


def test_the_stored_spec_keeps_the_uri_redacted() -> None:
    from jobs.runner import redacted_spec
    from jobs.spec.load import dump_spec, parse_spec

    spec = parse_spec(
        {**fake_sweep(Path("/tmp/x")), "tracking": {"uri": f"http://alice:{TOKEN}@h:1", "experiment": "e"}}
    )
    text = dump_spec(redacted_spec(spec))
    assert TOKEN not in text and "http://alice:***@h:1" in text
    assert spec.tracking.uri == f"http://alice:{TOKEN}@h:1"  # the caller's spec is unchanged


def test_warnings_about_an_unreachable_server_hide_the_token(capfd: pytest.CaptureFixture[str]) -> None:
    from jobs.tracking.client import Tracker

    said: list[str] = []
    tracker = Tracker(
        f"http://qtuser:{TOKEN}@127.0.0.1:{_free_port()}/?token={TOKEN}",
        "nowhere",
        warn=said.append,
        request_timeout_s=2,
    )
    assert not tracker.available and said, said
    assert "qtuser:***@127.0.0.1" in said[0]
    shown = "".join(said) + "".join(capfd.readouterr())
    assert TOKEN not in shown, shown


# -- end to end --------------------------------------------------------------------------------


def _qtrust(*args: str, env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([QTRUST, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _files_text(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.slow
def test_a_token_in_the_tracking_uri_is_stored_and_shown_nowhere(tmp_path: Path, data_dir: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    secret_uri = f"http://qtuser:{TOKEN}@127.0.0.1:{port}"
    server_root = tmp_path / "server"
    server_root.mkdir()
    spec = fake_sweep(tmp_path, items=4, shard_size=2, name="redact")
    spec["tracking"] = {"uri": secret_uri, "experiment": "redaction"}
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "runs" / "redact"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", QTRUST_DATA_DIR=str(data_dir))

    with _mlflow_server(server_root, port):
        first = _qtrust("run", str(sweep_file), "--data-dir", str(data_dir), "--quiet", env=env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        outputs = {"run stdout": first.stdout, "run stderr": first.stderr}
        assert "qtuser:***@" in first.stdout and f"Open the MLflow UI at {base}/#/experiments/" in first.stdout

        # the stored files: manifest, sweep.yaml, lock file, shards...
        stored = _files_text(sweep_dir)
        assert {"manifest.json", "sweep.yaml"} <= set(stored)
        assert yaml.safe_load(stored["sweep.yaml"])["tracking"]["uri"] == f"http://qtuser:***@127.0.0.1:{port}"
        manifest = json.loads(stored["manifest.json"])
        assert manifest["mlflow"]["uri"] == f"http://qtuser:***@127.0.0.1:{port}"
        assert manifest["mlflow"]["url"].startswith(f"{base}/#/experiments/")
        parent_id = next(v for k, v in manifest["mlflow"]["runs"].items() if k.startswith("sweep:"))

        # MLflow: every run's params and tags, the uploaded sweep.yaml, the server's database and artifacts
        experiment = mlflow_rest(base, "experiments/get-by-name", experiment_name="redaction")["experiment"]
        runs = mlflow_rest(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 50})[
            "runs"
        ]
        assert len(runs) == 3  # the sweep and (tiny-ref) × 2 benchmarks
        for run in runs:
            for field in ("params", "tags"):
                outputs.update(
                    {f"{run['info']['run_name']} {field} {e['key']}": e["value"] for e in run["data"].get(field, [])}
                )
        with urllib.request.urlopen(f"{base}/get-artifact?run_id={parent_id}&path=sweep.yaml", timeout=30) as answer:
            uploaded = answer.read().decode()
        assert "qtuser:***@" in uploaded and "name: redact" in uploaded
        outputs["sweep.yaml artifact"] = uploaded
        server_files = {f"server {k}": v for k, v in _files_text(server_root).items() if not k.startswith("server-")}
        assert any(k.endswith("server.db") for k in server_files)
        outputs.update(server_files)

        # qtrust status (--json prints the manifest, checked above as a file)
        shown = _qtrust("status", str(sweep_dir), env=env, timeout=60)
        assert shown.returncode == 0 and "MLflow:" in shown.stdout, shown.stdout + shown.stderr
        outputs["status"] = shown.stdout + shown.stderr

        # a resume: without the real URI it says where to give it; with it, it finishes the same runs
        refused = _qtrust("resume", str(sweep_dir), "--data-dir", str(data_dir), "--quiet", env=env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "Traceback" not in refused.stderr and "--tracking-uri" in refused.stderr
        assert "MLFLOW_TRACKING_URI" in refused.stderr, refused.stderr
        outputs["refused resume"] = refused.stdout + refused.stderr
        resumed = _qtrust(
            "resume",
            str(sweep_dir),
            "--data-dir",
            str(data_dir),
            "--quiet",
            env={**env, "MLFLOW_TRACKING_URI": secret_uri},
        )
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        outputs["resume"] = resumed.stdout + resumed.stderr
        # the report is logged to the parent run with the real URI (without it: test_a_redacted_stored_uri_needs...)
        report = _qtrust(
            "report", str(sweep_dir), "--data-dir", str(data_dir), "--tracking-uri", secret_uri, env=env, timeout=120
        )
        assert report.returncode == 0 and f"report logged to the parent run {parent_id}" in report.stdout, report.stdout
        outputs["report with the URI"] = report.stdout + report.stderr
        again = json.loads((sweep_dir / "manifest.json").read_text())
        assert again["mlflow"]["runs"] == manifest["mlflow"]["runs"]  # the same runs, reopened
        outputs.update({f"after resume: {k}": v for k, v in _files_text(sweep_dir).items()})

    leaks = [where for where, text in outputs.items() if TOKEN in text]
    assert not leaks, leaks
