"""The store: a shard counts as done only after an atomic rename, with a matching key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.dataset as ds

from jobs.store import ShardStore

ROW = {
    "item_id": "x-1",
    "prompt": "[]",
    "output": "not wrong",
    "label": "not wrong",
    "reference": "wrong",
    "choices": None,
    "logprobs": None,
    "prompt_tokens": 12,
    "completion_tokens": 3,
    "latency_s": 0.5,
    "error": None,
    "attributes": "{}",
}


def test_commit_and_read_back(tmp_path: Path) -> None:
    store = ShardStore(tmp_path, "s")
    path = store.commit_shard("v", "b", 0, "k1", [ROW, {**ROW, "item_id": "x-2", "error": "boom"}])
    assert path.name == "shard-00000.parquet"
    assert path.parent == tmp_path / "s" / "generations" / "variant=v" / "benchmark=b"
    assert store.is_done("v", "b", 0, "k1")
    assert not store.is_done("v", "b", 0, "k2")
    assert not store.is_done("v", "b", 1, "k1")
    frame = store.read_shards([("v", "b", 0, "k1"), ("v", "b", 1, "k1")])
    assert list(frame["item_id"]) == ["x-1", "x-2"]
    assert list(frame["error"].isna()) == [True, False]
    assert list(store.read_shards([("v", "b", 0, "other")])["item_id"]) == []
    assert [p.name for p in path.parent.iterdir()] == ["shard-00000.parquet"]


def test_crash_between_write_and_rename_leaves_no_done_shard(tmp_path: Path) -> None:
    """Kill the process right before the rename: only an ignored dot-file remains."""
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        import jobs.store as store_mod
        def crash(src, dst):
            os._exit(17)
        store_mod.os.replace = crash
        store = store_mod.ShardStore({str(tmp_path)!r}, "s")
        store.commit_shard("v", "b", 0, "k1", [{ROW!r}][0:1])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr
    store = ShardStore(tmp_path, "s")
    folder = store.shard_path("v", "b", 0).parent
    leftovers = list(folder.iterdir())
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)
    assert leftovers[0].stat().st_size > 0
    assert not store.is_done("v", "b", 0, "k1")
    assert store.read_shards([("v", "b", 0, "k1")]).empty
    dataset = ds.dataset(store.dir / "generations", format="parquet", partitioning="hive")
    assert dataset.files == []


def test_recommit_replaces_with_new_key(tmp_path: Path) -> None:
    store = ShardStore(tmp_path, "s")
    store.commit_shard("v", "b", 0, "old", [ROW])
    store.commit_shard("v", "b", 0, "new", [{**ROW, "output": "wrong"}])
    assert store.is_done("v", "b", 0, "new") and not store.is_done("v", "b", 0, "old")
    assert list(store.read_shards([("v", "b", 0, "new")])["output"]) == ["wrong"]


def test_truncated_file_does_not_count(tmp_path: Path) -> None:
    store = ShardStore(tmp_path, "s")
    path = store.commit_shard("v", "b", 0, "k", [ROW])
    path.write_bytes(path.read_bytes()[:20])
    assert not store.is_done("v", "b", 0, "k")


def test_manifest_roundtrip(tmp_path: Path) -> None:
    store = ShardStore(tmp_path, "s")
    assert store.read_manifest() == {}
    store.write_manifest({"a": {"b": 1}})
    assert store.read_manifest() == {"a": {"b": 1}}
