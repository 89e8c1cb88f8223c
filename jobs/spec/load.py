"""Reading a sweep file: YAML in, a validated :class:`~jobs.spec.schema.SweepSpec` out, or a
:class:`~jobs.spec.schema.SpecError` holding one human-readable line per problem, each naming the field
path and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from jobs.spec.checks import cross_check
from jobs.spec.grid import expand_recipe_grids
from jobs.spec.schema import SpecError, SweepSpec, pydantic_problems
from trust.yaml_safe import YamlInputError, load_yaml_file


def parse_spec(data: Any, source: str = "<sweep>") -> SweepSpec:
    """Validate an already-parsed YAML document."""
    if not isinstance(data, dict):
        raise SpecError(source, ["the file must hold a mapping with at least 'name', 'models' and 'benchmarks'"])
    data = expand_recipe_grids(data)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(source, pydantic_problems(err)) from None
    problems = cross_check(spec)
    if problems:
        raise SpecError(source, problems)
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; raise :class:`SpecError` listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), ["file not found; pass the path of a sweep YAML file (see examples/demo.yaml)"])
    try:
        data = load_yaml_file(path)
    except YamlInputError as err:
        raise SpecError(err.where, [err.problem]) from None
    _resolve_definition_paths(data, path.parent)
    return parse_spec(data, str(path))


def _resolve_definition_paths(data: Any, base: Path) -> None:
    """Make relative file paths (benchmark definitions, calibration texts) relative to the sweep file."""
    if not isinstance(data, dict):
        return
    for recipe in data.get("recipes") or []:
        calibration = recipe.get("calibration") if isinstance(recipe, dict) else None
        source = calibration.get("source") if isinstance(calibration, dict) else None
        if isinstance(source, str) and source != "builtin" and not source.startswith("benchmark:"):
            candidate = Path(source).expanduser()
            if not candidate.is_absolute():
                calibration["source"] = str((base / candidate).resolve())
    if not isinstance(data.get("benchmarks"), list):
        return
    for bench in data["benchmarks"]:
        if isinstance(bench, dict) and isinstance(bench.get("definition"), str):
            candidate = Path(bench["definition"]).expanduser()
            if not candidate.is_absolute():
                bench["definition"] = str((base / candidate).resolve())


def dump_spec(spec: SweepSpec) -> str:
    """The resolved spec as YAML (every default written out)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
