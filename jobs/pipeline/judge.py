"""The judge stage: one pool per judge, fed as generation shards commit.

When a generation shard commits, the answers of its benchmark's judges that are not stored yet
become judge tasks (``JudgeShard``) on the judges' pools, so judging overlaps generation and a
variant never waits for its judge. At the start of a run, stored answers that lack a judgment are
queued the same way (a resumed sweep, or ``qtrust judge`` adding a judge: no generation at all).

A judge task's result is committed like a generation shard — atomically, one Parquet file per
(judge, variant, benchmark) and batch under ``judgments/judge=<j>/variant=<v>/benchmark=<b>/`` — with
one record per judged answer keyed by its judgment key (see :mod:`jobs.plan.judges`). A judgment whose
text cannot be read is the label ``error`` with the raw text kept; a call that failed for good (an
endpoint still failing after its retries) is an error record, judged again by the next run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.pipeline.pools import PoolConfig, Task
from jobs.plan.build import Plan
from jobs.plan.judges import PlannedJudge, judgment_key
from jobs.store.shards import IndexWriter, write_groups
from jobs.store.sweep import SweepStore
from trust.judges.verdicts import JUDGE_ERROR


def judge_pool_name(judge: str) -> str:
    return f"judge:{judge}"


@dataclass
class JudgeShard:
    """Answers of one variant on one benchmark judged together by one judge (committed together)."""

    judge: str
    variant: str
    benchmark: str
    index: int
    entries: list[tuple[str, str, str]]
    """(judgment key, item key, item id) of each judged answer."""

    @property
    def id(self) -> str:
        return f"judge={self.judge}/{self.variant}/{self.benchmark}/{self.index:05d}"


class JudgeStage:
    """Builds judge tasks from answers, stores judgments, keeps what it stored (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
        store: SweepStore,
        data_dir: Path,
        stored: set[str],
        on_done: Callable[[JudgeShard, dict[str, Any]], None] | None = None,
        on_failed: Callable[[JudgeShard, str], None] | None = None,
    ):
        self.plan = plan
        self.store = store
        self.data_dir = Path(data_dir)
        self.stored = stored
        self.on_done = on_done
        self.on_failed = on_failed
        self._submitted: set[str] = set()
        self._counters: dict[tuple[str, str, str], int] = {}
        self._items = {name: {it.id: it for it in run.items} for name, run in plan.benchmarks.items()}
        self._lock = threading.Lock()
        self.tables: list[Any] = []
        self.index = IndexWriter(store.judgments)
        self.submitted_answers = 0
        self.start_early = True
        """Judge pools load while the first answers are generated (set False to start them on their first task)."""

    @property
    def judges(self) -> dict[str, PlannedJudge]:
        return self.plan.judges

    def judges_of(self, bench: str) -> list[PlannedJudge]:
        return [self.judges[name] for name in self.plan.benchmarks[bench].spec.judges]

    # -- pools ---------------------------------------------------------------------------------
    def pools(self, cache_dir: str | None) -> list[PoolConfig]:
        return [self._pool(judge, cache_dir) for judge in self.judges.values()]

    def _pool(self, judge: PlannedJudge, cache_dir: str | None) -> PoolConfig:
        from cluster.runtime import WorkerResources, create_pool_group, start_actor

        res = judge.resources
        resources = WorkerResources(
            num_cpus=res.num_cpus,
            num_gpus=res.num_gpus,
            memory=res.memory,  # type: ignore[arg-type]
            custom=dict(res.custom),
            max_restarts=res.max_restarts,
        )
        config = judge.worker_config()
        actor_class = judge.kind.worker_class()
        extra = judge.worker_args()  # an endpoint's API key, as a redacted Secret

        def make_group() -> Any:
            return create_pool_group(f"judge-{judge.name}", resources, res.replicas, res.placement)

        def make_actor(group: Any, index: int) -> Any:
            return start_actor(
                actor_class, (config, cache_dir, resources.torch_threads, *extra), resources, group, index
            )

        return PoolConfig(
            name=judge_pool_name(judge.name),
            make_group=make_group,
            make_actor=make_actor,
            replicas=res.replicas,
            kind="judge",
            max_in_flight=res.max_in_flight,
            max_retries=res.max_retries,
            backoff_s=res.retry_backoff_s,
            shard_timeout_s=res.shard_timeout_s,
            load_timeout_s=res.load_timeout_s,
            max_replacements=res.max_replacements,
            commit_batch=self.commit_batch,
            start_early=self.start_early,
        )

    def worker_resources(self, judge: PlannedJudge) -> dict[str, float]:
        from cluster.runtime import WorkerResources

        res = judge.resources
        return WorkerResources(
            num_cpus=res.num_cpus,
            num_gpus=res.num_gpus,
            memory=res.memory,  # type: ignore[arg-type]
            custom=dict(res.custom),
        ).bundle()

    # -- tasks ---------------------------------------------------------------------------------
    def tasks_for(self, variant: str, bench: str, answers: list[tuple[str, str, str | None]]) -> list[tuple[str, Task]]:
        """Judge tasks for answers ``(item key, item id, output)`` of ``variant`` on ``bench`` not judged yet."""
        out: list[tuple[str, Task]] = []
        items = self._items[bench]
        for judge in self.judges_of(bench):
            identity = judge.identity(bench)
            pending: list[tuple[str, str, str, dict[str, Any]]] = []
            for item_key, item_id, output in answers:
                item = items.get(item_id)
                if item is None:
                    continue
                request = judge.request(bench, item, output, self.data_dir)
                key = judgment_key(item_key, identity, request)
                with self._lock:
                    if key in self.stored or key in self._submitted:
                        continue
                    self._submitted.add(key)
                pending.append((key, item_key, item_id, request))
            size = judge.spec.shard_size or self.plan.spec.shard_size
            for start in range(0, len(pending), size):
                out.append(
                    (judge_pool_name(judge.name), self._task(judge, variant, bench, pending[start : start + size]))
                )
        return out

    def _task(
        self, judge: PlannedJudge, variant: str, bench: str, chunk: list[tuple[str, str, str, dict[str, Any]]]
    ) -> Task:
        counter = (judge.name, variant, bench)
        with self._lock:
            index = self._counters[counter] = self._counters.get(counter, -1) + 1
            self.submitted_answers += len(chunk)
        shard = JudgeShard(judge.name, variant, bench, index, [(k, ik, iid) for k, ik, iid, _r in chunk])
        payload = {
            "shard": shard.id,
            "task": judge.task,
            "requests": [{"id": key, **request} for key, _ik, _iid, request in chunk],
            "max_new_tokens": judge.max_new_tokens(bench),
            "temperature": 0.0,
            "batch_size": judge.spec.batch_size,
        }
        return Task(
            id=shard.id, payload=payload, size=len(chunk), on_done=self._done, on_failed=self._failed, subject=shard
        )

    def _done(self, task: Task, value: Any) -> None:
        if self.on_done is not None:
            self.on_done(task.subject, value)

    def _failed(self, task: Task, error: str) -> None:
        if self.on_failed is not None:
            self.on_failed(task.subject, error)

    def missing_secrets(self) -> list[str]:
        """Endpoint judges whose API key variable is not set in this (the driver's) environment."""
        out = []
        for judge in self.judges.values():
            endpoint = judge.spec.endpoint
            if endpoint is not None and endpoint.api_key_env and not os.environ.get(endpoint.api_key_env):
                out.append(
                    f"judges.{judge.name}.endpoint.api_key_env: the environment variable {endpoint.api_key_env} "
                    "is not set; export it with the endpoint's API key before running"
                )
        return out

    def backlog(self, records: pd.DataFrame) -> list[tuple[str, Task]]:
        """Judge tasks for every stored answer of the sweep that lacks a judgment (resume, ``qtrust judge``)."""
        if records.empty or not self.judges:
            return []
        ok = records[records["error"].isna()]
        outputs = dict(zip(ok["item_key"].to_numpy(dtype=object), ok["output"].to_numpy(dtype=object)))
        tasks: list[tuple[str, Task]] = []
        for (variant, bench), keys in self.plan.keys.items():
            if not self.plan.benchmarks[bench].spec.judges:
                continue
            items = self.plan.benchmarks[bench].items
            answers = [(k, it.id, outputs[k]) for k, it in zip(keys, items) if k in outputs]
            tasks.extend(self.tasks_for(variant, bench, answers))
        return tasks

    # -- commits -------------------------------------------------------------------------------
    def commit_batch(self, batch: list[tuple[Task, dict[str, Any], dict[str, Any]]]) -> list[Any]:
        """Group commit of judge results: one file per (judge, variant, benchmark) of the batch."""
        outcomes: list[Any] = [None] * len(batch)
        groups: dict[str, list[tuple[int, list[dict[str, Any]]]]] = {}
        now = time.time()
        for position, (task, result, replica) in enumerate(batch):
            shard: JudgeShard = task.subject
            try:
                rows = self._rows(shard, result, task.attempts, replica, now)
            except Exception as err:
                outcomes[position] = err
                continue
            relative = f"judge={shard.judge}/variant={shard.variant}/benchmark={shard.benchmark}"
            groups.setdefault(relative, []).append((position, rows))
            outcomes[position] = {
                "rows": rows,
                "errors": sum(1 for r in rows if r["error"]),
                "unreadable": sum(1 for r in rows if r["label"] == JUDGE_ERROR and not r["error"]),
            }
        tables = write_groups(self.store.judgments, self.index, groups, outcomes)
        with self._lock:
            self.tables.extend(tables)
        return outcomes

    def _rows(
        self, shard: JudgeShard, result: dict[str, Any], attempt: int, worker: dict[str, Any], now: float
    ) -> list[dict[str, Any]]:
        judge = self.judges[shard.judge]
        identity = judge.identity(shard.benchmark)
        by_id = {r["id"]: r for r in result["results"]}
        worker_text = json.dumps({k: worker.get(k) for k in ("node_ip", "node_id", "pid", "gpu_ids")}, sort_keys=True)
        rows = []
        for key, item_key, item_id in shard.entries:
            res = by_id.get(key) or {"error": "the judge returned no result for this answer"}
            error = res.get("error")
            raw, verdict = judge.read(shard.benchmark, res) if not error else (res.get("text"), None)
            rows.append(
                {
                    "judgment_key": key,
                    "item_key": item_key,
                    "item_id": item_id,
                    "judge": shard.judge,
                    "judge_identity": identity,
                    "label": verdict.label if verdict is not None else JUDGE_ERROR,
                    "reason": verdict.reason if verdict is not None else None,
                    "category": verdict.category if verdict is not None else None,
                    "raw": raw,
                    "problem": verdict.problem if verdict is not None else error,
                    "prompt_tokens": int(res.get("prompt_tokens") or 0),
                    "completion_tokens": int(res.get("completion_tokens") or 0),
                    "latency_s": float(res.get("latency_s") or 0.0),
                    "error": error,
                    "attempt": attempt,
                    "worker": worker_text,
                    "committed_at": now,
                }
            )
        return rows

    def flush(self) -> None:
        self.index.flush()

    def committed(self) -> pd.DataFrame | None:
        """Every judgment committed by this run (not deduplicated)."""
        import pyarrow as pa

        with self._lock:
            tables = list(self.tables)
        if not tables:
            return None
        return pa.concat_tables(tables).to_pandas()
