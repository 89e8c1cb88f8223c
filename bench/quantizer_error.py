"""Each quantizer on its own: relative output error at equal bits, on Gaussian weights and real layers.

Usage (from the repository root)::

    .venv/bin/python bench/quantizer_error.py                 # 2, 3 and 4 bits
    .venv/bin/python bench/quantizer_error.py --bits 2 --out bench/results/quantizer_error.md

For a weight ``W [out, in]`` and the second moment of its inputs ``H = E[x xᵀ]``, the error is
``‖(W − Ŵ) X‖ / ‖W X‖ = sqrt(tr(Δ H Δᵀ) / tr(W H Wᵀ))``. Matrices:

* ``gaussian``: ``W ~ N(0, 1)`` of 512 × 1024 with inputs whose features are correlated (a random
  mixing matrix) and a few of them 10× larger, the way language-model activations look;
* the built-in model's layers (SmolLM2-135M): ``q_proj`` and ``down_proj`` of the first, middle and
  last decoder block, with ``H`` from qtrust's built-in calibration text on the float model.

Quantizers, each at the same nominal bits: ``rtn`` (scalar round-to-nearest, groups of 64, asymmetric,
qtrust's RTN), ``gptq`` (scalar, one symmetric scale per row, GPTQ error feedback with ``H``: the
solver QUIK uses), ``aqlm`` (additive codes, ``bits``×8 codebooks over groups of 8, fitted to
``H``) and ``quip#`` (randomized Hadamard + BlockLDLQ with the E8P codebook; residual E8P at 3/4
bits). The real bits per weight of each (scales, codebooks) are printed beside the errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from cluster.quantization.quik_linear import relative_output_error  # noqa: E402

QUANTIZERS = ("rtn", "gptq", "aqlm", "quip#")


def gaussian_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``W ~ N(0, 1)`` [512, 1024] and ``H`` of correlated inputs with a few large features."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(512, 1024, generator=g)
    mixing = torch.randn(1024, 1024, generator=g) / 32
    x = torch.randn(4096, 1024, generator=g) @ (torch.eye(1024) + mixing)
    x[:, torch.randperm(1024, generator=g)[:8]] *= 10
    return weight, x.T @ x / x.shape[0]


def model_cases(samples: int, seq_len: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Some of the built-in model's layers with their calibration ``H`` (float model, no quantization)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster.models.sources import resolve_model_path
    from cluster.quantization.layer_inputs import sequential_hessians, tokenize
    from cluster.quantization.targets import decoder_blocks
    from cluster.quantization.texts import load_text_set

    path = resolve_model_path("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    blocks = decoder_blocks(model)
    chosen = [blocks[0], blocks[len(blocks) // 2], blocks[-1]]
    names = [f"{b}.{part}" for b in chosen for part in ("self_attn.q_proj", "mlp.down_proj")]
    ids = tokenize(tokenizer, load_text_set("calibration")[:samples], seq_len)
    cases: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for _prefix, hessians in sequential_hessians(model, ids, names):
        for name, h in hessians.items():
            weight = model.get_submodule(name).weight.detach().clone()
            cases["smollm2 " + name.removeprefix("model.layers.").replace("self_attn.", "").replace("mlp.", "")] = (
                weight,
                h,
            )
    return cases


def quantize(kind: str, weight: torch.Tensor, h: torch.Tensor, bits: int) -> tuple[torch.Tensor, float]:
    """``Ŵ`` and its real bits per weight."""
    out_features, in_features = weight.shape
    if kind == "rtn":
        from cluster.quantization.rtn import quantize_tensor_rtn

        return quantize_tensor_rtn(weight, bits, 64, symmetric=False), bits + (16 + bits) / 64
    if kind == "gptq":
        from cluster.quantization.quik_linear import gptq, row_scales

        scale = row_scales(weight.float(), bits, importance=h.diagonal())
        return gptq(weight, h, in_features, scale, bits), bits + 16 / in_features
    if kind == "aqlm":
        from cluster.quantization.aqlm_search import AqSettings, fit_layer

        settings = AqSettings(num_codebooks=bits, nbits=8, beam_size=1)
        layer, _ = fit_layer(weight, h, settings)
        codebook_bits = bits * 256 * 8 * 32
        return layer.dequantize(), bits + (codebook_bits + out_features * 32) / weight.numel()
    if kind == "quip#":
        from cluster.quantization.hadamard import RandomHadamard
        from cluster.quantization.quip_sharp import QuipSharpParams, codebook_for, quantize_group

        result = quantize_group(
            [weight],
            h,
            codebook_for(bits),
            QuipSharpParams(),
            [RandomHadamard.create(out_features, 1)],
            RandomHadamard.create(in_features, 2),
        )[0]
        return result.weight, result.stored_bits / weight.numel()
    raise ValueError(kind)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--no-model", action="store_true", help="Gaussian weights only (no built-in model)")
    parser.add_argument("--samples", type=int, default=16, help="calibration texts for the model's layers")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    cases = {"gaussian 512x1024": gaussian_case()}
    if not args.no_model:
        cases.update(model_cases(args.samples, args.seq_len))
    rows: list[dict[str, Any]] = []
    for bits in args.bits:
        for case, (weight, h) in cases.items():
            row: dict[str, Any] = {"bits": bits, "matrix": case}
            for kind in QUANTIZERS:
                started = time.perf_counter()
                approx, bpw = quantize(kind, weight.float(), h.float(), bits)
                row[kind] = (relative_output_error(weight, approx, h), bpw, time.perf_counter() - started)
            rows.append(row)
            print(row["bits"], case, {k: f"{row[k][0]:.4f}" for k in QUANTIZERS}, file=sys.stderr, flush=True)
    head = "| bits | matrix | " + " | ".join(QUANTIZERS) + " |"
    lines = [
        "Relative output error ‖(W−Ŵ)X‖/‖WX‖ (real bits per weight in brackets); lower is better.",
        "",
        head,
        "|---|---|" + "---:|" * len(QUANTIZERS),
    ]
    for row in rows:
        cells = " | ".join(f"{row[k][0]:.4f} ({row[k][1]:.2f})" for k in QUANTIZERS)
        lines.append(f"| {row['bits']} | {row['matrix']} | {cells} |")
    wins = [r for r in rows if r["bits"] == 2]
    if wins:
        vector_best = sum(min(r["aqlm"][0], r["quip#"][0]) < min(r["rtn"][0], r["gptq"][0]) for r in wins)
        lines += [
            "",
            f"At 2 bits both vector codes beat both scalar roundings on "
            f"{sum(max(r['aqlm'][0], r['quip#'][0]) < min(r['rtn'][0], r['gptq'][0]) for r in wins)}/{len(wins)} "
            f"matrices; the better vector code beats them on {vector_best}/{len(wins)}.",
        ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
