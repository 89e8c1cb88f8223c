"""The registry of benchmarks: the built-in definitions, plus user definition files.

Built-in definitions are the YAML files in ``trust/benchmarks/definitions/``; a sweep may also
name its own definition file. :data:`BENCHMARKS` maps every built-in name to its definition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trust.benchmarks.base import Benchmark
from trust.benchmarks.declarative import (
    DeclarativeBenchmark,
    DefinitionError,
    format_validation_error,
    validate_definition,
)
from trust.benchmarks.definition import BenchmarkDefinition
from trust.yaml_safe import YamlInputError, load_yaml_file

DEFINITIONS_DIR = Path(__file__).resolve().parent / "definitions"


class UnknownBenchmarkError(KeyError):
    """No benchmark is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would otherwise show the repr of its argument
        return str(self.args[0]) if self.args else ""


def load_definition_file(path: str | Path) -> BenchmarkDefinition:
    """Read and validate one definition file; raise :class:`DefinitionError` listing every problem."""
    path = Path(path).expanduser()
    where = f"benchmark definition {path}"
    if not path.is_file():
        raise DefinitionError(where, ["file not found"])
    try:
        data = load_yaml_file(path, where)
    except YamlInputError as err:
        raise DefinitionError(where, [err.problem]) from None
    if not isinstance(data, dict):
        raise DefinitionError(where, ["the file must hold a mapping (name, description, data, prompt, ...)"])
    try:
        definition = BenchmarkDefinition.model_validate(data)
    except ValidationError as err:
        raise DefinitionError(where, format_validation_error(err)) from None
    validate_definition(definition, where)
    return definition


#: The file of every built-in definition, by name.
BUILTIN_FILES: dict[str, Path] = {}


def _load_builtin() -> dict[str, BenchmarkDefinition]:
    found: dict[str, BenchmarkDefinition] = {}
    for path in sorted(DEFINITIONS_DIR.glob("*.yaml")):
        definition = load_definition_file(path)
        if definition.name in found:
            raise DefinitionError(str(path), [f"name {definition.name!r} is defined twice"])
        found[definition.name] = definition
        BUILTIN_FILES[definition.name] = path
    return found


#: Every built-in benchmark definition, by name (the one registry of benchmarks).
BENCHMARKS: dict[str, BenchmarkDefinition] = _load_builtin()


def definition_location(name: str, definition: str | Path | None = None) -> str:
    """How messages name a benchmark's definition: ``benchmark definition <file>``."""
    if definition is not None:
        return f"benchmark definition {Path(definition).expanduser()}"
    return f"benchmark definition {BUILTIN_FILES.get(name, name)}"


def available_benchmarks() -> list[str]:
    """Return the built-in benchmark names, sorted."""
    return sorted(BENCHMARKS)


def get_benchmark(name: str, options: dict[str, Any] | None = None, definition: str | Path | None = None) -> Benchmark:
    """The benchmark ``name`` (built-in), or the one in the ``definition`` file, with ``options``.

    Raises :class:`UnknownBenchmarkError` listing the available names when ``name`` is unknown,
    :class:`DefinitionError` for a broken definition file, pydantic's ``ValidationError`` for bad options.
    """
    if definition is not None:
        path = Path(definition).expanduser().resolve()
        return DeclarativeBenchmark(load_definition_file(path), options, definition_path=path)
    if name not in BENCHMARKS:
        raise UnknownBenchmarkError(
            f"Unknown benchmark {name!r}. Available benchmarks: {', '.join(available_benchmarks())}."
        )
    return DeclarativeBenchmark(BENCHMARKS[name], options)
