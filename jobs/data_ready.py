"""Benchmark data on first use: the data folder a sweep reads, filled before any heavy work.

With ``--data-dir`` / ``QTRUST_DATA_DIR`` (an offline copy) that folder is used as it is. Otherwise the
data folder is the user's data cache (``~/.cache/qtrust/data``, see
:func:`trust.benchmarks.data.data_cache_dir`), and :func:`prepare_data_dir` puts into it every file
the sweep's benchmarks read that it does not hold yet:

1. a file shipped inside the package (``trust/benchmarks/bundled``, what the demo needs) is copied,
   when it serves the benchmark (a trimmed file serves only readers that keep just its whole records);
2. anything else is downloaded from the pinned public sources (``jobs/data_sources.yaml``, or the table
   ``$QTRUST_DATA_SOURCES`` names), sha256-checked, written beside its target and renamed into place
   only when its hash matches, with a progress bar (a line per file when standard error is no terminal).

A failed download or a hash mismatch is one :class:`BenchmarkDataError` line naming the file and the
fix; nothing half-downloaded is kept. Files that no layer knows (a user's own benchmark) are left
for the loader, whose error names the missing file.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from jobs.data_fetch import (
    SOURCES_ENV,
    DataFetchError,
    Progress,
    SourceFile,
    console_progress,
    default_sources,
    fetch,
    load_sources,
)
from jobs.spec.schema import SweepSpec
from trust.benchmarks.base import Benchmark
from trust.benchmarks.bundle import BundledFile, bundled_files, needed_files
from trust.benchmarks.catalog import UnknownBenchmarkError, get_benchmark
from trust.benchmarks.data import BenchmarkDataError, data_cache_dir, file_digest, mirror_dir
from trust.benchmarks.declarative import DeclarativeBenchmark, DefinitionError
from trust.benchmarks.records import is_glob

_FIX = (
    "pass --data-dir (or set QTRUST_DATA_DIR) to an offline copy of the benchmark data, "
    "or run `qtrust data fetch {folders}` when online"
)


@dataclass
class DataReady:
    """The data folder a sweep reads, and what :func:`prepare_data_dir` did to it."""

    folder: Path
    mirror: bool  # the user's offline copy (used as it is), not the data cache
    copied: list[str] = field(default_factory=list)  # from the bundled files
    downloaded: list[str] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)  # needed, missing, and no layer holds them

    def has_data(self, benchmark: Benchmark) -> bool:
        """Whether every file ``benchmark`` reads can be read from :attr:`folder`."""
        if self.mirror or not isinstance(benchmark, DeclarativeBenchmark):
            return True
        return not any(need.relative in self.unknown for need in needed_files(benchmark))


def sweep_benchmarks(spec: SweepSpec) -> list[Benchmark]:
    """The benchmarks a sweep reads data for: its benchmarks and its recipes' ``benchmark:`` calibration
    sources. One that does not load is left out here: the definition checks that follow report it."""
    wanted: list[tuple[str, dict[str, Any] | None, str | None]] = [
        (b.name, b.options, b.definition) for b in spec.benchmarks
    ]
    for recipe in spec.recipes:
        source = recipe.calibration.source if recipe.calibration is not None else ""
        if source.startswith("benchmark:"):
            wanted.append((source.removeprefix("benchmark:"), None, None))
    benchmarks = []
    for name, options, definition in wanted:
        try:
            benchmarks.append(get_benchmark(name, options, definition))
        except (UnknownBenchmarkError, DefinitionError, ValueError):
            continue
    return benchmarks


def prepare_sweep_data(
    spec: SweepSpec, explicit: str | Path | None, notify: Callable[[str], None] | None = None
) -> DataReady:
    """:func:`prepare_data_dir` for the benchmarks of ``spec`` (and the table of sources in effect)."""
    return prepare_data_dir(sweep_benchmarks(spec), explicit, notify=notify)


def prepare_data_dir(
    benchmarks: Iterable[Benchmark],
    explicit: str | Path | None,
    *,
    sources: Path | None = None,
    notify: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    timeout: float = 60,
) -> DataReady:
    """The data folder for ``benchmarks``: the offline copy when one is named, else the data cache,
    filled from the bundled files and the public sources (see the module docstring).

    Raises :class:`BenchmarkDataError` (one line) when a download fails or a hash does not match.
    """
    mirror = mirror_dir(explicit)
    if mirror is not None:
        return DataReady(folder=mirror, mirror=True)
    say = notify or _to_stderr
    cache = data_cache_dir()
    ready = DataReady(folder=cache, mirror=False)
    needs = _needs(benchmarks)
    bundle = bundled_files()
    pending: list[str] = []  # neither in the cache nor served by the bundled files
    for relative, wheres in needs.items():
        if is_glob(relative):
            pending.append(relative)
            continue
        target = cache / relative
        bundled = bundle.get(relative)
        serves = bundled is not None and all(bundled.serves(where) for where in wheres)
        if target.is_file() and not (bundled is not None and not serves and _is_copy_of(target, bundled)):
            continue
        if bundled is not None and serves:
            _copy_in(bundled.path, target)
            ready.copied.append(relative)
        else:
            pending.append(relative)
    if ready.copied:
        say(f"benchmark data: {len(ready.copied)} file(s) copied from the files bundled with qtrust into {cache}")
    if not pending:
        return ready
    known = _known_sources(sources or default_sources())
    wanted: dict[str, SourceFile] = {}
    for relative in pending:
        if is_glob(relative):
            matches = [r for r in known if fnmatchcase(r, relative) and r.count("/") == relative.count("/")]
            wanted.update((r, known[r]) for r in matches if not (cache / r).is_file() and known[r].fetchable)
            if not matches and not any(cache.glob(relative)):
                ready.unknown.add(relative)
        elif relative in known and known[relative].fetchable:
            wanted[relative] = known[relative]
        else:
            ready.unknown.add(relative)
    if wanted:
        ready.downloaded = _download(wanted, cache, sources, say, progress, timeout)
    return ready


def _known_sources(path: Path) -> dict[str, SourceFile]:
    """The table of sources by data-folder path; a missing or broken table is one line."""
    if not path.is_file():
        raise BenchmarkDataError(
            f"the table of data sources {path} is not a file; "
            f"point {SOURCES_ENV} at a table shaped like jobs/data_sources.yaml, or unset it"
        )
    try:
        table = load_sources(path)
    except (DataFetchError, yaml.YAMLError, TypeError) as err:
        raise BenchmarkDataError(f"the table of data sources {path}: {' '.join(str(err).split())}") from err
    return {source.relative: source for files in table.values() for source in files}


def _needs(benchmarks: Iterable[Benchmark]) -> dict[str, list[dict[str, list[str]] | None]]:
    """Every data-folder file the benchmarks read, with the filter of each reader."""
    needs: dict[str, list[dict[str, list[str]] | None]] = {}
    for benchmark in benchmarks:
        if isinstance(benchmark, DeclarativeBenchmark):
            for need in needed_files(benchmark):
                needs.setdefault(need.relative, []).append(need.where)
    return needs


def _is_copy_of(target: Path, bundled: BundledFile) -> bool:
    """Whether ``target`` holds the bytes of the bundled (trimmed) file, not the original."""
    return target.stat().st_size == bundled.path.stat().st_size and file_digest(target) == bundled.sha256


def _copy_in(source: Path, target: Path) -> None:
    """Copy ``source`` onto ``target`` through a temporary file beside it (never a half-written target)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, temp_name)
        os.replace(temp_name, target)
    finally:
        Path(temp_name).unlink(missing_ok=True)


def _download(
    wanted: dict[str, SourceFile],
    cache: Path,
    sources: Path | None,
    say: Callable[[str], None],
    progress: Progress | None,
    timeout: float,
) -> list[str]:
    folders = list(dict.fromkeys(source.folder for source in wanted.values()))
    say(f"benchmark data: downloading {len(wanted)} file(s) of {', '.join(folders)} into {cache}")
    try:
        report = fetch(
            folders,
            cache,
            timeout=timeout,
            sources=sources or default_sources(),
            notify=say,
            only=set(wanted),
            progress=progress or console_progress(say),
        )
    except DataFetchError as err:
        text = " ".join(str(err).split())
        raise BenchmarkDataError(f"benchmark data: {text}; {_FIX.format(folders=' '.join(folders))}") from err
    return report.downloaded


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
