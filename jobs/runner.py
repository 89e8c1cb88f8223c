"""Run a sweep: plan, find what is stored, stream the missing items through pools, score, track.

One trip, in order: spec → plan (item keys) → one scan of the store → Ray and pools → the
scheduler streams shards while live tracking and the manifest follow → scoring from stored records
→ final tracking → manifest. See docs/architecture.md."""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

# The driver loads torch before anything opens an S3 filesystem: torch's MKL failed to load after
# pyarrow had initialised the AWS SDK in the same process ("Intel oneMKL FATAL ERROR: Cannot load
# libtorch_cpu.so", then a segfault; seen in a sweep run as a Ray job storing on S3).
import torch  # noqa: F401  isort: skip

from cluster.storage.space import describe_no_room, no_room
from jobs.data_ready import prepare_sweep_data
from jobs.pipeline.adaptive import AdaptiveFeed
from jobs.pipeline.generate import (
    Committer,
    default_cache_dir,
    pool_name,
    variant_pool,
    worker_resources,
)
from jobs.pipeline.judge_feed import JudgeFeed, Judging, judge_stage
from jobs.pipeline.pools import Task
from jobs.pipeline.progress import QuietProgress, RichProgress
from jobs.pipeline.scheduler import Scheduler, SchedulerReport
from jobs.pipeline.state import Counts, SweepState
from jobs.plan.adaptive import adaptive_plan
from jobs.plan.build import Plan, Shard, build_plan, resolve_variant_cache
from jobs.plan.keys import CONTEXT_CHARS
from jobs.results.scoring import ResultRow, compute_results
from jobs.spec.load import dump_spec
from jobs.spec.masked import redacted_spec
from jobs.spec.remote_code import remote_code_models, remote_code_warnings
from jobs.spec.run_options import RunOptions
from jobs.spec.schema import SweepSpec
from jobs.store.adaptive import write_adaptive
from jobs.store.driver_log import TRACEBACKS, driver_log
from jobs.store.plan_snapshot import write_plan_snapshot
from jobs.store.records import JUDGMENTS, dedupe_records, frame_rows
from jobs.store.reserve import room_reserve
from jobs.store.response_cache import ResponseCache
from jobs.store.shards import ScanResult
from jobs.store.sweep import SweepStore
from jobs.tracking.sweep import SweepTracking
from jobs.tracking.uri import TrackingUriError, resolve_tracking_uri, stored_tracking_uri

log = logging.getLogger(__name__)


#: Exit code of an interrupted sweep (128 + SIGINT), as shells expect.
EXIT_INTERRUPTED = 130


class PlacementError(Exception):
    """Some pool could never be placed on this cluster; ``problems`` names each one."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("the cluster cannot hold these workers:\n" + "\n".join(f"  - {p}" for p in problems))


class SweepInterrupted(Exception):
    """The user stopped the sweep (Ctrl-C); what was committed is kept."""

    def __init__(self, outcome: SweepOutcome, aborted: bool):
        self.outcome = outcome
        self.aborted = aborted
        super().__init__("interrupted")


class StoreFull(Exception):
    """The store took no more writes (disk full, quota spent, read-only filesystem): the run stopped.

    ``outcome`` is None when it happened before any work (taking the lock, writing the spec); else
    what this run committed, kept for a resume. ``manifest_written``: whether the manifest could be
    marked failed with the reason; ``retry_manifest`` tries again (once the run's reserve of room is
    freed: :mod:`jobs.store.reserve`). ``log_path``: the driver's log file with the tracebacks.
    """

    def __init__(
        self,
        store_uri: str,
        reason: str,
        outcome: SweepOutcome | None = None,
        manifest_written: bool = False,
        log_path: Path | None = None,
        retry_manifest: Callable[[], bool] | None = None,
    ):
        self.store_uri = store_uri
        self.reason = reason
        self.outcome = outcome
        self.manifest_written = manifest_written
        self.log_path = log_path
        self.retry_manifest = retry_manifest
        super().__init__(f"{store_uri}: {reason}")


class _Aborted(KeyboardInterrupt):
    """A second Ctrl-C (or the stop deadline) ended the scheduler; ``report`` is what it had done."""

    def __init__(self, report: SchedulerReport):
        super().__init__()
        self.report = report


@dataclass
class SweepOutcome:
    plan: Plan
    store: SweepStore
    results: list[ResultRow]
    computed: int
    """Shards computed by this run."""
    reused: int
    """Items (variant × item requests) found stored when the run started."""
    items_computed: int = 0
    items_from_cache: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    not_started: list[str] = field(default_factory=list)
    shards_left: int = 0
    """Generation shards this run planned and did not commit (not started, failed, killed in flight)."""
    damaged: list[str] = field(default_factory=list)
    tracking_uri: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    run_ids: dict[str, str] = field(default_factory=dict)
    tracking_failures: int = 0
    tracking_unsent: dict[str, int] = field(default_factory=dict)
    """What never reached MLflow (``runs``, ``metric_points``, ``artifacts``, ``run_ends``...): see
    :meth:`jobs.tracking.LiveTracker.unsent`. A ``qtrust resume`` of the sweep logs its results again."""
    quant_reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    retried: int = 0
    replaced: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    judged: int = 0
    """Answers judged by this run (judge × answer)."""
    judgments_reused: int = 0
    judge_failed: dict[str, str] = field(default_factory=dict)
    not_generated: int = 0
    """Item requests left without an answer because the run only judged (``judge_only``)."""
    comparison: Any = None
    """:class:`jobs.results.compare.Comparison` of every result with its model's reference."""
    view_url: str | None = None
    """The MLflow UI's runs table in the sweep's shared view (grouped by benchmark, metric columns)."""
    report_path: str | None = None
    adaptive: Any = None
    """:class:`jobs.store.adaptive.AdaptiveSummary` of an adaptive sweep (None otherwise)."""
    """Where the HTML report was written (``<sweep dir>/report.html``)."""


