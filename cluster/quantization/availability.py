"""Whether the library a quantization method needs is installed here (checked at validation)."""

from __future__ import annotations

import importlib.util

from cluster.quantization.recipes import QuantRecipe

INSTALL_HINT = "pip install 'qtrust[quant]'"

_PACKAGES = {"gptq": "llmcompressor", "awq": "llmcompressor", "hqq": "hqq", "bnb": "bitsandbytes"}


def method_problem(recipe: QuantRecipe) -> str | None:
    """A message when ``recipe.method`` cannot run on this machine, else None.

    ``rtn`` needs llm-compressor only for packed storage; ``bnb`` also needs a bitsandbytes
    backend for this machine's device.
    """
    package = _PACKAGES.get(recipe.method)
    if recipe.method == "rtn" and recipe.resolved_storage == "packed":
        package = "llmcompressor"
    if package is None:
        return None
    if importlib.util.find_spec(package) is None:
        alternative = (
            "use method rtn, or install it" if recipe.method != "rtn" else "use storage: simulated, or install it"
        )
        return f"method {recipe.method} needs the package {package!r}, which is not installed; {alternative}: {INSTALL_HINT}"
    if recipe.method == "bnb":
        from cluster.quantization.loadtime import check_bnb_available

        return check_bnb_available()
    return None
