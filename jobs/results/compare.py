"""What quantization changed, and how sure we are: every result against its model's reference.

From the scored results of a sweep (:func:`jobs.results.scoring.compute_results`) and nothing else — no
inference — this computes, per benchmark:

- an estimate with a 95% interval for every metric (Wilson for rates of per-item 0/1 values, a
  percentile bootstrap over items otherwise; the method is named in each row),
- the paired comparison of each variant and ensemble with the reference of its model on the items
  both answered (paired bootstrap interval of the delta, McNemar's exact test for 0/1 metrics),
- flip tables (the items whose outcome changed: correct→wrong, refused→complied, ...),
- degenerate-variant flags (unparsed answers, one label everywhere, probe perplexity),
- the precision-ensemble search: every subset (size >= 2) of a model's quantized variants of one
  method, voted with Lu et al.'s rule from the stored labels, against its best member and the reference.

The statistics themselves live in :mod:`trust.comparison.stats`, :mod:`trust.comparison.flips`, :mod:`trust.comparison.degenerate` and
:mod:`trust.comparison.ensemble_search`; this module only lines results up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from jobs.plan.build import BenchmarkRun, Plan
from jobs.plan.labels import higher_is_better
from jobs.plan.naming import reference_variants, short_name
from jobs.results.scoring import ResultRow, perspective_table
from trust.benchmarks.label_metrics import item_values, score_labels, scored_items
from trust.comparison.degenerate import (
    CHANCE,
    Flag,
    Thresholds,
    chance_baseline,
    degenerate_flags,
    majority_baseline,
)
from trust.comparison.ensemble_search import ensemble_candidates
from trust.comparison.flips import flip_matrix, flip_table, outcome
from trust.comparison.stats import (
    Estimate,
    PairedDelta,
    bootstrap_estimate,
    item_mean_estimate,
    paired_bootstrap_delta,
    paired_delta,
)
from trust.types import Item

#: Columns of :attr:`Comparison.frame` (one row per benchmark × variant or ensemble × metric).
COLUMNS = [
    "model",
    "benchmark",
    "name",
    "short",
    "kind",
    "method",
    "bits",
    "bits_value",
    "metric",
    "primary",
    "higher_is_better",
    "value",
    "se",
    "low",
    "high",
    "interval",
    "n",
    "baseline",
    "delta",
    "delta_low",
    "delta_high",
    "delta_method",
    "p_value",
    "significant",
    "flags",
]

#: Columns of :attr:`Comparison.ensembles` (the ensemble search).
ENSEMBLE_COLUMNS = [
    "model",
    "benchmark",
    "method",
    "members",
    "size",
    "metric",
    "value",
    "low",
    "high",
    "n",
    "best_member",
    "best_value",
    "delta_vs_best",
    "delta_vs_best_low",
    "delta_vs_best_high",
    "p_vs_best",
    "delta_vs_reference",
    "delta_vs_reference_low",
    "delta_vs_reference_high",
    "p_vs_reference",
]


class CompareSettings(BaseModel):
    """How comparisons are computed (every figure is reproducible from the seed)."""

    n_boot: int = Field(2000, ge=100, description="resamples of the paired bootstrap of per-item metrics")
    n_boot_generic: int = Field(
        200, ge=50, description="resamples for metrics that are not item means (rescored each time)"
    )
    seed: int = 0
    thresholds: Thresholds = Field(default_factory=Thresholds)
    ensemble_search: bool = True
    max_ensemble_candidates: int = 64


@dataclass
class Comparison:
    """Everything :func:`compare_results` found (see the module docstring)."""

    frame: pd.DataFrame
    flips: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    matrices: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    flags: dict[tuple[str, str], list[Flag]] = field(default_factory=dict)
    ensembles: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ENSEMBLE_COLUMNS))
    perspectives: dict[str, dict[str, float]] = field(default_factory=dict)
    baselines: dict[str, tuple[str | None, float]] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    """model -> the name of its reference variant."""

    def rows(self, benchmark: str, metric: str | None = None) -> pd.DataFrame:
        """The frame's rows of one benchmark (of one metric, or of the primary metric when None)."""
        sel = self.frame[self.frame["benchmark"] == benchmark]
        return sel[sel["primary"]] if metric is None else sel[sel["metric"] == metric]


# --------------------------------------------------------------------------------------------- per row