def apply_limit(spec: SweepSpec, limit: int | None) -> SweepSpec:
    """A copy of ``spec`` whose benchmark limits are at most ``limit`` (stored, so resume sees it)."""
    if limit is None:
        return spec
    spec = spec.model_copy(deep=True)
    for bench in spec.benchmarks:
        bench.limit = min(limit, bench.limit) if bench.limit else limit
    return spec


class _Interrupts:
    """First Ctrl-C: stop submitting and let shards in flight commit. Second: abort now."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.count = 0
        self.scheduler: Scheduler | None = None
        self._previous: Any = None
        self.installed = False

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1 and self.scheduler is not None:
            self.say(
                "Stopping: no new shards start; shards in flight finish and commit. Press Ctrl-C again to abort now."
            )
            self.scheduler.request_stop()
            return
        raise KeyboardInterrupt


def run_sweep(spec: SweepSpec, options: RunOptions, console: Console | None = None) -> SweepOutcome:
    """Plan the sweep, compute only missing items, score everything and track it in MLflow."""
    from cluster.storage.writable import check_writable
    from jobs.store.lock import SweepLock

    console = console or Console()
    check_writable(options.storage_root or spec.storage.root)  # read-only, /proc, full disk: one line, before any work
    for line in remote_code_warnings(spec):
        console.print(f"[yellow]warning:[/] {line}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data_dir = prepare_sweep_data(spec, options.data_dir).folder  # the data on first use, before any heavy work
    spec = apply_limit(spec, options.limit)
    _check_definitions(spec, data_dir)
    store = SweepStore(options.storage_root or spec.storage.root, spec.name)
    options = _with_tracking_uri(options, spec, store)  # a redacted stored URI fails here, before any work
    _check_unmasked(spec, store, options.resume)  # so does a masked judge URL
    plan = build_plan(spec, data_dir, variant_cache=resolve_variant_cache(options.variant_cache, spec))
    timings["plan_s"] = time.perf_counter() - t0
    try:
        lock = SweepLock(store.uri).acquire()
        try:
            with driver_log(store) as log_path, room_reserve(store) as reserve:
                try:
                    return _run_locked(spec, options, console, plan, store, data_dir, timings)
                except StoreFull as full:
                    full.log_path = log_path
                    if not full.manifest_written and full.retry_manifest is not None and reserve.release():
                        full.manifest_written = full.retry_manifest()
                    raise
        finally:
            lock.release()
    except OSError as err:
        room = no_room(err)
        if room is None:
            raise
        raise StoreFull(store.uri, describe_no_room(room)) from None


def _with_tracking_uri(options: RunOptions, spec: SweepSpec, store: SweepStore) -> RunOptions:
    """``options`` with the tracking URI this run uses when it must come from the store.

    A resume given no URI (no ``--tracking-uri``, no ``MLFLOW_TRACKING_URI``, none in the spec)
    tracks where the sweep was tracked, as its manifest says, so it finishes the same runs; when
    the manifest keeps that URI redacted (it had credentials) it raises :class:`TrackingUriError`.
    Otherwise the URI is only checked (:func:`resolve_tracking_uri`).
    """
    if options.resume and not options.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        if not spec.tracking.uri:
            stored = str((store.read_manifest().get("mlflow") or {}).get("uri") or "")
            if stored:
                try:
                    return dataclasses.replace(options, tracking_uri=stored_tracking_uri(stored, None))
                except TrackingUriError as err:
                    raise TrackingUriError(f"{store.manifest_path}: {err}") from None
    resolve_tracking_uri(options.tracking_uri, spec.tracking.uri)
    return options


def _check_unmasked(spec: SweepSpec, store: SweepStore, resume: bool) -> None:
    """Raise :class:`SpecError` when the run would use a value the store keeps masked (a judge's ``base_url``
    with credentials, read back from a stored ``sweep.yaml``): never send anything to a masked URL."""
    from jobs.spec.masked import masked_problems
    from jobs.spec.schema import SpecError

    problems = masked_problems(spec)
    if problems:
        raise SpecError(store.spec_path if resume else f"sweep '{spec.name}'", problems)


def _check_definitions(spec: SweepSpec, data_dir: Path) -> None:
    """The checks of the benchmark definitions: data-free ones (labels metrics name that can never
    occur...) for all, and the user's own definition files against their records in ``data_dir``."""
    from jobs.spec.definitions import benchmark_problems
    from jobs.spec.schema import SpecError

    problems, _lines = benchmark_problems(spec, None, own_data_dir=data_dir)
    if problems:
        raise SpecError(f"sweep '{spec.name}'", problems)


