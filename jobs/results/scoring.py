"""Scoring: stored generation records -> labels -> metrics, for variants and precision ensembles.

Labels are derived here, from the stored outputs, never frozen into the records: a parser or
metric change (a new benchmark ``version``) re-scores a whole sweep without inference. Records are
looked up by item key (see :mod:`jobs.plan`), so an answer stored under another benchmark alias,
another shard size or by another sweep (the response cache) counts as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jobs.plan.build import BenchmarkRun, Plan
from jobs.plan.labels import label_for
from trust.benchmarks.label_metrics import score_labels
from trust.benchmarks.perspectives import benchmark_score, perspective_scores
from trust.comparison.ensemble import ensemble_labels
from trust.types import ERROR, Item

ITEM_COLUMNS = [
    "item_id",
    "item_key",
    "prompt",
    "output",
    "label",
    "reference",
    "choices",
    "logprobs",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "error",
    "attributes",
]


class LabelCache:
    """Labels of stored answers for one benchmark: each distinct (parser context, output) is parsed once.

    The parser context of an item (:meth:`trust.benchmarks.base.Benchmark.parse_context`) is what the
    parser reads of it; a benchmark whose parser reads only the output parses ``"wrong"`` once for a
    whole sweep, however many variants and items answered it.
    """

    def __init__(self, run: BenchmarkRun):
        self.run = run
        self.parsed = 0
        self._memo: dict[tuple[Any, str], str] = {}
        self._loglikelihood = run.benchmark.task == "loglikelihood"
        if not self._loglikelihood:
            contexts = pd.Series([run.benchmark.parse_context(it) for it in run.items], dtype=object)
            self._ctx_codes, self._ctx_values = pd.factorize(contexts, use_na_sentinel=False)

    def label(self, item: Item, output: str | None, logprobs: Any, error: str | None) -> str:
        """The label of one stored answer (memoised like :meth:`labels`)."""
        if error or self._loglikelihood:
            return label_for(self.run, item, output, logprobs, error)
        key = (self.run.benchmark.parse_context(item), output or "")
        label = self._memo.get(key)
        if label is None:
            label = self._memo[key] = self.run.benchmark.parse(item, output or "")
            self.parsed += 1
        return label

    def labels(
        self, where: np.ndarray, outputs: list[str | None], logprobs: list[Any], errors: list[str | None]
    ) -> np.ndarray:
        """Labels of the items at positions ``where`` of the run with these stored answers."""
        items = self.run.items
        if self._loglikelihood:
            return np.array(
                [label_for(self.run, items[i], o, lp, e) for i, o, lp, e in zip(where, outputs, logprobs, errors)],
                dtype=object,
            )
        texts = pd.Series([o or "" for o in outputs], dtype=object)
        out_codes, out_values = pd.factorize(texts, use_na_sentinel=False)
        combined = self._ctx_codes[where].astype(np.int64) * max(1, len(out_values)) + out_codes
        unique, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
        distinct = np.empty(len(unique), dtype=object)
        for j, row in enumerate(first):
            distinct[j] = self.label(items[where[row]], out_values[out_codes[row]], None, None)
        labels = distinct[inverse.reshape(-1)]
        failed = np.fromiter((e is not None for e in errors), dtype=bool, count=len(errors))
        labels[failed] = ERROR
        return labels


def _objects(values: Any) -> pd.Series:
    """A column kept as Python objects (no conversion of every string to Arrow)."""
    return pd.Series(values, dtype=object, copy=False)


class RecordView:
    """Stored records as plain arrays with a hash index on the item key: looked up by many (variant, benchmark)."""

    COLUMNS = ("output", "error", "logprobs", "prompt_tokens", "completion_tokens", "latency_s")

    def __init__(self, records: pd.DataFrame):
        self.index = (
            pd.Index(records["item_key"].to_numpy(dtype=object)) if len(records) else pd.Index([], dtype=object)
        )
        self.columns = {c: records[c].to_numpy(dtype=object) for c in self.COLUMNS}

    def positions(self, keys: list[str]) -> np.ndarray:
        """Row of each key, -1 where there is no record."""
        return self.index.get_indexer(keys) if len(self.index) else np.full(len(keys), -1)


def item_frame(
    run: BenchmarkRun,
    keys: list[str],
    records: pd.DataFrame | RecordView,
    labels: LabelCache | None = None,
) -> pd.DataFrame:
    """The benchmark's items with their stored answers and labels (only items that have a record)."""
    labels = labels or LabelCache(run)
    view = records if isinstance(records, RecordView) else RecordView(records)
    rows = view.positions(keys)
    where = np.flatnonzero(rows >= 0)
    if not len(where):
        return pd.DataFrame(columns=ITEM_COLUMNS)
    rows = rows[where]
    static = run.item_arrays()
    col = view.columns
    outputs = [o if isinstance(o, str) else None for o in col["output"][rows]]
    errors = [e if isinstance(e, str) else None for e in col["error"][rows]]
    if run.benchmark.task == "loglikelihood":
        logprobs = [list(lp) if lp is not None and not isinstance(lp, float) else None for lp in col["logprobs"][rows]]
    else:
        logprobs = [None] * len(where)
    return pd.DataFrame(
        {
            "item_id": _objects(static["item_id"][where]),
            "item_key": _objects(np.asarray(keys, dtype=object)[where]),
            "prompt": _objects(static["prompt"][where]),
            "output": _objects(outputs),
            "label": _objects(labels.labels(where, outputs, logprobs, errors)),
            "reference": _objects(static["reference"][where]),
            "choices": _objects(static["choices"][where]),
            "logprobs": _objects(logprobs),
            "prompt_tokens": col["prompt_tokens"][rows].astype("int64"),
            "completion_tokens": col["completion_tokens"][rows].astype("int64"),
            "latency_s": col["latency_s"][rows].astype("float64"),
            "error": _objects(errors),
            "attributes": _objects(static["attributes"][where]),
        },
        columns=ITEM_COLUMNS,
    )


