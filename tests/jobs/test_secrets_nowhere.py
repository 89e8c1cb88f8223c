"""Secrets a user puts into a sweep are stored and shown nowhere (issue 24): every byte a sweep writes is scanned.

Planted: a judge endpoint ``base_url`` with ``user:password@`` and one with ``?api_key=``, a tracking URI with
``user:token@`` in the spec and another on the command line (``--tracking-uri``, which lands in the driver's
command line), and storage / cache URIs with credentials (refused before any work). The sweep runs as a user
runs it (``qtrust run``, then ``status``, a refused and an accepted ``resume``, ``report``) against a real
``mlflow server`` and a real OpenAI-compatible judge stub; then the store folder (Parquet included, read as
bytes and as tables), the MLflow server's database and artifacts, Ray's log files, the console output of every
command and MLflow's params, tags and artifacts are searched for each secret: none is found. The secrets were
used all the same: the judge stub saw the password as basic auth and the key in the query, on resume too.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from tests.support.mlflow_server import _free_port, _mlflow_server, mlflow_rest
from tests.support.openai_stub import judge_reply, openai_stub
from tests.support.pipeline_helpers import fake_sweep

QTRUST = str(Path(sys.executable).parent / "qtrust")
PASSWORD = "pw-5ecr3t-J1x"  # judge base_url user-info
API_KEY = "qk-5ecr3t-J2y"  # judge base_url ?api_key=
SPEC_TOKEN = "tok-5ecr3t-QX7"  # tracking URI user-info, in the spec
CLI_TOKEN = "tok-5ecr3t-CL9"  # tracking URI user-info, on the command line
SECRETS = (PASSWORD, API_KEY, SPEC_TOKEN, CLI_TOKEN)


def _refusing_each_models_second_request() -> Callable[[dict, int], tuple[int, object]]:
    """A judge server that refuses the second request for each model (HTTP 400: not retried, so each judge
    stores one error naming its URL, and a resume asks each judge once more)."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def answer(body: dict, number: int) -> tuple[int, object]:
        with lock:
            counts[body["model"]] += 1
            nth = counts[body["model"]]
        return (400, {"error": "bad request"}) if nth == 2 else (200, judge_reply(body))

    return answer


