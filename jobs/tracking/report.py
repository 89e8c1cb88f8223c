"""The HTML report in MLflow: logged to the sweep's parent run."""

from __future__ import annotations

from typing import Any

from jobs.results.report_file import REPORT_NAME, local_copy


def log_report_to_mlflow(manifest: dict[str, Any], where: str) -> str | None:
    """Attach the report to the sweep's parent run recorded in the manifest; returns a note for the user."""
    from jobs.tracking.client import Tracker

    entry = manifest.get("mlflow") or {}
    uri, runs = entry.get("uri"), entry.get("runs") or {}
    parent = next((run_id for key, run_id in runs.items() if key.startswith("sweep:")), None)
    if not uri or not parent:
        return "MLflow: the manifest names no parent run; the report was not logged."
    problems: list[str] = []
    tracker = Tracker(uri, None, warn=problems.append, request_timeout_s=20.0)
    tracker.log_artifact(parent, local_copy(where))
    if problems:
        return f"MLflow: could not log the report to run {parent} ({problems[0][:300]})"
    return f"MLflow: report logged to the parent run {parent} as {REPORT_NAME}"
