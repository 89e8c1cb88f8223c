"""Sending planned calls to MLflow. Runs in the tracking thread only; remembers what each run holds
(params, listed tables, status) so that re-logging is idempotent and cheap."""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.tracking.connect import is_outage
from jobs.tracking.ops import (
    MAX_PARAMS_TAGS_PER_BATCH,
    ArtifactData,
    Call,
    DatasetData,
    FileData,
    FinishData,
    Kind,
    RunRequest,
    TableData,
    ViewData,
    chunks,
)

LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # mlflow.utils.mlflow_tags.MLFLOW_LOGGED_ARTIFACTS
NOTE_TAG = "mlflow.note.content"  # mlflow.utils.mlflow_tags.MLFLOW_RUN_NOTE
PARENT_TAG = "mlflow.parentRunId"  # mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID
SWEEP_TAG = "qtrust.sweep"
TOKEN_TAG = "qtrust.run_token"
RUN_KEY_TAG = "qtrust.run_key"
STORE_TAG = "qtrust.store"


class UnknownRun(LookupError):
    """An operation for a run key whose run was never created (its creation failed or was never asked)."""


@dataclass
class RunState:
    """What this tracker knows one MLflow run holds."""

    run_id: str
    params: dict[str, str] = field(default_factory=dict)
    tables: list[Any] = field(default_factory=list)  # value of the mlflow.loggedArtifacts tag
    status: str = "RUNNING"
    start_ms: int = 0


def table_entry(artifact_file: str) -> dict[str, str]:
    """How ``MlflowClient.log_table`` lists a table in the ``mlflow.loggedArtifacts`` tag."""
    return {"path": artifact_file, "type": "table"}


#: The experiment tag prefix under which the MLflow UI looks up a shared runs-table view.
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."


