"""The benchmark files shipped inside the package, and the data files a benchmark needs.

``trust/benchmarks/bundled/`` is laid out like the data folder (``<folder>/<path>``) and holds what
the demo sweep reads, so a fresh clone or an installed wheel runs it without a download. Its
``BUNDLE.yaml`` lists each file with its sha256; a trimmed file also says which records it keeps whole
(``keeps``: field -> values). A trimmed file stands in for the original only for a reader whose
``where`` filter keeps nothing else (:meth:`BundledFile.serves`); any other reader needs the original.

:func:`needed_files` lists the data-folder files a benchmark reads (its records, joined tables, side
arrays and demonstration pool), each with the filter that reads it, so ``jobs/data_ready.py`` can
decide, file by file, where each one comes from.
"""

from __future__ import annotations

import functools
from pathlib import Path, PurePosixPath

import yaml
from pydantic import BaseModel, ConfigDict, Field

from trust.benchmarks.declarative import DeclarativeBenchmark
from trust.benchmarks.definition import DataSource
from trust.benchmarks.expressions import render

#: The folder of bundled files (package data).
BUNDLE_DIR = Path(__file__).resolve().parent / "bundled"
#: The table of bundled files inside :data:`BUNDLE_DIR`.
BUNDLE_TABLE = "BUNDLE.yaml"


class BundledFile(BaseModel):
    """One bundled file: the sha256 of its bytes and, for a trimmed file, the records it keeps whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    relative: str = Field(description="path inside the data folder, '/'-separated")
    sha256: str = Field(description="sha256 of the bundled bytes")
    keeps: dict[str, list[str]] | None = Field(
        None, description="trimmed file: field -> values of the records kept whole; None: a whole copy"
    )

    @property
    def path(self) -> Path:
        """The bundled file on disk."""
        return BUNDLE_DIR / self.relative

    def serves(self, where: dict[str, list[str]] | None) -> bool:
        """Whether a reader keeping the records ``where`` selects (None: every record) sees exactly what
        the original file would give it: always for a whole copy; for a trimmed file only when, for some
        field the file keeps, the reader keeps a subset of those values."""
        if self.keeps is None:
            return True
        if where is None:
            return False
        return any(field in where and set(where[field]) <= set(values) for field, values in self.keeps.items())


class NeededFile(BaseModel):
    """A file a benchmark reads from the data folder (``relative`` may be a glob pattern)."""

    model_config = ConfigDict(frozen=True)

    relative: str
    where: dict[str, list[str]] | None = Field(
        None, description="the filter of the records the benchmark keeps from it; None: it needs the whole file"
    )


@functools.cache
def bundled_files() -> dict[str, BundledFile]:
    """The bundled files, by their path inside the data folder (empty when the package has none)."""
    table = BUNDLE_DIR / BUNDLE_TABLE
    if not table.is_file():
        return {}
    data = yaml.safe_load(table.read_text(encoding="utf-8")) or {}
    return {relative: BundledFile(relative=relative, **entry) for relative, entry in (data.get("files") or {}).items()}


def _in_data_folder(relative: str) -> bool:
    """Whether a definition path names a file of the data folder (not an absolute path, not ``./`` beside the definition)."""
    pure = PurePosixPath(relative)
    return not (pure.is_absolute() or relative.startswith(("./", "~")) or ".." in pure.parts)


def _source_files(source: DataSource, params: dict[str, object]) -> list[NeededFile]:
    def rendered(text: str) -> str:
        return render(text, {"params": params})

    where = {field: [rendered(v) for v in values] for field, values in source.where.items()} or None
    needed = [NeededFile(relative=rendered(source.path), where=where)]
    needed += [NeededFile(relative=rendered(p)) for p in source.side_arrays.values()]
    needed += [NeededFile(relative=rendered(j.path)) for j in source.join]
    return needed


def needed_files(benchmark: DeclarativeBenchmark) -> list[NeededFile]:
    """The data-folder files ``benchmark`` reads, in definition order, each with the filter that reads it."""
    d = benchmark.definition
    needed = _source_files(d.data, benchmark.params)
    demos = d.prompt.demonstrations
    if demos is not None and demos.pool is not None:
        needed += _source_files(demos.pool, benchmark.params)
    return [n for n in needed if _in_data_folder(n.relative)]
