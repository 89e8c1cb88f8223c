"""Room kept on a local store's disk for the last words of a run the disk stops.

When the disk fills up while a run stores its shards, the manifest (to say "failed" and why) and the
driver's log still need a few pages. The driver writes :data:`RESERVE_BYTES` into
``<sweep dir>/.reserve`` (a dot-file: readers ignore it) when it takes the sweep and deletes it at the
end; :meth:`Reserve.release` frees it early, when a write found no room. Object stores never run
out of room, so they get none.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.store.sweep import SweepStore

#: The reserve's name inside the sweep folder.
RESERVE_NAME = ".reserve"
#: How much is kept: room for the manifest of a large sweep and the log's last lines.
RESERVE_BYTES = 1 << 20


class Reserve:
    """The reserve file of one run (``path`` None: nothing reserved, an object store)."""

    def __init__(self, path: Path | None):
        self.path = path

    def release(self) -> bool:
        """Delete the reserve (its room is free again); True when there was one."""
        if self.path is None:
            return False
        path, self.path = self.path, None
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True


@contextmanager
def room_reserve(store: SweepStore, size: int = RESERVE_BYTES) -> Iterator[Reserve]:
    """Write the reserve of a local store (an ``OSError`` when even that finds no room) and delete it after."""
    if not store.local:
        yield Reserve(None)
        return
    path = Path(store.dir) / RESERVE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "wb") as handle:
            chunk = b"\0" * 65536
            for _ in range(0, size, len(chunk)):
                handle.write(chunk)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    reserve = Reserve(path)
    try:
        yield reserve
    finally:
        reserve.release()


__all__ = ["RESERVE_BYTES", "RESERVE_NAME", "Reserve", "room_reserve"]
