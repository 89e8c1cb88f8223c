"""Benchmarks: declarative definitions (YAML) loaded into :class:`DeclarativeBenchmark` objects."""

from trust.benchmarks.base import Benchmark, limit_items
from trust.benchmarks.catalog import (
    BENCHMARKS,
    UnknownBenchmarkError,
    available_benchmarks,
    get_benchmark,
    load_definition_file,
)

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "UnknownBenchmarkError",
    "available_benchmarks",
    "get_benchmark",
    "limit_items",
    "load_definition_file",
]
