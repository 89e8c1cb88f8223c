"""What goes to MLflow passes the one redactor (:func:`cluster.storage.redact.redact`) first.

The trackers (:class:`jobs.tracking.live.LiveTracker`, :class:`jobs.tracking.client.Tracker`) apply these
at their entry points: run tags, params and tags (:func:`redacted_items`), tables (:func:`redacted_frame`,
before they are serialized: JSON writes ``/`` as ``\\/``, which would hide a URI from the redactor) and
text artifacts (:func:`redact_text_file`, :func:`redacted_bytes`: ``sweep.yaml``, ``report.html``, JSON and
CSV files).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.storage.redact import redact

if TYPE_CHECKING:
    import pandas as pd

#: Artifact files read as text and redacted before they are sent (images and Parquet are sent as they are).
TEXT_SUFFIXES = frozenset({".yaml", ".yml", ".json", ".html", ".htm", ".txt", ".md", ".csv", ".log"})


def redacted_items(items: dict[str, Any]) -> dict[str, str]:
    """``{key: value}`` as strings with both redacted (params, tags)."""
    return {redact(str(key)): redact(str(value)) for key, value in items.items()}


def redacted_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every string cell and column name redacted (a copy only when something changed)."""
    columns = [redact(str(c)) if isinstance(c, str) else c for c in frame.columns]
    from pandas.api.types import is_object_dtype, is_string_dtype

    changed = {}
    for column in frame.columns:
        values = frame[column]
        if is_object_dtype(values) or is_string_dtype(values):
            shown = values.map(lambda v: redact(v) if isinstance(v, str) else v)
            if not shown.equals(values):
                changed[column] = shown
    if not changed and columns == list(frame.columns):
        return frame
    out = frame.copy()
    for column, values in changed.items():
        out[column] = values
    out.columns = columns
    return out


def redacted_bytes(content: bytes, name: str) -> bytes:
    """``content`` of the artifact file ``name``, redacted when it is text (by its suffix)."""
    if Path(name).suffix.lower() not in TEXT_SUFFIXES:
        return content
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return content
    return redact(text).encode("utf-8")


def redact_text_file(path: Path) -> None:
    """Rewrite ``path`` (a private copy about to be sent) redacted, when it is a text file that holds a secret."""
    if path.suffix.lower() not in TEXT_SUFFIXES:
        return
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    shown = redact(text)
    if shown != text:
        path.write_text(shown, encoding="utf-8")


__all__ = ["TEXT_SUFFIXES", "redact_text_file", "redacted_bytes", "redacted_frame", "redacted_items"]
