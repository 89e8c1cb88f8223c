"""Honest partial results: ``qtrust report`` and ``qtrust status`` on a store that lacks items.

A stored sweep is written by the test (no inference, as in test_compare_report.py): 2 variants × 2
benchmarks × 8 items, two shards of 4 items per variant × benchmark, indexed by a scan as a run
indexes them, with a manifest naming a real MLflow (SQLite) parent run. Each test damages its own
copy: a shard deleted, a shard overwritten, a shard rotted in place (same size and time).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from jobs.plan.build import build_plan
from jobs.spec.load import dump_spec, parse_spec
from jobs.store.plan_snapshot import write_plan_snapshot
from jobs.store.sweep import SweepStore
from tests.support.helpers import generation_row, sweep_dict
from tests.support.mlflow_store import sqlite_store

pytestmark = pytest.mark.timeout(120)

ITEMS = 8


@pytest.fixture(scope="module")
def pristine(tiny_model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole stored sweep (its folder), indexed, with a finished manifest."""
    root = tmp_path_factory.mktemp("runs")
    spec = parse_spec(
        sweep_dict(
            tiny_model_dir,
            root,
            name="part",
            recipes=[{"name": "ref", "method": "none"}, {"name": "w4", "method": "rtn", "bits": 4, "group_size": 32}],
            benchmarks=[
                {"name": "machine_ethics", "limit": ITEMS, "max_new_tokens": 4},
                {"name": "xstest", "limit": ITEMS, "max_new_tokens": 8},
            ],
            ensembles=[],
        )
    )
    plan = build_plan(spec, data_dir)
    store = SweepStore(root, spec.name)
    store.write_spec(dump_spec(spec))
    for (variant, bench), keys in plan.keys.items():
        items = plan.benchmarks[bench].items
        rows = [generation_row(k, "wrong", item.id) for k, item in zip(keys, items)]
        store.commit_generations(variant, bench, rows[:4])
        store.commit_generations(variant, bench, rows[4:])
    store.scan()  # writes the index segment, as a run's index writer does
    write_plan_snapshot(store, plan)  # as the runner does when a run starts
    store.write_manifest({"sweep": spec.name, "state": "finished", "totals": {"planned": 32, "done": 32}})
    return Path(store.dir)


