"""Download the benchmark data folder from its public sources, checking every file's sha256.

The table of sources is ``jobs/data_sources.yaml``: for each folder of the data directory
(``xstest``, ``truthfulqa``, ...) the files it holds, each with where to get it (pinned to the commit
that folder's ``SOURCE.md`` names) and the sha256 of its bytes. An entry takes one of five forms:

* ``{path, url, sha256}``: a byte-for-byte copy of the file at ``url``.
* ``{path, sha256, archive: {url, sha256, member}}``: the member ``member`` of the zip archive at
  ``url``. The archive is downloaded once per :func:`fetch` (into a temporary folder inside ``dest``,
  removed afterwards), checked against its own sha256, and the member is extracted and checked.
* ``{path, url, source_sha256, transform, sha256}``: the file at ``url`` (checked against
  ``source_sha256``) changed by a named, documented transformation (:data:`TRANSFORMS`, e.g.
  ``crlf_to_lf``); the result is checked against ``sha256``.
* ``{path, sha256, fetch: none, reason}``: a file no single public source holds (built here, see the
  folder's ``SOURCE.md``). It is never downloaded: :func:`fetch` reports it as "not fetchable, see
  SOURCE.md" with its reason, keeps a local copy if there is one, and says whether that copy's
  sha256 is the expected one.
* ``{path, url, sha256: null, optional: true, reason}``: a file whose bytes could not be obtained
  when the table was written, so its sha256 is unknown. It is downloaded but not verified: :func:`fetch`
  prints its sha256 and says it was not verified; a failed download is reported, not fatal.

:func:`fetch` lays the files out under ``dest`` exactly like ``shared/benchmarks``
(``dest/<folder>/<path>``), so ``dest`` can then be passed as ``--data-dir`` / ``QTRUST_DATA_DIR``.

Downloads are atomic: a file is written into a temporary file beside its target, hashed, and
moved into place with :func:`os.replace` only when its sha256 matches; a file already present
with the right hash is not downloaded again.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

import yaml

#: The table of public sources (folder -> files).
SOURCES_FILE = Path(__file__).resolve().parent / "data_sources.yaml"
#: Environment variable naming another table of sources, same format (a mirror, a local server in tests).
SOURCES_ENV = "QTRUST_DATA_SOURCES"
_CHUNK = 1 << 16


def default_sources() -> Path:
    """The table of sources to use: ``$QTRUST_DATA_SOURCES`` when set, else :data:`SOURCES_FILE`."""
    env = os.environ.get(SOURCES_ENV)
    return Path(env).expanduser() if env else SOURCES_FILE


class Progress(Protocol):
    """Told about each download as it streams (a progress bar, or a line per file)."""

    def start(self, label: str, total: int | None) -> None:
        """A download of ``label`` begins; ``total`` is its size in bytes when the server says it."""

    def advance(self, size: int) -> None:
        """``size`` more bytes arrived."""

    def done(self) -> None:
        """The download ended (whether or not it succeeded)."""


class LineProgress:
    """One line when a download starts and one when it ends (for logs and pipes, not a terminal)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.label = ""
        self.size = 0

    def start(self, label: str, total: int | None) -> None:
        self.label, self.size = label, 0
        self.say(f"downloading {label}" + (f" ({total / 1e6:.1f} MB)" if total else ""))

    def advance(self, size: int) -> None:
        self.size += size

    def done(self) -> None:
        self.say(f"downloaded {self.label}: {self.size / 1e6:.1f} MB")


class BarProgress:
    """A tqdm progress bar per download, on standard error."""

    def __init__(self) -> None:
        self.bar: Any = None

    def start(self, label: str, total: int | None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, leave=False)

    def advance(self, size: int) -> None:
        if self.bar is not None:
            self.bar.update(size)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def console_progress(say: Callable[[str], None] | None = None) -> Progress:
    """A progress bar when standard error is a terminal (and tqdm is installed), else a line per download."""
    if sys.stderr.isatty():
        try:
            import tqdm  # noqa: F401
        except ImportError:
            pass
        else:
            return BarProgress()
    return LineProgress(say or _to_stderr)


def _crlf_to_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


