"""The variant cache: build once, concurrent callers across processes, crash safety, remote roots.

Real files, real processes (subprocesses load cache.py directly so they skip importing torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest
from filelock import FileLock

from cluster.variants.cache import META_FILE, CacheEntry, VariantCache

REPO = Path(__file__).resolve().parents[2]
KEY = "0123456789abcdef" * 4
KEY2 = "fedcba9876543210"

# A separate process calling get_or_build; arguments come as one JSON argv, the result is printed as JSON.
WORKER = r"""
import hashlib, importlib.util, json, os, sys, time
from pathlib import Path

args = json.loads(sys.argv[1])
spec = importlib.util.spec_from_file_location("qtrust_variant_cache", os.path.join(args["repo"], "cluster/variants/cache.py"))
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)

def build(staging):
    with open(args["counter"], "a") as out:
        out.write(f"{os.getpid()}\n")
    (staging / "weights.bin").write_bytes(b"w" * 4096)
    if args.get("started"):
        Path(args["started"]).write_text("started")
    time.sleep(args["sleep"])
    (staging / "sub").mkdir()
    (staging / "sub" / "config.json").write_text('{"bits": 4}')
    return {"bits": 4}

mirror = Path(args["mirror"]) if args.get("mirror") else None
cache = mod.VariantCache(args["root"], local_mirror=mirror, poll_interval_s=0.05)
if args.get("go"):
    while not os.path.exists(args["go"]):
        time.sleep(0.005)
entry = cache.get_or_build(args["key"], build, label="w4")
digests = {p.relative_to(entry.path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
           for p in sorted(entry.path.rglob("*")) if p.is_file() and p.name != mod.META_FILE}
print(json.dumps({"path": str(entry.path), "hit": entry.hit, "digests": digests}))
"""


def start_worker(tmp_path: Path, root: str | Path, **extra: Any) -> subprocess.Popen[str]:
    args = {"repo": str(REPO), "root": str(root), "key": KEY, "counter": str(tmp_path / "builds.txt"), "sleep": 1.0}
    args.update(extra)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def build_count(tmp_path: Path) -> int:
    counter = tmp_path / "builds.txt"
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != META_FILE
    }


class CountingBuilder:
    """In-process builder that counts its calls and can be told to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, staging: Path) -> dict[str, Any]:
        self.calls += 1
        assert staging.is_dir() and not any(staging.iterdir())
        (staging / "model.safetensors").write_bytes(b"\x01" * 1000)
        (staging / "nested").mkdir()
        (staging / "nested" / "tokenizer.json").write_text("{}")
        if self.fail:
            raise RuntimeError("quantization blew up")
        return {"method": "rtn", "bits": 4}


# ----------------------------------------------------------------------------- local root


def test_build_then_hit_lookup_entries_remove(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path / "variants")
    builder = CountingBuilder()
    assert cache.lookup(KEY) is None

    first = cache.get_or_build(KEY, builder, label="w4 rtn", describe={"model": "tiny", "recipe": "w4"})
    assert isinstance(first, CacheEntry) and not first.hit and builder.calls == 1
    assert first.path == tmp_path / "variants" / KEY
    assert (first.path / "model.safetensors").read_bytes() == b"\x01" * 1000
    assert (first.path / "nested" / "tokenizer.json").is_file()
    meta = json.loads((first.path / META_FILE).read_text())
    assert meta == first.meta
    assert meta["method"] == "rtn" and meta["bits"] == 4 and meta["key"] == KEY and meta["label"] == "w4 rtn"
    assert meta["describe"] == {"model": "tiny", "recipe": "w4"}
    assert meta["size_bytes"] == 1002 and meta["build_s"] >= 0 and meta["host"] and meta["created"]
    assert not list((tmp_path / "variants").glob(".staging-*"))

    second = cache.get_or_build(KEY, builder)
    assert second.hit and builder.calls == 1 and second.path == first.path and second.meta == first.meta
    found = cache.lookup(KEY)
    assert found is not None and found.hit and found.path == first.path
    assert [entry.key for entry in cache.entries()] == [KEY]

    assert cache.remove(KEY) and not cache.remove(KEY)
    assert cache.lookup(KEY) is None and cache.entries() == [] and not first.path.exists()


def test_annotate_adds_fields_to_a_complete_entry_only(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path / "variants")
    with pytest.raises(KeyError, match=KEY):
        cache.annotate(KEY, {"weights_sha256": "ab" * 32})
    built = cache.get_or_build(KEY, CountingBuilder(), label="w4")
    meta = cache.annotate(KEY, {"weights_sha256": "ab" * 32, "key": "not-the-key"})
    assert meta == {**built.meta, "weights_sha256": "ab" * 32}  # the key stays: the meta is still the commit marker
    found = cache.lookup(KEY)
    assert found is not None and found.meta == meta
    assert not list((tmp_path / "variants").glob(f"{KEY}/*.tmp*"))