class _Scored:
    """One result's labels on its benchmark: per-item values and a memoised rescoring for bootstraps."""

    def __init__(self, run: BenchmarkRun, row: ResultRow, by_id: dict[str, Item] | None = None):
        self.run = run
        self.row = row
        frame = row.frame if row.frame is not None else pd.DataFrame(columns=["item_id", "label"])
        self.labels: dict[str, str] = dict(zip(frame["item_id"].tolist(), frame["label"].tolist()))
        self.logprobs: dict[str, Any] | None = None
        if run.benchmark.task == "loglikelihood" and "logprobs" in frame.columns:
            self.logprobs = dict(zip(frame["item_id"].tolist(), frame["logprobs"].tolist()))
        self.by_id: dict[str, Item] = by_id if by_id is not None else {it.id: it for it in run.items}
        self.items: list[Item] = scored_items(run.items, self.labels)
        self.ids = [it.id for it in self.items]
        self.metrics = score_labels(run.benchmark, run.items, self.labels, self.logprobs) if self.labels else {}
        values = item_values(run.benchmark, run.items, self.labels, self.logprobs) if self.labels else {}
        self.values: dict[str, pd.Series] = {
            name: pd.Series(np.asarray(v, dtype=float), index=self.ids) for name, v in values.items()
        }

    def score_at(self, ids: list[str]) -> dict[str, float]:
        """All metrics on the items ``ids`` (repeats allowed: a bootstrap resample)."""
        items = [self.by_id[i] for i in ids]
        labels = [self.labels[i] for i in ids]
        if self.logprobs is None:
            return self.run.benchmark.score(items, labels)
        return self.run.benchmark.score(items, labels, [self.logprobs.get(i) for i in ids])


