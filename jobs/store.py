"""The sweep store: generation records committed atomically as Parquet shards, over ``pyarrow.fs``.

Layout under ``<root>/<sweep>/`` (``root`` is a local folder or any URI ``pyarrow.fs`` opens:
``file://``, ``s3://``, ``gs://``)::

    sweep.yaml                                          resolved spec
    manifest.json                                       live plan summary, progress, MLflow run ids
    generations/variant=<v>/benchmark=<b>/shard-<digest>.parquet

Every record carries its **item key** (see :mod:`jobs.plan`); the store is a set of records, and
shard files are only the unit of atomic commit. A shard's file name holds the first 20 hex digits
of the sha256 of its bytes, so a reader detects any damage (a truncated file, a corrupted middle
with an intact footer, garbage) by hashing what it read: a damaged shard is named, moved aside as
a dot-file (readers ignore dot-files) and its items are computed again.

Commit: locally a dot-prefixed temp file in the shard's folder, fsync, ``os.replace`` and a
directory fsync; on object stores a single PUT of the whole object. A crash at any point leaves
either nothing or a whole shard, never a half-written one that counts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

#: Parquet schema metadata: what a file holds and the layout version of its records.
KIND_FIELD = b"qtrust.kind"
SCHEMA_FIELD = b"qtrust.record_schema"
RECORD_SCHEMA_VERSION = b"3"

RECORD_SCHEMA = pa.schema(
    [
        ("item_key", pa.string()),
        ("item_id", pa.string()),
        ("prompt", pa.string()),
        ("choices", pa.string()),
        ("output", pa.string()),
        ("logprobs", pa.list_(pa.float64())),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("latency_s", pa.float64()),
        ("error", pa.string()),
        ("attempt", pa.int32()),
        ("worker", pa.string()),
        ("committed_at", pa.float64()),
    ]
)
RECORD_COLUMNS = [f.name for f in RECORD_SCHEMA]

_SHARD_NAME = re.compile(r"^shard-([0-9a-f]{20})\.parquet$")


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


def open_filesystem(uri: str | Path) -> tuple[pafs.FileSystem, str, bool]:
    """``(filesystem, path inside it, is_local)`` for a local path or a ``pyarrow.fs`` URI."""
    text = str(uri)
    if "://" not in text:
        return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve()), True
    fs, path = pafs.FileSystem.from_uri(text)
    return fs, path.rstrip("/"), isinstance(fs, pafs.LocalFileSystem)


def records_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Generation records (dicts with the :data:`RECORD_SCHEMA` fields) as an Arrow table."""
    table = pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)
    return table.replace_schema_metadata({KIND_FIELD: b"generations", SCHEMA_FIELD: RECORD_SCHEMA_VERSION})


