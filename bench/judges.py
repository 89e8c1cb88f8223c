"""Judging pipelined with generation against generation-then-judging, on the built-in model.

Usage (from the repository root, with the data folder set as for the demo)::

    .venv/bin/python bench/judges.py --items 24 --out bench/results/judges.md

One sweep: the built-in model (reference precision) answers OpenSafetyMini and XSTest; a model
judge (the built-in model again, a weak stand-in: it chooses a label of the benchmark's judge
template by log-likelihood) and the rule judge judge every answer. Measured in one run, each side in
a fresh store with its own private local Ray (0.9 CPU for the generation replica, one for the
model judge's, 0.05 for the rule judge's; one torch thread each):

- **pipelined**: one ``run_sweep`` with the judges: judge tasks start as generation shards commit.
- **sequential**: ``run_sweep`` without judges, then ``run_sweep(judge_only=True)`` with them (what
  ``qtrust judge`` does): judging starts after the last answer.

Reported: wall time of each side and their ratio (target pipelined ≤ 0.7 × sequential when the two
stages take similar time), generation and judge throughput (answers per second of each stage's
compute phase in the sequential runs), and the pipelined run's timeline from shard timestamps
(first judgment, last generation, last judgment).
"""

from __future__ import annotations

import argparse
import glob
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def spec_data(items: int, root: Path, judges: bool) -> dict[str, Any]:
    benches = [
        {"name": "opensafetymini", "limit": items, "max_new_tokens": 48},
        {"name": "xstest", "limit": items, "max_new_tokens": 48},
    ]
    if judges:
        for bench in benches:
            bench.update({"judges": ["model", "rule"], "judge": "model"})
    return {
        "name": "judges-bench",
        "models": [{"name": "smollm2", "source": "smollm2-135m"}],
        "recipes": [{"name": "ref", "method": "none"}],
        "benchmarks": benches,
        "judges": [
            {
                "name": "model",
                "kind": "model",
                "model": "smollm2-135m",
                "decoding": "choose",
                "batch_size": 8,
                "resources": {"num_cpus": 1},
            },
            {"name": "rule", "kind": "rule"},
        ]
        if judges
        else [],
        "shard_size": 4,
        "quality_probe": False,
        "resources": {"num_cpus": 0.9},  # the generation replica, the model judge and the rule judge fit on 2 CPUs
        "storage": {"root": str(root)},
    }


def stamps(store: Path, kind: str) -> list[float]:
    import pandas as pd

    pattern = "judgments/judge=*/variant=*/benchmark=*" if kind == "judgments" else "generations/variant=*/benchmark=*"
    files = glob.glob(str(store / pattern / "shard-*.parquet"))
    return (
        sorted(pd.concat([pd.read_parquet(f, columns=["committed_at"]) for f in files])["committed_at"].tolist())
        if files
        else []
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=24, help="items per benchmark")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from rich.console import Console

    from jobs.runner import run_sweep
    from jobs.spec.load import parse_spec
    from jobs.spec.run_options import RunOptions
    from trust.benchmarks.data import resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir)
    console = Console(quiet=True)
    work = Path(tempfile.mkdtemp(prefix="qtrust-judges-bench-"))
    uri = f"sqlite:///{work}/mlflow.db"

    def run(spec: dict[str, Any], **options: Any):
        start = time.perf_counter()
        outcome = run_sweep(
            parse_spec(spec),
            RunOptions(data_dir=data_dir, tracking_uri=uri, quiet=True, num_cpus=2, **options),
            console,
        )
        return outcome, time.perf_counter() - start

    # Sequential first (generation alone, then judging alone), then pipelined, each in its own store.
    gen_outcome, gen_s = run(spec_data(args.items, work / "sequential", judges=False))
    judge_outcome, judge_s = run(spec_data(args.items, work / "sequential", judges=True), judge_only=True)
    piped_outcome, piped_s = run(spec_data(args.items, work / "pipelined", judges=True))
    sequential_s = gen_s + judge_s

    answers = gen_outcome.items_computed
    judged = judge_outcome.judged
    store = Path(piped_outcome.store.dir)
    generations, judgments = stamps(store, "generations"), stamps(store, "judgments")
    t0 = generations[0] if generations else 0.0
    result = {
        "items_per_benchmark": args.items,
        "answers": answers,
        "judgments": judged,
        "sequential": {
            "generation_s": round(gen_s, 1),
            "judging_s": round(judge_s, 1),
            "total_s": round(sequential_s, 1),
            "generation_compute_s": round(gen_outcome.timings.get("compute_s", 0.0), 1),
            "judging_compute_s": round(judge_outcome.timings.get("compute_s", 0.0), 1),
        },
        "pipelined_s": round(piped_s, 1),
        "ratio_pipelined_over_sequential": round(piped_s / sequential_s, 3),
        "target_ratio": 0.7,
        "generation_answers_per_s": round(answers / max(1e-9, gen_outcome.timings.get("compute_s", 0.0)), 3),
        "judge_answers_per_s": round(judged / max(1e-9, judge_outcome.timings.get("compute_s", 0.0)), 3),
        "timeline_s": {
            "first_generation": 0.0,
            "first_judgment": round(judgments[0] - t0, 1) if judgments else None,
            "last_generation": round(generations[-1] - t0, 1) if generations else None,
            "last_judgment": round(judgments[-1] - t0, 1) if judgments else None,
        },
        "pipelined_judged": piped_outcome.judged,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
    }
    met = result["ratio_pipelined_over_sequential"] <= 0.7
    lines = [
        "# Judging pipelined with generation (bench/judges.py)",
        "",
        f"Built-in model answering OpenSafetyMini + XSTest ({args.items} items each, {answers} answers); judged by the",
        "built-in model (choose decoding, a weak stand-in) and the rule judge. One run, each side in a fresh store.",
        "",
        "| side | wall s |",
        "|---|---:|",
        f"| sequential: generation | {gen_s:.1f} |",
        f"| sequential: judging (`judge_only`) | {judge_s:.1f} |",
        f"| sequential total | {sequential_s:.1f} |",
        f"| pipelined | {piped_s:.1f} |",
        "",
        f"**pipelined ÷ sequential = {result['ratio_pipelined_over_sequential']:.3f}** (target ≤ 0.70: {'met' if met else 'MISSED'})",
        "",
        f"Throughput (compute phase of the sequential runs): generation {result['generation_answers_per_s']} answers/s, "
        f"judging {result['judge_answers_per_s']} judgments/s ({judged} judgments by 2 judges).",
        "",
        "Pipelined timeline from shard timestamps (s after the first generation shard): "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["timeline_s"].items()),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    print(json.dumps(result, indent=1))
    if args.out:
        out = Path(args.out)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
