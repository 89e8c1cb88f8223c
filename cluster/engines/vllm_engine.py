"""The vLLM engine: the same requests and results as the Hugging Face engine, served by ``vllm.LLM``.

Prompts are rendered and tokenised by the variant's own Hugging Face tokenizer (see
:mod:`cluster.engines.prompts`) and handed to vLLM as token ids, so both engines see identical
tokens. Generation is greedy; log-likelihood scoring reads vLLM's prompt log-probabilities of the
continuation tokens. vLLM skips its prefix cache for such requests unless told not to; qtrust
tells it not to (``prefix_scoring``), so the prompt shared by an item's options, and the
demonstrations shared by all items, are computed once, and checks that no scored token came from
the cache. A whole shard goes to vLLM at once and its scheduler batches it continuously.

When vLLM's engine process dies, :class:`EngineDead` is raised instead of per-item errors: the
worker drops the engine and loads a new one for the retried shard.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Any

from cluster.engines.base import (
    GenerationRequest,
    GenerationResult,
    GenerationSettings,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    error_text,
)
from cluster.engines.prompts import PromptTokens
from cluster.engines.selection import VLLM_INSTALL_HINT, vllm_version
from cluster.engines.vllm_settings import VLLMSettings

log = logging.getLogger(__name__)


class EngineDead(RuntimeError):
    """vLLM's engine process is gone; the engine must be loaded again."""


def _is_engine_dead(exc: BaseException) -> bool:
    return type(exc).__name__ in {"EngineDeadError", "EngineDead"} or "EngineCore" in str(exc) and "died" in str(exc)


def _prepare_process(device: str, num_threads: int | None, separate_process: bool) -> None:
    """Environment for vLLM in this process (inherited by the engine process it spawns)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
    # Read by vLLM when the engine is created: "0" runs the engine core (and, on CPU, the model
    # runner) inside this worker instead of in spawned processes.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if separate_process else "0"
    if not device.startswith("cuda") and num_threads:
        # Ray gives a worker CPUs, not particular cores: let OpenMP use as many threads as it has
        # instead of vLLM pinning every worker of the node to the same cores.
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        os.environ["OMP_NUM_THREADS"] = str(int(num_threads))


@functools.cache
def wna16_kernel_available(dtype: str = "auto") -> bool:
    """Whether this vLLM build runs packed 4-bit weights on CPU for activations of ``dtype``.

    Found by trying: the AVX2 build has no such kernel, and the AVX-512 builds have one for bfloat16
    and float16 activations only ("not implemented for 'Float'"). ``auto`` (the checkpoint's dtype,
    unknown here) asks for all three.
    """
    import torch
    from vllm import _custom_ops as ops

    if not hasattr(torch.ops._C, "cpu_gemm_wna16"):
        return False
    wanted = ("float32", "bfloat16", "float16") if dtype in ("auto", "", None) else (dtype,)
    for name in wanted:
        torch_dtype = getattr(torch, str(name), None)
        if not isinstance(torch_dtype, torch.dtype):
            return False
        rows, cols, pack = 32, 128, 8  # 32 outputs (the kernel's block), 128 inputs, 8 nibbles per int32
        weights = torch.full((rows // 16, cols * 16 // pack), 0x88888888 - 2**32, dtype=torch.int32)  # zeros
        scales = torch.ones(1, rows, dtype=torch_dtype)
        try:
            out = ops.cpu_gemm_wna16(torch.ones(1, cols, dtype=torch_dtype), weights, scales, None, None, pack, "vec")
        except (NotImplementedError, RuntimeError):
            return False
        if out.shape != (1, rows) or not bool(torch.isfinite(out).all()):
            return False
    return True


@functools.cache
def _supports_cache_reading() -> bool:
    """Whether this vLLM lets a prompt-log-prob request read the prefix cache (``skip_reading_prefix_cache``)."""
    from vllm import SamplingParams

    return "skip_reading_prefix_cache" in getattr(SamplingParams, "__struct_fields__", ()) or hasattr(
        SamplingParams, "skip_reading_prefix_cache"
    )


def _summed(prompt_logprobs: Any, ids: list[int], n: int) -> float:
    """Summed log-probability of the last ``n`` of ``ids`` from vLLM's per-position prompt log-probs."""
    return float(sum(prompt_logprobs[pos][ids[pos]].logprob for pos in range(len(ids) - n, len(ids))))


