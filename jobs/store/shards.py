"""Shard files and the scan index of a record folder (a sweep's ``generations/`` or ``judgments/``,
or the response cache).

Layout::

    <folder>/<field>=<name>/.../shard-<digest>.parquet    committed shards (generations: variant=<v>/benchmark=<b>;
                                                          judgments: judge=<j>/variant=<v>/benchmark=<b>;
                                                          response cache: ctx=<context>)
    <folder>/<field>=<name>/.../.tmp-shard-<digest>.parquet-<random>
                                                          a commit in progress, or left by a crash (local disks)
    <folder>/<field>=<name>/.../.damaged-shard-<digest>.parquet
                                                          a damaged shard set aside, kept for inspection
    <folder>/_index/segment-<digest>.parquet              scan index segments (records of many shards)

``<digest>`` is the first 20 hex digits of the sha256 of the file's bytes. Readers ignore dot-files
and ``_``-folders when they look for shards.

Every record carries its key (``item_key``, or ``judgment_key`` for judgments); a folder is a set of
records, and shard files are only the unit of atomic commit. Because a shard's name holds the digest
of its bytes, a reader detects any damage (a truncated file, a corrupted middle with an intact footer,
garbage) by hashing what it read: a damaged shard is named, moved aside as a dot-file and its items
are computed again.

Commit (:func:`cluster.storage.atomic.write_atomic`): locally a dot-prefixed temp file in the shard's
folder, fsync, ``os.replace`` and a folder fsync; on object stores a single PUT of the whole object.
A crash at any point leaves either nothing or a whole shard, never a half-written one that counts.

Scan index: reading 100,000 small files costs minutes, so whoever commits shards also writes *index
segments* every few seconds: one content-addressed Parquet file holding the records of many shards,
with a ``source`` column naming the shard each row came from and the size and modification time of
each shard it covers. A scan lists the folder, takes each shard from a segment when the listing shows
it with the same size and modification time, and reads (and verifies) only the others. The index
never decides what exists: a shard that is gone is gone, a shard rewritten or truncated since (another
size or time) is read and checked, a shard no segment covers is read, a damaged segment is ignored;
deleting ``_index/`` only makes the next scan slower. Only damage that keeps both size and time (bit
rot) goes unseen until ``scan(use_index=False)`` verifies every file.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.storage.atomic import content_digest, write_atomic
from cluster.storage.uri import (
    StorageLocationError,
    join_inside,
    open_location,
    safe_part,
)
from jobs.store.records import (
    GENERATIONS,
    KIND_FIELD,
    RECORD_SCHEMA,
    SCHEMA_FIELD,
    RecordKind,
    dedupe_records,
    empty_records,
    serialize,
)

log = logging.getLogger(__name__)


_SHARD_NAME = re.compile(r"^shard-([0-9a-f]{20})\.parquet$")


_SEGMENT_NAME = re.compile(r"^segment-([0-9a-f]{20})\.parquet$")


INDEX_FOLDER = "_index"


INDEX_FILES_FIELD = b"qtrust.index_files.v2"


INDEX_SCHEMA = RECORD_SCHEMA.append(pa.field("source", pa.string()))


def open_filesystem(uri: str | Path) -> tuple[pafs.FileSystem, str, bool]:
    """``(filesystem, path inside it, is_local)`` for a local path or a ``pyarrow.fs`` URI.

    See :func:`cluster.storage.uri.open_location` (credentials in the URI are refused).
    """
    location = open_location(uri)
    return location.fs, location.path, location.local


@dataclass
class Damaged:
    """A shard file that could not be used, and why (it was moved aside and its items recomputed)."""

    path: str
    reason: str


@dataclass
class ScanResult:
    """Every usable record of a store folder, one per item key."""

    records: pd.DataFrame
    """Indexed by ``item_key`` (unique): a successful answer wins over an error, a later one over an earlier."""
    files: int = 0
    damaged: list[Damaged] = field(default_factory=list)
    duplicates: int = 0
    from_index: int = 0
    """How many of the ``files`` were taken from index segments instead of being read one by one."""
    key: str = "item_key"
    """The key column (``item_key`` for generations, ``judgment_key`` for judgments)."""

    @property
    def keys(self) -> set[str]:
        """Keys whose record holds an answer (error records are computed again)."""
        ok = self.records["error"].isna().to_numpy()
        return set(self.records[self.key].to_numpy(dtype=object)[ok].tolist())


@dataclass
class ShardFile:
    """A committed shard: its path in the filesystem, its path inside the folder and its size."""

    path: str
    relative: str
    size: int
    mtime_ns: int = 0

    @property
    def stamp(self) -> tuple[int, int]:
        """Size and modification time: what a segment covering this file expects to find in a listing."""
        return (self.size, self.mtime_ns)


class RecordFolder:
    """A folder of content-addressed record shards (a sweep's ``generations/`` or the response cache)."""

    def __init__(self, fs: pafs.FileSystem, path: str, local: bool, kind: RecordKind = GENERATIONS):
        self.fs = fs
        self.path = path
        self.local = local
        self.kind = kind

    def write(self, relative: str, table: pa.Table) -> str:
        """Commit ``table`` as ``<relative>/shard-<digest>.parquet``; returns the file's path."""
        return self.write_shard(relative, table).path

    def write_shard(self, relative: str, table: pa.Table) -> ShardFile:
        """Like :meth:`write`, returning what an index segment needs to cover the shard."""
        _check_partitions(relative)
        data = serialize(table)
        name = (
            f"{relative}/shard-{content_digest(data)}.parquet" if relative else f"shard-{content_digest(data)}.parquet"
        )
        path = join_inside(self.path, name, what="shard folder")  # never outside the folder, whatever the names
        write_atomic(self.fs, path, data, self.local)
        return ShardFile(path, name, *self._stamp(path, len(data)))

    def _stamp(self, path: str, size: int) -> tuple[int, int]:
        try:
            info = self.fs.get_file_info(path)
            return int(info.size if info.size is not None else size), int(info.mtime_ns or 0)
        except (OSError, pa.ArrowException):
            return size, -1  # no segment will match it: the next scan reads the file itself

    def _listing(self, under: str = "") -> dict[str, tuple[int, int]]:
        """Shard files below ``under``: path inside the folder -> (size, mtime_ns) (dot- and underscore-folders skipped)."""
        base = f"{self.path}/{under}" if under else self.path
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except (OSError, pa.ArrowException) as err:
            log.warning("cannot list %s: %s", base, err)
            return {}
        found = {}
        cut = len(self.path) + 1
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            relative = info.path[cut:]
            parts = relative.split("/")
            if _SHARD_NAME.match(parts[-1]) and not any(p.startswith((".", "_")) for p in parts):
                found[relative] = (int(info.size or 0), int(info.mtime_ns or 0))
        return dict(sorted(found.items()))

    def shard_files(self, under: str = "") -> list[str]:
        return [f"{self.path}/{relative}" for relative in self._listing(under)]

    def _read_verified(self, path: str, pattern: re.Pattern[str], kind: bytes) -> pa.Table:
        with self.fs.open_input_stream(path) as stream:
            data = stream.readall()
        expected = pattern.match(path.rsplit("/", 1)[-1]).group(1)  # type: ignore[union-attr]
        if content_digest(data) != expected:
            raise ValueError(f"content does not match its digest ({len(data)} bytes; truncated or overwritten)")
        table = pq.read_table(pa.BufferReader(data))
        meta = table.schema.metadata or {}
        if meta.get(KIND_FIELD) != kind or meta.get(SCHEMA_FIELD) != self.kind.version:
            raise ValueError(f"not a qtrust {kind.decode()} file of this version")
        return table

    def read_file(self, path: str) -> pa.Table:
        """One shard, checked against the digest in its name (raises ``ValueError`` when damaged)."""
        kind = self.kind
        return self._read_verified(path, _SHARD_NAME, kind.name).select(kind.columns).cast(kind.schema)

    def move_aside(self, path: str) -> None:
        """Rename a damaged shard to a dot-file next to it (ignored by readers, kept for inspection)."""
        folder, name = path.rsplit("/", 1)
        try:
            self.fs.move(path, f"{folder}/.damaged-{name}")
        except (OSError, pa.ArrowException) as err:
            log.warning("could not move damaged shard %s aside: %s", path, err)

    # -- index segments ------------------------------------------------------------------------

    @property
    def index_path(self) -> str:
        return f"{self.path}/{INDEX_FOLDER}"

    def write_segment(self, shards: list[tuple[ShardFile, pa.Table]]) -> str | None:
        """Write one index segment covering ``shards`` (each with the records it holds)."""
        if not shards:
            return None
        table = pa.concat_tables([_with_source(shard, t, self.kind) for shard, t in shards])
        return self._write_segment_table(table, {shard.relative: shard.stamp for shard, _ in shards})

    def _write_segment_table(self, table: pa.Table, files: dict[str, tuple[int, int]]) -> str:
        meta = {
            KIND_FIELD: b"index",
            SCHEMA_FIELD: self.kind.version,
            INDEX_FILES_FIELD: json.dumps({f: list(stamp) for f, stamp in files.items()}, sort_keys=True).encode(),
        }
        data = serialize(table.replace_schema_metadata(meta))
        path = f"{self.index_path}/segment-{content_digest(data)}.parquet"
        write_atomic(self.fs, path, data, self.local)
        return path

    def _segments(self) -> list[str]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.index_path, allow_not_found=True))
        except (OSError, pa.ArrowException):
            return []
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and _SEGMENT_NAME.match(i.base_name))

    def _read_segment(self, path: str) -> tuple[pa.Table, dict[str, tuple[int, int]]] | None:
        try:
            table = self._read_verified(path, _SEGMENT_NAME, b"index")
            files = {
                f: (int(size), int(mtime))
                for f, (size, mtime) in json.loads((table.schema.metadata or {})[INDEX_FILES_FIELD]).items()
            }
            return table.select([*self.kind.columns, "source"]).cast(self.kind.index_schema), files
        except Exception as err:
            log.info("index segment %s not used: %s", path, err)
            return None

    def _remove(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self.fs.delete_file(path)
            except (OSError, pa.ArrowException) as err:
                log.info("could not remove %s: %s", path, err)

    # -- scan ----------------------------------------------------------------------------------

    def scan(
        self,
        under: str = "",
        *,
        threads: int = 8,
        move_damaged: bool = True,
        use_index: bool = True,
        update_index: bool = True,
    ) -> ScanResult:
        """Every usable record: index segments for the shards they cover, the other shards read (in threads).

        Damaged shards are set aside; one record per key is kept. With ``update_index`` the shards read
        one by one are written into a new segment, and many segments are merged into one.
        """
        listing = self._listing(under)
        use_index = use_index and not under
        covered: dict[str, tuple[int, int]] = {}
        parts: list[pa.Table] = []
        segment_paths = self._segments() if use_index else []
        if segment_paths:
            with ThreadPoolExecutor(max_workers=max(1, min(threads, len(segment_paths)))) as pool:
                segments = [s for s in pool.map(self._read_segment, segment_paths) if s is not None]
            segments.sort(key=lambda s: -len(s[1]))
            for table, files in segments:
                usable = [f for f, stamp in files.items() if listing.get(f) == stamp and f not in covered]
                if not usable:
                    continue
                if len(usable) < len(files):
                    table = table.filter(pc.is_in(table["source"], pa.array(usable, pa.string())))
                covered.update((f, listing[f]) for f in usable)
                parts.append(table)
        to_read = [f for f in listing if f not in covered]
        damaged: list[Damaged] = []

        def load(relative: str) -> tuple[str, pa.Table] | None:
            path = f"{self.path}/{relative}"
            try:
                return relative, self.read_file(path)
            except Exception as err:
                damaged.append(Damaged(path, f"{type(err).__name__}: {str(err)[:300]}"))
                return None

        read: list[tuple[str, pa.Table]] = []
        if to_read:
            with ThreadPoolExecutor(max_workers=max(1, min(threads, len(to_read)))) as pool:
                read = [r for r in pool.map(load, to_read) if r is not None]
        if move_damaged:
            for item in damaged:
                self.move_aside(item.path)
        if use_index and update_index:
            self._update_index(parts, covered, read, listing, segment_paths)
        kind = self.kind
        tables = [t.select(kind.columns) for t in parts] + [t for _, t in read]
        if not tables:
            return ScanResult(empty_records(kind), len(listing), damaged, key=kind.key)
        frame = pa.concat_tables(tables).to_pandas()
        records, duplicates = dedupe_records(frame, kind)
        return ScanResult(records, len(listing), damaged, duplicates, from_index=len(covered), key=kind.key)

    def _update_index(
        self,
        parts: list[pa.Table],
        covered: dict[str, tuple[int, int]],
        read: list[tuple[str, pa.Table]],
        listing: dict[str, tuple[int, int]],
        old: list[str],
    ) -> None:
        """Cover what was read one by one; merge the segments into one when there are many."""
        try:
            fresh = [(ShardFile(f"{self.path}/{f}", f, *listing[f]), t) for f, t in read]
            if len(old) + (1 if read else 0) <= MAX_SEGMENTS:
                if fresh:
                    self.write_segment(fresh)
                return
            tables = parts + [_with_source(shard, table, self.kind) for shard, table in fresh]
            files = {**covered, **{shard.relative: shard.stamp for shard, _ in fresh}}
            if tables and self._write_segment_table(pa.concat_tables(tables), files):
                self._remove(old)
        except Exception as err:
            log.info("scan index not updated: %s", err)


def _check_partitions(relative: str) -> None:
    """Refuse a shard folder whose names (``variant=<v>/benchmark=<b>``: each value) could leave the store."""
    if not relative:
        return
    seen: set[str] = set()
    for piece in relative.split("/"):
        field, sep, value = piece.partition("=")
        if not sep or field in seen:  # a '/' inside a name shows up as a piece without '=' or a repeated field
            raise StorageLocationError(f"shard folder {relative!r} is not <field>=<name>/...; a name holds a '/'")
        seen.add(field)
        safe_part(value, f"{field} name")


def _with_source(shard: ShardFile, table: pa.Table, kind: RecordKind = GENERATIONS) -> pa.Table:
    table = table.select(kind.columns).cast(kind.schema)
    return table.append_column("source", pa.array([shard.relative] * table.num_rows, pa.string()))


#: More index segments than this are merged into one by the next scan.
MAX_SEGMENTS = 32


class IndexWriter:
    """Collects committed shards and writes them as index segments every ``every_files`` or ``every_s``.

    Thread-safe (commits run in a thread pool). Call :meth:`flush` when the run ends or stops.
    """

    def __init__(self, folder: RecordFolder, every_files: int = 512, every_s: float = 5.0):
        self.folder = folder
        self.every_files = every_files
        self.every_s = every_s
        self._lock = threading.Lock()
        self._pending: list[tuple[ShardFile, pa.Table]] = []
        self._since = time.monotonic()
        self.failures = 0

    def add(self, shard: ShardFile, table: pa.Table) -> None:
        with self._lock:
            self._pending.append((shard, table))
            due = len(self._pending) >= self.every_files or time.monotonic() - self._since >= self.every_s
            batch = self._take() if due else []
        self._write(batch)

    def flush(self) -> None:
        with self._lock:
            batch = self._take()
        self._write(batch)

    def _take(self) -> list[tuple[ShardFile, pa.Table]]:
        batch, self._pending = self._pending, []
        self._since = time.monotonic()
        return batch

    def _write(self, batch: list[tuple[ShardFile, pa.Table]]) -> None:
        if not batch:
            return
        try:
            self.folder.write_segment(batch)
        except Exception as err:
            self.failures += 1
            log.info("index segment not written: %s", err)


def write_groups(
    folder: RecordFolder,
    index: IndexWriter,
    groups: dict[str, list[tuple[int, list[dict[str, Any]]]]],
    outcomes: list[Any],
) -> list[pa.Table]:
    """Group commit: each group's rows (``relative folder -> [(position, rows)]``) as one atomic shard.

    A group that cannot be written sets its members' ``outcomes`` to the error (they are retried);
    the others stand. Returns the tables written.
    """
    written_tables = []
    for relative, members in groups.items():
        table = folder.kind.table([row for _position, rows in members for row in rows])
        try:
            written = folder.write_shard(relative, table)
        except Exception as err:
            for position, _rows in members:
                outcomes[position] = err
            continue
        index.add(written, table)
        written_tables.append(table)
    return written_tables
