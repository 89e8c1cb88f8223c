"""The HTML report in MLflow: logged to the sweep's parent run.

A final report is the artifact ``report.html``; a partial one (items missing: a sweep still
running, a damaged or deleted shard) is ``report-partial.html``, so that it never replaces the
final report. The parent run's tag ``qtrust.report.partial`` is ``true`` while the run holds only a
partial report and ``false`` once it holds a final one (a later partial report leaves it so).
"""

from __future__ import annotations

from typing import Any

from jobs.results.completeness import PARTIAL_TAG, Completeness
from jobs.results.report_file import PARTIAL_REPORT_NAME, REPORT_NAME, local_copy


def log_report_to_mlflow(manifest: dict[str, Any], where: str, completeness: Completeness | None = None) -> str | None:
    """Attach the report to the sweep's parent run recorded in the manifest; returns a note for the user."""
    from jobs.tracking.client import Tracker

    entry = manifest.get("mlflow") or {}
    uri, runs = entry.get("uri"), entry.get("runs") or {}
    parent = next((run_id for key, run_id in runs.items() if key.startswith("sweep:")), None)
    if not uri or not parent:
        return "MLflow: the manifest names no parent run; the report was not logged."
    partial = completeness is not None and completeness.partial
    name = PARTIAL_REPORT_NAME if partial else REPORT_NAME
    problems: list[str] = []
    tracker = Tracker(uri, None, warn=problems.append, request_timeout_s=20.0)
    tracker.log_artifact(parent, local_copy(where, name))
    if completeness is not None and not (partial and _has_final_report(tracker, parent)):
        tracker.set_tags(parent, completeness.tags())  # a final report's tags stay those of the final report
    if problems:
        return f"MLflow: could not log the report to run {parent} ({problems[0][:300]})"
    kind = "partial report" if partial else "report"
    return f"MLflow: {kind} logged to the parent run {parent} as {name}"


def _has_final_report(tracker: Any, run_id: str) -> bool:
    """Whether the run already holds a final report (its tag says so, or ``report.html`` is there)."""
    if tracker.client is None:
        return False
    try:
        if tracker.client.get_run(run_id).data.tags.get(PARTIAL_TAG) == "false":
            return True
        return any(f.path == REPORT_NAME for f in tracker.client.list_artifacts(run_id))
    except Exception:
        return False
