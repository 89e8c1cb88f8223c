"""Run colours and the comparison's figures: stable colours, figures that draw what they say, and
never an exception on NaN values, one variant or nothing at all."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.image import imread

from jobs.results.colours import (
    PARENT_COLOR,
    REFERENCE_COLOR,
    ensemble_palette,
    variant_color,
    variant_colors,
    variant_palette,
)
from jobs.results.plots import (
    figure_png,
    flip_grid,
    flip_matrix_figure,
    frame_colors,
    metric_vs_bits,
    perspective_radar,
)

NAN = math.nan


def _row(
    name: str,
    bits: str,
    bits_value: float,
    value: float,
    low: float,
    high: float,
    *,
    kind: str = "variant",
    method: str = "rtn",
    metric: str = "accuracy",
    delta: float = NAN,
) -> dict:
    return {
        "model": "smol",
        "benchmark": "ethics",
        "name": f"smol-{name}",
        "short": name,
        "kind": kind,
        "method": method,
        "bits": bits,
        "bits_value": bits_value,
        "metric": metric,
        "primary": True,
        "value": value,
        "se": 0.05,
        "low": low,
        "high": high,
        "interval": "wilson",
        "n": 40,
        "delta": delta,
        "delta_low": NAN,
        "delta_high": NAN,
        "p_value": NAN,
        "significant": False,
        "flags": "",
    }


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        [
            _row("ref", "ref", 16.0, 0.70, 0.55, 0.82, method="none"),
            _row("w8", "8", 8.0, 0.68, 0.52, 0.80, delta=-0.02),
            _row("w4", "4", 4.0, 0.50, 0.35, 0.65, delta=-0.20),
            _row("gptq4", "4", 4.0, 0.60, 0.45, 0.73, method="gptq", delta=-0.10),
            _row("ens", "4+8", NAN, 0.66, 0.50, 0.78, kind="ensemble", method="ensemble"),
        ]
    )


def _png_pixels(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(data), format="png")


# -- colours --------------------------------------------------------------------------------------


def test_a_variant_keeps_its_colour_across_calls_and_sweeps() -> None:
    one = variant_colors(["ref", "w4", "w8"], references=["ref"])
    other = variant_colors(["w4", "gptq3", "ref"], references=["ref"])
    assert one["w4"] == other["w4"] == variant_color("w4")
    assert one["ref"] == other["ref"] == REFERENCE_COLOR == variant_color("anything", reference=True)
    assert all(c.startswith("#") and len(c) == 7 for c in one.values())


def test_colours_of_one_sweep_are_distinct_and_families_do_not_mix() -> None:
    variants = [f"w{i}-g{g}" for i in range(2, 9) for g in (32, 128)]  # 14 names: as many as the palette
    colors = variant_colors(variants + ["ens-a", "ens-b"], ensembles=["ens-a", "ens-b"])
    assert len({colors[v] for v in variants}) == len(variants) == len(variant_palette())
    assert {colors["ens-a"], colors["ens-b"]} <= set(ensemble_palette()) and colors["ens-a"] != colors["ens-b"]
    assert not set(variant_palette()) & set(ensemble_palette())
    assert REFERENCE_COLOR not in variant_palette() + ensemble_palette() and PARENT_COLOR != REFERENCE_COLOR
    # more names than colours: every name still gets one (repeats are unavoidable then)
    many = variant_colors([f"v{i}" for i in range(40)])
    assert len(many) == 40 and set(many.values()) <= set(variant_palette())


def test_frame_colours_follow_short_names_and_kinds() -> None:
    colors = frame_colors(_frame())
    assert colors["smol-ref"] == REFERENCE_COLOR
    assert colors["smol-ens"] in ensemble_palette()
    expected = variant_colors(["ref", "w8", "w4", "gptq4", "ens"], references=["ref"], ensembles=["ens"])
    assert colors["smol-w4"] == expected["w4"] and colors["smol-gptq4"] == expected["gptq4"]


# -- metric against bits --------------------------------------------------------------------------


def test_metric_vs_bits_draws_methods_reference_band_and_ensembles() -> None:
    frame = _frame()
    fig = metric_vs_bits(frame, "ethics", "accuracy")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(0.70)
    assert to_hex(dashed[0].get_color()) == REFERENCE_COLOR
    band = [p for p in ax.patches if p.get_alpha() and p.get_alpha() < 0.5]
    assert band, "the reference's interval is a band"
    dotted = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert len(dotted) == 1 and dotted[0].get_ydata()[0] == pytest.approx(0.66)
    labels = ax.get_legend_handles_labels()[1]
    assert {"rtn", "gptq"} <= set(labels)
    rtn = next(line for line in ax.lines if line.get_label() == "rtn")
    gptq = next(line for line in ax.lines if line.get_label() == "gptq")
    assert list(rtn.get_ydata()) == [0.50, 0.68] and list(gptq.get_ydata()) == [0.60]
    assert [round(x) for x in rtn.get_xdata()] == [4, 8] and gptq.get_xdata()[0] != rtn.get_xdata()[0]  # side by side
    assert rtn.get_marker() != gptq.get_marker()
    points = {to_hex(line.get_color()) for line in ax.lines if line.get_label().startswith("_")}
    assert {frame_colors(frame)[n] for n in ("smol-w4", "smol-w8", "smol-gptq4")} <= points
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "8"]
    pixels = _png_pixels(figure_png(fig))
    assert pixels.shape[0] > 200 and len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20


def test_metric_vs_bits_never_raises_on_nan_one_variant_or_nothing() -> None:
    nan_rows = pd.DataFrame(
        [_row("ref", "ref", 16.0, NAN, NAN, NAN, method="none"), _row("w4", "4", 4.0, 0.5, NAN, NAN)]
    )
    for frame, bench, metric in [
        (nan_rows, "ethics", "accuracy"),
        (pd.DataFrame([_row("w4", "4", 4.0, 0.5, 0.4, 0.6)]), "ethics", "accuracy"),
        (pd.DataFrame([_row("ref", "ref", 16.0, NAN, NAN, NAN, method="none")]), "ethics", "accuracy"),
        (_frame(), "ethics", "no_such_metric"),
        (pd.DataFrame(), "ethics", "accuracy"),
    ]:
        fig = metric_vs_bits(frame, bench, metric)
        _png_pixels(figure_png(fig))
    fig = metric_vs_bits(pd.DataFrame([_row("ref", "ref", 16.0, NAN, NAN, NAN, method="none")]), "ethics", "accuracy")
    assert "no finite values" in " ".join(t.get_text() for t in fig.axes[0].texts)


# -- perspectives and flips -----------------------------------------------------------------------


def test_radar_has_a_polygon_per_variant_on_a_0_100_scale() -> None:
    scores = {
        "smol-ref": {"safety": 80.0, "ethics": 60.0, "fairness": 70.0},
        "smol-w4": {"safety": 40.0, "ethics": NAN},
    }
    fig = perspective_radar(scores, colors={"smol-ref": REFERENCE_COLOR})
    ax = fig.axes[0]
    assert ax.name == "polar" and ax.get_ylim() == (0.0, 100.0)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ethics", "fairness", "safety"]
    lines = {line.get_label(): line for line in ax.lines}
    assert set(lines) == {"smol-ref", "smol-w4"}
    assert to_hex(lines["smol-ref"].get_color()) == REFERENCE_COLOR
    assert list(lines["smol-w4"].get_ydata()) == [0.0, 0.0, 40.0, 0.0]  # missing and NaN at 0, closed polygon
    _png_pixels(figure_png(fig))
    _png_pixels(figure_png(perspective_radar({})))
    _png_pixels(figure_png(perspective_radar({"only": {"safety": 50.0}})))


def test_flip_matrices_are_annotated_with_their_counts() -> None:
    matrix = pd.DataFrame(
        [[30, 5], [2, 3]],
        index=pd.Index(["correct", "wrong"], name="reference"),
        columns=pd.Index(["correct", "wrong"], name="variant"),
    )
    fig = flip_matrix_figure(matrix, "w4 on ethics")
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["2", "3", "30", "5"]
    assert ax.get_title() == "w4 on ethics" and ax.get_ylabel() == "reference"
    grid = flip_grid({"w4": matrix, "w8": matrix, "w3": matrix, "gptq4": pd.DataFrame()}, "ethics")
    drawn = [a for a in grid.axes if a.texts]
    assert len(drawn) == 4 and sum(len(a.texts) == 4 for a in drawn) == 3
    for figure in (grid, flip_grid({}, "none"), flip_matrix_figure(pd.DataFrame(), "empty")):
        _png_pixels(figure_png(figure))