def _scan(store: SweepStore, console: Console, verify: bool = False) -> ScanResult:
    scan = store.scan(use_index=not verify)
    for damaged in scan.damaged:
        console.print(
            f"[yellow]damaged shard {damaged.path}: {damaged.reason}; moved aside as a dot-file, its items will be computed again"
        )
    return scan


def _reuse_from_cache(
    plan: Plan, store: SweepStore, cache: ResponseCache, stored: set[str], console: Console
) -> pd.DataFrame | None:
    """Copy answers of the response cache that this sweep lacks into its store; return them."""
    missing = plan.unique_keys() - stored
    if not missing:
        return None
    found = cache.lookup(missing, CONTEXT_CHARS)
    if found.empty:
        return None
    found = found.drop_duplicates("item_key")
    by_key = found.set_index("item_key", drop=False)
    written = []
    for (variant, bench), keys in plan.keys.items():
        want = [k for k in dict.fromkeys(keys) if k in missing and k in by_key.index]
        if not want:
            continue
        rows = frame_rows(by_key.loc[want])
        store.commit_generations(variant, bench, rows)
        written.append(pd.DataFrame(rows))
        missing.difference_update(want)
    if not written:
        return None
    frame = pd.concat(written, ignore_index=True)
    console.print(f"Response cache {cache.uri}: reused {len(frame)} stored answer(s)")
    return frame


