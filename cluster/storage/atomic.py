"""One atomic write, one "missing file" read and one content digest for every file qtrust commits: the
sweep store (shards, index segments, ``sweep.yaml``, ``manifest.json``), the sweep lock's lease and
the variant cache (meta files, leases).

* :func:`write_atomic` commits a whole file, never half of one: on a local disk a dot-prefixed temp
  file next to the target (``.tmp-<name>-<random>``: readers ignore dot-files), ``fsync``, then
  ``os.replace`` and an ``fsync`` of the folder; on an object store (S3, GCS) a single PUT; on
  other ``pyarrow.fs`` filesystems (``memory://``, HDFS) one output stream after creating the folder.
  New files get the permissions of a normally created file (``0o666`` less the umask).
* :func:`read_bytes` returns a file's bytes, or None when it does not exist (any other error is raised).
* :func:`content_digest` names content: the first 20 hex digits of its sha256.

``fs=None`` means the local disk with ``path`` a plain path; a ``pyarrow.fs.LocalFileSystem`` is the
local disk too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

#: ``pyarrow.fs`` type names of object stores: a single PUT is the commit, folders are implicit.
OBJECT_STORES = frozenset({"s3", "gcs"})


def content_digest(data: bytes) -> str:
    """The first 20 hex digits of the sha256 of ``data`` (names a shard or an index segment)."""
    return hashlib.sha256(data).hexdigest()[:20]


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _file_mode() -> int:
    """Permissions of a normally created file under the current umask (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a local ``path`` through a dot-prefixed temp file, fsync and ``os.replace``.

    The folder is created when missing and fsynced after the rename; the temp file is removed if
    anything fails, so a crash leaves the old file or the new one, never a part.
    """
    path = Path(path)
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


def is_local(fs: pafs.FileSystem | None) -> bool:
    """Whether ``fs`` is the local disk (None counts as the local disk)."""
    return fs is None or isinstance(fs, pafs.LocalFileSystem)


def write_atomic(fs: pafs.FileSystem | None, path: str | Path, data: bytes, local: bool | None = None) -> None:
    """Atomic whole-file write: temp + fsync + rename locally, a single PUT on object stores.

    ``local`` (default: whether ``fs`` is the local disk) picks the local commit. On S3 the
    filesystem comes from :func:`cluster.storage.uri.open_location`, which opens it with
    ``allow_delayed_open``: the bytes are sent in one ``PutObject`` when the stream closes (objects
    up to pyarrow's 10 MB part size; larger ones go as a multipart upload, which S3 also shows only
    once it is completed). Object stores need no folder markers, so none are written.
    """
    if is_local(fs) if local is None else local:
        atomic_write_bytes(Path(path), data)
        return
    assert fs is not None
    path = str(path)
    if getattr(fs, "type_name", "") not in OBJECT_STORES:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def _missing(err: OSError) -> bool:
    """Whether ``err`` says the file does not exist (object stores word it rather than typing it)."""
    if isinstance(err, FileNotFoundError):
        return True
    text = str(err).lower()
    return "not exist" in text or "not found" in text


def read_bytes(fs: pafs.FileSystem | None, path: str | Path) -> bytes | None:
    """The bytes of the file at ``path`` (on ``fs``, or the local disk when None); None when it does not exist.

    Any other failure (a folder, no permission, a network error) is raised as the ``OSError`` it is.
    """
    try:
        if fs is None:
            with open(path, "rb") as handle:
                return handle.read()
        with fs.open_input_stream(str(path)) as stream:
            return stream.readall()
    except OSError as err:
        if _missing(err):
            return None
        raise
