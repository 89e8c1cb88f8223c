"""Every metric function a benchmark definition can name: the built-ins and every pack, registered.

Import :data:`METRICS` from here (not from :mod:`trust.metrics.registry`) wherever a lookup must
see all of them: importing this module imports :mod:`trust.metrics.functions` and each module of
:mod:`trust.metrics.packs`, whose ``@metric`` decorators fill the registry.
"""

from __future__ import annotations

from trust.metrics import functions as _functions  # noqa: F401  (registers the built-in functions)
from trust.metrics import packs as _packs  # noqa: F401  (registers every pack's functions)
from trust.metrics.registry import METRICS, MetricInfo

__all__ = ["METRICS", "MetricInfo"]
