"""A store that cannot take more bytes: a full disk, a spent quota, a read-only filesystem.

Retrying a write on such a store only repeats the same error, so the driver stops instead (see
:class:`jobs.pipeline.scheduler.Scheduler` and :class:`jobs.runner.StoreFull`). These helpers tell
such an error from others, wherever it hides in a chain of exceptions.
"""

from __future__ import annotations

import errno

#: ``errno`` values that mean "no write will succeed until someone makes room or remounts".
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

_WORDS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is spent",
    errno.EROFS: "the filesystem is read-only",
}


def no_room(err: BaseException | None) -> OSError | None:
    """The ``OSError`` in ``err`` (itself, its cause or context) whose errno is in :data:`NO_ROOM_ERRNOS`."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_ROOM_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


def describe_no_room(err: OSError) -> str:
    """Words for a no-room error: ``the disk is full ([Errno 28] No space left on device: '/x')``."""
    what = _WORDS.get(err.errno or 0, "the store takes no more writes")
    detail = f"[Errno {err.errno}] {err.strerror or err}"
    if err.filename:
        detail += f": {err.filename}"
    return f"{what} ({detail})"


__all__ = ["NO_ROOM_ERRNOS", "describe_no_room", "no_room"]