def test_default_root_and_key_validation(tmp_path: Path) -> None:
    cache = VariantCache.default(tmp_path)
    assert cache.root == tmp_path / "variants" and not cache.is_remote
    for bad in ["ABCDEF0123456789", "abc", "0123456789abcdeg", "../" + KEY, KEY + "0"]:
        with pytest.raises(ValueError, match="lowercase hex"):
            cache.get_or_build(bad, CountingBuilder())
        with pytest.raises(ValueError):
            cache.lookup(bad)


def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    root = tmp_path / "variants"
    go = tmp_path / "go"
    procs = [start_worker(tmp_path, root, go=str(go)) for _ in range(3)]
    go.write_text("go")
    results = [finish(proc) for proc in procs]
    assert build_count(tmp_path) == 1
    assert sorted(result["hit"] for result in results) == [False, True, True]
    assert {result["path"] for result in results} == {str(root / KEY)}
    assert all(result["digests"] == results[0]["digests"] for result in results)
    assert set(results[0]["digests"]) == {"weights.bin", "sub/config.json"}


def test_failed_build_publishes_nothing(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)
    with pytest.raises(RuntimeError, match="blew up"):
        cache.get_or_build(KEY, CountingBuilder(fail=True))
    assert cache.lookup(KEY) is None and not (tmp_path / KEY).exists()
    assert not list(tmp_path.glob(".staging-*"))
    builder = CountingBuilder()
    assert not cache.get_or_build(KEY, builder).hit and builder.calls == 1


