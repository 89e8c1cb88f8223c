"""Locating benchmark data files.

Benchmark data is never shipped with the code. It lives in a *data directory* laid out like
``shared/benchmarks``: one subfolder per benchmark source (``xstest/``, ``decodingtrust/``, ...),
each holding the original files. The directory is given explicitly (``--data-dir``) or through
the ``QTRUST_DATA_DIR`` environment variable.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Environment variable naming the benchmark data directory.
DATA_DIR_ENV = "QTRUST_DATA_DIR"

_FIX_HINT = (
    "Set --data-dir or the environment variable QTRUST_DATA_DIR to a folder laid out like "
    "shared/benchmarks (each benchmark in its own subfolder, e.g. xstest/xstest_prompts.csv); "
    'see README "Data".'
)


class BenchmarkDataError(Exception):
    """A benchmark data directory or file is missing; the message says what was expected and how to fix it."""


def resolve_data_dir(explicit: str | Path | None) -> Path:
    """Return the benchmark data directory.

    ``explicit`` wins; otherwise ``$QTRUST_DATA_DIR`` is used. Raises :class:`BenchmarkDataError`
    when neither is set or when the chosen folder does not exist.
    """
    if explicit is not None and str(explicit) != "":
        source = "--data-dir"
        raw = str(explicit)
    else:
        raw = os.environ.get(DATA_DIR_ENV, "")
        source = DATA_DIR_ENV
        if not raw:
            raise BenchmarkDataError(
                f"No benchmark data directory is set (neither --data-dir nor {DATA_DIR_ENV}). {_FIX_HINT}"
            )
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise BenchmarkDataError(
            f"The benchmark data directory {path} (from {source}) does not exist or is not a folder. {_FIX_HINT}"
        )
    return path


def require_file(data_dir: Path, relative: str, benchmark: str) -> Path:
    """Return ``data_dir / relative``, raising :class:`BenchmarkDataError` if that file is missing."""
    path = Path(data_dir) / relative
    if not path.is_file():
        raise BenchmarkDataError(
            f"Benchmark {benchmark!r} needs the file {relative!r}, expected at {path}, but it is not there. {_FIX_HINT}"
        )
    return path


def file_digest(path: str | Path) -> str:
    """Return the sha256 hex digest of a file's bytes (recorded as the dataset digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
