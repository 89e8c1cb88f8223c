"""Builders and readers shared by the pipeline tests (test_pipeline_*.py): fake sweeps, stored records,
comparisons with an uninterrupted run, and cleanup of process sessions started by a test."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from tests.support.mlflow_store import sqlite_store

REPO = Path(__file__).resolve().parents[2]
#: A model source the fake engine serves without any file (its identity is ``hub:<source>@main``).
FAKE_SOURCE = "qtrust-test/fake-model"


def fake_sweep(
    root: Path,
    engine_options: dict[str, Any] | None = None,
    *,
    resources: dict[str, Any] | None = None,
    items: int = 6,
    shard_size: int = 2,
    name: str = "pipe",
) -> dict[str, Any]:
    """A sweep of one fake variant over two generation benchmarks, stored under ``root/runs``."""
    return {
        "name": name,
        "models": [
            {"name": "tiny", "source": FAKE_SOURCE, "engine": "fake", "engine_options": dict(engine_options or {})}
        ],
        "recipes": [{"name": "ref", "method": "none"}],
        "benchmarks": [
            {"name": "machine_ethics", "limit": items, "max_new_tokens": 4},
            {"name": "xstest", "limit": items, "max_new_tokens": 6},
        ],
        "shard_size": shard_size,
        "quality_probe": False,
        "resources": {"num_cpus": 0.5, "retry_backoff_s": 0.1, **(resources or {})},
        "storage": {"root": str(root / "runs")},
    }


def run_options(root: Path, data_dir: Path, **kwargs: Any):  # -> RunOptions
    from jobs.spec.run_options import RunOptions

    kwargs.setdefault("tracking_uri", sqlite_store(Path(root) / "mlflow.db"))
    return RunOptions(data_dir=data_dir, quiet=True, **kwargs)


def run(spec: dict[str, Any], root: Path, data_dir: Path, console: Console | None = None, **kwargs: Any):
    """``run_sweep`` of a spec dict (console output kept in ``console`` when given)."""
    from jobs.runner import run_sweep
    from jobs.spec.load import parse_spec

    return run_sweep(parse_spec(spec), run_options(root, data_dir, **kwargs), console or quiet_console())


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=400, force_terminal=False, color_system=None)


def console_text(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined]


def labels_of(outcome: Any) -> dict[tuple[str, str], dict[str, str]]:
    """(variant, benchmark) -> {item id: label} of a finished sweep."""
    return {(r.name, r.benchmark): dict(zip(r.frame["item_id"], r.frame["label"])) for r in outcome.results}


def metrics_of(outcome: Any) -> dict[tuple[str, str], dict[str, float]]:
    """(variant, benchmark) -> metrics, without the timing metrics (those differ between runs)."""
    timing = {"items_per_s", "tokens_per_s"}
    return {(r.name, r.benchmark): {k: v for k, v in r.metrics.items() if k not in timing} for r in outcome.results}


def records_in(sweep_dir: Path) -> pd.DataFrame:
    """Every generation record stored under a sweep folder, read as a user would (``pyarrow.dataset``,
    hive partitions, dot-files skipped)."""
    import pyarrow.dataset as ds

    folder = Path(sweep_dir) / "generations"
    if not folder.is_dir():
        return pd.DataFrame(columns=["item_key", "output", "error", "worker", "variant", "benchmark"])
    return ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pandas()


def shard_files(sweep_dir: Path) -> list[Path]:
    """Committed shard files (no dot-files: temp files and damaged shards set aside)."""
    folder = Path(sweep_dir) / "generations"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("shard-*.parquet") if not any(part.startswith(".") for part in p.parts[-3:]))


def outputs_by_key(records: pd.DataFrame) -> dict[str, Any]:
    """item key -> (output, error); fails when a key is stored twice."""
    dups = records["item_key"][records["item_key"].duplicated()]
    assert dups.empty, f"item keys stored more than once: {sorted(set(dups))[:5]}"
    return {k: (o, e) for k, o, e in zip(records["item_key"], records["output"], records["error"])}


def planned_keys(outcome: Any) -> set[str]:
    return outcome.plan.unique_keys()


def session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (a driver started with ``start_new_session=True`` and its children)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) == sid:
                pids.append(int(entry))
        except (ProcessLookupError, PermissionError):
            continue
    return pids


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found through /proc/<pid>/task/*/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                text = Path(f"/proc/{current}/task/{tid}/children").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            for child in text.split():
                out.append(int(child))
                todo.append(int(child))
    return out


def kill_session(sid: int, also: list[int] | None = None, timeout_s: float = 20.0) -> list[int]:
    """SIGKILL every process of session ``sid`` (and the pids in ``also``); wait until they are gone.

    Returns the pids that were still alive when called (what a test started and left behind).
    """
    alive = sorted(set(session_pids(sid)) | {p for p in (also or []) if _alive(p)})
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in alive):
        time.sleep(0.1)
    return alive


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_for(predicate, timeout_s: float, interval_s: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
