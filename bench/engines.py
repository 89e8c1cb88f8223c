"""Hugging Face vs vLLM: throughput and agreement on the same items and variants, in one run.

Usage (from the repository root, with the data folder set as for the demo)::

    .venv/bin/python bench/engines.py                      # the demo's items, ref + rtn-w4 + gptq-w4
    .venv/bin/python bench/engines.py --variants ref --limit 16 --out bench/results/engines.md

For every variant, both engines load it in this process (one after the other, the same number of
threads) and answer the same items: the demo sweep's generation benchmarks (machine ethics and
XSTest, 48 items each, with their token budgets) and, for scoring, TruthfulQA MC1 items. Printed:
load seconds, items/s and generated tokens/s (generation time only), log-likelihood items/s, the
vLLM / HF ratios measured in this run, and how often the two engines' greedy answers agree.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.engines.base import (  # noqa: E402
    GenerationRequest,
    GenerationSettings,
    LoglikelihoodRequest,
)
from cluster.models.sources import model_identity, resolve_model_path  # noqa: E402
from cluster.quantization.recipes import QuantRecipe  # noqa: E402
from cluster.variants.key import variant_key  # noqa: E402
from cluster.variants.load import VariantSource, load_variant  # noqa: E402
from jobs.plan.build import load_benchmarks  # noqa: E402
from jobs.plan.calibration import resolve_calibration  # noqa: E402
from jobs.spec.load import load_spec, parse_spec  # noqa: E402
from trust.benchmarks.data import resolve_data_dir  # noqa: E402

RECIPES: dict[str, dict[str, Any]] = {
    "ref": {"method": "none"},
    "rtn-w4": {"method": "rtn", "bits": 4, "group_size": 64},
    "gptq-w4": {"method": "gptq", "bits": 4, "group_size": 64, "calibration": {"samples": 8, "seq_len": 128}},
    "awq-w4": {"method": "awq", "bits": 4, "group_size": 64, "calibration": {"samples": 8, "seq_len": 128}},
}


def _source(model: str, name: str, data_dir: Path) -> VariantSource:
    recipe = QuantRecipe.model_validate(RECIPES[name])
    calibration = resolve_calibration(recipe.calibration, data_dir) if recipe.calibration else None
    key = variant_key(
        model_identity(model), recipe.key_fields(), calibration.digest if calibration else None, "float32"
    )
    return VariantSource(
        model_path=resolve_model_path(model),
        recipe=recipe,
        variant_key=key,
        calibration_texts=list(calibration.texts) if calibration else None,
        describe={"variant": f"bench-{name}", "model": model},
    )


def measure(
    engine_name: str, source: VariantSource, runs: dict[str, Any], ll_items: list[Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Load the variant on one engine and time generation and scoring."""
    start = time.perf_counter()
    engine = load_variant(
        source,
        engine=engine_name,
        num_threads=args.threads,
        quality_probe=False,
        vllm_settings={"max_model_len": 4096, "cpu_kv_cache_gib": 2},
    )
    load_s = time.perf_counter() - start
    answers: dict[str, list[str | None]] = {}
    items = tokens = 0
    gen_s = 0.0
    for name, run in runs.items():
        requests = [GenerationRequest(it.id, it.messages) for it in run.items]
        started = time.perf_counter()
        results = engine.generate(
            requests, GenerationSettings(max_new_tokens=run.max_new_tokens, batch_size=args.batch_size)
        )
        gen_s += time.perf_counter() - started
        errors = [r.error for r in results if r.error]
        assert not errors, errors[:3]
        answers[name] = [r.text for r in results]
        items += len(results)
        tokens += sum(r.completion_tokens for r in results)
    started = time.perf_counter()
    scored = engine.loglikelihood(
        [LoglikelihoodRequest(it.id, it.messages, list(it.choices or [])) for it in ll_items],
        GenerationSettings(batch_size=args.batch_size),
    )
    ll_s = time.perf_counter() - started
    choices = [max(range(len(r.logprobs)), key=r.logprobs.__getitem__) for r in scored]
    close = getattr(engine, "close", None)
    if close:
        close()
    del engine
    gc.collect()
    return {
        "load_s": load_s,
        "items": items,
        "gen_s": gen_s,
        "items_per_s": items / gen_s,
        "tokens": tokens,
        "tokens_per_s": tokens / gen_s,
        "ll_items": len(ll_items),
        "ll_items_per_s": len(ll_items) / ll_s if ll_items else float("nan"),
        "answers": answers,
        "choices": choices,
    }


def _agreement(a: dict[str, list[str | None]], b: dict[str, list[str | None]]) -> tuple[float, float]:
    same = first = total = 0
    for name in a:
        for x, y in zip(a[name], b[name]):
            total += 1
            same += x == y
            first += (x or "").split()[:1] == (y or "").split()[:1]
    return same / total, first / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--variants", default="ref,rtn-w4,gptq-w4", help=f"comma-separated, from {', '.join(RECIPES)}")
    parser.add_argument(
        "--limit", type=int, default=None, help="items per generation benchmark (default: the demo's 48)"
    )
    parser.add_argument("--ll-items", type=int, default=16, help="TruthfulQA MC1 items for log-likelihood scoring")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args()

    data_dir = resolve_data_dir(None)
    runs = load_benchmarks(load_spec(REPO / "examples" / "demo.yaml"), data_dir, args.limit)
    ll_spec = parse_spec(
        {
            "name": "ll",
            "models": [{"name": "m", "source": args.model}],
            "benchmarks": [{"name": "truthfulqa_mc1", "limit": args.ll_items}],
        }
    )
    ll_items = load_benchmarks(ll_spec, data_dir)["truthfulqa_mc1"].items if args.ll_items else []

    lines = [
        f"model {args.model}; items: {', '.join(f'{n} {len(r.items)} × ≤{r.max_new_tokens} tokens' for n, r in runs.items())}; "
        f"log-likelihood: truthfulqa_mc1 {len(ll_items)}; {args.threads} threads, batch {args.batch_size}, float32, greedy; "
        f"{platform.processor() or platform.machine()}; one run",
        "",
        "| variant | engine | load s | items/s | tokens/s | LL items/s | vLLM/HF items/s | vLLM/HF tokens/s | vLLM/HF LL | same text | same first word | same LL choice |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        source = _source(args.model, name, data_dir)
        hf = measure("hf", source, runs, ll_items, args)
        vl = measure("vllm", source, runs, ll_items, args)
        same, first = _agreement(vl["answers"], hf["answers"])
        same_ll = sum(a == b for a, b in zip(vl["choices"], hf["choices"])) / max(1, len(ll_items))
        for engine, row in (("hf", hf), ("vllm", vl)):
            ratios = (
                f"{vl['items_per_s'] / hf['items_per_s']:.2f} | {vl['tokens_per_s'] / hf['tokens_per_s']:.2f} | "
                f"{vl['ll_items_per_s'] / hf['ll_items_per_s']:.2f} | {same:.3f} | {first:.3f} | {same_ll:.3f}"
                if engine == "vllm"
                else "| | | | |"
            )
            lines.append(
                f"| {name} | {engine} | {row['load_s']:.1f} | {row['items_per_s']:.2f} | {row['tokens_per_s']:.1f} | "
                f"{row['ll_items_per_s']:.2f} | {ratios} |"
            )
        print("\n".join(lines[-2:]), flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
