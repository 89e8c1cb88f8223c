"""Small builders shared by the jobs tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def sweep_dict(model_dir: Path, storage: Path, **overrides: Any) -> dict[str, Any]:
    """A small valid sweep over a local model folder (override any top-level field)."""
    spec: dict[str, Any] = {
        "name": "t",
        "models": [{"name": "tiny", "source": str(model_dir)}],
        "recipes": [
            {"name": "ref", "method": "none"},
            {"name": "w8", "method": "rtn", "bits": 8, "group_size": 32},
            {"name": "w4", "method": "rtn", "bits": 4, "group_size": 32},
        ],
        "benchmarks": [
            {"name": "machine_ethics", "limit": 6, "max_new_tokens": 4},
            {"name": "xstest", "limit": 6, "max_new_tokens": 6},
        ],
        "ensembles": [{"name": "ens", "members": ["ref", "w8", "w4"]}],
        "shard_size": 4,
        "resources": {"num_cpus_per_worker": 1, "retry_backoff_s": 0.1},
        "storage": {"root": str(storage)},
    }
    spec.update(overrides)
    return spec


def write_sweep(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def problems_of(spec: dict[str, Any]) -> list[str]:
    """The problems :func:`jobs.spec.load.parse_spec` reports for ``spec`` (it must fail)."""
    import pytest

    from jobs.spec.load import parse_spec
    from jobs.spec.schema import SpecError

    with pytest.raises(SpecError) as info:
        parse_spec(spec, "sweep.yaml")
    return info.value.problems


def stored_records(outcome: Any):  # -> pandas.DataFrame
    """Every generation record a sweep's store holds, with its ``variant`` and ``benchmark`` folders.

    Read with ``pyarrow.dataset`` and hive partitioning, as a user would; dot-files (temp files,
    damaged shards set aside) are skipped by the reader.
    """
    import pyarrow.dataset as ds

    folder = Path(outcome.store.dir) / "generations"
    return ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pandas()


def generation_row(key: str, output: str = "o", item_id: str | None = None) -> dict[str, Any]:
    """One stored generation record (the store's columns) for item key ``key``, for store tests."""
    return {
        "item_key": key,
        "item_id": key if item_id is None else item_id,
        "prompt": "p",
        "choices": None,
        "output": output,
        "logprobs": None,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "latency_s": 0.1,
        "error": None,
        "attempt": 1,
        "worker": "w",
        "committed_at": 1.0,
    }
