"""MLflow for ``qtrust judge-eval``: one run per evaluation, with its confusion tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from jobs.judge_eval import Evaluation


# ---------------------------------------------------------------------------------------------
# Showing and tracking
# ---------------------------------------------------------------------------------------------
def confusion_frame(result: dict[str, Any]) -> pd.DataFrame:
    """A confusion matrix as a table: one row per people's label, one column per judge label."""
    rows = [{"human": human, **counts} for human, counts in result["confusion"].items()]
    return pd.DataFrame(rows, columns=["human", *result["labels"]])


def log_evaluation(
    ev: Evaluation, tracking_uri: str | None, experiment: str, warn: Callable[[str], None] | None = None
) -> tuple[str, str | None, str | None]:
    """One MLflow run for ``ev``; returns (tracking URI, experiment id, run id).

    Written through :class:`~jobs.tracking.client.Tracker`: an unreachable store is a warning (the
    ids are then None), never a lost evaluation, which was already printed.
    """
    from jobs.tracking.client import Tracker
    from jobs.tracking.uri import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, None)
    tracker = Tracker(uri, experiment, warn=warn)
    run_id = tracker.run(None, ev.run_name, {"qtrust.kind": "judge-eval", "judge": ev.judge})
    if run_id is None:
        return uri, tracker.experiment_id, None
    params = {
        **ev.params,
        "set": ev.set_name,
        "split": ev.split,
        "limit": "none" if ev.limit is None else str(ev.limit),
        "n": str(ev.n),
        "label_family": ev.family.name,
        "mapping": ev.family.mapping_text(),
    }
    tracker.log_params(run_id, params)
    tracker.log_metrics(run_id, ev.metrics())
    for comparison, result in ev.comparisons.items():
        tracker.log_table(run_id, confusion_frame(result), f"confusion/{comparison}.json")
    tracker.log_table(run_id, ev.judgments, "judgments.json")
    tracker.finish(run_id, failed=tracker.failures > 0)
    return uri, tracker.experiment_id, run_id
