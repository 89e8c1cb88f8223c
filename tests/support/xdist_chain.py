"""How ``make test`` shares two cores: every test module is a unit of work, the heavy ones one chain.

pytest-xdist's ``--dist loadfile`` sends each test module whole to one worker, so a module's
fixtures (a Ray, a built variant, a running server) are made once. :class:`ChainScheduling` keeps
that and adds one rule: the modules named in ``tests/conftest.py``'s ``SERIAL_MODULES`` (quantizing
the built-in model, vLLM, a machine-wide Ray) form **one** unit, so they run one after another on
one worker while the other worker takes every other module. Units are handed out in collection
order (the chain first, then the longest modules), not re-sorted by how many tests they hold.

Without xdist (``pytest`` alone, ``-n 0``) nothing here is used: the tests run in collection order.
"""

from __future__ import annotations

from collections.abc import Collection

import pytest
from xdist.scheduler import LoadFileScheduling

#: The scope name of the chained modules.
CHAIN = "serial-chain"


class ChainScheduling(LoadFileScheduling):
    """``loadfile`` scheduling where the ``chained`` modules are one unit of work."""

    def __init__(self, config: pytest.Config, log: object | None, chained: Collection[str]) -> None:
        super().__init__(config, log)  # type: ignore[arg-type]
        self._chained = frozenset(chained)

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return CHAIN if module in self._chained else module


def make_scheduler(config: pytest.Config, log: object | None, chained: Collection[str]) -> ChainScheduling | None:
    """The scheduler for ``--dist loadfile`` (None: leave any other mode to xdist)."""
    if getattr(config.option, "dist", None) != "loadfile":
        return None
    # Hand units out in the order tests/conftest.py sorted them, not by their number of tests.
    config.option.loadscopereorder = False
    return ChainScheduling(config, log, chained)
