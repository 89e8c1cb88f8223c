"""The inference engines qtrust runs: one table, ``name -> EngineKind``.

Each entry names its loader as a ``"module:function"`` string, imported only when an engine of
that kind is built (so choosing or validating an engine never imports torch or vLLM):

* ``hf``: Hugging Face transformers, ``loader(path, *, dtype, device, trust_remote_code,
  num_threads, model_kwargs)`` -> engine over a checkpoint folder.
* ``vllm``: vLLM, ``loader(path, *, dtype, device, trust_remote_code, settings, num_gpus,
  num_threads)`` -> engine over a checkpoint folder (dense, or a format vLLM reads).
* ``fake``: deterministic, model-free answers for tests; ``loader(config)`` from the worker config.

Engines that need weights get them from the variant loaders (:mod:`cluster.variants.load`),
which ask the quantization method table how to build and load them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from cluster.quantization.methods import resolve


@dataclass(frozen=True)
class EngineKind:
    """One engine: how to load it, and what it needs installed."""

    name: str
    summary: str
    loader: str
    """``"module:function"`` that loads an engine of this kind (see the module docstring)."""
    needs_weights: bool = True
    """False for engines built from the worker config alone (``fake``)."""
    package: str | None = None
    """Import name that must be installed (checked without importing it)."""

    def installed(self) -> bool:
        """Whether the engine's package can be imported here (True when it needs none)."""
        return self.package is None or importlib.util.find_spec(self.package) is not None

    def load(self, *args: Any, **kwargs: Any) -> Any:
        """Import the loader and call it."""
        return resolve(self.loader)(*args, **kwargs)


#: Every engine, in the order sweeps list them.
ENGINE_KINDS: dict[str, EngineKind] = {
    kind.name: kind
    for kind in (
        EngineKind("hf", "Hugging Face transformers", "cluster.engines.hf:HFEngine.from_pretrained"),
        EngineKind("vllm", "vLLM", "cluster.engines.vllm_engine:VLLMEngine.load", package="vllm"),
        EngineKind("fake", "model-free test engine", "cluster.engines.fake:fake_engine", needs_weights=False),
    )
}


def engine_kind(name: str) -> EngineKind:
    """The table entry of engine ``name``.

    Raises:
        ValueError: an unknown engine (the message lists the known ones).
    """
    try:
        return ENGINE_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; available: {', '.join(ENGINE_KINDS)}") from None
