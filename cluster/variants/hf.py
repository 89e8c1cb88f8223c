"""Load one model variant into the Hugging Face transformers engine.

The method table (:mod:`cluster.quantization.methods`) says how: its ``transformers`` loader gets
the load request (the built cache folder for rtn/gptq/awq, else the model's folder) and this
module's :class:`HFLoader`, and returns the engine and its quantization report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.engines.hf import HFEngine
from cluster.engines.hf_settings import HFSettings
from cluster.engines.kinds import engine_kind
from cluster.quantization.digest import model_digest
from cluster.quantization.methods import resolve
from cluster.quantization.recipes import QuantRecipe
from cluster.variants.source import VariantSource, load_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HFLoader:
    """The :class:`~cluster.quantization.loading.TransformersLoader` the method loaders use."""

    dtype: str
    device: str
    trust_remote_code: bool
    num_threads: int | None

    def from_pretrained(self, path: Path, model_kwargs: dict[str, Any] | None = None) -> HFEngine:
        """Load tokenizer and model from ``path`` as an :class:`HFEngine` (the engine table's loader)."""
        return engine_kind("hf").load(
            path,
            dtype=self.dtype,
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            num_threads=self.num_threads,
            model_kwargs=model_kwargs,
        )

    def wrap(self, model: Any, tokenizer: Any, device: str) -> HFEngine:
        """An :class:`HFEngine` over a model the method loaded itself."""
        return HFEngine(model, tokenizer, device=device, num_threads=self.num_threads)


def loaded_digests(recipe: QuantRecipe, model: Any) -> dict[str, str]:
    """``loaded_sha256``: the digest of the weights this replica holds in memory; for load-time
    methods (bnb, hqq: nothing is written) it is also the variant's ``weights_sha256``."""
    try:
        digest = model_digest(model)
    except Exception as err:  # a state this digest does not know must not stop the replica
        log.warning("no weights digest for %s: %s", recipe.label, err)
        return {}
    fields = {"loaded_sha256": digest}
    if recipe.quant_method.kind == "load-time":
        fields["weights_sha256"] = digest
    return fields


def load_hf_variant(
    source: VariantSource,
    *,
    dtype: str,
    device: str,
    trust_remote_code: bool,
    num_threads: int | None,
    settings: HFSettings | dict[str, Any] | None = None,
    num_gpus: float = 0.0,
) -> tuple[HFEngine, dict[str, Any]]:
    """The variant as an :class:`HFEngine` (configured with ``settings``), and its quantization report.

    ``num_gpus`` is not used: transformers runs on the ``device`` it is given.
    """
    recipe = source.recipe
    report: dict[str, Any] = {"method": recipe.method, "storage": recipe.resolved_storage}
    request = load_request(source, report, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    loader = resolve(recipe.quant_method.transformers)
    engine, details = loader(request, HFLoader(dtype, device, trust_remote_code, num_threads))
    report.update(details)
    report.update(loaded_digests(recipe, engine.model))
    engine.configure(settings if isinstance(settings, HFSettings) else HFSettings.model_validate(settings or {}))
    return engine, report