#: The transformations a ``transform:`` entry may name: bytes of the source -> bytes of the file.
TRANSFORMS: dict[str, Callable[[bytes], bytes]] = {"crlf_to_lf": _crlf_to_lf}

#: What a report line says about a file that cannot be fetched.
NOT_FETCHABLE = "not fetchable, see SOURCE.md"


class DataFetchError(RuntimeError):
    """A file could not be fetched, or its bytes do not have the expected sha256."""


@dataclass(frozen=True)
class Archive:
    """A zip archive at ``url`` (with the sha256 of its bytes) and the member to take from it."""

    url: str
    sha256: str
    member: str


@dataclass(frozen=True)
class SourceFile:
    """One file of a data folder and where to get it (see the module docstring for the forms)."""

    folder: str
    path: str  # relative to the folder, '/'-separated
    url: str | None  # the file (or a transformation's source); None for archive members and unfetchable files
    sha256: str | None  # None only for an optional entry that could not be verified
    archive: Archive | None = None
    transform: str | None = None
    source_sha256: str | None = None  # the transformation's input
    reason: str | None = None  # why it cannot be fetched / verified
    optional: bool = False

    @property
    def relative(self) -> str:
        """The path inside the data directory (``<folder>/<path>``)."""
        return f"{self.folder}/{self.path}"

    @property
    def form(self) -> str:
        """``url``, ``archive``, ``transform`` or ``none`` (not fetchable)."""
        if self.archive is not None:
            return "archive"
        if self.transform is not None:
            return "transform"
        return "none" if self.url is None else "url"

    @property
    def fetchable(self) -> bool:
        return self.form != "none"


@dataclass
class FetchReport:
    """What :func:`fetch` did, as data-directory-relative paths."""

    dest: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already present with the right hash
    replaced: list[str] = field(default_factory=list)  # present with a wrong hash, downloaded again
    #: files with ``fetch: none`` -> "present" (local copy with the right hash), "mismatch" (a local copy
    #: with another hash, kept as is) or "missing"
    not_fetchable: dict[str, str] = field(default_factory=dict)
    unverified: dict[str, str] = field(default_factory=dict)  # sha256 null -> the sha256 of the bytes there
    optional_failed: dict[str, str] = field(default_factory=dict)  # optional file -> why it was not downloaded
    notes: list[str] = field(default_factory=list)  # every line reported through ``notify``
    bytes_downloaded: int = 0

    @property
    def files(self) -> int:
        """How many files the request covered."""
        return len(self.downloaded) + len(self.skipped) + len(self.not_fetchable) + len(self.optional_failed)


# -- the table ----------------------------------------------------------------------------------


def _digest(value: object, where: str, name: str) -> str:
    digest = str(value).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise DataFetchError(f"{where}: {name} {value!r} is not a 64-digit hex digest")
    return digest


