"""Where the HTML report goes: the sweep's folder in the store (or a path the user names) and its MLflow parent run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cluster.storage.atomic import atomic_write_bytes
from cluster.storage.redact import redact
from jobs.plan.build import Plan
from jobs.results.compare import Comparison
from jobs.store.sweep import SweepStore

REPORT_NAME = "report.html"


#: A partial report's name: it never replaces the final ``report.html`` (in the store or in MLflow).
PARTIAL_REPORT_NAME = "report-partial.html"


def write_report(
    plan: Plan,
    comparison: Comparison,
    store: SweepStore,
    out: Path | None = None,
    *,
    partial: list[str] | None = None,
) -> str:
    """Render the report and write it (atomically) to ``out`` or ``<sweep dir>/report.html``; returns where.

    A ``partial`` report (the lines saying what is missing) carries a banner and goes to
    ``<sweep dir>/report-partial.html``, so that it never replaces a final report. An adaptive sweep's
    decisions (``<sweep dir>/adaptive.json``) get their own section.
    """
    from jobs.results.html import render_report
    from jobs.store.adaptive import read_adaptive

    adaptive = read_adaptive(store)
    text = redact(render_report(plan, comparison, partial=partial, adaptive=adaptive))  # no URI's credentials
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, text.encode("utf-8"))
        return str(out)
    path = f"{store.path}/{PARTIAL_REPORT_NAME if partial else REPORT_NAME}"
    store.write_text(path, text)
    return path if store.local else f"{store.fs.type_name}://{path}"


def local_copy(where: str, name: str = REPORT_NAME) -> Path:
    """A local file named ``name`` holding the report (``where`` itself when it is on this disk and so named)."""
    if "://" not in where and Path(where).name == name:
        return Path(where)
    target = Path(tempfile.mkdtemp(prefix="qtrust-report-")) / name
    if "://" not in where:
        target.write_bytes(Path(where).read_bytes())
        return target
    from pyarrow import fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(where)
    with filesystem.open_input_stream(path) as stream:
        target.write_bytes(stream.read())
    return target
