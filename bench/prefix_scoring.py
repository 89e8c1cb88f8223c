"""HF option scoring: per-option full sequences (old) vs shared prefixes computed once (new).

Usage (from the repository root, with ``QTRUST_DATA_DIR`` set)::

    .venv/bin/python bench/prefix_scoring.py                       # 40 TruthfulQA MC1 questions, batch 8
    .venv/bin/python bench/prefix_scoring.py --n 10 --threads 1 --out bench/results/prefix_scoring.md

Both paths run in this process on the same engine (the built-in SmolLM2-135M-Instruct, float32)
over the same requests, rendered as the sweep renders them. Printed per path: wall seconds,
items/s, model forward passes and tokens run through the model (padding included), the
old / new ratios, and agreement (max |Δ log-prob|, same chosen option). The new path's call-wide
prefix cache is cleared before it runs, so its time includes computing the shared preamble.
Generation with shared demonstrations (machine_ethics_fewshot) is not measured: prefix reuse is
not implemented for generation yet.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.engines.base import GenerationSettings, LoglikelihoodRequest, LoglikelihoodResult  # noqa: E402
from cluster.engines.hf import HFEngine  # noqa: E402
from cluster.models.sources import resolve_model_path  # noqa: E402
from trust.benchmarks import get_benchmark  # noqa: E402
from trust.data import resolve_data_dir  # noqa: E402


def _requests(benchmark: str, n: int) -> list[LoglikelihoodRequest]:
    items = get_benchmark(benchmark).load_all(resolve_data_dir(None))[:n]
    return [LoglikelihoodRequest(item.id, item.messages, list(item.choices or [])) for item in items]


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _run(engine: HFEngine, requests: list[LoglikelihoodRequest], batch: int, new: bool) -> tuple[list[LoglikelihoodResult], dict[str, float]]:
    settings = GenerationSettings(batch_size=batch)
    engine.scorer._shared.clear()
    passes = (engine.scorer.forward_passes, engine.plain_forward_passes)
    tokens = (engine.scorer.tokens_computed, engine.plain_tokens_computed)
    start = time.perf_counter()
    results = engine.loglikelihood(requests, settings) if new else engine.loglikelihood_per_option(requests, settings)
    wall = time.perf_counter() - start
    stats = {
        "wall_s": wall,
        "items_s": len(requests) / wall,
        "passes": (engine.scorer.forward_passes - passes[0]) + (engine.plain_forward_passes - passes[1]),
        "tokens": (engine.scorer.tokens_computed - tokens[0]) + (engine.plain_tokens_computed - tokens[1]),
    }
    return results, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="questions (default 40)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--benchmark", default="truthfulqa_mc1")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--note", default="", help="a line about the conditions, written into the report")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args(argv)

    engine = HFEngine.from_pretrained(resolve_model_path("smollm2-135m"), dtype="float32", num_threads=args.threads)
    requests = _requests(args.benchmark, args.n)
    options = sum(len(r.continuations) for r in requests)
    old, old_stats = _run(engine, requests, args.batch, new=False)
    new, new_stats = _run(engine, requests, args.batch, new=True)
    errors = [r.id for r in old + new if r.error]
    delta = max(abs(a - b) for o, n in zip(old, new) for a, b in zip(o.logprobs, n.logprobs))
    same = sum(_argmax(o.logprobs) == _argmax(n.logprobs) for o, n in zip(old, new) if o.logprobs and n.logprobs)

    lines = [
        f"model smollm2-135m (float32); {args.benchmark} {len(requests)} questions, {options} options; "
        f"batch {args.batch}; {args.threads} torch threads; {platform.machine()}; one run"
        + (f"; {args.note}" if args.note else ""),
        "",
        "| path | wall s | items/s | forward passes | tokens computed |",
        "|---|---:|---:|---:|---:|",
        f"| old: one full sequence per option | {old_stats['wall_s']:.1f} | {old_stats['items_s']:.2f} | "
        f"{old_stats['passes']:.0f} | {old_stats['tokens']:.0f} |",
        f"| new: shared prefixes once, batched across items | {new_stats['wall_s']:.1f} | {new_stats['items_s']:.2f} | "
        f"{new_stats['passes']:.0f} | {new_stats['tokens']:.0f} |",
        f"| old / new | {old_stats['wall_s'] / new_stats['wall_s']:.2f}x | | "
        f"{old_stats['passes'] / max(1, new_stats['passes']):.2f}x | {old_stats['tokens'] / max(1, new_stats['tokens']):.2f}x |",
        "",
        f"agreement: max |Δ log-prob| {delta:.2e}; same chosen option {same}/{len(requests)}; errors {len(errors)}",
        "",
        "Not measured: machine_ethics_fewshot generation (prefix reuse for generation is not implemented).",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n", encoding="utf-8")
    return 0 if not errors and delta <= 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
