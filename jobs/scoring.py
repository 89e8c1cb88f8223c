"""Scoring: stored generation records -> labels -> metrics, for variants and precision ensembles.

Labels are derived here, from the stored outputs, never frozen into the records: a parser or
metric change (a new benchmark ``version``) re-scores a whole sweep without inference. Records are
looked up by item key (see :mod:`jobs.plan`), so an answer stored under another benchmark alias,
another shard size or by another sweep (the response cache) counts as well.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from jobs.plan import BenchmarkRun, Plan
from trust.ensemble import ensemble_labels
from trust.perspectives import benchmark_score, perspective_scores
from trust.scoring import score_labels
from trust.types import ERROR, Item


def label_for(run: BenchmarkRun, item: Item, output: str | None, logprobs: Any, error: str | None) -> str:
    """The label of one stored answer under the benchmark's current parser."""
    if error:
        return ERROR
    if run.benchmark.task == "loglikelihood":
        values = list(logprobs) if logprobs is not None else []
        if not item.choices or len(values) != len(item.choices):
            return ERROR
        best = max(range(len(values)), key=lambda i: values[i])
        return item.choices[best]
    return run.benchmark.parse(item, output or "")


def result_rows(
    items: list[Item], keys: list[str], result: dict[str, Any], *, attempt: int, worker: dict[str, Any], now: float
) -> list[dict[str, Any]]:
    """Generation records of one shard (what the store keeps): the answer, never a label."""
    by_id = {r["id"]: r for r in result["results"]}
    worker_text = json.dumps({k: worker.get(k) for k in ("node_ip", "node_id", "pid", "gpu_ids")}, sort_keys=True)
    rows = []
    for item, key in zip(items, keys):
        res = by_id.get(item.id) or {"error": "the worker returned no result for this item"}
        rows.append(
            {
                "item_key": key,
                "item_id": item.id,
                "prompt": json.dumps(item.messages, ensure_ascii=False),
                "choices": json.dumps(item.choices, ensure_ascii=False) if item.choices else None,
                "output": res.get("text"),
                "logprobs": res.get("logprobs") or None,
                "prompt_tokens": int(res.get("prompt_tokens") or 0),
                "completion_tokens": int(res.get("completion_tokens") or 0),
                "latency_s": float(res.get("latency_s") or 0.0),
                "error": res.get("error"),
                "attempt": attempt,
                "worker": worker_text,
                "committed_at": now,
            }
        )
    return rows


def item_frame(run: BenchmarkRun, keys: list[str], records: pd.DataFrame) -> pd.DataFrame:
    """The benchmark's items with their stored answers and labels (only items that have a record)."""
    found = records.reindex(keys)
    present = found["item_key"].notna().to_numpy()
    rows = []
    for item, key, has, output, logprobs, error, ptok, ctok, latency in zip(
        run.items,
        keys,
        present,
        found["output"],
        found["logprobs"],
        found["error"],
        found["prompt_tokens"],
        found["completion_tokens"],
        found["latency_s"],
    ):
        if not has:
            continue
        error = error if isinstance(error, str) else None
        output = output if isinstance(output, str) else None
        rows.append(
            {
                "item_id": item.id,
                "item_key": key,
                "prompt": json.dumps(item.messages, ensure_ascii=False),
                "output": output,
                "label": label_for(run, item, output, logprobs, error),
                "reference": item.reference,
                "choices": json.dumps(item.choices, ensure_ascii=False) if item.choices else None,
                "logprobs": list(logprobs) if logprobs is not None and not isinstance(logprobs, float) else None,
                "prompt_tokens": int(ptok),
                "completion_tokens": int(ctok),
                "latency_s": float(latency),
                "error": error,
                "attributes": json.dumps(item.attributes, ensure_ascii=False, sort_keys=True),
            }
        )
    columns = ["item_id", "item_key", "prompt", "output", "label", "reference", "choices", "logprobs",
               "prompt_tokens", "completion_tokens", "latency_s", "error", "attributes"]
    return pd.DataFrame(rows, columns=columns)


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

    @property
    def complete(self) -> bool:
        return self.n_items == self.n_planned


def _bits_label(bits: float) -> str:
    return "ref" if bits >= 16 else f"{bits:g}"


def compute_results(plan: Plan, records: pd.DataFrame) -> list[ResultRow]:
    """Score every (variant, benchmark) and every (model, ensemble, benchmark) from stored records.

    ``records`` is indexed by item key (one record per key, see :class:`jobs.store.ScanResult`).
    """
    rows: list[ResultRow] = []
    labels: dict[tuple[str, str], dict[str, str]] = {}
    for bench_name, run in plan.benchmarks.items():
        items = run.items
        for variant in plan.variants.values():
            frame = item_frame(run, plan.keys_of(variant.name, bench_name), records)
            by_id = dict(zip(frame["item_id"], frame["label"]))
            labels[(variant.name, bench_name)] = by_id
            logprobs = None
            if run.benchmark.task == "loglikelihood":
                logprobs = {i: (list(lp) if lp is not None else None) for i, lp in zip(frame["item_id"], frame["logprobs"])}
            metrics = score_labels(run.benchmark, items, by_id, logprobs) if by_id else {}
            _add_perspective_score(run, metrics)
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
