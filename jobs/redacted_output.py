"""What the ``qtrust`` process shows passes the one redactor: its console streams and every log record.

Two choke points, installed by the command line (:mod:`jobs.cli`):

* :class:`RedactingStream`: a text stream that masks secrets in URIs (:func:`cluster.storage.redact.redact`)
  in whatever is written to it, then writes to the stream it wraps. The CLI's rich consoles write through
  one, and ``qtrust`` replaces ``sys.stdout`` / ``sys.stderr`` by one, so progress lines, Ray's forwarded
  worker output, warnings and tracebacks are covered too;
* :func:`redact_log_records`: every log record the process creates (any logger, any handler: the
  console, a log file) carries its message, and the text of its traceback, redacted.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

from cluster.storage.redact import redact


class RedactingStream:
    """A text stream writing ``redact(text)`` to ``target``; other attributes are the target's.

    ``target`` is a stream, or a callable returning the stream to use at each write (``sys.stdout`` as it
    is then: a test runner or rich's live display may replace it).
    """

    def __init__(self, target: TextIO | Callable[[], TextIO]) -> None:
        self._target = target

    @property
    def target(self) -> TextIO:
        """The stream written to now (behind rich's stdout proxy, the stream that proxy wraps)."""
        stream = self._target() if callable(self._target) else self._target
        return getattr(stream, "rich_proxied_file", stream)

    def write(self, text: str | bytes) -> int:
        if isinstance(text, (bytes, bytearray)):
            # click's echo writes bytes to a stream it takes for binary: redact the text, keep the bytes
            shown = redact(bytes(text).decode("utf-8", errors="replace"))
            buffer = getattr(self.target, "buffer", None)
            if buffer is None:
                self.target.write(shown)
            else:
                self.target.flush()
                buffer.write(shown.encode("utf-8"))
            return len(text)
        self.target.write(redact(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return bool(self.target.isatty())

    def fileno(self) -> int:
        return self.target.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def standard_stream(name: str) -> Callable[[], TextIO]:
    """A callable returning ``sys.<name>`` (``stdout`` or ``stderr``) as it is when called."""
    return lambda: getattr(sys, name)


def redact_standard_streams() -> None:
    """Replace ``sys.stdout`` and ``sys.stderr`` by redacting streams over them (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))


def redact_log_records() -> None:
    """From now on, every log record of this process has its message and traceback text redacted (once)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: logging reports it when the record is handled
            return record
        shown = redact(message)
        if shown != message:
            record.msg, record.args = shown, None
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
        return record

    factory.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


__all__ = ["RedactingStream", "redact_log_records", "redact_standard_streams", "standard_stream"]