def _qtrust(*args: str, env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([QTRUST, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _every_byte(folder: Path, label: str) -> dict[str, str]:
    """Every file under ``folder`` as text (bytes decoded leniently); a Parquet file also as its table's values."""
    found: dict[str, str] = {}
    for path in folder.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        where = f"{label}/{path.relative_to(folder)}"
        found[where] = path.read_bytes().decode("utf-8", "replace")
        if path.suffix == ".parquet":  # compressed pages hide their strings from a byte search
            found[f"{where} (rows)"] = json.dumps(pq.read_table(path).to_pylist(), default=str)
    return found


def _auth_users(stub) -> set[str]:
    return {
        base64.b64decode(seen["auth"].split()[1]).decode()
        for seen in stub.seen
        if (seen["auth"] or "").startswith("Basic ")
    }


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A short folder for Ray's session (its socket paths have a length limit), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="qt-ray-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_no_planted_secret_is_stored_or_shown_anywhere(tmp_path: Path, data_dir: Path, ray_tmp: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server_root = tmp_path / "server"
    server_root.mkdir()
    outputs: dict[str, str] = {}
    with openai_stub(_refusing_each_models_second_request()) as stub, _mlflow_server(server_root, port):
        judge_host = stub.base_url.removeprefix("http://")
        spec = fake_sweep(tmp_path, items=4, shard_size=2, name="secrets")
        spec["benchmarks"] = [
            {"name": "xstest", "limit": 4, "max_new_tokens": 6, "judges": ["pw", "qk"], "judge": "pw"}
        ]
        spec["judges"] = [
            {
                "name": "pw",
                "kind": "endpoint",
                "endpoint": {"base_url": f"http://qtuser:{PASSWORD}@{judge_host}", "model": "j", "max_retries": 0},
            },
            {
                "name": "qk",
                "kind": "endpoint",
                "endpoint": {"base_url": f"{stub.base_url}?api_key={API_KEY}", "model": "k", "max_retries": 0},
            },
        ]
        spec["tracking"] = {"uri": f"http://qtuser:{SPEC_TOKEN}@127.0.0.1:{port}", "experiment": "secrets"}
        sweep_file = tmp_path / "sweep.yaml"
        sweep_file.write_text(yaml.safe_dump(spec))
        sweep_dir = tmp_path / "runs" / "secrets"
        cli_uri = f"http://qtuser:{CLI_TOKEN}@127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(
            RAY_AUTH_MODE="disabled",
            RAY_USAGE_STATS_ENABLED="0",
            RAY_TMPDIR=str(ray_tmp),
            QTRUST_DATA_DIR=str(data_dir),
            QTRUST_LOG_LEVEL="INFO",
        )

        first = _qtrust("run", str(sweep_file), "--data-dir", str(data_dir), "--tracking-uri", cli_uri, env=env)
        outputs.update({"run stdout": first.stdout, "run stderr": first.stderr})
        assert first.returncode in (0, 1), first.stdout[-3000:] + first.stderr[-3000:]
        assert "Judgments: 8 answer(s) judged" in first.stdout, first.stdout[-3000:]
        # the secrets were used: the password as basic auth, the key in the query after the API path
        assert _auth_users(stub) == {f"qtuser:{PASSWORD}"}
        keyed = [s["path"] for s in stub.seen if API_KEY in s["path"]]
        assert keyed and all(p == f"/v1/chat/completions?api_key={API_KEY}" for p in keyed), keyed
        requests_after_run = len(stub.seen)

        stored_spec = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
        assert stored_spec["tracking"]["uri"] == f"http://qtuser:***@127.0.0.1:{port}"
        assert [j["endpoint"]["base_url"] for j in stored_spec["judges"]] == [
            f"http://qtuser:***@{judge_host}",
            f"{stub.base_url}?api_key=***",
        ]
        manifest = json.loads((sweep_dir / "manifest.json").read_text())
        assert "--tracking-uri http://qtuser:***@" in manifest["driver"]["command"]
        assert manifest["mlflow"]["uri"] == f"http://qtuser:***@127.0.0.1:{port}"
        assert manifest["mlflow"]["url"].startswith(f"{base}/#/experiments/")
        parent_id = next(v for k, v in manifest["mlflow"]["runs"].items() if k.startswith("sweep:"))

        shown = _qtrust("status", str(sweep_dir), env=env, timeout=60)
        outputs["status"] = shown.stdout + shown.stderr
        assert shown.returncode == 0, outputs["status"]

        # resume from the store: the masked judge URL and tracking URI are asked for, never used as they are
        refused = _qtrust("resume", str(sweep_dir), "--data-dir", str(data_dir), "--quiet", env=env)
        outputs["refused resume"] = refused.stdout + refused.stderr
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, outputs["refused resume"]
        assert "--tracking-uri" in refused.stderr and "MLFLOW_TRACKING_URI" in refused.stderr, refused.stderr
        no_judge_url = _qtrust(
            "resume", str(sweep_dir), "--data-dir", str(data_dir), "--quiet", "--tracking-uri", cli_uri, env=env
        )
        outputs["resume without --judge-url"] = no_judge_url.stdout + no_judge_url.stderr
        assert no_judge_url.returncode == 2 and "Traceback" not in no_judge_url.stderr, no_judge_url.stderr
        assert "--judge-url pw=" in no_judge_url.stderr and "judges[0].endpoint.base_url" in no_judge_url.stderr
        assert len(stub.seen) == requests_after_run  # nothing was sent to a masked URL
        resumed = _qtrust(
            "resume", str(sweep_dir), "--data-dir", str(data_dir), "--quiet", "--tracking-uri", cli_uri,
            "--judge-url", f"pw=http://qtuser:{PASSWORD}@{judge_host}",
            "--judge-url", f"qk={stub.base_url}?api_key={API_KEY}",
            env=env,
        )  # fmt: skip
        outputs["resume"] = resumed.stdout + resumed.stderr
        assert resumed.returncode in (0, 1), outputs["resume"][-3000:]
        # the two refused judgments were asked again with the real URLs; nothing else (the keys are unchanged)
        again = stub.seen[requests_after_run:]
        assert sorted(seen["body"]["model"] for seen in again) == ["j", "k"], again
        assert "Judgments: 2 answer(s) judged by this run, 6 already stored" in resumed.stdout, resumed.stdout
        assert _auth_users(stub) == {f"qtuser:{PASSWORD}"}

        report = _qtrust(
            "report", str(sweep_dir), "--data-dir", str(data_dir), "--tracking-uri", cli_uri, env=env, timeout=120
        )
        outputs["report"] = report.stdout + report.stderr
        assert report.returncode == 0 and f"report logged to the parent run {parent_id}" in report.stdout
        assert (sweep_dir / "report.html").is_file()
        again = json.loads((sweep_dir / "manifest.json").read_text())
        assert again["mlflow"]["runs"] == manifest["mlflow"]["runs"]  # the same runs, reopened with the real URI

        # MLflow as its API shows it: params, tags and the artifacts of every run
        experiment = mlflow_rest(base, "experiments/get-by-name", experiment_name="secrets")["experiment"]
        runs = mlflow_rest(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 50})
        for run in runs["runs"]:
            data = run["data"]
            outputs.update({f"{run['info']['run_name']} {e['key']}": e["value"] for e in data.get("params", [])})
            outputs.update({f"{run['info']['run_name']} {e['key']}": e["value"] for e in data.get("tags", [])})
        params = {e["key"]: e["value"] for r in runs["runs"] for e in r["data"].get("params", [])}
        assert params["judge.pw.endpoint.base_url"] == f"http://qtuser:***@{judge_host}"
        assert params["judge.qk.endpoint.base_url"] == f"{stub.base_url}?api_key=***"
        with urllib.request.urlopen(f"{base}/get-artifact?run_id={parent_id}&path=judges.json", timeout=30) as got:
            outputs["judges.json artifact"] = got.read().decode()
        shown_judges = outputs["judges.json artifact"].replace("\\/", "/")  # the judges of the last run (resume)
        assert f"qtuser:***@{judge_host}" in shown_judges and f"{stub.base_url}?api_key=***" in shown_judges
        with urllib.request.urlopen(f"{base}/get-artifact?run_id={parent_id}&path=sweep.yaml", timeout=30) as got:
            outputs["sweep.yaml artifact"] = got.read().decode()
        assert "qtuser:***@" in outputs["sweep.yaml artifact"] and "api_key=***" in outputs["sweep.yaml artifact"]

    outputs.update(_every_byte(tmp_path / "runs", "store"))
    outputs.update(_every_byte(server_root, "mlflow server"))
    outputs.update(_every_byte(ray_tmp, "ray logs"))
    assert any(k.startswith("ray logs/") and k.endswith((".log", ".out", ".err")) for k in outputs)
    # the scan sees what it looks for: the refused requests' errors name the (masked) URL in the judgments' rows
    rows = {k: v for k, v in outputs.items() if k.endswith("(rows)") and "/judgments/judge=" in k}
    assert any("qtuser:***@" in v for k, v in rows.items() if "judge=pw/" in k), sorted(rows)
    assert any("api_key=***" in v for k, v in rows.items() if "judge=qk/" in k), sorted(rows)
    assert any(PASSWORD in text for text in _every_byte(tmp_path, "all").values())  # the user's own sweep file
    leaks = sorted(f"{secret} in {where}" for where, text in outputs.items() for secret in SECRETS if secret in text)
    assert not leaks, leaks[:40]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("root", "s3://AKIAEXAMPLE:TOPSECRETVALUE@bucket/runs"),
        ("response_cache", "s3://bucket/answers?X-Amz-Signature=TOPSECRETVALUE"),
        ("variant_cache", "gs://bucket/variants?token=TOPSECRETVALUE"),
        ("$QTRUST_VARIANT_CACHE", "s3://bucket/variants?access_token=TOPSECRETVALUE"),
    ],
)
def test_a_storage_or_cache_uri_with_a_secret_is_refused_without_showing_it(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    from jobs.cli import app

    spec = fake_sweep(tmp_path)
    if field.startswith("$"):
        monkeypatch.setenv(field[1:], value)
    else:
        spec["storage"][field] = value
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["run", str(sweep_file), "--data-dir", str(data_dir), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "TOPSECRETVALUE" not in result.output and "Traceback" not in result.output
    assert "***" in result.output and "put credentials in the environment instead" in result.output
    assert not (tmp_path / "runs").exists()  # refused before any work


# -- the pieces, fast ---------------------------------------------------------------------------


def _judged_spec(tmp_path: Path, base_url: str) -> Any:
    from jobs.spec.load import parse_spec

    spec = fake_sweep(tmp_path, name="pieces")
    spec["benchmarks"] = [{"name": "xstest", "limit": 2, "judges": ["api"], "judge": "api"}]
    spec["judges"] = [{"name": "api", "kind": "endpoint", "endpoint": {"base_url": base_url, "model": "m"}}]
    spec["tracking"] = {"uri": f"http://qtuser:{SPEC_TOKEN}@h:1/?token={SPEC_TOKEN}"}
    return parse_spec(spec)


def test_the_stored_spec_masks_judge_urls_and_a_run_of_it_asks_for_them(tmp_path: Path) -> None:
    from jobs.spec.load import dump_spec, parse_spec
    from jobs.spec.masked import masked_problems, redacted_spec, with_judge_urls
    from jobs.spec.schema import SpecError

    real = f"http://qtuser:{PASSWORD}@127.0.0.1:9/v1?api_key={API_KEY}"
    spec = _judged_spec(tmp_path, real)
    text = dump_spec(redacted_spec(spec))
    assert not [s for s in SECRETS if s in text], text
    assert spec.judges[0].endpoint.base_url == real  # the caller's spec keeps the real URL
    stored = parse_spec(yaml.safe_load(text))
    assert stored.judges[0].endpoint.base_url == "http://qtuser:***@127.0.0.1:9/v1?api_key=***"
    (problem,) = masked_problems(stored)  # the tracking URI is left to --tracking-uri / MLFLOW_TRACKING_URI
    assert problem.startswith("judges[0].endpoint.base_url: http://qtuser:***@") and "--judge-url api=URL" in problem
    assert masked_problems(with_judge_urls(stored, [f"api={real}"])) == []
    assert with_judge_urls(stored, [f"api={real}"]).judges[0].endpoint.base_url == real
    with pytest.raises(SpecError) as wrong:
        with_judge_urls(stored, [f"nope=http://u:{PASSWORD}@h", "api"])
    message = str(wrong.value)
    assert "no endpoint judge 'nope'" in message and "give NAME=URL" in message and PASSWORD not in message


def test_an_endpoint_url_with_a_query_gets_the_api_path_before_it_and_errors_hide_its_secrets() -> None:
    from cluster.judges.endpoint import EndpointClient, EndpointSpec, chat_url

    assert chat_url("http://h:1/v1?api_key=k") == "http://h:1/v1/chat/completions?api_key=k"
    assert chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    url = f"http://qtuser:{PASSWORD}@127.0.0.1:{_free_port()}/v1?api_key={API_KEY}"
    spec = EndpointSpec(base_url=url, model="m", max_retries=0, timeout_s=2)
    with EndpointClient(spec) as client:
        (answer,) = client.complete_many([([{"role": "user", "content": "hi"}], 4)])
        shown = f"{answer} {client!r}"
    assert "cannot reach http://qtuser:***@127.0.0.1:" in shown and "api_key=***" in shown
    assert PASSWORD not in shown and API_KEY not in shown


def test_the_manifest_writer_masks_every_string_the_driver_command_included(tmp_path: Path) -> None:
    from jobs.store.sweep import SweepStore

    store = SweepStore(tmp_path / "runs", "m")
    uri = f"http://qtuser:{SPEC_TOKEN}@h:1/?token={CLI_TOKEN}"
    store.write_manifest(
        {"driver": {"command": f"qtrust run s.yaml --tracking-uri {uri}"}, "events": [{"text": uri}], "p": tmp_path}
    )
    text = Path(store.manifest_path).read_text()
    assert SPEC_TOKEN not in text and CLI_TOKEN not in text
    assert json.loads(text)["driver"]["command"] == "qtrust run s.yaml --tracking-uri http://qtuser:***@h:1/?token=***"


def test_the_console_and_every_log_record_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import logging

    from rich.console import Console

    from jobs.redacted_output import RedactingStream, redact_log_records, standard_stream

    secret_uri = f"http://qtuser:{PASSWORD}@h/v1?api_key={API_KEY}"
    Console(file=RedactingStream(standard_stream("stdout")), width=200).print(f"judge at {secret_uri}")
    assert "judge at http://qtuser:***@h/v1?api_key=***" in capsys.readouterr().out

    previous = logging.getLogRecordFactory()
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    logger = logging.getLogger("qtrust.test.secrets")
    logger.addHandler(handler)
    try:
        redact_log_records()
        redact_log_records()  # once is enough; twice changes nothing
        try:
            raise RuntimeError(f"cannot reach {secret_uri}")
        except RuntimeError:
            logger.exception("judge %s failed", secret_uri)
    finally:
        logger.removeHandler(handler)
        logging.setLogRecordFactory(previous)
    text = written.getvalue()
    assert "judge http://qtuser:***@h/v1?api_key=*** failed" in text and "RuntimeError: cannot reach" in text
    assert PASSWORD not in text and API_KEY not in text, text


def test_mlflow_tables_params_and_text_artifacts_are_redacted(tmp_path: Path) -> None:
    import pandas as pd

    from jobs.tracking.redacted import redact_text_file, redacted_bytes, redacted_frame, redacted_items

    secret_uri = f"http://qtuser:{PASSWORD}@h/v1?api_key={API_KEY}"
    frame = pd.DataFrame({"judge": ["pw"], "endpoint.base_url": [secret_uri], "n": [1]})
    assert redacted_frame(frame).to_json(orient="split") == frame.assign(
        **{"endpoint.base_url": ["http://qtuser:***@h/v1?api_key=***"]}
    ).to_json(orient="split")
    assert frame["endpoint.base_url"][0] == secret_uri  # the caller's frame is unchanged
    assert redacted_items({"judge.pw.endpoint.base_url": secret_uri}) == {
        "judge.pw.endpoint.base_url": "http://qtuser:***@h/v1?api_key=***"
    }
    assert PASSWORD not in redacted_bytes(secret_uri.encode(), "summary.json").decode()
    assert redacted_bytes(b"\x89PNG" + secret_uri.encode(), "plot.png").startswith(b"\x89PNG")
    artifact = tmp_path / "sweep.yaml"
    artifact.write_text(f"base_url: {secret_uri}\n")
    redact_text_file(artifact)
    assert artifact.read_text() == "base_url: http://qtuser:***@h/v1?api_key=***\n"
