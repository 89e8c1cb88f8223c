"""The HTML report in MLflow: logged to the sweep's parent run."""

from __future__ import annotations

from typing import Any

from jobs.results.report_file import REPORT_NAME, local_copy


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
    except Exception as err:
        from jobs.tracking.uri import redact

        return f"MLflow: could not log the report to run {parent} ({type(err).__name__}: {redact(str(err))[:200]})"
    return f"MLflow: report logged to the parent run {parent} as {REPORT_NAME}"
