"""Is a record folder whole? Its shards checked against what the store recorded of them.

A committed shard's name holds the digest of its bytes, and every index segment (see
:mod:`jobs.store.shards`) names each shard it covers with its size, modification time and records.
So without any plan a check finds:

* **damaged** shards: a file whose bytes do not match its digest, that is not a readable qtrust
  Parquet file of this version, or that holds another number of records than its segment recorded;
  and shards an earlier scan set aside as ``.damaged-shard-*.parquet``;
* **missing** shards: named by a segment, gone from the folder (deleted by hand, a lifecycle rule).

A damaged or missing shard counts only while it *loses* items: when every key it held is stored by
another shard (a resume computed them again) it is history, not a problem.

Two depths: ``read_all=False`` (``qtrust status``) reads only the segments' key columns and the
shards no segment covers as listed (new or changed since indexed); ``read_all=True``
(``qtrust report --verify-store``) reads and verifies every shard. Neither writes anything.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobs.store.shards import INDEX_FILES_FIELD, RecordFolder

SET_ASIDE_PREFIX = ".damaged-"


_SET_ASIDE_NAME = re.compile(r"^\.damaged-(shard-[0-9a-f]{20}\.parquet)$")


@dataclass(frozen=True)
class ShardProblem:
    """One shard that loses items (or may): why, and how many records it held and lost."""

    relative: str
    """Its path inside the record folder (``variant=<v>/benchmark=<b>/shard-<digest>.parquet``)."""
    problem: str
    """``damaged`` or ``missing``."""
    reason: str
    records: int | None = None
    """Records it held, as its index segment recorded them (None: no segment covered it)."""
    lost: int | None = None
    """Of those, keys no other shard of the folder holds (None: unknown)."""

    @property
    def partition(self) -> str:
        """The shard's folder inside the record folder (``variant=<v>/benchmark=<b>``)."""
        return self.relative.rsplit("/", 1)[0] if "/" in self.relative else ""


@dataclass
class FolderHealth:
    """What :func:`check_folder` found in one record folder."""

    shards: int = 0
    """Committed shard files listed."""
    checked: int = 0
    """Of those, read and verified one by one."""
    ok: dict[str, int] = field(default_factory=dict)
    """Partition -> shards found whole (read and verified, or covered by the index as listed)."""
    problems: list[ShardProblem] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    """Every key a whole shard holds."""

    @property
    def damaged(self) -> list[ShardProblem]:
        return [p for p in self.problems if p.problem == "damaged"]

    @property
    def missing(self) -> list[ShardProblem]:
        return [p for p in self.problems if p.problem == "missing"]

    @property
    def lost_records(self) -> int:
        """Keys lost by damaged and missing shards (those whose records are known)."""
        return sum(p.lost or 0 for p in self.problems)

    @property
    def ok_shards(self) -> int:
        return sum(self.ok.values())


def partition_names(partition: str) -> dict[str, str]:
    """``variant=a/benchmark=b`` -> ``{"variant": "a", "benchmark": "b"}``."""
    out = {}
    for piece in partition.split("/"):
        name, sep, value = piece.partition("=")
        if sep:
            out[name] = value
    return out


def _index(folder: RecordFolder) -> dict[str, tuple[tuple[int, int], list[str]]]:
    """Shard (relative path) -> (size and mtime when indexed, its keys), from every readable segment."""
    key = folder.kind.key
    covered: dict[str, tuple[tuple[int, int], list[str]]] = {}
    for path in folder._segments():
        try:
            table = pq.read_table(path, columns=[key, "source"], filesystem=folder.fs)
            files = json.loads((pq.read_schema(path, filesystem=folder.fs).metadata or {})[INDEX_FILES_FIELD])
        except Exception:  # a damaged segment is ignored, as a scan ignores it
            continue
        keys: dict[str, list[str]] = {}
        for k, source in zip(table[key].to_pylist(), table["source"].to_pylist()):
            keys.setdefault(source, []).append(k)
        for relative, (size, mtime) in files.items():
            covered.setdefault(relative, ((int(size), int(mtime)), keys.get(relative, [])))
    return covered


def _set_aside(folder: RecordFolder) -> dict[str, str]:
    """Original relative path -> reason, for shards an earlier scan moved aside as ``.damaged-*``."""
    try:
        infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=True, allow_not_found=True))
    except (OSError, pa.ArrowException):
        return {}
    out = {}
    cut = len(folder.path) + 1
    for info in infos:
        match = _SET_ASIDE_NAME.match(info.base_name) if info.type == pafs.FileType.File else None
        if match is None:
            continue
        relative = info.path[cut:]
        if relative.startswith("_"):
            continue
        parent = relative.rsplit("/", 1)[0] if "/" in relative else ""
        original = f"{parent}/{match.group(1)}" if parent else match.group(1)
        out[original] = f"set aside as {info.base_name} by an earlier scan (it failed its check)"
    return out


def check_folder(folder: RecordFolder, *, read_all: bool = False, threads: int = 8) -> FolderHealth:
    """Check every shard of ``folder`` (see the module docstring); writes nothing, moves nothing."""
    listing = folder._listing()
    index = _index(folder)
    health = FolderHealth(shards=len(listing))
    good: dict[str, list[str]] = {}
    to_read = []
    for relative, stamp in listing.items():
        entry = index.get(relative)
        if read_all or entry is None or entry[0] != stamp:
            to_read.append(relative)
        else:
            good[relative] = entry[1]

    def verify(relative: str) -> tuple[str, list[str] | None, str]:
        try:
            table = folder.read_file(f"{folder.path}/{relative}")
        except Exception as err:
            return relative, None, f"{type(err).__name__}: {str(err)[:200]}"
        keys = table[folder.kind.key].to_pylist()
        entry = index.get(relative)
        if entry is not None and entry[0] == listing[relative] and len(entry[1]) != len(keys):
            return relative, None, f"holds {len(keys)} record(s), its index segment recorded {len(entry[1])}"
        return relative, keys, ""

    damaged_now: dict[str, str] = {}
    if to_read:
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(to_read)))) as pool:
            for relative, keys, reason in pool.map(verify, to_read):
                if keys is None:
                    damaged_now[relative] = reason
                else:
                    good[relative] = keys
    health.checked = len(to_read)
    for relative, keys in good.items():
        partition = relative.rsplit("/", 1)[0] if "/" in relative else ""
        health.ok[partition] = health.ok.get(partition, 0) + 1
        health.keys.update(keys)

    def lost(relative: str) -> tuple[int | None, int | None]:
        entry = index.get(relative)
        if entry is None:
            return None, None
        return len(entry[1]), len(set(entry[1]) - health.keys)

    for relative, reason in damaged_now.items():
        records, n_lost = lost(relative)
        health.problems.append(ShardProblem(relative, "damaged", reason, records, n_lost))
    set_aside = _set_aside(folder)
    for relative in sorted(set(index) - set(listing) | set(set_aside) - set(listing)):
        records, n_lost = lost(relative)
        if n_lost == 0:
            continue  # every key it held is stored by another shard: computed again since
        if relative in set_aside:
            health.problems.append(ShardProblem(relative, "damaged", set_aside[relative], records, n_lost))
        else:
            reason = "named by the scan index, gone from the store (deleted?)"
            health.problems.append(ShardProblem(relative, "missing", reason, records, n_lost))
    return health
