"""The seed papers' remaining benchmarks in one sweep on the built-in model (SmolLM2-135M), local Ray,
MLflow: XSafety, its commonsense part, SafetyBench (on a small questions file in the authors' layout),
HotpotQA closed-book and with context, and 5-shot MMLU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from jobs.runner import run_sweep
from jobs.spec.load import parse_spec
from jobs.spec.run_options import RunOptions
from tests.support.data_folders import completed_data_folder
from tests.support.helpers import stored_records
from tests.support.mlflow_store import sqlite_store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

BENCHMARKS = [
    {"name": "xsafety", "limit": 2, "max_new_tokens": 12},
    {"name": "xsafety_commonsense", "limit": 3},
    {"name": "safetybench", "limit": 5},
    # closed-book answers judged for correctness by the built-in model with the qa-correctness template
    {"name": "hotpotqa", "limit": 2, "max_new_tokens": 8, "judges": ["smol"]},
    {"name": "hotpotqa", "alias": "hotpotqa_context", "options": {"mode": "context"}, "limit": 1, "max_new_tokens": 8},
    {"name": "mmlu", "limit": 3},
]


def test_the_seed_benchmarks_run_on_the_builtin_model(data_dir: Path, tmp_path: Path) -> None:
    data = completed_data_folder(data_dir, tmp_path)
    spec = parse_spec(
        {
            "name": "seeds",
            "models": [{"name": "smollm2", "source": "smollm2-135m", "dtype": "float32"}],
            "recipes": [{"name": "ref", "method": "none"}],
            "benchmarks": BENCHMARKS,
            "judges": [
                {
                    "name": "smol",
                    "kind": "model",
                    "model": "smollm2-135m",
                    "decoding": "choose",
                    "resources": {"num_cpus": 0.5},
                }
            ],
            "quality_probe": False,
            "storage": {"root": str(tmp_path / "runs")},
            "resources": {"num_cpus_per_worker": 1.5},
        }
    )
    outcome = run_sweep(spec, RunOptions(data_dir=data, tracking_uri=sqlite_store(tmp_path / "m.db"), quiet=True))
    assert not outcome.failed
    table = stored_records(outcome)
    assert table["error"].isna().all(), table["error"].dropna().tolist()
    counts = table.groupby("benchmark").size().to_dict()
    assert counts == {
        "xsafety": 2,
        "xsafety_commonsense": 3,
        "safetybench": 5,
        "hotpotqa": 2,
        "hotpotqa_context": 1,
        "mmlu": 3,
    }
    # log-likelihood benchmarks store one log-probability per option; generated ones store text
    for name in ("xsafety_commonsense", "safetybench", "mmlu"):
        rows = table[table["benchmark"] == name]
        assert all(len(lp) == len(json.loads(choices)) for lp, choices in zip(rows["logprobs"], rows["choices"])), name
    assert table[table["benchmark"] == "hotpotqa"]["output"].str.len().gt(0).all()

    metrics = {r.benchmark: r.metrics for r in outcome.results if r.name == "smollm2-ref"}
    assert 0.0 <= metrics["mmlu"]["macro_accuracy"] <= 1.0 and any(k.startswith("accuracy/") for k in metrics["mmlu"])
    assert 0.0 <= metrics["safetybench"]["accuracy"] <= 1.0
    assert any(k.startswith("accuracy/") for k in metrics["safetybench"])
    assert 0.0 <= metrics["hotpotqa_context"]["token_f1"] <= 1.0
    # the judged entry's labels are the judge's verdicts: judged accuracy has a value, exact match none;
    # the unjudged entry the other way round (neither is ever a silent 0)
    assert 0.0 <= metrics["hotpotqa"]["judged_accuracy"] <= 1.0 and math.isnan(metrics["hotpotqa"]["exact_match"])
    assert math.isnan(metrics["hotpotqa_context"]["judged_accuracy"])
    assert 0.0 <= metrics["hotpotqa_context"]["exact_match"] <= 1.0
    assert metrics["hotpotqa"]["judge/smol/unreadable_rate"] == 0.0  # decoding "choose" always reads a label
    assert any(k.startswith("safe_rate/") for k in metrics["xsafety"]) and not math.isnan(
        metrics["xsafety"]["safe_rate"]
    )

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    runs = client.search_runs([outcome.experiment_id], max_results=100)
    logged = {
        r.data.tags.get("qtrust.benchmark"): r.data.metrics for r in runs if r.data.tags.get("qtrust.kind") == "variant"
    }
    assert "macro_accuracy" in logged["mmlu"] and "token_f1" in logged["hotpotqa_context"]
