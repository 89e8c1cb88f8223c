"""Storage locations: a local folder or a URI, opened one way for the sweep store, the sweep lock,
``qtrust status`` and the variant cache.

Every location goes through :func:`open_location`, which returns a ``pyarrow.fs`` filesystem:

* a plain path (or ``file://``): the local disk;
* ``s3://bucket/prefix``: S3 or any S3-compatible server. Credentials come from the standard AWS
  chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``~/.aws``,
  instance roles); the endpoint of an S3-compatible server from ``AWS_ENDPOINT_URL_S3`` or
  ``AWS_ENDPOINT_URL`` (pyarrow honours both when it opens an ``s3://`` URI), or from URI query
  parameters ``?endpoint_override=host:port&scheme=http``. Writes are single PUTs
  (``allow_delayed_open`` is switched on: an object below pyarrow's part size is sent in one
  ``PutObject`` when the stream closes, so a half-written object never exists);
* ``gs://`` / ``gcs://``, ``hdfs://`` and whatever else ``pyarrow.fs.FileSystem.from_uri`` opens
  (GCS credentials: ``GOOGLE_APPLICATION_CREDENTIALS`` or the default Google chain);
* any other scheme an installed ``fsspec`` knows (``memory://`` in tests), wrapped into pyarrow
  with ``pyarrow.fs.FSSpecHandler``.

Secrets never belong in a location: they would be copied into the stored ``sweep.yaml``, the
manifest, MLflow and logs. :func:`location_problem` refuses user-info (``s3://KEY:SECRET@bucket``)
and every query parameter :mod:`cluster.storage.redact` would mask, with one line that says where
credentials go instead; :func:`redact` (the one redactor, :func:`cluster.storage.redact.redact`,
re-exported here) is the belt-and-braces form used wherever a location is shown.

Names that become path parts (sweeps, variants, benchmarks, judges) pass :func:`safe_part`, and
:func:`join_inside` refuses any joined path that would leave its root: the second line of defence
behind the spec's name validation.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from cluster.storage.atomic import OBJECT_STORES
from cluster.storage.redact import is_secret_param, redact

__all__ = [
    "OBJECT_STORES",
    "Location",
    "StorageLocationError",
    "check_location",
    "is_uri",
    "join_inside",
    "location_problem",
    "open_location",
    "redact",
    "safe_part",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class StorageLocationError(ValueError):
    """A location or a name qtrust refuses; ``str()`` is one line for the user."""


@dataclass(frozen=True)
class Location:
    """An opened storage location."""

    fs: Any
    """The ``pyarrow.fs.FileSystem``."""
    path: str
    """The path inside ``fs`` (no trailing slash)."""
    local: bool
    """True for the local disk (atomic commits by rename; flock works)."""
    uri: str
    """How to name this location again on the command line (secrets removed)."""

    @property
    def object_store(self) -> bool:
        """True for S3 and GCS, where a single PUT is the atomic commit and folders are implicit."""
        return getattr(self.fs, "type_name", "") in OBJECT_STORES


def is_uri(text: str | Path) -> bool:
    """Whether ``text`` is a URI (``scheme://...``) rather than a local path."""
    return "://" in str(text)


def location_problem(text: str | Path, field: str = "location") -> str | None:
    """One line saying why ``text`` may not be used as a storage location (None when it may).

    Refused: credentials in the URI (``user:secret@host``, secret query parameters) and control
    characters. ``field`` names where the value came from (``storage.root``, ``--variant-cache``).
    """
    value = str(text)
    if _CONTROL.search(value):
        return f"{field}: {value!r} holds control characters; give a plain folder or URI"
    if not is_uri(value):
        return None
    parts = urlsplit(value)
    where = (
        "put credentials in the environment instead (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or an AWS profile; "
        "GOOGLE_APPLICATION_CREDENTIALS for GCS)"
    )
    if "@" in parts.netloc:
        return f"{field}: {redact(value)} carries credentials before '@'; {where}"
    secret = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True) if is_secret_param(k)})
    if secret:
        return f"{field}: {redact(value)} carries the secret parameter(s) {', '.join(secret)}; {where}"
    if redact(value) != value:  # a secret elsewhere (a fragment): what is stored and shown must equal what is used
        return f"{field}: {redact(value)} carries a secret; {where}"
    return None


