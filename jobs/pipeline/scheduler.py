"""One scheduler over pools of Ray actors, fed while it runs.

A **pool** is R replicas of one worker kind (a variant's generation workers, a judge's workers),
each an actor on its own bundle of the pool's placement group. Work is a :class:`Task` submitted
to a pool at any time — before :meth:`Scheduler.run` or from a completion callback while it runs,
which is how a later stage hangs on an earlier one. Replicas of a pool pull from its one queue
(data parallel), with at most ``max_in_flight`` tasks each.

What the scheduler owns:

- **Placement**: a pool reserves its placement group only when it has work, and gives it back
  when it is *closed* (no more work will come) and drained, so pools waiting for room start.
- **Parking**: a *parkable* pool (fed a round at a time, as an adaptive sweep's variants are) that is
  open but has had no work for ``park_after_s`` gives its room back while another pool waits for
  room, and is started again when work comes — so pools waiting on each other never hold every slot.
- **Retries**: a failed attempt is retried after ``backoff_s · 2^(attempt-1)``; after
  ``max_retries`` retries the task is recorded as failed and the sweep goes on.
- **Replicas that die**: Ray restarts an actor ``max_restarts`` times; a call that fails because its
  actor died triggers a ``ping``; when the ping fails too, Ray's restarts are spent and the
  scheduler replaces the replica with a fresh actor on the same bundle, up to ``max_replacements``
  per pool, after which the pool's remaining work fails with the reason.
- **Timeouts**: a replica that has not loaded within ``load_timeout_s`` is replaced; a task running
  longer than ``shard_timeout_s`` gets its replica restarted and is retried.
- **Commits**: results are stored by ``on_result`` in a thread pool, off the scheduling loop;
  ``on_done`` then runs on the loop (it may submit more work). A store that takes no more writes
  (disk full, quota spent, read-only: :func:`cluster.storage.space.no_room`) halts the scheduler:
  no task starts any more, the one that could not be stored is left for a resume (not retried, not
  failed) and ``report.halted`` says why.

The loop blocks in ``ray.wait`` until a call finishes or the next deadline; it never spins.
An exception out of the loop (a second Ctrl-C, a stop deadline) kills every replica at once
instead of waiting for them to close.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from cluster.storage.space import describe_no_room, no_room
from jobs.pipeline.events import NullEvents, PoolEvents
from jobs.pipeline.pools import Pool, PoolConfig, Replica, Task
from jobs.store.driver_log import TRACEBACKS

log = logging.getLogger(__name__)

#: After this long without room for a pool's placement group, say so once (the pool keeps waiting).
GROUP_WAIT_NOTICE_S = 60.0


@dataclass
class _Call:
    kind: str  # group | load | ping | run
    pool: Pool
    replica: Replica | None = None
    task: Task | None = None
    started: float = 0.0
    timed_out: bool = False
    noticed: bool = False
    actor: Any = None
    """The actor the call went to: a replica replaced since then makes the call stale."""

    @property
    def stale(self) -> bool:
        return self.replica is not None and self.actor is not None and self.actor is not self.replica.actor


@dataclass
class SchedulerReport:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    not_started: list[str] = field(default_factory=list)
    retried: int = 0
    replaced: int = 0
    worker_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Pool name -> the first replica's load report (engine, quantization, placement)."""
    stopped: bool = False
    halted: str | None = None
    """Why the scheduler stopped on its own: the store takes no more writes (None: it did not)."""


def describe_error(err: BaseException) -> str:
    """One readable line (the cause of a task error, not Ray's wrapper)."""
    if isinstance(err, RayTaskError):
        cause = err.cause if getattr(err, "cause", None) is not None else err
        return f"{type(cause).__name__}: {cause}".strip()[:2000]
    return f"{type(err).__name__}: {err}".strip()[:2000]


