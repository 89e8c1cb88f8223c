"""The qtrust cache folder (prepared built-in models, file-hash cache)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "QTRUST_CACHE_DIR"


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$QTRUST_CACHE_DIR``, else ``~/.cache/qtrust``.

    The folder is not created here.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "qtrust"
