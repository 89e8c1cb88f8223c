"""Pools: R replicas of one worker kind (a variant's generation workers or a judge's workers), each a
Ray actor on its own placement-group bundle, and the tasks submitted to them."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PoolConfig:
    """A pool's shape and its scheduling rules."""

    name: str
    make_group: Callable[[], Any]
    """Creates the pool's placement group (R bundles); called when the pool first has work."""
    make_actor: Callable[[Any, int], Any]
    """Starts one replica actor on bundle ``i`` of the group (the actor offers load/ping/run_shard/close)."""
    replicas: int = 1
    kind: str = "generate"
    max_in_flight: int = 2
    max_retries: int = 2
    backoff_s: float = 1.0
    shard_timeout_s: float | None = None
    load_timeout_s: float | None = None
    max_replacements: int = 3
    run_method: str = "run_shard"
    commit_batch: Callable[[list[tuple[Task, Any, dict[str, Any]]]], list[Any]] | None = None
    """Stores many results at once (group commit, in a commit thread): gets ``(task, value, replica)``
    triples, returns one outcome per task (what ``on_result`` would return, or an exception for a task
    that could not be stored); raising fails every task of the batch. Results that arrive while a
    batch is being stored wait for the next one, so batches grow with the rate of results and a
    slow store is written less often, not later. Without it each task's ``on_result`` runs alone."""
    max_batch: int = 256
    parkable: bool = False
    """An open pool with no work gives its room back while another pool waits for room (it is started
    again when work comes): for pools fed a round at a time (an adaptive sweep's variants)."""
    start_early: bool = False
    """Reserve the group and load the replicas before the first task comes (a later stage whose model
    load should overlap the earlier stage's work); released like any pool once closed and drained."""


@dataclass
class Task:
    """One unit of work for a pool (a shard)."""

    id: str
    payload: Any
    size: int = 1
    on_result: Callable[[Task, Any, dict[str, Any]], Any] | None = None
    """Stores a result (runs in a commit thread; raising counts as a failed attempt)."""
    on_done: Callable[[Task, Any], None] | None = None
    """After a successful commit, on the scheduling loop (may submit more work); gets on_result's value."""
    on_failed: Callable[[Task, str], None] | None = None
    """After the last attempt failed, on the scheduling loop."""
    subject: Any = None
    """What the task is about, for whoever stores its result (a generation shard); not sent anywhere."""
    attempts: int = 0
    unavailable: int = 0
    not_before: float = 0.0


@dataclass
class Replica:
    index: int
    actor: Any = None
    state: str = "waiting"  # waiting | loading | ready | checking | dead | released
    in_flight: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    started: float = 0.0
    items_done: int = 0
    replacements: int = 0
    pings: int = 0

    def describe(self) -> dict[str, Any]:
        placement = self.info.get("placement", {}) if self.info else {}
        return {
            "index": self.index,
            "state": self.state,
            "pid": placement.get("pid", self.pid),
            "host": placement.get("host"),
            "node_id": placement.get("node_id"),
            "node_ip": placement.get("node_ip"),
            "gpu_ids": placement.get("gpu_ids", []),
            "items_done": self.items_done,
            "replacements": self.replacements,
        }


@dataclass
class Pool:
    config: PoolConfig
    queue: deque[Task] = field(default_factory=deque)
    replicas: list[Replica] = field(default_factory=list)
    group: Any = None
    state: str = "idle"  # idle | waiting | running | released | failed
    closed: bool = False
    replacements: int = 0
    failed_reason: str | None = None
    pending: int = 0
    """Tasks of this pool not finished yet (queued, delayed, running or committing)."""
    items_done: int = 0
    first_ready: float | None = None
    backlog: list[tuple[Replica, Task, Any]] = field(default_factory=list)
    """Results waiting for the pool's next group commit."""
    storing: bool = False
    idle_since: float | None = None
    """When a running, open pool last ran out of work (for parking)."""

    @property
    def name(self) -> str:
        return self.config.name
