"""Items, not shards, are reused: what changes no answer computes nothing, and stored answers are
re-scored under a new parser without inference; a response cache shares answers between sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jobs.spec.load import load_spec
from tests.support.pipeline_helpers import fake_sweep, labels_of, run, run_options
from tests.trust.test_declarative import USER_DEFINITION, write_user_benchmark

pytestmark = pytest.mark.usefixtures("ray_local")


def test_shard_size_limit_alias_and_order_changes_compute_only_new_items(tmp_path: Path, data_dir: Path) -> None:
    spec = fake_sweep(tmp_path, items=6, shard_size=2)
    first = run(spec, tmp_path, data_dir)
    assert first.items_computed == 12 and not first.failed

    spec["shard_size"] = 5
    spec["benchmarks"].reverse()
    spec["benchmarks"].append({"name": "xstest", "alias": "xstest_copy", "limit": 6, "max_new_tokens": 6})
    again = run(spec, tmp_path, data_dir)
    assert again.items_computed == 0 and again.computed == 0
    assert labels_of(again)[("tiny-ref", "xstest_copy")] == labels_of(first)[("tiny-ref", "xstest")]
    assert {k: v for k, v in labels_of(again).items() if k[1] != "xstest_copy"} == labels_of(first)

    for bench in spec["benchmarks"]:
        bench["limit"] = 9
    raised = run(spec, tmp_path, data_dir)
    assert raised.items_computed == 6  # 3 new items in each of the two distinct benchmarks, the alias shares
    assert {r.n_items for r in raised.results} == {9}


def _own_sweep(tmp_path: Path, definition: dict) -> Path:
    write_user_benchmark(tmp_path / "mine", definition)
    path = tmp_path / "sweep.yaml"
    spec = fake_sweep(tmp_path, items=3)
    spec["benchmarks"] = [{"name": "pets", "definition": "mine/pets.yaml"}]
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_new_benchmark_version_rescores_stored_answers_without_inference(tmp_path: Path) -> None:
    from jobs.runner import run_sweep
    from tests.support.pipeline_helpers import quiet_console

    first = run_sweep(
        load_spec(_own_sweep(tmp_path, USER_DEFINITION)), run_options(tmp_path, tmp_path), quiet_console()
    )
    assert first.items_computed == 3
    changed = json.loads(json.dumps(USER_DEFINITION))
    changed["version"] = "2"
    # a new parser: every answer is read as the opposite label
    changed["answer"]["labels"] = {"yes": ["no", "never", "not"], "no": ["yes", "sure", "wrong"]}
    second = run_sweep(load_spec(_own_sweep(tmp_path, changed)), run_options(tmp_path, tmp_path), quiet_console())
    assert second.items_computed == 0 and second.computed == 0
    run_v2 = second.plan.benchmarks["pets"]
    assert run_v2.benchmark.version == "2"
    row = next(r for r in second.results if r.benchmark == "pets")
    outputs = dict(zip(row.frame["item_id"], row.frame["output"]))
    expected = {it.id: run_v2.benchmark.parse(it, outputs[it.id] or "") for it in run_v2.items}
    assert dict(zip(row.frame["item_id"], row.frame["label"])) == expected


def test_a_response_cache_shares_answers_between_sweeps(tmp_path: Path, data_dir: Path) -> None:
    cache = tmp_path / "responses"
    old = fake_sweep(tmp_path / "old", items=6, name="old")
    old["storage"]["response_cache"] = str(cache)
    first = run(old, tmp_path / "old", data_dir)
    assert first.items_computed == 12

    new = fake_sweep(tmp_path / "new", items=6, name="new")  # another sweep, another store ...
    new["storage"]["response_cache"] = str(cache)
    new["benchmarks"].append({"name": "machine_ethics", "alias": "ethics_long", "limit": 6, "max_new_tokens": 12})
    second = run(new, tmp_path / "new", data_dir)
    # ... which adds one benchmark (other generation settings, so other keys): only that is computed
    assert second.items_from_cache == 12 and second.items_computed == 6
    assert {k: v for k, v in labels_of(second).items() if k[1] != "ethics_long"} == labels_of(first)
    # the answers were copied into the new sweep's own store: it no longer needs the cache
    new["storage"]["response_cache"] = None
    third = run(new, tmp_path / "new", data_dir)
    assert third.items_computed == 0 and third.items_from_cache == 0
