"""How a variant's weights are loaded, per method: the contract of the method table's loaders.

A method's ``transformers`` loader gets a :class:`LoadRequest` and a :class:`TransformersLoader`
(the Hugging Face engine, supplied by the layer above) and returns ``(engine, report)``; its
``vllm`` loader returns :class:`VLLMWeights`, the folder vLLM should load. This module holds the
contract and the loaders of ``none``; the cached methods' (rtn, gptq, awq) are in
:mod:`cluster.quantization.build`, the others in their method's module. Light: torch and transformers are imported by the functions that use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cluster.quantization.recipes import QuantRecipe


@dataclass(frozen=True)
class LoadRequest:
    """What to load: a folder (the model's own, a built checkpoint or a prequantized one) and how."""

    path: Path
    recipe: QuantRecipe
    dtype: str = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False
    built: Mapping[str, Any] | None = None
    """Cached methods: the cache entry's report (its ``storage`` says whether ``path`` is packed)."""
    prequantized_path: Path | None = None
    """Prequantized: the checkpoint folder when it is not the model's own source."""


class TransformersLoader(Protocol):
    """The Hugging Face engine, as the method loaders see it (implemented in ``cluster.variants``)."""

    def from_pretrained(self, path: Path, model_kwargs: dict[str, Any] | None = None) -> Any:
        """Load tokenizer and model from ``path`` (``model_kwargs`` go to ``from_pretrained``) as an engine."""
        ...

    def wrap(self, model: Any, tokenizer: Any, device: str) -> Any:
        """An engine over a model the method loaded itself."""
        ...


@dataclass
class VLLMWeights:
    """The folder vLLM loads for a variant, and what to record about it."""

    path: Path
    report: dict[str, Any] = field(default_factory=dict)
    packed: bool = False
    """A packed compressed-tensors folder: native kernels where they run, else a dense copy."""
    native_format: str | None = None
    """A ``quant_method`` only vLLM's native kernels run (AWQ/GPTQ checkpoints): refused without them."""


def folder_size_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# ------------------------------------------------------------------------------- none


def load_plain(request: LoadRequest, hf: TransformersLoader) -> tuple[Any, dict[str, Any]]:
    """``none``: the checkpoint as it is."""
    return hf.from_pretrained(request.path), {"size_bytes": folder_size_bytes(request.path)}


def plain_vllm_weights(request: LoadRequest) -> VLLMWeights:
    """``none``: vLLM loads the checkpoint folder as it is."""
    return VLLMWeights(request.path, {"size_bytes": folder_size_bytes(request.path)})