def test_killed_builder_is_never_used(tmp_path: Path) -> None:
    started = tmp_path / "started"
    proc = start_worker(tmp_path, tmp_path, sleep=60, started=str(started))
    wait_for(started.exists)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    leftovers = list(tmp_path.glob(f".staging-{KEY}-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "weights.bin").is_file()

    cache = VariantCache(tmp_path, lock_timeout_s=10)
    assert cache.lookup(KEY) is None and cache.entries() == []
    builder = CountingBuilder()
    entry = cache.get_or_build(KEY, builder)  # the dead process's lock was released by the OS
    assert (
        not entry.hit
        and builder.calls == 1
        and set(digests(entry.path)) == {"model.safetensors", "nested/tokenizer.json"}
    )
    assert not list(tmp_path.glob(".staging-*"))


@pytest.mark.parametrize("meta_text", [None, "{not json", json.dumps({"key": KEY2}), "[1, 2]"])
def test_final_folder_without_valid_meta_is_incomplete(tmp_path: Path, meta_text: str | None) -> None:
    folder = tmp_path / KEY
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"half")
    if meta_text is not None:
        (folder / META_FILE).write_text(meta_text)
    cache = VariantCache(tmp_path)
    assert cache.lookup(KEY) is None and cache.entries() == []
    builder = CountingBuilder()
    entry = cache.get_or_build(KEY, builder)
    assert not entry.hit and builder.calls == 1
    assert (entry.path / "model.safetensors").read_bytes() == b"\x01" * 1000
    assert not list(tmp_path.glob(".trash-*"))


def test_lock_timeout_names_lock_and_key(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path, lock_timeout_s=0.2)
    lock_file = tmp_path / ".locks" / f"{KEY}.lock"
    lock_file.parent.mkdir(parents=True)
    # Held by another process, as when a builder on another worker is running.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; "
            "l = FileLock(sys.argv[1]); l.acquire(); print('held', flush=True); time.sleep(30)",
            str(lock_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError) as info:
            cache.get_or_build(KEY, CountingBuilder())
        message = str(info.value)
        assert str(lock_file) in message and KEY in message and "another process is building" in message
    finally:
        holder.kill()
        holder.wait()
    with FileLock(str(lock_file), timeout=5):
        pass


# ----------------------------------------------------------------------------- remote roots


@pytest.fixture
def memory_root():
    url = f"memory://qtrust-test-{uuid.uuid4().hex}/variants"
    yield url
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def test_memory_root_publish_mirror_and_marker(memory_root: str, tmp_path: Path) -> None:
    fs, base = fsspec.core.url_to_fs(memory_root)
    cache = VariantCache(memory_root, local_mirror=tmp_path / "mirror-a")
    assert cache.is_remote
    builder = CountingBuilder()
    first = cache.get_or_build(KEY, builder, label="w4", describe={"model": "tiny"})
    assert not first.hit and builder.calls == 1 and first.url == f"{memory_root}/{KEY}"
    assert first.path == tmp_path / "mirror-a" / KEY
    assert fs.cat_file(f"{base}/{KEY}/model.safetensors") == b"\x01" * 1000
    remote_meta = json.loads(fs.cat_file(f"{base}/{KEY}/{META_FILE}"))
    assert remote_meta == first.meta and remote_meta["size_bytes"] == 1002
    assert not fs.exists(f"{base}/.leases/{KEY}.json")
    assert cache.get_or_build(KEY, builder).hit and builder.calls == 1

    other = VariantCache(memory_root, local_mirror=tmp_path / "mirror-b")
    assert [entry.key for entry in other.entries()] == [KEY]
    fetched = other.lookup(KEY)
    assert fetched is not None and fetched.hit and fetched.path == tmp_path / "mirror-b" / KEY
    assert digests(fetched.path) == digests(first.path) and fetched.meta == first.meta

    # Files uploaded but no meta object: not complete, even though both mirrors hold a copy.
    fs.rm_file(f"{base}/{KEY}/{META_FILE}")
    assert cache.lookup(KEY) is None and other.lookup(KEY) is None and other.entries() == []
    rebuilt = other.get_or_build(KEY, builder)
    assert not rebuilt.hit and builder.calls == 2
    assert cache.lookup(KEY) is not None and cache.lookup(KEY).meta == rebuilt.meta  # mirror refreshed

    # A field added later lands in the meta object and in this node's mirror; other mirrors follow on lookup.
    annotated = other.annotate(KEY, {"weights_sha256": "cd" * 32})
    assert json.loads(fs.cat_file(f"{base}/{KEY}/{META_FILE}")) == annotated
    assert json.loads((tmp_path / "mirror-b" / KEY / META_FILE).read_text()) == annotated
    assert cache.lookup(KEY).meta["weights_sha256"] == "cd" * 32

    assert other.remove(KEY)
    assert not fs.exists(f"{base}/{KEY}") and not (tmp_path / "mirror-b" / KEY).exists()
    assert cache.lookup(KEY) is None


def test_memory_root_failed_build_and_leases(memory_root: str, tmp_path: Path) -> None:
    fs, base = fsspec.core.url_to_fs(memory_root)
    cache = VariantCache(memory_root, local_mirror=tmp_path, lock_timeout_s=0.3, poll_interval_s=0.05)
    with pytest.raises(RuntimeError, match="blew up"):
        cache.get_or_build(KEY, CountingBuilder(fail=True))
    assert cache.lookup(KEY) is None and not fs.exists(f"{base}/.leases/{KEY}.json")
    assert not list(tmp_path.glob(".staging-*"))

    # A fresh lease of someone else: wait, then time out with advice.
    lease = f"{base}/.leases/{KEY}.json"
    fs.pipe_file(lease, json.dumps({"key": KEY, "owner": "other-node:1:x", "created": time.time()}).encode())
    with pytest.raises(TimeoutError, match="other-node"):
        cache.get_or_build(KEY, CountingBuilder())
    # An abandoned (stale) lease is ignored.
    fs.pipe_file(lease, json.dumps({"key": KEY, "owner": "other-node:1:x", "created": 0}).encode())
    builder = CountingBuilder()
    assert not cache.get_or_build(KEY, builder).hit and builder.calls == 1
    assert not fs.exists(lease)


def test_file_url_root_across_processes(tmp_path: Path) -> None:
    remote_dir = tmp_path / "bucket"
    url = remote_dir.as_uri()
    proc = start_worker(tmp_path, url, mirror=str(tmp_path / "mirror-a"), sleep=0)
    result = finish(proc)
    assert not result["hit"] and result["path"] == str(tmp_path / "mirror-a" / KEY)
    assert (remote_dir / KEY / META_FILE).is_file() and (remote_dir / KEY / "sub" / "config.json").is_file()

    cache = VariantCache(url, local_mirror=tmp_path / "mirror-b")
    entry = cache.lookup(KEY)
    assert entry is not None and entry.hit and entry.path == tmp_path / "mirror-b" / KEY
    assert digests(entry.path) == result["digests"] == digests(remote_dir / KEY)


def test_file_url_lease_makes_second_process_wait(tmp_path: Path) -> None:
    remote_dir = tmp_path / "bucket"
    url = remote_dir.as_uri()
    first = start_worker(tmp_path, url, mirror=str(tmp_path / "mirror-a"), sleep=1.5)
    wait_for((remote_dir / ".leases" / f"{KEY}.json").exists)
    second = start_worker(tmp_path, url, mirror=str(tmp_path / "mirror-b"))
    one, two = finish(first), finish(second)
    assert build_count(tmp_path) == 1
    assert not one["hit"] and two["hit"]
    assert one["digests"] == two["digests"] and two["path"] == str(tmp_path / "mirror-b" / KEY)
    assert not (remote_dir / ".leases" / f"{KEY}.json").exists()
