"""Read benchmark records from csv, jsonl and json files (with optional .npy side arrays).

Every record is a dict of fields plus ``_index``: its 0-based position in the source file, counted
before any filtering, so item ids built from it are stable whatever subset is selected.

A ``path`` may be a glob pattern (``data/category_*.jsonl``): the records of every matching file, in
sorted file order, each with ``_file`` (the file's name without its extension) and ``_index``
counted within its own file, so adding a file changes no other file's ids.
"""

from __future__ import annotations

import csv
import functools
import glob
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trust.benchmarks.data import DATA_FIX_HINT, BenchmarkDataError
from trust.benchmarks.definition import DataSource, Join

Record = dict[str, Any]


def _navigate(document: Any, key_path: str | None, path: Path) -> Any:
    if not key_path:
        return document
    node = document
    walked: list[str] = []
    for key in key_path.split("/"):
        walked.append(key)
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            keys = ", ".join(sorted(map(str, node))[:20]) if isinstance(node, dict) else type(node).__name__
            raise BenchmarkDataError(f"{path}: key path {'/'.join(walked)!r} not found (available here: {keys})")
    return node


def _read_raw(source: DataSource, path: Path, key_path: str | None = None) -> list[Any]:
    """The raw records of ``path``; json files are walked down ``key_path`` (already rendered)."""
    if not path.is_file():
        raise BenchmarkDataError(f"expected the data file {path}. {DATA_FIX_HINT}")
    if source.format == "csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            if source.columns:  # no header row: the columns are named by the definition
                return [row for row in csv.reader(handle) if row]
            return list(csv.DictReader(handle))
    if source.format == "jsonl":
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    with open(path, encoding="utf-8") as handle:
        node = _navigate(json.load(handle), key_path, path)
    if source.group_field:
        if not isinstance(node, dict) or not all(isinstance(v, list) for v in node.values()):
            raise BenchmarkDataError(
                f"{path}: group_field needs an object of lists at key path {key_path!r}, found {type(node).__name__}"
            )
        return [_grouped(record, source.group_field, key) for key, records in node.items() for record in records]
    if not isinstance(node, list):
        raise BenchmarkDataError(
            f"{path}: expected a list of records at key path {key_path!r}, found {type(node).__name__}"
        )
    return node


def _grouped(record: Any, field: str, key: str) -> Any:
    return {**record, field: key} if isinstance(record, dict) else record


def _join_table(join: Join, resolve: PathResolver) -> dict[str, Any]:
    """The object ``join`` reads, keyed by the join key (read once per :func:`read_records`)."""
    path = resolve(join.path)
    if not path.is_file():
        raise BenchmarkDataError(f"expected the data file {path} (data.join). {DATA_FIX_HINT}")
    with open(path, encoding="utf-8") as handle:
        table = _navigate(json.load(handle), resolve.render(join.key_path) if join.key_path else None, path)
    if not isinstance(table, dict):
        raise BenchmarkDataError(
            f"{path}: data.join needs an object keyed by {join.by!r}, found {type(table).__name__}"
        )
    return table


def _join(records: list[Record], join: Join, table: dict[str, Any], path: Path) -> None:
    """Put ``join.into`` on every record: the joined table's value under the record's ``join.by`` key."""
    for position, record in enumerate(records):
        key = str(record.get(join.by))
        if key not in table and join.required:
            raise BenchmarkDataError(
                f"{path}: no entry for {join.by} {key!r} of record {position} (data.join); "
                "the two files do not belong together"
            )
        record[join.into] = table.get(key)


def _as_record(raw: Any, columns: list[str] | None, path: Path, index: int) -> Record:
    if isinstance(raw, dict):
        return dict(raw)
    if isinstance(raw, (list, tuple)):
        if not columns:
            raise BenchmarkDataError(f"{path}: record {index} is a list; name its fields with 'columns'")
        return dict(zip(columns, raw))
    raise BenchmarkDataError(f"{path}: record {index} is a {type(raw).__name__}, not an object or a list")


#: The record field (and item attribute) naming a record's source file when ``data.path`` is a pattern.
SOURCE_FILE = "_file"


def is_glob(path: str) -> bool:
    """Whether a data path is a pattern (``*``, ``?`` or ``[``) rather than one file."""
    return any(char in path for char in "*?[")


def matching_files(resolve: PathResolver, pattern: str) -> list[Path]:
    """The files a glob ``pattern`` matches, sorted; a clear error when none does."""
    resolved = resolve(pattern)
    found = sorted(Path(p) for p in glob.glob(str(resolved)) if Path(p).is_file())
    if not found:
        raise BenchmarkDataError(
            f"data.path: the pattern {resolve.render(pattern)!r} matches no file in {resolved.parent}; "
            "check the pattern, or set --data-dir / QTRUST_DATA_DIR to the data folder"
        )
    return found


def read_records(source: DataSource, resolve: PathResolver) -> list[Record]:
    """All records of ``source`` that pass its filters, each with its ``_index`` (and ``_file`` for a pattern)."""
    if is_glob(source.path):
        if source.side_arrays:
            raise BenchmarkDataError(
                "data.side_arrays: side arrays need one data file, not a pattern; drop one of them"
            )
        tables = _join_tables(source, resolve)
        records: list[Record] = []
        for path in matching_files(resolve, source.path):
            records.extend({**r, SOURCE_FILE: path.stem} for r in _read_file(source, resolve, path, tables))
        return records
    return _read_file(source, resolve, resolve(source.path), _join_tables(source, resolve))


def _join_tables(source: DataSource, resolve: PathResolver) -> Callable[[], list[dict[str, Any]]]:
    """The joined tables of ``source``, read on first use (after the data file itself) and then kept."""
    return functools.cache(lambda: [_join_table(join, resolve) for join in source.join])


def _read_file(
    source: DataSource, resolve: PathResolver, path: Path, tables: Callable[[], list[dict[str, Any]]]
) -> list[Record]:
    key_path = resolve.render(source.key_path) if source.key_path else None
    raw = _read_raw(source, path, key_path)
    records = [_as_record(r, source.columns, path, i) for i, r in enumerate(raw)]
    for join, table in zip(source.join, tables() if source.join else []):
        _join(records, join, table, resolve(join.path))
    for field, array_path in source.side_arrays.items():
        import numpy as np

        values = np.load(resolve(array_path), allow_pickle=False).tolist()
        if len(values) != len(records):
            raise BenchmarkDataError(
                f"{resolve(array_path)} has {len(values)} entries but {path} has {len(records)} records"
            )
        for record, value in zip(records, values):
            record[field] = value
    # Filter values may name benchmark options ({{ params.x }}); a value rendering to "" keeps nothing extra.
    where = {f: {resolve.render(v) for v in values} for f, values in source.where.items()}
    kept = []
    for index, record in enumerate(records):
        record["_index"] = index
        if any(record.get(f) is None for f in source.drop_null):
            continue
        if any(str(record.get(f)) not in values for f, values in where.items()):
            continue
        kept.append(record)
    return kept


class PathResolver:
    """Turns a definition's relative path into a file path (data folder, or the definition's folder)."""

    def __init__(self, data_dir: Path, definition_dir: Path | None, render: Any):
        self.data_dir = Path(data_dir)
        self.definition_dir = definition_dir
        self.render = render

    def __call__(self, relative: str) -> Path:
        text = self.render(relative)
        candidate = Path(text).expanduser()
        if candidate.is_absolute():
            return candidate
        if text.startswith("./") and self.definition_dir is not None:
            return self.definition_dir / text
        return self.data_dir / text
