"""The store: records keyed by item key in content-addressed shards; a shard counts only when whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.dataset as ds

from jobs.store.response_cache import ResponseCache
from jobs.store.sweep import SweepStore


def row(key: str, **changes) -> dict:
    base = {
        "item_key": key,
        "item_id": f"id-{key}",
        "prompt": "[]",
        "choices": None,
        "output": "not wrong",
        "logprobs": None,
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "latency_s": 0.5,
        "error": None,
        "attempt": 1,
        "worker": "{}",
        "committed_at": 1.0,
    }
    base.update(changes)
    return base


def test_commit_and_scan_back(tmp_path: Path) -> None:
    store = SweepStore(tmp_path, "s")
    path = store.commit_generations("v", "b", [row("k1"), row("k2", error="boom", output=None)])
    assert Path(path).parent == tmp_path / "s" / "generations" / "variant=v" / "benchmark=b"
    assert Path(path).name.startswith("shard-") and len(Path(path).name) == len("shard-") + 20 + len(".parquet")
    scan = store.scan()
    assert scan.files == 1 and not scan.damaged
    assert list(scan.records.sort_index()["item_key"]) == ["k1", "k2"]
    assert scan.keys == {"k1"}  # an error record is computed again
    # the same records committed again land in the same file (content-addressed): no duplicate
    assert store.commit_generations("v", "b", [row("k1"), row("k2", error="boom", output=None)]) == path
    assert store.scan().files == 1


def test_an_answer_beats_an_error_and_duplicates_collapse(tmp_path: Path) -> None:
    store = SweepStore(tmp_path, "s")
    store.commit_generations("v", "b", [row("k1", error="oom", output=None, committed_at=1.0)])
    store.commit_generations("v", "b2", [row("k1", output="wrong", committed_at=2.0), row("k3")])
    store.commit_generations("v", "b", [row("k3", output="later", committed_at=3.0)])
    scan = store.scan()
    assert scan.files == 3 and scan.duplicates == 2
    assert scan.records.loc["k1", "output"] == "wrong"
    assert scan.records.loc["k3", "output"] == "later"
    assert scan.keys == {"k1", "k3"}


def test_crash_between_write_and_rename_leaves_no_shard(tmp_path: Path) -> None:
    """Kill the process right before the rename: only an ignored dot-file remains."""
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        import cluster.storage.atomic as atomic
        from jobs.store.sweep import SweepStore
        def crash(src, dst):
            os._exit(17)
        atomic.os.replace = crash
        store = SweepStore({str(tmp_path)!r}, "s")
        store.commit_generations("v", "b", [{row("k1")!r}])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 17, proc.stderr
    store = SweepStore(tmp_path, "s")
    folder = tmp_path / "s" / "generations" / "variant=v" / "benchmark=b"
    leftovers = list(folder.iterdir())
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)
    assert leftovers[0].stat().st_size > 0
    scan = store.scan()
    assert scan.files == 0 and scan.records.empty and not scan.damaged
    dataset = ds.dataset(tmp_path / "s" / "generations", format="parquet", partitioning="hive")
    assert dataset.files == []


def test_damaged_shards_are_named_moved_aside_and_not_counted(tmp_path: Path) -> None:
    store = SweepStore(tmp_path, "s")
    good = Path(store.commit_generations("v", "b", [row("k1")]))
    truncated = Path(store.commit_generations("v", "b", [row("k2")]))
    middle = Path(store.commit_generations("v", "b", [row("k3", output="x" * 5000)]))
    truncated.write_bytes(truncated.read_bytes()[:40])
    data = bytearray(middle.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = b"\x00" * 16  # the footer is intact, the middle is not
    middle.write_bytes(bytes(data))
    scan = store.scan()
    assert {Path(d.path).name for d in scan.damaged} == {truncated.name, middle.name}
    assert scan.keys == {"k1"}
    assert good.exists() and not truncated.exists() and not middle.exists()
    assert (truncated.parent / f".damaged-{truncated.name}").exists()
    again = store.scan()
    assert not again.damaged and again.keys == {"k1"}


def test_foreign_files_are_ignored(tmp_path: Path) -> None:
    store = SweepStore(tmp_path, "s")
    folder = tmp_path / "s" / "generations" / "variant=v" / "benchmark=b"
    folder.mkdir(parents=True)
    (folder / "shard-00000.parquet").write_bytes(b"an older layout")
    store.commit_generations("v", "b", [row("k1")])
    scan = store.scan()
    assert scan.files == 1 and scan.keys == {"k1"} and not scan.damaged


def test_manifest_roundtrip_and_uri_root(tmp_path: Path) -> None:
    store = SweepStore(f"file://{tmp_path}", "s")
    assert store.local and store.read_manifest() == {}
    store.write_manifest({"a": {"b": 1}})
    assert store.read_manifest() == {"a": {"b": 1}}
    assert (tmp_path / "s" / "manifest.json").is_file()


def test_response_cache_publishes_and_finds_by_key(tmp_path: Path) -> None:
    from jobs.store.records import records_table

    cache = ResponseCache(tmp_path / "cache")
    cache.publish("a" * 24, records_table([row("a" * 24 + "1" * 40), row("a" * 24 + "2" * 40, error="x", output=None)]))
    found = cache.lookup({"a" * 24 + "1" * 40, "a" * 24 + "2" * 40, "b" * 64}, 24)
    assert list(found["item_key"]) == ["a" * 24 + "1" * 40]


# -- the scan index --------------------------------------------------------------------------------


def _commit_indexed(store: SweepStore, writer, variant: str, keys: list[str]) -> None:
    from jobs.store.records import records_table

    table = records_table([row(k) for k in keys])
    writer.add(store.generations.write_shard(f"variant={variant}/benchmark=b", table), table)


def test_committed_shards_are_scanned_from_index_segments(tmp_path: Path) -> None:
    from jobs.store.shards import IndexWriter

    store = SweepStore(tmp_path, "s")
    writer = IndexWriter(store.generations, every_files=3, every_s=3600)
    for i in range(7):
        _commit_indexed(store, writer, "v", [f"k{i}a", f"k{i}b"])
    writer.flush()
    segments = sorted((tmp_path / "s" / "generations" / "_index").glob("segment-*.parquet"))
    assert len(segments) == 3  # 3 + 3 + the flushed 1
    scan = store.scan()
    assert scan.files == 7 and scan.from_index == 7 and len(scan.records) == 14
    # the index never decides what exists: a deleted shard's records are gone from the next scan
    victim = store.generations.shard_files()[0]
    gone = set(SweepStore(tmp_path, "s").generations.read_file(victim).column("item_key").to_pylist())
    Path(victim).unlink()
    scan = store.scan()
    assert scan.files == 6 and scan.from_index == 6 and not gone & scan.keys and len(scan.records) == 12
    # a shard no segment covers is read one by one, then covered by a segment the scan writes
    store.commit_generations("v", "b", [row("new")])
    first = store.scan()
    assert first.files == 7 and first.from_index == 6 and "new" in first.keys
    again = store.scan()
    assert again.from_index == 7 and again.keys == first.keys
    # verifying every file again ignores the index
    assert store.scan(use_index=False).from_index == 0


def test_a_damaged_or_foreign_segment_only_makes_the_scan_read_the_shards(tmp_path: Path) -> None:
    store = SweepStore(tmp_path, "s")
    for i in range(4):
        store.commit_generations("v", "b", [row(f"k{i}")])
    assert store.scan().from_index == 0
    index = tmp_path / "s" / "generations" / "_index"
    (segment,) = index.glob("segment-*.parquet")
    segment.write_bytes(segment.read_bytes()[:-100])  # truncated: no longer matches its digest
    (index / "segment-0123456789abcdef0123.parquet").write_bytes(b"garbage")
    scan = store.scan()
    assert scan.files == 4 and scan.from_index == 0 and scan.keys == {"k0", "k1", "k2", "k3"} and not scan.damaged


def test_a_shard_changed_after_indexing_is_read_and_set_aside(tmp_path: Path) -> None:
    store = SweepStore(tmp_path, "s")
    keep = store.commit_generations("v", "b", [row("k1")])
    broken = store.commit_generations("v", "b", [row("k2")])
    rewritten = store.commit_generations("v", "b", [row("k3")])
    assert store.scan().from_index == 0 and store.scan().from_index == 3
    Path(broken).write_bytes(Path(broken).read_bytes()[:-10])  # another size: the segment no longer covers it
    import os

    data = bytearray(Path(rewritten).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, written again later: another modification time
    Path(rewritten).write_bytes(bytes(data))
    later = os.stat(rewritten).st_mtime_ns + 5_000_000
    os.utime(rewritten, ns=(later, later))
    scan = store.scan()
    assert scan.keys == {"k1"} and sorted(d.path for d in scan.damaged) == sorted([broken, rewritten])
    assert Path(keep).exists() and scan.from_index == 1


def test_many_segments_are_merged_into_one(tmp_path: Path) -> None:
    from jobs.store.shards import MAX_SEGMENTS, IndexWriter

    store = SweepStore(tmp_path, "s")
    writer = IndexWriter(store.generations, every_files=1, every_s=3600)
    for i in range(MAX_SEGMENTS + 2):
        _commit_indexed(store, writer, f"v{i % 3}", [f"k{i}"])
    index = tmp_path / "s" / "generations" / "_index"
    assert len(list(index.glob("segment-*.parquet"))) == MAX_SEGMENTS + 2
    first = store.scan()
    assert first.from_index == MAX_SEGMENTS + 2
    assert len(list(index.glob("segment-*.parquet"))) == 1
    again = store.scan()
    assert again.from_index == MAX_SEGMENTS + 2 and again.keys == first.keys == {
        f"k{i}" for i in range(MAX_SEGMENTS + 2)
    }


def test_verify_store_finds_a_file_damaged_after_it_was_indexed(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from jobs.runner import _scan

    store = SweepStore(tmp_path, "s")
    store.commit_generations("v", "b", [row("k1")])
    victim = store.commit_generations("v", "b", [row("k2")])
    store.scan()  # indexes both files
    import os

    before = os.stat(victim)
    data = bytearray(Path(victim).read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot: same size, same modification time, other bytes
    Path(victim).write_bytes(bytes(data))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    console = Console(file=io.StringIO(), width=200)
    assert _scan(store, console).keys == {"k1", "k2"}  # trusted from the index
    checked = _scan(store, console, verify=True)
    assert checked.keys == {"k1"} and [d.path for d in checked.damaged] == [victim]
    assert "damaged shard" in console.file.getvalue() and not Path(victim).exists()
    assert store.scan().keys == {"k1"}  # the moved file no longer counts, index or not
