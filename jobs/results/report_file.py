"""Where the HTML report goes: the sweep's folder in the store (or a path the user names) and its MLflow parent run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from jobs.plan.build import Plan
from jobs.results.compare import Comparison
from jobs.store.sweep import SweepStore

REPORT_NAME = "report.html"


def write_report(plan: Plan, comparison: Comparison, store: SweepStore, out: Path | None = None) -> str:
    """Render the report and write it (atomically) to ``out`` or ``<sweep dir>/report.html``; returns where."""
    from jobs.results.html import render_report

    text = render_report(plan, comparison)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
        return str(out)
    path = f"{store.path}/{REPORT_NAME}"
    store.write_text(path, text)
    return path if store.local else f"{store.fs.type_name}://{path}"


def local_copy(where: str) -> Path:
    """A local file holding the report (``where`` itself when it is on this disk)."""
    if "://" not in where:
        return Path(where)
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(where)
    target = Path(tempfile.mkdtemp(prefix="qtrust-report-")) / REPORT_NAME
    with filesystem.open_input_stream(path) as stream:
        target.write_bytes(stream.read())
    return target
