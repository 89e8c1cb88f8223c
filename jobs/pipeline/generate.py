"""The generation stage: one pool per variant, fed with shards of the items that are missing."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from jobs.pipeline.pools import PoolConfig, Task
from jobs.plan.build import Plan, Shard, Variant
from jobs.store.records import result_rows
from jobs.store.shards import IndexWriter, write_groups
from jobs.store.sweep import SweepStore


def pool_name(variant: str) -> str:
    return f"generate:{variant}"


def worker_resources(variant: Variant, cluster_cpus: float | None = None):  # -> WorkerResources
    """The bundle of one replica of ``variant``'s pool."""
    from cluster.runtime import WorkerResources

    res = variant.resources
    return WorkerResources(
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus,
        memory=res.memory,  # type: ignore[arg-type]
        custom=dict(res.custom),
        max_restarts=res.max_restarts,
    )


def variant_pool(
    variant: Variant, cache_dir: str | None, commit_batch: Callable[..., list[Any]] | None = None
) -> PoolConfig:
    """The pool of ``variant``'s generation workers (placement group of R bundles, one actor each)."""
    from cluster.runtime import create_pool_group, start_actor
    from cluster.variants.worker import VariantWorker

    res = variant.resources
    resources = worker_resources(variant)
    config = {**variant.worker_config(), "num_gpus": resources.num_gpus}
    name = pool_name(variant.name)

    def make_group() -> Any:
        return create_pool_group(variant.name, resources, res.replicas, res.placement)

    def make_actor(group: Any, index: int) -> Any:
        return start_actor(VariantWorker, (config, cache_dir, resources.torch_threads), resources, group, index)

    return PoolConfig(
        name=name,
        make_group=make_group,
        make_actor=make_actor,
        replicas=res.replicas,
        kind="generate",
        max_in_flight=res.max_in_flight,
        max_retries=res.max_retries,
        backoff_s=res.retry_backoff_s,
        shard_timeout_s=res.shard_timeout_s,
        load_timeout_s=res.load_timeout_s,
        max_replacements=res.max_replacements,
        commit_batch=commit_batch,
    )


def shard_payload(plan: Plan, shard: Shard) -> dict[str, Any]:
    """What a worker needs to answer one shard (request ids are the item ids, unique in a shard)."""
    run = plan.benchmarks[shard.benchmark]
    return {
        "shard": shard.id,
        "task": run.benchmark.task,
        "requests": [
            {"id": item.id, "messages": item.messages, "continuations": item.choices or []} for item in shard.items
        ],
        "max_new_tokens": run.max_new_tokens,
        "temperature": plan.spec.generation.temperature,
        "batch_size": plan.spec.generation.batch_size,
    }


class Committer:
    """Stores generation shards (in the scheduler's commit threads) and keeps what it stored."""

    def __init__(self, store: SweepStore, response_cache: Any | None = None, context_chars: int = 24):
        self.store = store
        self.cache = response_cache
        self.context_chars = context_chars
        self._lock = threading.Lock()
        self.tables: list[Any] = []
        self.index = IndexWriter(store.generations)
        self.cache_failures = 0

    def task(
        self,
        plan: Plan,
        shard: Shard,
        on_done: Callable[[Task, Any], None] | None = None,
        on_failed: Callable[[Task, str], None] | None = None,
    ) -> Task:
        def on_result(task: Task, result: dict[str, Any], replica: dict[str, Any]) -> dict[str, Any]:
            (outcome,) = self.commit_batch([(task, result, replica)])
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        task = Task(
            id=shard.id,
            payload=shard_payload(plan, shard),
            size=len(shard.items),
            on_result=on_result,
            on_done=on_done,
            on_failed=on_failed,
            subject=shard,
        )
        return task

    def commit_batch(self, batch: list[tuple[Task, dict[str, Any], dict[str, Any]]]) -> list[Any]:
        """Group commit: the shards of ``batch`` stored together, one file per benchmark (see ``PoolConfig.commit_batch``).

        Each shard is still all-or-nothing: its rows land in one atomically written file or not at all.
        """
        outcomes: list[Any] = [None] * len(batch)
        groups: dict[str, list[tuple[int, list[dict[str, Any]]]]] = {}
        for position, (task, result, replica) in enumerate(batch):
            shard: Shard = task.subject
            try:
                rows = result_rows(
                    shard.items, shard.keys, result, attempt=task.attempts, worker=replica, now=time.time()
                )
            except Exception as err:
                outcomes[position] = err
                continue
            groups.setdefault(f"variant={shard.variant}/benchmark={shard.benchmark}", []).append((position, rows))
            outcomes[position] = {
                "rows": rows,
                "errors": sum(1 for r in rows if r["error"]),
                "engine": result.get("engine"),
                "loads": result.get("loads"),
            }
        tables = write_groups(self.store.generations, self.index, groups, outcomes)
        with self._lock:
            self.tables.extend(tables)
        if self.cache is not None:
            for table in tables:
                self._publish(table)
        return outcomes

    def _publish(self, table: Any) -> None:
        import pyarrow.compute as pc

        try:
            contexts = pc.unique(pc.utf8_slice_codeunits(table["item_key"], 0, self.context_chars)).to_pylist()
            for context in contexts:
                mask = pc.starts_with(table["item_key"], context)
                part = table.filter(pc.and_(mask, pc.is_null(table["error"])))
                if part.num_rows:
                    self.cache.publish(context, part)
        except Exception:
            self.cache_failures += 1

    def flush(self) -> None:
        """Write the index segment of the shards committed since the last one (at the end of a run)."""
        self.index.flush()

    def committed(self):  # -> pandas.DataFrame
        """Every record committed by this run (not deduplicated)."""
        import pyarrow as pa

        with self._lock:
            tables = list(self.tables)
        if not tables:
            return None
        return pa.concat_tables(tables).to_pandas()


def default_cache_dir(option: str | os.PathLike | None) -> str | None:
    return str(option) if option else os.environ.get("QTRUST_CACHE_DIR")
