"""Synchronous MLflow tracking (``Tracker``): each call waits for MLflow. Used by the commands that
write a few things once, after their work is done (``qtrust quantize``, ``qtrust judge-eval``, the
report of ``qtrust report``); sweeps use :class:`jobs.tracking.live.LiveTracker`. Both open the
store through :mod:`jobs.tracking.connect` (bounded HTTP retries, a serialized first use of SQLite):
no other module writes to MLflow.

Params, tags, tables and text artifacts pass the one redactor first (:mod:`jobs.tracking.redacted`).
Every call is guarded: a tracking outage prints a warning and never kills the command (results are
in the store either way, and the next run of the same command logs them again).
"""

from __future__ import annotations

import json
import logging
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from jobs.tracking.connect import (
    bound_http_requests,
    describe,
    open_client,
    open_store,
    quiet_mlflow_logging,
)
from jobs.tracking.redacted import redact_text_file, redacted_frame, redacted_items
from jobs.tracking.sender import LOGGED_ARTIFACTS_TAG, PARENT_TAG, table_entry
from jobs.tracking.uri import redact, ui_base_url

log = logging.getLogger(__name__)
T = TypeVar("T")


class Tracker:
    """A fault-tolerant wrapper over ``MlflowClient``: a failed call is a warning, never an exception."""

    def __init__(
        self,
        uri: str,
        experiment: str | None,
        warn: Callable[[str], None] | None = None,
        request_timeout_s: float = 5.0,
    ):
        """Open ``experiment`` (created when missing) in the store at ``uri``; with ``experiment=None``
        only the store is opened, to write to runs that already exist (by id)."""
        bound_http_requests(request_timeout_s)
        quiet_mlflow_logging()
        self.uri = uri
        self.experiment_name = experiment
        self.warn = warn or (lambda msg: log.warning(msg))
        self.failures = 0
        self.client: Any = None
        self.experiment_id: str | None = None
        if experiment is None:
            self.client = self._guard("open the tracking store", lambda: open_store(uri))
            return
        opened = self._guard("open experiment", lambda: open_client(uri, experiment))
        if opened is not None:
            self.client, self.experiment_id = opened

    def _guard(self, what: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Exception as err:
            self.failures += 1
            self.warn(f"MLflow: could not {what} at {redact(self.uri)}: {describe(err)}")
            return None

    @property
    def available(self) -> bool:
        return self.experiment_id is not None

    def run(
        self, existing_id: str | None, run_name: str, tags: dict[str, str], parent_id: str | None = None
    ) -> str | None:
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
                except Exception:
                    pass
            all_tags = redacted_items(tags)
            if parent_id:
                all_tags[PARENT_TAG] = parent_id
            return self.client.create_run(self.experiment_id, run_name=redact(run_name), tags=all_tags).info.run_id

        return self._guard(f"start run {run_name}", create)

    def log_params(self, run_id: str | None, params: dict[str, Any]) -> None:
        if not run_id:
            return
        from mlflow.entities import Param

        existing = self._guard("read params", lambda: self.client.get_run(run_id).data.params) or {}
        new = [Param(k, v[:6000]) for k, v in redacted_items(params).items() if k not in existing]
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

        self._guard(
            "set tags",
            lambda: self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in redacted_items(tags).items()]),
        )

    def log_table(self, run_id: str | None, frame: pd.DataFrame, artifact_file: str) -> None:
        """Log a table as JSON (MLflow's column/data layout), replacing any earlier copy, and list it
        in the run's ``mlflow.loggedArtifacts`` tag so that the UI renders it as a table.

        ``MlflowClient.log_table`` appends to an existing table, which would duplicate rows when a
        resumed sweep logs again; writing the file ourselves keeps re-logging idempotent.
        """
        if not run_id:
            return

        def log_it() -> None:
            path = posixpath.normpath(artifact_file)
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / posixpath.basename(path)
                local.write_text(redacted_frame(frame).to_json(orient="split", index=False, date_format="iso"))
                self.client.log_artifact(run_id, str(local), posixpath.dirname(path) or None)
            tags = self.client.get_run(run_id).data.tags
            try:
                listed = json.loads(tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
            except ValueError:
                listed = []
            if table_entry(artifact_file) not in listed:
                self.client.set_tag(run_id, LOGGED_ARTIFACTS_TAG, json.dumps([*listed, table_entry(artifact_file)]))

        self._guard(f"log table {artifact_file}", log_it)

    def log_artifact(self, run_id: str | None, path: Path, artifact_path: str | None = None) -> None:
        """Log the file ``path`` (a text file as a redacted copy: no secret leaves in an artifact)."""
        if not run_id or self.client is None:
            return

        def log_it() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / path.name
                shutil.copyfile(path, copy)
                redact_text_file(copy)
                self.client.log_artifact(run_id, str(copy), artifact_path)

        self._guard(f"log artifact {path.name}", log_it)

    def log_dataset(self, run_id: str | None, frame: pd.DataFrame, name: str, source: str, digest: str) -> None:
        """Record the items a run was evaluated on as an MLflow dataset input."""
        if not run_id:
            return

        def log_it() -> None:
            import warnings

            import mlflow.data
            from mlflow.entities import DatasetInput, InputTag

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dataset = mlflow.data.from_pandas(
                    redacted_frame(frame), source=redact(source), name=name, digest=digest[:36]
                )
                entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "eval")])
            self.client.log_inputs(run_id, datasets=[entity])

        self._guard(f"log dataset {name}", log_it)

    def finish(self, run_id: str | None, failed: bool = False) -> None:
        if run_id:
            self._guard(
                "end run", lambda: self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
            )

    def runs_url(self) -> str | None:
        if self.experiment_id is None:
            return None
        return f"{ui_base_url(self.uri)}/#/experiments/{self.experiment_id}/runs"
