"""End to end on real parts: local Ray, the HF engine on a tiny Llama, Parquet shards, MLflow runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from jobs.runner import run_sweep
from jobs.spec.load import parse_spec
from jobs.spec.run_options import RunOptions
from tests.support.helpers import stored_records, sweep_dict
from tests.support.mlflow_store import sqlite_store
from trust.types import REFUSED

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def first_and_second(tiny_model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("e2e")
    spec = parse_spec(sweep_dict(tiny_model_dir, root / "runs"))
    options = RunOptions(data_dir=data_dir, tracking_uri=sqlite_store(root / "mlflow.db"), quiet=True)
    first = run_sweep(spec, options)
    second = run_sweep(spec, options)
    return spec, first, second, root


def test_first_run_commits_every_item(first_and_second) -> None:
    spec, first, _second, root = first_and_second
    n_shards = 3 * 2 * 2  # variants × benchmarks × ceil(6 / 4)
    assert first.computed == n_shards and first.reused == 0 and not first.failed
    assert first.items_computed == first.plan.n_requests == 3 * (6 + 6)
    table = stored_records(first)
    assert len(table) == 3 * (6 + 6) and table["item_key"].is_unique
    assert "label" not in table.columns  # labels are derived when scoring, never stored
    assert set(table["variant"]) == {"tiny-ref", "tiny-w8", "tiny-w4"}
    assert table["error"].isna().all()
    assert (table["prompt_tokens"] > 0).all() and (table["completion_tokens"] > 0).all()
    assert (table["latency_s"] > 0).all()
    assert table["output"].notna().all()


def test_quantized_variants_really_differ(first_and_second) -> None:
    _spec, first, _second, _root = first_and_second
    table = stored_records(first)
    outputs = table.pivot_table(index=["benchmark", "item_id"], columns="variant", values="output", aggfunc="first")
    # A random tiny model at 4 bits answers differently from the reference on at least one prompt.
    assert (outputs["tiny-w4"] != outputs["tiny-ref"]).any()


def test_second_run_computes_nothing_and_reuses_runs(first_and_second) -> None:
    _spec, first, second, _root = first_and_second
    assert second.computed == 0 and second.items_computed == 0 and second.reused == first.plan.n_requests
    assert second.run_ids == first.run_ids
    for a, b in zip(first.results, second.results):
        assert (a.name, a.benchmark, a.metrics.keys()) == (b.name, b.benchmark, b.metrics.keys())
        assert a.n_items == b.n_items


def test_mlflow_holds_parent_nested_and_ensemble_runs(first_and_second) -> None:
    spec, first, _second, root = first_and_second
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    runs = client.search_runs([first.experiment_id], max_results=100)
    parent = [r for r in runs if r.data.tags.get("qtrust.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first.parent_run_id]
    assert len(parent) == 1 and parent[0].info.run_id == first.parent_run_id
    assert len(runs) == 1 + 3 * 2 + 1 * 2  # no duplicates after the second run
    kinds = sorted(r.data.tags["qtrust.kind"] for r in children)
    assert kinds == ["ensemble"] * 2 + ["variant"] * 6
    w4 = next(
        r for r in children if r.data.params.get("variant") == "tiny-w4" and r.data.tags["qtrust.benchmark"] == "xstest"
    )
    assert (
        w4.data.params["quant.bits"] == "4"
        and w4.data.params["method"] == "rtn"
        and w4.data.params["quant.group_size"] == "32"
    )
    assert w4.data.params["engine"] == "hf" and "engine.transformers" in " ".join(w4.data.params)
    assert {"over_refusal_rate", "unsafe_compliance_rate", "refusal_rate", "n_items"} <= set(w4.data.metrics)
    assert w4.data.metrics["n_items"] == 6
    assert w4.info.status == "FINISHED" and w4.data.tags["method"] == "rtn" and w4.data.tags["bits"] == "4"
    history = client.get_metric_history(w4.info.run_id, "progress.items_done")
    # two shards landed in the first run (logged at most once a second, the step counts shards); the
    # second computed nothing and logged where it stands (step 0)
    steps = sorted(m.step for m in history)
    assert steps[0] == 0 and steps[-1] == 2 and set(steps) <= {0, 1, 2}
    assert all(m.value == 6 for m in history if m.step != 1)
    ens = next(
        r
        for r in children
        if r.data.tags["qtrust.kind"] == "ensemble" and r.data.tags["qtrust.benchmark"] == "machine_ethics"
    )
    assert ens.data.params["ensemble.members"] == "tiny-ref,tiny-w8,tiny-w4"
    assert "accuracy" in ens.data.metrics
    artifacts = [a.path for a in client.list_artifacts(w4.info.run_id)]
    assert "items.json" in artifacts  # the same name in every run: the UI compares artifacts by name
    assert w4.inputs.dataset_inputs and w4.inputs.dataset_inputs[0].dataset.name == "xstest"


def test_ensemble_follows_the_vote(first_and_second) -> None:
    _spec, first, _second, _root = first_and_second
    ens = next(r for r in first.results if r.kind == "ensemble" and r.benchmark == "xstest")
    frames = [r.frame.assign(variant=r.name) for r in first.results if r.kind == "variant" and r.benchmark == "xstest"]
    labels = pd.concat(frames).pivot_table(index="item_id", columns="variant", values="label", aggfunc="first")
    voted = dict(zip(ens.frame["item_id"], ens.frame["label"]))
    for item_id, row in labels.iterrows():
        answered = [row[v] for v in ("tiny-ref", "tiny-w8", "tiny-w4") if row[v] != REFUSED and row[v] in ("complied",)]
        if not answered:
            assert voted[item_id] == REFUSED
        else:
            assert voted[item_id] == "complied"
