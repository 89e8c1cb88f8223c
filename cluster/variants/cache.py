"""Variant cache: every (model, quantization recipe) checkpoint is built once and kept.

Entries are keyed by a lowercase hex key that the caller computes (16 to 64 characters, e.g. a
sha256 of the model identity and the recipe). Two modes, picked from ``root``:

Local root (a plain path, possibly a shared mount such as NFS)::

    <root>/<key>/                      complete entry: checkpoint files + qtrust-variant.json
    <root>/.locks/<key>.lock           per-key filelock that serializes builders
    <root>/.staging-<key>-<uuid>/      a build in progress (or left behind by a crash)
    <root>/.trash-<key>-<uuid>/        an entry being deleted

  A builder takes the per-key lock, builds into a staging folder, fsyncs the files, writes the
  meta file last and renames the staging folder to ``<root>/<key>`` (atomic on one filesystem).
  An entry counts only if ``<root>/<key>/qtrust-variant.json`` parses and names the key, so a
  half-written entry is never used. Stale staging folders are removed by the next builder of
  that key while it holds the lock.

Remote root (a URI opened by :func:`cluster.storage.uri.open_location`: ``s3://``, ``gs://``,
``file://``, anything else ``pyarrow.fs`` opens, or an fsspec scheme such as ``memory://``; one
code path over ``pyarrow.fs`` with the sweep store)::

    <root>/<key>/...                   uploaded checkpoint files
    <root>/<key>/qtrust-variant.json   meta object, written LAST: it is the commit marker
    <root>/.leases/<key>.json          best-effort "I am building this" lease (owner + time)
    <mirror>/<key>/                    local copy, laid out and published like a local root

  Object stores have no rename, so the meta object marks completion; the files it lists (with
  sizes) are downloaded into the local mirror, which is published atomically like a local entry.
  Builders on one node are serialized by a filelock in the mirror. Across nodes the lease is
  only best effort (``pyarrow.fs`` offers no conditional create-if-absent, and lease ages rely on
  roughly synchronized clocks): two nodes may occasionally both build. That is harmless because
  publishing is idempotent (same key = same content; the last meta write wins).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from cluster.models.cache_dir import resolve_cache_dir
from cluster.storage.atomic import read_bytes, write_atomic

log = logging.getLogger(__name__)

#: Written last into every entry; an entry without a valid one is incomplete.
META_FILE = "qtrust-variant.json"

_KEY_RE = re.compile(r"[0-9a-f]{16,64}")

Builder = Callable[[Path], dict[str, Any]]


def check_key(key: str) -> str:
    """Return ``key`` if it is lowercase hex of 16 to 64 characters, else raise ValueError."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ValueError(
            f"variant cache key must be lowercase hex of 16-64 characters (e.g. a sha256 hexdigest), got {key!r}"
        )
    return key


@dataclass
class CacheEntry:
    """One complete cache entry."""

    key: str
    path: Path
    """Local folder holding the checkpoint files (for remote roots: the local mirror)."""
    meta: dict[str, Any]
    """The builder's report fields plus key, label, describe, created, size_bytes, build_s, host, files."""
    hit: bool
    """True if the entry existed before this call (no build ran)."""
    url: str | None = None
    """For remote roots: the entry's folder URL; None for local roots."""


# ----------------------------------------------------------------------------- helpers


