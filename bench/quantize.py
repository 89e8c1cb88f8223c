"""Every quantization recipe on one model at 8, 4, 3 and 2 bits: time, size and probe perplexity.

Usage (from the repository root)::

    .venv/bin/python bench/quantize.py                      # built-in model, all methods, 8/4/3/2 bits
    .venv/bin/python bench/quantize.py --methods rtn gptq --bits 4 --samples 16

Each variant is built the way a sweep's worker builds it (``cluster.variants.load.load_variant``) into a
fresh temporary variant cache, then loaded and probed, all in this one process and one run:

* ``build s``: quantization time including loading the base model and writing the checkpoint
  (cached methods); ``quantize s``: the algorithm alone where the backend reports it;
* ``size MB``: the checkpoint on disk (cached methods, the reference and prequantized folders) or
  the model's memory footprint (bnb and hqq quantize at load time and write nothing);
* ``probe ppl``: perplexity on qtrust's fixed probe text (``cluster/quantization/texts/probe.txt``).

bnb quantizes to 8 bits (int8) or 4 bits (nf4) only; other widths are reported as not applicable.
The built-in model's "full precision" is SmolLM2-135M dequantized from its Q4_1 GGUF.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.models.sources import model_identity, resolve_model_path  # noqa: E402
from cluster.quantization.recipes import HQQ_BITS, QuantRecipe  # noqa: E402
from cluster.variants.key import variant_key  # noqa: E402
from cluster.variants.load import VariantSource, load_variant  # noqa: E402
from jobs.plan.calibration import resolve_calibration  # noqa: E402

METHODS = ("rtn", "gptq", "awq", "hqq", "bnb")


def recipe_for(method: str, bits: int, args: argparse.Namespace) -> QuantRecipe | None:
    """The recipe measured for ``method`` at ``bits`` (None where the method has no such width)."""
    if method == "bnb":
        return QuantRecipe(method="bnb", bits=bits) if bits in (4, 8) else None
    if method == "hqq" and bits not in HQQ_BITS:
        return None
    calibration = {"samples": args.samples, "seq_len": args.seq_len} if method in ("gptq", "awq") else None
    return QuantRecipe(method=method, bits=bits, group_size=args.group_size, calibration=calibration)


def measure(model_path: Path, identity: str, recipe: QuantRecipe, cache: Path, threads: int) -> dict[str, Any]:
    """Build, load and probe one variant; return its row."""
    texts = None
    digest = None
    if recipe.calibration is not None:
        calibration = resolve_calibration(recipe.calibration, None)
        texts, digest = calibration.texts, calibration.digest
    key = variant_key(identity, recipe.key_fields(), digest, "float32")
    source = VariantSource(
        model_path=model_path, recipe=recipe, variant_key=key, calibration_texts=texts, variant_cache=str(cache)
    )
    started = time.perf_counter()
    engine = load_variant(source, num_threads=threads, quality_probe=True)
    total = time.perf_counter() - started
    report = engine.quantization
    return {
        "method": recipe.method,
        "bits": recipe.bits or "ref",
        "storage": report.get("storage"),
        "build_s": float(report.get("build_s", report.get("quantize_s", "nan"))),
        "quantize_s": float(report.get("quantize_s", "nan")),
        "total_s": total,
        "size_mb": int(report["size_bytes"]) / 2**20,
        "size_kind": report.get("size_kind", "disk"),
        "ppl": float(report["probe_perplexity"]),
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.1f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the measured rows."""
    head = "| method | bits | storage | build s | quantize s | load+build+probe s | size MB | probe ppl |"
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['method']} | {r['bits']} | {r['skipped']} | | | | | |")
            continue
        size = _fmt(r["size_mb"]) + (" (memory)" if r["size_kind"] != "disk" else "")
        lines.append(
            f"| {r['method']} | {r['bits']} | {r['storage']} | {_fmt(r['build_s'])} | {_fmt(r['quantize_s'])} | "
            f"{_fmt(r['total_s'])} | {size} | {_fmt(r['ppl'], 4)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="built-in name or local folder")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--bits", nargs="+", type=int, default=[8, 4, 3, 2])
    parser.add_argument(
        "--group-size", type=int, default=64, help="64: the built-in model's width 576 is not a multiple of 128"
    )
    parser.add_argument("--samples", type=int, default=32, help="calibration samples for gptq/awq")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()

    model_path = resolve_model_path(args.model)
    identity = model_identity(args.model)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qtrust-bench-variants-") as tmp:
        cache = Path(tmp)
        rows.append(measure(model_path, identity, QuantRecipe(), cache, args.threads))
        print(table(rows[-1:]), flush=True)
        for method in args.methods:
            for bits in args.bits:
                recipe = recipe_for(method, bits, args)
                if recipe is None:
                    rows.append({"method": method, "bits": bits, "skipped": "not applicable"})
                    continue
                try:
                    rows.append(measure(model_path, identity, recipe, cache, args.threads))
                except Exception as err:
                    rows.append(
                        {"method": method, "bits": bits, "skipped": f"failed: {type(err).__name__}: {err}"[:120]}
                    )
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    result = table(rows)
    header = (
        f"model {args.model}, group size {args.group_size}, gptq/awq calibration {args.samples} × {args.seq_len} tokens "
        f"of qtrust's built-in text, {args.threads} threads, one run\n\n"
    )
    print("\n" + header + result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + result + "\n")


if __name__ == "__main__":
    main()
