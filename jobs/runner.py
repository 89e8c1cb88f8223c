"""Run a sweep end to end: plan, compute what is missing on Ray workers, score, track, report."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from cluster.variant import VARIANT_CACHE_ENV
from jobs.plan import Plan, Shard, build_plan
from jobs.progress import QuietProgress, RichProgress
from jobs.variant_reports import quant_metrics, quant_params, variants_table
from jobs.results import ResultRow, compute_results, perspective_table, rows_from_result
from jobs.scheduler import Scheduler, SchedulerReport, ShardTask
from jobs.spec import SweepSpec, dump_spec
from jobs.store import ShardStore
from jobs.tracking import Tracker, resolve_tracking_uri
from trust.data import resolve_data_dir

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """Command-line settings that override or complete the spec (none of them changes a key)."""

    data_dir: str | Path | None = None
    limit: int | None = None
    address: str | None = None
    tracking_uri: str | None = None
    storage_root: str | Path | None = None
    cache_dir: str | Path | None = None
    variant_cache: str | None = None
    quiet: bool = False


def resolve_variant_cache(option: str | None, spec: SweepSpec) -> str | None:
    """Where variants are cached: ``--variant-cache``, ``$QTRUST_VARIANT_CACHE``, the spec, else None.

    None means ``<cache dir>/variants`` on each worker's node. Local paths are made absolute (workers
    may run in another working directory); URLs (``s3://...``) are passed on as they are.
    """
    value = option or os.environ.get(VARIANT_CACHE_ENV) or spec.storage.variant_cache
    if not value:
        return None
    if "://" in value:
        return value
    return str(Path(value).expanduser().resolve())


@dataclass
class SweepOutcome:
    plan: Plan
    store: ShardStore
    results: list[ResultRow]
    computed: int
    reused: int
    failed: dict[str, str] = field(default_factory=dict)
    tracking_uri: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    run_ids: dict[str, str] = field(default_factory=dict)
    tracking_failures: int = 0
    quant_reports: dict[str, dict[str, Any]] = field(default_factory=dict)


def _payload(plan: Plan, shard: Shard) -> dict[str, Any]:
    run = plan.benchmarks[shard.benchmark]
    return {
        "shard": shard.id,
        "task": run.benchmark.task,
        "requests": [
            {"id": it.id, "messages": it.messages, "continuations": it.choices or []} for it in shard.items
        ],
        "max_new_tokens": run.max_new_tokens,
        "temperature": plan.spec.generation.temperature,
        "batch_size": plan.spec.generation.batch_size,
    }


def _compute(
    plan: Plan, store: ShardStore, todo: list[Shard], options: RunOptions, console: Console
) -> SchedulerReport:
    """Start workers for the variants with missing shards and stream those shards to them."""
    from cluster.runtime import WorkerResources, start_ray, start_worker, stop_ray, stop_worker

    import ray

    started_here = not ray.is_initialized()
    info = start_ray(options.address)
    console.print(
        f"Ray: {info['address']} with {info['nodes']} node(s), {info['cpus']:g} CPU(s), {info['gpus']:g} GPU(s)"
    )
    res = plan.spec.resources
    resources = WorkerResources(num_cpus=res.num_cpus_per_worker, num_gpus=res.num_gpus_per_worker)
    if resources.num_cpus > info["cpus"]:
        resources.num_cpus = info["cpus"]
    variants = sorted({s.variant for s in todo}, key=list(plan.variants).index)
    cache_dir = str(options.cache_dir) if options.cache_dir else os.environ.get("QTRUST_CACHE_DIR")
    handles = {v: start_worker(v, plan.variants[v].worker_config(), resources, cache_dir) for v in variants}

    def on_result(shard: Shard, result: dict[str, Any]) -> None:
        rows = rows_from_result(plan.benchmarks[shard.benchmark], shard, result)
        store.commit_shard(shard.variant, shard.benchmark, shard.index, shard.key, rows)

    def release(variant: str) -> None:
        handle = handles.pop(variant, None)
        if handle is not None:
            stop_worker(handle)

    totals = {v: sum(len(s.items) for s in todo if s.variant == v) for v in variants}
    progress = QuietProgress(console) if options.quiet else RichProgress(console, totals)
    scheduler = Scheduler(
        {v: h.actor for v, h in handles.items()},
        on_result=on_result,
        progress=progress,
        max_in_flight=res.max_in_flight_per_worker,
        max_retries=res.max_retries,
        backoff_s=res.retry_backoff_s,
        shard_timeout_s=res.shard_timeout_s,
        release=release,
    )
    try:
        with progress:
            report = scheduler.run([ShardTask(shard=s, payload=_payload(plan, s)) for s in todo])
    finally:
        for variant in list(handles):
            release(variant)
        if started_here and not options.address:
            stop_ray()
    return report


def _params_digest(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _track(
    plan: Plan,
    store: ShardStore,
    results: list[ResultRow],
    manifest: dict[str, Any],
    tracker: Tracker,
    worker_info: dict[str, dict[str, Any]],
    data_dir: Path,
) -> dict[str, str]:
    """Log the sweep into MLflow; return the run ids by run key (kept in the manifest)."""
    spec = plan.spec
    known: dict[str, str] = dict(manifest.get("mlflow", {}).get("runs", {}))
    if manifest.get("mlflow", {}).get("uri") != tracker.uri:
        known = {}
    engines = {v: info.get("engine", {}) for v, info in worker_info.items()}
    quant_reports = {v: info.get("quantization", {}) for v, info in worker_info.items()}
    parent_key = f"sweep:{spec.name}"
    parent = tracker.run(known.get(parent_key), spec.name, {"qtrust.sweep": spec.name, "qtrust.kind": "sweep"})
    ids = {parent_key: parent} if parent else {}
    if parent:
        tracker.log_params(parent, {"sweep": spec.name, "storage": str(store.dir), "shard_size": spec.shard_size})
        tracker.log_artifact(parent, store.spec_path)
        table = variants_table(plan.variants, quant_reports)
        if not table.empty:
            tracker.log_table(parent, table, "variants.json")
    for row in results:
        run_run = plan.benchmarks[row.benchmark]
        bench_params = {f"benchmark.{k}": v for k, v in run_run.benchmark.describe().items()}
        bench_params.update({"benchmark.limit": run_run.spec.limit, "benchmark.max_new_tokens": run_run.max_new_tokens})
        report_params: dict[str, Any] = {}
        report_metrics: dict[str, float] = {}
        if row.kind == "variant":
            variant = plan.variants[row.name]
            params: dict[str, Any] = {
                "model": variant.model.source,
                "model.identity": variant.identity,
                "variant": variant.name,
                "variant.key": variant.key,
                "engine": variant.engine,
                "engine.requested": variant.engine_choice.requested if variant.engine_choice else variant.engine,
                "engine.reason": variant.engine_choice.reason if variant.engine_choice else "",
                "dtype": variant.model.dtype,
                "generation.temperature": spec.generation.temperature,
                **{("method" if k == "method" else f"quant.{k}"): v for k, v in variant.recipe.describe().items()},
                **bench_params,
            }
            if variant.calibration is not None:
                params["quant.calibration.digest"] = variant.calibration.digest
                params["quant.calibration.samples_used"] = len(variant.calibration.texts)
            for k, v in engines.get(variant.name, {}).items():
                report_params[f"engine.{k}"] = v
            report_params.update(quant_params(quant_reports.get(variant.name, {})))
            report_metrics.update(quant_metrics(quant_reports.get(variant.name, {})))
        else:
            ens = next(e for e in spec.ensembles if f"{row.model}-{e.name}" == row.name)
            params = {
                "model": spec.model(row.model).source,
                "ensemble": ens.name,
                "ensemble.members": ",".join(f"{row.model}-{m}" for m in ens.members),
                "ensemble.rule": f"{ens.rule}: refusals/invalid filtered, ties to highest precision, all filtered = REFUSED",
                **bench_params,
            }
        run_key = f"{row.kind}:{row.name}:{row.benchmark}:{_params_digest(params)}"
        run_id = tracker.run(
            known.get(run_key),
            f"{row.name} · {row.benchmark}",
            {"qtrust.sweep": spec.name, "qtrust.kind": row.kind, "qtrust.benchmark": row.benchmark, "qtrust.model": row.model},
            parent_id=parent,
        )
        if not run_id:
            continue
        ids[run_key] = run_id
        tracker.log_params(run_id, {**params, **report_params})
        metrics = dict(row.metrics)
        metrics.update(report_metrics)
        metrics.update({"n_items": row.n_items, "n_planned": row.n_planned})
        tracker.log_metrics(run_id, metrics)
        if row.frame is not None and not row.frame.empty:
            table = row.frame.drop(columns=[c for c in ("logprobs",) if c in row.frame.columns])
            tracker.log_table(run_id, table, f"items/{row.name}__{row.benchmark}.json")
            items_frame = run_run.items_frame()
            tracker.log_dataset(
                run_id,
                items_frame,
                name=row.benchmark,
                source=str(data_dir),
                digest=run_run.digest(data_dir),
            )
        tracker.finish(run_id, failed=not row.complete)
    if parent:
        summary: dict[str, float] = {"variants": len(plan.variants), "shards": len(plan.shards)}
        for name, scores in perspective_table(plan, results).items():
            summary.update({f"{name}.{perspective}_score": value for perspective, value in scores.items()})
        tracker.log_metrics(parent, summary)
        tracker.finish(parent, failed=any(not r.complete for r in results))
    return ids


def apply_limit(spec: SweepSpec, limit: int | None) -> SweepSpec:
    """A copy of ``spec`` whose benchmark limits are at most ``limit`` (stored, so resume sees it)."""
    if limit is None:
        return spec
    spec = spec.model_copy(deep=True)
    for bench in spec.benchmarks:
        bench.limit = min(limit, bench.limit) if bench.limit else limit
    return spec


def run_sweep(spec: SweepSpec, options: RunOptions, console: Console | None = None) -> SweepOutcome:
    """Plan the sweep, compute only missing shards, score everything and log it to MLflow."""
    console = console or Console()
    data_dir = resolve_data_dir(options.data_dir)
    spec = apply_limit(spec, options.limit)
    plan = build_plan(spec, data_dir, variant_cache=resolve_variant_cache(options.variant_cache, spec))
    store = ShardStore(options.storage_root or spec.storage.root, spec.name)
    store.write_spec(dump_spec(spec))
    manifest = store.read_manifest()

    todo = [s for s in plan.shards if not store.is_done(s.variant, s.benchmark, s.index, s.key)]
    reused = len(plan.shards) - len(todo)
    items_todo = sum(len(s.items) for s in todo)
    console.print(
        f"[bold]{spec.name}[/]: {len(plan.variants)} variant(s) × {len(plan.benchmarks)} benchmark(s) = "
        f"{len(plan.shards)} shard(s); {reused} already committed, {len(todo)} to compute ({items_todo} items)"
    )
    report = SchedulerReport()
    if todo:
        report = _compute(plan, store, todo, options, console)
    else:
        console.print("Nothing to compute: every shard is already committed with a matching key.")

    results = compute_results(plan, store)
    uri = resolve_tracking_uri(options.tracking_uri, spec.tracking.uri)
    tracker = Tracker(uri, spec.tracking.experiment, warn=lambda m: console.print(f"[yellow]{m}"))
    worker_info = dict(manifest.get("workers", {}))
    worker_info.update(report.worker_info)
    run_ids = _track(plan, store, results, manifest, tracker, worker_info, data_dir)

    shard_status = {}
    for s in plan.shards:
        done = store.is_done(s.variant, s.benchmark, s.index, s.key)
        entry: dict[str, Any] = {"key": s.key, "items": len(s.items), "status": "done" if done else "failed"}
        if s.id in report.failed:
            entry["error"] = report.failed[s.id]
        shard_status[s.id] = entry
    store.write_manifest(
        {
            "sweep": spec.name,
            "updated": dt.datetime.now(dt.timezone.utc).isoformat(),
            "data_dir": str(data_dir),
            "variants": {v.name: {"identity": v.identity, **v.recipe.describe()} for v in plan.variants.values()},
            "shards": shard_status,
            "workers": worker_info,
            "mlflow": {"uri": uri, "experiment_id": tracker.experiment_id, "runs": run_ids},
        }
    )
    parent = run_ids.get(f"sweep:{spec.name}")
    return SweepOutcome(
        plan=plan,
        store=store,
        results=results,
        computed=len(report.committed),
        reused=reused,
        failed=report.failed,
        tracking_uri=uri,
        experiment_id=tracker.experiment_id,
        parent_run_id=parent,
        run_ids=run_ids,
        tracking_failures=tracker.failures,
        quant_reports={v: info.get("quantization", {}) for v, info in worker_info.items()},
    )
