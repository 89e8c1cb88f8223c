"""Load one model variant: a checkpoint plus a quantization recipe, ready as an engine."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cluster.engines.hf import HFEngine
from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.rtn import quantize_model_rtn

log = logging.getLogger(__name__)


def load_variant(
    model_path: Path,
    recipe: QuantRecipe,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    num_threads: int | None = None,
) -> HFEngine:
    """Load the model at ``model_path`` with transformers, apply ``recipe`` and wrap it in an engine.

    RTN is applied on the loaded weights (before moving to ``device``). The engine's
    ``describe()`` carries the recipe (``recipe_*`` keys) and, for RTN, the report (``rtn_*``).
    """
    started = time.perf_counter()
    engine = HFEngine.from_pretrained(
        model_path, dtype=dtype, device="cpu", trust_remote_code=trust_remote_code, num_threads=num_threads
    )
    extra = {f"recipe_{key}": value for key, value in recipe.describe().items()}
    if recipe.method == "rtn":
        assert recipe.bits is not None  # guaranteed by QuantRecipe validation
        report = quantize_model_rtn(engine.model, recipe.bits, recipe.group_size, recipe.symmetric)
        extra.update(report.describe())
        engine.rtn_report = report
    elif recipe.method != "none":
        raise NotImplementedError(f"quantization method {recipe.method!r} is not supported yet")
    if device != "cpu":
        engine.model.to(device)
        import torch

        engine.device = torch.device(device)
    extra["load_s"] = f"{time.perf_counter() - started:.2f}"
    engine.extra_description.update(extra)
    log.info("loaded variant %s from %s in %s s", recipe.label, model_path, extra["load_s"])
    return engine
