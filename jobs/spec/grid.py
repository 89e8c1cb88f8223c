"""Recipe grids: one recipe entry whose fields hold lists expands into every combination.

``{name: gptq, method: gptq, bits: [4, 3], group_size: [64, 32], calibration: {seed: [0, 1]}}``
becomes eight recipes named ``gptq-w4-g64-seed0`` … ``gptq-w3-g32-seed1``. Only the axes below
may be lists; the name gets one suffix per axis that has more than one value, so a grid of one
value per axis keeps its plain name. Expansion happens before validation, so every expanded recipe
is validated (and reported) on its own.
"""

from __future__ import annotations

import itertools
from typing import Any

#: (path in the recipe, name suffix for a value)
GRID_AXES: dict[tuple[str, ...], Any] = {
    ("bits",): lambda v: f"w{v}",
    ("group_size",): lambda v: "gch" if v is None else f"g{v}",
    ("symmetric",): lambda v: "sym" if v else "asym",
    ("bnb_type",): lambda v: str(v),
    ("calibration", "seed"): lambda v: f"seed{v}",
    ("calibration", "samples"): lambda v: f"n{v}",
    ("calibration", "seq_len"): lambda v: f"len{v}",
    ("calibration", "source"): lambda v: str(v).replace("benchmark:", "").rsplit("/", 1)[-1].split(".")[0],
}


def _get(entry: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = entry
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _set(entry: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = entry
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def expand_recipe(entry: Any) -> list[Any]:
    """The recipes one entry stands for (the entry itself when no axis is a list)."""
    if not isinstance(entry, dict):
        return [entry]
    axes = [(path, _get(entry, path)) for path in GRID_AXES]
    axes = [(path, values) for path, values in axes if isinstance(values, list)]
    if not axes:
        return [entry]
    if any(len(values) == 0 for _, values in axes):
        return [entry]  # let validation report the empty list
    out = []
    for combination in itertools.product(*(values for _, values in axes)):
        recipe = _deep_copy(entry)
        suffixes = []
        for (path, values), value in zip(axes, combination):
            _set(recipe, path, value)
            if len(values) > 1:
                suffixes.append(GRID_AXES[path](value))
        if isinstance(recipe.get("name"), str) and suffixes:
            recipe["name"] = "-".join([recipe["name"], *suffixes])
        out.append(recipe)
    return out


def expand_recipe_grids(data: Any) -> Any:
    """``data`` with every grid entry of ``recipes`` expanded in place order (other fields untouched)."""
    if not isinstance(data, dict) or not isinstance(data.get("recipes"), list):
        return data
    expanded = [recipe for entry in data["recipes"] for recipe in expand_recipe(entry)]
    return {**data, "recipes": expanded}


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
