"""MLflow for ``qtrust judge-eval``: one run per evaluation, with its confusion tables."""

from __future__ import annotations

import time
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


def log_evaluation(ev: Evaluation, tracking_uri: str | None, experiment: str) -> tuple[str, str, str]:
    """One MLflow run for ``ev``; returns (tracking URI, experiment id, run id)."""
    import mlflow  # noqa: F401 - configures MLflow's loggers on import; quieted after

    from jobs.tracking.connect import open_client, quiet_mlflow_logging
    from jobs.tracking.uri import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, None)
    quiet_mlflow_logging()
    client, experiment_id = open_client(uri, experiment)
    run = client.create_run(experiment_id, run_name=ev.run_name, tags={"qtrust.kind": "judge-eval", "judge": ev.judge})
    run_id = run.info.run_id
    from mlflow.entities import Metric, Param

    params = {
        **ev.params,
        "set": ev.set_name,
        "split": ev.split,
        "limit": "none" if ev.limit is None else str(ev.limit),
        "n": str(ev.n),
        "label_family": ev.family.name,
        "mapping": ev.family.mapping_text(),
    }
    now = int(time.time() * 1000)
    try:
        client.log_batch(
            run_id,
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            metrics=[Metric(k, v, now, 0) for k, v in ev.metrics().items()],
        )
        for comparison, result in ev.comparisons.items():
            client.log_table(run_id, confusion_frame(result), f"confusion/{comparison}.json")
        client.log_table(run_id, ev.judgments, "judgments.json")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return uri, experiment_id, run_id
