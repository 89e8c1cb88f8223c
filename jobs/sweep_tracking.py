"""What a sweep tells MLflow, and when: runs at the start, progress as shards land, results at the end.

A parent run per sweep and a nested run per (variant, benchmark) and per (ensemble, benchmark) are
created (RUNNING) when the sweep starts, with their parameters and the tags "Group by" and filters
work on. As shards commit, each run gets progress metrics (items done and failed, with a step) and
a running value of its benchmark's primary metric; at the end, final metrics, the per-item table,
the benchmark as a dataset input, and the run is closed. Every call goes through
:class:`jobs.tracking.LiveTracker`'s background queue, so the scheduler never waits on MLflow.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from jobs.plan import Plan, Shard
from jobs.scoring import LabelCache, ResultRow, perspective_table
from jobs.store import SweepStore
from jobs.tracking import LiveTracker, resolve_tracking_uri
from jobs.variant_reports import quant_metrics, quant_params, variants_table
from trust.scoring import score_labels

#: How often the running value of a run's primary metric is recomputed.
RUNNING_METRIC_EVERY_S = 5.0


def _bits_tag(bits: float) -> str:
    return "ref" if bits >= 16 else f"{bits:g}"


class SweepTracking:
    """The bridge between a running sweep and its MLflow runs (see the module docstring)."""

    def __init__(self, plan: Plan, store: SweepStore, tracker: LiveTracker, data_dir: Path):
        self.plan = plan
        self.store = store
        self.tracker = tracker
        self.data_dir = data_dir
        self.uri = tracker_uri(tracker)
        self.parent_key = f"sweep:{plan.spec.name}"
        self._rows: dict[tuple[str, str], list[tuple[Shard, list[dict[str, Any]]]]] = {}
        self._labels: dict[tuple[str, str], dict[str, str]] = {}
        self._last_running: dict[tuple[str, str], float] = {}
        self._progress: dict[tuple[str, str], Any] = {}
        self._label_caches: dict[str, LabelCache] = {}
        self._ticks = 0
        self._logged_engines: set[str] = set()

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        plan: Plan,
        store: SweepStore,
        previous_manifest: dict[str, Any],
        uri_option: str | None,
        data_dir: Path,
        warn: Callable[[str], None],
    ) -> "SweepTracking":
        uri = resolve_tracking_uri(uri_option, plan.spec.tracking.uri)
        mlflow_entry = previous_manifest.get("mlflow", {}) or {}
        known = dict(mlflow_entry.get("runs", {})) if mlflow_entry.get("uri") == uri else {}
        tracker = LiveTracker(uri, plan.spec.tracking.experiment, warn=warn, known_runs=known)
        tracker.start()
        self = cls(plan, store, tracker, data_dir)
        self._open_runs()
        tracker.close_stale_runs(plan.spec.name)
        return self

    def variant_key(self, variant: str, bench: str) -> str:
        return f"variant:{variant}:{bench}"

    def ensemble_key(self, name: str, bench: str) -> str:
        return f"ensemble:{name}:{bench}"

    def _open_runs(self) -> None:
        spec = self.plan.spec
        t = _StoreTagged(self.tracker, self.store.uri)
        t.ensure_run(
            self.parent_key,
            spec.name,
            {"qtrust.sweep": spec.name, "qtrust.kind": "sweep"},
            description=f"qtrust sweep '{spec.name}': {len(self.plan.variants)} variant(s) × "
            f"{len(self.plan.benchmarks)} benchmark(s). {spec.description}".strip(),
        )
        t.log_params(self.parent_key, {"sweep": spec.name, "storage": self.store.uri, "shard_size": spec.shard_size})
        t.log_params(self.parent_key, self._judge_params())
        t.log_artifact(self.parent_key, self._spec_file(), None)
        for bench_name, run in self.plan.benchmarks.items():
            bench_params = self._bench_params(bench_name)
            for variant in self.plan.variants.values():
                bits = _bits_tag(variant.precision_bits)
                key = self.variant_key(variant.name, bench_name)
                t.ensure_run(
                    key,
                    f"{variant.name} · {bench_name}",
                    {
                        "qtrust.sweep": spec.name,
                        "qtrust.kind": "variant",
                        "qtrust.benchmark": bench_name,
                        "qtrust.model": variant.model.name,
                        "variant": variant.name,
                        "method": variant.recipe.method,
                        "bits": bits,
                        "benchmark": bench_name,
                        **self._judge_tags(bench_name),
                    },
                    parent_key=self.parent_key,
                    description=f"{variant.name} ({variant.recipe.method}, {bits} bits) on {bench_name} "
                    f"({len(run.items)} items)" + self._judged_by(bench_name),
                )
                t.log_params(key, {**self._variant_params(variant), **bench_params})
            for model in spec.models:
                for ens, members in self.plan.ensembles_of(model):
                    name = f"{model.name}-{ens.name}"
                    key = self.ensemble_key(name, bench_name)
                    t.ensure_run(
                        key,
                        f"{name} · {bench_name}",
                        {
                            "qtrust.sweep": spec.name,
                            "qtrust.kind": "ensemble",
                            "qtrust.benchmark": bench_name,
                            "qtrust.model": model.name,
                            "variant": name,
                            "method": "ensemble",
                            "bits": "+".join(_bits_tag(m.precision_bits) for m in members),
                            "benchmark": bench_name,
                            **self._judge_tags(bench_name),
                        },
                        parent_key=self.parent_key,
                        description=f"precision ensemble {name} over {', '.join(m.name for m in members)} on {bench_name}",
                    )
                    t.log_params(
                        key,
                        {
                            "model": model.source,
                            "ensemble": ens.name,
                            "ensemble.members": ",".join(m.name for m in members),
                            "ensemble.rule": f"{ens.rule}: refusals/invalid filtered, ties to highest precision, "
                            "all filtered = REFUSED",
                            **bench_params,
                        },
                    )

    def _spec_file(self) -> Path:
        import tempfile

        text = self.store.read_text(self.store.spec_path) or ""
        path = Path(tempfile.mkdtemp(prefix="qtrust-spec-")) / "sweep.yaml"
        path.write_text(text)
        return path

    def _bench_params(self, bench_name: str) -> dict[str, Any]:
        run = self.plan.benchmarks[bench_name]
        params = {f"benchmark.{k}": v for k, v in run.benchmark.describe().items()}
        params.update({"benchmark.limit": run.spec.limit, "benchmark.max_new_tokens": run.max_new_tokens})
        for name in run.spec.judges:
            params[f"judge.{name}.identity"] = self.plan.judges[name].identity(bench_name)
        return params

    def _judge_params(self) -> dict[str, Any]:
        """Each judge's kind, model and identity per benchmark (never a secret: see ``PlannedJudge.describe``)."""
        return {f"judge.{name}.{k}": v for name, judge in self.plan.judges.items() for k, v in judge.describe().items()}

    def _judge_tags(self, bench_name: str) -> dict[str, str]:
        from jobs.judging import selected_judge

        judge = selected_judge(self.plan.benchmarks[bench_name])
        return {"judge": judge} if judge else {}

    def _judged_by(self, bench_name: str) -> str:
        from jobs.judging import selected_judge

        run = self.plan.benchmarks[bench_name]
        judge = selected_judge(run)
        if not judge:
            return ""
        others = [j for j in run.spec.judges if j != judge]
        return f"; labels by judge {judge}" + (f" (also judged by {', '.join(others)})" if others else "")

    def _variant_params(self, variant: Any) -> dict[str, Any]:
        spec = self.plan.spec
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
            "replicas": variant.resources.replicas,
            **{("method" if k == "method" else f"quant.{k}"): v for k, v in variant.recipe.describe().items()},
        }
        if variant.calibration is not None:
            params["quant.calibration.digest"] = variant.calibration.digest
            params["quant.calibration.samples_used"] = len(variant.calibration.texts)
        return params

    # -- while running -------------------------------------------------------------------------
    def variant_loaded(self, variant: str, info: dict[str, Any]) -> None:
        """A replica loaded ``variant``: record its engine and quantization report on its runs."""
        if variant in self._logged_engines:
            return
        self._logged_engines.add(variant)
        params, metrics = self._report_params(info)
        for bench in self.plan.benchmarks:
            self.tracker.log_params(self.variant_key(variant, bench), params)
            if metrics:
                self.tracker.log_metrics(self.variant_key(variant, bench), metrics)

    @staticmethod
    def _report_params(info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
        params = {f"engine.{k}": v for k, v in (info.get("engine") or {}).items()}
        params.update(quant_params(info.get("quantization", {}) or {}))
        return params, quant_metrics(info.get("quantization", {}) or {})

    def progress(self, variant: str, bench: str, counts: Any) -> None:
        """A shard of (variant, bench) landed: its progress is logged with the next tick (at most once a second)."""
        self._progress[(variant, bench)] = counts

    def _log_progress(self) -> None:
        dirty, self._progress = self._progress, {}
        for (variant, bench), counts in dirty.items():
            self.tracker.log_metrics(
                self.variant_key(variant, bench),
                {
                    "progress.items_done": counts.done,
                    "progress.items_failed": counts.failed,
                    "progress.fraction": counts.done / counts.planned if counts.planned else 1.0,
                },
                step=counts.shards_done,
            )

    def shard_committed(self, shard: Shard, value: dict[str, Any]) -> None:
        if self.plan.benchmarks[shard.benchmark].spec.judges:
            return  # its labels come from judges: the parser's running value would mislead
        self._rows.setdefault((shard.variant, shard.benchmark), []).append((shard, value["rows"]))

    def tick(self, state: Any) -> None:
        """Once a second from the scheduler: sweep progress, and running metrics every few seconds."""
        self._ticks += 1
        self._log_progress()
        totals = state.totals()
        self.tracker.log_metrics(
            self.parent_key,
            {
                "progress.items_done": totals["done"],
                "progress.items_failed": totals["failed"],
                "progress.items_pending": totals["pending"],
                "progress.items_per_s": totals["items_per_s"],
                **({"progress.eta_s": totals["eta_s"]} if totals["eta_s"] is not None else {}),
            },
            step=self._ticks,
        )
        # One (variant, benchmark) per tick, the one waiting longest: a tick never stalls the scheduling loop for long.
        now = time.monotonic()
        due = [k for k, pending in self._rows.items() if pending and now - self._last_running.get(k, 0.0) >= RUNNING_METRIC_EVERY_S]
        if due:
            key = min(due, key=lambda k: self._last_running.get(k, 0.0))
            started = time.monotonic()
            self._running_metric(key, self._rows[key], state)
            # Scoring re-reads every label so far: space the runs out so they stay under ~5% of the loop.
            spent = time.monotonic() - started
            self._last_running[key] = now + max(0.0, 20 * spent - RUNNING_METRIC_EVERY_S)

    def _running_metric(self, key: tuple[str, str], pending: list, state: Any) -> None:
        variant, bench = key
        run = self.plan.benchmarks[bench]
        labels = self._labels.setdefault(key, {})
        cache = self._label_caches.get(bench)
        if cache is None:
            cache = self._label_caches[bench] = LabelCache(run)
        self._rows[key] = []
        for shard, rows in pending:
            for item, row in zip(shard.items, rows):
                labels[item.id] = cache.label(item, row["output"], row["logprobs"], row["error"])
        items = [it for it in run.items if it.id in labels]
        try:
            metrics = score_labels(run.benchmark, items, labels)
        except Exception:  # noqa: BLE001 - a partial set may not score (e.g. one group missing)
            return
        primary = run.benchmark.primary_metric
        value = metrics.get(primary)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            counts = state.counts[key]
            self.tracker.log_metrics(self.variant_key(variant, bench), {f"running.{primary}": value}, step=counts.shards_done)

    # -- the end -------------------------------------------------------------------------------
    def final(self, results: list[ResultRow], worker_info: dict[str, dict[str, Any]], state: Any = None) -> None:
        """Final metrics, tables, datasets; close every run (FAILED when items are missing).

        A run this driver computed nothing for gets one progress point (it may be the run of a
        sweep resumed after a tracking outage that outlasted it), and after an outage every run's
        last progress point is logged again, so every run ends with its true progress.
        """
        t = self.tracker
        if state is not None:
            for (variant, bench), counts in state.counts.items():
                if counts.shards_done == 0 or t.failures:
                    self.progress(variant, bench, counts)
        self._log_progress()
        quant_reports = {v: info.get("quantization", {}) for v, info in worker_info.items()}
        table = variants_table(self.plan.variants, quant_reports)
        if not table.empty:
            t.log_table(self.parent_key, table, "variants.json")
        for variant, info in worker_info.items():
            if variant in self.plan.variants:
                self.variant_loaded(variant, info)
        for row in results:
            run = self.plan.benchmarks[row.benchmark]
            key = self.variant_key(row.name, row.benchmark) if row.kind == "variant" else self.ensemble_key(row.name, row.benchmark)
            metrics = dict(row.metrics)
            if row.kind == "variant":
                metrics.update(quant_metrics(quant_reports.get(row.name, {})))
            metrics.update({"n_items": row.n_items, "n_planned": row.n_planned})
            t.log_metrics(key, metrics)
            if row.frame is not None and not row.frame.empty:
                frame = row.frame.drop(columns=[c for c in ("logprobs", "item_key") if c in row.frame.columns])
                t.log_table(key, frame, f"items/{row.name}__{row.benchmark}.json")
                if row.judgments is not None and not row.judgments.empty:
                    t.log_table(key, row.judgments, f"judgments/{row.name}__{row.benchmark}.json")
                t.log_dataset(key, run.items_frame(), name=row.benchmark, source=str(self.data_dir), digest=run.digest(self.data_dir))
            t.finish(key, "FINISHED" if row.complete else "FAILED")
        if state is not None and getattr(state, "judges", None):
            judges = pd.DataFrame([{"judge": name, **counts, **{k: v for k, v in self.plan.judges[name].describe().items()}}
                                   for name, counts in state.judges.items() if name in self.plan.judges])
            if not judges.empty:
                t.log_table(self.parent_key, judges, "judges.json")
        summary: dict[str, float] = {"variants": len(self.plan.variants), "item_requests": self.plan.n_requests}
        for name, scores in perspective_table(self.plan, results).items():
            summary.update({f"{name}.{perspective}_score": value for perspective, value in scores.items()})
        t.log_metrics(self.parent_key, summary)
        t.finish(self.parent_key, "FAILED" if any(not r.complete for r in results) else "FINISHED")

    def interrupted(self) -> None:
        self._log_progress()
        for key in list(self._all_keys()):
            self.tracker.finish(key, "KILLED")

    def _all_keys(self) -> list[str]:
        keys = [self.parent_key]
        for bench in self.plan.benchmarks:
            keys += [self.variant_key(v, bench) for v in self.plan.variants]
            for model in self.plan.spec.models:
                keys += [self.ensemble_key(f"{model.name}-{e.name}", bench) for e, _m in self.plan.ensembles_of(model)]
        return keys

    def close(self, timeout_s: float) -> int:
        self.tracker.close(timeout_s=timeout_s)
        return self.tracker.failures

    def run_ids(self) -> dict[str, str]:
        return self.tracker.run_ids()

    @property
    def experiment_id(self) -> str | None:
        return self.tracker.experiment_id

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "experiment_id": self.tracker.experiment_id,
            "runs": self.tracker.run_ids(),
            "url": self.tracker.run_url(self.parent_key),
        }


class _StoreTagged:
    """The tracker, with every run it opens tagged with the sweep's store (runs are found by it)."""

    def __init__(self, tracker: LiveTracker, store_uri: str):
        self._tracker = tracker
        self._store = store_uri

    def ensure_run(self, key: str, name: str, tags: dict[str, str], **kwargs: Any) -> None:
        self._tracker.ensure_run(key, name, {**tags, "qtrust.store": self._store}, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracker, name)


def tracker_uri(tracker: Any) -> str:
    return getattr(tracker, "uri", "")


__all__ = ["SweepTracking", "pd"]
