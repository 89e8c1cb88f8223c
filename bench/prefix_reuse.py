"""Shared prompt prefixes computed once: before / after, per engine, in one run.

Usage (from the repository root, with ``QTRUST_DATA_DIR`` set)::

    .venv/bin/python bench/prefix_reuse.py                                   # every part
    .venv/bin/python bench/prefix_reuse.py --parts hf-score,hf-fewshot --n 16
    .venv/bin/python bench/prefix_reuse.py --out bench/results/prefix_reuse.md

Parts (the built-in SmolLM2-135M-Instruct, float32, batch 8, the same requests before and after,
rendered as a sweep renders them; "before" always runs first, on a cold cache):

- ``hf-score``: TruthfulQA MC1 option scoring, every option a full sequence
  (``HFEngine.loglikelihood_per_option``) against shared prefixes once, batched across items;
- ``hf-fewshot``: ``machine_ethics_fewshot`` generation (32 demonstrations, 8 new tokens) with
  ``hf.prefix_generation`` off and on;
- ``vllm-score``: the same MC1 scoring through vLLM, prompt log-probabilities computed in full (vLLM's
  default for them) against reading the prefix cache (``vllm.prefix_scoring``);
- ``vllm-fewshot``: the few-shot generation through vLLM with the prefix cache skipped and read.

Printed per part: wall seconds, items/s, the after / before speed-up, and agreement (max |Δ
log-prob| and same chosen option, or same greedy text). Exit 1 when an agreement check fails.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.engines.base import (  # noqa: E402
    GenerationRequest,
    GenerationResult,
    GenerationSettings,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)
from cluster.models.sources import resolve_model_path  # noqa: E402
from trust.benchmarks import get_benchmark  # noqa: E402
from trust.benchmarks.data import resolve_data_dir  # noqa: E402

PARTS = ("hf-score", "hf-fewshot", "vllm-score", "vllm-fewshot")
TOL = 1e-4


def _items(benchmark: str, n: int) -> list[Any]:
    return get_benchmark(benchmark).load_all(resolve_data_dir(None))[:n]


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _timed(fn: Callable[[], list[Any]]) -> tuple[list[Any], float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _score_row(
    part: str,
    before: list[LoglikelihoodResult],
    after: list[LoglikelihoodResult],
    walls: tuple[float, float],
    extra: str,
) -> dict[str, Any]:
    errors = sum(r.error is not None for r in before + after)
    delta = max((abs(a - b) for o, n in zip(before, after) for a, b in zip(o.logprobs, n.logprobs)), default=0.0)
    same = sum(_argmax(o.logprobs) == _argmax(n.logprobs) for o, n in zip(before, after) if o.logprobs and n.logprobs)
    return {
        "part": part,
        "n": len(before),
        "before_s": walls[0],
        "after_s": walls[1],
        "errors": errors,
        "agreement": f"max abs Δ log-prob {delta:.1e}; same choice {same}/{len(before)}",
        "ok": errors == 0 and delta <= TOL and same == len(before),
        "extra": extra,
    }


def _generation_row(
    part: str, before: list[GenerationResult], after: list[GenerationResult], walls: tuple[float, float], extra: str
) -> dict[str, Any]:
    errors = sum(r.error is not None for r in before + after)
    same = sum(a.text == b.text for a, b in zip(before, after))
    return {
        "part": part,
        "n": len(before),
        "before_s": walls[0],
        "after_s": walls[1],
        "errors": errors,
        "agreement": f"same greedy text {same}/{len(before)}",
        "ok": errors == 0 and same == len(before),
        "extra": extra,
    }


def hf_parts(parts: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    from cluster.engines.hf import HFEngine
    from cluster.engines.hf_settings import HFSettings

    engine = HFEngine.from_pretrained(resolve_model_path("smollm2-135m"), dtype="float32", num_threads=args.threads)
    rows = []
    if "hf-score" in parts:
        requests = [
            LoglikelihoodRequest(i.id, i.messages, list(i.choices or [])) for i in _items("truthfulqa_mc1", args.n)
        ]
        settings = GenerationSettings(batch_size=args.batch)
        before, before_s = _timed(lambda: engine.loglikelihood_per_option(requests, settings))
        engine.scorer._shared.clear()
        passes, tokens = engine.scorer.forward_passes, engine.scorer.tokens_computed
        after, after_s = _timed(lambda: engine.loglikelihood(requests, settings))
        extra = (
            f"forward passes {engine.plain_forward_passes} → {engine.scorer.forward_passes - passes}; "
            f"tokens computed {engine.plain_tokens_computed} → {engine.scorer.tokens_computed - tokens}"
        )
        rows.append(_score_row("hf-score (truthfulqa_mc1)", before, after, (before_s, after_s), extra))
    if "hf-fewshot" in parts:
        requests = [GenerationRequest(i.id, i.messages) for i in _items("machine_ethics_fewshot", args.n)]
        settings = GenerationSettings(batch_size=args.batch, max_new_tokens=8)
        engine.configure(HFSettings(prefix_generation=False))
        start_tokens = engine.generated_prefill_tokens
        before, before_s = _timed(lambda: engine.generate(requests, settings))
        before_tokens = engine.generated_prefill_tokens - start_tokens
        engine.configure(HFSettings(prefix_generation=True))
        engine.scorer._shared.clear()
        start_tokens = engine.generated_prefill_tokens
        after, after_s = _timed(lambda: engine.generate(requests, settings))
        after_tokens = engine.generated_prefill_tokens - start_tokens
        prompt = len(engine.prompts.prompt_ids(requests[0].messages))
        extra = f"prompt ~{prompt} tokens; prompt tokens run per batch row {before_tokens} → {after_tokens} (+ the shared prefix once)"
        rows.append(_generation_row("hf-fewshot (machine_ethics_fewshot)", before, after, (before_s, after_s), extra))
    return rows


def vllm_parts(parts: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    from vllm import SamplingParams

    from cluster.engines.vllm_engine import VLLMEngine
    from cluster.engines.vllm_settings import VLLMSettings

    settings_v = VLLMSettings(max_model_len=2048, block_size=args.block_size)
    engine = VLLMEngine.load(
        resolve_model_path("smollm2-135m"), dtype="float32", settings=settings_v, num_threads=args.threads
    )
    block = engine.llm_kwargs.get("block_size", "vLLM's default")
    rows = []
    try:
        if "vllm-score" in parts:
            requests = [
                LoglikelihoodRequest(i.id, i.messages, list(i.choices or [])) for i in _items("truthfulqa_mc1", args.n)
            ]
            settings = GenerationSettings(batch_size=args.batch)
            engine.settings = settings_v.model_copy(update={"prefix_scoring": False})
            engine.reset_prefix_cache()
            before, before_s = _timed(lambda: engine.loglikelihood(requests, settings))
            engine.settings = settings_v.model_copy(update={"prefix_scoring": True})
            engine.reset_prefix_cache()
            engine.rescored_sequences = 0
            after, after_s = _timed(lambda: engine.loglikelihood(requests, settings))
            extra = f"KV block {block} tokens; options scored again without the cache: {engine.rescored_sequences}"
            rows.append(_score_row("vllm-score (truthfulqa_mc1)", before, after, (before_s, after_s), extra))
        if "vllm-fewshot" in parts:
            items = _items("machine_ethics_fewshot", args.n)
            prompts = [engine.prompts.prompt_ids(i.messages) for i in items]

            def run(skip: bool) -> list[GenerationResult]:
                params = SamplingParams(
                    temperature=0.0,
                    max_tokens=8,
                    stop_token_ids=sorted(engine.prompts.stop_ids),
                    skip_special_tokens=True,
                    skip_reading_prefix_cache=skip,
                )
                outputs = engine._run(prompts, params)
                return [
                    GenerationResult(
                        id=i.id, text=engine.prompts.decode(engine.prompts.cut_at_stop(list(o.outputs[0].token_ids)))
                    )
                    for i, o in zip(items, outputs)
                ]

            engine.reset_prefix_cache()
            before, before_s = _timed(lambda: run(True))
            engine.reset_prefix_cache()
            after, after_s = _timed(lambda: run(False))
            rows.append(
                _generation_row(
                    "vllm-fewshot (machine_ethics_fewshot)",
                    before,
                    after,
                    (before_s, after_s),
                    f"KV block {block} tokens",
                )
            )
    finally:
        engine.close()
    return rows


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"model smollm2-135m (float32); {args.n} items per part; batch {args.batch}; {args.threads} threads; "
        f"{platform.machine()}; one run" + (f"; {args.note}" if args.note else ""),
        "",
        "| part | items | before s | after s | before items/s | after items/s | after ÷ before speed | agreement |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['part']} | {r['n']} | {r['before_s']:.1f} | {r['after_s']:.1f} | {r['n'] / r['before_s']:.2f} | "
            f"{r['n'] / r['after_s']:.2f} | {r['before_s'] / r['after_s']:.2f}x | {r['agreement']} |"
        )
    lines.append("")
    lines.extend(f"- {r['part']}: {r['extra']}" for r in rows if r["extra"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--n", type=int, default=24, help="items per part (default 24)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads (default 2)")
    parser.add_argument("--block-size", type=int, default=None, help="vLLM KV block size (default: qtrust's)")
    parser.add_argument("--note", default="", help="a line about the conditions, written into the report")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; use {', '.join(PARTS)}")

    rows = hf_parts(parts, args) if any(p.startswith("hf-") for p in parts) else []
    if any(p.startswith("vllm-") for p in parts):
        rows += vllm_parts(parts, args)
    report = render(rows, args)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n", encoding="utf-8")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
