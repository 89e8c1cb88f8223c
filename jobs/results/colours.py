"""One colour per variant, the same in the MLflow UI (the ``mlflow.runColor`` tag) and in plots.

A variant's colour comes from its short name (``w4``, ``gptq-w3``: the recipe, without the model
prefix) through a stable hash into a palette of distinct colours, so ``w4`` has the same colour on
every benchmark and in every sweep. The reference is always the same dark grey, precision ensembles
take their colours from a purple family the variants never use, and the sweep's parent run is
near-black. When two names of one call hash to the same colour, the later one (in sorted order)
takes the next free colour of its palette, so the colours of one sweep stay distinct while there are
colours left.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache

#: The tag the MLflow UI reads a run's colour from (a CSS hex colour).
RUN_COLOR_TAG = "mlflow.runColor"
#: The reference (unquantized) variant, in every sweep and plot.
REFERENCE_COLOR = "#555555"
#: The sweep's parent run.
PARENT_COLOR = "#111111"

# tab20 slots kept for variants: no purple (8, 9) or pink (12, 13), which ensembles use, and no
# grey (14, 15), which could be mistaken for the reference. Dark shades first.
_VARIANT_SLOTS = (0, 2, 4, 6, 10, 16, 18, 1, 3, 5, 7, 11, 17, 19)
# Ensembles: tab20's purples and pinks, then tab20b's purple-magenta group.
_ENSEMBLE_TAB20 = (8, 12, 9, 13)
_ENSEMBLE_TAB20B = (16, 17, 18, 19)


def _hex(rgb: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(channel * 255):02x}" for channel in rgb[:3])


@lru_cache(maxsize=1)
def _palettes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(variant palette, ensemble palette) as hex colours, read from matplotlib's qualitative maps."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    tab20b = colormaps["tab20b"].colors
    variants = tuple(_hex(tab20[i]) for i in _VARIANT_SLOTS)
    ensembles = tuple(_hex(tab20[i]) for i in _ENSEMBLE_TAB20) + tuple(_hex(tab20b[i]) for i in _ENSEMBLE_TAB20B)
    return variants, ensembles


def variant_palette() -> tuple[str, ...]:
    """The colours variants are drawn from."""
    return _palettes()[0]


def ensemble_palette() -> tuple[str, ...]:
    """The colours precision ensembles are drawn from (a family no variant uses)."""
    return _palettes()[1]


def _slot(name: str, size: int) -> int:
    """A stable position in a palette of ``size`` colours (the same in every process and Python version)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % size


def variant_color(short: str, *, reference: bool = False, ensemble: bool = False) -> str:
    """The colour of one variant by its short name, ignoring the other variants of its sweep."""
    if reference:
        return REFERENCE_COLOR
    palette = ensemble_palette() if ensemble else variant_palette()
    return palette[_slot(short, len(palette))]


def variant_colors(
    names: Iterable[str],
    *,
    references: Iterable[str] = (),
    ensembles: Iterable[str] = (),
) -> dict[str, str]:
    """Name -> CSS hex colour for every name (duplicates allowed; see the module docstring).

    ``references`` are names drawn in :data:`REFERENCE_COLOR`; ``ensembles`` names drawn from
    :func:`ensemble_palette`; every other name is a variant. Pass short names (the recipe's) for
    colours that match across sweeps of different models.
    """
    wanted = list(dict.fromkeys(str(n) for n in names))
    refs = {str(n) for n in references}
    ens = {str(n) for n in ensembles}
    colors: dict[str, str] = {name: REFERENCE_COLOR for name in wanted if name in refs}
    for group, palette in ((ens, ensemble_palette()), (None, variant_palette())):
        members = sorted(n for n in wanted if n not in refs and ((n in ens) if group is not None else (n not in ens)))
        taken: set[int] = set()
        for name in members:
            slot = _slot(name, len(palette))
            if len(taken) < len(palette):
                while slot in taken:
                    slot = (slot + 1) % len(palette)
            taken.add(slot)
            colors[name] = palette[slot]
    return {name: colors[name] for name in wanted}


__all__ = [
    "PARENT_COLOR",
    "REFERENCE_COLOR",
    "RUN_COLOR_TAG",
    "ensemble_palette",
    "variant_color",
    "variant_colors",
    "variant_palette",
]
