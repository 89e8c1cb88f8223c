"""Weight quantization recipes and the methods that apply them to a loaded model.

Only the recipe schema is imported eagerly: validating a sweep, and workers of the fake engine,
must not pay for importing torch. The methods load lazily.
"""

from __future__ import annotations

from typing import Any

from cluster.quantization.recipes import QuantRecipe

__all__ = ["QuantRecipe", "RtnReport", "quantize_model_rtn"]


def __getattr__(name: str) -> Any:
    if name in ("RtnReport", "quantize_model_rtn"):
        from cluster.quantization import rtn

        return getattr(rtn, name)
    raise AttributeError(f"module 'cluster.quantization' has no attribute {name!r}")
