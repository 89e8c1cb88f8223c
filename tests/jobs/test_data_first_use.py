"""Benchmark data on first use: the bundled demo files, the data cache, downloads from (local) sources."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from jobs.cli import app
from jobs.data_fetch import SOURCES_FILE, load_sources
from jobs.data_ready import prepare_data_dir
from jobs.plan.build import build_plan
from jobs.spec.load import load_spec, parse_spec
from tests.support.file_server import FileServer
from tests.support.pipeline_helpers import fake_sweep, planned_keys, run
from trust.benchmarks.bundle import BUNDLE_DIR, bundled_files
from trust.benchmarks.catalog import BENCHMARKS, get_benchmark
from trust.benchmarks.data import BenchmarkDataError

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo.yaml"
#: Every built-in benchmark whose files the bundle holds (their items must be those of the original files).
BUNDLED_BENCHMARKS = ["machine_ethics", "machine_ethics_evasive", "machine_ethics_jailbreak", "xstest"]
ADVBENCH = "advbench/harmful_behaviors.csv"  # a benchmark outside the demo, fetched on first use

runner = CliRunner()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data cache, with no offline copy named."""
    folder = tmp_path / "cache"
    monkeypatch.delenv("QTRUST_DATA_DIR", raising=False)
    monkeypatch.setenv("QTRUST_DATA_CACHE", str(folder))
    return folder


def _sources(tmp_path: Path, url: str, sha256: str, relative: str = ADVBENCH) -> Path:
    """A table of sources with one file, downloaded from ``url``."""
    folder, path = relative.split("/", 1)
    table = tmp_path / "sources.yaml"
    table.write_text(yaml.safe_dump({folder: [{"path": path, "url": url, "sha256": sha256}]}))
    return table


def _sweep(tmp_path: Path, benchmark: str) -> Path:
    sweep = tmp_path / "sweep.yaml"
    spec = {
        "name": "first-use",
        "models": [{"name": "m", "source": "smollm2-135m"}],
        "recipes": [{"name": "ref", "method": "none"}],
        "benchmarks": [{"name": benchmark, "limit": 4}],
    }
    sweep.write_text(yaml.safe_dump(spec))
    return sweep


def _every_row_of_cm_test(tmp_path: Path) -> Path:
    """A user's definition reading every row of the file the bundle trims (machine_ethics without its filter)."""
    definition = BENCHMARKS["machine_ethics"].model_dump(mode="json", exclude_none=True, exclude_unset=True)
    definition["name"] = "all_rows"
    definition["data"].pop("where")
    path = tmp_path / "all_rows.yaml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# -- the bundle -----------------------------------------------------------------------------------


def test_bundle_lists_its_files_with_their_hashes_licenses_and_notes() -> None:
    files = bundled_files()
    assert set(files) == {"xstest/xstest_prompts.csv", "decodingtrust/machine_ethics/ethics/commonsense/cm_test.csv"}
    pinned = {s.relative: s.sha256 for entries in load_sources(SOURCES_FILE).values() for s in entries}
    on_disk = {p.relative_to(BUNDLE_DIR).as_posix() for p in BUNDLE_DIR.rglob("*") if p.is_file()}
    for relative, entry in files.items():
        assert _sha256(entry.path) == entry.sha256, relative
        # a whole copy is the pinned file itself; a trimmed one is not, and says what it keeps
        assert (entry.sha256 == pinned[relative]) == (entry.keeps is None), relative
        folder = relative.split("/")[0]
        assert {f"{folder}/LICENSE", f"{folder}/SOURCE.md"} <= on_disk, folder
        assert pinned[f"{folder}/LICENSE"] == _sha256(BUNDLE_DIR / folder / "LICENSE")
    assert on_disk - {"BUNDLE.yaml"} == set(files) | {
        f"{f}/{name}" for f in ("xstest", "decodingtrust") for name in ("LICENSE", "SOURCE.md")
    }
    assert sum((BUNDLE_DIR / p).stat().st_size for p in on_disk) < 1_000_000


@pytest.mark.parametrize("name", BUNDLED_BENCHMARKS)
def test_bundled_files_give_the_items_of_the_originals(name: str, data_dir: Path) -> None:
    bench = get_benchmark(name)
    assert bench.load_all(BUNDLE_DIR) == bench.load_all(data_dir)