def check_location(text: str | Path, field: str = "location") -> str:
    """``text`` unchanged, or :class:`StorageLocationError` with :func:`location_problem`'s line."""
    problem = location_problem(text, field)
    if problem:
        raise StorageLocationError(problem)
    return str(text)


def _split_query(value: str) -> tuple[str, str]:
    """``s3://b/p?x=1`` -> (``s3://b/p``, ``x=1``)."""
    base, _, query = value.partition("?")
    return base, query


def open_location(text: str | Path, field: str = "location") -> Location:
    """Open a local folder or URI as a ``pyarrow.fs`` filesystem (see the module docstring).

    Raises :class:`StorageLocationError` for credentials in the URI or a scheme nothing can open.
    """
    import pyarrow.fs as pafs

    value = check_location(text, field)
    if not is_uri(value):
        path = str(Path(value).expanduser().resolve())
        return Location(pafs.LocalFileSystem(), path, True, path)
    base, query = _split_query(value)
    scheme = urlsplit(value).scheme.lower()
    if scheme == "file":
        path = str(Path(unquote(urlsplit(value).path) or "/").resolve())
        return Location(pafs.LocalFileSystem(), path, True, base.rstrip("/") or value)
    opened = value
    if scheme == "s3" and "allow_delayed_open" not in query:
        opened = f"{base}?{query + '&' if query else ''}allow_delayed_open=true"
    try:
        fs, path = pafs.FileSystem.from_uri(opened)
    except (ValueError, TypeError) as err:  # ArrowInvalid is a ValueError
        if "Unrecognized filesystem type" not in str(err):
            raise StorageLocationError(f"{field}: cannot open {redact(value)}: {err}") from None
        fs, path = _open_fsspec(value, field)
    path = path.rstrip("/")
    shown = f"{base.rstrip('/')}{'?' + query if query else ''}"
    return Location(fs, path, isinstance(fs, pafs.LocalFileSystem), redact(shown))


def _open_fsspec(value: str, field: str) -> tuple[Any, str]:
    """A scheme pyarrow does not know, through fsspec (if installed) wrapped as a pyarrow filesystem."""
    import pyarrow.fs as pafs

    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise StorageLocationError(
            f"{field}: {redact(value)} has a scheme pyarrow does not open (use s3://, gs://, hdfs:// or a folder)"
        ) from None
    try:
        fs, path = url_to_fs(value)
    except (ValueError, ImportError) as err:
        raise StorageLocationError(f"{field}: cannot open {redact(value)}: {err}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), str(path)


# --------------------------------------------------------------------------------------------- names
def safe_part(name: str, what: str = "name") -> str:
    """``name`` if it can be one path part below a root, else :class:`StorageLocationError`.

    Refused: empty, ``.``/``..``, separators (``/``, ``\\``), control characters, a leading dot
    (readers ignore dot-files) and anything whose percent-decoded form is one of these
    (``%2e%2e``, ``%2F``): a store on a server that decodes names must not be tricked either.
    """
    text = str(name)
    decoded = text
    for _ in range(3):  # %252e -> %2e -> .
        decoded = unquote(decoded)
    for form in {text, decoded}:
        if (
            not form
            or form in (".", "..")
            or "/" in form
            or "\\" in form
            or _CONTROL.search(form)
            or form.startswith(".")
        ):
            raise StorageLocationError(
                f"{what} {text!r} cannot name a folder in the store (no '/', '\\', '..', leading '.', "
                "or their %-encoded forms); use letters, digits, '_', '.', '-'"
            )
    return text


def join_inside(root: str, *parts: str, what: str = "path") -> str:
    """``root/part/...`` after checking every part, refusing a result that is not below ``root``.

    Each part may hold several ``/``-separated pieces (``variant=a/benchmark=b``); each piece must
    pass :func:`safe_part`.
    """
    base = root.rstrip("/") or "/"
    pieces = [piece for part in parts for piece in str(part).split("/")]
    for piece in pieces:
        safe_part(piece, what)
    joined = posixpath.join(base, *pieces) if pieces else base
    normal = posixpath.normpath(joined)
    prefix = base if base.endswith("/") else base + "/"
    if pieces and not normal.startswith(prefix):
        raise StorageLocationError(f"{what} {'/'.join(pieces)!r} resolves outside the store root {base}")
    return joined
