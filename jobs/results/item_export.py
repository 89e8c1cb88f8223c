"""Every scored answer with the label scoring gave it, as one CSV (``qtrust report --items``).

Labels are derived from the stored outputs when a sweep is scored, never stored (see
:mod:`jobs.results.scoring`), so any store, old or new, exports the labels its current parser gives.
The export is how a definition's author sees how each answer was read.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cluster.storage.atomic import atomic_write_bytes
from jobs.results.scoring import ResultRow
from jobs.store.sweep import SweepStore

#: The file name of the export, beside the report.
ITEMS_NAME = "items.csv"
#: The columns of the export, in order.
ITEM_EXPORT_COLUMNS = ["variant", "kind", "benchmark", "item_id", "reference", "output", "label", "error"]


def items_frame(results: list[ResultRow]) -> pd.DataFrame:
    """One row per scored answer of every variant and ensemble (ensembles have a label, no output)."""
    frames = []
    for row in results:
        if row.frame is None or row.frame.empty:
            continue
        frame = row.frame.reindex(columns=["item_id", "reference", "output", "label", "error"])
        frame.insert(0, "benchmark", row.benchmark)
        frame.insert(0, "kind", row.kind)
        frame.insert(0, "variant", row.name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=ITEM_EXPORT_COLUMNS)
    return pd.concat(frames, ignore_index=True)[ITEM_EXPORT_COLUMNS]


def write_items(results: list[ResultRow], store: SweepStore, out_dir: Path | None = None) -> str:
    """Write :func:`items_frame` as ``items.csv`` to ``out_dir`` or the sweep's folder; returns where."""
    text = items_frame(results).to_csv(index=False)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / ITEMS_NAME
        atomic_write_bytes(path, text.encode("utf-8"))
        return str(path)
    where = f"{store.path}/{ITEMS_NAME}"
    store.write_text(where, text)
    return where if store.local else f"{store.fs.type_name}://{where}"
