"""Settings of the vLLM engine (plain pydantic, importable without vLLM).

They come from a model's ``vllm:`` section of the sweep. What depends on the worker's placement
(how many GPUs its bundle holds, whether it has a GPU at all) is resolved by
:meth:`VLLMSettings.engine_kwargs` on the worker itself.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

_GIB = 1 << 30
#: KV-cache block size on CPU workers with prefix caching (vLLM's CPU kernels need multiples of 32).
CPU_PREFIX_BLOCK_SIZE = 32


class VLLMSettings(BaseModel):
    """How one model is served by vLLM."""

    model_config = ConfigDict(extra="forbid")

    tensor_parallel_size: int | None = Field(
        None,
        ge=1,
        description="GPUs one variant is split over; default: the GPUs of the worker's bundle (1 if fractional)",
    )
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="share of each GPU vLLM may use; default 0.9, scaled by the bundle's GPU fraction when GPUs are shared",
    )
    max_model_len: int | None = Field(
        None, ge=16, description="longest prompt + answer in tokens; default: the model's own"
    )
    enable_prefix_caching: bool = Field(
        True, description="reuse the KV cache of shared prompt prefixes (few-shot examples)"
    )
    prefix_scoring: bool = Field(
        True,
        description="option scoring reads the prefix cache (each shared prompt prefix computed once); false: every "
        "option's prompt is computed in full, as vLLM does by default for prompt log-probabilities",
    )
    block_size: int | None = Field(
        None,
        ge=16,
        description="tokens per KV-cache block; prefix caching reuses whole blocks, so smaller blocks reuse more. "
        "Default: 32 on CPU with prefix caching (the CPU kernels' smallest; 6x faster option scoring than vLLM's "
        "128 on TruthfulQA MC1), else vLLM's own",
    )
    cpu_kv_cache_gib: float = Field(1.0, gt=0, description="KV-cache size on CPU workers, in GiB")
    max_num_seqs: int | None = Field(None, ge=1, description="most sequences decoded at once; default: vLLM's")
    enforce_eager: bool | None = Field(None, description="skip CUDA graphs; default: true on CPU, false on GPU")
    separate_process: bool | None = Field(
        None,
        description="run vLLM's engine core in its own process (vLLM's default; qtrust's on GPUs). Default on CPU: "
        "inside the worker, which starts about 30 s sooner and decodes faster on small machines",
    )

    def resolved_separate_process(self, device: str) -> bool:
        """The configured choice, else a separate process on GPUs and the worker's own process on CPU."""
        if self.separate_process is not None:
            return self.separate_process
        return device.startswith("cuda")

    def resolved_tensor_parallel_size(self, num_gpus: float) -> int:
        """The configured size, else the whole GPUs of the bundle (1 for a fraction or none)."""
        if self.tensor_parallel_size is not None:
            return self.tensor_parallel_size
        return max(1, int(num_gpus)) if num_gpus >= 1 else 1

    def resolved_gpu_memory_utilization(self, num_gpus: float) -> float:
        """The configured share, else 0.9 of the bundle's fraction of a GPU (0.9 for whole GPUs)."""
        if self.gpu_memory_utilization is not None:
            return self.gpu_memory_utilization
        fraction = num_gpus if 0 < num_gpus < 1 else 1.0
        return round(0.9 * fraction, 3)

    def placement_problems(self, num_gpus: float) -> list[str]:
        """Settings that cannot work with ``num_gpus`` per worker (checked before anything starts)."""
        problems = []
        tp = self.tensor_parallel_size
        if tp is not None and tp > 1:
            if num_gpus < 1:
                problems.append(
                    f"tensor_parallel_size {tp} needs {tp} whole GPUs per worker; set resources.num_gpus: {tp}"
                )
            elif tp != int(num_gpus) or not float(num_gpus).is_integer():
                problems.append(
                    f"tensor_parallel_size {tp} must equal resources.num_gpus ({num_gpus:g}); "
                    "the worker's bundle holds the GPUs vLLM splits the model over"
                )
        if num_gpus > 1 and not float(num_gpus).is_integer():
            problems.append(f"resources.num_gpus {num_gpus:g}: vLLM needs whole GPUs above one")
        util = self.gpu_memory_utilization
        if util is not None and 0 < num_gpus < 1 and util > num_gpus + 1e-9:
            problems.append(
                f"gpu_memory_utilization {util:g} is more than the worker's share of its GPU ({num_gpus:g}); "
                f"workers sharing a GPU would run out of memory; use at most {math.floor(num_gpus * 100) / 100:g}"
            )
        return problems

    def engine_kwargs(self, *, device: str, num_gpus: float) -> dict[str, object]:
        """Keyword arguments for ``vllm.LLM`` on a worker with ``device`` and ``num_gpus``."""
        on_gpu = device.startswith("cuda")
        kwargs: dict[str, object] = {
            "enable_prefix_caching": self.enable_prefix_caching,
            "enforce_eager": (not on_gpu) if self.enforce_eager is None else self.enforce_eager,
        }
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        if self.max_num_seqs is not None:
            kwargs["max_num_seqs"] = self.max_num_seqs
        if self.block_size is not None:
            kwargs["block_size"] = self.block_size
        elif not on_gpu and self.enable_prefix_caching:
            kwargs["block_size"] = CPU_PREFIX_BLOCK_SIZE
        if on_gpu:
            tp = self.resolved_tensor_parallel_size(num_gpus)
            kwargs["tensor_parallel_size"] = tp
            kwargs["gpu_memory_utilization"] = self.resolved_gpu_memory_utilization(num_gpus)
            if tp > 1:
                # Processes on this node, over the GPUs Ray gave this worker's bundle
                # (vLLM would otherwise try to place its own Ray workers).
                kwargs["distributed_executor_backend"] = "mp"
        else:
            kwargs["kv_cache_memory_bytes"] = int(self.cpu_kv_cache_gib * _GIB)
        return kwargs
