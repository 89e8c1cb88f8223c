"""Tracking URIs with credentials in them (``http://user:token@host``, ``postgresql://user:password@…``,
``?token=…``) are masked wherever qtrust stores or shows them; the real URI stays in memory only.

The end-to-end check (``qtrust`` run as a user does against a real ``mlflow server`` reached through a
URI that carries ``user:token@``, every byte it wrote searched for the token) is
``tests/jobs/test_secrets_nowhere.py``, with the other secrets a sweep can hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
from tests.support.mlflow_server import _free_port
from tests.support.pipeline_helpers import fake_sweep

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
