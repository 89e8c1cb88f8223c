"""The shard store: Parquet shards committed atomically, a resolved spec and a manifest.

Layout under ``<root>/<sweep>/``::

    sweep.yaml                                         resolved spec
    manifest.json                                      plan, shard keys, statuses, MLflow run ids
    generations/variant=<v>/benchmark=<b>/shard-<n>.parquet

A shard is written to a dot-prefixed temp file in its own folder, flushed and fsynced, then renamed
into place (``os.replace``, atomic on POSIX). Readers ignore dot-files, and a shard counts as done only
when its file exists and the key stored in its Parquet metadata equals the plan's key, so a crash at
any point leaves either the old state or the new shard, never a half-written shard that counts.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: Parquet schema-metadata key holding the shard key.
SHARD_KEY_FIELD = b"qtrust.shard_key"

ROW_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("prompt", pa.string()),
        ("output", pa.string()),
        ("label", pa.string()),
        ("reference", pa.string()),
        ("choices", pa.string()),
        ("logprobs", pa.list_(pa.float64())),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("latency_s", pa.float64()),
        ("error", pa.string()),
        ("attributes", pa.string()),
    ]
)


def _fsync_dir(path: Path) -> None:
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
    """Write ``data`` to ``path`` through a dot-prefixed temp file, fsync and ``os.replace``."""
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
    _fsync_dir(path.parent)


def rows_to_table(rows: list[dict[str, Any]], key: str) -> pa.Table:
    """Per-item rows as an Arrow table carrying the shard key in its metadata."""
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    return table.replace_schema_metadata({SHARD_KEY_FIELD: key.encode()})


class ShardStore:
    """One sweep's folder in a local (or mounted shared) filesystem."""

    def __init__(self, root: str | Path, sweep: str):
        self.root = Path(root).expanduser().resolve()
        self.sweep = sweep
        self.dir = self.root / sweep

    # -- paths -------------------------------------------------------------------------------
    def shard_path(self, variant: str, benchmark: str, index: int) -> Path:
        return self.dir / "generations" / f"variant={variant}" / f"benchmark={benchmark}" / f"shard-{index:05d}.parquet"

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def spec_path(self) -> Path:
        return self.dir / "sweep.yaml"

    # -- shards ------------------------------------------------------------------------------
    def commit_shard(self, variant: str, benchmark: str, index: int, key: str, rows: list[dict[str, Any]]) -> Path:
        """Write one shard atomically; it counts as done only once the rename has happened."""
        path = self.shard_path(variant, benchmark, index)
        table = rows_to_table(rows, key)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

    @staticmethod
    def stored_key(path: Path) -> str | None:
        """The key in a shard file's metadata, or None if the file is missing or unreadable."""
        try:
            metadata = pq.read_schema(path).metadata or {}
        except (OSError, pa.ArrowInvalid):
            return None
        value = metadata.get(SHARD_KEY_FIELD)
        return value.decode() if value else None

    def is_done(self, variant: str, benchmark: str, index: int, key: str) -> bool:
        return self.stored_key(self.shard_path(variant, benchmark, index)) == key

    def read_shards(self, shards: Iterable[tuple[str, str, int, str]]) -> pd.DataFrame:
        """Rows of the given (variant, benchmark, index, key) shards whose stored key matches."""
        frames = []
        for variant, benchmark, index, key in shards:
            path = self.shard_path(variant, benchmark, index)
            if self.stored_key(path) != key:
                continue
            frame = pq.read_table(path).to_pandas()
            frame.insert(0, "benchmark", benchmark)
            frame.insert(0, "variant", variant)
            frames.append(frame)
        if not frames:
            empty = ROW_SCHEMA.empty_table().to_pandas()
            empty.insert(0, "benchmark", pd.Series(dtype=str))
            empty.insert(0, "variant", pd.Series(dtype=str))
            return empty
        return pd.concat(frames, ignore_index=True)

    # -- spec and manifest -------------------------------------------------------------------
    def write_spec(self, text: str) -> None:
        atomic_write_bytes(self.spec_path, text.encode())

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            return {}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError:
            return {}

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_bytes(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode())
