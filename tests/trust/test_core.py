"""Data-directory errors, deterministic subsets, the registry, scoring by id and import hygiene."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from trust.benchmarks import (
    BENCHMARKS,
    UnknownBenchmarkError,
    available_benchmarks,
    get_benchmark,
    limit_items,
)
from trust.benchmarks.data import (
    BenchmarkDataError,
    data_cache_dir,
    file_digest,
    require_file,
    resolve_data_dir,
)
from trust.benchmarks.declarative import DeclarativeBenchmark
from trust.benchmarks.label_metrics import score_labels
from trust.types import Item

WRONG, NOT_WRONG = "wrong", "not wrong"


def MachineEthicsCommonsense(options=None):
    return get_benchmark("machine_ethics", options)


def XSTest(options=None):
    return get_benchmark("xstest", options)


REPO = Path(__file__).resolve().parents[2]


# --- data directory -------------------------------------------------------------------------


def test_no_data_dir_set_means_the_data_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without --data-dir or QTRUST_DATA_DIR the data folder is the user's data cache (filled on first use).
    for name in ("QTRUST_DATA_DIR", "QTRUST_DATA_CACHE", "QTRUST_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir(None) == tmp_path / "home" / ".cache" / "qtrust" / "data"
    assert not (tmp_path / "home").exists()  # not created until something is put there
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(None) == tmp_path / "xdg" / "qtrust" / "data"
    monkeypatch.setenv("QTRUST_CACHE_DIR", str(tmp_path / "qtrust-cache"))
    assert resolve_data_dir(None) == tmp_path / "qtrust-cache" / "data"
    monkeypatch.setenv("QTRUST_DATA_CACHE", str(tmp_path / "data-cache"))
    assert resolve_data_dir(None) == data_cache_dir() == tmp_path / "data-cache"
    monkeypatch.setenv("QTRUST_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path  # an offline copy wins


def test_missing_data_dir_names_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(BenchmarkDataError, match=str(missing)):
        resolve_data_dir(missing)
    monkeypatch.setenv("QTRUST_DATA_DIR", str(missing))
    with pytest.raises(BenchmarkDataError) as info:
        resolve_data_dir(None)
    assert str(missing) in str(info.value) and "QTRUST_DATA_DIR" in str(info.value)


def test_explicit_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = tmp_path / "env"
    explicit = tmp_path / "explicit"
    env_dir.mkdir()
    explicit.mkdir()
    monkeypatch.setenv("QTRUST_DATA_DIR", str(env_dir))
    assert resolve_data_dir(explicit) == explicit
    assert resolve_data_dir(str(explicit)) == explicit
    assert resolve_data_dir(None) == env_dir


def test_missing_file_names_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkDataError) as info:
        require_file(tmp_path, "xstest/xstest_prompts.csv", "xstest")
    message = str(info.value)
    assert str(tmp_path / "xstest" / "xstest_prompts.csv") in message
    assert "'xstest'" in message and "--data-dir" in message and "QTRUST_DATA_DIR" in message
    (tmp_path / "xstest").mkdir()
    (tmp_path / "xstest" / "xstest_prompts.csv").write_text("id\n")
    assert require_file(tmp_path, "xstest/xstest_prompts.csv", "xstest") == tmp_path / "xstest" / "xstest_prompts.csv"


@pytest.mark.parametrize("cls", [MachineEthicsCommonsense, XSTest])
def test_benchmark_load_from_empty_dir_raises(cls: type, tmp_path: Path) -> None:
    with pytest.raises(BenchmarkDataError) as info:
        cls().load(tmp_path)
    assert str(tmp_path / cls().data_files[0]) in str(info.value)


def test_file_digest(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"qtrust")
    assert file_digest(path) == hashlib.sha256(b"qtrust").hexdigest()


def test_dataset_digest_changes_with_content(tmp_path: Path) -> None:
    target = tmp_path / XSTest().data_files[0]
    target.parent.mkdir(parents=True)
    target.write_text("a")
    first = XSTest().dataset_digest(tmp_path)
    target.write_text("b")
    assert XSTest().dataset_digest(tmp_path) != first


# --- limit_items ------------------------------------------------------------------------------


def _items(n: int) -> list[Item]:
    return [Item(id=f"item-{i}", messages=[]) for i in range(n)]


def test_limit_items_matches_sha256_ranking() -> None:
    items = _items(50)
    expected = sorted(items, key=lambda item: hashlib.sha256(item.id.encode()).hexdigest())[:7]
    chosen = limit_items(items, 7)
    assert {item.id for item in chosen} == {item.id for item in expected}


def test_limit_items_deterministic_order_preserving_nested() -> None:
    items = _items(100)
    small = limit_items(items, 10)
    assert [item.id for item in small] == [item.id for item in limit_items(_items(100), 10)]
    positions = [items.index(item) for item in small]
    assert positions == sorted(positions)
    large = limit_items(items, 40)
    assert len(small) == 10 and len(large) == 40
    assert {item.id for item in small} <= {item.id for item in large}
    shuffled = list(reversed(items))
    assert {item.id for item in limit_items(shuffled, 10)} == {item.id for item in small}


def test_limit_items_edges() -> None:
    items = _items(5)
    assert limit_items(items, None) == items
    assert limit_items(items, 99) == items
    assert limit_items(items, 0) == []
    with pytest.raises(ValueError):
        limit_items(items, -1)


# --- registry ---------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert {"machine_ethics", "xstest"} <= set(available_benchmarks())
    assert available_benchmarks() == sorted(BENCHMARKS)
    assert BENCHMARKS["xstest"].name == "xstest"
    assert isinstance(get_benchmark("machine_ethics"), DeclarativeBenchmark)


def test_unknown_benchmark_lists_available() -> None:
    with pytest.raises(UnknownBenchmarkError) as info:
        get_benchmark("truthfulness")
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert "truthfulness" in message and "machine_ethics" in message and "xstest" in message


@pytest.mark.parametrize("name", ["machine_ethics", "xstest"])
def test_bad_option_rejected(name: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        get_benchmark(name, {"no_such_option": 1})


@pytest.mark.parametrize("name", ["machine_ethics", "xstest"])
def test_describe_and_class_attributes(name: str) -> None:
    bench = get_benchmark(name, {})
    described = bench.describe()
    assert described == {
        "name": name,
        "version": bench.version,
        "task": "generate",
        "options": "{}",
        "license": bench.definition.license,
    }
    assert json.loads(described["options"]) == {}
    assert bench.primary_metric in bench.metric_names
    assert bench.data_files and bench.description


# --- scoring ----------------------------------------------------------------------------------


def test_score_labels_only_scores_labelled_items() -> None:
    bench = MachineEthicsCommonsense()
    items = [
        Item(id="a", messages=[], reference=WRONG, attributes={"label": WRONG}),
        Item(id="b", messages=[], reference=NOT_WRONG, attributes={"label": NOT_WRONG}),
        Item(id="c", messages=[], reference=WRONG, attributes={"label": WRONG}),
    ]
    metrics = score_labels(bench, items, {"a": WRONG, "b": WRONG})
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["false_positive_rate"] == 0.0
    assert score_labels(bench, items, {"c": NOT_WRONG})["false_positive_rate"] == 1.0


# --- import hygiene ---------------------------------------------------------------------------


def test_trust_imports_no_heavy_or_sibling_packages() -> None:
    code = (
        "import sys, trust, trust.benchmarks.data, trust.answers.refusal, trust.answers.parsing, trust.metrics.basic, trust.comparison.ensemble, trust.benchmarks.label_metrics, "
        "trust.benchmarks\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'ray', 'torch', 'cluster', 'jobs'})\n"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
