"""The driver's log file in the sweep folder: ``<sweep dir>/logs/driver.log``.

The console gets one line per event that matters; the tracebacks behind them (a shard that could
not be stored, a manifest that could not be written) go to :data:`TRACEBACKS`, a logger that never
reaches the console, and from there to this file while a run holds the sweep (local stores only;
on an object store they are kept nowhere). Writing the file never fails a run: on a full disk its
lines are lost quietly.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.store.sweep import SweepStore

#: Tracebacks for the log file only: not propagated to the console's handlers.
TRACEBACKS = logging.getLogger("qtrust.driver")
TRACEBACKS.propagate = False
TRACEBACKS.setLevel(logging.DEBUG)
TRACEBACKS.addHandler(logging.NullHandler())  # no handler at all would print through logging.lastResort

#: The log file, relative to the sweep folder.
LOG_FILE = "logs/driver.log"


class _QuietFileHandler(logging.FileHandler):
    """A file handler that makes its folder on the first record (a run with nothing to log leaves
    none) and drops a record it cannot write (a full disk) instead of printing a traceback."""

    def _open(self) -> io.TextIOWrapper:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)  # opening the file (its folder) is outside logging's own error handling
        except Exception:
            return

    def handleError(self, record: logging.LogRecord) -> None:
        return None


@contextmanager
def driver_log(store: SweepStore) -> Iterator[Path | None]:
    """Send :data:`TRACEBACKS` to ``<sweep dir>/logs/driver.log`` while the block runs; yields its path
    (None where the store is not a local folder). The file exists only once something was logged."""
    if not store.local:
        yield None
        return
    path = Path(store.dir) / LOG_FILE
    handler: logging.Handler = _QuietFileHandler(path, delay=True, encoding="utf-8")  # opened on the first record
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    TRACEBACKS.addHandler(handler)
    try:
        yield path
    finally:
        TRACEBACKS.removeHandler(handler)
        try:
            handler.close()  # flushes: on a full disk the last lines are lost, not raised
        except OSError:
            pass


__all__ = ["LOG_FILE", "TRACEBACKS", "driver_log"]