def _text(value: object, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataFetchError(f"{where}: {name} must be a non-empty string")
    return value.strip()


_FORMS = {
    "url": {"path", "url", "sha256"},
    "archive": {"path", "sha256", "archive"},
    "transform": {"path", "url", "source_sha256", "transform", "sha256"},
    "none": {"path", "sha256", "fetch", "reason"},
    "optional": {"path", "url", "sha256", "optional", "reason"},
}
_FORMS_TEXT = (
    "{path, url, sha256}, {path, sha256, archive: {url, sha256, member}}, "
    "{path, url, source_sha256, transform, sha256}, {path, sha256, fetch: none, reason} "
    "or {path, url, sha256: null, optional: true, reason}"
)


def _check_entry(folder: str, entry: object, index: int, table_name: str = SOURCES_FILE.name) -> SourceFile:
    where = f"{table_name}: {folder}[{index}]"
    if not isinstance(entry, dict):
        raise DataFetchError(f"{where}: expected a mapping, one of {_FORMS_TEXT}")
    keys = set(entry)
    form = next((name for name, wanted in _FORMS.items() if keys == wanted), None)
    if form is None:
        raise DataFetchError(f"{where}: keys {sorted(keys)} match no entry form; expected one of {_FORMS_TEXT}")
    path = str(entry["path"])
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not path:
        raise DataFetchError(f"{where}: path {path!r} must be relative and stay inside the folder")
    url = _text(entry["url"], where, "url") if "url" in entry else None
    if form == "optional":
        if entry["optional"] is not True or entry["sha256"] is not None:
            raise DataFetchError(
                f"{where}: optional: true is for a file whose sha256 is unknown (sha256: null), and only for it"
            )
        return SourceFile(folder, path, url, None, reason=_text(entry["reason"], where, "reason"), optional=True)
    if entry["sha256"] is None:
        raise DataFetchError(f"{where}: sha256 is null; only an entry with optional: true and a reason may omit it")
    sha256 = _digest(entry["sha256"], where, "sha256")
    if form == "url":
        return SourceFile(folder, path, url, sha256)
    if form == "archive":
        archive = entry["archive"]
        if not isinstance(archive, dict) or set(archive) != {"url", "sha256", "member"}:
            raise DataFetchError(f"{where}: archive must be a mapping with exactly url, sha256 and member")
        return SourceFile(
            folder,
            path,
            None,
            sha256,
            archive=Archive(
                url=_text(archive["url"], where, "archive.url"),
                sha256=_digest(archive["sha256"], where, "archive.sha256"),
                member=_text(archive["member"], where, "archive.member"),
            ),
        )
    if form == "transform":
        name = str(entry["transform"])
        if name not in TRANSFORMS:
            raise DataFetchError(f"{where}: unknown transform {name!r}; known: {', '.join(sorted(TRANSFORMS))}")
        source_sha256 = _digest(entry["source_sha256"], where, "source_sha256")
        return SourceFile(folder, path, url, sha256, transform=name, source_sha256=source_sha256)
    if str(entry["fetch"]) != "none":
        raise DataFetchError(f"{where}: fetch must be 'none' (a file that cannot be downloaded)")
    return SourceFile(folder, path, None, sha256, reason=_text(entry["reason"], where, "reason"))


def load_sources(path: Path = SOURCES_FILE) -> dict[str, list[SourceFile]]:
    """The table of sources, by folder name (in file order)."""
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise DataFetchError(f"{path}: expected a mapping of folder -> list of files")
    table: dict[str, list[SourceFile]] = {}
    for folder, entries in data.items():
        if not isinstance(entries, list) or not entries:
            raise DataFetchError(f"{path}: folder {folder!r} must list at least one file")
        files = [_check_entry(str(folder), e, i, path.name) for i, e in enumerate(entries)]
        paths = [f.path for f in files]
        duplicates = sorted({p for p in paths if paths.count(p) > 1})
        if duplicates:
            raise DataFetchError(f"{path}: folder {folder!r} lists {', '.join(duplicates)} more than once")
        table[str(folder)] = files
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
    """The URL to download ``source`` from: its own (for an archive member, the archive's), or
    ``<base_url>/<folder>/<path>`` (a mirror laid out like the data directory, e.g. a local server in
    tests: it holds the file itself, so archive members and transformed files are taken from it as
    they are). Raises :class:`DataFetchError` for a file that cannot be fetched."""
    if not source.fetchable:
        raise DataFetchError(f"{source.relative}: {NOT_FETCHABLE}: {source.reason}")
    if base_url is not None:
        return base_url.rstrip("/") + "/" + urllib.parse.quote(source.relative, safe="/")
    if source.archive is not None:
        return source.archive.url
    assert source.url is not None
    return source.url


# -- downloading --------------------------------------------------------------------------------


@contextmanager
def _atomic(target: Path) -> Iterator[BinaryIO]:
    """A temporary file beside ``target``, moved onto it when the block ends without an error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _stream(url: str, out: BinaryIO, label: str, timeout: float, progress: Progress | None = None) -> tuple[int, str]:
    """Copy ``url`` into ``out``; return the byte count and the sha256."""
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if progress is not None:
                progress.start(label, int(length) if length and length.isdigit() else None)
            try:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress.advance(len(chunk))
            finally:
                if progress is not None:
                    progress.done()
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DataFetchError(f"could not download {label} from {url}: {_reason(err)}") from err
    return size, digest.hexdigest()


def _reason(err: BaseException) -> str:
    """An error's text on one line (a URLError's reason, without its wrapper)."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        return " ".join(str(err.reason).split())
    return " ".join(str(err).split())


