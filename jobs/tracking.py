"""MLflow tracking: one parent run per sweep, nested runs per (variant, benchmark) and per ensemble.

Run ids are kept in the sweep manifest so that a resumed sweep writes into the same runs. Every
call is guarded: a tracking outage prints a warning and never kills an evaluation (results are in
the shard store either way, and the next run of the same command logs them again).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import pandas as pd

log = logging.getLogger(__name__)
T = TypeVar("T")


def resolve_tracking_uri(cli_uri: str | None, spec_uri: str | None) -> str:
    """First found wins: ``--tracking-uri``, ``MLFLOW_TRACKING_URI``, the spec, MLflow's default local store."""
    for candidate in (cli_uri, os.environ.get("MLFLOW_TRACKING_URI"), spec_uri):
        if candidate:
            return candidate
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def ui_command(uri: str) -> str:
    """The command that serves the MLflow UI over this tracking store ("" for a tracking server)."""
    if uri.startswith(("http://", "https://", "databricks")):
        return ""
    mlflow = Path(sys.executable).parent / "mlflow"
    program = "mlflow"
    if mlflow.is_file():
        try:
            program = str(mlflow.relative_to(Path.cwd()))
        except ValueError:
            program = str(mlflow)
    return f"{program} ui --backend-store-uri {uri} --port 5000"


class Tracker:
    """A fault-tolerant wrapper over ``MlflowClient``."""

    def __init__(self, uri: str, experiment: str, warn: Callable[[str], None] | None = None):
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)

        self.uri = uri
        self.experiment_name = experiment
        self.client = MlflowClient(tracking_uri=uri)
        self.warn = warn or (lambda msg: log.warning(msg))
        self.failures = 0
        self.experiment_id: str | None = self._guard("open experiment", self._ensure_experiment)

    def _guard(self, what: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - tracking must never kill an evaluation
            self.failures += 1
            self.warn(f"MLflow: could not {what} at {self.uri}: {type(err).__name__}: {str(err)[:300]}")
            return None

    def _ensure_experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        return self.client.create_experiment(self.experiment_name)

    @property
    def available(self) -> bool:
        return self.experiment_id is not None

    def run(self, existing_id: str | None, run_name: str, tags: dict[str, str], parent_id: str | None = None) -> str | None:
        """Reuse ``existing_id`` when it still exists in this store, otherwise create a run."""
        if not self.available:
            return None

        def create() -> str:
            if existing_id:
                try:
                    run = self.client.get_run(existing_id)
                    if run.info.lifecycle_stage == "active" and run.info.experiment_id == self.experiment_id:
                        self.client.update_run(existing_id, status="RUNNING")
                        return existing_id
                except Exception:  # noqa: BLE001 - a run from another store: make a new one
                    pass
            all_tags = dict(tags)
            if parent_id:
                all_tags["mlflow.parentRunId"] = parent_id
            return self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags).info.run_id

        return self._guard(f"start run {run_name}", create)

    def log_params(self, run_id: str | None, params: dict[str, Any]) -> None:
        if not run_id:
            return
        from mlflow.entities import Param

        existing = self._guard("read params", lambda: self.client.get_run(run_id).data.params) or {}
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        if new:
            self._guard("log params", lambda: self.client.log_batch(run_id, params=new))

    def log_metrics(self, run_id: str | None, metrics: dict[str, float]) -> None:
        if not run_id:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), stamp, 0) for k, v in metrics.items() if v is not None and v == v]
        if batch:
            self._guard("log metrics", lambda: self.client.log_batch(run_id, metrics=batch))

    def set_tags(self, run_id: str | None, tags: dict[str, str]) -> None:
        if not run_id:
            return
        from mlflow.entities import RunTag

        self._guard("set tags", lambda: self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]))

    def log_table(self, run_id: str | None, frame: pd.DataFrame, artifact_file: str) -> None:
        """Log a table as JSON (MLflow's column/data layout), replacing any earlier copy.

        ``MlflowClient.log_table`` appends to an existing table, which would duplicate rows when a
        resumed sweep logs again; writing the file ourselves keeps re-logging idempotent.
        """
        if not run_id:
            return

        def log() -> None:
            import json
            import tempfile

            path = Path(artifact_file)
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / path.name
                payload = {"columns": list(frame.columns), "data": json.loads(frame.to_json(orient="values"))}
                local.write_text(json.dumps(payload, ensure_ascii=False))
                self.client.log_artifact(run_id, str(local), str(path.parent) if str(path.parent) != "." else None)

        self._guard(f"log table {artifact_file}", log)

    def log_artifact(self, run_id: str | None, path: Path, artifact_path: str | None = None) -> None:
        if run_id:
            self._guard(f"log artifact {path.name}", lambda: self.client.log_artifact(run_id, str(path), artifact_path))

    def log_dataset(self, run_id: str | None, frame: pd.DataFrame, name: str, source: str, digest: str) -> None:
        """Record the items a run was evaluated on as an MLflow dataset input."""
        if not run_id:
            return

        def log() -> None:
            import mlflow.data
            from mlflow.entities import DatasetInput, InputTag

            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36])
            entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "eval")])
            self.client.log_inputs(run_id, datasets=[entity])

        self._guard(f"log dataset {name}", log)

    def finish(self, run_id: str | None, failed: bool = False) -> None:
        if run_id:
            self._guard("end run", lambda: self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED"))

    def runs_url(self) -> str | None:
        if self.experiment_id is None:
            return None
        base = self.uri.rstrip("/") if self.uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        return f"{base}/#/experiments/{self.experiment_id}/runs"
