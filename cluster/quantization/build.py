"""Build the checkpoint of a cached variant (rtn, gptq, awq) into a folder.

Runs where the variant runs (its worker, or a Ray task with the worker's resources from
``qtrust quantize``), on the GPU when the worker has one; the variant cache calls it at most once
per key.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from cluster.quantization.recipes import QuantRecipe
from cluster.quantization.rtn import apply_rtn
from cluster.quantization.targets import plan_targets

log = logging.getLogger(__name__)


def build_checkpoint(
    model_path: Path,
    recipe: QuantRecipe,
    out_dir: Path,
    *,
    calibration_texts: list[str] | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Quantize the model at ``model_path`` with ``recipe`` and save it (with its tokenizer) in ``out_dir``.

    qtrust's RTN writes dense dequantized weights ("simulated"); GPTQ, AWQ and packed RTN go
    through llm-compressor (packed compressed-tensors at 4/8 bits, dense dequantized otherwise).
    Returns the report fields kept in the cache entry.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster.models.dtype import parse_dtype

    if not recipe.is_cached:
        raise ValueError(f"method {recipe.method!r} is not built into the variant cache")
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_path), dtype=parse_dtype(dtype), trust_remote_code=trust_remote_code
    )
    model.to(device)
    model.eval()
    plan = plan_targets(model, recipe)
    loaded_s = time.perf_counter() - started
    report: dict[str, Any] = {"device": device, "dtype": dtype}
    if recipe.method == "rtn" and recipe.resolved_storage == "simulated":
        quantize_started = time.perf_counter()
        rtn = apply_rtn(model, plan, recipe.symmetric)
        quantize_s = time.perf_counter() - quantize_started
        model.to("cpu")
        model.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
        report.update(plan.describe())
        report.update(
            {
                "storage": "simulated",
                "backend": "qtrust rtn",
                "quantize_s": f"{quantize_s:.3f}",
                "calibration_samples": "0",
                "mean_relative_error": f"{rtn.mean_relative_error:.6g}",
            }
        )
    else:
        from cluster.quantization.llmc import quantize_with_llmcompressor

        report.update(quantize_with_llmcompressor(model, tokenizer, recipe, plan, calibration_texts, out_dir))
    report["load_base_s"] = f"{loaded_s:.3f}"
    report["build_s"] = f"{time.perf_counter() - started:.3f}"
    log.info("built %s in %s s (%s)", recipe.label, report["build_s"], report.get("storage"))
    return report


def folder_size_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