def _mismatch(what: str, expected: str, actual: str, kept: str = "the file was not kept") -> DataFetchError:
    return DataFetchError(f"sha256 mismatch for {what}: expected {expected}, got {actual}; {kept}")


def _download(
    url: str, target: Path, expected: str | None, label: str, timeout: float, progress: Progress | None = None
) -> tuple[int, str]:
    """Stream ``url`` into ``target`` atomically, checking its sha256 unless ``expected`` is None;
    return the byte count and the sha256. Nothing is left behind on failure."""
    with _atomic(target) as out:
        size, actual = _stream(url, out, label, timeout, progress)
        if expected is not None and actual != expected:
            raise _mismatch(f"{label} (from {url})", expected, actual)
    return size, actual


def _download_transformed(source: SourceFile, target: Path, timeout: float, progress: Progress | None = None) -> int:
    """Download a transformation's source, check it, transform it, check the result, write it atomically."""
    assert source.url is not None and source.transform is not None and source.source_sha256 is not None
    assert source.sha256 is not None
    buffer = io.BytesIO()
    size, actual = _stream(source.url, buffer, source.relative, timeout, progress)
    if actual != source.source_sha256:
        raise _mismatch(
            f"the source of {source.relative} (from {source.url}, before {source.transform})",
            source.source_sha256,
            actual,
        )
    data = TRANSFORMS[source.transform](buffer.getvalue())
    result = hashlib.sha256(data).hexdigest()
    if result != source.sha256:
        raise _mismatch(f"{source.relative} (from {source.url}, after {source.transform})", source.sha256, result)
    with _atomic(target) as out:
        out.write(data)
    return size