@dataclass
class ResultRow:
    """Metrics of one variant or ensemble on one benchmark."""

    kind: str  # "variant" or "ensemble"
    name: str
    model: str
    benchmark: str
    bits: str
    n_items: int
    n_planned: int
    metrics: dict[str, float] = field(default_factory=dict)
    frame: pd.DataFrame | None = None
    judgments: pd.DataFrame | None = None
    """One row per (answer, judge): label, reason, raw text (benchmarks with judges)."""

    @property
    def complete(self) -> bool:
        return self.n_items == self.n_planned


def _bits_label(bits: float) -> str:
    return "ref" if bits >= 16 else f"{bits:g}"


def compute_results(plan: Plan, records: pd.DataFrame, judgments: pd.DataFrame | None = None) -> list[ResultRow]:
    """Score every (variant, benchmark) and every (model, ensemble, benchmark) from stored records.

    ``records`` is indexed by item key (one record per key, see :class:`jobs.store.shards.ScanResult`).
    ``judgments`` (one per judgment key) give the labels of benchmarks that have judges: the
    selected judge's labels are the benchmark's labels (so ensembles vote over them), and every
    judge adds its own metrics, its agreement with the others and their majority (see
    :mod:`jobs.results.judge_labels`).
    """
    from jobs.results.judge_labels import JudgedLabels

    rows: list[ResultRow] = []
    labels: dict[tuple[str, str], dict[str, str]] = {}
    view = RecordView(records)
    judged = JudgedLabels(plan, judgments)
    for bench_name, run in plan.benchmarks.items():
        items = run.items
        cache = LabelCache(run)
        for variant in plan.variants.values():
            frame = item_frame(run, plan.keys_of(variant.name, bench_name), view, cache)
            judge_metrics = judged.apply(bench_name, frame)
            by_id = dict(zip(frame["item_id"].tolist(), frame["label"].tolist()))
            labels[(variant.name, bench_name)] = by_id
            logprobs = None
            if run.benchmark.task == "loglikelihood":
                logprobs = dict(zip(frame["item_id"].tolist(), frame["logprobs"].tolist()))
            metrics = score_labels(run.benchmark, items, by_id, logprobs) if by_id else {}
            _add_perspective_score(run, metrics)
            metrics.update(judge_metrics)
            metrics.update(_run_stats(frame))
            rows.append(
                ResultRow(
                    kind="variant",
                    name=variant.name,
                    model=variant.model.name,
                    benchmark=bench_name,
                    bits=_bits_label(variant.precision_bits),
                    n_items=len(frame),
                    n_planned=len(items),
                    metrics=metrics,
                    frame=frame,
                    judgments=judged.table(bench_name, frame) if judge_metrics else None,
                )
            )
        for model in plan.spec.models:
            for ens, member_variants in plan.ensembles_of(model):
                members = {v.name: v for v in member_variants}
                member_labels = {v: labels[(v, bench_name)] for v in members}
                precisions = {v: r.precision_bits for v, r in members.items()}
                voted = ensemble_labels(member_labels, precisions)
                metrics = score_labels(run.benchmark, items, voted) if voted else {}
                _add_perspective_score(run, metrics)
                rows.append(
                    ResultRow(
                        kind="ensemble",
                        name=f"{model.name}-{ens.name}",
                        model=model.name,
                        benchmark=bench_name,
                        bits="+".join(_bits_label(r.precision_bits) for r in members.values()),
                        n_items=len(voted),
                        n_planned=len(items),
                        metrics=metrics,
                        frame=pd.DataFrame({"item_id": list(voted), "label": list(voted.values())}),
                    )
                )
    return rows


def _add_perspective_score(run: BenchmarkRun, metrics: dict[str, float]) -> None:
    score = benchmark_score(getattr(run.benchmark, "definition", None), metrics)
    if score is not None:
        metrics["perspective_score"] = score


def perspective_table(plan: Plan, results: list[ResultRow]) -> dict[str, dict[str, float]]:
    """Per variant or ensemble: perspective -> mean 0-100 score over its benchmarks."""
    table: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r.name for r in results):
        pairs = []
        for row in results:
            if row.name != name or "perspective_score" not in row.metrics:
                continue
            definition = getattr(plan.benchmarks[row.benchmark].benchmark, "definition", None)
            pairs.append((definition.perspective if definition else None, row.metrics["perspective_score"]))
        scores = perspective_scores(pairs)
        if scores:
            table[name] = scores
    return table


#: Run statistics added to every variant's metrics (logged to MLflow, kept out of result tables).
RUN_STATS = ("error_rate", "mean_completion_tokens", "items_per_s", "tokens_per_s")


def _run_stats(frame: pd.DataFrame) -> dict[str, float]:
    if frame.empty:
        return {}
    errors = frame["error"].notna().sum()
    latency = float(frame["latency_s"].sum())
    tokens = float(frame["completion_tokens"].sum())
    return {
        "error_rate": float(errors) / len(frame),
        "mean_completion_tokens": float(frame["completion_tokens"].mean()),
        "items_per_s": len(frame) / latency if latency > 0 else math.nan,
        "tokens_per_s": tokens / latency if latency > 0 else math.nan,
    }