def _memo(fn: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
    """Memoise on the index array (every metric of one bootstrap sees the same resamples)."""
    cache: dict[bytes, Any] = {}

    def call(idx: np.ndarray) -> Any:
        key = np.asarray(idx, dtype=np.int64).tobytes()
        if key not in cache:
            cache[key] = fn(idx)
        return cache[key]

    return call


def _metric_names(scored: _Scored) -> list[str]:
    return [name for name, value in scored.metrics.items() if isinstance(value, (int, float))]


def _estimate(scored: _Scored, name: str, settings: CompareSettings, rescore: Callable[[np.ndarray], dict]) -> Estimate:
    if name in scored.values:
        return item_mean_estimate(scored.values[name].to_numpy(), n_boot=settings.n_boot, seed=settings.seed)
    point = float(scored.metrics.get(name, math.nan))
    return bootstrap_estimate(
        lambda idx: float(rescore(idx).get(name, math.nan)),
        len(scored.ids),
        point=point,
        n_boot=settings.n_boot_generic,
        seed=settings.seed,
    )


def _paired(
    reference: _Scored,
    variant: _Scored,
    name: str,
    settings: CompareSettings,
    rescore_pair: Callable[[np.ndarray], tuple[dict, dict]],
    common: list[str],
) -> PairedDelta | None:
    if not common:
        return None
    if name in reference.values and name in variant.values:
        return paired_delta(
            reference.values[name].reindex(common).to_numpy(),
            variant.values[name].reindex(common).to_numpy(),
            n_boot=settings.n_boot,
            seed=settings.seed,
        )

    def statistic(idx: np.ndarray) -> tuple[float, float]:
        ref, var = rescore_pair(idx)
        return float(ref.get(name, math.nan)), float(var.get(name, math.nan))

    return paired_bootstrap_delta(statistic, len(common), n_boot=settings.n_boot_generic, seed=settings.seed)


# ------------------------------------------------------------------------------------------- the whole


def compare_results(
    plan: Plan,
    results: list[ResultRow],
    quant_reports: dict[str, dict[str, Any]] | None = None,
    settings: CompareSettings | None = None,
) -> Comparison:
    """Line every result up against its model's reference (see the module docstring)."""
    settings = settings or CompareSettings()
    quant_reports = quant_reports or {}
    n_models = len(plan.spec.models)
    references = reference_variants(plan)
    comparison = Comparison(
        frame=pd.DataFrame(columns=COLUMNS), references=references, perspectives=perspective_table(plan, results)
    )
    records: list[dict[str, Any]] = []
    ensemble_records: list[dict[str, Any]] = []
    for bench_name, run in plan.benchmarks.items():
        rows = [r for r in results if r.benchmark == bench_name]
        by_id = {it.id: it for it in run.items}  # one index per benchmark, shared by its results
        scored = {r.name: _Scored(run, r, by_id) for r in rows}
        refs = [it.reference for it in run.items]
        baseline = majority_baseline(refs) if any(r is not None for r in refs) else (None, math.nan)
        chance = chance_baseline([it.choices for it in run.items])
        if chance is not None and baseline[0] is not None:  # options differ per item: no majority class
            baseline = (CHANCE, chance)
        comparison.baselines[bench_name] = baseline
        primary = run.benchmark.primary_metric
        for row in rows:
            this = scored[row.name]
            ref_name = references.get(row.model)
            ref = scored.get(ref_name) if ref_name and ref_name != row.name else None
            flags = _flags(run, this, row, ref_name, quant_reports, settings)
            comparison.flags[(row.name, bench_name)] = flags
            common = [i for i in this.ids if ref is not None and i in ref.labels]
            if ref is not None:
                _add_flips(comparison, run, ref, this, common)
            rescore = _memo(lambda idx, s=this: s.score_at([s.ids[i] for i in idx]))
            rescore_pair = _memo(
                lambda idx, r=ref, s=this, c=common: (r.score_at([c[i] for i in idx]), s.score_at([c[i] for i in idx]))
            )
            variant = plan.variants.get(row.name)
            for name in _metric_names(this):
                est = _estimate(this, name, settings, rescore)
                delta = _paired(ref, this, name, settings, rescore_pair, common) if ref is not None else None
                records.append(
                    {
                        "model": row.model,
                        "benchmark": bench_name,
                        "name": row.name,
                        "short": short_name(row.name, row.model, n_models),
                        "kind": row.kind,
                        "method": variant.recipe.method if variant is not None else "ensemble",
                        "bits": row.bits,
                        "bits_value": float(variant.precision_bits) if variant is not None else math.nan,
                        "metric": name,
                        "primary": name == primary,
                        "higher_is_better": higher_is_better(run, name),
                        "value": est.value,
                        "se": est.se,
                        "low": est.low,
                        "high": est.high,
                        "interval": est.method,
                        "n": est.n,
                        "baseline": baseline[1] if name == primary else math.nan,
                        "delta": delta.delta if delta else math.nan,
                        "delta_low": delta.low if delta else math.nan,
                        "delta_high": delta.high if delta else math.nan,
                        "delta_method": delta.method if delta else "",
                        "p_value": delta.mcnemar_p if delta and delta.mcnemar_p is not None else math.nan,
                        "significant": bool(delta.significant) if delta else False,
                        "flags": "; ".join(f.message for f in flags),
                    }
                )
        if settings.ensemble_search:
            ensemble_records += _search(plan, run, bench_name, scored, references, settings)
    comparison.frame = pd.DataFrame(records, columns=COLUMNS)
    comparison.ensembles = pd.DataFrame(ensemble_records, columns=ENSEMBLE_COLUMNS)
    return comparison


def _flags(
    run: BenchmarkRun,
    scored: _Scored,
    row: ResultRow,
    ref_name: str | None,
    quant_reports: dict[str, dict[str, Any]],
    settings: CompareSettings,
) -> list[Flag]:
    if not scored.labels:
        return []
    labels = list(scored.labels.values())
    references = [scored.by_id[i].reference if i in scored.by_id else None for i in scored.labels]
    ratio = None
    if row.kind == "variant" and ref_name and row.name != ref_name:
        mine = _number(quant_reports.get(row.name, {}).get("probe_perplexity"))
        base = _number(quant_reports.get(ref_name, {}).get("probe_perplexity"))
        if mine is not None and base:
            ratio = mine / base
    has_refs = any(r is not None for r in references)
    return degenerate_flags(
        labels, references if has_refs else None, perplexity_ratio=ratio, thresholds=settings.thresholds
    )


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _add_flips(comparison: Comparison, run: BenchmarkRun, ref: _Scored, this: _Scored, common: list[str]) -> None:
    references = [this.by_id[i].reference for i in common]
    ref_labels = [ref.labels[i] for i in common]
    var_labels = [this.labels[i] for i in common]
    key = (this.row.name, this.row.benchmark)
    table = flip_table(common, ref_labels, var_labels, references)
    if not table.empty:  # the answers themselves, so the change can be read (long ones cut)
        for side, scored in (("reference_output", ref), ("variant_output", this)):
            outputs = _outputs(scored)
            if outputs:
                table[side] = [outputs.get(i, "")[:OUTPUT_CHARS] for i in table["item_id"]]
    comparison.flips[key] = table
    comparison.matrices[key] = flip_matrix(
        [outcome(label, r) for label, r in zip(ref_labels, references)],
        [outcome(label, r) for label, r in zip(var_labels, references)],
    )


#: How much of each answer a flip table keeps (the full answers are in the runs' items tables).
OUTPUT_CHARS = 300


def _outputs(scored: _Scored) -> dict[str, str]:
    frame = scored.row.frame
    if frame is None or "output" not in frame.columns:
        return {}
    return {i: (o if isinstance(o, str) else "") for i, o in zip(frame["item_id"], frame["output"])}


def _search(
    plan: Plan,
    run: BenchmarkRun,
    bench_name: str,
    scored: dict[str, _Scored],
    references: dict[str, str],
    settings: CompareSettings,
) -> list[dict[str, Any]]:
    """Every subset (size >= 2) of a model's quantized variants of one method, as a precision ensemble."""
    primary = run.benchmark.primary_metric
    better = higher_is_better(run, primary) is not False
    out: list[dict[str, Any]] = []
    for model in plan.spec.models:
        ref_name = references.get(model.name)
        by_method: dict[str, list[Any]] = {}
        for v in plan.variants.values():
            if v.model.name == model.name and v.name != ref_name and v.name in scored:
                by_method.setdefault(v.recipe.method, []).append(v)
        for method, variants in sorted(by_method.items()):
            if len(variants) < 2:
                continue
            try:
                candidates = ensemble_candidates(
                    {v.name: scored[v.name].labels for v in variants},
                    {v.name: v.precision_bits for v in variants},
                    max_candidates=settings.max_ensemble_candidates,
                )
            except ValueError:
                continue  # too many subsets: the search is skipped for this method (said in the report)
            for cand in candidates:
                out.append(
                    _candidate_row(
                        run, bench_name, model.name, method, cand, scored, ref_name, primary, better, settings
                    )
                )
    return out


def _candidate_row(
    run: BenchmarkRun,
    bench_name: str,
    model: str,
    method: str,
    cand: Any,
    scored: dict[str, _Scored],
    ref_name: str | None,
    primary: str,
    better: bool,
    settings: CompareSettings,
) -> dict[str, Any]:
    fake = ResultRow(
        kind="ensemble",
        name="+".join(cand.members),
        model=model,
        benchmark=bench_name,
        bits="",
        n_items=len(cand.labels),
        n_planned=len(run.items),
        frame=pd.DataFrame({"item_id": list(cand.labels), "label": list(cand.labels.values())}),
    )
    ens = _Scored(run, fake, next(iter(scored.values())).by_id if scored else None)
    rescore = _memo(lambda idx: ens.score_at([ens.ids[i] for i in idx]))
    est = _estimate(ens, primary, settings, rescore)
    members = [(m, float(scored[m].metrics.get(primary, math.nan))) for m in cand.members]
    finite = [(m, v) for m, v in members if not math.isnan(v)]
    best = (max if better else min)(finite, key=lambda mv: mv[1]) if finite else (cand.members[0], math.nan)

    def vs(other: _Scored | None) -> PairedDelta | None:
        if other is None:
            return None
        common = [i for i in ens.ids if i in other.labels]
        pair = _memo(lambda idx: (other.score_at([common[i] for i in idx]), ens.score_at([common[i] for i in idx])))
        return _paired(other, ens, primary, settings, pair, common)

    d_best = vs(scored.get(best[0]))
    d_ref = vs(scored.get(ref_name) if ref_name else None)
    nan = math.nan
    return {
        "model": model,
        "benchmark": bench_name,
        "method": method,
        "members": "+".join(cand.members),
        "size": len(cand.members),
        "metric": primary,
        "value": est.value,
        "low": est.low,
        "high": est.high,
        "n": est.n,
        "best_member": best[0],
        "best_value": best[1],
        "delta_vs_best": d_best.delta if d_best else nan,
        "delta_vs_best_low": d_best.low if d_best else nan,
        "delta_vs_best_high": d_best.high if d_best else nan,
        "p_vs_best": d_best.mcnemar_p if d_best and d_best.mcnemar_p is not None else nan,
        "delta_vs_reference": d_ref.delta if d_ref else nan,
        "delta_vs_reference_low": d_ref.low if d_ref else nan,
        "delta_vs_reference_high": d_ref.high if d_ref else nan,
        "p_vs_reference": d_ref.mcnemar_p if d_ref and d_ref.mcnemar_p is not None else nan,
    }
