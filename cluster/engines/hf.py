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
from cluster.engines.batching import in_request_order, length_sorted_batches
from cluster.engines.hf_scoring import (
    OptionSequence,
    PrefixScorer,
    broadcast_cache,
    common_prefix_len,
    item_prefix_len,
)
from cluster.engines.hf_settings import HFSettings
from cluster.engines.prompts import PromptTokens
from cluster.models.dtype import parse_dtype

log = logging.getLogger(__name__)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    size = max(1, int(size))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _is_finite(result: LoglikelihoodResult) -> bool:
    return not any(math.isnan(v) for v in result.logprobs)


def _check_finite(result: LoglikelihoodResult) -> None:
    if not _is_finite(result):
        raise FloatingPointError("NaN log-probability")


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
        settings: HFSettings | None = None,
        prefix_scoring: bool | None = None,
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
        #: Set by :func:`cluster.variants.load.load_variant`: how the weights were quantized, size, probe.
        self.quantization: dict[str, Any] = {}
        settings = settings or HFSettings()
        if prefix_scoring is not None:
            settings = settings.model_copy(update={"prefix_scoring": bool(prefix_scoring)})
        self.scorer = PrefixScorer(self.model, self.tokenizer.pad_token_id, self.device)
        self.configure(settings)
        #: Forward passes and tokens (with padding) of the per-option path, for benchmarks.
        self.plain_forward_passes = 0
        self.plain_tokens_computed = 0
        #: Prompt tokens run through the model by generation (per-row width, padding included).
        self.generated_prefill_tokens = 0
        self._generation_cache_ok = True

    def configure(self, settings: HFSettings) -> None:
        """Apply ``settings`` (a model's ``hf:`` section); they change speed, never results."""
        self.settings = settings
        self.scorer.token_budget = settings.score_token_budget
        self.scorer.min_shared = settings.min_shared_tokens

    @property
    def prefix_scoring(self) -> bool:
        """Whether multiple-choice scoring computes shared prefixes once (see :class:`HFSettings`)."""
        return self.settings.prefix_scoring

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        num_threads: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        settings: HFSettings | None = None,
    ) -> HFEngine:
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
        return cls(model, tokenizer, device=device, num_threads=num_threads, settings=settings)

    # ------------------------------------------------------------------ helpers

    # --------------------------------------------------------------- generation

    def _generate_batch(
        self,
        batch: list[GenerationRequest],
        settings: GenerationSettings,
        shared: tuple[int, ...] = (),
        prompts: list[list[int] | None] | None = None,
    ) -> list[GenerationResult]:
        """Greedy (or sampled) answers for one batch.

        With a ``shared`` prefix (token ids every prompt of the shard starts with), the prefix's
        key/value cache is computed once per call (see :meth:`PrefixScorer.shared_state`) and each
        batch starts from it: rows hold ``prefix + padding + own tokens``, the padding masked out
        and positions counted over real tokens only, so each row sees exactly its own prompt.
        ``prompts`` are the batch's token ids when the caller has them (``None`` where rendering
        failed: rendering again raises, and the batch fails as it should).
        """
        start = time.perf_counter()
        given = prompts or [None] * len(batch)
        prompts = [ids if ids is not None else self.prompts.prompt_ids(r.messages) for r, ids in zip(batch, given)]
        s = len(shared)
        if s and not all(len(p) > s and tuple(p[:s]) == shared for p in prompts):
            s = 0
        tails = [p[s:] for p in prompts]
        width = max(len(t) for t in tails)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(prompts), s + width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), s + width), dtype=torch.long)
        if s:
            input_ids[:, :s] = torch.tensor(shared, dtype=torch.long)
            attention[:, :s] = 1
        for row, ids in enumerate(tails):
            if ids:
                input_ids[row, s + width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, s + width - len(ids) :] = 1
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "pad_token_id": pad_id,
        }
        if s:
            kwargs["past_key_values"] = broadcast_cache(self.scorer.shared_state(shared).cache, len(prompts))
        if settings.temperature and settings.temperature > 0:
            kwargs.update(do_sample=True, temperature=float(settings.temperature), top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **kwargs
            )
        self.generated_prefill_tokens += int(len(prompts) * width)
        new_tokens = output[:, s + width :].tolist()
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

    def _shared_generation_prefix(self, prompts: list[list[int] | None]) -> tuple[int, ...]:
        """The token prefix every prompt of the call starts with, if worth caching (else ``()``).

        It stops one token short of the shortest prompt, so every row keeps a token of its own to
        run; models whose cache cannot be shared across rows never get one.
        """
        rendered = [p for p in prompts if p]
        if not self.settings.prefix_generation or len(rendered) < 2 or not self._generation_cache_ok:
            return ()
        n = min(common_prefix_len(rendered), min(len(p) for p in rendered) - 1)
        if n < self.settings.min_shared_tokens:
            return ()
        shared = tuple(rendered[0][:n])
        try:
            self.scorer.shared_state(shared)
        except Exception as exc:
            log.info("no shared-prefix generation for this model: %s", exc)
            self._generation_cache_ok = False
            return ()
        return shared

    def _prompt_ids_or_none(self, request: GenerationRequest) -> list[int] | None:
        """Prompt tokens of ``request``; ``None`` when it cannot be rendered (its batch reports it)."""
        try:
            return self.prompts.prompt_ids(request.messages)
        except Exception:
            return None

    def generate(self, requests: list[GenerationRequest], settings: GenerationSettings) -> list[GenerationResult]:
        """Generate one answer per request, in request order; failures land in ``error``.

        Requests are sorted by prompt length (longest first) before they are cut into batches of
        ``settings.batch_size``, so a batch pads little; results come back in request order. The
        prefix all prompts share (system prompt, demonstrations) is computed once for the call.
        """
        prompts = [self._prompt_ids_or_none(r) for r in requests]
        shared = self._shared_generation_prefix(prompts)
        placed: dict[int, GenerationResult] = {}
        for positions in length_sorted_batches([len(p or ()) for p in prompts], settings.batch_size):
            batch = [requests[i] for i in positions]
            shared = shared if self._generation_cache_ok else ()
            rendered = [prompts[i] for i in positions]
            for i, result in zip(positions, self._generate_or_isolate(batch, settings, shared, rendered)):
                placed[i] = result
        return in_request_order(placed, len(requests))

    def _generate_or_isolate(
        self,
        batch: list[GenerationRequest],
        settings: GenerationSettings,
        shared: tuple[int, ...] = (),
        prompts: list[list[int] | None] | None = None,
    ) -> list[GenerationResult]:
        """Generate for one batch; if the batch fails, retry its requests one by one without the
        shared prefix cache (and stop using it for this engine: a model whose generation cannot
        start from a shared cache would otherwise fail every batch once)."""
        given = prompts or [None] * len(batch)
        try:
            return self._generate_batch(batch, settings, shared, given)
        except Exception as exc:
            if shared:  # this model may not generate from a shared cache: full prompts from now on
                self._generation_cache_ok = False
            if len(batch) == 1 and not shared:
                log.warning("generation failed for %s: %s", batch[0].id, exc)
                return [GenerationResult(id=batch[0].id, text=None, error=error_text(exc))]
            log.warning("batch of %d failed (%s); retrying items one by one", len(batch), exc)
        results: list[GenerationResult] = []
        for request, ids in zip(batch, given):
            try:
                results.extend(self._generate_batch([request], settings, prompts=[ids]))
            except Exception as exc:
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
        self.plain_forward_passes += 1
        self.plain_tokens_computed += int(input_ids.numel())
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                position_ids=position_ids.to(self.device),
            ).logits.float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        out: list[float] = []
        for row, (_ids, n_cont) in enumerate(chunk):
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
        """Sum of log-probabilities of each continuation after the templated prompt, in request order."""
        if not self.prefix_scoring:
            return self.loglikelihood_per_option(requests, settings)
        return self._loglikelihood_prefixed(requests, settings)

    def loglikelihood_per_option(
        self, requests: list[LoglikelihoodRequest], settings: GenerationSettings
    ) -> list[LoglikelihoodResult]:
        """The original path: each option a full left-padded sequence, one request at a time."""
        return [self._score_or_error(request, settings.batch_size) for request in requests]

    def _score_or_error(self, request: LoglikelihoodRequest, batch_size: int) -> LoglikelihoodResult:
        try:
            result = self._score_request(request, batch_size)
            _check_finite(result)
            return result
        except Exception as exc:
            log.warning("scoring failed for %s: %s", request.id, exc)
            return LoglikelihoodResult(id=request.id, error=error_text(exc))

    def _loglikelihood_prefixed(
        self, requests: list[LoglikelihoodRequest], settings: GenerationSettings
    ) -> list[LoglikelihoodResult]:
        """Length-sorted batches across items, each shared prefix computed once."""
        placed: dict[int, LoglikelihoodResult] = {}
        prepared: dict[int, tuple[list[int], list[OptionSequence]]] = {}
        for i, request in enumerate(requests):
            try:
                prompt_ids, sequences = self.prompts.continuation_sequences(request.messages, request.continuations)
            except Exception as exc:
                log.warning("scoring failed for %s: %s", request.id, exc)
                placed[i] = LoglikelihoodResult(id=request.id, error=error_text(exc))
                continue
            if not sequences:
                placed[i] = LoglikelihoodResult(id=request.id, logprobs=[], prompt_tokens=len(prompt_ids))
            elif item_prefix_len(sequences) < 1:  # nothing to cache: score it the original way
                placed[i] = self._score_or_error(request, settings.batch_size)
            else:
                prepared[i] = (prompt_ids, sequences)
        positions = list(prepared)
        splits = [item_prefix_len(prepared[i][1]) for i in positions]
        shared_len = common_prefix_len([prepared[i][1][0][0][:split] for i, split in zip(positions, splits)])
        for batch in length_sorted_batches(splits, settings.batch_size):
            indices = [positions[b] for b in batch]
            scored = self._score_items(requests, prepared, indices, shared_len, settings.batch_size)
            placed.update(zip(indices, scored))
        return in_request_order(placed, len(requests))

    def _score_items(
        self,
        requests: list[LoglikelihoodRequest],
        prepared: dict[int, tuple[list[int], list[OptionSequence]]],
        indices: list[int],
        shared_len: int,
        batch_size: int,
    ) -> list[LoglikelihoodResult]:
        """Score a batch of items at once; if that fails, score them one by one, and an item that
        fails alone is scored the original way (which reports its error if it fails too)."""
        start = time.perf_counter()
        try:
            values = self.scorer.score([prepared[i][1] for i in indices], shared_len)
            latency = (time.perf_counter() - start) / len(indices)
            results = [
                LoglikelihoodResult(id=requests[i].id, logprobs=v, prompt_tokens=len(prepared[i][0]), latency_s=latency)
                for i, v in zip(indices, values)
            ]
            if all(_is_finite(r) for r in results):
                return results
            raise FloatingPointError("NaN log-probability")
        except Exception as exc:
            if len(indices) == 1:
                log.warning("prefix scoring failed for %s (%s); scoring it per option", requests[indices[0]].id, exc)
                return [self._score_or_error(requests[indices[0]], batch_size)]
            log.warning("batch of %d items failed (%s); scoring items one by one", len(indices), exc)
        return [self._score_items(requests, prepared, [i], shared_len, batch_size)[0] for i in indices]

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
