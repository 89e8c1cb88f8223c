"""Every quantization method on one model at 4, 3 and 2 bits: bits per weight, time, size, probe
perplexity and the demo benchmarks' primary metric.

Usage (from the repository root)::

    .venv/bin/python bench/quantize.py                      # built-in model, all methods, 4/3/2 bits
    .venv/bin/python bench/quantize.py --methods rtn gptq --bits 4 --samples 16 --no-sweep

Each variant is built the way a sweep's worker builds it (``cluster.variants.load.load_variant``) into a
fresh temporary variant cache, then loaded and probed, all in this one process and one run:

* ``build s``: quantization time including loading the base model and writing the checkpoint
  (cached methods); ``quantize s``: the algorithm alone where the backend reports it;
* ``size MB``: the checkpoint on disk (cached methods, the reference and prequantized folders) or
  the model's memory footprint (bnb and hqq quantize at load time and write nothing);
* ``bits/w``: real bits per quantized weight as the build reports them (codes, codebooks, scales and
  zero points included; QUIK's full-precision outlier columns included);
* ``probe ppl``: perplexity on qtrust's fixed probe text (``cluster/quantization/texts/probe.txt``);
* the demo benchmarks' primary metric with its 95% interval (``--sweep``, the default): the
  variants, already built, run as one sweep over machine ethics and XSTest (48 items each) on a
  private local Ray, exactly as ``qtrust run`` runs them.

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
from cluster.quantization.methods import get_method  # noqa: E402
from cluster.quantization.recipes import QuantRecipe  # noqa: E402
from cluster.variants.key import variant_key  # noqa: E402
from cluster.variants.load import VariantSource, load_variant  # noqa: E402
from jobs.plan.calibration import resolve_calibration  # noqa: E402

METHODS = ("rtn", "gptq", "awq", "hqq", "bnb", "aqlm", "quip_sharp", "quik")
#: The demo's benchmarks and sizes, measured per variant by ``--sweep``.
SWEEP_BENCHMARKS = [
    {"name": "machine_ethics", "limit": 48, "max_new_tokens": 8},
    {"name": "xstest", "limit": 48, "max_new_tokens": 40},
]


def recipe_for(method: str, bits: int, args: argparse.Namespace) -> QuantRecipe | None:
    """The recipe measured for ``method`` at ``bits`` (None where the method has no such width)."""
    entry = get_method(method)
    if bits not in entry.bits:
        return None
    fields: dict[str, Any] = {"method": method, "bits": bits}
    if entry.calibrated:
        fields["calibration"] = {"samples": args.samples, "seq_len": args.seq_len}
    if entry.layerwise:
        fields["group_size"] = args.group_size
    return QuantRecipe.model_validate(fields)


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
        "bits_per_weight": float(report.get("bits_per_weight", "nan")),
        "ppl": float(report["probe_perplexity"]),
        "recipe": recipe,
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.1f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the measured rows."""
    benches = [b["name"] for b in SWEEP_BENCHMARKS] if any("metrics" in r for r in rows) else []
    head = "| method | bits | storage | bits/w | build s | quantize s | load+build+probe s | size MB | probe ppl |"
    head += "".join(f" {b} |" for b in benches)
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(benches)]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['method']} | {r['bits']} | {r['skipped']} | | | | | | |" + " |" * len(benches))
            continue
        size = _fmt(r["size_mb"]) + (" (memory)" if r["size_kind"] != "disk" else "")
        bpw = "–" if math.isnan(r["bits_per_weight"]) else f"{r['bits_per_weight']:.2f}"
        cells = "".join(f" {r.get('metrics', {}).get(b, '–')} |" for b in benches)
        lines.append(
            f"| {r['method']} | {r['bits']} | {r['storage']} | {bpw} | {_fmt(r['build_s'])} | {_fmt(r['quantize_s'])} | "
            f"{_fmt(r['total_s'])} | {size} | {_fmt(r['ppl'], 4)} |{cells}"
        )
    return "\n".join(lines)


def sweep_metrics(rows: list[dict[str, Any]], model: str, cache: Path, threads: int) -> None:
    """Run the measured variants (already in ``cache``) as one sweep on the demo's benchmarks and put
    each variant's primary metric with its 95% interval into its row (``metrics``)."""
    from jobs.runner import run_sweep
    from jobs.spec.load import parse_spec
    from jobs.spec.run_options import RunOptions
    from trust.benchmarks.data import resolve_data_dir

    measured = [r for r in rows if not r.get("skipped")]
    recipes = []
    for index, row in enumerate(measured):
        recipe = row["recipe"].model_dump(mode="json", exclude_defaults=True)
        row["variant_name"] = f"v{index}"
        recipes.append({"name": row["variant_name"], **recipe})
    with tempfile.TemporaryDirectory(prefix="qtrust-bench-sweep-") as tmp:
        spec = parse_spec(
            {
                "name": "bench-quantize",
                "models": [{"name": "m", "source": model, "dtype": "float32"}],
                "recipes": recipes,
                "benchmarks": SWEEP_BENCHMARKS,
                "generation": {"batch_size": 8},
                "resources": {"num_cpus": max(1, threads // 2), "max_in_flight": 2},
                "storage": {"root": str(Path(tmp) / "runs")},
            }
        )
        outcome = run_sweep(
            spec,
            RunOptions(
                data_dir=resolve_data_dir(None),
                tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                quiet=True,
                variant_cache=str(cache),
            ),
        )
        frame = outcome.comparison.frame
        for row in measured:
            mine = frame[(frame["name"] == f"m-{row['variant_name']}") & (frame["primary"].astype(bool))]
            row["metrics"] = {
                r["benchmark"]: f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" for r in mine.to_dict("records")
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="built-in name or local folder")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--bits", nargs="+", type=int, default=[4, 3, 2])
    parser.add_argument(
        "--group-size", type=int, default=64, help="64: the built-in model's width 576 is not a multiple of 128"
    )
    parser.add_argument("--samples", type=int, default=16, help="calibration samples of the calibrated methods")
    parser.add_argument(
        "--sweep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the variants on the demo benchmarks (primary metric with its interval)",
    )
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    parser.add_argument(
        "--variant-cache",
        type=Path,
        help="keep the built variants in this folder (default: a temporary one); a variant already there is "
        "loaded, not built, and its row says 'cached' instead of build times",
    )
    args = parser.parse_args()

    model_path = resolve_model_path(args.model)
    identity = model_identity(args.model)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qtrust-bench-variants-") as tmp:
        cache = args.variant_cache or Path(tmp)
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
        if args.sweep:
            sweep_metrics(rows, args.model, cache, args.threads)
    result = table(rows)
    header = (
        f"model {args.model}, group size {args.group_size} (scalar methods), calibration {args.samples} × "
        f"{args.seq_len} tokens of qtrust's built-in text (calibrated methods), {args.threads} threads, one run"
        + ("; metric columns: primary metric [95% interval] on 48 items each" if args.sweep else "")
        + "\n\n"
    )
    print("\n" + header + result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + result + "\n")


if __name__ == "__main__":
    main()