class _Archives:
    """The archives one :func:`fetch` needs, each downloaded once and checked, in a temporary folder
    inside ``dest`` that :meth:`close` removes."""

    def __init__(self, dest: Path, timeout: float, progress: Progress | None = None) -> None:
        self.dest = dest
        self.timeout = timeout
        self.progress = progress
        self.folder: Path | None = None
        self.paths: dict[tuple[str, str], Path] = {}

    def get(self, archive: Archive, label: str) -> tuple[Path, int]:
        """The local copy of ``archive`` and how many bytes were downloaded for it now (0 if cached)."""
        key = (archive.url, archive.sha256)
        if key in self.paths:
            return self.paths[key], 0
        if self.folder is None:
            self.dest.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix=".archives.", dir=self.dest))
        path = self.folder / f"{len(self.paths)}.zip"
        with _atomic(path) as out:
            size, actual = _stream(archive.url, out, f"the archive of {label}", self.timeout, self.progress)
            if actual != archive.sha256:
                raise _mismatch(f"the archive {archive.url} (needed for {label})", archive.sha256, actual)
        self.paths[key] = path
        return path, size

    def extract(self, source: SourceFile, target: Path) -> int:
        """Extract ``source``'s member into ``target`` atomically, checking its sha256; return the bytes downloaded."""
        assert source.archive is not None and source.sha256 is not None
        archive = source.archive
        path, size = self.get(archive, source.relative)
        try:
            with zipfile.ZipFile(path) as zipped:
                try:
                    info = zipped.getinfo(archive.member)
                except KeyError:
                    raise DataFetchError(
                        f"could not extract {source.relative}: the archive {archive.url} has no member {archive.member!r}"
                    ) from None
                with zipped.open(info) as member, _atomic(target) as out:
                    digest = hashlib.sha256()
                    for chunk in iter(lambda: member.read(_CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                    actual = digest.hexdigest()
                    if actual != source.sha256:
                        raise _mismatch(
                            f"{source.relative} (member {archive.member} of {archive.url})", source.sha256, actual
                        )
        except (zipfile.BadZipFile, NotImplementedError) as err:
            raise DataFetchError(f"could not extract {source.relative} from {archive.url}: {err}") from err
        return size

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def fetch(
    names: list[str] | None,
    dest: Path,
    base_url: str | None = None,
    timeout: float = 60,
    sources: Path = SOURCES_FILE,
    notify: Callable[[str], None] | None = None,
    only: Collection[str] | None = None,
    progress: Progress | None = None,
) -> FetchReport:
    """Download the data folders ``names`` (all when ``None``) into ``dest/<folder>/...``.

    Files already in ``dest`` with the expected sha256 are skipped; a present file with another hash
    is downloaded again. ``base_url`` replaces each URL's origin, repository and commit by
    ``<base_url>/<folder>/<path>`` (see :func:`source_url`). Raises :class:`DataFetchError` for an
    unknown folder name (listing the available ones), a failed download, or a sha256 mismatch (naming
    the file, the expected and the actual hash; the bad bytes are never kept).

    Files that are not fetchable, and files downloaded without a sha256 to check, are reported line by
    line through ``notify`` (default: standard error) and in the report, never skipped silently: a
    not-fetchable file is "not fetchable, see SOURCE.md" with its reason, and its local copy, if any, is
    kept as it is; an unverified file's sha256 is printed with "NOT verified". ``sources`` is the table.
    ``only`` restricts the request to those data-directory-relative paths (``<folder>/<path>``) of the
    named folders; ``progress`` is told about each download as it streams.
    """
    table = load_sources(sources)
    wanted = list(table) if names is None else list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in table]
    if unknown:
        raise DataFetchError(
            f"unknown data folder(s) {', '.join(map(repr, unknown))}; available: {', '.join(sorted(table))}"
        )
    dest = Path(dest).expanduser()
    report = FetchReport(dest=dest)
    say = notify or _to_stderr

    def note(line: str) -> None:
        report.notes.append(line)
        say(line)

    archives = _Archives(dest, timeout, progress)
    keep = None if only is None else set(only)
    try:
        for name in wanted:
            for source in table[name]:
                if keep is None or source.relative in keep:
                    _fetch_one(source, dest, base_url, timeout, archives, report, note, progress)
    finally:
        archives.close()
    return report


def _fetch_one(
    source: SourceFile,
    dest: Path,
    base_url: str | None,
    timeout: float,
    archives: _Archives,
    report: FetchReport,
    note: Callable[[str], None],
    progress: Progress | None = None,
) -> None:
    target = dest / source.folder / source.path
    present = target.is_file()
    relative = source.relative
    if not source.fetchable:
        head = f"{relative}: {NOT_FETCHABLE} ({source.reason})"
        if not present:
            report.not_fetchable[relative] = "missing"
            note(f"{head}; there is no local copy in {target.parent}")
        elif (actual := file_sha256(target)) == source.sha256:
            report.not_fetchable[relative] = "present"
            note(f"{head}; the local copy is kept, sha256 ok")
        else:
            report.not_fetchable[relative] = "mismatch"
            note(f"{head}; the local copy is kept as it is, but its sha256 is {actual}, expected {source.sha256}")
        return
    if source.sha256 is None:  # optional, not verifiable
        if present:
            report.unverified[relative] = digest = file_sha256(target)
            report.skipped.append(relative)
            note(f"{relative}: already present, sha256 {digest}, NOT verified (the table has none: {source.reason})")
            return
        url = source_url(source, base_url)
        try:
            size, digest = _download(url, target, None, relative, timeout, progress)
        except DataFetchError as err:
            report.optional_failed[relative] = str(err)
            note(f"{relative}: optional, not downloaded: {err}")
            return
        report.bytes_downloaded += size
        report.downloaded.append(relative)
        report.unverified[relative] = digest
        note(f"{relative}: downloaded, sha256 {digest}, NOT verified (the table has none: {source.reason})")
        return
    if present and file_sha256(target) == source.sha256:
        report.skipped.append(relative)
        return
    if base_url is not None or source.form == "url":
        url = source_url(source, base_url)
        report.bytes_downloaded += _download(url, target, source.sha256, relative, timeout, progress)[0]
    elif source.form == "archive":
        report.bytes_downloaded += archives.extract(source, target)
    else:
        report.bytes_downloaded += _download_transformed(source, target, timeout, progress)
    report.downloaded.append(relative)
    if present:
        report.replaced.append(relative)
