"""Locating benchmark data files.

Benchmark data lives in a *data directory*: one subfolder per benchmark source (``xstest/``,
``decodingtrust/``, ...), each holding the original files. :func:`resolve_data_dir` picks it:

1. ``--data-dir`` or the environment variable ``QTRUST_DATA_DIR``: an offline copy (a mirror), used as
   it is; nothing is downloaded into it.
2. Otherwise the user's data cache (:func:`data_cache_dir`, ``~/.cache/qtrust/data``). Before a sweep
   loads anything, ``jobs/data_ready.py`` fills it with what the sweep's benchmarks need: first the files
   shipped inside the package (:mod:`trust.benchmarks.bundle`, what the demo needs), then the rest from
   the pinned public sources (``jobs/data_sources.yaml``), sha256-checked.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Environment variable naming the benchmark data directory (an offline copy).
DATA_DIR_ENV = "QTRUST_DATA_DIR"
#: Environment variable naming qtrust's cache folder (the data cache is its ``data/`` subfolder).
CACHE_ENV = "QTRUST_CACHE_DIR"
#: Environment variable naming the data cache itself (wins over ``QTRUST_CACHE_DIR``).
DATA_CACHE_ENV = "QTRUST_DATA_CACHE"

#: How to get a missing data file (appended to every "file missing" message).
DATA_FIX_HINT = (
    "Pass --data-dir (or set QTRUST_DATA_DIR) to an offline copy of the benchmark data (each benchmark in "
    "its own subfolder, e.g. xstest/xstest_prompts.csv), or run `qtrust data fetch` when online; "
    'see docs/benchmarks.md "Data".'
)


class BenchmarkDataError(Exception):
    """A benchmark data directory or file is missing; the message says what was expected and how to fix it."""


def data_cache_dir() -> Path:
    """The user's data cache: ``$QTRUST_DATA_CACHE``, else ``$QTRUST_CACHE_DIR/data``, else
    ``$XDG_CACHE_HOME/qtrust/data``, else ``~/.cache/qtrust/data``. Not created here."""
    own = os.environ.get(DATA_CACHE_ENV)
    if own:
        return Path(own).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "data"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "qtrust" / "data"


def mirror_dir(explicit: str | Path | None) -> Path | None:
    """The offline copy the user named (``explicit``, else ``$QTRUST_DATA_DIR``), or None when neither is set.

    Raises :class:`BenchmarkDataError` when the named folder does not exist.
    """
    if explicit is not None and str(explicit) != "":
        source, raw = "--data-dir", str(explicit)
    else:
        source, raw = DATA_DIR_ENV, os.environ.get(DATA_DIR_ENV, "")
        if not raw:
            return None
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise BenchmarkDataError(
            f"The benchmark data directory {path} (from {source}) does not exist or is not a folder. {DATA_FIX_HINT}"
        )
    return path


def resolve_data_dir(explicit: str | Path | None) -> Path:
    """Return the benchmark data directory: the offline copy (:func:`mirror_dir`) when one is named,
    else the data cache (:func:`data_cache_dir`).

    Raises :class:`BenchmarkDataError` when the named offline copy does not exist.
    """
    mirror = mirror_dir(explicit)
    return mirror if mirror is not None else data_cache_dir()


def require_file(data_dir: Path, relative: str, benchmark: str) -> Path:
    """Return ``data_dir / relative``, raising :class:`BenchmarkDataError` if that file is missing."""
    path = Path(data_dir) / relative
    if not path.is_file():
        raise BenchmarkDataError(
            f"Benchmark {benchmark!r} needs the file {relative!r}, expected at {path}, but it is not there. {DATA_FIX_HINT}"
        )
    return path


def file_digest(path: str | Path) -> str:
    """Return the sha256 hex digest of a file's bytes (recorded as the dataset digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
