"""Download the benchmark data folder from its public sources, checking every file's sha256.

The table of sources is ``jobs/data_sources.yaml``: for each folder of the data directory
(``xstest``, ``truthfulqa``, ...) the files it holds, each with the raw URL at the commit pinned in
that folder's ``SOURCE.md`` and the sha256 of its bytes. :func:`fetch` lays the files out under
``dest`` exactly like ``shared/benchmarks`` (``dest/<folder>/<path>``), so ``dest`` can then be
passed as ``--data-dir`` / ``QTRUST_DATA_DIR``.

Downloads are atomic: a file is streamed into a temporary file beside its target, hashed, and
moved into place with :func:`os.replace` only when its sha256 matches; a file already present
with the right hash is not downloaded again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

#: The table of public sources (folder -> files).
SOURCES_FILE = Path(__file__).resolve().parent / "data_sources.yaml"
_CHUNK = 1 << 16


class DataFetchError(RuntimeError):
    """A file could not be fetched, or its bytes do not have the expected sha256."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a data folder and where to get it."""

    folder: str
    path: str  # relative to the folder, '/'-separated
    url: str
    sha256: str

    @property
    def relative(self) -> str:
        """The path inside the data directory (``<folder>/<path>``)."""
        return f"{self.folder}/{self.path}"


@dataclass
class FetchReport:
    """What :func:`fetch` did, as data-directory-relative paths."""

    dest: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already present with the right hash
    replaced: list[str] = field(default_factory=list)  # present with a wrong hash, downloaded again
    bytes_downloaded: int = 0

    @property
    def files(self) -> int:
        """How many files the request covered."""
        return len(self.downloaded) + len(self.skipped)


def _check_entry(folder: str, entry: object, index: int) -> SourceFile:
    where = f"{SOURCES_FILE.name}: {folder}[{index}]"
    if not isinstance(entry, dict) or set(entry) != {"path", "url", "sha256"}:
        raise DataFetchError(f"{where}: expected a mapping with exactly path, url and sha256")
    path = str(entry["path"])
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not path:
        raise DataFetchError(f"{where}: path {path!r} must be relative and stay inside the folder")
    digest = str(entry["sha256"]).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise DataFetchError(f"{where}: sha256 {digest!r} is not a 64-digit hex digest")
    return SourceFile(folder=folder, path=path, url=str(entry["url"]), sha256=digest)


def load_sources(path: Path = SOURCES_FILE) -> dict[str, list[SourceFile]]:
    """The table of sources, by folder name (in file order)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise DataFetchError(f"{path}: expected a mapping of folder -> list of files")
    table: dict[str, list[SourceFile]] = {}
    for folder, entries in data.items():
        if not isinstance(entries, list) or not entries:
            raise DataFetchError(f"{path}: folder {folder!r} must list at least one file")
        table[str(folder)] = [_check_entry(str(folder), e, i) for i, e in enumerate(entries)]
    return table


def available_folders(path: Path = SOURCES_FILE) -> list[str]:
    """The folder names :func:`fetch` knows, sorted."""
    return sorted(load_sources(path))


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_url(source: SourceFile, base_url: str | None = None) -> str:
    """The URL to download ``source`` from: its own, or ``<base_url>/<folder>/<path>`` (a mirror
    laid out like the data directory, e.g. a local server in tests)."""
    if base_url is None:
        return source.url
    return base_url.rstrip("/") + "/" + urllib.parse.quote(source.relative, safe="/")


def _download(url: str, target: Path, expected: str, label: str, timeout: float) -> int:
    """Stream ``url`` into ``target`` atomically; return the byte count. Nothing is left behind on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            except (urllib.error.URLError, OSError, ValueError) as err:
                raise DataFetchError(f"could not download {label} from {url}: {err}") from err
        actual = digest.hexdigest()
        if actual != expected:
            raise DataFetchError(
                f"sha256 mismatch for {label} (from {url}): expected {expected}, got {actual}; the file was not kept"
            )
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return size


def fetch(
    names: list[str] | None,
    dest: Path,
    base_url: str | None = None,
    timeout: float = 60,
) -> FetchReport:
    """Download the data folders ``names`` (all when ``None``) into ``dest/<folder>/...``.

    Files already in ``dest`` with the expected sha256 are skipped; a present file with another hash
    is downloaded again. ``base_url`` replaces each URL's origin, repository and commit by
    ``<base_url>/<folder>/<path>``. Raises :class:`DataFetchError` for an unknown folder name
    (listing the available ones), a failed download, or a sha256 mismatch (naming the file, the
    expected and the actual hash; the bad bytes are never kept).
    """
    table = load_sources()
    wanted = list(table) if names is None else list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in table]
    if unknown:
        raise DataFetchError(
            f"unknown data folder(s) {', '.join(map(repr, unknown))}; available: {', '.join(sorted(table))}"
        )
    dest = Path(dest).expanduser()
    report = FetchReport(dest=dest)
    for name in wanted:
        for source in table[name]:
            target = dest / source.folder / source.path
            present = target.is_file()
            if present and file_sha256(target) == source.sha256:
                report.skipped.append(source.relative)
                continue
            url = source_url(source, base_url)
            report.bytes_downloaded += _download(url, target, source.sha256, source.relative, timeout)
            report.downloaded.append(source.relative)
            if present:
                report.replaced.append(source.relative)
    return report
