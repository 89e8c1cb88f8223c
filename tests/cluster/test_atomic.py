"""The one atomic write and "missing file" read (:mod:`cluster.storage.atomic`) used by the sweep
store, the sweep lock and the variant cache."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from cluster.storage import atomic
from cluster.storage.atomic import atomic_write_bytes, content_digest, read_bytes, write_atomic


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_local_write_replaces_whole_file_with_normal_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.json"
    write_atomic(None, target, b"one")
    write_atomic(None, str(target), b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == _umask_mode()  # not mkstemp's 0600
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]  # no temp file left


def test_local_filesystem_counts_as_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pyarrow LocalFileSystem commits through the temp-file rename too (fsync of file and folder)."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    write_atomic(pafs.LocalFileSystem(), str(tmp_path / "x" / "f.bin"), b"data")
    assert (tmp_path / "x" / "f.bin").read_bytes() == b"data" and len(synced) == 2


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f"
    atomic_write_bytes(target, b"old")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f"]


def test_read_bytes_is_none_only_when_missing(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    assert read_bytes(None, tmp_path / "f") == b"x"
    assert read_bytes(None, tmp_path / "nope") is None
    assert read_bytes(pafs.LocalFileSystem(), str(tmp_path / "f")) == b"x"
    assert read_bytes(pafs.LocalFileSystem(), str(tmp_path / "nope" / "f")) is None
    with pytest.raises(OSError):
        read_bytes(None, tmp_path)  # a folder is an error, not a missing file


def test_other_filesystems_write_one_stream() -> None:
    import fsspec  # installed with torch; a missing one fails here instead of skipping

    memory = fsspec.filesystem("memory")
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(memory))
    write_atomic(fs, "/qtrust-atomic-test/deep/f.json", b"{}")
    assert read_bytes(fs, "/qtrust-atomic-test/deep/f.json") == b"{}"
    assert read_bytes(fs, "/qtrust-atomic-test/deep/missing.json") is None
    memory.rm("/qtrust-atomic-test", recursive=True)


def test_content_digest_names_content() -> None:
    assert content_digest(b"abc") == "ba7816bf8f01cfea4141"
    assert len(content_digest(b"")) == 20