def _run_locked(
    spec: SweepSpec,
    options: RunOptions,
    console: Console,
    plan: Plan,
    store: SweepStore,
    data_dir: Path,
    timings: dict[str, float],
) -> SweepOutcome:
    store.write_spec(dump_spec(redacted_spec(spec)))
    write_plan_snapshot(store, plan)  # the items, so that `qtrust report` needs no data folder
    previous = store.read_manifest()
    t = time.perf_counter()
    scan = _scan(store, console, verify=options.verify_store)
    stored = scan.keys
    from_cache = None
    cache_uri = options.response_cache or spec.storage.response_cache
    cache = ResponseCache(cache_uri) if cache_uri else None
    if cache is not None:
        from_cache = _reuse_from_cache(plan, store, cache, stored, console)
        if from_cache is not None:
            stored = stored | set(from_cache["item_key"])
    adaptive = adaptive_plan(plan)
    shards = plan.shards(stored, skip=adaptive.covers if adaptive else None)
    feed: AdaptiveFeed | None = None
    if adaptive and not options.judge_only:
        # The comparisons that stop early: replay what is stored, find what each still needs.
        feed = AdaptiveFeed.from_records(plan, adaptive, [scan.records, from_cache])
        feed.expected = {key for shard in shards for key in shard.keys}
        feed.prime()
    not_generated = 0
    if options.judge_only:
        not_generated = sum(len(s.items) for s in shards)
        shards = []
    judging = judge_stage(plan, store, data_dir, scan, from_cache, options, console)
    timings["scan_s"] = time.perf_counter() - t
    state = SweepState(plan, say=lambda text: console.print(f"[yellow]{text}"))
    state.start(stored, shards)
    if feed is not None:
        feed.state = state
    _print_plan(console, plan, state, shards, options.resume, feed)
    if judging is not None and judging.backlog_tasks:
        console.print(
            f"Judges: {judging.stage.submitted_answers} stored answer(s) to judge "
            f"({judging.reused} judgment(s) already stored)"
        )
    if not_generated:
        console.print(
            f"[yellow]Judging only: {not_generated} item request(s) have no stored answer and are not generated"
        )

    ray_info: dict[str, Any] = {}
    # Ray and the placement check come before MLflow and the manifest: an impossible bundle is one
    # error, with no run left RUNNING and no manifest saying "running".
    adaptive_work = feed.variants_with_work() if feed is not None else []
    has_work = bool(shards) or bool(adaptive_work) or (judging is not None and bool(judging.backlog_tasks))
    ray_started = (
        _attach(plan, shards, options, console, ray_info, timings, judging, adaptive_work) if has_work else None
    )
    try:
        outcome = _run_attached(
            spec,
            options,
            console,
            plan,
            store,
            data_dir,
            timings,
            previous,
            scan,
            shards,
            state,
            cache,
            from_cache,
            ray_info,
            judging,
            feed,
        )
        outcome.not_generated = not_generated
        return outcome
    finally:
        if ray_started is not None and ray_started.started_here and not options.address:
            from cluster.runtime import stop_ray

            stop_ray()


def _attach(
    plan: Plan,
    shards: list[Shard],
    options: RunOptions,
    console: Console,
    ray_info: dict[str, Any],
    timings: dict[str, float],
    judging: Judging | None = None,
    adaptive_work: list[str] | None = None,
):  # -> RayInfo
    """Start (or join) Ray and check that every pool with work could ever be placed there."""
    from cluster.runtime import placement_problem, start_ray, stop_ray

    t = time.perf_counter()
    info = start_ray(options.address, num_cpus=options.num_cpus)
    timings["ray_start_s"] = time.perf_counter() - t
    console.print(info.describe())
    ray_info.update(
        {"address": info.address, "how": info.how, "nodes": info.nodes, "cpus": info.cpus, "gpus": info.gpus}
    )
    problems = []
    for name in [v for v in plan.variants if any(s.variant == v for s in shards) or v in (adaptive_work or [])]:
        variant = plan.variants[name]
        problem = placement_problem(f"variant {name}", worker_resources(variant).bundle(), variant.resources.replicas)
        if problem:
            problems.append(problem)
    if judging is not None:
        for judge in plan.judges.values():
            bundle = judging.stage.worker_resources(judge)
            problem = placement_problem(f"judge {judge.name}", bundle, judge.resources.replicas)
            if problem:
                problems.append(problem)
    if problems:
        if info.started_here and not options.address:
            stop_ray()
        raise PlacementError(problems)
    return info


