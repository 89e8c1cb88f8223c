"""What a sweep's comparison (see :mod:`jobs.results.compare`) becomes in MLflow: metrics, tags, tables, figures.

Pure functions from the long comparison frame (one row per benchmark × variant or ensemble ×
metric) to what one run logs. Metric names are the same in every run (``accuracy_ci_low``,
``delta_accuracy``...), never embedding a variant's name, so the UI's columns and charts compare
runs; the per-variant summary of the parent is a table, not one metric per variant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

#: Columns of a comparison frame kept in the ``comparison.json`` tables (those present are kept).
TABLE_COLUMNS = [
    "benchmark",
    "name",
    "short",
    "kind",
    "method",
    "bits",
    "metric",
    "primary",
    "value",
    "se",
    "low",
    "high",
    "interval",
    "n",
    "delta",
    "delta_low",
    "delta_high",
    "p_value",
    "significant",
    "flags",
]

#: Frame column -> suffix of the logged metric name, ``{metric}{suffix}``.
_ESTIMATE = {"low": "_ci_low", "high": "_ci_high", "se": "_se"}
#: Frame column -> name template of the logged delta metric.
_DELTA = {
    "delta": "delta_{m}",
    "delta_low": "delta_{m}_ci_low",
    "delta_high": "delta_{m}_ci_high",
    "p_value": "delta_{m}_p",
}


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def run_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """The interval, standard error and delta metrics of one run's rows (finite values only)."""
    out: dict[str, float] = {}
    for row in rows.to_dict("records"):
        metric = str(row["metric"])
        for column, suffix in _ESTIMATE.items():
            if (value := _finite(row.get(column))) is not None:
                out[f"{metric}{suffix}"] = value
        for column, template in _DELTA.items():
            if (value := _finite(row.get(column))) is not None:
                out[template.format(m=metric)] = value
    return out


def run_flags(rows: pd.DataFrame) -> list[str]:
    """The distinct flag messages of one run's rows, in order."""
    seen: dict[str, None] = {}
    for text in rows.get("flags", pd.Series(dtype=object)).tolist():
        if isinstance(text, str):
            for part in text.split("; "):
                if part.strip():
                    seen[part.strip()] = None
    return list(seen)


def run_tags(rows: pd.DataFrame) -> dict[str, str]:
    """``qtrust.flags`` (the messages, or "none") and ``qtrust.degenerate`` ("true"/"false") of one run."""
    flags = run_flags(rows)
    return {"qtrust.flags": "; ".join(flags) if flags else "none", "qtrust.degenerate": "true" if flags else "false"}


def comparison_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows as the ``comparison.json`` table (known columns, in a fixed order)."""
    return rows[[c for c in TABLE_COLUMNS if c in rows.columns]].reset_index(drop=True)


def flips_table(matrix: pd.DataFrame) -> pd.DataFrame:
    """A flip crosstab as a table: one row per reference outcome, one column per variant outcome."""
    table = matrix.copy()
    table.columns = [f"variant: {c}" for c in table.columns]
    table.insert(0, "reference outcome", [str(i) for i in matrix.index])
    return table.reset_index(drop=True)


def summary_table(
    entries: list[dict[str, Any]],
    perspectives: Mapping[str, Mapping[str, float]],
) -> pd.DataFrame:
    """The parent's summary: one row per variant or ensemble, one column per benchmark's primary metric
    (``<benchmark>.<metric>``, and ``<benchmark>.delta_<metric>`` when a delta is known), then one
    per perspective score (``<perspective>_score``, 0-100).

    ``entries`` hold ``name, short, kind, model, method, bits, benchmark, metric, value`` and maybe
    ``delta`` and ``flags``: one per (variant or ensemble, benchmark), its primary metric.
    """
    rows: dict[str, dict[str, Any]] = {}
    for entry in entries:
        name = str(entry["name"])
        row = rows.setdefault(
            name, {key: entry.get(key) for key in ("name", "short", "kind", "model", "method", "bits")}
        )
        column = f"{entry['benchmark']}.{entry['metric']}"
        row[column] = _finite(entry.get("value"))
        if (delta := _finite(entry.get("delta"))) is not None:
            row[f"{entry['benchmark']}.delta_{entry['metric']}"] = delta
        flags = entry.get("flags")
        if isinstance(flags, str) and flags:
            row["flags"] = "; ".join(filter(None, [row.get("flags"), f"{entry['benchmark']}: {flags}"]))
    for name, scores in perspectives.items():
        row = rows.setdefault(str(name), {"name": str(name)})
        for perspective, value in scores.items():
            row[f"{perspective}_score"] = _finite(value)
    return pd.DataFrame(list(rows.values()))


def frame_entries(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The primary-metric rows of a comparison frame as :func:`summary_table` entries."""
    if frame.empty or "primary" not in frame.columns:
        return []
    return frame[frame["primary"].astype(bool)].to_dict("records")


def parent_figures(
    frame: pd.DataFrame,
    flips: Mapping[tuple[str, str], pd.DataFrame],
    perspectives: Mapping[str, Mapping[str, float]],
    colors: Mapping[str, str],
    short: Mapping[str, str],
) -> dict[str, Any]:
    """Artifact path -> a function that renders that figure to PNG bytes (called by the logger, so a
    figure that fails is reported alone).

    ``plots/<benchmark>__<metric>_vs_bits.png`` per benchmark's primary metric,
    ``plots/perspectives_radar.png`` when there are perspective scores and
    ``plots/flips__<benchmark>.png`` per benchmark with flip matrices.
    """
    from jobs.results.plots import (
        figure_png,
        flip_grid,
        metric_vs_bits,
        perspective_radar,
    )

    out: dict[str, Any] = {}
    if not frame.empty and {"benchmark", "metric", "primary"} <= set(frame.columns):
        primaries = frame[frame["primary"].astype(bool)][["benchmark", "metric"]].drop_duplicates()
        for bench, metric in primaries.itertuples(index=False):
            out[f"plots/{bench}__{metric}_vs_bits.png"] = lambda b=bench, m=metric: figure_png(
                metric_vs_bits(frame, b, m, colors=colors)
            )
    if any(perspectives.values()):
        out["plots/perspectives_radar.png"] = lambda: figure_png(perspective_radar(perspectives, colors=colors))
    benchmarks = list(dict.fromkeys(bench for _name, bench in flips))
    for bench in benchmarks:
        matrices = {short.get(name, name): matrix for (name, b), matrix in flips.items() if b == bench}
        out[f"plots/flips__{bench}.png"] = lambda m=matrices, b=bench: figure_png(
            flip_grid(m, f"{b}: outcome against the reference")
        )
    return out


__all__ = [
    "comparison_table",
    "flips_table",
    "frame_entries",
    "parent_figures",
    "run_flags",
    "run_metrics",
    "run_tags",
    "summary_table",
]