class Scheduler:
    """Runs tasks on pools of replicas; see the module docstring."""

    def __init__(
        self,
        events: PoolEvents | None = None,
        *,
        commit_threads: int = 4,
        tick: Callable[[], None] | None = None,
        tick_interval_s: float = 1.0,
        max_wait_s: float = 0.5,
        park_after_s: float = 2.0,
    ):
        self.events = events or NullEvents()
        self.pools: dict[str, Pool] = {}
        self.report = SchedulerReport()
        self._inbox: deque[tuple[str, Task]] = deque()
        self._closing: deque[str] = deque()
        self._lock = threading.Lock()
        self._delayed: list[tuple[float, int, str, Task]] = []
        self._counter = itertools.count()
        self._calls: dict[Any, _Call] = {}
        self._commits: queue.SimpleQueue[tuple[Pool, Replica | None, Any, Future]] = queue.SimpleQueue()
        self._committing = 0
        self._executor = ThreadPoolExecutor(max_workers=commit_threads, thread_name_prefix="qtrust-commit")
        self._releaser = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qtrust-release")
        self._stop = threading.Event()
        self._tick = tick
        self._tick_interval_s = tick_interval_s
        self._last_tick = 0.0
        self._max_wait_s = max_wait_s
        self.park_after_s = park_after_s
        self._retry_pings: list[tuple[float, Callable[[], None]]] = []

    # -- the public surface ----------------------------------------------------------------------
    def add_pool(self, config: PoolConfig) -> None:
        if config.name in self.pools:
            raise ValueError(f"pool {config.name!r} exists already")
        self.pools[config.name] = Pool(config=config)

    def submit(self, pool: str, task: Task) -> None:
        """Queue ``task`` on ``pool``; safe from any thread, before or during :meth:`run`."""
        if pool not in self.pools:
            raise KeyError(f"no pool named {pool!r}")
        with self._lock:
            self._inbox.append((pool, task))

    def close(self, pool: str) -> None:
        """No more work will come to ``pool``: its replicas go once it is drained."""
        with self._lock:
            self._closing.append(pool)

    def withdraw(self, pool: str, unwanted: Callable[[Task], bool]) -> list[Task]:
        """Take back the tasks of ``pool`` not started yet that ``unwanted`` picks (work that is no longer
        needed, e.g. an adaptive comparison's look-ahead once it is decided); returns them.

        Tasks running, committing or waiting for a retry are left alone. Call it on the scheduling loop
        (from an ``on_done`` or ``on_failed`` callback) or before :meth:`run`.
        """
        taken: list[Task] = []
        with self._lock:  # not counted in ``pending`` yet
            kept: deque[tuple[str, Task]] = deque()
            for name, task in self._inbox:
                if name == pool and unwanted(task):
                    taken.append(task)
                else:
                    kept.append((name, task))
            self._inbox = kept
        target = self.pools[pool]
        stay: deque[Task] = deque()
        for task in target.queue:
            if unwanted(task):
                taken.append(task)
                target.pending -= 1
            else:
                stay.append(task)
        target.queue = stay
        return taken

    def request_stop(self) -> None:
        """Stop starting tasks; the ones running finish and commit, then :meth:`run` returns."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def pool_snapshot(self) -> dict[str, dict[str, Any]]:
        """Pools and their replicas, for the manifest and ``qtrust status``."""
        return {
            name: {
                "kind": p.config.kind,
                "state": p.state,
                "replicas": [r.describe() for r in p.replicas],
                "items_done": p.items_done,
                "pending": p.pending,
                "first_ready": p.first_ready,
            }
            for name, p in self.pools.items()
        }

    def run(self) -> SchedulerReport:
        """Run until every submitted task is done or failed (or a stop was requested).

        Anything raised out of the loop (``KeyboardInterrupt`` from a second Ctrl-C or a stop
        deadline) aborts: replicas are killed at once, commits in progress are not waited for.
        """
        aborted = False
        try:
            while True:
                self._drain_inbox()
                now = time.monotonic()
                self._promote_delayed(now)
                self._drain_commits()
                if not self._stop.is_set():
                    self._start_pools()
                    self._dispatch()
                self._check_deadlines(now)
                self._release_idle()
                self._maybe_tick(now)
                if self._finished():
                    break
                self._wait(self._wait_timeout(now))
        except BaseException:
            aborted = True
            self.abort()
            raise
        finally:
            self._finish(aborted)
        return self.report

    # -- queueing --------------------------------------------------------------------------------
    def _drain_inbox(self) -> None:
        with self._lock:
            inbox, self._inbox = self._inbox, deque()
            closing, self._closing = self._closing, deque()
        for name, task in inbox:
            pool = self.pools[name]
            pool.pending += 1
            if pool.state == "failed":
                self._fail_task(pool, task, pool.failed_reason or "the pool failed")
                continue
            if pool.state == "released":
                pool.state = "idle"
                pool.replicas = []
            pool.queue.append(task)
        for name in closing:
            self.pools[name].closed = True

    def _promote_delayed(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _when, _n, name, task = heapq.heappop(self._delayed)
            pool = self.pools[name]
            if pool.state == "failed":
                self._fail_task(pool, task, pool.failed_reason or "the pool failed")
            else:
                pool.queue.appendleft(task)

    def _later(self, pool: Pool, task: Task, delay_s: float) -> None:
        task.not_before = time.monotonic() + delay_s
        heapq.heappush(self._delayed, (task.not_before, next(self._counter), pool.name, task))

    # -- pools and replicas ------------------------------------------------------------------------
    def _start_pools(self) -> None:
        for pool in self.pools.values():
            if pool.state == "idle" and (pool.queue or (pool.config.start_early and not pool.closed)):
                try:
                    pool.group = pool.config.make_group()
                    ready = pool.group.ready()
                except Exception as err:
                    pool.group = None
                    self._fail_pool(pool, f"could not reserve the pool's resources: {describe_error(err)}")
                    continue
                pool.replicas = [Replica(index=i) for i in range(pool.config.replicas)]
                pool.state = "waiting"
                self._calls[ready] = _Call("group", pool, started=time.monotonic())
                for replica in pool.replicas:
                    self.events.replica_state(pool.name, replica.index, "waiting", {})

    def _start_replica(self, pool: Pool, replica: Replica) -> bool:
        try:
            replica.actor = pool.config.make_actor(pool.group, replica.index)
            load = replica.actor.load.remote()
        except Exception as err:
            replica.actor = None
            replica.state = "dead"
            self._fail_pool(pool, f"could not start a worker: {describe_error(err)}")
            return False
        replica.state = "loading"
        replica.started = time.monotonic()
        replica.in_flight = 0
        replica.pings = 0
        self._calls[load] = _Call("load", pool, replica, started=replica.started, actor=replica.actor)
        self.events.replica_state(pool.name, replica.index, "loading", {})
        return True

    def _replace(self, pool: Pool, replica: Replica, reason: str) -> None:
        from cluster.runtime import kill_actor

        if replica.actor is not None:
            kill_actor(replica.actor)
        if pool.state in ("released", "failed") or (pool.closed and not pool.pending):
            replica.state = "dead"
            return
        if pool.replacements >= pool.config.max_replacements:
            replica.state = "dead"
            self.events.replica_state(pool.name, replica.index, "dead", replica.describe())
            self.events.message(
                "worker_died",
                f"{pool.name}: replica {replica.index} died ({reason}); the pool's {pool.config.max_replacements} "
                "replacement(s) are spent",
            )
            if all(r.state == "dead" for r in pool.replicas):
                self._fail_pool(
                    pool,
                    f"every replica died and max_replacements={pool.config.max_replacements} is spent; last: {reason}",
                )
            return
        pool.replacements += 1
        replica.replacements += 1
        self.report.replaced += 1
        old = replica.describe()
        self.events.message(
            "replica_replaced",
            f"{pool.name}: replica {replica.index} (pid {old.get('pid')} on {old.get('node_ip') or old.get('host') or '?'}) "
            f"is gone ({reason.splitlines()[0][:200]}); starting a fresh actor ({pool.replacements}/{pool.config.max_replacements})",
        )
        self._start_replica(pool, replica)

    def _fail_pool(self, pool: Pool, reason: str) -> None:
        pool.state = "failed"
        pool.failed_reason = reason
        while pool.queue:
            self._fail_task(pool, pool.queue.popleft(), reason)
        kept = []
        for entry in self._delayed:
            if entry[2] == pool.name:
                self._fail_task(pool, entry[3], reason)
            else:
                kept.append(entry)
        heapq.heapify(kept)
        self._delayed = kept
        self.events.message("pool_failed", f"{pool.name}: {reason.splitlines()[0][:300]}")
        self._release(pool)

    def _release(self, pool: Pool) -> None:
        from cluster.runtime import kill_actor, remove_group

        # A ready replica is asked to close its engine (vLLM's processes) first; one that is loading,
        # being checked or restarting may never answer, so it is killed at once.
        to_close = [r.actor for r in pool.replicas if r.actor is not None and r.state == "ready"]
        to_kill = [r.actor for r in pool.replicas if r.actor is not None and r.state != "ready"]
        group = pool.group
        for replica in pool.replicas:
            replica.actor = None
            if replica.state != "dead":
                replica.state = "released"
            self.events.replica_state(pool.name, replica.index, replica.state, replica.describe())
        if pool.state != "failed":
            pool.state = "released"
        pool.group = None
        for ref, call in list(self._calls.items()):
            if call.pool is pool and call.kind in ("group", "load", "ping"):
                del self._calls[ref]

        def release() -> None:
            closing = []
            for actor in to_close:
                try:
                    closing.append(actor.close.remote())
                except Exception as err:
                    log.debug("close: %s", err)
            if closing:
                try:
                    ray.wait(closing, num_returns=len(closing), timeout=15.0)
                except Exception as err:
                    log.debug("waiting for close: %s", err)
            for actor in to_close + to_kill:
                kill_actor(actor)
            remove_group(group)

        self._releaser.submit(release)

    def _release_idle(self) -> None:
        for pool in self.pools.values():
            if pool.closed and pool.pending == 0 and pool.state in ("waiting", "running"):
                self._release(pool)
        self._park_idle(time.monotonic())

    def _park_idle(self, now: float) -> None:
        """Parkable pools that are open but have had no work for ``park_after_s`` give their room to pools
        waiting for one; they start again when work comes (see ``PoolConfig.parkable``)."""
        waiting = [p.name for p in self.pools.values() if p.state == "waiting"]
        for pool in self.pools.values():
            if not pool.config.parkable or pool.closed or pool.state != "running" or pool.pending or pool.queue:
                pool.idle_since = None
                continue
            if pool.idle_since is None:
                pool.idle_since = now
            elif waiting and now - pool.idle_since >= self.park_after_s:
                pool.idle_since = None
                self.events.message(
                    "pool_parked",
                    f"{pool.name}: no work for now; its room goes to {', '.join(waiting[:3])} (it starts again when work comes)",
                )
                self._release(pool)

    # -- dispatch --------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        for pool in self.pools.values():
            if not pool.queue or pool.state != "running":
                continue
            for replica in pool.replicas:
                while replica.state == "ready" and replica.in_flight < pool.config.max_in_flight and pool.queue:
                    task = pool.queue.popleft()
                    task.attempts += 1
                    replica.in_flight += 1
                    ref = getattr(replica.actor, pool.config.run_method).remote(task.payload)
                    self._calls[ref] = _Call("run", pool, replica, task, time.monotonic(), actor=replica.actor)
                if not pool.queue:
                    break

    # -- waiting ---------------------------------------------------------------------------------
    def _wait_timeout(self, now: float) -> float:
        timeout = self._max_wait_s
        if self._committing and self._calls:
            # A finished commit cannot wake ray.wait: look at the commits every 20 ms meanwhile.
            # (With no Ray call to wait on, _wait blocks on the commit queue itself.)
            timeout = 0.02
        if self._delayed:
            timeout = min(timeout, max(0.0, self._delayed[0][0] - now))
        if self._retry_pings:
            timeout = min(timeout, max(0.0, min(p[0] for p in self._retry_pings) - now))
        return timeout

    def _wait(self, timeout: float) -> None:
        refs = list(self._calls)
        if not refs:
            if timeout > 0:
                try:
                    item = self._commits.get(timeout=timeout)
                except queue.Empty:
                    return
                self._on_commit(*item)
            return
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            got = set(ready)
            rest = [r for r in refs if r not in got]
            if rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
        for ref in ready:
            call = self._calls.pop(ref, None)
            if call is not None:
                self._handle(ref, call)

    def _handle(self, ref: Any, call: _Call) -> None:
        pool = call.pool
        if call.kind == "group":
            if pool.state != "waiting":
                return
            try:
                ray.get(ref)
            except Exception as err:
                self._fail_pool(pool, f"the pool's placement group failed: {describe_error(err)}")
                return
            pool.state = "running"
            for replica in pool.replicas:
                if not self._start_replica(pool, replica):
                    return
            return
        replica = call.replica
        assert replica is not None
        try:
            value = ray.get(ref)
        except Exception as err:
            self._call_failed(call, err)
            return
        if call.stale:
            # An answer from an actor this replica no longer has (it was replaced meanwhile).
            if call.kind == "run":
                self._commit(pool, replica, call.task, value)
            return
        if call.kind == "load":
            replica.info = value
            replica.pid = value.get("placement", {}).get("pid")
            replica.state = "ready"
            if pool.first_ready is None:
                pool.first_ready = time.monotonic()
            self.report.worker_info.setdefault(pool.name, value)
            self.events.replica_state(pool.name, replica.index, "ready", {**replica.describe(), "load": value})
        elif call.kind == "ping":
            if value.get("pid") != replica.pid or not value.get("loads"):
                self.events.message(
                    "worker_restarted",
                    f"{pool.name}: replica {replica.index} was restarted by Ray (pid {replica.pid} -> {value.get('pid')}); reloading",
                )
                replica.state = "loading"
                replica.started = time.monotonic()
                replica.in_flight = 0
                self._calls[replica.actor.load.remote()] = _Call(
                    "load", pool, replica, started=replica.started, actor=replica.actor
                )
                self.events.replica_state(pool.name, replica.index, "loading", {})
            elif replica.state == "checking":
                replica.state = "ready"
        else:
            replica.in_flight = max(0, replica.in_flight - 1)
            self._commit(pool, replica, call.task, value)

    def _commit(self, pool: Pool, replica: Replica, task: Task | None, value: Any) -> None:
        """Store a result in a commit thread; :meth:`_on_commit` follows on the loop."""
        assert task is not None
        self._committing += 1
        if pool.config.commit_batch is not None:
            pool.backlog.append((replica, task, value))
            self._store_backlog(pool)
            return
        future = self._executor.submit(self._store, task, value, replica.describe())
        future.add_done_callback(lambda f, p=pool, r=replica, t=task: self._commits.put((p, r, t, f)))

    def _store_backlog(self, pool: Pool) -> None:
        """Start the pool's next group commit unless one is running (one at a time per pool)."""
        if pool.storing or not pool.backlog:
            return
        batch, pool.backlog = pool.backlog[: pool.config.max_batch], pool.backlog[pool.config.max_batch :]
        pool.storing = True
        commit = pool.config.commit_batch
        assert commit is not None
        future = self._executor.submit(commit, [(t, v, r.describe()) for r, t, v in batch])
        future.add_done_callback(lambda f, p=pool, b=batch: self._commits.put((p, None, b, f)))

    @staticmethod
    def _store(task: Task, value: Any, replica: dict[str, Any]) -> Any:
        return task.on_result(task, value, replica) if task.on_result else value

    def _drain_commits(self) -> None:
        while True:
            try:
                item = self._commits.get_nowait()
            except queue.Empty:
                return
            self._on_commit(*item)

    def _on_commit(self, pool: Pool, replica: Replica | None, task: Any, future: Future) -> None:
        if replica is None:  # a group commit: task is the batch
            self._on_batch(pool, task, future)
            return
        err = future.exception()
        self._stored(pool, replica, task, err if err is not None else future.result(), err is not None)

    def _on_batch(self, pool: Pool, batch: list[tuple[Replica, Task, Any]], future: Future) -> None:
        pool.storing = False
        err = future.exception()
        outcomes: list[Any] = [err] * len(batch) if err is not None else list(future.result())
        if len(outcomes) != len(batch):
            bad = RuntimeError(f"the group commit returned {len(outcomes)} outcomes for {len(batch)} tasks")
            outcomes = [bad] * len(batch)
        for (replica, task, _value), outcome in zip(batch, outcomes):
            self._stored(pool, replica, task, outcome, isinstance(outcome, BaseException))
        self._store_backlog(pool)

    def _stored(self, pool: Pool, replica: Replica, task: Task, outcome: Any, failed: bool) -> None:
        self._committing -= 1
        if failed:
            TRACEBACKS.error("storing %s failed", task.id, exc_info=outcome)
            full = no_room(outcome)
            if full is not None:
                self._halt(pool, task, full)
                return
            self._attempt_failed(
                pool, task, f"could not store the result: {describe_error(outcome)}", replica.describe()
            )
            return
        pool.pending -= 1
        pool.items_done += task.size
        replica.items_done += task.size
        self.report.done.append(task.id)
        self.events.task_done(pool.name, task, replica.index)
        if task.on_done:
            task.on_done(task, outcome)

    def _halt(self, pool: Pool, task: Task, err: OSError) -> None:
        """The store takes no more writes: start nothing more; ``task`` is left for a resume."""
        pool.pending -= 1
        self.report.not_started.append(task.id)
        if self.report.halted is None:
            self.report.halted = describe_no_room(err)
        self._stop.set()

    # -- failures --------------------------------------------------------------------------------
    def _call_failed(self, call: _Call, err: BaseException) -> None:
        pool, replica = call.pool, call.replica
        assert replica is not None
        error = describe_error(err)
        actor_trouble = isinstance(err, RayActorError) and not isinstance(err, RayTaskError)
        if call.stale:
            # The actor this call went to was replaced meanwhile: the new actor is not suspect (no
            # check, its in-flight count untouched); the task's attempt failed as any other.
            if call.kind == "run" and call.task is not None:
                if actor_trouble:
                    error = f"worker died (replaced since): {error}"
                self._attempt_failed(pool, call.task, error, replica.describe())
            return
        if call.kind == "load":
            if actor_trouble:
                self._check_replica(pool, replica, error)
            else:
                self._fail_pool(pool, f"worker could not load the variant: {error}")
            return
        if call.kind == "ping":
            if isinstance(err, ActorUnavailableError) and replica.pings < 120:
                replica.pings += 1
                self._ping_later(pool, replica)
            else:
                self._replace(pool, replica, error)
            return
        task = call.task
        assert task is not None
        replica.in_flight = max(0, replica.in_flight - 1)
        where = replica.describe()
        if call.timed_out:
            error = (
                f"no answer within shard_timeout_s={pool.config.shard_timeout_s:g}s; the worker was restarted ({error})"
            )
        if actor_trouble:
            self._check_replica(pool, replica, error)
            if isinstance(err, ActorUnavailableError) and not call.timed_out and task.unavailable < 30:
                # The worker is unreachable (restarting, node going away): another replica or the
                # restarted one takes the task, without spending one of its attempts.
                task.unavailable += 1
                task.attempts -= 1
                self._later(pool, task, min(pool.config.backoff_s * task.unavailable, 5.0))
                return
            error = (
                f"worker died (pid {where.get('pid')} on {where.get('node_ip') or where.get('host') or '?'}): {error}"
            )
        self._attempt_failed(pool, task, error, where)

    def _attempt_failed(self, pool: Pool, task: Task, error: str, where: dict[str, Any]) -> None:
        if pool.state == "failed":
            self._fail_task(pool, task, pool.failed_reason or error)
            return
        if task.attempts <= pool.config.max_retries:
            delay = pool.config.backoff_s * (2 ** max(0, task.attempts - 1))
            self.report.retried += 1
            self.events.task_retry(pool.name, task, error, delay, where)
            self._later(pool, task, delay)
            return
        self._fail_task(pool, task, error)

    def _fail_task(self, pool: Pool, task: Task, error: str) -> None:
        pool.pending -= 1
        self.report.failed[task.id] = error
        self.events.task_failed(pool.name, task, error)
        if task.on_failed:
            task.on_failed(task, error)

    def _check_replica(self, pool: Pool, replica: Replica, error: str) -> None:
        """After an actor error: ask the replica whether it is still (or again) there."""
        if replica.state in ("checking", "dead", "released") or replica.actor is None:
            return
        replica.state = "checking"
        self.events.message(
            "worker_died",
            f"{pool.name}: replica {replica.index} failed a call ({error.splitlines()[0][:200]}); checking it",
        )
        self._calls[replica.actor.ping.remote()] = _Call(
            "ping", pool, replica, started=time.monotonic(), actor=replica.actor
        )

    def _ping_later(self, pool: Pool, replica: Replica) -> None:
        actor = replica.actor

        def ping() -> None:
            if replica.actor is not None and replica.actor is actor and replica.state == "checking":
                self._calls[actor.ping.remote()] = _Call("ping", pool, replica, started=time.monotonic(), actor=actor)

        # Ask again in a second, without blocking the loop.
        self._retry_pings.append((time.monotonic() + 1.0, ping))

    def _check_deadlines(self, now: float) -> None:
        due = [p for p in self._retry_pings if p[0] <= now]
        if due:
            self._retry_pings = [p for p in self._retry_pings if p[0] > now]
            for _when, ping in due:
                ping()
        for ref, call in list(self._calls.items()):
            config = call.pool.config
            if call.kind == "group" and not call.noticed and now - call.started > GROUP_WAIT_NOTICE_S:
                call.noticed = True
                self.events.message(
                    "waiting",
                    f"{call.pool.name}: no room for its {config.replicas} replica(s) after {GROUP_WAIT_NOTICE_S:g}s; "
                    "waiting for other pools or jobs to give their resources back",
                )
            elif call.kind == "load" and config.load_timeout_s and now - call.started > config.load_timeout_s:
                del self._calls[ref]
                assert call.replica is not None
                self._replace(
                    call.pool, call.replica, f"no answer to load within load_timeout_s={config.load_timeout_s:g}s"
                )
            elif call.kind == "ping" and now - call.started > max(60.0, config.load_timeout_s or 0.0):
                del self._calls[ref]
                assert call.replica is not None
                self._replace(call.pool, call.replica, "no answer to a liveness check")
            elif (
                call.kind == "run"
                and config.shard_timeout_s
                and not call.timed_out
                and now - call.started > config.shard_timeout_s
            ):
                call.timed_out = True
                assert call.replica is not None and call.task is not None
                self.events.message(
                    "timeout", f"{call.task.id}: no answer after {config.shard_timeout_s:g}s; restarting its worker"
                )
                try:
                    # Killing with restart fails every call in flight on this actor; each is retried.
                    ray.kill(call.replica.actor, no_restart=False)
                except Exception as err:
                    log.debug("kill for timeout: %s", err)

    def _maybe_tick(self, now: float) -> None:
        if self._tick is not None and now - self._last_tick >= self._tick_interval_s:
            self._last_tick = now
            try:
                self._tick()
            except Exception:
                log.exception("tick failed")

    # -- the end ---------------------------------------------------------------------------------
    def _finished(self) -> bool:
        if self._committing or self._inbox:
            return False
        running = any(c.kind == "run" for c in self._calls.values())
        if self._stop.is_set():
            return not running
        if running or self._delayed:
            return False
        return all(not p.queue for p in self.pools.values())

    def _finish(self, aborted: bool = False) -> None:
        self.report.stopped = self._stop.is_set() or aborted
        for pool in self.pools.values():
            for task in list(pool.queue):
                self.report.not_started.append(task.id)
            pool.queue.clear()
        for _when, _n, _name, task in self._delayed:
            self.report.not_started.append(task.id)
        self._delayed = []
        for call in self._calls.values():
            if call.kind == "run" and call.task is not None:
                self.report.not_started.append(call.task.id)  # (only when aborted: killed in flight)
        for pool in self.pools.values():
            self.report.not_started.extend(task.id for _replica, task, _value in pool.backlog)  # (aborted only)
            pool.backlog.clear()
        self._calls.clear()
        if aborted:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._releaser.shutdown(wait=False, cancel_futures=True)
            return
        for pool in self.pools.values():
            if pool.state in ("waiting", "running"):
                self._release(pool)
        self._executor.shutdown(wait=True)
        self._releaser.shutdown(wait=True)

    def abort(self) -> None:
        """Kill every replica and remove every placement group now (second Ctrl-C, stop deadline).

        Nothing half-written counts anyway (commits are atomic). Safe to call more than once.
        """
        from cluster.runtime import kill_actor, remove_group

        for pool in self.pools.values():
            for replica in pool.replicas:
                if replica.actor is not None:
                    kill_actor(replica.actor)
                    replica.actor = None
                    replica.state = "dead" if replica.state == "dead" else "released"
            remove_group(pool.group)
            pool.group = None
            if pool.state in ("waiting", "running"):
                pool.state = "released"
        self._executor.shutdown(wait=False, cancel_futures=True)
