"""Whether the library a quantization method needs is installed here (checked at validation)."""

from __future__ import annotations

import importlib.util

from cluster.quantization.methods import resolve
from cluster.quantization.recipes import QuantRecipe

INSTALL_HINT = "pip install 'qtrust[quant]'"


def method_problem(recipe: QuantRecipe) -> str | None:
    """A message when ``recipe.method`` cannot run on this machine, else None.

    The packages come from the method table (``rtn`` needs llm-compressor only for packed
    storage); a method with a ``backend_check`` (``bnb``: a bitsandbytes backend for this
    machine's device) runs it once its package is installed.
    """
    method = recipe.quant_method
    for package in method.packages_for(recipe):
        if importlib.util.find_spec(package) is None:
            return (
                f"method {recipe.method} needs the package {package!r}, which is not installed; "
                f"{method.missing_hint}: {INSTALL_HINT}"
            )
    if method.backend_check is not None:
        return resolve(method.backend_check)()
    return None
