"""``qtrust quantize``: build and probe every variant of a sweep without evaluating it.

Each variant is prepared by a Ray task holding the resources its worker would hold (its GPU when
the cluster has one), never on the driver. Cached methods (rtn, gptq, awq) land in the variant
cache, where later runs find them; every variant is loaded once and its perplexity probed, so a
broken variant is visible before any benchmark runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from jobs.plan.build import Variant, build_variants, resolve_variant_cache
from jobs.results.variant_reports import quant_metrics, variants_table, weights_tags
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
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Variant -> its rebuild check (``--rebuild-check``; see :class:`cluster.variants.rebuild.RebuildCheck`)."""

    @property
    def mismatched(self) -> list[str]:
        """Variants whose rebuilt weights differ from the cached ones (or whose check failed)."""
        return sorted(name for name, check in self.checks.items() if check.get("status") not in ("match", "skipped"))


def _data_dir_if_needed(spec: SweepSpec, option: str | Path | None) -> Path | None:
    needs = any(r.calibration and r.calibration.source.startswith("benchmark:") for r in spec.recipes)
    try:
        return resolve_data_dir(option)
    except BenchmarkDataError:
        if needs:
            raise
        return None


def prepare_sweep(
    spec: SweepSpec, options: RunOptions, console: Console, *, rebuild_check: bool = False
) -> PrepareOutcome:
    """Prepare every variant of ``spec`` (fake-engine models are skipped); record reports in the store and MLflow.

    With ``rebuild_check``, every cached variant that is ready is then built again into a
    temporary folder (a Ray task with its worker's resources) and its weights compared with the
    cache entry's (:func:`cluster.variants.rebuild.rebuild_check`).
    """

    from cluster.runtime import WorkerResources, start_prepare_task, start_ray, start_rebuild_check_task, stop_ray

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
        started = time.perf_counter()
        for name, result, err in _as_finished(refs):
            if err is not None:
                outcome.failed[name] = f"{type(err).__name__}: {err}"
                console.print(f"[red]failed[/] {name}: {str(err).splitlines()[0][:300]}")
                continue
            outcome.reports[name] = result
            report = result.get("quantization", {})
            console.print(
                f"[green]ready[/] {name} ({report.get('storage', '?')}, cache {report.get('cache', '-')}, "
                f"probe perplexity {float(report.get('probe_perplexity', 'nan')):.4g}) after {time.perf_counter() - started:.0f} s"
            )
        if rebuild_check:
            ready = {name: real[name] for name in outcome.reports}
            checks = {
                start_rebuild_check_task(v.worker_config(), resources_of(v), cache_dir): n for n, v in ready.items()
            }
            _collect_checks(checks, outcome, console)
    finally:
        if info.started_here and not options.address:
            stop_ray()
    _record(spec, options, outcome, console)
    return outcome


def _as_finished(refs: dict[Any, str]) -> Iterator[tuple[str, Any, Exception | None]]:
    """Each Ray task of ``refs`` (ref -> variant name) as it finishes: its name, its result or its error."""
    import ray

    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            yield refs[done[0]], ray.get(done[0]), None
        except Exception as err:
            yield refs[done[0]], None, err


def _collect_checks(refs: dict[Any, str], outcome: PrepareOutcome, console: Console) -> None:
    """Wait for the rebuild checks and print one line per variant (a mismatch with where the weights differ)."""
    for name, check, err in _as_finished(refs):
        if err is not None:
            check = {
                "variant": name,
                "status": "failed",
                "detail": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}",
            }
        outcome.checks[name] = check
        console.print(check_line(check))


def check_line(check: dict[str, Any]) -> str:
    """One console line for a rebuild check."""
    name, status = check.get("variant"), check.get("status")
    cached, rebuilt = check.get("cached_sha256") or "-", check.get("rebuilt_sha256") or "-"
    where = f" (rebuilt on {check.get('host')} with {check.get('threads')} threads in {check.get('rebuild_s')} s)"
    if status == "match":
        line = f"[green]rebuild check[/] {name}: match, weights sha256 {cached[:16]}{where}"
    elif status == "mismatch":
        line = (
            f"[red]rebuild check[/] {name}: MISMATCH, cached {cached[:16]} vs rebuilt {rebuilt[:16]}{where}: "
            f"{check.get('detail')}"
        )
    else:
        line = f"[yellow]rebuild check[/] {name}: {status}: {check.get('detail')}"
    recorded = check.get("recorded_sha256")
    if recorded and check.get("cached_sha256") and recorded != check["cached_sha256"]:
        line += f"; the cached files changed since they were built (the entry recorded {recorded[:16]})"
    return line


def _record(spec: SweepSpec, options: RunOptions, outcome: PrepareOutcome, console: Console) -> None:
    """Keep the reports in the sweep's manifest (later runs log them) and log one MLflow run."""
    store = SweepStore(options.storage_root or spec.storage.root, spec.name)
    manifest = store.read_manifest()
    workers = dict(manifest.get("workers", {}))
    workers.update(outcome.reports)
    manifest["workers"] = workers
    if outcome.checks:
        manifest["rebuild_checks"] = outcome.checks
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
        tags = {f"{name}.{tag}": value for name, r in quant_reports.items() for tag, value in weights_tags(r).items()}
        tags.update({f"{name}.rebuild_check": str(c.get("status")) for name, c in outcome.checks.items()})
        tracker.set_tags(run_id, tags)
        tracker.finish(run_id, failed=bool(outcome.failed))
    outcome.run_id = run_id
