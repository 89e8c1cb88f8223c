"""Benchmarks: the :class:`Benchmark` interface and the registry of implementations."""

from trust.benchmarks.base import Benchmark, limit_items
from trust.benchmarks.registry import BENCHMARKS, UnknownBenchmarkError, available_benchmarks, get_benchmark

__all__ = ["BENCHMARKS", "Benchmark", "UnknownBenchmarkError", "available_benchmarks", "get_benchmark", "limit_items"]
