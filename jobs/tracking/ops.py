"""Queued tracking operations, and how a queue of them becomes as few MLflow calls as possible.

Metrics, params and tags of one run are merged into ``log_batch`` calls within MLflow's limits;
every other operation is a call of its own. The calls of one run keep the order of its operations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# MLflow's limits for one log_batch request (mlflow/utils/validation.py).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000


class Kind(str, Enum):
    """What an operation does."""

    RUN = "run"  # create or reopen a run
    METRICS = "metrics"
    PARAMS = "params"
    TAGS = "tags"
    TABLE = "table"
    ARTIFACT = "artifact"
    FILE = "file"  # bytes made by the caller (a rendered figure, a report), uploaded as one artifact
    DATASET = "dataset"
    FINISH = "finish"
    STALE = "stale"  # close runs a killed driver left RUNNING
    VIEW = "view"  # a shared view of the experiment's runs table (an experiment tag the UI reads)
    BATCH = "batch"  # a call only: merged metrics, params and tags


BATCHED = frozenset({Kind.METRICS, Kind.PARAMS, Kind.TAGS})

#: One metric value: key, value, timestamp (ms), step.
MetricPoint = tuple[str, float, int, int]


@dataclass(frozen=True)
class RunRequest:
    """Payload of a RUN operation."""

    name: str
    tags: dict[str, str]
    parent_key: str | None
    token: str  # a unique tag value that finds the run again if its creation's answer was lost


@dataclass(frozen=True)
class TableData:
    """Payload of a TABLE operation: the file, serialized when it was logged."""

    artifact_file: str
    content: bytes


@dataclass(frozen=True)
class ArtifactData:
    """Payload of an ARTIFACT operation: a private copy of the file made when it was logged."""

    copy: str
    artifact_path: str | None


@dataclass(frozen=True)
class FileData:
    """Payload of a FILE operation: the artifact's path in the run and its bytes."""

    artifact_file: str
    content: bytes


@dataclass(frozen=True)
class ViewData:
    """Payload of a VIEW operation: the share key, the view state, and the run whose children it expands."""

    key: str
    state: dict[str, Any]
    expand_run_key: str | None


@dataclass(frozen=True)
class DatasetData:
    """Payload of a DATASET operation."""

    frame: Any  # a private copy of the pandas DataFrame
    name: str
    source: str
    digest: str


@dataclass(frozen=True)
class FinishData:
    """Payload of a FINISH operation."""

    status: str
    end_time_ms: int


@dataclass(eq=False)
class Op:
    """One queued operation. ``done`` once sent or dropped; ``strikes`` counts outages it caused
    right after the server answered a probe (a request the server chokes on, not an outage)."""

    kind: Kind
    run_key: str | None
    data: Any
    done: bool = False
    strikes: int = 0
    tried: bool = False  # a RUN that failed with an outage: look for its token before creating again

    def size(self) -> tuple[int, int, int]:
        """Numbers of metrics, params and tags it adds to a batch."""
        if self.kind is Kind.METRICS:
            return len(self.data), 0, 0
        if self.kind is Kind.PARAMS:
            return 0, len(self.data), 0
        if self.kind is Kind.TAGS:
            return 0, 0, len(self.data)
        return 0, 0, 0


@dataclass(eq=False)
class Call:
    """One MLflow request (or a short fixed sequence of them) covering one or more operations."""

    kind: Kind
    run_key: str | None
    ops: list[Op]
    metrics: list[MetricPoint] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)  # in logging order; duplicates resolved when sent
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def single(cls, op: Op) -> Call:
        """The call for one operation."""
        if op.kind in BATCHED:
            call = cls(Kind.BATCH, op.run_key, [])
            call.add(op)
            return call
        return cls(op.kind, op.run_key, [op])

    def fits(self, op: Op) -> bool:
        """Whether ``op`` can join this batch within MLflow's limits."""
        metrics, params, tags = op.size()
        new_tags = (
            len(self.tags) + sum(1 for key in op.data if key not in self.tags)
            if op.kind is Kind.TAGS
            else len(self.tags)
        )
        total_metrics = len(self.metrics) + metrics
        total_params = len(self.params) + params
        return (
            total_metrics <= MAX_METRICS_PER_BATCH
            and total_params <= MAX_PARAMS_TAGS_PER_BATCH
            and new_tags <= MAX_PARAMS_TAGS_PER_BATCH
            and total_metrics + total_params + new_tags <= MAX_ENTITIES_PER_BATCH
        )

    def add(self, op: Op) -> None:
        """Merge a METRICS, PARAMS or TAGS operation into this batch (later tags win)."""
        if op.kind is Kind.METRICS:
            self.metrics.extend(op.data)
        elif op.kind is Kind.PARAMS:
            self.params.extend(op.data)
        else:
            self.tags.update(op.data)
        self.ops.append(op)

    def split(self) -> list[Call]:
        """One call per operation (to find the one a failed batch should drop)."""
        return [Call.single(op) for op in self.ops]


def plan(buffer: list[Op]) -> list[Call]:
    """The calls that send ``buffer`` (operations not yet done, in logging order).

    A batch is placed where its first operation was queued and collects the run's later metrics,
    params and tags until another kind of operation of that run (or a full batch) closes it.
    """
    calls: list[Call] = []
    open_batches: dict[str | None, Call] = {}
    for op in buffer:
        if op.done:
            continue
        if op.kind not in BATCHED:
            open_batches.pop(op.run_key, None)
            calls.append(Call.single(op))
            continue
        batch = open_batches.get(op.run_key)
        if batch is None or not batch.fits(op):
            batch = Call(Kind.BATCH, op.run_key, [])
            open_batches[op.run_key] = batch
            calls.append(batch)
        batch.add(op)
    return calls


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` cut into lists of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]
