"""What a running sweep knows about itself: progress per variant × benchmark, replicas, events.

:class:`SweepState` receives the scheduler's events (it is the pipeline's ``PoolEvents``), prints
what users must see (retries, dead workers, replacements) on the console, feeds live tracking,
and renders the manifest that ``qtrust status`` reads while the sweep runs.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.pipeline.pools import Task
from jobs.pipeline.replica_weights import ReplicaWeights, loaded_digest
from jobs.plan.build import Plan, Shard


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Counts:
    planned: int = 0
    done: int = 0
    failed: int = 0
    shards_done: int = 0

    @property
    def pending(self) -> int:
        return max(0, self.planned - self.done - self.failed)


@dataclass
class SweepState:
    """Progress and health of one run of a sweep (see the module docstring)."""

    plan: Plan
    say: Callable[[str], None] = print
    counts: dict[tuple[str, str], Counts] = field(default_factory=dict)
    events: deque = field(default_factory=lambda: deque(maxlen=50))
    replicas: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    worker_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_shards: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    started_iso: str = field(default_factory=now_iso)
    computed_items: int = 0
    stored_items: int = 0
    on_progress: Callable[[str, str, Counts], None] | None = None
    on_ready: Callable[[str, dict[str, Any]], None] | None = None
    progress_bar: Any = None
    judges: dict[str, dict[str, int]] = field(default_factory=dict)
    """Judge name -> answers submitted, judged, unreadable (label error) and failed by this run."""
    judge_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    replica_weights: ReplicaWeights = field(default_factory=ReplicaWeights)
    """The weights digest each replica loaded (replicas of one variant that disagree are warned about)."""
    judged_answers: int = 0
    first_judgment_at: float | None = None
    """Wall-clock time of this run's first committed judgment (for the pipelining timeline)."""

    def start(self, stored: set[str], shards: list[Shard]) -> None:
        """Counts before any work: what is planned and what is already stored."""
        for (variant, bench), keys in self.plan.keys.items():
            done = sum(1 for k in keys if k in stored)
            self.counts[(variant, bench)] = Counts(planned=len(keys), done=done)
            self.stored_items += done
        self._shared = _shared_counts(self.plan, shards)

    # -- the scheduler's events ----------------------------------------------------------------
    def replica_state(self, pool: str, index: int, state: str, info: dict[str, Any]) -> None:
        entry = self.replicas.setdefault(pool, {}).setdefault(index, {"index": index})
        entry.update({k: v for k, v in info.items() if k != "load"})
        entry["state"] = state
        if pool.startswith("judge:"):
            if state == "ready" and "load" in info:
                self.judge_info.setdefault(pool.split(":", 1)[1], info["load"])
            return
        if state == "ready" and "load" in info:
            variant = pool.split(":", 1)[-1]
            digest = loaded_digest(info["load"])
            if digest is not None:
                entry["loaded_sha256"] = digest
            warning = self.replica_weights.observe(variant, index, info["load"])
            if warning is not None:
                self.message("replica_weights_differ", warning)
            self.worker_info.setdefault(variant, info["load"])
            if self.progress_bar is not None:
                self.progress_bar.variant_started(variant, info["load"])
            if self.on_ready is not None:
                self.on_ready(variant, info["load"])

    def task_done(self, pool: str, task: Task, replica: int) -> None:
        return None  # counted in :meth:`shard_committed`, which knows the shard and its errors

    def shard_committed(self, shard: Shard, errors: int) -> None:
        self.computed_items += len(shard.items)
        self._advance(shard.variant, shard.benchmark, len(shard.items) - errors, errors)
        for bench, n in self._shared.get(shard.id, {}).items():
            self._advance(shard.variant, bench, n, 0)
        if self.progress_bar is not None:
            self.progress_bar.shard_done(shard.variant, len(shard.items))

    def shard_failed(self, shard: Shard, error: str) -> None:
        self.failed_shards[shard.id] = error
        self._advance(shard.variant, shard.benchmark, 0, len(shard.items))
        for bench, n in self._shared.get(shard.id, {}).items():
            self._advance(shard.variant, bench, 0, n)
        if self.progress_bar is not None:
            self.progress_bar.shard_failed(shard.variant, len(shard.items), error)

    def _advance(self, variant: str, bench: str, done: int, failed: int) -> None:
        counts = self.counts[(variant, bench)]
        counts.done += done
        counts.failed += failed
        counts.shards_done += 1
        if self.on_progress is not None:
            self.on_progress(variant, bench, counts)

    # -- judges ----------------------------------------------------------------------------------
    def _judge(self, name: str) -> dict[str, int]:
        return self.judges.setdefault(name, {"submitted": 0, "judged": 0, "unreadable": 0, "failed": 0})

    def judge_submitted(self, shard: Any) -> None:
        self._judge(shard.judge)["submitted"] += len(shard.entries)
        if self.progress_bar is not None:
            self.progress_bar.judges_submitted(len(shard.entries))

    def judge_committed(self, shard: Any, value: dict[str, Any]) -> None:
        counts = self._judge(shard.judge)
        counts["judged"] += len(shard.entries)
        counts["unreadable"] += int(value.get("unreadable", 0))
        counts["failed"] += int(value.get("errors", 0))
        self.judged_answers += len(shard.entries)
        if self.first_judgment_at is None:
            self.first_judgment_at = time.time()
        if self.progress_bar is not None:
            self.progress_bar.judged(len(shard.entries))

    def judge_failed(self, shard: Any, error: str) -> None:
        self._judge(shard.judge)["failed"] += len(shard.entries)
        self.failed_shards[shard.id] = error
        if self.progress_bar is not None:
            self.progress_bar.judged(len(shard.entries))

    def task_retry(self, pool: str, task: Task, error: str, delay_s: float, replica: dict[str, Any]) -> None:
        where = f"replica {replica.get('index')} (pid {replica.get('pid')} on {replica.get('node_ip') or replica.get('host') or '?'})"
        self.message(
            "retry",
            f"{task.id}: attempt {task.attempts} failed on {where}: {error.splitlines()[0][:200]}; retrying in {delay_s:.1f}s",
        )

    def task_failed(self, pool: str, task: Task, error: str) -> None:
        if task.attempts == 0:  # its pool failed before it ran: the pool's message said why, once
            self.events.append({"time": now_iso(), "kind": "shard_failed", "message": f"{task.id}: {error[:200]}"})
            return
        self.message(
            "shard_failed", f"{task.id}: failed after {task.attempts} attempt(s): {error.splitlines()[0][:200]}"
        )

    def message(self, kind: str, text: str) -> None:
        self.events.append({"time": now_iso(), "kind": kind, "message": text})
        self.say(text)

    # -- summaries -----------------------------------------------------------------------------
    def totals(self) -> dict[str, Any]:
        planned = sum(c.planned for c in self.counts.values())
        done = sum(c.done for c in self.counts.values())
        failed = sum(c.failed for c in self.counts.values())
        pending = sum(c.pending for c in self.counts.values())
        elapsed = max(1e-9, time.monotonic() - self.started)
        rate = self.computed_items / elapsed
        return {
            "planned": planned,
            "stored": self.stored_items,
            "done": done,
            "failed": failed,
            "pending": pending,
            "computed": self.computed_items,
            "items_per_s": round(rate, 3),
            "eta_s": round(pending / rate, 1) if rate > 0 and pending else (0.0 if not pending else None),
            "elapsed_s": round(elapsed, 1),
        }

    def manifest(self, *, state: str, pools: dict[str, dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
        """The manifest ``qtrust status`` reads (see jobs/status/ for its reader)."""
        progress: dict[str, dict[str, dict[str, int]]] = {}
        for (variant, bench), c in self.counts.items():
            progress.setdefault(variant, {})[bench] = {
                "planned": c.planned,
                "done": c.done,
                "failed": c.failed,
                "pending": c.pending,
            }
        pool_view = {}
        elapsed = time.monotonic()
        for name, pool in pools.items():
            replicas = []
            for r in pool.get("replicas", []):
                merged = {**self.replicas.get(name, {}).get(r["index"], {}), **r}
                replicas.append(merged)
            first = pool.get("first_ready")
            rate = pool.get("items_done", 0) / (elapsed - first) if first and elapsed > first else 0.0
            pool_view[name] = {
                "kind": pool.get("kind"),
                "variant": name.split(":", 1)[-1],
                "state": pool.get("state"),
                "items_per_s": round(rate, 3),
                "replicas": replicas,
            }
        return {
            "schema": 2,
            "sweep": self.plan.spec.name,
            "state": state,
            "started": self.started_iso,
            "updated": now_iso(),
            "driver": {"host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv)[:500]},
            "totals": self.totals(),
            "progress": progress,
            "pools": pool_view,
            "events": list(self.events),
            "failed_shards": dict(self.failed_shards),
            "workers": self.worker_info,
            "judges": {name: dict(counts) for name, counts in self.judges.items()},
            **extra,
        }


def _shared_counts(plan: Plan, shards: list[Shard]) -> dict[str, dict[str, int]]:
    """Shard id -> {benchmark: items it answers beyond its own} (aliases or repeated prompts share keys)."""
    owner: dict[tuple[str, str], Shard] = {}
    for shard in shards:
        for key in shard.keys:
            owner[(shard.variant, key)] = shard
    shared: dict[str, dict[str, int]] = {}
    for (variant, bench), keys in plan.keys.items():
        seen: set[str] = set()
        for key in keys:
            shard = owner.get((variant, key))
            if shard is None:
                continue
            if shard.benchmark != bench or key in seen:
                per = shared.setdefault(shard.id, {})
                per[bench] = per.get(bench, 0) + 1
            seen.add(key)
    return shared
