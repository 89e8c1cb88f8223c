"""The response cache: answers kept by item key across sweeps, so a new sweep asking the same
requests reuses them without inference.

Layout under ``storage.response_cache`` (a local folder or a URI)::

    <cache>/ctx=<first 24 hex digits of the item key>/shard-<digest>.parquet    generation records

Shards are committed and verified like a sweep's (:mod:`jobs.store.shards`); errors are never
published. The cache has no scan index: a lookup reads only its contexts' folders.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from jobs.store.records import empty_records
from jobs.store.shards import RecordFolder, open_filesystem


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
