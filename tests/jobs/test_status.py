"""``qtrust status``: rendering a manifest, JSON output, missing manifests, stale drivers, --watch."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from jobs.status import human_duration, is_stale, render_status, status_main
from jobs.store.lock import SweepLock
from jobs.store.manifest import StatusError, read_manifest

pytestmark = pytest.mark.timeout(60)

NODE_ID = "f3a9c07d21be4c55a0e1d2c3b4a5968778695a4b3c2d1e0f"
URL = "http://127.0.0.1:5000/#/experiments/1/runs/0123456789abcdef0123456789abcdef"


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def running_manifest(updated: datetime | None = None) -> dict[str, Any]:
    """A hand-written manifest of a sweep in the middle of its run."""
    updated = updated or datetime.now(timezone.utc)
    return {
        "schema": 2,
        "sweep": "demo",
        "state": "running",
        "started": _iso(updated - timedelta(minutes=3)),
        "updated": _iso(updated),
        "driver": {"host": "gpu-node-7", "pid": 4242, "command": "qtrust run examples/demo.yaml"},
        "ray": {"address": "local (private)", "nodes": 2, "cpus": 32, "gpus": 2},
        "totals": {
            "planned": 960,
            "stored": 100,
            "done": 500,
            "failed": 2,
            "pending": 458,
            "items_per_s": 3.2,
            "eta_s": 252.0,
        },
        "progress": {
            "llama-3-8b-instruct/w4-g128-gptq": {
                "machine_ethics": {"planned": 48, "done": 30, "failed": 0, "pending": 18},
                "xstest": {"planned": 48, "done": 17, "failed": 2, "pending": 29},
            },
            "llama-3-8b-instruct/ref": {"machine_ethics": {"planned": 48, "done": 48, "failed": 0, "pending": 0}},
        },
        "pools": {
            "generate:llama-3-8b-instruct/w4-g128-gptq": {
                "kind": "generate",
                "variant": "llama-3-8b-instruct/w4-g128-gptq",
                "items_per_s": 1.2,
                "state": "running",
                "replicas": [
                    {
                        "index": 0,
                        "state": "ready",
                        "node_id": NODE_ID,
                        "node_ip": "10.0.3.17",
                        "host": "gpu-node-7",
                        "pid": 777,
                        "gpu_ids": ["0"],
                        "items_done": 321,
                        "replacements": 0,
                    },
                    {
                        "index": 1,
                        "state": "loading",
                        "node_id": NODE_ID,
                        "node_ip": None,
                        "host": "gpu-node-8",
                        "pid": 778,
                        "gpu_ids": ["1", "3"],
                        "items_done": 0,
                        "replacements": 1,
                    },
                ],
            }
        },
        "events": [{"time": f"22:0{i}:00", "kind": "retry", "message": f"event number {i}"} for i in range(7)],
        "failed_shards": {"llama-3-8b-instruct/w4-g128-gptq/xstest/3": "RuntimeError: CUDA out of memory [x]"},
        "mlflow": {"uri": "sqlite:///mlflow.db", "experiment_id": "1", "runs": {"parent": "0123"}, "url": URL},
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write like the driver does: a temp file renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-manifest-{threading.get_ident()}"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, folder / "manifest.json")


def recording_console() -> Console:
    return Console(record=True, width=100, file=io.StringIO(), color_system=None)


def test_human_duration():
    assert human_duration(252) == "4m12s"
    assert human_duration(12.4) == "12s"
    assert human_duration(3720) == "1h02m"
    assert human_duration(90000) == "1d01h"
    assert human_duration(None) == "-"


def test_render_running_sweep_fits_100_columns():
    console = recording_console()
    manifest = running_manifest()
    render_status(manifest, console, lock_holder={"pid": 4242, "host": "gpu-node-7"}, sweep_dir="qtrust-runs/demo")
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100, [line for line in lines if len(line) > 100]
    flat = " ".join(text.split())
    assert "Sweep demo — running" in text and "driver pid 4242 on gpu-node-7" in text
    assert "500/960 done" in text and "2 failed" in text and "458 pending" in text
    assert "3.2 items/s" in text and "ETA 4m12s" in text and "100 already stored" in text
    assert "10.0.3.17" in text and NODE_ID[:12] in text  # node ip, else the short node id
    assert "1,3" in text and "321" in text
    assert URL in flat.replace(" ", "") or URL in text.replace("\n", "")
    assert "event number 6" in text and "event number 2" in text and "event number 1" not in text
    assert "CUDA out of memory [x]" in text  # square brackets are text, not markup
    assert "stale" not in text
    # The per-variant × benchmark rows carry their own numbers.
    row = next(line for line in lines if "xstest" in line)
    assert [cell for cell in row.split() if cell != "│"][-4:] == ["17", "2", "29", "48"]


def test_render_tolerates_a_sparse_manifest():
    console = recording_console()
    render_status({"sweep": "old", "state": "finished"}, console)
    text = console.export_text()
    assert "Sweep old — finished" in text and "0/0 done" in text and "ETA" not in text


@pytest.mark.parametrize("state", ["interrupted", "failed"])
def test_a_stopped_sweep_shows_no_eta(state: str):
    console = recording_console()
    manifest = {**running_manifest(), "state": state}  # its totals still carry the driver's last ETA
    render_status(manifest, console, sweep_dir="qtrust-runs/demo")
    text = console.export_text()
    assert f"Sweep demo — {state}" in text and "458 pending" in text
    assert "ETA" not in text


def test_json_output_parses(tmp_path: Path):
    write_manifest(tmp_path, running_manifest())
    console = recording_console()
    assert status_main(str(tmp_path), watch=False, as_json=True, interval_s=1.0, console=console) == 0
    document = json.loads(console.export_text())
    assert document["totals"]["done"] == 500 and document["mlflow"]["url"] == URL
    assert document["lock_holder"] is None and document["stale"] is False


def test_json_reports_the_lock_holder(tmp_path: Path):
    write_manifest(tmp_path, running_manifest(datetime.now(timezone.utc) - timedelta(minutes=5)))
    console = recording_console()
    with SweepLock(str(tmp_path)):
        assert status_main(str(tmp_path), watch=False, as_json=True, interval_s=1.0, console=console) == 0
    document = json.loads(console.export_text())
    assert document["lock_holder"]["pid"] == os.getpid() and document["stale"] is False


def test_missing_manifest_exits_2_with_one_line(tmp_path: Path):
    console = recording_console()
    assert status_main(str(tmp_path / "nope"), watch=False, as_json=False, interval_s=1.0, console=console) == 2
    text = console.export_text().strip()
    assert text == (
        f"error: {tmp_path / 'nope'}/manifest.json not found; pass the folder of a sweep started with "
        "'qtrust run' (e.g. qtrust-runs/<name>)"
    )
    with pytest.raises(StatusError):
        read_manifest(f"file://{tmp_path}")


def test_read_manifest_through_a_uri(tmp_path: Path):
    write_manifest(tmp_path, running_manifest())
    assert read_manifest(f"file://{tmp_path}")["sweep"] == "demo"


def test_stale_detection(tmp_path: Path):
    now = datetime.now(timezone.utc)
    old = running_manifest(now - timedelta(seconds=120))
    assert is_stale(old, None, now)
    assert not is_stale(old, {"pid": 1, "host": "h"}, now)  # lock held: a live (if slow) driver
    assert not is_stale(running_manifest(now - timedelta(seconds=10)), None, now)
    assert not is_stale({**old, "state": "finished"}, None, now)

    write_manifest(tmp_path, old)
    console = recording_console()
    assert status_main(str(tmp_path), watch=False, as_json=False, interval_s=1.0, console=console) == 0
    text = console.export_text()
    assert "driver not running" in text
    assert f"run `qtrust resume {tmp_path}`" in text.replace("\n", "")


def test_watch_stops_when_the_run_finishes(tmp_path: Path):
    write_manifest(tmp_path, running_manifest())
    console = recording_console()
    written = threading.Event()

    def finish_later() -> None:
        time.sleep(0.5)
        write_manifest(
            tmp_path,
            {
                **running_manifest(),
                "state": "finished",
                "totals": {"planned": 960, "done": 960, "failed": 0, "pending": 0},
            },
        )
        written.set()

    writer = threading.Thread(target=finish_later)
    writer.start()
    start = time.monotonic()
    code = status_main(str(tmp_path), watch=True, as_json=False, interval_s=0.05, console=console)
    elapsed = time.monotonic() - start
    writer.join()
    assert code == 0 and written.is_set()
    assert 0.4 < elapsed < 10
    text = console.export_text()
    assert "Sweep demo — finished" in text and "960/960 done" in text


def test_watch_json_prints_one_object_per_refresh(tmp_path: Path):
    write_manifest(tmp_path, running_manifest())
    console = recording_console()
    threading.Timer(0.3, lambda: write_manifest(tmp_path, {**running_manifest(), "state": "failed"})).start()
    assert status_main(str(tmp_path), watch=True, as_json=True, interval_s=0.05, console=console) == 0
    states = [json.loads(line)["state"] for line in console.export_text().splitlines()]
    assert states[0] == "running" and states[-1] == "failed" and len(states) >= 2


def test_an_adaptive_sweep_shows_each_decision_and_the_items_saved(tmp_path: Path):
    from tests.support.adaptive import three_pairs

    manifest = {**running_manifest(), "adaptive": three_pairs().model_dump(mode="json")}
    console = recording_console()
    render_status(manifest, console, sweep_dir="qtrust-runs/demo")
    text = console.export_text()
    lines = text.splitlines()
    assert "Adaptive comparisons" in text
    assert max(len(line) for line in lines) <= 100, [line for line in lines if len(line) > 100]
    row = next(line for line in lines if "tiny-w4" in line)
    assert "xstest" in row and "worse" in row and "64/500" in row and "436 (87%)" in row
    assert "-0.210 [-0.330, -0.080]" in row and "95% conf. seq." in text  # one level: said in the header
    row = next(line for line in lines if "tiny-w8" in line)
    assert "equivalent" in row and "120/500 (128)" in row and "+0.004 [-0.011, +0.019]" in row
    assert "continue" in next(line for line in lines if "tiny-w2" in line)
    flat = " ".join(text.split())
    assert (
        "Adaptive: 1684 of 2100 planned items saved (80.2%), 416 computed · 1 worse, 1 equivalent, 1 continue" in flat
    )
    assert "bbq runs in full: its primary metric (bias score) is not an item mean" in flat

    coloured = Console(record=True, width=100, file=io.StringIO(), color_system="standard", force_terminal=True)
    render_status(manifest, coloured)
    ansi = coloured.export_text(styles=True)
    assert "\x1b[1;31mworse" in ansi and "\x1b[32mequivalent" in ansi, ansi  # decisions coloured: red, green

    write_manifest(tmp_path, manifest)  # --json: the pairs with what they saved, and the sweep's totals
    console = recording_console()
    assert status_main(str(tmp_path), as_json=True, console=console) == 0
    adaptive = json.loads(console.export_text())["adaptive"]
    assert adaptive["totals"] == {
        "planned": 2100,
        "computed": 416,
        "saved": 1684,
        "saved_fraction": pytest.approx(1684 / 2100),
        "decisions": {"worse": 1, "equivalent": 1, "continue": 1},
    }
    by = {p["variant"]: p for p in adaptive["pairs"]}
    assert by["tiny-w4"]["saved"] == 436 and by["tiny-w4"]["final"] is True and by["tiny-w2"]["final"] is False
    assert by["tiny-w8"]["low"] == -0.011 and by["tiny-w8"]["confidence"] == 0.95


def test_a_sweep_that_is_not_adaptive_shows_no_adaptive_table():
    console = recording_console()
    render_status(running_manifest(), console)
    assert "Adaptive" not in console.export_text()
    console = recording_console()  # an unreadable entry (another qtrust's) is left out, not a crash
    render_status({**running_manifest(), "adaptive": {"pairs": "not a list"}}, console)
    text = console.export_text()
    assert "Adaptive" not in text and "500/960 done" in text
