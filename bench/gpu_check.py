"""One prepared check of qtrust's CUDA paths on a lent GPU, printed as one table.

Usage (from the repository root; on the GPU machine, with the wheels named below carried)::

    python3 bench/gpu_check.py                      # --device cuda, bf16
    python3 bench/gpu_check.py --device cpu         # what CI runs (float32)

On a small randomly initialised Llama-shaped model (built here, nothing downloaded) it checks:

* ``prefix scoring``: multiple-choice log-likelihoods with the shared prompt prefix computed once
  (the Hugging Face engine's default) against every option as a full sequence: the largest
  |Δ log-prob| and the number of items whose best option flips;
* ``prefix generation``: greedy answers started from the shared prefix's cache against plain
  generation: flipped greedy tokens;
* ``gptq``, ``awq``: built with llm-compressor on the device (4 bits, group 32, packed) and loaded
  the way a sweep's worker loads them; probe perplexity against the unquantized model's;
* ``bnb nf4``: bitsandbytes 4-bit at load time, probe perplexity;
* ``aqlm <shape>``: the aqlm package's kernel for codebooks of that shape (CUDA: its kernels for
  1x16, 2x8 and 1x8; CPU: the numba kernel for 8-bit codebooks, dequantize-then-matmul for 16-bit
  ones, on one numba thread as qtrust's loaders run it: aqlm 1.1.7's parallel numba loop adds into
  shared outputs without a lock and is wrong on several threads) against a plain matmul with the
  dequantized weight.

A row is ``ok``, ``FAIL`` (the check ran and missed its bound; exit status 1) or ``n/a`` (a package
is missing or the device cannot run it: the row says which). The GPU machines have torch and
transformers but not qtrust's other dependencies: carry the wheels of pydantic (with pydantic-core,
annotated-types, typing-inspection), llmcompressor (with compressed-tensors, loguru, datasets, dill,
multiprocess), bitsandbytes and aqlm — see docs/measurements.md. The whole run takes well under
8 minutes on a GPU and about a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Bounds per dtype: the largest |Δ log-prob| between the prefix-cached and the full path.
LOGPROB_BOUND = {"bfloat16": 0.25, "float32": 1e-3}
#: Bound on the relative error of an AQLM kernel against the dequantized matmul.
KERNEL_BOUND = {"bfloat16": 2e-2, "float16": 2e-2, "float32": 1e-4}
#: A 4-bit variant's probe perplexity may be at most this many times the unquantized model's.
PPL_RATIO_BOUND = 1.5


@dataclass
class Row:
    """One line of the table."""

    check: str
    result: str
    figure: str = ""
    seconds: float = 0.0
    detail: str = ""


class NotApplicable(Exception):
    """The check cannot run here (a missing package, a device without the kernel)."""


def run_check(name: str, check: Callable[[], tuple[bool, str, str]]) -> Row:
    """Run one check; a missing package or kernel is ``n/a``, an unexpected error ``FAIL``."""
    started = time.perf_counter()
    try:
        passed, figure, detail = check()
        result = "ok" if passed else "FAIL"
    except NotApplicable as err:
        result, figure, detail = "n/a", "", str(err)
    except ModuleNotFoundError as err:
        result, figure, detail = "n/a", "", f"missing package {err.name} (carry its wheel)"
    except Exception as err:  # report it in the table and keep checking the rest
        result, figure = "FAIL", ""
        detail = f"{type(err).__name__}: {err}".replace("\n", " ")[:300]
        traceback.print_exc(file=sys.stderr)
    return Row(name, result, figure, time.perf_counter() - started, detail)


# ------------------------------------------------------------------------------------- model


def build_model(folder: Path, hidden: int, layers: int) -> Path:
    """A random Llama-shaped model with a small trained tokenizer, written to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.support.tiny_model import _train_tokenizer

    tokenizer = _train_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // 32, 1),
        num_key_value_heads=max(hidden // 32, 1),
        max_position_embeddings=1024,
        initializer_range=0.1,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


FEWSHOT = "Answer with the letter of the right option.\n" + "".join(
    f"Question: which number is {w}? A) {i} B) {i + 1} C) {i + 2} D) {i + 3}\nAnswer: A\n"
    for i, w in enumerate(["one", "two", "three", "four", "five", "six"])
)
QUESTIONS = [f"Question: is item {i} larger than item {i + 1}? A) yes B) no C) equal D) unknown" for i in range(12)]


def _engine(path: Path, dtype: str, device: str, **settings: Any) -> Any:
    from cluster.engines.hf import HFEngine
    from cluster.engines.hf_settings import HFSettings

    return HFEngine.from_pretrained(path, dtype=dtype, device=device, settings=HFSettings(**settings))


def check_prefix_scoring(path: Path, dtype: str, device: str) -> tuple[bool, str, str]:
    from cluster.engines.base import GenerationSettings, LoglikelihoodRequest

    requests = [
        LoglikelihoodRequest(str(i), [{"role": "user", "content": FEWSHOT + q + "\nAnswer:"}], [" A", " B", " C", " D"])
        for i, q in enumerate(QUESTIONS)
    ]
    settings = GenerationSettings(batch_size=8)
    engine = _engine(path, dtype, device, prefix_scoring=True, min_shared_tokens=8)
    cached = engine.loglikelihood(requests, settings)
    full = engine.loglikelihood_per_option(requests, settings)
    errors = [r.error for r in cached + full if r.error]
    if errors:
        return False, "", f"errors: {errors[:2]}"
    delta = max(
        abs(a - b) for c, f in zip(cached, full, strict=True) for a, b in zip(c.logprobs, f.logprobs, strict=True)
    )
    flips = sum(
        max(range(4), key=c.logprobs.__getitem__) != max(range(4), key=f.logprobs.__getitem__)
        for c, f in zip(cached, full, strict=True)
    )
    bound = LOGPROB_BOUND[dtype]
    return (
        delta <= bound and flips <= (0 if dtype == "float32" else 1),
        f"max |Δ log-prob| {delta:.2e}, {flips}/{len(requests)} flipped",
        f"bound {bound:g}; {engine.scorer.__class__.__name__}",
    )


def check_prefix_generation(path: Path, dtype: str, device: str) -> tuple[bool, str, str]:
    from cluster.engines.base import GenerationRequest, GenerationSettings

    requests = [GenerationRequest(str(i), [{"role": "user", "content": FEWSHOT + q}]) for i, q in enumerate(QUESTIONS)]
    settings = GenerationSettings(max_new_tokens=16, batch_size=4)
    cached = _engine(path, dtype, device, prefix_generation=True, min_shared_tokens=8)
    plain = _engine(path, dtype, device, prefix_generation=False)
    a = cached.generate(requests, settings)
    b = plain.generate(requests, settings)
    ids = cached.tokenizer
    flipped = total = 0
    for x, y in zip(a, b, strict=True):
        tx, ty = ids(x.text or "")["input_ids"], ids(y.text or "")["input_ids"]
        total += max(len(tx), len(ty))
        flipped += sum(p != q for p, q in zip(tx, ty)) + abs(len(tx) - len(ty))
    reused = cached.generated_prefill_tokens < plain.generated_prefill_tokens
    allowed = 0 if dtype == "float32" else total // 10
    return (
        flipped <= allowed and reused,
        f"{flipped}/{total} greedy tokens differ; prefill {cached.generated_prefill_tokens} vs {plain.generated_prefill_tokens}",
        "the cached path must run fewer prompt tokens",
    )


def _variant(path: Path, recipe: dict[str, Any], dtype: str, device: str, cache: Path) -> Any:
    from cluster.quantization.recipes import QuantRecipe
    from cluster.variants.key import variant_key
    from cluster.variants.load import VariantSource, load_variant

    quant = QuantRecipe.model_validate(recipe)
    texts = digest = None
    if quant.calibration is not None:
        from jobs.plan.calibration import resolve_calibration

        calibration = resolve_calibration(quant.calibration, None)
        texts, digest = list(calibration.texts), calibration.digest
    key = variant_key(str(path), quant.key_fields(), digest, dtype)
    source = VariantSource(
        model_path=path, recipe=quant, variant_key=key, calibration_texts=texts, variant_cache=str(cache)
    )
    return load_variant(source, dtype=dtype, device=device, quality_probe=True)


def check_variant(
    path: Path, recipe: dict[str, Any], dtype: str, device: str, cache: Path, reference: list[float]
) -> tuple[bool, str, str]:
    if not reference:
        reference.append(
            float(_variant(path, {"method": "none"}, dtype, device, cache).quantization["probe_perplexity"])
        )
    engine = _variant(path, recipe, dtype, device, cache)
    report = engine.quantization
    ratio = float(report["probe_perplexity"]) / reference[0]
    return (
        math.isfinite(ratio) and ratio <= PPL_RATIO_BOUND,
        f"probe ppl ×{ratio:.3f} of the reference",
        f"storage {report.get('storage')}, build {report.get('build_s', '-')} s, {report.get('backend', '')}".strip(
            ", "
        ),
    )


def check_bnb(path: Path, dtype: str, device: str, cache: Path, reference: list[float]) -> tuple[bool, str, str]:
    from cluster.quantization.loadtime import check_bnb_available

    problem = check_bnb_available()
    if problem:
        raise NotApplicable(problem)
    return check_variant(path, {"method": "bnb", "bnb_type": "nf4"}, dtype, device, cache, reference)


def check_aqlm(shape: tuple[int, int], dtype: str, device: str) -> tuple[bool, str, str]:
    """``shape`` = (num_codebooks, nbits): the aqlm kernel against the dequantized matmul."""
    import torch
    import torch.nn.functional as F

    try:
        from aqlm.inference import QuantizedLinear
        from aqlm.utils import _dequantize_weight, unpack_int_data
    except ModuleNotFoundError:
        raise NotApplicable("missing package aqlm (carry aqlm and, on CPU, numba)") from None
    from aqlm.inference_kernels import get_forward_pass_kernel

    codebooks, nbits = shape
    if device == "cpu":  # what qtrust's loaders run: aqlm 1.1.7's numba kernel races on several threads
        from cluster.quantization.aqlm import serial_numba_kernel

        serial_numba_kernel()
    kernel_dtype = torch.float32 if device == "cpu" else getattr(torch, dtype)
    torch.manual_seed(0)
    layer = QuantizedLinear(1024, 512, 8, 1, codebooks, nbits, bias=False, device=device, dtype=kernel_dtype)
    with torch.no_grad():
        layer.codebooks.normal_(0, 0.1)
        layer.scales.uniform_(0.5, 1.5)
        high = 2 ** (nbits - 1)
        layer.codes.copy_(torch.randint(-high, high, layer.codes.shape, device=device).to(layer.codes.dtype))
        weight = _dequantize_weight(unpack_int_data(layer.codes, nbits), layer.codebooks, layer.scales)
        x = torch.randn(4, 1024, device=device, dtype=kernel_dtype)
        ours = layer(x).float()  # prepare_matmul_op picks the kernel (and may transpose codes in place)
        expected = F.linear(x.float(), weight.float())
    error = (ours - expected).norm().item() / expected.norm().item()
    bound = KERNEL_BOUND.get(str(kernel_dtype).removeprefix("torch."), 1e-2)
    kernel = get_forward_pass_kernel(layer.codebooks, False)
    name = getattr(kernel, "__name__", None) or str(kernel)
    return error <= bound, f"relative error {error:.2e}", f"kernel {name}, bound {bound:g}"


# ------------------------------------------------------------------------------------- main


def table(rows: list[Row], device: str, dtype: str) -> str:
    lines = [
        f"gpu_check on {device} ({dtype})",
        "",
        "| check | result | figure | s | detail |",
        "|---|---|---|---:|---|",
    ]
    lines += [f"| {r.check} | {r.result} | {r.figure} | {r.seconds:.1f} | {r.detail} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--dtype", help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--hidden", type=int, default=None, help="model width (default 512 on CUDA, 128 on CPU)")
    parser.add_argument("--layers", type=int, default=None, help="decoder blocks (default 4 on CUDA, 2 on CPU)")
    parser.add_argument("--skip", nargs="*", default=[], help="checks to leave out (by their first word)")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    import torch

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --device cpu", file=sys.stderr)
        return 2
    dtype = args.dtype or ("float32" if device == "cpu" else "bfloat16")
    hidden = args.hidden or (128 if device == "cpu" else 512)
    layers = args.layers or (2 if device == "cpu" else 4)
    if device == "cpu":
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="qtrust-gpu-check-") as tmp:
        model = build_model(Path(tmp) / "model", hidden, layers)
        cache = Path(tmp) / "variants"
        reference: list[float] = []
        checks: list[tuple[str, Callable[[], tuple[bool, str, str]]]] = [
            ("prefix scoring", lambda: check_prefix_scoring(model, dtype, device)),
            ("prefix generation", lambda: check_prefix_generation(model, dtype, device)),
        ]
        for method in ("gptq", "awq"):
            recipe = {
                "method": method,
                "bits": 4,
                "group_size": 32,
                "storage": "packed",
                "calibration": {"samples": 8, "seq_len": 64},
            }
            checks.append((f"{method} w4", lambda r=recipe: check_variant(model, r, dtype, device, cache, reference)))
        checks.append(("bnb nf4", lambda: check_bnb(model, dtype, device, cache, reference)))
        for shape in ((1, 16), (2, 8), (1, 8)):
            checks.append((f"aqlm {shape[0]}x{shape[1]}", lambda s=shape: check_aqlm(s, dtype, device)))
        for name, check in checks:
            if name.split()[0] in args.skip:
                continue
            rows.append(run_check(name, check))
            print(f"{name}: {rows[-1].result} {rows[-1].figure} {rows[-1].detail}", file=sys.stderr, flush=True)
    result = table(rows, device, dtype)
    print(result)
    if args.out:
        args.out.write_text(result + "\n")
    return 1 if any(r.result == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