def _run_attached(
    spec: SweepSpec,
    options: RunOptions,
    console: Console,
    plan: Plan,
    store: SweepStore,
    data_dir: Path,
    timings: dict[str, float],
    previous: dict[str, Any],
    scan: ScanResult,
    shards: list[Shard],
    state: SweepState,
    cache: ResponseCache | None,
    from_cache: pd.DataFrame | None,
    ray_info: dict[str, Any],
    judging: Judging | None = None,
    feed: AdaptiveFeed | None = None,
) -> SweepOutcome:
    tracking = SweepTracking.open(
        plan, store, previous, options.tracking_uri, data_dir, warn=lambda m: console.print(f"[yellow]{m}")
    )
    state.on_progress = tracking.progress
    state.on_ready = tracking.variant_loaded
    outcome = SweepOutcome(
        plan=plan,
        store=store,
        results=[],
        computed=0,
        reused=state.stored_items,
        items_from_cache=0 if from_cache is None else len(from_cache),
        damaged=[d.path for d in scan.damaged],
        tracking_uri=tracking.uri,
        timings=timings,
    )
    committer = Committer(store, cache, CONTEXT_CHARS)
    remote_code = remote_code_models(spec)  # models whose folder's own code runs in the workers
    manifest_extra = lambda: {  # noqa: E731
        "ray": ray_info,
        "mlflow": tracking.manifest_entry(),
        "trust_remote_code": remote_code,
        **({"adaptive": feed.summary().model_dump(mode="json")} if feed is not None else {}),
    }

    def record_adaptive(final: bool = False) -> bool:
        """The adaptive decisions to adaptive.json and MLflow, when they changed (always at the end)."""
        if feed is None or not (feed.changed or final):
            return False
        feed.changed = False
        summary = feed.summary()
        try:
            write_adaptive(store, summary)
        except Exception as err:
            TRACEBACKS.warning("adaptive.json not written", exc_info=err)
        log_adaptive = getattr(tracking, "adaptive", None)
        if log_adaptive is not None:
            log_adaptive(summary)
        return True

    last_pools: dict[str, Any] = dict(previous.get("pools", {})) if not shards else {}

    manifest_warned: list[str] = []

    def write_manifest(status: str, pools: dict[str, Any] | None = None, reason: str | None = None) -> bool:
        if pools is not None:
            last_pools.clear()
            last_pools.update(pools)
        extra = {**manifest_extra(), **({"reason": reason} if reason else {})}
        try:
            store.write_manifest(state.manifest(state=status, pools=dict(last_pools), extra=extra))
        except Exception as err:
            TRACEBACKS.warning("manifest not written", exc_info=err)
            if no_room(err) is None and not manifest_warned:  # a full store is said once, at the end
                manifest_warned.append(str(err))
                log.warning("manifest not written: %s", err)
            return False
        return True

    write_manifest("running")
    report = SchedulerReport()
    interrupted = False
    aborted = False
    record_adaptive(final=True)
    adaptive_work = feed is not None and bool(feed.variants_with_work())
    if shards or adaptive_work or (judging is not None and judging.backlog_tasks):
        try:
            report, interrupted = _compute(
                plan,
                shards,
                options,
                console,
                state,
                committer,
                tracking,
                write_manifest,
                timings,
                judging,
                feed,
                record_adaptive,
            )
        except KeyboardInterrupt as stop:
            interrupted = aborted = True
            report = stop.report if isinstance(stop, _Aborted) else report
        finally:
            committer.flush()
            if judging is not None:
                judging.stage.flush()
    else:
        console.print(
            "Nothing to compute: every item is already stored" + (" and judged." if judging is not None else ".")
        )
    judge_ids = {t for t in report.done if t.startswith("judge=")}
    outcome.computed = len(report.done) - len(judge_ids)
    outcome.judged = state.judged_answers
    outcome.judgments_reused = judging.reused if judging is not None else 0
    outcome.judge_failed = {k: v for k, v in report.failed.items() if k.startswith("judge=")}
    outcome.items_computed = state.computed_items
    outcome.failed = {k: v for k, v in report.failed.items() if not k.startswith("judge=")}
    outcome.not_started = list(report.not_started)
    outcome.shards_left = max(0, len(shards) + (feed.shards_submitted if feed is not None else 0) - outcome.computed)
    record_adaptive(final=True)
    if feed is not None:
        outcome.adaptive = feed.summary()
    outcome.retried, outcome.replaced = report.retried, report.replaced
    worker_info = dict(previous.get("workers", {}))
    worker_info.update(state.worker_info)
    outcome.quant_reports = {v: info.get("quantization", {}) for v, info in worker_info.items()}

    if interrupted or report.halted:
        tracking.interrupted()
        outcome.tracking_failures = tracking.close(timeout_s=5.0 if not aborted else 2.0)
        outcome.tracking_unsent = tracking.unsent()
        outcome.run_ids = tracking.run_ids()
        # After close: the manifest names every run opened, for the resume to reuse.
        if report.halted:
            reason = f"the store takes no more writes: {report.halted}"
            written = write_manifest("failed", reason=reason)
            raise StoreFull(
                store.uri,
                report.halted,
                outcome,
                written,
                retry_manifest=lambda: write_manifest("failed", reason=reason),
            )
        write_manifest("interrupted")
        raise SweepInterrupted(outcome, aborted)

    t = time.perf_counter()
    frames = [scan.records]
    if from_cache is not None:
        frames.append(from_cache)
    new = committer.committed()
    if new is not None:
        frames.append(new)
    records, _dups = dedupe_records(pd.concat(frames, ignore_index=True)) if len(frames) > 1 else (scan.records, 0)
    judgments = None
    if judging is not None:
        jframes = [judging.scan.records]
        new_judgments = judging.stage.committed()
        if new_judgments is not None:
            jframes.append(new_judgments)
        judgments, _ = (
            dedupe_records(pd.concat(jframes, ignore_index=True), JUDGMENTS)
            if len(jframes) > 1
            else (judging.scan.records, 0)
        )
    outcome.results = compute_results(plan, records, judgments)
    timings["score_s"] = time.perf_counter() - t
    t = time.perf_counter()
    _compare_and_report(outcome, tracking, console)
    timings["compare_s"] = time.perf_counter() - t
    t = time.perf_counter()
    tracking.final(outcome.results, worker_info, state)
    outcome.tracking_failures = tracking.close(timeout_s=30.0)
    outcome.tracking_unsent = tracking.unsent()
    timings["tracking_close_s"] = time.perf_counter() - t
    outcome.run_ids = tracking.run_ids()
    outcome.experiment_id = tracking.experiment_id
    outcome.view_url = tracking.view_url()
    outcome.parent_run_id = outcome.run_ids.get(tracking.parent_key)
    state.worker_info = worker_info
    write_manifest("failed" if outcome.failed else "finished")
    return outcome


