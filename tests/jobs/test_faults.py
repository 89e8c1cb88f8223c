"""Fault injection with the fake engine on real Ray: crashes, bad items, broken variants, resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.plan.build import build_plan
from jobs.runner import run_sweep
from jobs.spec.load import parse_spec
from jobs.spec.run_options import RunOptions
from tests.support.helpers import sweep_dict
from tests.support.mlflow_store import sqlite_store

pytestmark = pytest.mark.usefixtures("ray_local")


def fake_sweep(
    model_dir: Path, root: Path, engine_options: dict | None = None, one_recipe: bool = False, **overrides
) -> dict:
    spec = sweep_dict(model_dir, root / "runs", **overrides)
    if one_recipe:
        spec["recipes"] = spec["recipes"][:1]
        spec["ensembles"] = []
    spec["models"][0]["engine"] = "fake"
    spec["models"][0]["engine_options"] = engine_options or {}
    return spec


def options(root: Path, data_dir: Path) -> RunOptions:
    return RunOptions(data_dir=data_dir, tracking_uri=sqlite_store(root / "mlflow.db"), quiet=True)


def labels_of(outcome) -> dict:
    return {(r.name, r.benchmark): dict(zip(r.frame["item_id"], r.frame["label"])) for r in outcome.results}


def test_worker_crash_is_retried_and_results_equal_an_uninterrupted_run(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "crashed"
    crashing = fake_sweep(
        tiny_model_dir, tmp_path / "a", {"crash_on_call": 2, "crash_marker": str(marker)}, one_recipe=True
    )
    outcome = run_sweep(parse_spec(crashing), options(tmp_path / "a", data_dir))
    assert marker.exists(), "the fake engine never crashed: the test would prove nothing"
    assert not outcome.failed
    assert outcome.items_computed == outcome.plan.n_requests

    calm = fake_sweep(tiny_model_dir, tmp_path / "b", one_recipe=True)
    clean = run_sweep(parse_spec(calm), options(tmp_path / "b", data_dir))
    assert labels_of(outcome) == labels_of(clean)


def test_a_failing_item_becomes_an_error_row(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    plan = build_plan(parse_spec(fake_sweep(tiny_model_dir, tmp_path)), data_dir)
    failing = {it.id for it in plan.benchmarks["xstest"].items[:2]}
    spec = parse_spec(fake_sweep(tiny_model_dir, tmp_path, {"fail_items": sorted(failing)}))
    outcome = run_sweep(spec, options(tmp_path, data_dir))
    assert not outcome.failed
    row = next(r for r in outcome.results if r.name == "tiny-ref" and r.benchmark == "xstest")
    frame = row.frame
    assert set(frame.loc[frame["error"].notna(), "item_id"]) == failing
    assert set(frame.loc[frame["label"] == "ERROR", "item_id"]) == failing
    assert row.metrics["error_rate"] == pytest.approx(len(failing) / 6)
    # error rows are stored, and a later run retries exactly those items
    again = run_sweep(spec, options(tmp_path, data_dir))
    assert again.items_computed == len(failing) * len(outcome.plan.variants)


def test_broken_variant_fails_alone_and_resume_computes_only_its_shards(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = fake_sweep(tiny_model_dir, tmp_path, one_recipe=True, resources={"max_retries": 1, "retry_backoff_s": 0.05})
    other = tmp_path / "other-model"  # another model (keys are content-based: the same folder would share answers)
    other.mkdir()
    (other / "config.json").write_text('{"other": true}')
    spec["models"].append(
        {"name": "bad", "source": str(other), "engine": "fake", "engine_options": {"no_such_option": 1}}
    )
    outcome = run_sweep(parse_spec(spec), options(tmp_path, data_dir))
    bad_shards = {s.id for s in outcome.plan.shards() if s.variant == "bad-ref"}
    assert set(outcome.failed) == bad_shards
    assert all("no_such_option" in e for e in outcome.failed.values())
    bad_items = sum(len(k) for (v, _b), k in outcome.plan.keys.items() if v == "bad-ref")
    assert outcome.items_computed == outcome.plan.n_requests - bad_items
    manifest = outcome.store.read_manifest()
    assert set(manifest["failed_shards"]) == bad_shards
    assert manifest["progress"]["bad-ref"]["xstest"]["failed"] == 6 and manifest["state"] == "failed"
    # its report lacks the broken variant's items: partial, beside where the final report goes
    assert outcome.report_path.endswith("report-partial.html")
    assert "id='partial-report'" in Path(outcome.report_path).read_text()
    assert not (Path(outcome.store.dir) / "report.html").exists()

    spec["models"][1]["engine_options"] = {}
    again = run_sweep(parse_spec(spec), options(tmp_path, data_dir))
    assert not again.failed
    assert again.items_computed == bad_items and again.reused == outcome.plan.n_requests - bad_items
    assert again.report_path.endswith("/report.html") and "partial-report" not in Path(again.report_path).read_text()


def test_a_hanging_shard_times_out_and_is_recorded_as_failed(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = fake_sweep(
        tiny_model_dir,
        tmp_path,
        {"delay_s": 5.0},
        one_recipe=True,
        resources={"shard_timeout_s": 2, "max_retries": 1, "retry_backoff_s": 0.05, "max_in_flight_per_worker": 1},
        shard_size=6,
    )
    spec["benchmarks"] = spec["benchmarks"][:1]
    outcome = run_sweep(parse_spec(spec), options(tmp_path, data_dir))
    assert set(outcome.failed) == {s.id for s in outcome.plan.shards()}
    assert all("shard_timeout_s=2" in e for e in outcome.failed.values()), outcome.failed
    assert outcome.computed == 0 and outcome.items_computed == 0
