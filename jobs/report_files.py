"""Where the HTML report goes: the sweep's folder in the store (or a path the user names) and its MLflow parent run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from jobs.compare import Comparison
from jobs.plan import Plan
from jobs.store import SweepStore

REPORT_NAME = "report.html"


def write_report(plan: Plan, comparison: Comparison, store: SweepStore, out: Path | None = None) -> str:
    """Render the report and write it (atomically) to ``out`` or ``<sweep dir>/report.html``; returns where."""
    from jobs.html_report import render_report

    text = render_report(plan, comparison)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
        return str(out)
    path = f"{store.path}/{REPORT_NAME}"
    store.write_text(path, text)
    return path if store.local else f"{store.fs.type_name}://{path}"


def local_copy(where: str) -> Path:
    """A local file holding the report (``where`` itself when it is on this disk)."""
    if "://" not in where:
        return Path(where)
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(where)
    target = Path(tempfile.mkdtemp(prefix="qtrust-report-")) / REPORT_NAME
    with filesystem.open_input_stream(path) as stream:
        target.write_bytes(stream.read())
    return target


def log_report_to_mlflow(manifest: dict[str, Any], where: str) -> str | None:
    """Attach the report to the sweep's parent run recorded in the manifest; returns a note for the user."""
    entry = manifest.get("mlflow") or {}
    uri, runs = entry.get("uri"), entry.get("runs") or {}
    parent = next((run_id for key, run_id in runs.items() if key.startswith("sweep:")), None)
    if not uri or not parent:
        return "MLflow: the manifest names no parent run; the report was not logged."
    import os

    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        MlflowClient(tracking_uri=uri).log_artifact(parent, str(local_copy(where)))
    except Exception as err:  # noqa: BLE001 - tracking is best effort here: the file is written either way
        from jobs.tracking.uri import redact

        return f"MLflow: could not log the report to run {parent} ({type(err).__name__}: {redact(str(err))[:200]})"
    return f"MLflow: report logged to the parent run {parent} as {REPORT_NAME}"