def _parse_meta(raw: bytes | str, key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    return data


def _meta_bytes(meta: dict[str, Any]) -> bytes:
    """The meta file's content (the same bytes locally and remotely)."""
    return (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()


def _list_files(folder: Path) -> dict[str, int]:
    """Relative POSIX path -> size of every regular file below ``folder`` (the meta file excluded)."""
    files: dict[str, int] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            if rel != META_FILE:
                files[rel] = path.stat().st_size
    return files


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder below ``folder`` (files first, then their folders)."""
    for dirpath, _dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def _safe_rel(rel: str) -> str:
    """Reject file names from a (shared, untrusted) meta that would escape the entry folder."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"refusing unsafe file name {rel!r} in a variant meta")
    return rel


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------- local store


class _LocalStore:
    """A folder of entries published by atomic rename (the local root, or a remote root's mirror)."""

    def __init__(self, root: Path, lock_timeout_s: float) -> None:
        self.root = root
        self.lock_timeout_s = lock_timeout_s

    def final(self, key: str) -> Path:
        return self.root / key

    def lock_path(self, key: str) -> Path:
        return self.root / ".locks" / f"{key}.lock"

    def read(self, key: str) -> dict[str, Any] | None:
        """Meta of the complete entry ``key``, or None."""
        try:
            raw = read_bytes(None, self.final(key) / META_FILE)
        except OSError:  # unreadable (the entry folder is a file, no permission): not a usable entry
            return None
        return None if raw is None else _parse_meta(raw, key)

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the per-key filelock (TimeoutError with advice if it cannot be had in time)."""
        path = self.lock_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=self.lock_timeout_s)
        try:
            lock.acquire()
        except Timeout:
            raise TimeoutError(
                f"timed out after {self.lock_timeout_s:g} s waiting for lock {path} of variant {key}: "
                f"another process is building that variant. If no process is (a stale lock, e.g. on a "
                f"network filesystem after a node died), delete {path} and retry."
            ) from None
        try:
            yield
        finally:
            lock.release()

    def new_staging(self, key: str) -> Path:
        """A fresh empty staging folder in the root (same filesystem, so rename is atomic)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f".staging-{key}-{uuid.uuid4().hex}"
        path.mkdir()
        return path

    def clean_stale(self, key: str) -> None:
        """Remove leftovers of crashed builders or deletions of ``key`` (caller holds the lock)."""
        for pattern in (f".staging-{key}-*", f".trash-{key}-*"):
            for stale in self.root.glob(pattern):
                log.info("removing leftover %s", stale)
                _remove_tree(stale)

    def discard(self, key: str) -> bool:
        """Remove the folder of ``key`` (complete or not): rename it away first, then delete."""
        final = self.final(key)
        if not final.exists():
            return False
        trash = self.root / f".trash-{key}-{uuid.uuid4().hex}"
        os.rename(final, trash)
        _remove_tree(trash)
        return True

    def publish(self, key: str, staging: Path, meta: dict[str, Any], *, replace: bool = False) -> None:
        """Write the meta last, fsync, and rename ``staging`` to the entry (caller holds the lock).

        An incomplete entry folder is replaced; a complete one only if ``replace``. If a complete
        entry appeared anyway (the lock did not hold), the staging folder is dropped and that
        entry is kept.
        """
        _fsync_tree(staging)
        write_atomic(None, staging / META_FILE, _meta_bytes(meta))  # fsyncs the file and the staging folder
        final = self.final(key)
        if final.exists() and (replace or self.read(key) is None):
            self.discard(key)
        try:
            os.rename(staging, final)
        except OSError:
            if self.read(key) is None:
                raise
            log.warning("variant %s was published by someone else meanwhile; keeping theirs", key)
            _remove_tree(staging)
        _fsync_path(self.root)

    def keys(self) -> list[str]:
        """Names in the root that look like keys (complete or not)."""
        try:
            names = [path.name for path in self.root.iterdir() if path.is_dir()]
        except OSError:
            return []
        return sorted(name for name in names if _KEY_RE.fullmatch(name))


# ----------------------------------------------------------------------------- remote root


class _RemoteRoot:
    """Entries under a URI opened as a ``pyarrow.fs`` filesystem; the meta object is the commit marker."""

    def __init__(self, url: str) -> None:
        from cluster.storage.uri import open_location

        location = open_location(url, "variant cache")
        self.url = location.uri.rstrip("/")
        self.fs = location.fs
        self.base = location.path
        self._object_store = location.object_store
        self._local = location.local

    def path(self, *parts: str) -> str:
        from cluster.storage.uri import join_inside

        return join_inside(self.base, *parts, what="variant cache entry")

    def entry_url(self, key: str) -> str:
        base, sep, query = self.url.partition("?")
        return f"{base}/{key}{sep}{query}"

    def _exists(self, path: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def _cat(self, path: str) -> bytes | None:
        """The object's bytes, None when it does not exist."""
        return read_bytes(self.fs, path)

    def _put(self, path: str, data: bytes) -> None:
        """One whole object, atomically (:func:`cluster.storage.atomic.write_atomic`: a single PUT on S3)."""
        write_atomic(self.fs, path, data, self._local)

    def _makedirs(self, folder: str) -> None:
        if not self._object_store:  # object stores have no folders to create
            self.fs.create_dir(folder, recursive=True)

    def read_meta(self, key: str) -> dict[str, Any] | None:
        raw = self._cat(self.path(key, META_FILE))
        return None if raw is None else _parse_meta(raw, key)

    def upload(self, key: str, staging: Path, meta: dict[str, Any]) -> None:
        """Upload the files listed in ``meta``, then the meta object last."""
        for rel in meta["files"]:
            target = self.path(key, _safe_rel(rel))
            self._makedirs(target.rsplit("/", 1)[0])
            with open(staging / rel, "rb") as source, self.fs.open_output_stream(target) as out:
                shutil.copyfileobj(source, out, 8 << 20)
        self._put(self.path(key, META_FILE), _meta_bytes(meta))

    def download(self, key: str, meta: dict[str, Any], dest: Path) -> None:
        """Download the files listed in ``meta`` into ``dest`` and check their sizes."""
        for rel, size in meta.get("files", {}).items():
            target = dest / _safe_rel(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(self.path(key, rel)) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 8 << 20)
            if target.stat().st_size != size:
                raise OSError(
                    f"{self.entry_url(key)}/{rel}: downloaded {target.stat().st_size} bytes, meta says {size}"
                )

    def remove(self, key: str) -> bool:
        """Delete the meta object first (un-commit), then the files."""
        existed = False
        meta_path = self.path(key, META_FILE)
        if self._exists(meta_path):
            self.fs.delete_file(meta_path)
            existed = True
        if self._exists(self.path(key)):
            self.fs.delete_dir(self.path(key))
            existed = True
        return existed

    def keys(self) -> list[str]:
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        except FileNotFoundError:
            return []
        return sorted(
            i.base_name for i in infos if i.type == pafs.FileType.Directory and _KEY_RE.fullmatch(i.base_name)
        )

    # leases -------------------------------------------------------------

    def lease_path(self, key: str) -> str:
        return f"{self.base}/.leases/{check_key(key)}.json"

    def read_lease(self, key: str) -> dict[str, Any] | None:
        raw = self._cat(self.lease_path(key))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def write_lease(self, key: str, owner: str) -> None:
        lease = {"key": key, "owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "created": time.time()}
        self._put(self.lease_path(key), json.dumps(lease).encode())

    def release_lease(self, key: str, owner: str) -> None:
        """Delete the lease if it is still ours (best effort)."""
        try:
            lease = self.read_lease(key)
            if lease is not None and lease.get("owner") == owner:
                self.fs.delete_file(self.lease_path(key))
        except OSError as err:
            log.warning("could not release lease of variant %s: %s", key, err)


# ----------------------------------------------------------------------------- the cache


class VariantCache:
    """Build-once store of quantized checkpoints, safe across processes and nodes.

    Args:
        root: a local folder (possibly a shared mount), or a URI (remote mode; see
            :func:`cluster.storage.uri.open_location` for schemes, credentials and endpoints).
        local_mirror: for remote roots, where complete entries are mirrored locally
            (default ``resolve_cache_dir() / "variant-mirror"``). Ignored for local roots.
        lock_timeout_s: how long to wait for another builder of the same key (file lock, or a
            remote lease) before raising TimeoutError.
        lease_ttl_s: remote leases older than this are considered abandoned.
        poll_interval_s: how often a caller waiting on a remote lease checks for the entry.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        local_mirror: Path | None = None,
        lock_timeout_s: float = 6 * 3600,
        lease_ttl_s: float = 2 * 3600,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.lock_timeout_s = lock_timeout_s
        self.lease_ttl_s = lease_ttl_s
        self.poll_interval_s = poll_interval_s
        self._remote: _RemoteRoot | None
        if isinstance(root, str) and "://" in root:
            self._remote = _RemoteRoot(root)
            mirror = Path(local_mirror).expanduser() if local_mirror else resolve_cache_dir() / "variant-mirror"
            self._store = _LocalStore(mirror, lock_timeout_s)
            self.root: str | Path = self._remote.url
        else:
            self._remote = None
            self._store = _LocalStore(Path(root).expanduser(), lock_timeout_s)
            self.root = self._store.root

    @classmethod
    def default(cls, cache_dir: str | Path | None = None) -> VariantCache:
        """The cache under ``resolve_cache_dir(cache_dir) / "variants"``."""
        return cls(resolve_cache_dir(cache_dir) / "variants")

    @property
    def is_remote(self) -> bool:
        """True when the root is a URL (entries are mirrored locally)."""
        return self._remote is not None

    def __repr__(self) -> str:
        mirror = f", mirror={str(self._store.root)!r}" if self._remote else ""
        return f"VariantCache({str(self.root)!r}{mirror})"

    # -- public API ---------------------------------------------------------

    def lookup(self, key: str) -> CacheEntry | None:
        """The complete entry ``key`` (hit=True), or None. Never builds.

        For remote roots the entry is downloaded into the local mirror if it is not there yet.
        """
        check_key(key)
        if self._remote is None:
            meta = self._store.read(key)
            return None if meta is None else CacheEntry(key, self._store.final(key), meta, hit=True)
        meta = self._remote.read_meta(key)
        if meta is None:
            return None
        if self._store.read(key) == meta:
            return self._remote_entry(key, meta, hit=True)
        with self._store.locked(key):
            return self._mirror_locked(key, meta)

    def get_or_build(
        self,
        key: str,
        build: Builder,
        *,
        label: str = "",
        describe: dict[str, Any] | None = None,
    ) -> CacheEntry:
        """Return entry ``key``, building it with ``build(staging_dir)`` if nobody has yet.

        ``build`` writes the checkpoint files into the empty folder it is given and returns a
        JSON-able dict of report fields, stored in the meta with ``label`` and ``describe``.
        Concurrent callers for one key wait for the single builder and get its entry (hit=True).
        If ``build`` raises, nothing is published and the exception propagates.

        Raises:
            ValueError: ``key`` is not lowercase hex of 16-64 characters.
            TimeoutError: another process held the key's lock (or lease) for ``lock_timeout_s``.
        """
        found = self.lookup(key)
        if found is not None:
            return found
        if self._remote is None:
            return self._build_local(key, build, label, describe)
        return self._build_remote(key, build, label, describe)

    def entries(self) -> list[CacheEntry]:
        """All complete entries, sorted by key.

        For remote roots this reads the meta objects only and downloads nothing: ``path`` is where
        ``lookup(key)`` mirrors the entry, and it may not exist yet.
        """
        found: list[CacheEntry] = []
        if self._remote is None:
            for key in self._store.keys():
                meta = self._store.read(key)
                if meta is not None:
                    found.append(CacheEntry(key, self._store.final(key), meta, hit=True))
            return found
        for key in self._remote.keys():
            meta = self._remote.read_meta(key)
            if meta is not None:
                found.append(self._remote_entry(key, meta, hit=True))
        return found

    def annotate(self, key: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Add ``fields`` to the meta of the complete entry ``key`` and return the new meta.

        For facts learnt after the build (e.g. the weights digest of an entry built before digests
        were recorded). The meta is rewritten atomically under the key's lock, so it stays a valid
        commit marker; for remote roots the meta object and the mirror's copy are both rewritten.

        Raises:
            KeyError: there is no complete entry ``key``.
        """
        check_key(key)
        with self._store.locked(key):
            current = self._remote.read_meta(key) if self._remote is not None else self._store.read(key)
            if current is None:
                raise KeyError(f"no complete variant {key} in {self.root}")
            meta = json.loads(json.dumps({**current, **fields, "key": key}))
            if self._remote is not None:
                self._remote._put(self._remote.path(key, META_FILE), _meta_bytes(meta))
            if self._store.read(key) is not None:
                write_atomic(None, self._store.final(key) / META_FILE, _meta_bytes(meta))
            return meta

    def remove(self, key: str) -> bool:
        """Delete entry ``key`` (and, for remote roots, its local mirror). True if anything was removed."""
        check_key(key)
        with self._store.locked(key):
            removed = self._remote.remove(key) if self._remote is not None else False
            return self._store.discard(key) or removed

    # -- internals ----------------------------------------------------------

    def _remote_entry(self, key: str, meta: dict[str, Any], *, hit: bool) -> CacheEntry:
        assert self._remote is not None
        return CacheEntry(key, self._store.final(key), meta, hit=hit, url=self._remote.entry_url(key))

    def _mirror_locked(self, key: str, meta: dict[str, Any]) -> CacheEntry:
        """Download remote entry ``key`` into the mirror unless it is there already (lock held)."""
        assert self._remote is not None
        if self._store.read(key) != meta:
            self._store.clean_stale(key)
            staging = self._store.new_staging(key)
            try:
                self._remote.download(key, meta, staging)
                self._store.publish(key, staging, meta, replace=True)
            finally:
                _remove_tree(staging)
        return self._remote_entry(key, meta, hit=True)

    def _run_build(
        self, key: str, build: Builder, staging: Path, label: str, describe: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Run the builder into ``staging`` and return the full meta."""
        started = time.perf_counter()
        report = build(staging)
        build_s = time.perf_counter() - started
        if not isinstance(report, dict):
            raise TypeError(f"variant builder must return a dict of report fields, got {type(report).__name__}")
        files = _list_files(staging)
        meta = {
            **report,
            "key": key,
            "label": label,
            "describe": describe or {},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "size_bytes": sum(files.values()),
            "build_s": round(build_s, 3),
            "host": socket.gethostname(),
            "files": files,
        }
        try:
            return json.loads(json.dumps(meta))  # exactly what readers will parse back
        except (TypeError, ValueError) as err:
            raise TypeError(f"variant builder report for {key} is not JSON-serializable: {err}") from err

    def _build_local(self, key: str, build: Builder, label: str, describe: dict[str, Any] | None) -> CacheEntry:
        with self._store.locked(key):
            meta = self._store.read(key)
            if meta is not None:
                log.info("variant %s was built by another process", key)
                return CacheEntry(key, self._store.final(key), meta, hit=True)
            self._store.clean_stale(key)
            staging = self._store.new_staging(key)
            try:
                log.info("building variant %s %s into %s", key, label, staging)
                meta = self._run_build(key, build, staging, label, describe)
                self._store.publish(key, staging, meta)
            finally:
                _remove_tree(staging)  # gone after a successful rename
            published = self._store.read(key)
            if published is None:
                raise RuntimeError(f"variant {key} vanished from {self._store.final(key)} right after publishing")
            return CacheEntry(key, self._store.final(key), published, hit=False)

    def _build_remote(self, key: str, build: Builder, label: str, describe: dict[str, Any] | None) -> CacheEntry:
        remote = self._remote
        assert remote is not None
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        with self._store.locked(key):  # one builder per node
            deadline = time.monotonic() + self.lock_timeout_s
            while True:
                meta = remote.read_meta(key)
                if meta is not None:
                    return self._mirror_locked(key, meta)
                lease = remote.read_lease(key)
                created = lease.get("created") if lease else None
                age = time.time() - created if isinstance(created, (int, float)) else None
                if lease is None or age is None or age >= self.lease_ttl_s or lease.get("owner") == owner:
                    remote.write_lease(key, owner)
                    mine = remote.read_lease(key)
                    if mine is not None and mine.get("owner") == owner:
                        break  # ours, unless a racing writer overwrites it later (harmless)
                elif time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"timed out after {self.lock_timeout_s:g} s waiting for variant {key}: lease "
                        f"{remote.lease_path(key)} says {lease.get('owner')} is building it. "
                        f"If that builder is gone, delete the lease object and retry (leases older than "
                        f"{self.lease_ttl_s:g} s are ignored)."
                    )
                time.sleep(self.poll_interval_s)
            try:
                meta = remote.read_meta(key)
                if meta is not None:
                    return self._mirror_locked(key, meta)
                self._store.clean_stale(key)
                staging = self._store.new_staging(key)
                try:
                    log.info("building variant %s %s for %s", key, label, remote.entry_url(key))
                    meta = self._run_build(key, build, staging, label, describe)
                    remote.upload(key, staging, meta)
                    self._store.publish(key, staging, meta, replace=True)
                finally:
                    _remove_tree(staging)
            finally:
                remote.release_lease(key, owner)
            return self._remote_entry(key, meta, hit=False)
