"""The sweep store: one sweep's folder over ``pyarrow.fs`` (a local folder, ``file://``, S3, GCS).

Layout under ``<root>/<sweep>/`` (``root`` is ``storage.root``: a local folder or any URI
:func:`cluster.storage.uri.open_location` opens)::

    sweep.yaml                     resolved spec (credentials in URIs masked)
    manifest.json                  plan summary, per-shard status, MLflow run ids (rewritten live;
                                   read by :mod:`jobs.store.manifest`; credentials in URIs masked)
    .lock                          sweep lock, flock on local disks (:mod:`jobs.store.lock`)
    .lock.json                     sweep lock, lease object elsewhere (:mod:`jobs.store.lock`)
    generations/variant=<v>/benchmark=<b>/shard-<digest>.parquet
                                   generation records (:mod:`jobs.store.shards`)
    generations/_index/segment-<digest>.parquet
                                   scan index of the generations
    judgments/judge=<j>/variant=<v>/benchmark=<b>/shard-<digest>.parquet
                                   judges' verdicts
    judgments/_index/segment-<digest>.parquet
                                   scan index of the judgments

Every file is committed whole (:func:`cluster.storage.atomic.write_atomic`: temp file + fsync +
rename on local disks, a single PUT on object stores); dot-files (temp files ``.tmp-*``, damaged
shards ``.damaged-*``) are ignored by readers. Sweep, variant, benchmark and judge names pass
:func:`cluster.storage.uri.safe_part`, so no name leaves the sweep folder.

The spec and the manifest pass the one redactor (:func:`cluster.storage.redact.redact`) on their way
in: a URI's user-info and secret query parameters (a judge's ``base_url``, the tracking URI, the
driver's command line) never reach the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from cluster.storage.atomic import read_bytes, write_atomic
from cluster.storage.redact import redact, redact_data
from cluster.storage.uri import (
    Location,
    join_inside,
    open_location,
    safe_part,
)
from jobs.store.records import JUDGMENTS, records_table
from jobs.store.shards import RecordFolder, ScanResult


class SweepStore:
    """One sweep's folder: resolved spec, manifest and generation records."""

    def __init__(self, root: str | Path, sweep: str):
        self.location: Location = open_location(root, "storage.root")
        self.fs, base, self.local = self.location.fs, self.location.path, self.location.local
        self.root = base
        self.sweep = safe_part(sweep, "sweep name")
        self.path = join_inside(base, self.sweep, what="sweep name")
        self.generations = RecordFolder(self.fs, f"{self.path}/generations", self.local)
        self.judgments = RecordFolder(self.fs, f"{self.path}/judgments", self.local, JUDGMENTS)

    @property
    def dir(self) -> Path | str:
        """The sweep folder: a ``Path`` on a local disk, the path inside the filesystem otherwise."""
        return Path(self.path) if self.local else self.path

    @property
    def uri(self) -> str:
        """How a user names this sweep on the command line (``qtrust status``, ``qtrust resume``).

        For object stores: the root's URI (its non-secret query parameters, such as
        ``endpoint_override``, kept after the sweep name) with the sweep appended.
        """
        if self.local:
            return self.path
        base, _, query = self.location.uri.partition("?")
        return f"{base.rstrip('/')}/{self.sweep}" + (f"?{query}" if query else "")

    @property
    def spec_path(self) -> str:
        return f"{self.path}/sweep.yaml"

    @property
    def manifest_path(self) -> str:
        return f"{self.path}/manifest.json"

    def commit_generations(self, variant: str, benchmark: str, rows: list[dict[str, Any]]) -> str:
        """Commit one shard of records (atomically); returns its path."""
        safe_part(variant, "variant name")
        safe_part(benchmark, "benchmark name")
        return self.generations.write(f"variant={variant}/benchmark={benchmark}", records_table(rows))

    def scan(self, **kwargs: Any) -> ScanResult:
        """Every usable generation record of the sweep (one columnar pass over all shards)."""
        return self.generations.scan(**kwargs)

    def scan_judgments(self, **kwargs: Any) -> ScanResult:
        """Every usable judgment of the sweep, one per judgment key."""
        return self.judgments.scan(**kwargs)

    def write_text(self, path: str, text: str) -> None:
        """Commit ``text`` (UTF-8) to ``path`` atomically (:func:`cluster.storage.atomic.write_atomic`)."""
        write_atomic(self.fs, path, text.encode(), self.local)

    def read_text(self, path: str) -> str | None:
        """The text at ``path``; None when it is missing or cannot be read."""
        try:
            data = read_bytes(self.fs, path)
        except (OSError, pa.ArrowException):
            return None
        return None if data is None else data.decode()

    def write_spec(self, text: str) -> None:
        """Store the resolved spec (YAML) with every URI's credentials masked."""
        self.write_text(self.spec_path, redact(text))

    def read_manifest(self) -> dict[str, Any]:
        text = self.read_text(self.manifest_path)
        if not text:
            return {}
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return {}

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Store the manifest with every string in it redacted (events, the driver's command, worker details)."""
        text = json.dumps(redact_data(manifest), indent=1, sort_keys=True, default=lambda value: redact(str(value)))
        self.write_text(self.manifest_path, text)