@pytest.fixture
def sweep_dir(pristine: Path, tmp_path: Path) -> Path:
    """This test's copy of the stored sweep, its manifest naming a fresh MLflow parent run."""
    from mlflow import MlflowClient

    folder = tmp_path / "runs" / pristine.name
    shutil.copytree(pristine, folder)
    uri = sqlite_store(tmp_path / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("part")).info.run_id
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["mlflow"] = {"uri": uri, "runs": {f"sweep:{pristine.name}": run_id}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _shards(sweep_dir: Path, variant: str, bench: str) -> list[Path]:
    return sorted((sweep_dir / "generations" / f"variant={variant}" / f"benchmark={bench}").glob("shard-*.parquet"))


def _report(sweep_dir: Path, data_dir: Path, *extra: str):
    from jobs.cli import app

    return CliRunner().invoke(app, ["report", str(sweep_dir), "--data-dir", str(data_dir), *extra])


def _parent(sweep_dir: Path):
    from mlflow import MlflowClient

    entry = json.loads((sweep_dir / "manifest.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=entry["uri"])
    run_id = next(iter(entry["runs"].values()))
    return client, run_id


def _artifacts(sweep_dir: Path) -> set[str]:
    client, run_id = _parent(sweep_dir)
    return {f.path for f in client.list_artifacts(run_id)}


def _tags(sweep_dir: Path) -> dict[str, str]:
    client, run_id = _parent(sweep_dir)
    return client.get_run(run_id).data.tags


def test_report_with_a_deleted_shard_exits_1_and_names_what_is_missing(sweep_dir: Path, data_dir: Path) -> None:
    _shards(sweep_dir, "tiny-w4", "xstest")[0].unlink()
    result = _report(sweep_dir, data_dir)
    assert result.exit_code == 1, result.output
    assert "PARTIAL: 4 of 32 planned items missing in 1 of 4 variant × benchmark pair(s)" in result.output
    assert "tiny-w4 × xstest: 4/8 items, 4 missing (1 shard(s) gone from the store)" in result.output
    assert "--partial" in result.output and "Traceback" not in result.output
    # Nothing that looks like a result: no report written, nothing logged to MLflow.
    assert not (sweep_dir / "report.html").exists() and not (sweep_dir / "report-partial.html").exists()
    assert _artifacts(sweep_dir) == set()


def test_partial_report_is_marked_and_never_replaces_the_final_one(sweep_dir: Path, data_dir: Path) -> None:
    shard = _shards(sweep_dir, "tiny-ref", "machine_ethics")[1]
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])  # a damaged shard: truncated

    result = _report(sweep_dir, data_dir, "--partial")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("PARTIAL: 4 of 32 planned items missing"), result.output
    assert "tiny-ref × machine_ethics: 4/8 items, 4 missing (1 damaged shard(s))" in result.output
    assert "Partial HTML report:" in result.output and "as report-partial.html" in result.output
    page = (sweep_dir / "report-partial.html").read_text()
    assert "id='partial-report'" in page and "tiny-ref × machine_ethics: 4/8 items, 4 missing" in page
    assert not (sweep_dir / "report.html").exists()
    assert _artifacts(sweep_dir) == {"report-partial.html"}
    tags = _tags(sweep_dir)
    assert tags["qtrust.report.partial"] == "true" and tags["qtrust.report.missing_items"] == "4"

    shard.write_bytes(whole)  # the shard back whole: the final report
    result = _report(sweep_dir, data_dir)
    assert result.exit_code == 0, result.output
    assert "PARTIAL" not in result.output
    final = (sweep_dir / "report.html").read_text()
    assert "partial-report" not in final
    assert _artifacts(sweep_dir) == {"report-partial.html", "report.html"}
    assert _tags(sweep_dir)["qtrust.report.partial"] == "false"

    shard.unlink()  # a later partial report: neither the stored nor the logged final report changes
    result = _report(sweep_dir, data_dir, "--partial")
    assert result.exit_code == 0, result.output
    assert (sweep_dir / "report.html").read_text() == final
    client, run_id = _parent(sweep_dir)
    logged = Path(client.download_artifacts(run_id, "report.html", str(sweep_dir.parent)))
    assert logged.read_text() == final
    assert _tags(sweep_dir)["qtrust.report.partial"] == "false"


def test_verify_store_reads_every_shard(sweep_dir: Path, data_dir: Path) -> None:
    result = _report(sweep_dir, data_dir, "--verify-store")
    assert result.exit_code == 0, result.output
    assert "ok: every planned item is stored (32)" in result.output

    rotted = _shards(sweep_dir, "tiny-w4", "machine_ethics")[0]
    stat = rotted.stat()
    data = bytearray(rotted.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot: same size, same time; only reading the bytes finds it
    rotted.write_bytes(bytes(data))
    os.utime(rotted, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _shards(sweep_dir, "tiny-ref", "xstest")[1].unlink()

    result = _report(sweep_dir, data_dir, "--verify-store")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"damaged: generations/variant=tiny-w4/benchmark=machine_ethics/{rotted.name}" in text
    assert "content does not match its digest" in text and "(4 item(s) lost)" in text
    assert "missing: generations/variant=tiny-ref/benchmark=xstest/" in text
    rows = {tuple(line.split("│")[1:3]): line for line in result.output.splitlines() if line.count("│") > 6}
    row = next(line for key, line in rows.items() if "tiny-w4" in key[0] and "machine_ethics" in key[1])
    assert "4/8" in row and "damaged" in row
    row = next(line for key, line in rows.items() if "tiny-ref" in key[0] and "xstest" in key[1])
    assert "4/8" in row and "missing" in row
    row = next(line for key, line in rows.items() if "tiny-ref" in key[0] and "machine_ethics" in key[1])
    assert "8/8" in row and " ok " in row
    assert rotted.exists()  # a check moves nothing aside


def _status(sweep_dir: Path) -> str:
    from jobs.status import status_main

    console = Console(record=True, width=100, file=io.StringIO(), color_system=None)
    assert status_main(str(sweep_dir), console=console) == 0
    return console.export_text()


def test_status_counts_damaged_and_missing_shards(sweep_dir: Path) -> None:
    assert "Items: 32/32 done" in _status(sweep_dir)
    shard = _shards(sweep_dir, "tiny-w4", "xstest")[1]
    shard.write_bytes(b"not parquet at all")
    _shards(sweep_dir, "tiny-ref", "xstest")[0].unlink()
    text = _status(sweep_dir)
    assert "32/32 done" not in text
    assert "Items: 24/32 done" in text
    assert "Items: 24/32 done (75%); 8 item(s) lost from the store: 1 damaged shard(s), 1 shard(s) gone" in text
    assert "tiny-w4" in text and shard.name in text


def test_status_of_a_sweep_whose_driver_died_shows_no_eta(sweep_dir: Path) -> None:
    from datetime import datetime, timedelta, timezone

    updated = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    totals = {"planned": 64, "done": 32, "pending": 32, "items_per_s": 2.0, "eta_s": 16.0}
    manifest.update(state="running", updated=updated, totals=totals)
    (sweep_dir / "manifest.json").write_text(json.dumps(manifest))
    text = _status(sweep_dir)
    assert "driver not running" in text
    assert "ETA" not in text and "16s" not in text


def test_report_needs_no_data_dir(sweep_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_data = _report(sweep_dir, data_dir, "--no-mlflow", "--long")
    assert with_data.exit_code == 0, with_data.output
    monkeypatch.delenv("QTRUST_DATA_DIR", raising=False)
    from jobs.cli import app

    alone = CliRunner().invoke(app, ["report", str(sweep_dir), "--no-mlflow", "--long"])
    assert alone.exit_code == 0, alone.output
    tables = lambda text: text.split("HTML report")[0]  # noqa: E731
    assert tables(alone.output) == tables(with_data.output) and "machine_ethics" in alone.output
    check = CliRunner().invoke(app, ["report", str(sweep_dir), "--verify-store"])
    assert check.exit_code == 0 and "every planned item is stored (32)" in check.output, check.output

    shutil.rmtree(sweep_dir / "plan")  # a sweep stored by an older qtrust: the data folder is needed
    old = CliRunner().invoke(app, ["report", str(sweep_dir), "--no-mlflow"])
    assert old.exit_code == 2 and "Traceback" not in old.output
    assert "contexts.json not found" in old.output and "--data-dir DIR" in old.output


def _adaptive(sweep_dir: Path, xstest_decision: str) -> None:
    """An adaptive summary for the stored sweep: tiny-w4 × xstest stopped after 4 of 8 items (as did the
    reference there), tiny-w4 × machine_ethics used all 8."""
    from jobs.store.adaptive import write_adaptive
    from tests.support.adaptive import pair, summary

    store = SweepStore(str(sweep_dir.parent), sweep_dir.name)
    write_adaptive(
        store,
        summary(
            [
                pair("tiny-w4", "xstest", xstest_decision, 4, ITEMS, 4, 0.0, -0.01, 0.01),
                pair("tiny-w4", "machine_ethics", "worse", ITEMS, ITEMS, ITEMS, -0.25, -0.5, -0.05),
            ],
            {"xstest": {"tiny-ref": 4}, "machine_ethics": {"tiny-ref": ITEMS}},
        ),
    )
    for variant in ("tiny-w4", "tiny-ref"):
        _shards(sweep_dir, variant, "xstest")[1].unlink()  # items 5-8 never computed...
    shutil.rmtree(sweep_dir / "generations" / "_index")
    store.scan()  # ... so never indexed either


def test_an_adaptive_pair_decided_early_is_complete_and_reported(sweep_dir: Path, data_dir: Path) -> None:
    _adaptive(sweep_dir, "equivalent")
    result = _report(sweep_dir, data_dir)
    assert result.exit_code == 0, result.output
    assert "PARTIAL" not in result.output
    text = " ".join(result.output.split())
    assert "Adaptive comparisons" in text
    row = next(line for line in result.output.splitlines() if "tiny-w4" in line and "xstest" in line and "│" in line)
    assert "equivalent" in row and "4/8" in row and "+0.000 [-0.010, +0.010]" in row and "4 (50%)" in row
    assert "Adaptive: 8 of 32 planned items saved (25.0%), 24 computed · 1 worse, 1 equivalent" in text
    page = (sweep_dir / "report.html").read_text()
    assert "<h2 id='adaptive'>Adaptive comparisons</h2>" in page
    assert "<td class='worse'>worse</td>" in page and "<td>equivalent</td>" in page
    assert "Adaptive: 8 of 32 planned items saved (25.0%)" in page
    check = _report(sweep_dir, data_dir, "--verify-store")
    assert check.exit_code == 0, check.output
    assert "ok: every needed item is stored; complete: 24/24 needed items stored; 8 of 32 planned not needed" in (
        " ".join(check.output.split())
    )


def test_an_adaptive_pair_still_running_is_partial(sweep_dir: Path, data_dir: Path) -> None:
    _adaptive(sweep_dir, "continue")
    result = _report(sweep_dir, data_dir)
    assert result.exit_code == 1, result.output
    assert "PARTIAL: 8 of 32 planned items missing in 2 of 4 variant × benchmark pair(s)" in result.output
    assert "tiny-w4 × xstest: 4/8 items, 4 missing" in result.output
    assert "tiny-ref × xstest: 4/8 items, 4 missing" in result.output  # its variant still needs it


def test_items_not_needed_by_an_adaptive_decision() -> None:
    from jobs.results.completeness import PairCount, not_needed
    from tests.support.adaptive import pair, summary

    def adaptive(decision: str):
        return summary(
            [
                pair("w4", "b", decision, 4, 8, 5, reference="ref"),
                pair("w8", "b", "equivalent", 8, 8, 8, reference="ref"),
            ],
            {"b": {"ref": 6}},
        )

    assert not_needed(None, "w4", "b", 8) == 0  # not adaptive
    assert not_needed(adaptive("worse"), "w4", "b", 8) == 3  # final: what it did not compute
    assert not_needed(adaptive("worse"), "ref", "b", 8) == 2  # every pair against the reference final
    for running in ("continue", "blocked"):
        assert not_needed(adaptive(running), "w4", "b", 8) == 0
        assert not_needed(adaptive(running), "ref", "b", 8) == 0
    assert not_needed(adaptive("worse"), "w4", "other", 8) == 0 and not_needed(adaptive("worse"), "x", "b", 8) == 0
    # a final pair that lost stored items (a damaged shard) still misses them
    assert PairCount("w4", "b", planned=8, found=3, not_needed=3).missing == 2
    assert PairCount("w4", "b", planned=8, found=5, not_needed=3).missing == 0