def frame_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Records of a pandas frame as dicts for :func:`records_table` (pandas' NaN back to None)."""
    rows = frame[RECORD_COLUMNS].to_dict("records")
    for row in rows:
        for name, value in row.items():
            if isinstance(value, float) and value != value:
                row[name] = None
    return rows


def serialize(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


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

    @property
    def keys(self) -> set[str]:
        """Keys whose record holds an answer (error records are computed again)."""
        ok = self.records["error"].isna()
        return set(self.records.index[ok.to_numpy()])


def empty_records() -> pd.DataFrame:
    frame = RECORD_SCHEMA.empty_table().to_pandas()
    return frame.set_index("item_key", drop=False)


def dedupe_records(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One record per item key: answers before errors, then the latest commit."""
    if frame.empty:
        return empty_records(), 0
    ranked = frame.assign(_ok=frame["error"].isna()).sort_values(
        ["item_key", "_ok", "committed_at"], kind="stable"
    )
    unique = ranked.drop_duplicates("item_key", keep="last").drop(columns="_ok")
    return unique.set_index("item_key", drop=False), len(frame) - len(unique)


class RecordFolder:
    """A folder of content-addressed record shards (a sweep's ``generations/`` or the response cache)."""

    def __init__(self, fs: pafs.FileSystem, path: str, local: bool):
        self.fs = fs
        self.path = path
        self.local = local

    def write(self, relative: str, table: pa.Table) -> str:
        """Commit ``table`` as ``<relative>/shard-<digest>.parquet``; returns the file's path."""
        data = serialize(table)
        folder = f"{self.path}/{relative}" if relative else self.path
        path = f"{folder}/shard-{content_digest(data)}.parquet"
        write_atomic(self.fs, path, data, self.local)
        return path

    def shard_files(self, under: str = "") -> list[str]:
        base = f"{self.path}/{under}" if under else self.path
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except (OSError, pa.ArrowException) as err:
            log.warning("cannot list %s: %s", base, err)
            return []
        return sorted(
            i.path for i in infos if i.type == pafs.FileType.File and _SHARD_NAME.match(i.path.rsplit("/", 1)[-1])
            and not any(part.startswith((".", "_")) for part in i.path[len(self.path):].split("/"))
        )

    def read_file(self, path: str) -> pa.Table:
        """One shard, checked against the digest in its name (raises ``ValueError`` when damaged)."""
        with self.fs.open_input_stream(path) as stream:
            data = stream.readall()
        expected = _SHARD_NAME.match(path.rsplit("/", 1)[-1]).group(1)  # type: ignore[union-attr]
        if content_digest(data) != expected:
            raise ValueError(f"content does not match its digest ({len(data)} bytes; truncated or overwritten)")
        table = pq.read_table(pa.BufferReader(data))
        meta = table.schema.metadata or {}
        if meta.get(KIND_FIELD) != b"generations" or meta.get(SCHEMA_FIELD) != RECORD_SCHEMA_VERSION:
            raise ValueError("not a qtrust generation shard of this version")
        return table.select(RECORD_COLUMNS).cast(RECORD_SCHEMA)

    def move_aside(self, path: str) -> None:
        """Rename a damaged shard to a dot-file next to it (ignored by readers, kept for inspection)."""
        folder, name = path.rsplit("/", 1)
        try:
            self.fs.move(path, f"{folder}/.damaged-{name}")
        except (OSError, pa.ArrowException) as err:
            log.warning("could not move damaged shard %s aside: %s", path, err)

    def scan(self, under: str = "", *, threads: int = 8, move_damaged: bool = True) -> ScanResult:
        """Read every shard (in threads), set damaged ones aside, and keep one record per key."""
        files = self.shard_files(under)
        damaged: list[Damaged] = []

        def load(path: str) -> pa.Table | None:
            try:
                return self.read_file(path)
            except Exception as err:  # noqa: BLE001 - any unreadable file is damaged, never fatal
                damaged.append(Damaged(path, f"{type(err).__name__}: {str(err)[:300]}"))
                return None

        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
            tables = [t for t in pool.map(load, files) if t is not None]
        if move_damaged:
            for item in damaged:
                self.move_aside(item.path)
        if not tables:
            return ScanResult(empty_records(), len(files), damaged)
        frame = pa.concat_tables(tables).to_pandas()
        records, duplicates = dedupe_records(frame)
        return ScanResult(records, len(files), damaged, duplicates)


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes, local: bool) -> None:
    """Atomic whole-object write: temp + fsync + rename locally, a single PUT elsewhere."""
    if local:
        atomic_write_bytes(Path(path), data)
        return
    folder = path.rsplit("/", 1)[0]
    fs.create_dir(folder, recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


class SweepStore:
    """One sweep's folder: resolved spec, manifest and generation records."""

    def __init__(self, root: str | Path, sweep: str):
        self.fs, base, self.local = open_filesystem(root)
        self.root = base
        self.sweep = sweep
        self.path = f"{base}/{sweep}"
        self.generations = RecordFolder(self.fs, f"{self.path}/generations", self.local)

    @property
    def dir(self) -> Path | str:
        """The sweep folder: a ``Path`` on a local disk, the path inside the filesystem otherwise."""
        return Path(self.path) if self.local else self.path

    @property
    def uri(self) -> str:
        """How a user names this sweep on the command line (``qtrust status``, ``qtrust resume``)."""
        if self.local:
            return self.path
        return f"{self.fs.type_name}://{self.path}"

    @property
    def spec_path(self) -> str:
        return f"{self.path}/sweep.yaml"

    @property
    def manifest_path(self) -> str:
        return f"{self.path}/manifest.json"

    def commit_generations(self, variant: str, benchmark: str, rows: list[dict[str, Any]]) -> str:
        """Commit one shard of records (atomically); returns its path."""
        return self.generations.write(f"variant={variant}/benchmark={benchmark}", records_table(rows))

    def scan(self, **kwargs: Any) -> ScanResult:
        """Every usable generation record of the sweep (one columnar pass over all shards)."""
        return self.generations.scan(**kwargs)

    def write_text(self, path: str, text: str) -> None:
        write_atomic(self.fs, path, text.encode(), self.local)

    def read_text(self, path: str) -> str | None:
        try:
            with self.fs.open_input_stream(path) as stream:
                return stream.readall().decode()
        except (FileNotFoundError, OSError, pa.ArrowException):
            return None

    def write_spec(self, text: str) -> None:
        self.write_text(self.spec_path, text)

    def read_manifest(self) -> dict[str, Any]:
        text = self.read_text(self.manifest_path)
        if not text:
            return {}
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return {}

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.write_text(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True, default=str))


class ResponseCache:
    """Records shared by sweeps (``storage.response_cache``), laid out by the context part of the key.

    ``<cache>/ctx=<first 24 hex digits of the key>/shard-<digest>.parquet``: a sweep looks only in the
    folders of its own variants' contexts, and publishes what it computes there.
    """

    def __init__(self, uri: str | Path):
        fs, path, local = open_filesystem(uri)
        self.folder = RecordFolder(fs, path, local)
        self.uri = str(uri)

    def lookup(self, keys: set[str], context_chars: int) -> pd.DataFrame:
        """Stored answers for ``keys`` (errors are not reused)."""
        contexts = sorted({k[:context_chars] for k in keys})
        frames = []
        for context in contexts:
            scan = self.folder.scan(f"ctx={context}", move_damaged=False)
            if not scan.records.empty:
                frames.append(scan.records)
        if not frames:
            return empty_records()
        found = pd.concat(frames)
        found = found[found["error"].isna() & found["item_key"].isin(keys)]
        return found

    def publish(self, context: str, rows: pa.Table) -> None:
        self.folder.write(f"ctx={context}", rows)