class Sender:
    """Executes calls with one ``MlflowClient``; raises what MLflow raises."""

    def __init__(
        self,
        client: Any,
        experiment_id: str,
        known_runs: dict[str, str],
        publish: Callable[[str, str], None],
        param_changed: Callable[[str, str, str, str], None],
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.known_runs = known_runs
        self.runs: dict[str, RunState] = {}
        self.publish = publish  # run_key, run_id: a run became known
        self.param_changed = param_changed  # run_key, key, kept value, refused value

    def execute(self, call: Call) -> None:
        """Send one call."""
        handlers: dict[Kind, Callable[[Call], None]] = {
            Kind.BATCH: self._batch,
            Kind.RUN: self._open_run,
            Kind.TABLE: self._table,
            Kind.ARTIFACT: self._artifact,
            Kind.FILE: self._file,
            Kind.DATASET: self._dataset,
            Kind.FINISH: self._finish,
            Kind.STALE: self._close_stale,
            Kind.VIEW: self._view,
        }
        handlers[call.kind](call)

    def probe(self) -> None:
        """One cheap request that fails when the store cannot answer."""
        self.client.get_experiment(self.experiment_id)

    def _state(self, run_key: str | None) -> RunState:
        state = self.runs.get(run_key or "")
        if state is None:
            raise UnknownRun(f"no MLflow run for {run_key!r} (its creation failed or was never requested)")
        return state

    # -- runs -----------------------------------------------------------------------------------

    def _open_run(self, call: Call) -> None:
        """Create the run, or reopen the one this key had (this session or a previous driver's)."""
        op = call.ops[0]
        key, request = op.run_key or "", op.data
        assert isinstance(request, RunRequest)
        tags = dict(request.tags)
        if request.parent_key is not None and request.parent_key in self.runs:
            tags[PARENT_TAG] = self.runs[request.parent_key].run_id
        state = self.runs.get(key)
        if state is None and key in self.known_runs:
            state = self._reopen(self.known_runs[key])
        if state is None:
            state = self._find_previous(key, tags)
        if state is not None:
            self._resume(state, tags)
        else:
            state = RunState(self._create(op, request, tags), start_ms=int(time.time() * 1000))
        self.runs[key] = state
        self.publish(key, state.run_id)

    def _find_previous(self, key: str, tags: dict[str, str]) -> RunState | None:
        """The newest run an earlier driver made for ``key`` of the same sweep and store.

        A driver killed before the run ids reached the sweep's manifest leaves runs nobody knows by
        id; they carry their run key, sweep and store as tags, and are found here instead of being
        duplicated.
        """
        wanted = {RUN_KEY_TAG: key, SWEEP_TAG: tags.get(SWEEP_TAG), STORE_TAG: tags.get(STORE_TAG)}
        if any(v is None for v in wanted.values()):
            return None
        filters = []
        for name, value in wanted.items():
            quote = "'" if "'" not in str(value) else '"'
            filters.append(f"tags.`{name}` = {quote}{value}{quote}")
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=" and ".join(filters),
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return self._reopen(found[0].info.run_id) if found else None

    def _reopen(self, run_id: str) -> RunState | None:
        """The state of ``run_id`` when it still exists, active, in this experiment; else None."""
        try:
            run = self.client.get_run(run_id)
        except Exception as err:
            if is_outage(err):
                raise
            return None
        if run.info.experiment_id != self.experiment_id or run.info.lifecycle_stage != "active":
            return None
        try:
            tables = json.loads(run.data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
        except ValueError:
            tables = []
        return RunState(run_id, dict(run.data.params), tables if isinstance(tables, list) else [], run.info.status)

    def _resume(self, state: RunState, tags: dict[str, str]) -> None:
        if state.status != "RUNNING":
            self.client.update_run(state.run_id, status="RUNNING")
            state.status = "RUNNING"
        self._set_tags(state.run_id, tags)

    def _create(self, op: Any, request: RunRequest, tags: dict[str, str]) -> str:
        if op.tried:  # the last attempt may have reached the server before it went away
            found = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{TOKEN_TAG}` = '{request.token}'", max_results=1
            )
            if found:
                return found[0].info.run_id
        op.tried = True
        tags[TOKEN_TAG] = request.token
        tags[RUN_KEY_TAG] = op.run_key or ""
        return self.client.create_run(self.experiment_id, run_name=request.name, tags=tags).info.run_id

    def _set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        for part in chunks(list(tags.items()), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in part])

    def _finish(self, call: Call) -> None:
        state = self._state(call.run_key)
        data = call.ops[0].data
        assert isinstance(data, FinishData)
        # A run created late (after an outage) ends no earlier than it started.
        end_ms = max(data.end_time_ms, state.start_ms)
        self.client.set_terminated(state.run_id, status=data.status, end_time=end_ms)
        state.status = data.status

    def _close_stale(self, call: Call) -> None:
        """Runs of the sweep still RUNNING that this tracker does not hold: a killed driver's, set KILLED."""
        from mlflow.entities import ViewType

        data = call.ops[0].data
        value, store = (str(data[0]), data[1]) if isinstance(data, tuple) else (str(data), None)
        quote = "'" if "'" not in value else '"'
        query = f"tags.`{SWEEP_TAG}` = {quote}{value}{quote} and attributes.status = 'RUNNING'"
        mine = {state.run_id for state in self.runs.values()}
        token: str | None = None
        stale: list[str] = []
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=query,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000,
                page_token=token,
            )
            stale.extend(
                run.info.run_id
                for run in page
                if run.info.run_id not in mine and (store is None or run.data.tags.get(STORE_TAG) in (store, None))
            )
            token = page.token
            if not token:
                break
        for run_id in stale:
            self.client.set_terminated(run_id, status="KILLED")

    # -- values ---------------------------------------------------------------------------------

    def _batch(self, call: Call) -> None:
        """Metrics, new params and tags of one run in one ``log_batch`` request."""
        from mlflow.entities import Metric, Param, RunTag

        state = self._state(call.run_key)
        params = self._new_params(call.run_key or "", state, call.params)
        if not (call.metrics or params or call.tags):
            return
        self.client.log_batch(
            state.run_id,
            metrics=[Metric(key, value, stamp, step) for key, value, stamp, step in call.metrics],
            params=[Param(key, value) for key, value in params.items()],
            tags=[RunTag(key, value) for key, value in call.tags.items()],
        )
        state.params.update(params)

    def _new_params(self, run_key: str, state: RunState, params: list[tuple[str, str]]) -> dict[str, str]:
        """Params the run does not hold yet; a changed value is refused (MLflow keeps the first)."""
        new: dict[str, str] = {}
        for key, value in params:
            kept = new.get(key, state.params.get(key))
            if kept is None:
                new[key] = value
            elif kept != value:
                self.param_changed(run_key, key, kept, value)
        return new

    # -- files ----------------------------------------------------------------------------------

    def _table(self, call: Call) -> None:
        """Upload the table (replacing an earlier copy) and list it in ``mlflow.loggedArtifacts``."""
        state = self._state(call.run_key)
        data = call.ops[0].data
        assert isinstance(data, TableData)
        self._upload(state.run_id, data.artifact_file, data.content)
        entry = table_entry(data.artifact_file)
        if entry not in state.tables:
            tables = [*state.tables, entry]
            self.client.set_tag(state.run_id, LOGGED_ARTIFACTS_TAG, json.dumps(tables))
            state.tables = tables

    def _upload(self, run_id: str, artifact_file: str, content: bytes) -> None:
        """Upload ``content`` as ``artifact_file`` of the run (an earlier copy is replaced)."""
        path = posixpath.normpath(artifact_file).lstrip("/")
        folder = posixpath.dirname(path) or None
        with tempfile.TemporaryDirectory(prefix="qtrust-mlflow-") as tmp:
            local = Path(tmp) / posixpath.basename(path)
            local.write_bytes(content)
            self.client.log_artifact(run_id, str(local), folder)

    def _view(self, call: Call) -> None:
        """Store a view of the runs table as the experiment tag the UI's ``viewStateShareKey`` reads."""
        import json

        data = call.ops[0].data
        assert isinstance(data, ViewData)
        state = dict(data.state)
        if data.expand_run_key and data.expand_run_key in self.runs:
            state["runsExpanded"] = {self.runs[data.expand_run_key].run_id: True}
        self.client.set_experiment_tag(self.experiment_id, f"{SHARED_VIEW_TAG_PREFIX}{data.key}", json.dumps(state))

    def _file(self, call: Call) -> None:
        data = call.ops[0].data
        assert isinstance(data, FileData)
        self._upload(self._state(call.run_key).run_id, data.artifact_file, data.content)

    def _artifact(self, call: Call) -> None:
        state = self._state(call.run_key)
        data = call.ops[0].data
        assert isinstance(data, ArtifactData)
        self.client.log_artifact(state.run_id, data.copy, data.artifact_path)
        _remove_copy(data.copy)

    def _dataset(self, call: Call) -> None:
        """Record the items a run was evaluated on as an MLflow dataset input."""
        import warnings

        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        state = self._state(call.run_key)
        data = call.ops[0].data
        assert isinstance(data, DatasetData)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = mlflow.data.from_pandas(data.frame, source=data.source, name=data.name, digest=data.digest[:36])
            entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "eval")])
        self.client.log_inputs(state.run_id, datasets=[entity])


def _remove_copy(copy: str) -> None:
    """Delete a private artifact copy and its folder (made by LiveTracker.log_artifact)."""
    try:
        os.unlink(copy)
        os.rmdir(os.path.dirname(copy))
    except OSError:
        pass
