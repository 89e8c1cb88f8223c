"""The items a sweep evaluates, kept in its store, so that ``qtrust report`` scores it without the
benchmark data folder.

Layout under ``<root>/<sweep>/`` (written by the driver when a run starts, before any shard)::

    plan/benchmark=<b>.parquet     one row per planned item of benchmark <b>, in plan order:
                                   id, messages, reference, choices, attributes (JSON text),
                                   request (the request half of its item keys)
    plan/contexts.json             {"schema": 1, "contexts": {variant: {benchmark: context}}}:
                                   the context half of each variant × benchmark's item keys

An item key is ``context + request`` (:func:`jobs.plan.keys.item_key`), so the plan's keys come back
exactly as the run computed them, whatever the data folder or the calibration files hold now.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.storage.atomic import read_bytes, write_atomic
from jobs.plan.build import BenchmarkRun, Plan, build_variants
from jobs.plan.keys import CONTEXT_CHARS
from jobs.spec.schema import SweepSpec
from jobs.store.sweep import SweepStore
from trust.benchmarks.catalog import get_benchmark
from trust.types import Item

SNAPSHOT_SCHEMA = 1


ITEM_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("messages", pa.string()),
        ("reference", pa.string()),
        ("choices", pa.string()),
        ("attributes", pa.string()),
        ("request", pa.string()),
        ("max_new_tokens", pa.int32()),
    ]
)


class SnapshotMissing(Exception):
    """The store holds no usable snapshot of the plan (a sweep run by an older qtrust, a damaged file);
    ``str()`` names the file and what is wrong with it."""


def _folder(store: SweepStore) -> str:
    return f"{store.path}/plan"


def write_plan_snapshot(store: SweepStore, plan: Plan) -> None:
    """Keep every benchmark's items and every variant × benchmark's key context in the store."""
    contexts: dict[str, dict[str, str]] = {}
    for (variant, bench), keys in plan.keys.items():
        contexts.setdefault(variant, {})[bench] = keys[0][:CONTEXT_CHARS] if keys else ""
    for bench, run in plan.benchmarks.items():
        some_keys = next((keys for (_, b), keys in plan.keys.items() if b == bench), [])
        rows = [
            {
                "id": item.id,
                "messages": json.dumps(item.messages, ensure_ascii=False),
                "reference": item.reference,
                "choices": json.dumps(item.choices, ensure_ascii=False) if item.choices is not None else None,
                "attributes": json.dumps(item.attributes, ensure_ascii=False, sort_keys=True),
                "request": key[CONTEXT_CHARS:],
                "max_new_tokens": run.max_new_tokens,
            }
            for item, key in zip(run.items, some_keys)
        ]
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=ITEM_SCHEMA), sink, compression="zstd")
        write_atomic(store.fs, f"{_folder(store)}/benchmark={bench}.parquet", sink.getvalue(), store.local)
    document = {"schema": SNAPSHOT_SCHEMA, "contexts": contexts}
    store.write_text(f"{_folder(store)}/contexts.json", json.dumps(document, indent=1, sort_keys=True))


def _items(table: pa.Table) -> list[Item]:
    return [
        Item(
            id=row["id"],
            messages=json.loads(row["messages"]),
            reference=row["reference"],
            choices=json.loads(row["choices"]) if row["choices"] is not None else None,
            attributes=json.loads(row["attributes"]),
        )
        for row in table.to_pylist()
    ]


def load_plan_snapshot(spec: SweepSpec, store: SweepStore, variant_cache: str | None = None) -> Plan:
    """The plan of a stored sweep from its snapshot alone (no benchmark data folder, no calibration files).

    Raises :class:`SnapshotMissing` when the store holds none, or a damaged one.
    """
    try:
        return _load(spec, store, variant_cache)
    except SnapshotMissing:
        raise
    except (ValueError, KeyError, TypeError, pa.ArrowException) as err:  # JSONDecodeError is a ValueError
        raise SnapshotMissing(f"{_folder(store)} is damaged ({type(err).__name__}: {str(err)[:200]})") from err


def _load(spec: SweepSpec, store: SweepStore, variant_cache: str | None) -> Plan:
    from jobs.plan.judges import plan_judges

    text = store.read_text(f"{_folder(store)}/contexts.json")
    if text is None:
        raise SnapshotMissing(f"{_folder(store)}/contexts.json not found")
    contexts: dict[str, dict[str, Any]] = json.loads(text)["contexts"]
    benchmarks: dict[str, BenchmarkRun] = {}
    requests: dict[str, list[str]] = {}
    for bench_spec in spec.benchmarks:
        path = f"{_folder(store)}/benchmark={bench_spec.run_name}.parquet"
        data = read_bytes(store.fs, path)
        if data is None:
            raise SnapshotMissing(f"{path} not found")
        table = pq.read_table(pa.BufferReader(data))
        tokens = table["max_new_tokens"].to_pylist()
        benchmarks[bench_spec.run_name] = BenchmarkRun(
            spec=bench_spec,
            benchmark=get_benchmark(bench_spec.name, bench_spec.options, bench_spec.definition),
            items=_items(table),
            max_new_tokens=int(tokens[0]) if tokens else spec.generation.max_new_tokens,
        )
        requests[bench_spec.run_name] = table["request"].to_pylist()
    variants = build_variants(spec, None, variant_cache, calibration=False)
    plan = Plan(spec=spec, variants=variants, benchmarks=benchmarks, judges=plan_judges(spec, benchmarks))
    for variant in variants:
        for bench, run_requests in requests.items():
            context = contexts.get(variant, {}).get(bench)
            if context is None:
                raise SnapshotMissing(f"{_folder(store)}/contexts.json has no entry for {variant} × {bench}")
            plan.keys[(variant, bench)] = [context + request for request in run_requests]
    return plan
