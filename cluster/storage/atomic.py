"""One atomic write and one content digest for every file qtrust commits (store shards, the sweep
lock, the variant cache): temp file + fsync + rename on a local disk, a single PUT on object stores.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pyarrow.fs as pafs


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode() -> int:
    """Permissions of a normally created file under the current umask (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a local ``path`` through a dot-prefixed temp file, fsync and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(str(path.parent))


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes, local: bool) -> None:
    """Atomic whole-object write: temp + fsync + rename locally, a single PUT elsewhere.

    On S3 the filesystem comes from :func:`cluster.storage.uri.open_location`, which opens it with
    ``allow_delayed_open``: the bytes are sent in one ``PutObject`` when the stream closes (objects
    up to pyarrow's 10 MB part size; larger ones go as a multipart upload, which S3 also shows only
    once it is completed). Object stores need no folder markers, so none are written.
    """
    if local:
        atomic_write_bytes(Path(path), data)
        return
    if getattr(fs, "type_name", "") not in ("s3", "gcs"):
        folder = path.rsplit("/", 1)[0]
        fs.create_dir(folder, recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)