class VLLMEngine:
    """An :class:`~cluster.engines.base.Engine` over ``vllm.LLM``."""

    name = "vllm"

    def __init__(self, llm: Any, tokenizer: Any, *, device: str, settings: VLLMSettings, llm_kwargs: dict[str, Any]):
        self.llm = llm
        self.tokenizer = tokenizer
        self.device = device
        self.settings = settings
        self.llm_kwargs = dict(llm_kwargs)
        generation_eos = None
        try:
            generation_eos = llm.llm_engine.model_config.hf_config.eos_token_id
        except AttributeError:  # pragma: no cover - older vLLM
            pass
        self.prompts = PromptTokens(tokenizer, generation_eos)
        self.extra_description: dict[str, str] = {}
        #: Set by :func:`cluster.variants.load.load_variant`.
        self.quantization: dict[str, Any] = {}
        #: Sequences scored a second time, without the prefix cache (see :meth:`sequence_logprobs`).
        self.rescored_sequences = 0

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        settings: VLLMSettings | None = None,
        num_gpus: float = 0.0,
        num_threads: int | None = None,
    ) -> VLLMEngine:
        """Start vLLM on the checkpoint folder ``path`` (dense, or quantized in a format vLLM reads)."""
        settings = settings or VLLMSettings()
        separate = settings.resolved_separate_process(device)
        _prepare_process(device, num_threads, separate)
        try:
            from vllm import LLM
        except ImportError as err:
            raise RuntimeError(f"engine vllm: vLLM cannot be imported here ({err}); {VLLM_INSTALL_HINT}") from err
        from transformers import AutoTokenizer

        kwargs: dict[str, Any] = {
            "model": str(path),
            "tokenizer": str(path),
            "dtype": dtype,
            "trust_remote_code": trust_remote_code,
            "seed": 0,
            "disable_log_stats": True,
            **settings.engine_kwargs(device=device, num_gpus=num_gpus),
        }
        llm = LLM(**kwargs)
        kwargs["separate_process"] = separate
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(llm, tokenizer, device=device, settings=settings, llm_kwargs=kwargs)

    # ------------------------------------------------------------------ running

    def _run(self, token_ids: list[list[int]], params: Any) -> list[Any]:
        from vllm.inputs import TokensPrompt

        try:
            return self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in token_ids], params, use_tqdm=False)
        except Exception as exc:
            if _is_engine_dead(exc):
                raise EngineDead(f"vLLM engine process died: {error_text(exc)}") from exc
            raise

    def _sampling(self, **kwargs: Any) -> Any:
        from vllm import SamplingParams

        if "skip_reading_prefix_cache" in kwargs and not _supports_cache_reading():
            kwargs.pop("skip_reading_prefix_cache")  # older vLLM: prompt log-probs always skip the cache
        return SamplingParams(stop_token_ids=sorted(self.prompts.stop_ids), **kwargs)

    def _generate_batch(self, batch: list[GenerationRequest], settings: GenerationSettings) -> list[GenerationResult]:
        start = time.perf_counter()
        prompts = [self.prompts.prompt_ids(r.messages) for r in batch]
        params = self._sampling(
            temperature=float(settings.temperature or 0.0),
            max_tokens=settings.max_new_tokens,
            skip_special_tokens=True,
        )
        outputs = self._run(prompts, params)
        latency = (time.perf_counter() - start) / len(batch)
        results = []
        for request, ids, output in zip(batch, prompts, outputs):
            kept = self.prompts.cut_at_stop(list(output.outputs[0].token_ids))
            results.append(
                GenerationResult(
                    id=request.id,
                    text=self.prompts.decode(kept),
                    prompt_tokens=len(ids),
                    completion_tokens=len(kept),
                    latency_s=latency,
                )
            )
        return results

    def generate(self, requests: list[GenerationRequest], settings: GenerationSettings) -> list[GenerationResult]:
        """Generate one answer per request, in request order; failures land in ``error``.

        The requests go to vLLM together (its scheduler batches them); if that fails, each is
        retried alone so one bad prompt (e.g. longer than ``max_model_len``) fails only itself.
        """
        if not requests:
            return []
        try:
            return self._generate_batch(requests, settings)
        except EngineDead:
            raise
        except Exception as exc:
            if len(requests) > 1:
                log.warning("vLLM batch of %d failed (%s); retrying items one by one", len(requests), exc)
            else:
                log.warning("generation failed for %s: %s", requests[0].id, exc)
                return [GenerationResult(id=requests[0].id, text=None, error=error_text(exc))]
        results = []
        for request in requests:
            try:
                results.extend(self._generate_batch([request], settings))
            except EngineDead:
                raise
            except Exception as exc:
                log.warning("generation failed for %s: %s", request.id, exc)
                results.append(GenerationResult(id=request.id, text=None, error=error_text(exc)))
        return results

    def sequence_logprobs(self, sequences: list[tuple[list[int], int]], *, cached: bool | None = None) -> list[float]:
        """Sum of the log-probabilities of the last ``n`` tokens of each ``(ids, n)`` sequence.

        With ``cached`` (default: the ``prefix_scoring`` setting, when prefix caching is on) the
        requests may read vLLM's prefix cache, so a prompt prefix shared by options and items is
        computed once. vLLM then returns prompt log-probabilities only for the positions it
        computed; a sequence whose cache hit reached into the scored tokens (an option repeating
        another's first tokens, say) is scored again without reading the cache.
        """
        if cached is None:
            cached = self.settings.prefix_scoring and self.settings.enable_prefix_caching
        cached = cached and _supports_cache_reading()
        todo = [(i, ids, n) for i, (ids, n) in enumerate(sequences) if n > 0]
        out = [0.0] * len(sequences)
        if not todo:
            return out
        params = self._sampling(
            temperature=0.0, max_tokens=1, prompt_logprobs=0, detokenize=False, skip_reading_prefix_cache=not cached
        )
        outputs = self._run([ids for _, ids, _ in todo], params)
        again: list[tuple[int, list[int], int]] = []
        for (i, ids, n), output in zip(todo, outputs):
            hit = int(getattr(output, "num_cached_tokens", 0) or 0)
            # Token ``pos`` is scored from position ``pos - 1``; vLLM computed positions from ``hit`` on.
            if cached and hit > len(ids) - n - 1:
                again.append((i, ids, n))
                continue
            out[i] = _summed(output.prompt_logprobs, ids, n)
        self.rescored_sequences += len(again)
        if again:
            params = self._sampling(
                temperature=0.0, max_tokens=1, prompt_logprobs=0, detokenize=False, skip_reading_prefix_cache=True
            )
            for (i, ids, n), output in zip(again, self._run([ids for _, ids, _ in again], params)):
                out[i] = _summed(output.prompt_logprobs, ids, n)
        return out

    def _score_requests(self, requests: list[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        start = time.perf_counter()
        prepared = [self.prompts.continuation_sequences(r.messages, r.continuations) for r in requests]
        flat = [seq for _, sequences in prepared for seq in sequences]
        scores = self.sequence_logprobs(flat)
        latency = (time.perf_counter() - start) / len(requests)
        results, offset = [], 0
        for request, (prompt_ids, sequences) in zip(requests, prepared):
            values = scores[offset : offset + len(sequences)]
            offset += len(sequences)
            if any(v != v for v in values):
                raise FloatingPointError(f"NaN log-probability for {request.id}")
            results.append(
                LoglikelihoodResult(id=request.id, logprobs=values, prompt_tokens=len(prompt_ids), latency_s=latency)
            )
        return results

    def loglikelihood(
        self, requests: list[LoglikelihoodRequest], settings: GenerationSettings
    ) -> list[LoglikelihoodResult]:
        """Sum of log-probabilities of each continuation after the templated prompt."""
        if not requests:
            return []
        try:
            return self._score_requests(requests)
        except EngineDead:
            raise
        except Exception as exc:
            log.warning("vLLM scoring of %d requests failed (%s); retrying one by one", len(requests), exc)
        results = []
        for request in requests:
            try:
                results.extend(self._score_requests([request]))
            except EngineDead:
                raise
            except Exception as exc:
                log.warning("scoring failed for %s: %s", request.id, exc)
                results.append(LoglikelihoodResult(id=request.id, error=error_text(exc)))
        return results

    def text_nll(self, ids: list[int]) -> tuple[float, int]:
        """Negative log-likelihood of ``ids[1:]`` given the tokens before (for the quality probe)."""
        if len(ids) < 2:
            return 0.0, 0
        return -self.sequence_logprobs([(ids, len(ids) - 1)], cached=False)[0], len(ids) - 1

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (benchmarks time a cold cache this way)."""
        self.llm.reset_prefix_cache()

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stop vLLM's engine process and free its memory."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as err:
            log.debug("vLLM shutdown: %s", err)
        del llm

    def describe(self) -> dict[str, str]:
        """Engine name, library versions, device, dtype and the vLLM settings in use."""
        import torch
        import transformers

        info = {
            "engine": self.name,
            "vllm": vllm_version() or "unknown",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "device": self.device,
            "dtype": str(self.llm_kwargs.get("dtype")),
            "model": str(self.llm_kwargs.get("model")),
        }
        for key in (
            "tensor_parallel_size",
            "gpu_memory_utilization",
            "max_model_len",
            "enable_prefix_caching",
            "kv_cache_memory_bytes",
            "max_num_seqs",
            "block_size",
            "enforce_eager",
            "separate_process",
        ):
            if key in self.llm_kwargs:
                info[f"vllm_{key}"] = str(self.llm_kwargs[key])
        if self.llm is not None and "max_model_len" not in self.llm_kwargs:
            try:
                info["vllm_max_model_len"] = str(self.llm.llm_engine.model_config.max_model_len)
            except AttributeError:  # pragma: no cover
                pass
        if os.environ.get("OMP_NUM_THREADS") and not self.device.startswith("cuda"):
            info["num_threads"] = os.environ["OMP_NUM_THREADS"]
        info.update(self.extra_description)
        return info
