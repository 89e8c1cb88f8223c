"""The ``model`` judge kind: an LLM held by a pool of Ray actors, reading a judge template.

Its workers are plain :class:`cluster.variants.worker.VariantWorker` s over the judge model (any
model source qtrust loads, on the hf or vllm engine); its requests are the rendered judge prompts.
It alone scores labels by log-likelihood (``decoding: choose``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.judges.kind_base import JudgeKind, JudgeSettings, Problem
from trust.judges.templates import JudgeTemplate


class ModelKind(JudgeKind):
    """A judge model loaded by qtrust (``model``, ``revision``, ``dtype``, ``engine``)."""

    name = "model"
    worker = "cluster.variants.worker:VariantWorker"
    description = "an LLM held by a pool of Ray actors (any model source qtrust loads; hf or vllm)"
    needs_template = True
    default_num_cpus = 1.0
    scores_labels = True

    def worker_config(self, judge: JudgeSettings, num_gpus: float) -> dict[str, Any]:
        from cluster.engines.vllm_settings import VLLMSettings
        from cluster.quantization.recipes import QuantRecipe

        source = judge.model or ""
        if Path(source).expanduser().is_dir():
            source = str(Path(source).expanduser().resolve())
        return {
            "variant": f"judge-{judge.name}",
            "source": source,
            "revision": judge.revision,
            "dtype": judge.dtype,
            "trust_remote_code": False,
            "engine": judge.engine,
            "engine_options": {},
            "vllm": VLLMSettings().model_dump(),
            "recipe": QuantRecipe().model_dump(),
            "variant_key": None,
            "calibration_texts": None,
            "variant_cache": None,
            "quality_probe": False,
            "num_gpus": num_gpus,
        }

    def identity(self, judge: JudgeSettings, template: JudgeTemplate | None, max_new_tokens: int) -> str:
        template = self.required_template(template)
        decoding = self.decoding(judge, max_new_tokens)
        return (
            f"{self.name}:{judge.model}@{judge.revision or 'main'}|{judge.dtype}|{judge.engine}|{decoding}"
            f"|{template.identity}"
        )

    def own_problems(self, judge: JudgeSettings) -> list[Problem]:
        if not judge.model:
            return [("model", "a model judge needs 'model' (a built-in name, local folder or hub id)")]
        from cluster.models.sources import validate_model_source

        message = validate_model_source(judge.model)
        return [("model", message)] if message else []

    def eval_params(self, judge: JudgeSettings, template: JudgeTemplate | None, max_new_tokens: int) -> dict[str, str]:
        return {
            **super().eval_params(judge, template, max_new_tokens),
            "model": str(judge.model),
            "dtype": judge.dtype,
            "engine": judge.engine,
            "batch_size": str(judge.batch_size),
        }
