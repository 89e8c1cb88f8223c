"""Can a local storage root take files? Asked by ``qtrust validate`` and before a sweep does any work.

A root on a read-only mount, under ``/proc``, in a folder of another user, or on a full disk would
otherwise pass validation and fail deep inside a run (the lock, the first shard). For a local root
(a plain path or ``file://``) :func:`writable_problem` creates the missing folders, writes and
fsyncs a small dot-file probe (readers ignore dot-files), removes it, and removes the folders it
created, so asking leaves nothing behind. The answer is one line naming the field and the fix.
Object stores (``s3://``, ``gs://`` ...) are not probed here: writing to them is checked when the
store opens, as before.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cluster.storage.uri import is_uri

#: Top-level folders that belong to the kernel (no sweep can live there).
KERNEL_TREES = ("proc", "sys")
#: Bytes written to the probe: one filesystem block, so a full disk says so now.
PROBE_BYTES = 4096


class StorageRootError(ValueError):
    """A storage root no file can be written to; ``str()`` is one line for the user."""


def local_root(root: str | Path) -> Path | None:
    """The local folder ``root`` names (a plain path or ``file://``); None for any other URI."""
    text = str(root)
    if not is_uri(text):
        return Path(text).expanduser()
    parts = urlsplit(text)
    if parts.scheme.lower() == "file":
        return Path(unquote(parts.path) or "/")
    return None


def _reason(err: OSError) -> str:
    """What an ``OSError`` from creating or writing a file means, in a few words."""
    if err.errno == errno.EROFS:
        return "read-only file system"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full; free some space or choose another disk"
    return str(err.strerror or err)


def writable_problem(root: str | Path, field: str = "storage.root") -> str | None:
    """One line saying why no file can be written under the local root ``root`` (None when one can)."""
    path = local_root(root)
    if path is None:
        return None
    fix = f"point {field} (or --storage-root) at a folder you can write"
    try:
        top = path.resolve().parts[1:2]
    except (OSError, RuntimeError):
        top = ()
    if top and top[0] in KERNEL_TREES:
        return f"{field}: {root} is under /{top[0]}, the kernel's own file system, not a disk; {fix}"
    created: list[Path] = []
    doing = f"cannot look up {root}"
    try:
        missing: list[Path] = []
        existing = path
        while not existing.exists() and existing.parent != existing:
            missing.append(existing)
            existing = existing.parent
        if not existing.is_dir():
            return f"{field}: {existing} is a file, not a folder; {fix}"
        doing = f"cannot create the folder {root}"
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:  # made by someone else meanwhile
                continue
            created.append(folder)
        doing = f"cannot write a file in {root}"
        handle, probe = tempfile.mkstemp(prefix=".qtrust-write-probe-", dir=path)
        try:
            os.write(handle, b"\0" * PROBE_BYTES)
            os.fsync(handle)
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as err:
        return f"{field}: {doing} ({_reason(err)}); {fix}"
    finally:
        for folder in reversed(created):  # asking leaves nothing behind
            try:
                folder.rmdir()
            except OSError:
                pass
    return None


def check_writable(root: str | Path, field: str = "storage.root") -> None:
    """Raise :class:`StorageRootError` with :func:`writable_problem`'s line when ``root`` cannot take files."""
    problem = writable_problem(root, field)
    if problem:
        raise StorageRootError(problem)