def _compare_and_report(outcome: SweepOutcome, tracking: Any, console: Console) -> None:
    """Compare every result with its reference, write the HTML report, hand both to MLflow.

    A failure here never loses the sweep's results (they are stored): it is said and the run goes on.
    """
    from jobs.results.compare import compare_results
    from jobs.results.completeness import completeness
    from jobs.results.report_file import local_copy, write_report

    try:
        outcome.comparison = compare_results(outcome.plan, outcome.results, outcome.quant_reports)
        # failed shards: a partial report, never report.html; items a final adaptive decision did not need are not missing
        complete = completeness(outcome.results, adaptive=outcome.adaptive)
        partial = complete.lines() if complete.partial else None
        outcome.report_path = write_report(outcome.plan, outcome.comparison, outcome.store, partial=partial)
    except Exception as err:
        console.print(
            f"[yellow]The comparison report could not be built ({type(err).__name__}: {err}); "
            "run 'qtrust report' on the sweep folder to retry."
        )
        return
    log = getattr(tracking, "log_comparison", None)
    if log is not None:
        c = outcome.comparison
        report = local_copy(outcome.report_path, posixpath.basename(outcome.report_path))
        log(c.frame, c.matrices, c.perspectives, report)


def _print_plan(
    console: Console,
    plan: Plan,
    state: SweepState,
    shards: list[Shard],
    detailed: bool,
    feed: AdaptiveFeed | None = None,
) -> None:
    todo = sum(len(s.items) for s in shards)
    console.print(
        f"[bold]{plan.spec.name}[/]: {len(plan.variants)} variant(s) × {len(plan.benchmarks)} benchmark(s) = "
        f"{plan.n_requests} item request(s); {state.stored_items} already stored, {todo} to compute in {len(shards)} shard(s)"
        + (" outside the adaptive comparisons" if feed is not None else "")
    )
    if feed is not None:
        for line in feed.plan_lines():
            console.print(line)
    if detailed and shards:
        per: dict[tuple[str, str], int] = {}
        for s in shards:
            per[(s.variant, s.benchmark)] = per.get((s.variant, s.benchmark), 0) + len(s.items)
        for (variant, bench), n in per.items():
            console.print(f"  to compute: {variant} × {bench}: {n} item(s)")


