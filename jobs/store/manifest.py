"""A sweep's ``manifest.json`` (written live by the driver) and its lock holder, read from the store.

Layout (the sweep folder, a local path or a URI; see :mod:`jobs.store.sweep`)::

    <sweep_dir>/manifest.json      the manifest, a JSON object (missing: not a sweep folder)
    <sweep_dir>/.lock              the lock holder, flock on local disks (:mod:`jobs.store.lock`)
    <sweep_dir>/.lock.json         the lock holder, lease object elsewhere

Reading never writes: ``qtrust status`` is safe to run next to a driver.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cluster.storage.atomic import read_bytes
from cluster.storage.redact import redact
from jobs.store.lock import SweepLock, local_path

MANIFEST_NAME = "manifest.json"


class StatusError(Exception):
    """A sweep folder whose status cannot be read; ``str()`` is one user-facing line."""


# --------------------------------------------------------------------------------------------- reading
def manifest_location(sweep_dir: str) -> str:
    """Where ``read_manifest`` looks, as the user would write it (secrets in a URI masked)."""
    base, sep, query = redact(sweep_dir).partition("?")
    return f"{base.rstrip('/')}/{MANIFEST_NAME}{sep}{query}"


def _read_bytes(sweep_dir: str) -> bytes:
    """The manifest's bytes from a local folder or any pyarrow.fs URI (FileNotFoundError if absent)."""
    local = local_path(sweep_dir)
    if local is not None:
        filesystem, path = None, f"{local.rstrip('/')}/{MANIFEST_NAME}"
    else:
        from cluster.storage.uri import StorageLocationError, open_location

        try:
            location = open_location(str(sweep_dir), "sweep folder")
        except StorageLocationError as err:
            raise StatusError(str(err)) from None
        except ValueError as err:  # pyarrow.lib.ArrowInvalid is a ValueError
            raise StatusError(f"cannot open {redact(sweep_dir)}: {err}") from None
        filesystem, path = location.fs, f"{location.path.rstrip('/')}/{MANIFEST_NAME}"
    raw = read_bytes(filesystem, path)
    if raw is None:
        raise FileNotFoundError(path)
    return raw


def read_manifest(sweep_dir: str) -> dict[str, Any]:
    """The sweep's manifest as a dict; raises :class:`StatusError` (one line) when absent or unreadable."""
    where = manifest_location(sweep_dir)
    for attempt in range(3):
        try:
            raw = _read_bytes(sweep_dir)
        except FileNotFoundError:
            raise StatusError(
                f"{where} not found; pass the folder of a sweep started with 'qtrust run' (e.g. qtrust-runs/<name>)"
            ) from None
        except IsADirectoryError:
            raise StatusError(f"{where} is a folder, not a manifest") from None
        except OSError as err:
            raise StatusError(f"cannot read {where}: {err}") from err
        try:
            value = json.loads(raw.decode())
        except (ValueError, UnicodeDecodeError) as err:
            if attempt < 2:  # a store without atomic replace may show a write in flight
                time.sleep(0.1)
                continue
            raise StatusError(f"{where} is not valid JSON ({err})") from err
        if not isinstance(value, dict):
            raise StatusError(f"{where} does not hold a JSON object")
        return value
    raise AssertionError("unreachable")  # pragma: no cover


def lock_holder(sweep_dir: str) -> dict[str, Any] | None:
    """Who holds the sweep's lock now (None when free or when it cannot be checked)."""
    try:
        return SweepLock(sweep_dir).holder()
    except (OSError, ValueError):
        return None
