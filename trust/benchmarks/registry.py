"""The registry of benchmarks by name."""

from __future__ import annotations

from typing import Any

from trust.benchmarks.base import Benchmark
from trust.benchmarks.machine_ethics import MachineEthicsCommonsense
from trust.benchmarks.xstest import XSTest

#: Every benchmark class, by its ``name``.
BENCHMARKS: dict[str, type[Benchmark]] = {cls.name: cls for cls in (MachineEthicsCommonsense, XSTest)}


class UnknownBenchmarkError(KeyError):
    """No benchmark is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would otherwise show the repr of its argument
        return str(self.args[0]) if self.args else ""


def available_benchmarks() -> list[str]:
    """Return the registered benchmark names, sorted."""
    return sorted(BENCHMARKS)


def get_benchmark(name: str, options: dict[str, Any] | None = None) -> Benchmark:
    """Instantiate the benchmark ``name`` with ``options`` (validated by its ``Options`` model).

    Raises :class:`UnknownBenchmarkError` listing the available names when ``name`` is unknown.
    """
    try:
        cls = BENCHMARKS[name]
    except KeyError:
        raise UnknownBenchmarkError(
            f"Unknown benchmark {name!r}. Available benchmarks: {', '.join(available_benchmarks())}."
        ) from None
    return cls(options)
