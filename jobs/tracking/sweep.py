"""What a sweep tells MLflow, and when: runs at the start, progress as shards land, results at the end.

A parent run per sweep and a nested run per (variant, benchmark) and per (ensemble, benchmark) are
created (RUNNING) when the sweep starts, with their parameters and the tags "Group by" and filters
work on. As shards commit, each run gets progress metrics (items done and failed, with a step) and
a running value of its benchmark's primary metric; at the end, final metrics, the per-item table
(``items.json``, the same name in every run), the benchmark as a dataset input, and the run is
closed. :meth:`SweepTracking.log_comparison` adds intervals, deltas against the reference, flags,
flip tables and the parent's summary and plots. Runs carry the tags "Group by" works on (model,
variant, method, bits, benchmark, judge), short names (``w4 · xstest``) and a colour per variant
(:mod:`jobs.results.colours`), the same as in the plots. Every call goes through
:class:`jobs.tracking.LiveTracker`'s background queue, so the scheduler never waits on MLflow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from jobs.plan.build import Plan, Shard
from jobs.plan.naming import ensemble_names, reference_variants, short_names
from jobs.results.colours import PARENT_COLOR, RUN_COLOR_TAG, variant_colors
from jobs.results.completeness import not_needed
from jobs.results.scoring import LabelCache, ResultRow, perspective_table
from jobs.results.variant_reports import quant_metrics, quant_params, variants_table, weights_tags
from jobs.store.adaptive import AdaptiveSummary
from jobs.store.sweep import SweepStore
from jobs.tracking import LiveTracker, resolve_tracking_uri
from jobs.tracking.adaptive import AdaptiveLog
from jobs.tracking.comparison import (
    comparison_table,
    flips_table,
    frame_entries,
    parent_figures,
    run_metrics,
    run_tags,
    summary_table,
)
from jobs.tracking.shared_view import view_key, view_state
from jobs.tracking.uri import redact
from trust.benchmarks.label_metrics import score_labels

#: How often the running value of a run's primary metric is recomputed.
RUNNING_METRIC_EVERY_S = 5.0
#: Tables every run of one kind logs under the same name (the UI compares artifacts by name).
ITEMS_TABLE = "items.json"
JUDGMENTS_TABLE = "judgments.json"
COMPARISON_TABLE = "comparison.json"
FLIPS_TABLE = "flips.json"
SUMMARY_TABLE = "summary.json"
#: The value of the variant, method, bits and benchmark tags on the parent run (it spans them all).
ALL = "all"


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
        self.short: dict[str, str] = {}
        """Variant or ensemble name -> the name its runs and plots show."""
        self.references: dict[str, str] = {}
        """Model name -> its reference variant (unquantized, else the most precise)."""
        self.colors: dict[str, str] = {}
        """Variant or ensemble name -> its run colour (the ``mlflow.runColor`` tag and in plots)."""
        self._ensembles: set[str] = set()
        self._summary_logged = False
        self._adaptive = AdaptiveLog(tracker, self.parent_key, lambda v, b: self._result_key("variant", v, b))
        self._name_variants()

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
    ) -> SweepTracking:
        uri = resolve_tracking_uri(uri_option, plan.spec.tracking.uri)
        mlflow_entry = previous_manifest.get("mlflow", {}) or {}
        same_store = redact(str(mlflow_entry.get("uri", ""))) == redact(uri)  # the manifest keeps it redacted
        known = dict(mlflow_entry.get("runs", {})) if same_store else {}
        tracker = LiveTracker(uri, plan.spec.tracking.experiment, warn=warn, known_runs=known)
        tracker.start()
        self = cls(plan, store, tracker, data_dir)
        self._open_runs()
        tracker.close_stale_runs(plan.spec.name, store.uri)  # not the runs of a same-named sweep elsewhere
        return self

    def variant_key(self, variant: str, bench: str) -> str:
        return f"variant:{variant}:{bench}"

    def ensemble_key(self, name: str, bench: str) -> str:
        return f"ensemble:{name}:{bench}"

    def _open_runs(self) -> None:
        spec = self.plan.spec
        t = _StoreTagged(self.tracker, self.store.uri)
        judges = sorted({j for b in self.plan.benchmarks for j in self._judge_tags(b).values()})
        t.ensure_run(
            self.parent_key,
            spec.name,
            {
                "qtrust.sweep": spec.name,
                "qtrust.kind": "sweep",
                "model": ", ".join(m.name for m in spec.models),
                "variant": ALL,
                "method": ALL,
                "bits": ALL,
                "benchmark": ALL,
                **({"judge": ", ".join(judges)} if judges else {}),
                RUN_COLOR_TAG: PARENT_COLOR,
            },
            description=f"qtrust sweep '{spec.name}': {len(self.plan.variants)} variant(s) × "
            f"{len(self.plan.benchmarks)} benchmark(s); per-variant results in the nested runs, the summary "
            f"in summary.json. {spec.description}".strip(),
        )
        t.log_params(self.parent_key, {"sweep": spec.name, "storage": self.store.uri, "shard_size": spec.shard_size})
        t.log_params(self.parent_key, self._judge_params())
        t.log_artifact(self.parent_key, self._spec_file(), None)
        for bench_name, run in self.plan.benchmarks.items():
            bench_params = self._bench_params(bench_name)
            n = len(run.items)
            for variant in self.plan.variants.values():
                bits = _bits_tag(variant.precision_bits)
                key = self.variant_key(variant.name, bench_name)
                reference = self.references.get(variant.model.name)
                if reference == variant.name:
                    what = (
                        f"{self.short[variant.name]}: the reference ({variant.model.name}, {variant.recipe.method}, "
                        f"{bits} bits) on {bench_name} ({n} items); the quantized variants are compared with it"
                    )
                else:
                    what = (
                        f"{self.short[variant.name]} ({variant.model.name}, {variant.recipe.method}, {bits} bits) on "
                        f"{bench_name}: compared with {self.short.get(reference or '', reference)} on the same {n} items"
                    )
                t.ensure_run(
                    key,
                    self._run_name(variant.name, bench_name),
                    {
                        "qtrust.sweep": spec.name,
                        "qtrust.kind": "variant",
                        "qtrust.benchmark": bench_name,
                        "qtrust.model": variant.model.name,
                        "model": variant.model.name,
                        "variant": variant.name,
                        "method": variant.recipe.method,
                        "bits": bits,
                        "benchmark": bench_name,
                        **self._judge_tags(bench_name),
                        **({"qtrust.trust_remote_code": "true"} if variant.model.trust_remote_code else {}),
                        RUN_COLOR_TAG: self.colors[variant.name],
                    },
                    parent_key=self.parent_key,
                    description=what + self._judged_by(bench_name),
                )
                t.log_params(key, {**self._variant_params(variant), **bench_params})
            for model in spec.models:
                for ens, members in self.plan.ensembles_of(model):
                    name = f"{model.name}-{ens.name}"
                    key = self.ensemble_key(name, bench_name)
                    reference = self.references.get(model.name)
                    t.ensure_run(
                        key,
                        self._run_name(name, bench_name),
                        {
                            "qtrust.sweep": spec.name,
                            "qtrust.kind": "ensemble",
                            "qtrust.benchmark": bench_name,
                            "qtrust.model": model.name,
                            "model": model.name,
                            "variant": name,
                            "method": "ensemble",
                            "bits": "+".join(_bits_tag(m.precision_bits) for m in members),
                            "benchmark": bench_name,
                            **self._judge_tags(bench_name),
                            RUN_COLOR_TAG: self.colors[name],
                        },
                        parent_key=self.parent_key,
                        description=f"precision ensemble {self.short[name]} over "
                        f"{', '.join(self.short[m.name] for m in members)} on {bench_name}: compared with "
                        f"{self.short.get(reference or '', reference)} on the same {n} items",
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
        self.share_view()

    def _run_name(self, name: str, bench_name: str) -> str:
        """``<short name> · <benchmark>`` (short: without the model prefix when the sweep has one model)."""
        return f"{self.short.get(name, name)} · {bench_name}"

    def _name_variants(self) -> None:
        """Short names, references and run colours of every variant and ensemble of the sweep."""
        self.short.update(short_names(self.plan))
        self.references.update(reference_variants(self.plan))
        self._ensembles.update(ensemble_names(self.plan))
        refs = {self.short[v.name] for v in self.plan.variants.values() if v.precision_bits >= 16}
        by_short = variant_colors(
            self.short.values(), references=refs, ensembles={self.short[n] for n in self._ensembles}
        )
        self.colors = {name: by_short[short] for name, short in self.short.items()}

    def _spec_file(self) -> Path:
        import tempfile

        text = redact(self.store.read_text(self.store.spec_path) or "")  # no credentials leave in an artifact
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
        from jobs.plan.judges import selected_judge

        judge = selected_judge(self.plan.benchmarks[bench_name])
        return {"judge": judge} if judge else {}

    def _judged_by(self, bench_name: str) -> str:
        from jobs.plan.judges import selected_judge

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
            "model.trust_remote_code": variant.model.trust_remote_code,
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
        tags = weights_tags(info.get("quantization", {}) or {})
        for bench in self.plan.benchmarks:
            self.tracker.log_params(self.variant_key(variant, bench), params)
            if metrics:
                self.tracker.log_metrics(self.variant_key(variant, bench), metrics)
            if tags:
                self.tracker.set_tags(self.variant_key(variant, bench), tags)

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
        due = [
            k
            for k, pending in self._rows.items()
            if pending and now - self._last_running.get(k, 0.0) >= RUNNING_METRIC_EVERY_S
        ]
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
        except Exception:
            return
        primary = run.benchmark.primary_metric
        value = metrics.get(primary)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            counts = state.counts[key]
            self.tracker.log_metrics(
                self.variant_key(variant, bench), {f"running.{primary}": value}, step=counts.shards_done
            )

    def adaptive(self, summary: AdaptiveSummary) -> None:
        """An adaptive sweep's decisions after a look (:mod:`jobs.tracking.adaptive`): per pair run its
        items used, planned, computed and saved, Δ with its confidence sequence and the decision tag;
        the parent's saved total. Only what changed since the last call is sent; :meth:`final` (or
        :meth:`adaptive_final`) adds the table ``adaptive.json``."""
        self._adaptive.report(summary)

    def adaptive_final(self, summary: AdaptiveSummary) -> None:
        """:meth:`adaptive`, then the parent's table ``adaptive.json`` of every pair."""
        self._adaptive.report(summary)
        self._adaptive.log_table()

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
            key = (
                self.variant_key(row.name, row.benchmark)
                if row.kind == "variant"
                else self.ensemble_key(row.name, row.benchmark)
            )
            metrics = dict(row.metrics)
            if row.kind == "variant":
                metrics.update(quant_metrics(quant_reports.get(row.name, {})))
            metrics.update({"n_items": row.n_items, "n_planned": row.n_planned})
            t.log_metrics(key, metrics)
            if row.frame is not None and not row.frame.empty:
                frame = row.frame.drop(columns=[c for c in ("logprobs", "item_key") if c in row.frame.columns])
                t.log_table(key, frame, ITEMS_TABLE)
                if row.judgments is not None and not row.judgments.empty:
                    t.log_table(key, row.judgments, JUDGMENTS_TABLE)
                t.log_dataset(
                    key,
                    run.items_frame(),
                    name=row.benchmark,
                    source=str(self.data_dir),
                    digest=run.digest(self.data_dir),
                )
            t.finish(key, "FINISHED" if self._complete(row) else "FAILED")
        if state is not None and getattr(state, "judges", None):
            judges = pd.DataFrame(
                [
                    {"judge": name, **counts, **dict(self.plan.judges[name].describe().items())}
                    for name, counts in state.judges.items()
                    if name in self.plan.judges
                ]
            )
            if not judges.empty:
                t.log_table(self.parent_key, judges, "judges.json")
        t.log_metrics(self.parent_key, {"variants": len(self.plan.variants), "item_requests": self.plan.n_requests})
        if not self._summary_logged:  # log_comparison's summary (with deltas) is richer: it is kept
            entries = [self._entry(row) for row in results]
            table = summary_table([e for e in entries if e is not None], perspective_table(self.plan, results))
            if not table.empty:
                t.log_table(self.parent_key, table, SUMMARY_TABLE)
        self._adaptive.log_table()  # the last decisions :meth:`adaptive` was given (none: not adaptive)
        t.finish(self.parent_key, "FAILED" if any(not self._complete(r) for r in results) else "FINISHED")

    def _complete(self, row: ResultRow) -> bool:
        """Every planned item stored, or (adaptive) every item its decision needed: the run ends FINISHED.

        An ensemble on an adaptive benchmark is complete once every pair there is final."""
        if row.complete:
            return True
        summary = self._adaptive.last
        if summary is None or row.benchmark not in summary.benchmarks:
            return False
        if row.kind != "variant":
            pairs = [p for p in summary.pairs if p.benchmark == row.benchmark]
            return bool(pairs) and all(p.final for p in pairs)
        return row.n_items + not_needed(summary, row.name, row.benchmark, row.n_planned) >= row.n_planned

    def _entry(self, row: ResultRow) -> dict[str, Any] | None:
        """A result's primary metric as a :func:`summary_table` entry (None when it has none)."""
        primary = self.plan.benchmarks[row.benchmark].benchmark.primary_metric
        if primary not in row.metrics:
            return None
        variant = self.plan.variants.get(row.name)
        return {
            "name": row.name,
            "short": self.short.get(row.name, row.name),
            "kind": row.kind,
            "model": row.model,
            "method": variant.recipe.method if variant is not None else "ensemble",
            "bits": row.bits,
            "benchmark": row.benchmark,
            "metric": primary,
            "value": row.metrics[primary],
        }

    # -- comparisons -----------------------------------------------------------------------------
    def log_comparison(
        self,
        frame: pd.DataFrame,
        flips: dict[tuple[str, str], pd.DataFrame],
        perspectives: dict[str, dict[str, float]],
        report_html: Path | None = None,
    ) -> None:
        """Log a sweep's comparison (the long frame of :mod:`jobs.results.compare`) into its runs.

        Each variant or ensemble run gets, per metric, ``<metric>_ci_low``, ``<metric>_ci_high``,
        ``<metric>_se`` and ``delta_<metric>`` with ``_ci_low``, ``_ci_high`` and ``_p`` (finite
        values only), the tags ``qtrust.flags`` and ``qtrust.degenerate``, its rows as the table
        ``comparison.json`` and its flip matrix as ``flips.json``. The parent gets every row as
        ``comparison.json``, ``summary.json``, figures under ``plots/`` and ``report.html`` when
        given. ``flips`` maps (name, benchmark) to a crosstab of outcomes (rows: the reference's).

        Safe before or after :meth:`final` (until :meth:`close`); figures are rendered here, the
        uploads queued like every other call. Never raises: what cannot be prepared is a warning.
        """
        t = self.tracker
        try:
            self._log_run_comparisons(frame, flips)
            t.log_table(self.parent_key, comparison_table(frame), COMPARISON_TABLE)
            t.log_table(self.parent_key, summary_table(frame_entries(frame), perspectives), SUMMARY_TABLE)
            self._summary_logged = True
        except Exception as err:
            t.report_error("log the comparison", err)
        try:
            figures = parent_figures(frame, flips, perspectives, self.colors, self.short)
        except Exception as err:
            t.report_error("draw the comparison's plots", err)
            figures = {}
        for path, render in figures.items():
            try:
                t.log_artifact_bytes(self.parent_key, render(), path)
            except Exception as err:
                t.report_error(f"draw {path}", err)
        if report_html is not None:
            try:
                t.log_artifact_bytes(self.parent_key, Path(report_html).read_bytes(), "report.html")
            except OSError as err:
                t.report_error(f"log {report_html}", err)
        self.share_view()

    def share_view(self) -> None:
        """Store the sweep's runs-table view (grouped by benchmark, metric columns shown): see
        :mod:`jobs.tracking.shared_view`; :meth:`view_url` opens it."""
        primaries = [run.benchmark.primary_metric for run in self.plan.benchmarks.values()]
        share = getattr(self.tracker, "share_view", None)
        if share is not None:
            share(view_key(self.plan.spec.name, self.store.uri), view_state(primaries), expand_run_key=self.parent_key)

    def view_url(self) -> str | None:
        """UI address of the sweep's runs in its shared view (None before the experiment is known)."""
        make = getattr(self.tracker, "view_url", None)
        return make(view_key(self.plan.spec.name, self.store.uri)) if make is not None else None

    def _log_run_comparisons(self, frame: pd.DataFrame, flips: dict[tuple[str, str], pd.DataFrame]) -> None:
        if frame.empty:
            return
        for (kind, name, bench), rows in frame.groupby(["kind", "name", "benchmark"], sort=False):
            key = self._result_key(str(kind), str(name), str(bench))
            if key is None:
                continue
            self.tracker.log_metrics(key, run_metrics(rows))
            self.tracker.set_tags(key, run_tags(rows))
            self.tracker.log_table(key, comparison_table(rows), COMPARISON_TABLE)
            matrix = flips.get((str(name), str(bench)))
            if matrix is not None and not matrix.empty:
                self.tracker.log_table(key, flips_table(matrix), FLIPS_TABLE)

    def _result_key(self, kind: str, name: str, bench: str) -> str | None:
        """The run key of a variant's or ensemble's result on a benchmark of this sweep (None: not one)."""
        if bench not in self.plan.benchmarks:
            return None
        if kind == "ensemble":
            return self.ensemble_key(name, bench) if name in self._ensembles else None
        return self.variant_key(name, bench) if name in self.plan.variants else None

    def interrupted(self) -> None:
        self._log_progress()
        self._adaptive.log_table()
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

    def unsent(self) -> dict[str, int]:
        """What never reached the tracking store (see :meth:`jobs.tracking.LiveTracker.unsent`)."""
        unsent = getattr(self.tracker, "unsent", None)
        return dict(unsent()) if unsent is not None else {}

    @property
    def experiment_id(self) -> str | None:
        return self.tracker.experiment_id

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "uri": redact(self.uri),
            "experiment_id": self.tracker.experiment_id,
            "runs": self.tracker.run_ids(),
            "url": self.tracker.run_url(self.parent_key),
            "view_url": self.view_url(),
            **({"unsent": unsent} if (unsent := self.unsent()) else {}),
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
