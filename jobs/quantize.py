"""``qtrust quantize``: build and probe every variant of a sweep without evaluating it.

Each variant is prepared by a Ray task holding the resources its worker would hold (its GPU when
the cluster has one), never on the driver. Cached methods (rtn, gptq, awq) land in the variant
cache, where later runs find them; every variant is loaded once and its perplexity probed, so a
broken variant is visible before any benchmark runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from jobs.plan.build import Variant, build_variants, resolve_variant_cache
from jobs.results.variant_reports import quant_metrics, variants_table
from jobs.spec.run_options import RunOptions
from jobs.spec.schema import SweepSpec
from jobs.store.sweep import SweepStore
from jobs.tracking import Tracker, resolve_tracking_uri
from trust.benchmarks.data import BenchmarkDataError, resolve_data_dir


@dataclass
class PrepareOutcome:
    variants: dict[str, Variant]
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None


def _data_dir_if_needed(spec: SweepSpec, option: str | Path | None) -> Path | None:
    needs = any(r.calibration and r.calibration.source.startswith("benchmark:") for r in spec.recipes)
    try:
        return resolve_data_dir(option)
    except BenchmarkDataError:
        if needs:
            raise
        return None


def prepare_sweep(spec: SweepSpec, options: RunOptions, console: Console) -> PrepareOutcome:
    """Prepare every variant of ``spec`` (fake-engine models are skipped); record reports in the store and MLflow."""
    import ray

    from cluster.runtime import WorkerResources, start_prepare_task, start_ray, stop_ray

    data_dir = _data_dir_if_needed(spec, options.data_dir)
    variants = build_variants(spec, data_dir, resolve_variant_cache(options.variant_cache, spec))
    real = {name: v for name, v in variants.items() if v.engine != "fake"}
    outcome = PrepareOutcome(variants=variants)
    info = start_ray(options.address)
    console.print(info.describe())
    cache_dir = str(options.cache_dir) if options.cache_dir else os.environ.get("QTRUST_CACHE_DIR")

    def resources_of(variant: Variant) -> WorkerResources:
        res = variant.resources
        return WorkerResources(
            num_cpus=min(res.num_cpus, info.cpus),
            num_gpus=res.num_gpus,
            memory=res.memory,  # type: ignore[arg-type]
            custom=dict(res.custom),
        )

    try:
        refs = {start_prepare_task(v.worker_config(), resources_of(v), cache_dir): name for name, v in real.items()}
        pending = list(refs)
        started = time.perf_counter()
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            name = refs[done[0]]
            try:
                result = ray.get(done[0])
            except Exception as err:
                outcome.failed[name] = f"{type(err).__name__}: {err}"
                console.print(f"[red]failed[/] {name}: {str(err).splitlines()[0][:300]}")
                continue
            outcome.reports[name] = result
            report = result.get("quantization", {})
            console.print(
                f"[green]ready[/] {name} ({report.get('storage', '?')}, cache {report.get('cache', '-')}, "
                f"probe perplexity {float(report.get('probe_perplexity', 'nan')):.4g}) after {time.perf_counter() - started:.0f} s"
            )
    finally:
        if info.started_here and not options.address:
            stop_ray()
    _record(spec, options, outcome, console)
    return outcome


def _record(spec: SweepSpec, options: RunOptions, outcome: PrepareOutcome, console: Console) -> None:
    """Keep the reports in the sweep's manifest (later runs log them) and log one MLflow run."""
    store = SweepStore(options.storage_root or spec.storage.root, spec.name)
    manifest = store.read_manifest()
    workers = dict(manifest.get("workers", {}))
    workers.update(outcome.reports)
    manifest["workers"] = workers
    store.write_manifest(manifest)
    quant_reports = {name: r.get("quantization", {}) for name, r in outcome.reports.items()}
    tracker = Tracker(
        resolve_tracking_uri(options.tracking_uri, spec.tracking.uri),
        spec.tracking.experiment,
        warn=lambda m: console.print(f"[yellow]{m}"),
    )
    run_id = tracker.run(None, f"{spec.name} · quantize", {"qtrust.sweep": spec.name, "qtrust.kind": "quantize"})
    if run_id:
        for name, report in quant_reports.items():
            tracker.log_metrics(
                run_id, {f"{name}.{k.removeprefix('quant.')}": v for k, v in quant_metrics(report).items()}
            )
        tracker.log_table(run_id, variants_table(outcome.variants, quant_reports), "variants.json")
        tracker.finish(run_id, failed=bool(outcome.failed))
    outcome.run_id = run_id