def test_a_reader_of_the_whole_trimmed_file_gets_the_original(
    cache: Path, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    relative = "decodingtrust/machine_ethics/ethics/commonsense/cm_test.csv"
    original = data_dir / relative
    whole = _every_row_of_cm_test(tmp_path)
    with FileServer(data_dir) as server:
        table = _sources(tmp_path, f"{server.url}/{relative}", _sha256(original), relative)
        ready = prepare_data_dir([get_benchmark("machine_ethics")], None, sources=table, notify=lambda _: None)
        assert ready.copied == [relative] and not server.requests  # the demo's reader: the bundled copy
        assert _sha256(cache / relative) == bundled_files()[relative].sha256
        ready = prepare_data_dir([get_benchmark("all_rows", None, whole)], None, sources=table, notify=lambda _: None)
    assert ready.downloaded == [relative]  # a reader of every row: the original replaces the trimmed copy
    assert _sha256(cache / relative) == _sha256(original)


# -- first use --------------------------------------------------------------------------------------


def test_first_use_fetches_a_benchmark_into_an_empty_cache(
    cache: Path, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FileServer(data_dir) as server:
        monkeypatch.setenv(
            "QTRUST_DATA_SOURCES", str(_sources(tmp_path, f"{server.url}/{ADVBENCH}", _sha256(data_dir / ADVBENCH)))
        )
        result = runner.invoke(app, ["validate", str(_sweep(tmp_path, "advbench"))], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert server.requests == [f"/{ADVBENCH}"]
        assert "advbench: 520 item(s) checked against the data" in result.output
        assert f"downloading {ADVBENCH}" in result.output and f"downloaded {ADVBENCH}" in result.output
        assert (cache / ADVBENCH).read_bytes() == (data_dir / ADVBENCH).read_bytes()
        again = runner.invoke(app, ["validate", str(_sweep(tmp_path, "advbench"))], env={"COLUMNS": "200"})
        assert again.exit_code == 0 and len(server.requests) == 1  # the cache serves it from now on
    assert _leftovers(cache) == [ADVBENCH]


def test_a_hash_mismatch_keeps_nothing_and_says_how_to_fix_it(
    cache: Path, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FileServer(data_dir) as server:
        monkeypatch.setenv("QTRUST_DATA_SOURCES", str(_sources(tmp_path, f"{server.url}/{ADVBENCH}", "0" * 64)))
        result = runner.invoke(app, ["validate", str(_sweep(tmp_path, "advbench"))], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"sha256 mismatch for {ADVBENCH}" in lines[0] and "the file was not kept" in lines[0]
    assert "--data-dir" in lines[0] and "qtrust data fetch advbench" in lines[0]
    assert _leftovers(cache) == []  # no partial file, no temporary file


def test_an_unreachable_source_is_one_line(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FileServer(tmp_path) as server:
        url = f"{server.url}/{ADVBENCH}"
    monkeypatch.setenv("QTRUST_DATA_SOURCES", str(_sources(tmp_path, url, "0" * 64)))  # the server is gone
    result = runner.invoke(app, ["validate", str(_sweep(tmp_path, "advbench"))], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert errors[0].startswith(f"error: benchmark data: could not download {ADVBENCH} from {url}: ")
    assert "--data-dir" in errors[0] and "qtrust data fetch advbench" in errors[0]
    assert _leftovers(cache) == []
    with pytest.raises(BenchmarkDataError, match="^benchmark data: could not download") as info:
        prepare_data_dir([get_benchmark("advbench")], None, notify=lambda _: None)
    assert "\n" not in str(info.value)


def test_a_missing_table_of_sources_is_one_line(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QTRUST_DATA_SOURCES", str(tmp_path / "nowhere.yaml"))
    result = runner.invoke(app, ["validate", str(_sweep(tmp_path, "advbench"))], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "nowhere.yaml is not a file" in result.output and "QTRUST_DATA_SOURCES" in result.output


def test_an_offline_copy_is_used_as_it_is(cache: Path, tmp_path: Path, data_dir: Path) -> None:
    ready = prepare_data_dir([get_benchmark("advbench")], data_dir)
    assert ready.folder == data_dir and ready.mirror and not cache.exists()


# -- the demo from a clone anywhere -------------------------------------------------------------------


def test_demo_resolves_from_the_bundle_without_any_data_folder(tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QTRUST_DATA", "QTRUST_CACHE", "XDG_CACHE"))}
    env.update(HOME=str(home), COLUMNS="200", QTRUST_DATA_SOURCES=str(tmp_path / "no-table.yaml"))  # no download
    done = subprocess.run(
        [str(Path(sys.executable).parent / "qtrust"), "validate", str(DEMO)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "machine_ethics: 2109 item(s) checked against the data" in done.stdout
    assert "xstest: 450 item(s) checked against the data" in done.stdout
    cache = home / ".cache" / "qtrust" / "data"
    assert _leftovers(cache) == sorted(bundled_files())
    # the demo's item keys are the ones the original files give
    spec = load_spec(DEMO)
    assert build_plan(spec, cache).keys == build_plan(spec, data_dir).keys


def test_a_sweep_runs_from_the_bundle_with_the_keys_of_the_offline_copy(
    cache: Path, tmp_path: Path, data_dir: Path
) -> None:
    # The demo's two benchmarks on the fake engine with no data folder named at all: the data cache,
    # filled from the bundled files, gives the item keys the offline copy gives.
    spec = fake_sweep(tmp_path, items=3, shard_size=3)
    outcome = run(spec, tmp_path, None)
    assert not outcome.failed and outcome.items_computed == 6
    assert _leftovers(cache) == sorted(bundled_files())
    from_copy = build_plan(parse_spec(spec), data_dir).keys
    assert planned_keys(outcome) == {key for keys in from_copy.values() for key in keys}
