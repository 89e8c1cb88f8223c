"""Metric functions for specific benchmark families; each module registers with ``@metric``.

Every module in this package is imported when :mod:`trust.metrics.functions` loads.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
