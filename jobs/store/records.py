"""The record schemas of the store: generation and judgment rows as Arrow tables, and how they
are serialised and deduplicated.

On disk a table is one zstd-compressed Parquet file (a shard or an index segment, see
:mod:`jobs.store.shards`) whose schema metadata names what it holds and the layout version::

    qtrust.kind            b"generations" | b"judgments" | b"index"
    qtrust.record_schema   the RecordKind's version (generations b"3", judgments b"1")

A reader refuses a file of another kind or version (it counts as damaged and is computed again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trust.types import Item

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


#: Judgments: one judge's verdict on one stored answer, keyed by the judgment key (item key + judge).
JUDGMENT_SCHEMA_VERSION = b"1"


JUDGMENT_SCHEMA = pa.schema(
    [
        ("judgment_key", pa.string()),
        ("item_key", pa.string()),
        ("item_id", pa.string()),
        ("judge", pa.string()),
        ("judge_identity", pa.string()),
        ("label", pa.string()),
        ("reason", pa.string()),
        ("category", pa.string()),
        ("raw", pa.string()),
        ("problem", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
        ("latency_s", pa.float64()),
        ("error", pa.string()),
        ("attempt", pa.int32()),
        ("worker", pa.string()),
        ("committed_at", pa.float64()),
    ]
)


@dataclass(frozen=True)
class RecordKind:
    """What a record folder holds: its Parquet schema, version and key column."""

    name: bytes
    schema: pa.Schema
    version: bytes
    key: str

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema]

    @property
    def index_schema(self) -> pa.Schema:
        return self.schema.append(pa.field("source", pa.string()))

    def table(self, rows: list[dict[str, Any]]) -> pa.Table:
        """Records (dicts with the schema's fields) as an Arrow table marked with this kind."""
        table = pa.Table.from_pylist(rows, schema=self.schema)
        return table.replace_schema_metadata({KIND_FIELD: self.name, SCHEMA_FIELD: self.version})


GENERATIONS = RecordKind(b"generations", RECORD_SCHEMA, RECORD_SCHEMA_VERSION, "item_key")


JUDGMENTS = RecordKind(b"judgments", JUDGMENT_SCHEMA, JUDGMENT_SCHEMA_VERSION, "judgment_key")


def records_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Generation records (dicts with the :data:`RECORD_SCHEMA` fields) as an Arrow table."""
    return GENERATIONS.table(rows)


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


def empty_records(kind: RecordKind = GENERATIONS) -> pd.DataFrame:
    frame = kind.schema.empty_table().to_pandas()
    return frame.set_index(kind.key, drop=False)


def dedupe_records(frame: pd.DataFrame, kind: RecordKind = GENERATIONS) -> tuple[pd.DataFrame, int]:
    """One record per key: answers before errors, then the latest commit."""
    key = kind.key
    if frame.empty:
        return empty_records(kind), 0
    repeated = frame[key].duplicated(keep=False).to_numpy()
    if not repeated.any():  # the usual case: nothing to rank, no sort of a million strings
        return frame.set_index(key, drop=False), 0
    clash = frame[repeated]
    ranked = clash.assign(_ok=clash["error"].isna()).sort_values([key, "_ok", "committed_at"], kind="stable")
    winners = ranked.drop_duplicates(key, keep="last").drop(columns="_ok")
    unique = pd.concat([frame[~repeated], winners])
    return unique.set_index(key, drop=False), len(frame) - len(unique)


def result_rows(
    items: list[Item], keys: list[str], result: dict[str, Any], *, attempt: int, worker: dict[str, Any], now: float
) -> list[dict[str, Any]]:
    """Generation records of one shard (what the store keeps): the answer, never a label."""
    by_id = {r["id"]: r for r in result["results"]}
    worker_text = json.dumps({k: worker.get(k) for k in ("node_ip", "node_id", "pid", "gpu_ids")}, sort_keys=True)
    rows = []
    for item, key in zip(items, keys):
        res = by_id.get(item.id) or {"error": "the worker returned no result for this item"}
        rows.append(
            {
                "item_key": key,
                "item_id": item.id,
                "prompt": json.dumps(item.messages, ensure_ascii=False),
                "choices": json.dumps(item.choices, ensure_ascii=False) if item.choices else None,
                "output": res.get("text"),
                "logprobs": res.get("logprobs") or None,
                "prompt_tokens": int(res.get("prompt_tokens") or 0),
                "completion_tokens": int(res.get("completion_tokens") or 0),
                "latency_s": float(res.get("latency_s") or 0.0),
                "error": res.get("error"),
                "attempt": attempt,
                "worker": worker_text,
                "committed_at": now,
            }
        )
    return rows
