"""Figures of a sweep's comparison: a metric against bits, a perspective radar, flip matrices.

Every function takes plain data (the long comparison frame of :mod:`jobs.results.compare`, a perspective
table, flip crosstabs), returns a :class:`matplotlib.figure.Figure` made without pyplot (no display,
no global state, safe off the main thread) and never raises on NaN values, a single variant or an
empty input: what cannot be drawn is said in the figure. :func:`figure_png` renders one to PNG bytes.
Colours come from :mod:`jobs.results.colours`, the same as the runs' colours in the MLflow UI.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jobs.results.colours import REFERENCE_COLOR, variant_colors

#: Width, height (inches) of one panel.
PANEL = (6.4, 4.2)
#: The line joining one method's variants (the variants' own colours are on their points).
METHOD_LINE = "#9a9a9a"
#: One marker shape per quantization method.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _float(value: Any) -> float:
    return float(value) if _finite(value) else math.nan


def _is_reference(row: Mapping[str, Any]) -> bool:
    return str(row.get("kind", "variant")) == "variant" and str(row.get("bits", "")) == "ref"


def frame_colors(frame: pd.DataFrame) -> dict[str, str]:
    """Name -> colour of every variant and ensemble of a comparison frame (hashed from its ``short`` name)."""
    if frame.empty or "name" not in frame.columns:
        return {}
    rows = frame.drop_duplicates("name")
    short = {str(r["name"]): str(r.get("short", r["name"])) for r in rows.to_dict("records")}
    refs = {short[str(r["name"])] for r in rows.to_dict("records") if _is_reference(r)}
    ens = {short[str(r["name"])] for r in rows.to_dict("records") if str(r.get("kind")) == "ensemble"}
    by_short = variant_colors(short.values(), references=refs, ensembles=ens)
    return {name: by_short[s] for name, s in short.items()}


def _empty(fig: Figure, ax: Any, message: str) -> Figure:
    ax.set_axis_off()
    ax.text(
        0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#444444", wrap=True
    )
    return fig


# -- a metric against bits ------------------------------------------------------------------------


def metric_vs_bits(frame: pd.DataFrame, benchmark: str, metric: str, colors: Mapping[str, str] | None = None) -> Figure:
    """``metric`` on ``benchmark`` against bits: one line per quantization method (95% intervals as
    error bars), the reference a dashed line with its interval as a band, ensembles dotted lines.

    ``colors`` (name -> colour) defaults to :func:`frame_colors` of the whole frame.
    """
    fig = Figure(figsize=PANEL, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{benchmark}: {metric}")
    if frame.empty or not {"benchmark", "metric", "value"} <= set(frame.columns):
        return _empty(fig, ax, "no results")
    rows = frame[(frame["benchmark"] == benchmark) & (frame["metric"] == metric)]
    if rows.empty:
        return _empty(fig, ax, f"no values of {metric} on {benchmark}")
    colors = {**frame_colors(frame), **(colors or {})}
    records = rows.to_dict("records")
    drawn = 0
    for row in (r for r in records if _is_reference(r)):
        drawn += _reference_line(ax, row, colors.get(str(row["name"]), REFERENCE_COLOR))
    quantized = [r for r in records if not _is_reference(r) and str(r.get("kind", "variant")) == "variant"]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in quantized:
        if _finite(row.get("bits_value")) and _finite(row.get("value")):
            by_method.setdefault(str(row.get("method", "")), []).append(row)
    ticks: set[float] = set()
    methods = sorted(by_method)
    for index, method_name in enumerate(methods):
        points = sorted(by_method[method_name], key=lambda r: float(r["bits_value"]))
        shift = (index - (len(methods) - 1) / 2) * 0.12  # methods side by side at one bit width
        xs = [float(r["bits_value"]) for r in points]
        ys = [float(r["value"]) for r in points]
        ticks.update(xs)
        marker = _MARKERS[index % len(_MARKERS)]
        ax.plot(
            [x + shift for x in xs],
            ys,
            color=METHOD_LINE,
            linewidth=1.3,
            marker=marker,
            markersize=5,
            markerfacecolor="white",
            label=method_name,
            zorder=2,
        )
        for x, y, row in zip(xs, ys, points):
            low, high = _float(row.get("low")), _float(row.get("high"))
            err = [[max(0.0, y - low) if _finite(low) else 0.0], [max(0.0, high - y) if _finite(high) else 0.0]]
            color = colors.get(str(row["name"]), METHOD_LINE)
            ax.errorbar([x + shift], [y], yerr=err, fmt=marker, color=color, markersize=8, capsize=4, zorder=3)
            ax.annotate(
                str(row.get("short", row["name"])),
                (x + shift, y),
                textcoords="offset points",
                xytext=(7, 5),
                fontsize=8,
                color=color,
            )
        drawn += len(points)
    for row in (r for r in records if str(r.get("kind")) == "ensemble" and _finite(r.get("value"))):
        ax.axhline(
            float(row["value"]),
            color=colors.get(str(row["name"]), "#7b4173"),
            linestyle=":",
            linewidth=1.5,
            label=f"ensemble {row.get('short', row['name'])}",
        )
        drawn += 1
    if not drawn:
        return _empty(fig, ax, f"no finite values of {metric} on {benchmark}")
    if ticks:
        ax.set_xticks(sorted(ticks))
        ax.set_xticklabels([f"{t:g}" for t in sorted(ticks)])
        pad = max(0.5, (max(ticks) - min(ticks)) * 0.15)
        ax.set_xlim(min(ticks) - pad, max(ticks) + pad)
    ax.set_xlabel("bits")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def _reference_line(ax: Any, row: Mapping[str, Any], color: str) -> int:
    value = _float(row.get("value"))
    if not _finite(value):
        return 0
    ax.axhline(
        value, color=color, linestyle="--", linewidth=1.5, label=f"reference {row.get('short', row['name'])}", zorder=1
    )
    low, high = _float(row.get("low")), _float(row.get("high"))
    if _finite(low) and _finite(high) and high >= low:
        ax.axhspan(low, high, color=color, alpha=0.12, zorder=0)
    return 1


# -- perspectives ---------------------------------------------------------------------------------


def perspective_radar(scores: Mapping[str, Mapping[str, float]], colors: Mapping[str, str] | None = None) -> Figure:
    """A DecodingTrust-style radar: one spoke per perspective (0-100), one polygon per variant.

    ``colors`` maps names to colours (e.g. :func:`frame_colors`); names without one are hashed.
    A perspective a variant has no score for is drawn at 0 for it.
    """
    fig = Figure(figsize=(6.4, 6.4), layout="constrained")
    perspectives = sorted({p for table in scores.values() for p in table})
    names = [n for n, table in scores.items() if table]
    if not perspectives or not names:
        return _empty(fig, fig.add_subplot(), "no perspective scores")
    ax = fig.add_subplot(projection="polar")
    angles = np.linspace(0.0, 2 * np.pi, len(perspectives), endpoint=False)
    closed = np.append(angles, angles[:1])
    hashed = variant_colors([n for n in names if not colors or n not in colors])
    for name in names:
        values = np.array([_float(scores[name].get(p)) for p in perspectives], dtype=float)
        values = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 100.0)
        color = (colors or {}).get(name) or hashed[name]
        ax.plot(closed, np.append(values, values[:1]), color=color, linewidth=1.8, label=name, marker="o", markersize=4)
        ax.fill(closed, np.append(values, values[:1]), color=color, alpha=0.12)
    ax.set_xticks(angles)
    ax.set_xticklabels(perspectives, fontsize=9)
    ax.set_ylim(0, 100)
    ax.set_yticks([20, 40, 60, 80, 100])
    ax.set_yticklabels(["20", "40", "60", "80", "100"], fontsize=7, color="#666666")
    ax.set_title("trustworthiness by perspective (0-100)")
    ax.legend(loc="upper right", bbox_to_anchor=(1.15, 1.12), fontsize=8)
    return fig


# -- flips ----------------------------------------------------------------------------------------


def _draw_matrix(ax: Any, matrix: pd.DataFrame, title: str) -> None:
    ax.set_title(title, fontsize=10)
    if matrix is None or matrix.empty:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no items in common", ha="center", va="center", transform=ax.transAxes)
        return
    values = matrix.apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy(dtype=float)
    ax.imshow(values, cmap="Blues", vmin=0, vmax=max(1.0, float(values.max())), aspect="auto")
    top = values.max() if values.size else 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            count = values[i, j]
            ax.text(
                j,
                i,
                f"{count:g}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if top and count > top * 0.6 else "black",
                fontweight="bold" if i != j and count else "normal",
            )
    ax.set_xticks(range(values.shape[1]))
    ax.set_xticklabels([str(c) for c in matrix.columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(values.shape[0]))
    ax.set_yticklabels([str(r) for r in matrix.index], fontsize=8)
    ax.set_xlabel(str(matrix.columns.name or "variant"))
    ax.set_ylabel(str(matrix.index.name or "reference"))


def flip_matrix_figure(matrix: pd.DataFrame, title: str) -> Figure:
    """An annotated heatmap of one flip crosstab (rows: the reference's outcome, columns: the variant's)."""
    fig = Figure(figsize=(5.2, 4.4), layout="constrained")
    _draw_matrix(fig.add_subplot(), matrix, title)
    return fig


def flip_grid(matrices: Mapping[str, pd.DataFrame], title: str, columns: int = 3) -> Figure:
    """The flip matrices of several variants side by side (titled by the keys), under one ``title``."""
    if not matrices:
        fig = Figure(figsize=PANEL, layout="constrained")
        return _empty(fig, fig.add_subplot(), "no flips: no variant was compared with a reference")
    n = len(matrices)
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.6 * cols, 4.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, matrix) in zip(axes.flat, matrices.items()):
        _draw_matrix(ax, matrix, name)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    fig.suptitle(title)
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)  # Agg, whatever backend pyplot may have chosen: never a display
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


__all__ = ["figure_png", "flip_grid", "flip_matrix_figure", "frame_colors", "metric_vs_bits", "perspective_radar"]
