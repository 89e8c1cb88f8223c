"""The scheduler: streams shards to variant workers with bounded in-flight work.

It first asks every worker to load its variant (a deterministic load error fails that variant's
shards at once instead of burning retries), then keeps at most ``max_in_flight`` shards queued per
worker. A shard whose call fails (an exception, a crashed actor, a dead node, a timeout) is
retried with exponential backoff; after its last attempt it is recorded as failed and the sweep goes
on. Workers whose shards are all finished are released, so variants that did not fit on the cluster
at first get their turn.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from jobs.plan import Shard

log = logging.getLogger(__name__)


class ProgressSink(Protocol):
    """What the scheduler reports progress to."""

    def variant_started(self, variant: str, info: dict[str, Any]) -> None: ...

    def shard_done(self, variant: str, items: int) -> None: ...

    def shard_failed(self, variant: str, items: int, error: str) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass
class ShardTask:
    shard: Shard
    payload: dict[str, Any]
    attempts: int = 0
    not_before: float = 0.0
    unavailable: int = 0


@dataclass
class SchedulerReport:
    committed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retried: int = 0
    worker_info: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _VariantState:
    actor: Any
    queue: deque[ShardTask]
    load_attempts: int = 0
    ready: bool = False
    released: bool = False


def _describe_error(err: BaseException) -> str:
    if isinstance(err, RayTaskError):
        cause = err.cause if getattr(err, "cause", None) is not None else err
        return f"{type(cause).__name__}: {cause}".strip()[:2000]
    return f"{type(err).__name__}: {err}".strip()[:2000]


class Scheduler:
    """Runs shard tasks on a set of worker actors (one per variant)."""

    def __init__(
        self,
        actors: dict[str, Any],
        *,
        on_result: Callable[[Shard, dict[str, Any]], None],
        progress: ProgressSink,
        max_in_flight: int = 2,
        max_retries: int = 2,
        backoff_s: float = 1.0,
        shard_timeout_s: float | None = None,
        release: Callable[[str], None] | None = None,
        poll_s: float = 0.2,
    ):
        self.actors = actors
        self.on_result = on_result
        self.progress = progress
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.shard_timeout_s = shard_timeout_s
        self.release = release
        self.poll_s = poll_s
        self._timed_out: set[Any] = set()
        #: How often a shard may find its worker restarting before that counts as a failed attempt.
        self.max_unavailable_waits = 30

    def run(self, tasks: list[ShardTask]) -> SchedulerReport:
        report = SchedulerReport()
        states: dict[str, _VariantState] = {}
        for task in tasks:
            variant = task.shard.variant
            if variant not in states:
                states[variant] = _VariantState(actor=self.actors[variant], queue=deque())
            states[variant].queue.append(task)
        in_flight: dict[Any, tuple[str, ShardTask | None, float]] = {}

        for variant, state in states.items():
            self._start_load(variant, state, in_flight)

        while in_flight or any(s.queue for s in states.values()):
            now = time.monotonic()
            self._submit_ready(states, in_flight, now)
            if not in_flight:
                waits = [t.not_before for s in states.values() for t in s.queue]
                time.sleep(max(0.0, min(waits) - now) if waits else self.poll_s)
                continue
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=self.poll_s)
            for ref in ready:
                variant, task, _started = in_flight.pop(ref)
                self._collect(ref, variant, task, states[variant], in_flight, report)
            self._expire(states, in_flight)
            self._release_idle(states, in_flight)
        self._release_idle(states, in_flight)
        return report

    # -- loading ---------------------------------------------------------------------------------
    def _start_load(self, variant: str, state: _VariantState, in_flight: dict) -> None:
        state.load_attempts += 1
        in_flight[state.actor.load.remote()] = (variant, None, time.monotonic())

    def _fail_variant(self, variant: str, state: _VariantState, error: str, report: SchedulerReport) -> None:
        while state.queue:
            task = state.queue.popleft()
            report.failed[task.shard.id] = f"worker could not load the variant: {error}"
            self.progress.shard_failed(variant, len(task.shard.items), error)

    # -- submitting ------------------------------------------------------------------------------
    def _submit_ready(self, states: dict[str, _VariantState], in_flight: dict, now: float) -> None:
        for variant, state in states.items():
            if not state.ready or not state.queue:
                continue
            busy = sum(1 for v, t, _ in in_flight.values() if v == variant and t is not None)
            for task in list(state.queue):
                if busy >= self.max_in_flight:
                    break
                if task.not_before > now:
                    continue
                state.queue.remove(task)
                task.attempts += 1
                ref = state.actor.run_shard.remote(task.payload)
                in_flight[ref] = (variant, task, time.monotonic())
                busy += 1

    # -- results ---------------------------------------------------------------------------------
    def _collect(
        self,
        ref: Any,
        variant: str,
        task: ShardTask | None,
        state: _VariantState,
        in_flight: dict,
        report: SchedulerReport,
    ) -> None:
        try:
            result = ray.get(ref)
        except (RayTaskError, RayActorError, GetTimeoutError, Exception) as err:  # noqa: BLE001
            error = _describe_error(err)
            timed_out = ref in self._timed_out
            if timed_out:
                self._timed_out.discard(ref)
                error = f"no answer within shard_timeout_s={self.shard_timeout_s:g}s; the worker was restarted ({error})"
            if task is None:
                self._load_failed(variant, state, err, error, in_flight, report)
            elif (
                isinstance(err, ActorUnavailableError)
                and not timed_out
                and task.unavailable < self.max_unavailable_waits
            ):
                # The worker is restarting: wait for it without spending one of the shard's attempts.
                task.unavailable += 1
                task.attempts -= 1
                task.not_before = time.monotonic() + min(self.backoff_s * task.unavailable, 10.0)
                state.queue.append(task)
            else:
                self._shard_failed(variant, task, state, error, report)
            return
        if task is None:
            state.ready = True
            report.worker_info[variant] = result
            self.progress.variant_started(variant, result)
            return
        try:
            self.on_result(task.shard, result)
        except Exception as err:  # a result that cannot be stored is retried like a failed call
            log.exception("storing shard %s failed", task.shard.id)
            self._shard_failed(variant, task, state, _describe_error(err), report)
            return
        report.committed.append(task.shard.id)
        self.progress.shard_done(variant, len(task.shard.items))

    def _load_failed(
        self, variant: str, state: _VariantState, err: BaseException, error: str, in_flight: dict, report: SchedulerReport
    ) -> None:
        crashed = isinstance(err, RayActorError) and not isinstance(err, RayTaskError)
        if crashed and state.load_attempts <= self.max_retries:
            self.progress.message(f"{variant}: worker lost while loading ({error}); retrying")
            report.retried += 1
            self._start_load(variant, state, in_flight)
            return
        self.progress.message(f"{variant}: cannot load the variant: {error}")
        self._fail_variant(variant, state, error, report)

    def _shard_failed(
        self, variant: str, task: ShardTask, state: _VariantState, error: str, report: SchedulerReport
    ) -> None:
        if task.attempts <= self.max_retries:
            delay = self.backoff_s * (2 ** (task.attempts - 1))
            task.not_before = time.monotonic() + delay
            state.queue.append(task)
            report.retried += 1
            self.progress.message(
                f"{task.shard.id}: attempt {task.attempts} failed ({error.splitlines()[0][:200]}); retrying in {delay:.1f}s"
            )
            return
        report.failed[task.shard.id] = error
        self.progress.shard_failed(variant, len(task.shard.items), error)

    # -- timeouts and release --------------------------------------------------------------------
    def _expire(self, states: dict[str, _VariantState], in_flight: dict) -> None:
        if not self.shard_timeout_s:
            return
        now = time.monotonic()
        for ref, (variant, task, started) in list(in_flight.items()):
            if task is not None and now - started > self.shard_timeout_s and ref not in self._timed_out:
                self.progress.message(f"{task.shard.id}: no answer after {self.shard_timeout_s:g}s; restarting its worker")
                self._timed_out.add(ref)
                # Killing with restart fails every call in flight on this actor; each is then retried.
                ray.kill(states[variant].actor, no_restart=False)

    def _release_idle(self, states: dict[str, _VariantState], in_flight: dict) -> None:
        if self.release is None:
            return
        busy = {v for v, _t, _s in in_flight.values()}
        for variant, state in states.items():
            if not state.released and not state.queue and variant not in busy:
                state.released = True
                self.release(variant)
