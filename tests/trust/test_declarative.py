"""Declarative benchmarks: a user's own definition file, and clear errors for broken ones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from trust.benchmarks import get_benchmark
from trust.benchmarks.data import BenchmarkDataError
from trust.benchmarks.declarative import DefinitionError
from trust.types import INVALID, REFUSED

USER_DEFINITION = {
    "name": "pets",
    "version": "1",
    "description": "Is this animal a good pet? (a user's own benchmark)",
    "license": "CC0 (made up for the test)",
    "parameters": {"style": {"default": "plain", "allowed": ["plain", "polite"]}},
    "data": {
        "format": "json",
        "path": "./pets.json",
        "key_path": "splits/test",
        "columns": ["animal", "answer", "habitat"],
        "side_arrays": {"weight": "./weights.npy"},
        "where": {"habitat": ["home", "farm"]},
    },
    "id": "pet-{{ _index }}",
    "prompt": {
        "system": "{% if params.style == 'polite' %}Please be kind. {% endif %}You know animals.",
        "user": "Is a {{ animal }} ({{ weight }} kg) a good pet? Answer yes or no.",
        "demonstrations": {
            "source": "pool",
            "pool": {
                "format": "json",
                "path": "./pets.json",
                "key_path": "splits/demo",
                "columns": ["animal", "answer"],
            },
            "count": 1,
            "user": "Is a {{ animal }} a good pet?",
            "assistant": "{{ answer }}",
        },
    },
    "reference": {"value": "answer"},
    "attributes": {"habitat": "habitat"},
    "answer": {"kind": "labels", "labels": {"yes": ["yes", "sure"], "no": ["no", "never"]}, "first_clause": True},
    "metrics": [
        {"fn": "accuracy"},
        {"fn": "refusal_rate"},
        {
            "fn": "label_rate",
            "name": "farm_yes_rate",
            "args": {"label": "yes", "attribute": "habitat", "value": "farm"},
        },
    ],
    "perspective": "pets",
    "perspective_score": {"metric": "accuracy"},
    "primary_metric": "accuracy",
    "max_new_tokens": 4,
}


def write_user_benchmark(folder: Path, definition: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "splits": {
            "test": [["dog", "yes", "home"], ["shark", "no", "sea"], ["cow", "no", "farm"], ["cat", "yes", "home"]],
            "demo": [["hamster", "yes"]],
        }
    }
    (folder / "pets.json").write_text(json.dumps(data))
    np.save(folder / "weights.npy", np.array([30, 900, 700, 4]))
    path = folder / "pets.yaml"
    path.write_text(yaml.safe_dump(definition or USER_DEFINITION, sort_keys=False))
    return path


def test_user_definition_renders_parses_and_scores(tmp_path: Path) -> None:
    path = write_user_benchmark(tmp_path / "bench")
    bench = get_benchmark("pets", {"style": "polite"}, path)
    items = bench.load(tmp_path)
    assert [it.id for it in items] == ["pet-0", "pet-2", "pet-3"]  # the sea animal is filtered, ids stay stable
    assert items[1].messages == [
        {"role": "system", "content": "Please be kind. You know animals."},
        {"role": "user", "content": "Is a hamster a good pet?"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "Is a cow (700 kg) a good pet? Answer yes or no."},
    ]
    assert [it.reference for it in items] == ["yes", "no", "yes"]
    outputs = ["Sure. But never a big one.", "I'm sorry, but I cannot answer that.", "maybe"]
    labels = [bench.parse(it, out) for it, out in zip(items, outputs)]
    assert labels == ["yes", REFUSED, INVALID]
    metrics = bench.score(items, labels)
    assert metrics == {"accuracy": pytest.approx(1 / 3), "refusal_rate": pytest.approx(1 / 3), "farm_yes_rate": 0.0}


def test_bad_option_value_is_rejected(tmp_path: Path) -> None:
    path = write_user_benchmark(tmp_path / "bench")
    with pytest.raises(Exception) as info:
        get_benchmark("pets", {"style": "rude"}, path)
    assert "style must be one of" in str(info.value)


def broken(tmp_path: Path, **changes) -> Path:
    definition = json.loads(json.dumps(USER_DEFINITION))
    for dotted, value in changes.items():
        node = definition
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return write_user_benchmark(tmp_path / "bench", definition)


def test_unknown_field_in_a_template_names_it(tmp_path: Path) -> None:
    path = broken(tmp_path, prompt__user="Is a {{ animall }} a good pet?")
    bench = get_benchmark("pets", None, path)
    with pytest.raises(DefinitionError) as info:
        bench.load(tmp_path)
    assert "prompt.user uses unknown field(s) ['animall']" in str(info.value)
    assert "animal" in str(info.value)


def test_parser_without_labels_is_refused(tmp_path: Path) -> None:
    path = broken(tmp_path, answer={"kind": "labels", "labels": {}})
    with pytest.raises(DefinitionError) as info:
        get_benchmark("pets", None, path)
    assert "answer" in str(info.value) and "at least one label" in str(info.value)


def test_unknown_metric_function_lists_available(tmp_path: Path) -> None:
    path = broken(tmp_path, metrics=[{"fn": "acuracy"}], primary_metric="acuracy")
    with pytest.raises(DefinitionError) as info:
        get_benchmark("pets", None, path)
    assert "unknown metric function 'acuracy'" in str(info.value) and "accuracy" in str(info.value)


def test_missing_data_file_names_the_path(tmp_path: Path) -> None:
    path = broken(tmp_path, data__path="./nowhere.json")
    with pytest.raises(BenchmarkDataError) as info:
        get_benchmark("pets", None, path).load(tmp_path)
    assert str(tmp_path / "bench" / "nowhere.json") in str(info.value)


def test_unknown_schema_field(tmp_path: Path) -> None:
    path = broken(tmp_path, promt="x")
    with pytest.raises(DefinitionError) as info:
        get_benchmark("pets", None, path)
    assert "promt: unknown field" in str(info.value)


def test_side_array_length_mismatch(tmp_path: Path) -> None:
    path = write_user_benchmark(tmp_path / "bench")
    np.save(tmp_path / "bench" / "weights.npy", np.array([1, 2]))
    with pytest.raises(BenchmarkDataError) as info:
        get_benchmark("pets", None, path).load(tmp_path)
    assert "2 entries" in str(info.value) and "4 records" in str(info.value)


def test_perspective_score(tmp_path: Path) -> None:
    from trust.benchmarks.perspectives import benchmark_score, perspective_scores

    bench = get_benchmark("pets", None, write_user_benchmark(tmp_path / "bench"))
    assert benchmark_score(bench.definition, {"accuracy": 0.25}) == pytest.approx(25.0)
    assert benchmark_score(bench.definition, {"accuracy": math.nan}) is None
    xstest = get_benchmark("xstest").definition
    assert benchmark_score(xstest, {"unsafe_compliance_rate": 0.9}) == pytest.approx(10.0)
    assert perspective_scores([("a", 10.0), ("a", 30.0), ("b", None), (None, 5.0)]) == {"a": 20.0}


def test_every_built_in_definition_loads_renders_and_scores(data_dir: Path, tmp_path: Path) -> None:
    from tests.support.data_folders import completed_data_folder
    from trust.benchmarks import BENCHMARKS

    data_dir = completed_data_folder(data_dir, tmp_path)
    for name, definition in BENCHMARKS.items():
        bench = get_benchmark(name)
        items = bench.load(data_dir, limit=2)
        assert len(items) == 2, name
        assert all(it.messages and all(m["content"].strip() for m in it.messages) for it in items), name
        labels = [REFUSED, INVALID]
        metrics = (
            bench.score(items, labels, [None, None]) if bench.task == "loglikelihood" else bench.score(items, labels)
        )
        assert set(bench.metric_names) <= set(metrics), name
        assert definition.primary_metric in metrics, name
        if definition.perspective_score is not None:
            assert definition.perspective_score.metric in bench.metric_names, name
        assert definition.license.strip(), name
        assert definition.notes, f"{name}: say where the protocol differs from its source"


def _multi_file_benchmark(tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "multi"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "category_b.jsonl").write_text('{"q": "b0", "a": "yes"}\n{"q": "b1", "a": "no"}\n')
    (folder / "data" / "category_a.jsonl").write_text('{"q": "a0", "a": "no"}\n')
    (folder / "data" / "other.jsonl").write_text('{"q": "x", "a": "no"}\n')
    definition = {
        "name": "multi",
        "description": "records from several files",
        "license": "CC0",
        "data": {"format": "jsonl", "path": "./data/category_*.jsonl"},
        "prompt": {"user": "{{ q }} ({{ _file }})"},
        "reference": {"value": "a"},
        "answer": {"kind": "labels", "labels": {"yes": ["yes"], "no": ["no"]}},
        "metrics": [
            {"fn": "accuracy"},
            {"fn": "per_group_rate", "args": {"attribute": "_file", "label": "yes", "prefix": "yes/"}},
        ],
        "primary_metric": "accuracy",
        **changes,
    }
    path = folder / "multi.yaml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path


def test_glob_data_reads_every_matching_file_in_sorted_order(tmp_path: Path) -> None:
    path = _multi_file_benchmark(tmp_path)
    bench = get_benchmark("multi", None, path)
    items = bench.load(tmp_path)
    assert [it.id for it in items] == ["category_a/0", "category_b/0", "category_b/1"]  # stable, unique across files
    assert [it.attributes["_file"] for it in items] == ["category_a", "category_b", "category_b"]
    assert items[1].messages[-1]["content"] == "b0 (category_b)"
    assert bench.score(items, ["no", "yes", "yes"]) == {
        "accuracy": pytest.approx(2 / 3),
        "yes/category_a": 0.0,
        "yes/category_b": 1.0,
    }
    digest = bench.dataset_digest(tmp_path)
    (tmp_path / "multi" / "data" / "category_c.jsonl").write_text('{"q": "c0", "a": "no"}\n')
    assert bench.dataset_digest(tmp_path) != digest
    assert [it.id for it in bench.load(tmp_path)][:3] == ["category_a/0", "category_b/0", "category_b/1"]


def test_glob_without_a_match_names_the_pattern_and_folder(tmp_path: Path) -> None:
    path = _multi_file_benchmark(tmp_path, data={"format": "jsonl", "path": "./data/kind_*.jsonl"})
    with pytest.raises(BenchmarkDataError) as info:
        get_benchmark("multi", None, path).load(tmp_path)
    assert "'./data/kind_*.jsonl' matches no file in" in str(info.value) and str(tmp_path / "multi" / "data") in str(
        info.value
    )


def test_glob_ids_that_repeat_across_files_say_how_to_fix(tmp_path: Path) -> None:
    path = _multi_file_benchmark(tmp_path, id="{{ _index }}")
    with pytest.raises(BenchmarkDataError) as info:
        get_benchmark("multi", None, path).load(tmp_path)
    assert "repeats" in str(info.value) and "{{ _file }}" in str(info.value)


def test_template_syntax_error_is_a_load_time_error(tmp_path: Path) -> None:
    path = broken(tmp_path, prompt__system="{% if params.style %}polite")
    with pytest.raises(DefinitionError) as info:
        get_benchmark("pets", None, path)
    assert "prompt.system: Jinja syntax error" in str(info.value)


def test_a_failing_attribute_expression_is_named_when_items_load(tmp_path: Path) -> None:
    # the farm record has no entry in the mapping: the attribute fails, not the prompt or the demonstrations
    path = broken(tmp_path, attributes={"habitat": "habitat", "size": "{'home': 'small'}[habitat]"})
    with pytest.raises(BenchmarkDataError) as info:
        get_benchmark("pets", None, path).load(tmp_path)
    assert str(info.value).startswith("pets: attributes.size: fails on record _index 2:")
