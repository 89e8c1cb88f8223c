"""Item keys: stable for the same request, sensitive to everything that changes a correct answer,
blind to names, versions, ids, shard boundaries, limits and cluster shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.variants.key import variant_key
from jobs.plan.build import build_plan
from jobs.plan.keys import context_digest, item_key, request_digest
from jobs.spec.load import parse_spec
from jobs.spec.schema import RecipeSpec
from tests.support.helpers import sweep_dict
from trust.types import Item

ITEM = Item(id="a", messages=[{"role": "user", "content": "hi"}])
CHOICE_ITEM = Item(id="q", messages=[{"role": "user", "content": "pick"}], choices=["yes", "no"])


def key(**changes) -> str:
    identity = changes.pop("model_identity", "local:abc")
    recipe = changes.pop("recipe", RecipeSpec(name="w4", method="rtn", bits=4, group_size=32))
    calibration = changes.pop("calibration", None)
    dtype = changes.pop("dtype", "float32")
    item = changes.pop("item", ITEM)
    task = changes.pop("task", "generate")
    context = {
        "variant_key": variant_key(identity, recipe.key_fields(), calibration, dtype),
        "engine": "hf",
        "task": task,
        "max_new_tokens": 16,
        "temperature": 0.0,
    }
    context.update(changes)
    return item_key(context_digest(**context), request_digest(task, item))


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
        {
            "recipe": RecipeSpec(
                name="w4", method="rtn", bits=4, group_size=32, keep_full_precision=["lm_head", "down_proj"]
            )
        },
        {"recipe": RecipeSpec(name="w4", method="rtn", bits=4, group_size=32, overrides=[{"blocks": [0], "bits": 8}])},
        {"recipe": RecipeSpec(name="w4", method="gptq", bits=4, group_size=32)},
        {"calibration": "digest-of-other-calibration-text"},
        {"dtype": "bfloat16"},
        {"engine": "fake"},
        {"task": "loglikelihood"},
        {"item": Item(id="a", messages=[{"role": "user", "content": "hi!"}])},
        {"item": Item(id="a", messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}])},
        {"max_new_tokens": 17},
    ],
)
def test_key_changes_with_what_changes_answers(change: dict) -> None:
    assert key(**change) != key()


def test_names_ids_and_resources_are_not_keyed() -> None:
    assert key(recipe=RecipeSpec(name="other", method="rtn", bits=4, group_size=32)) == key()
    assert key(recipe=RecipeSpec(name="w4", method="rtn", bits=4, group_size=32, resources={"replicas": 4})) == key()
    assert key(item=Item(id="renamed", messages=ITEM.messages, reference="x", attributes={"k": "v"})) == key()


def test_scoring_keys_follow_continuations_not_generation_length() -> None:
    base = key(task="loglikelihood", item=CHOICE_ITEM)
    assert key(task="loglikelihood", item=CHOICE_ITEM, max_new_tokens=99) == base
    other = Item(id="q", messages=CHOICE_ITEM.messages, choices=["yes", "maybe"])
    assert key(task="loglikelihood", item=other) != base


def _model(tmp_path: Path, config: str = '{"a": 1}') -> Path:
    model = tmp_path / "m"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(config)
    return model


def test_plan_keys_ignore_cluster_shape_batch_size_shard_size_and_names(tmp_path: Path, data_dir: Path) -> None:
    model = _model(tmp_path)
    base = sweep_dict(model, tmp_path)
    other = sweep_dict(model, tmp_path / "elsewhere", name="renamed", shard_size=1)
    other["generation"] = {"batch_size": 3}
    other["resources"] = {"num_cpus": 2, "num_gpus": 0.5, "max_retries": 5, "replicas": 3}
    plan_a = build_plan(parse_spec(base), data_dir)
    plan_b = build_plan(parse_spec(other), data_dir)
    assert plan_a.keys == plan_b.keys
    assert len(plan_a.unique_keys()) == plan_a.n_requests  # distinct prompts get distinct keys


def test_benchmark_version_and_alias_are_not_keyed(tmp_path: Path, data_dir: Path) -> None:
    model = _model(tmp_path)
    spec = sweep_dict(model, tmp_path)
    spec["benchmarks"].append({"name": "xstest", "alias": "xstest_again", "limit": 6, "max_new_tokens": 6})
    plan = build_plan(parse_spec(spec), data_dir)
    for variant in plan.variants:
        assert plan.keys_of(variant, "xstest") == plan.keys_of(variant, "xstest_again")
    # the alias adds no work: each key is computed once per sweep
    shards = plan.shards()
    assert sum(len(s.keys) for s in shards) == len(plan.unique_keys())
    assert {s.benchmark for s in shards} == {"machine_ethics", "xstest"}


def test_raised_limit_keeps_the_keys_of_the_first_items(tmp_path: Path, data_dir: Path) -> None:
    model = _model(tmp_path)
    small = build_plan(parse_spec(sweep_dict(model, tmp_path)), data_dir)
    spec = sweep_dict(model, tmp_path)
    for bench in spec["benchmarks"]:
        bench["limit"] = 12
    large = build_plan(parse_spec(spec), data_dir)
    assert small.unique_keys() < large.unique_keys()
    todo = large.shards(small.unique_keys())
    assert sum(len(s.keys) for s in todo) == len(large.unique_keys()) - len(small.unique_keys())


def test_plan_keys_follow_model_weights(tmp_path: Path, data_dir: Path) -> None:
    model = _model(tmp_path)
    (model / "model.safetensors").write_bytes(b"weights-1")
    before = build_plan(parse_spec(sweep_dict(model, tmp_path)), data_dir).unique_keys()
    (model / "model.safetensors").write_bytes(b"weights-2")
    after = build_plan(parse_spec(sweep_dict(model, tmp_path)), data_dir).unique_keys()
    assert before.isdisjoint(after)


def test_shards_cover_every_missing_item_once(tmp_path: Path, data_dir: Path) -> None:
    plan = build_plan(parse_spec(sweep_dict(_model(tmp_path, "{}"), tmp_path)), data_dir)
    assert len(plan.variants) == 3
    shards = plan.shards()
    for variant in plan.variants:
        for bench, run in plan.benchmarks.items():
            mine = [s for s in shards if s.variant == variant and s.benchmark == bench]
            assert [it.id for s in mine for it in s.items] == [it.id for it in run.items]
            assert [k for s in mine for k in s.keys] == plan.keys_of(variant, bench)
            assert all(len(s.items) <= 4 for s in mine)
    half = set(list(plan.unique_keys())[::2])
    rest = plan.shards(half)
    assert {k for s in rest for k in s.keys} == plan.unique_keys() - half


def test_calibration_text_is_part_of_the_variant_key(tmp_path: Path, data_dir: Path) -> None:
    model = _model(tmp_path, "{}")
    cal = tmp_path / "cal.txt"
    cal.write_text("First paragraph of calibration text.\n\nSecond paragraph.\n")
    recipe = {
        "name": "g",
        "method": "gptq",
        "bits": 4,
        "group_size": 32,
        "calibration": {"source": str(cal), "samples": 8},
    }
    spec = sweep_dict(model, tmp_path, recipes=[recipe], ensembles=[])
    first = build_plan(parse_spec(spec), data_dir)
    (variant,) = first.variants.values()
    assert variant.calibration is not None and len(variant.calibration.texts) == 2  # fewer than asked: all of them
    assert variant.worker_config()["calibration_texts"] == variant.calibration.texts
    cal.write_text("First paragraph of calibration text.\n\nAn edited second paragraph.\n")
    second = build_plan(parse_spec(spec), data_dir)
    assert first.unique_keys().isdisjoint(second.unique_keys())
    bench = dict(recipe, calibration={"source": "benchmark:xstest", "samples": 5, "seed": 3})
    third = build_plan(parse_spec(dict(spec, recipes=[bench])), data_dir)
    (variant,) = third.variants.values()
    assert len(variant.calibration.texts) == 5 and variant.calibration.available >= 450
