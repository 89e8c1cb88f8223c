"""Model sources: a built-in name, a local folder, or a Hugging Face hub id.

* :func:`validate_model_source` — cheap check for job validation (no download, no hashing).
* :func:`model_identity` — cheap, driver-side identity string of the weights (no model load).
* :func:`resolve_model_path` — the local folder to load (prepares or downloads as needed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from filelock import FileLock

from cluster.models.builtin import BUILTIN_MODELS, prepare_builtin_model
from cluster.models.cache_dir import resolve_cache_dir
from trust.benchmarks.data import file_digest

log = logging.getLogger(__name__)

HASH_CACHE_FILE = "hashes.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.][A-Za-z0-9_.-]*$")


class ModelSourceError(Exception):
    """A model source that cannot be used (unknown name, bad folder, hub unreachable)."""


def _builtin_list() -> str:
    return ", ".join(sorted(BUILTIN_MODELS))


def _looks_like_path(source: str) -> bool:
    """True for strings the user most likely meant as a filesystem path."""
    if source.startswith(("/", ".", "~")):
        return True
    try:
        if Path(source).expanduser().exists():
            return True
    except OSError:  # a name too long for the filesystem, ...: a path all the same
        return True
    # "org/name" is a hub id; anything with more separators is a path.
    return os.sep in source and not _HUB_ID.match(source)


def _is_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source))


def validate_model_source(source: str) -> str | None:
    """Return an error message for an unusable ``source``, or None when it looks usable.

    Built-in names are accepted; path-like strings must name an existing folder holding a
    ``config.json``; otherwise a hub id of the form ``org/name`` is accepted (not checked online).
    """
    if not isinstance(source, str) or not source.strip():
        return "model source is empty; give a built-in name, a local folder or a hub id (org/name)"
    if source in BUILTIN_MODELS:
        return None
    if _looks_like_path(source):
        folder = Path(source).expanduser()
        try:
            folder.exists()
        except OSError as err:  # e.g. a name longer than the filesystem allows
            shown = source if len(source) <= 120 else f"{source[:120]}..."
            return f"model folder {shown!r} cannot be looked up ({err.strerror}); give the folder of a model"
        if not folder.exists():
            return f"model folder {source!r} does not exist"
        if not folder.is_dir():
            return f"model source {source!r} is a file, not a folder holding config.json"
        if not (folder / "config.json").is_file():
            return f"model folder {source!r} has no config.json"
        return None
    if _is_hub_id(source):
        return None
    return (
        f"model source {source!r} is not a built-in model ({_builtin_list()}), "
        "not a local folder (start paths with /, ./ or ~), and not a hub id of the form org/name"
    )


def resolve_model_path(source: str, cache_dir: Path | None = None, revision: str | None = None) -> Path:
    """Return a local folder holding the model for ``source``.

    Built-in names are prepared into the cache (once); a local folder with ``config.json`` is
    returned as is; anything else is downloaded from the Hugging Face hub with
    ``huggingface_hub.snapshot_download`` (needs a network or a warm hub cache).

    Raises:
        ModelSourceError: the source cannot be resolved; the message says why.
    """
    if source in BUILTIN_MODELS:
        try:
            return prepare_builtin_model(source, cache_dir)
        except Exception as exc:
            raise ModelSourceError(f"could not prepare built-in model {source!r}: {exc}") from exc
    folder = Path(source).expanduser()
    if folder.is_dir():
        if (folder / "config.json").is_file():
            return folder.resolve()
        raise ModelSourceError(f"model folder {source!r} has no config.json")
    if _looks_like_path(source) or not _is_hub_id(source):
        raise ModelSourceError(validate_model_source(source) or f"model folder {source!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, revision=revision))
    except Exception as exc:
        raise ModelSourceError(
            f"model source {source!r} is not a built-in model ({_builtin_list()}) and not a local folder, "
            f"and the Hugging Face hub could not provide it (revision {revision or 'main'}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


# ---------------------------------------------------------------------------- identity


def _folder_files(folder: Path) -> list[Path]:
    """Every regular file under ``folder``, skipping hidden files and folders (``.git``, ``.cache``)."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                path = Path(root) / name
                if path.is_file():
                    files.append(path)
    return files


class _HashCache:
    """File content hashes keyed by (absolute path, size, mtime_ns), kept in ``<cache>/hashes.json``."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / HASH_CACHE_FILE
        self.entries: dict[str, str] = {}
        self.dirty = False
        try:
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict):
                self.entries = {str(k): str(v) for k, v in loaded.items()}
        except (OSError, ValueError):
            pass

    @staticmethod
    def _key(path: Path) -> str:
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def sha256(self, path: Path) -> str:
        key = self._key(path)
        cached = self.entries.get(key)
        if cached is not None:
            return cached
        value = file_digest(path)
        self.entries[key] = value
        self.dirty = True
        return value

    def save(self) -> None:
        """Merge into the file on disk under a lock and replace it atomically (best effort)."""
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path) + ".lock"):
                merged: dict[str, str] = {}
                try:
                    on_disk = json.loads(self.path.read_text())
                    if isinstance(on_disk, dict):
                        merged.update(on_disk)
                except (OSError, ValueError):
                    pass
                merged.update(self.entries)
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".hashes-", suffix=".json")
                with os.fdopen(fd, "w") as handle:
                    json.dump(merged, handle)
                os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not save the hash cache %s: %s", self.path, exc)


def local_folder_digest(folder: Path, cache_dir: Path | None = None) -> str:
    """sha256 over (relative path, content sha256) of every non-hidden file in ``folder``."""
    cache = _HashCache(resolve_cache_dir(cache_dir))
    digest = hashlib.sha256()
    for path in _folder_files(folder):
        rel = path.relative_to(folder).as_posix()
        digest.update(rel.encode("utf-8") + b"\0" + cache.sha256(path).encode("ascii") + b"\n")
    cache.save()
    return digest.hexdigest()


def model_identity(source: str, revision: str | None = None, *, cache_dir: Path | None = None) -> str:
    """A cheap identity string for the weights behind ``source`` (no model is loaded).

    * built-in: ``builtin:<name>:<package>==<version>:<gguf file>``
    * local folder: ``local:<sha256 over the files' relative paths and content hashes>``; file
      hashes are cached in ``<cache>/hashes.json`` by (path, size, mtime), so a large folder is
      read once.
    * otherwise: ``hub:<id>@<revision or main>``.
    """
    if source in BUILTIN_MODELS:
        return BUILTIN_MODELS[source].identity
    folder = Path(source).expanduser()
    if folder.is_dir():
        return "local:" + local_folder_digest(folder, cache_dir)
    return f"hub:{source}@{revision or 'main'}"
