"""Shard keys: stable for the same work, sensitive to everything that changes a correct answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.variant_key import variant_key
from jobs.plan import build_plan, shard_key
from jobs.spec import RecipeSpec, parse_spec
from tests.helpers import sweep_dict
from trust.benchmarks.registry import get_benchmark
from trust.types import Item

ITEMS = [Item(id="a", messages=[{"role": "user", "content": "hi"}]), Item(id="b", messages=[{"role": "user", "content": "yo"}])]


def key(**changes) -> str:
    identity = changes.pop("model_identity", "local:abc")
    recipe = changes.pop("recipe", RecipeSpec(name="w4", method="rtn", bits=4, group_size=32))
    calibration = changes.pop("calibration", None)
    dtype = changes.pop("dtype", "float32")
    args = dict(
        variant_key=variant_key(identity, recipe.key_fields(), calibration, dtype),
        engine="hf",
        benchmark=get_benchmark("xstest"),
        items=ITEMS,
        max_new_tokens=16,
        temperature=0.0,
    )
    args.update(changes)
    return shard_key(**args)


def test_key_is_stable() -> None:
    assert key() == key()
    assert len(key()) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"model_identity": "local:abd"},
        {"recipe": RecipeSpec(name="w4", method="rtn", bits=3, group_size=32)},
        {"recipe": RecipeSpec(name="w4", method="rtn", bits=4, group_size=64)},
        {"recipe": RecipeSpec(name="w4", method="rtn", bits=4, group_size=32, symmetric=True)},
        {"recipe": RecipeSpec(name="w4", method="rtn", bits=4, group_size=32, keep_full_precision=["lm_head", "down_proj"])},
        {"recipe": RecipeSpec(name="w4", method="rtn", bits=4, group_size=32, overrides=[{"blocks": [0], "bits": 8}])},
        {"recipe": RecipeSpec(name="w4", method="gptq", bits=4, group_size=32)},
        {"calibration": "digest-of-other-calibration-text"},
        {"dtype": "bfloat16"},
        {"engine": "fake"},
        {"benchmark": get_benchmark("machine_ethics")},
        {"items": [ITEMS[0]]},
        {"items": [ITEMS[0], Item(id="b", messages=[{"role": "user", "content": "yo!"}])]},
        {"items": [ITEMS[0], Item(id="b", messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "yo"}])]},
        {"max_new_tokens": 17},
    ],
)
def test_key_changes_with_what_changes_answers(change: dict) -> None:
    assert key(**change) != key()


def test_recipe_name_is_not_keyed() -> None:
    assert key(recipe=RecipeSpec(name="other", method="rtn", bits=4, group_size=32)) == key()


def test_plan_keys_ignore_cluster_shape_and_batch_size(tmp_path: Path, data_dir: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"a": 1}')
    base = sweep_dict(model, tmp_path)
    other = sweep_dict(model, tmp_path / "elsewhere", name="renamed")
    other["generation"] = {"batch_size": 3}
    other["resources"] = {"num_cpus_per_worker": 2, "num_gpus_per_worker": 0.5, "max_retries": 5}
    plan_a = build_plan(parse_spec(base), data_dir)
    plan_b = build_plan(parse_spec(other), data_dir)
    assert [s.key for s in plan_a.shards] == [s.key for s in plan_b.shards]
    assert len(set(s.key for s in plan_a.shards)) == len(plan_a.shards)


def test_plan_keys_follow_model_weights(tmp_path: Path, data_dir: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"a": 1}')
    (model / "model.safetensors").write_bytes(b"weights-1")
    before = [s.key for s in build_plan(parse_spec(sweep_dict(model, tmp_path)), data_dir).shards]
    (model / "model.safetensors").write_bytes(b"weights-2")
    after = [s.key for s in build_plan(parse_spec(sweep_dict(model, tmp_path)), data_dir).shards]
    assert set(before).isdisjoint(after)


def test_plan_shards_cover_every_item_once(tmp_path: Path, data_dir: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    plan = build_plan(parse_spec(sweep_dict(model, tmp_path)), data_dir)
    assert len(plan.variants) == 3
    for variant in plan.variants:
        for bench, run in plan.benchmarks.items():
            shards = plan.shards_of(variant, bench)
            ids = [it.id for s in shards for it in s.items]
            assert ids == [it.id for it in run.items]
            assert all(len(s.items) <= 4 for s in shards)


def test_calibration_text_is_part_of_the_variant_key(tmp_path: Path, data_dir: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cal = tmp_path / "cal.txt"
    cal.write_text("First paragraph of calibration text.\n\nSecond paragraph.\n")
    recipe = {"name": "g", "method": "gptq", "bits": 4, "group_size": 32, "calibration": {"source": str(cal), "samples": 8}}
    spec = sweep_dict(model, tmp_path, recipes=[recipe], ensembles=[])
    first = build_plan(parse_spec(spec), data_dir)
    (variant,) = first.variants.values()
    assert variant.calibration is not None and len(variant.calibration.texts) == 2  # fewer than asked: all of them
    assert variant.worker_config()["calibration_texts"] == variant.calibration.texts
    cal.write_text("First paragraph of calibration text.\n\nAn edited second paragraph.\n")
    second = build_plan(parse_spec(spec), data_dir)
    assert {s.key for s in first.shards}.isdisjoint(s.key for s in second.shards)
    bench = dict(recipe, calibration={"source": "benchmark:xstest", "samples": 5, "seed": 3})
    third = build_plan(parse_spec(dict(spec, recipes=[bench])), data_dir)
    (variant,) = third.variants.values()
    assert len(variant.calibration.texts) == 5 and variant.calibration.available >= 450