def _compute(
    plan: Plan,
    shards: list[Shard],
    options: RunOptions,
    console: Console,
    state: SweepState,
    committer: Committer,
    tracking: SweepTracking,
    write_manifest: Callable[..., bool],
    timings: dict[str, float],
    judging: Judging | None = None,
    feed: AdaptiveFeed | None = None,
    record_adaptive: Callable[[], bool] | None = None,
) -> tuple[SchedulerReport, bool]:
    """One pool per variant with work (and one per judge) on the Ray :func:`_attach` joined; stream the shards.

    An adaptive sweep's :class:`AdaptiveFeed` sends the items of its comparisons round by round and
    closes a variant's pool once its comparisons are decided.
    """
    t = time.perf_counter()
    managed = set(feed.variants_with_work()) if feed is not None else set()
    variants = [v for v in plan.variants if any(s.variant == v for s in shards) or v in managed]
    cache_dir = default_cache_dir(options.cache_dir)
    static = {v: sum(len(s.items) for s in shards if s.variant == v) for v in variants}

    def totals() -> dict[str, int]:
        """Items per variant: its shards', and at most what its open adaptive comparisons may still need."""
        return {v: static[v] + (feed.items_at_most(v) if feed is not None and v in managed else 0) for v in variants}

    progress = QuietProgress(console) if options.quiet else RichProgress(console, totals())
    state.progress_bar = progress
    deadline = _StopDeadline(options.stop_deadline_s)

    def tick() -> None:
        if record_adaptive is not None and record_adaptive():
            for variant, total in totals().items():
                progress.set_total(variant, total)
        write_manifest("running", scheduler.pool_snapshot())
        tracking.tick(state)
        deadline.check(scheduler)

    scheduler = Scheduler(state, tick=tick)
    for name in variants:
        scheduler.add_pool(variant_pool(plan.variants[name], cache_dir, committer.commit_batch))
        scheduler.pools[pool_name(name)].config.parkable = name in managed  # fed a round at a time
    judge_feed = JudgeFeed(plan, scheduler, judging, state, len(shards))
    if judging is not None:
        for pool in judging.stage.pools(cache_dir):
            scheduler.add_pool(pool)
        judging.stage.on_done = state.judge_committed
        judging.stage.on_failed = state.judge_failed

    def done(shard: Shard) -> Callable[[Task, Any], None]:
        def on_done(task: Task, value: Any) -> None:
            state.shard_committed(shard, value["errors"])
            tracking.shard_committed(shard, value)
            judge_feed.generation_committed(value["rows"])
            if feed is not None:
                feed.committed(value["rows"])

        return on_done

    def failed(shard: Shard) -> Callable[[Task, str], None]:
        def on_failed(task: Task, error: str) -> None:
            state.shard_failed(shard, error)
            judge_feed.generation_finished()
            if feed is not None:
                feed.failed(shard.keys)

        return on_failed

    def submit(shard: Shard) -> None:
        scheduler.submit(pool_name(shard.variant), committer.task(plan, shard, done(shard), failed(shard)))

    for shard in shards:
        submit(shard)
    for name in variants:
        if name not in managed:
            scheduler.close(pool_name(name))
    if feed is not None:
        feed.attach(
            submit,
            lambda variant: scheduler.close(pool_name(variant)),
            lambda variant, unwanted: [
                task.subject for task in scheduler.withdraw(pool_name(variant), lambda task: unwanted(task.subject))
            ],
        )
    judge_feed.start()
    with _Interrupts(lambda text: console.print(f"[yellow]{text}")) as interrupts, progress:
        interrupts.scheduler = scheduler
        try:
            report = scheduler.run()
        except KeyboardInterrupt:
            console.print("[red]Aborting: replicas are being killed; nothing half-written counts.")
            scheduler.abort()
            raise _Aborted(scheduler.report) from None
        if feed is not None and not report.stopped:
            for variant, total in totals().items():
                progress.set_total(variant, total)
    timings["compute_s"] = time.perf_counter() - t
    write_manifest("running", scheduler.pool_snapshot())
    tracking.tick(state)  # the last progress point, after the last commit
    return report, report.stopped


class _StopDeadline:
    """After a first Ctrl-C, give shards in flight ``seconds`` to finish; then abort."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.since: float | None = None

    def check(self, scheduler: Scheduler) -> None:
        if not scheduler.stopping:
            return
        if self.since is None:
            self.since = time.monotonic()
        elif time.monotonic() - self.since > self.seconds:
            raise KeyboardInterrupt


__all__ = [
    "RunOptions",
    "SweepOutcome",
    "SweepInterrupted",
    "StoreFull",
    "PlacementError",
    "run_sweep",
    "apply_limit",
    "Counts",
]
