"""The Hugging Face transformers engine: greedy generation and log-likelihood scoring on CPU or GPU."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from cluster.engines.base import (
    GenerationRequest,
    GenerationResult,
    GenerationSettings,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    error_text,
)
from cluster.engines.prompts import PromptTokens

log = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map ``"float32"``/``"bf16"``/... (or a torch dtype) to a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}") from None


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    size = max(1, int(size))
    return [items[i : i + size] for i in range(0, len(items), size)]


class HFEngine:
    """An :class:`~cluster.engines.base.Engine` over a loaded transformers causal LM.

    The model and tokenizer are used as given (already quantized, if they are). Generation uses
    the tokenizer's chat template with the generation prompt, left padding, and greedy decoding
    when ``temperature == 0``.
    """

    name = "hf"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str = "cpu",
        num_threads: int | None = None,
        extra_description: dict[str, str] | None = None,
    ) -> None:
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.device = torch.device(device)
        self.model = model.to(self.device) if str(getattr(model, "device", "")) != str(self.device) else model
        self.model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.prompts = PromptTokens(
            self.tokenizer, getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        )
        self.extra_description: dict[str, str] = dict(extra_description or {})
        #: Set by :func:`cluster.variant.load_variant`: how the weights were quantized, size, probe.
        self.quantization: dict[str, Any] = {}

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        num_threads: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> "HFEngine":
        """Load model and tokenizer from a local folder (or hub id) and wrap them.

        ``model_kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` (e.g. a
        ``quantization_config`` for methods that quantize at load time).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=parse_dtype(dtype), trust_remote_code=trust_remote_code, **(model_kwargs or {})
        )
        return cls(model, tokenizer, device=device, num_threads=num_threads)

    # ------------------------------------------------------------------ helpers

    # --------------------------------------------------------------- generation

    def _generate_batch(self, batch: list[GenerationRequest], settings: GenerationSettings) -> list[GenerationResult]:
        start = time.perf_counter()
        prompts = [self.prompts.prompt_ids(r.messages) for r in batch]
        width = max(len(p) for p in prompts)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            if ids:
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids) :] = 1
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "pad_token_id": pad_id,
        }
        if settings.temperature and settings.temperature > 0:
            kwargs.update(do_sample=True, temperature=float(settings.temperature), top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **kwargs
            )
        new_tokens = output[:, width:].tolist()
        latency = (time.perf_counter() - start) / len(batch)
        results = []
        for request, ids, generated in zip(batch, prompts, new_tokens):
            kept = self.prompts.cut_at_stop(generated)
            text = self.prompts.decode(kept)
            results.append(
                GenerationResult(
                    id=request.id,
                    text=text,
                    prompt_tokens=len(ids),
                    completion_tokens=len(kept),
                    latency_s=latency,
                )
            )
        return results

    def generate(self, requests: list[GenerationRequest], settings: GenerationSettings) -> list[GenerationResult]:
        """Generate one answer per request, in request order; failures land in ``error``."""
        results: list[GenerationResult] = []
        for batch in _chunks(requests, settings.batch_size):
            try:
                results.extend(self._generate_batch(batch, settings))
                continue
            except Exception as exc:  # noqa: BLE001 - a bad batch must not sink the others
                if len(batch) == 1:
                    log.warning("generation failed for %s: %s", batch[0].id, exc)
                    results.append(GenerationResult(id=batch[0].id, text=None, error=error_text(exc)))
                    continue
                log.warning("batch of %d failed (%s); retrying items one by one", len(batch), exc)
            for request in batch:
                try:
                    results.extend(self._generate_batch([request], settings))
                except Exception as exc:  # noqa: BLE001
                    log.warning("generation failed for %s: %s", request.id, exc)
                    results.append(GenerationResult(id=request.id, text=None, error=error_text(exc)))
        return results

    # ------------------------------------------------------------ loglikelihood

    def _score_request(self, request: LoglikelihoodRequest, batch_size: int) -> LoglikelihoodResult:
        start = time.perf_counter()
        prompt_ids, sequences = self.prompts.continuation_sequences(request.messages, request.continuations)
        logprobs: list[float] = []
        for chunk in _chunks(sequences, batch_size):
            logprobs.extend(self._score_chunk(chunk))
        return LoglikelihoodResult(
            id=request.id,
            logprobs=logprobs,
            prompt_tokens=len(prompt_ids),
            latency_s=time.perf_counter() - start,
        )

    def _score_chunk(self, chunk: list[tuple[list[int], int]]) -> list[float]:
        width = max(len(ids) for ids, _ in chunk)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (ids, _) in enumerate(chunk):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        position_ids = (attention.cumsum(-1) - 1).clamp_min(0)
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                position_ids=position_ids.to(self.device),
            ).logits.float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        out: list[float] = []
        for row, (ids, n_cont) in enumerate(chunk):
            if n_cont <= 0:
                out.append(0.0)
                continue
            # Token at position t is predicted by the logits at t - 1.
            targets = input_ids[row, width - n_cont :]
            preds = logp[row, width - n_cont - 1 : width - 1]
            out.append(float(preds.gather(-1, targets.unsqueeze(-1)).sum()))
        return out

    def loglikelihood(
        self, requests: list[LoglikelihoodRequest], settings: GenerationSettings
    ) -> list[LoglikelihoodResult]:
        """Sum of log-probabilities of each continuation after the templated prompt."""
        results: list[LoglikelihoodResult] = []
        for request in requests:
            try:
                result = self._score_request(request, settings.batch_size)
                if any(math.isnan(v) for v in result.logprobs):
                    raise FloatingPointError("NaN log-probability")
                results.append(result)
            except Exception as exc:  # noqa: BLE001
                log.warning("scoring failed for %s: %s", request.id, exc)
                results.append(LoglikelihoodResult(id=request.id, error=error_text(exc)))
        return results

    # ----------------------------------------------------------------- describe

    def describe(self) -> dict[str, str]:
        """Engine name, library versions, device, dtype and thread count."""
        import transformers

        try:
            dtype = str(next(self.model.parameters()).dtype).replace("torch.", "")
        except StopIteration:
            dtype = "unknown"
        info = {
            "engine": self.name,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "device": str(self.device),
            "dtype": dtype,
            "num_threads": str(torch.get_num_threads()),
            "model": str(getattr(getattr(self.model, "config", None), "_name_or_path", "")),
        }
        info.update(self.extra_description)
        return info
