"""Metric functions declare their arguments; per-item values agree with the metrics; the generated docs stay true."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from tests.trust.test_declarative import USER_DEFINITION, write_user_benchmark
from trust.benchmarks import BENCHMARKS, get_benchmark
from trust.benchmarks.declarative import DefinitionError
from trust.benchmarks.label_metrics import item_values, score_labels, scored_items
from trust.metrics.catalog import METRICS
from trust.metrics.docs import DOC_PATH, render_metric_docs
from trust.metrics.registry import Role
from trust.types import ERROR, INVALID, REFUSED, Item


def with_metrics(tmp_path: Path, metrics: list[dict], primary: str = "accuracy") -> Path:
    definition = json.loads(json.dumps(USER_DEFINITION))
    definition["metrics"] = metrics
    definition["primary_metric"] = primary
    return write_user_benchmark(tmp_path / "bench", definition)


def problems_of(path: Path) -> str:
    with pytest.raises(DefinitionError) as info:
        get_benchmark("pets", None, path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_arguments_come_from_the_signature() -> None:
    info = METRICS["label_rate"]
    assert [(a.name, a.required, a.role) for a in info.args] == [
        ("label", True, Role.LABEL),
        ("attribute", False, Role.ATTRIBUTE),
        ("value", False, Role.VALUE),
    ]
    assert info.args[0].type_text == "str | list[str]"
    assert METRICS["invalid_rate"].args == ()


def test_unknown_argument_names_the_field_and_lists_the_accepted(tmp_path: Path) -> None:
    text = problems_of(
        with_metrics(tmp_path, [{"fn": "accuracy"}, {"fn": "refusal_rate", "args": {"atribute": "habitat"}}])
    )
    assert "metrics[1].args.atribute: unknown argument of refusal_rate" in text
    assert "attribute (str | null, default null)" in text


def test_missing_required_argument(tmp_path: Path) -> None:
    text = problems_of(with_metrics(tmp_path, [{"fn": "accuracy"}, {"fn": "label_rate", "name": "x"}]))
    assert "metrics[1].args.label: missing required argument of label_rate" in text
    assert "label (str | list[str], required)" in text


def test_wrong_type_and_yaml_boolean_hint(tmp_path: Path) -> None:
    path = with_metrics(tmp_path, [{"fn": "accuracy"}, {"fn": "label_rate", "name": "x", "args": {"label": True}}])
    text = problems_of(path)
    assert "metrics[1].args.label: True is not a str | list[str]" in text and "quote the value" in text
    text = problems_of(
        with_metrics(
            tmp_path,
            [{"fn": "accuracy"}, {"fn": "per_group_verdict_rate", "args": {"attribute": "habitat", "verdict": "fine"}}],
        )
    )
    assert "metrics[1].args.verdict" in text and "'safe' | 'unsafe'" in text


def test_unknown_attribute_and_value_without_attribute(tmp_path: Path) -> None:
    text = problems_of(with_metrics(tmp_path, [{"fn": "accuracy", "args": {"attribute": "habitta", "value": "farm"}}]))
    assert "metrics[0].args.attribute: the items have no attribute 'habitta' (attributes: habitat)" in text
    text = problems_of(with_metrics(tmp_path, [{"fn": "accuracy", "args": {"value": "farm"}}]))
    assert "metrics[0].args.value: a value needs args.attribute" in text


def test_validated_arguments_score_as_before(tmp_path: Path) -> None:
    path = with_metrics(tmp_path, [{"fn": "accuracy", "args": {"attribute": "habitat", "value": ["farm"]}}])
    bench = get_benchmark("pets", None, path)
    items = bench.load(tmp_path)
    assert bench.score(items, ["yes", "no", "yes"]) == {"accuracy": 1.0}


def _synthetic_labels(bench, items: list[Item], rng: random.Random) -> tuple[list[str], list[list[float] | None]]:
    d = bench.definition
    pool = [REFUSED, INVALID, ERROR, "complied", "full_refusal", "partial_refusal", "safe", "unsafe"]
    if d.answer is not None:
        pool += list(d.answer.labels) + list("ABCDE")
    labels, logprobs = [], []
    for item in items:
        if item.choices:
            lp = [rng.uniform(-5, 0) for _ in item.choices]
            logprobs.append(lp if rng.random() > 0.1 else None)
            labels.append(item.choices[int(np.argmax(lp))] if logprobs[-1] is not None else ERROR)
        else:
            logprobs.append(None)
            labels.append(item.reference if item.reference and rng.random() < 0.4 else rng.choice(pool))
    if d.task == "generate" and d.perspective == "safety" and "verdict" in " ".join(s.fn or "" for s in d.metrics):
        labels = [
            lab if lab in {"safe", "unsafe", "ambiguous", "error", "complied", REFUSED, INVALID, ERROR} else "safe"
            for lab in labels
        ]
    return labels, logprobs


def test_nanmean_of_item_values_equals_every_metric(data_dir: Path, tmp_path: Path) -> None:
    from tests.support.data_folders import completed_data_folder

    data_dir = completed_data_folder(data_dir, tmp_path)
    rng = random.Random(7)
    covered = set()
    for name in BENCHMARKS:
        bench = get_benchmark(name)
        items = bench.load(data_dir, limit=40)
        labels, logprobs = _synthetic_labels(bench, items, rng)
        labels_by_id = {it.id: lab for it, lab in zip(items, labels)}
        logprobs_by_id = {it.id: lp for it, lp in zip(items, logprobs)}
        metrics = score_labels(bench, items, labels_by_id, logprobs_by_id)
        values = item_values(bench, items, labels_by_id, logprobs_by_id)
        assert values, name
        order = scored_items(items, labels_by_id)
        for metric, array in values.items():
            assert array.dtype == float and array.shape == (len(order),), (name, metric)
            expected = metrics[metric]
            if np.all(np.isnan(array)):
                assert math.isnan(expected), (name, metric)
            else:
                assert np.nanmean(array) == pytest.approx(expected, abs=1e-12), (name, metric)
            covered.add(metric)
    assert {
        "accuracy",
        "refusal_rate",
        "invalid_rate",
        "mc1",
        "mc2",
        "error_free_rate",
        "over_refusal_rate",
        "false_positive_rate",
        "answered_accuracy",
        "abstain_rate",
        "safe_rate",
    } <= covered
    assert "knowledge_score" not in covered and "balanced_safety_score" not in covered  # no per-item form


def test_item_values_are_nan_outside_the_filter(tmp_path: Path) -> None:
    path = with_metrics(
        tmp_path,
        [
            {"fn": "accuracy"},
            {"fn": "label_rate", "name": "farm_yes", "args": {"label": "yes", "attribute": "habitat", "value": "farm"}},
        ],
    )
    bench = get_benchmark("pets", None, path)
    items = bench.load(tmp_path)  # dog (home), cow (farm), cat (home)
    values = item_values(bench, items, {items[0].id: "yes", items[1].id: "yes"})  # cat has no label: skipped
    assert [it.id for it in scored_items(items, {items[0].id: "yes", items[1].id: "yes"})] == ["pet-0", "pet-2"]
    np.testing.assert_array_equal(values["accuracy"], [1.0, 0.0])
    np.testing.assert_array_equal(values["farm_yes"], [np.nan, 1.0])


def test_score_works_on_resampled_items_with_repeats(tmp_path: Path) -> None:
    path = with_metrics(
        tmp_path, [{"fn": "accuracy"}, {"fn": "refusal_rate"}, {"name": "yes_share", "expr": "rate(label='yes')"}]
    )
    bench = get_benchmark("pets", None, path)
    items = bench.load(tmp_path)
    labels = ["yes", REFUSED, "yes"]
    resampled = [0, 0, 1, 0]  # a bootstrap draw: item 0 three times
    metrics = bench.score([items[i] for i in resampled], [labels[i] for i in resampled])
    assert metrics == {"accuracy": 0.75, "refusal_rate": 0.25, "yes_share": 0.75}


def test_generated_metric_docs_are_current() -> None:
    text = render_metric_docs()
    assert DOC_PATH.read_text(encoding="utf-8") == text, "run: python -m trust.metrics.docs"
    for name, info in METRICS.items():
        assert f"## `{name}`" in text
        for arg in info.args:
            assert f"| `{arg.name}` |" in text
    assert "python -m trust.metrics.docs" in text.splitlines()[2]
