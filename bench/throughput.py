"""Pipeline overhead: the same items through the bare engine in one process and through ``run_sweep``.

Usage (from the repository root, with the data folder set as for the demo)::

    .venv/bin/python bench/throughput.py --items 480 --out bench/results/throughput.md

Both sides run in a fresh Python process each (one after the other, never together) with the same
model, recipe, benchmark items (in the same order), batch size, token budget and number of CPU
threads, and both are timed from the process's start (imports included):

- **bare**: load the variant in the process and call ``engine.generate`` on every item.
- **pipeline**: ``jobs.runner.run_sweep`` on a one-variant sweep (private local Ray, one replica
  with ``--threads`` CPUs, shards of ``--shard-size`` items, Parquet store, MLflow tracking in a
  local SQLite file), with the sweep's own timings (``SweepOutcome.timings``), the replica's load
  report and its ready time.

Printed (and written to ``--out``): items/s of each, wall clock and generating only, the ratio
pipeline ÷ bare measured in this one run (target ≥ 0.95 wall clock), and the pipeline's fixed
costs item by item: driver imports, plan and store scan, Ray start, the replica's start (process and
imports) and its model load (from the load report), streaming overhead (time between the first
replica ready and the last commit that was not generation), scoring, tracking, and the rest.

The quality probe (a perplexity check every sweep runs on each variant by default) is turned off
so that both sides do the same work; ``--quality-probe`` turns it on and itemises it with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_T0 = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


# -- the two sides, each in its own process -------------------------------------------------------


def child_bare(args: argparse.Namespace) -> dict[str, Any]:
    from cluster.engines.base import GenerationRequest, GenerationSettings
    from cluster.models.sources import resolve_model_path
    from cluster.quantization.recipes import QuantRecipe
    from cluster.variants.load import VariantSource, load_variant
    from trust.benchmarks.catalog import get_benchmark
    from trust.benchmarks.data import resolve_data_dir

    imported = time.perf_counter()
    items = get_benchmark(args.benchmark).load(resolve_data_dir(args.data_dir), args.items)
    path = resolve_model_path(args.model)
    start = time.perf_counter()
    engine = load_variant(
        VariantSource(model_path=path, recipe=QuantRecipe(method="none")),
        num_threads=args.threads,
        quality_probe=args.quality_probe,
    )
    loaded = time.perf_counter()
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    results = engine.generate([GenerationRequest(it.id, it.messages) for it in items], settings)
    done = time.perf_counter()
    errors = [r.error for r in results if r.error]
    if errors:
        raise SystemExit(f"bare engine errors: {errors[:3]}")
    return {
        "items": len(items),
        "imports_s": imported - _T0,
        "items_s": start - imported,
        "load_s": loaded - start,
        "generate_s": done - loaded,
        "busy_s": sum(r.latency_s for r in results),
        "process_s": done - _T0,
        "completion_tokens": sum(r.completion_tokens for r in results),
    }


def child_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console

    from jobs.pipeline import state as state_module
    from jobs.runner import run_sweep
    from jobs.spec.load import parse_spec
    from jobs.spec.run_options import RunOptions

    imported = time.perf_counter()
    tmp = Path(args.work)
    spec = parse_spec(
        {
            "name": "throughput",
            "models": [{"name": "m", "source": args.model}],
            "recipes": [{"name": "ref", "method": "none"}],
            "benchmarks": [{"name": args.benchmark, "limit": args.items, "max_new_tokens": args.max_new_tokens}],
            "generation": {"batch_size": args.batch_size},
            "resources": {"num_cpus": args.threads, "max_in_flight": args.max_in_flight},
            "shard_size": args.shard_size,
            "quality_probe": args.quality_probe,
            "storage": {"root": str(tmp / "runs")},
        },
        "throughput",
    )
    parsed = time.perf_counter()
    events: dict[str, float] = {}
    original = state_module.SweepState.replica_state

    def replica_state(self, pool: str, index: int, state: str, info: dict[str, Any]) -> None:
        events.setdefault(state, time.time())
        return original(self, pool, index, state, info)

    state_module.SweepState.replica_state = replica_state  # type: ignore[method-assign]
    started = time.time()
    start = time.perf_counter()
    outcome = run_sweep(
        spec,
        RunOptions(
            data_dir=args.data_dir,
            tracking_uri=f"sqlite:///{tmp}/mlflow.db",
            quiet=True,
            num_cpus=args.ray_cpus,
            storage_root=tmp / "runs",
        ),
        Console(file=open(os.devnull, "w")),
    )
    run_s = time.perf_counter() - start
    if outcome.failed:
        raise SystemExit(f"pipeline: failed shards {outcome.failed}")
    records = outcome.store.scan().records
    workers = outcome.store.read_manifest().get("workers", {})
    load = next(iter(workers.values()), {})
    return {
        "items": int(outcome.items_computed),
        "imports_s": imported - _T0,
        "spec_s": parsed - imported,
        "run_s": run_s,
        "process_s": time.perf_counter() - _T0,
        "timings": outcome.timings,
        "busy_s": float(records["latency_s"].sum()),
        "completion_tokens": int(records["completion_tokens"].sum()),
        "run_started": started,
        "loading_at": events.get("loading"),
        "ready_at": events.get("ready"),
        "first_commit": float(records["committed_at"].min()),
        "last_commit": float(records["committed_at"].max()),
        "load_seconds": float(load.get("load_seconds") or 0.0),
        "quantization": {
            k: v for k, v in (load.get("quantization") or {}).items() if k in ("load_s", "probe_perplexity", "probe_s")
        },
        "tracking_failures": outcome.tracking_failures,
    }


def run_child(side: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", side, "--work", str(work), *args.passthrough]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


# -- the report ----------------------------------------------------------------------------------


def fixed_costs(p: dict[str, Any]) -> list[tuple[str, float]]:
    """The pipeline's wall clock, item by item (they add up to its wall time)."""
    t = p["timings"]
    ray_start = t.get("ray_start_s", 0.0)
    load = p["load_seconds"]
    # From run_sweep's start: plan, scan, tracking open + manifest, Ray, the pool and its replica.
    before_ray = p["loading_at"] - p["run_started"] if p["loading_at"] else 0.0
    replica = (p["ready_at"] - p["loading_at"]) if p["ready_at"] and p["loading_at"] else 0.0
    stream = p["last_commit"] - p["ready_at"] if p["ready_at"] else 0.0
    after_last = p["run_s"] - (p["last_commit"] - p["run_started"])
    rows = [
        ("process start + driver imports", p["imports_s"]),
        ("spec validation", p["spec_s"]),
        ("plan (plan_s)", t.get("plan_s", 0.0)),
        ("store scan (scan_s)", t.get("scan_s", 0.0)),
        ("Ray start (ray_start_s)", ray_start),
        (
            "tracking open, manifest, pool placement",
            before_ray - t.get("plan_s", 0.0) - t.get("scan_s", 0.0) - ray_start,
        ),
        ("replica start: process + imports (ready − loading − load)", replica - load),
        ("model load (load report: load_seconds)", load),
        ("streaming overhead (ready → last commit, not generating)", stream - p["busy_s"]),
        ("after the last commit: pool release, Ray stop, scoring, tracking", after_last),
        ("  of which scoring (score_s)", t.get("score_s", 0.0)),
        ("  of which tracking final + close (tracking_close_s)", t.get("tracking_close_s", 0.0)),
        ("process exit (wall − process time)", p["wall_s"] - p["process_s"]),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--benchmark", default="machine_ethics")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--max-in-flight", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--ray-cpus", type=int, default=None, help="logical CPUs of the private local Ray (default: the machine's)"
    )
    parser.add_argument("--quality-probe", action="store_true", help="run the variant's perplexity probe on both sides")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        from trust.benchmarks.data import resolve_data_dir

        args.data_dir = str(resolve_data_dir(args.data_dir))
        result = child_bare(args) if args.child == "bare" else child_pipeline(args)
        print(json.dumps(result))
        return

    from cluster.models.sources import resolve_model_path
    from trust.benchmarks.data import resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir)
    resolve_model_path(args.model)  # prepare the built-in model once, outside both timings
    args.passthrough = [
        "--model",
        args.model,
        "--benchmark",
        args.benchmark,
        "--items",
        str(args.items),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--batch-size",
        str(args.batch_size),
        "--shard-size",
        str(args.shard_size),
        "--max-in-flight",
        str(args.max_in_flight),
        "--threads",
        str(args.threads),
        "--data-dir",
        str(data_dir),
        *(["--ray-cpus", str(args.ray_cpus)] if args.ray_cpus else []),
        *(["--quality-probe"] if args.quality_probe else []),
    ]
    started = time.strftime("%Y-%m-%d %H:%M")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="qtrust-throughput-") as tmp:
        b = run_child("bare", args, Path(tmp) / "bare")
        p = run_child("pipeline", args, Path(tmp))
    if p["items"] != b["items"]:
        raise SystemExit(f"the pipeline computed {p['items']} items, the bare engine {b['items']}")

    n = b["items"]
    wall_ratio = (n / p["wall_s"]) / (n / b["wall_s"])
    gen_ratio = (n / p["busy_s"]) / (n / b["busy_s"])
    lines = [
        f"{n} {args.benchmark} items, {args.model}, batch {args.batch_size}, {args.max_new_tokens} new tokens, "
        f"{args.threads} thread(s), shards of {args.shard_size}, {args.max_in_flight} in flight, quality probe "
        f"{'on' if args.quality_probe else 'off'}; {platform.machine()}, {os.cpu_count()} cores; one run ({started}, "
        f"load average before {load_before:.2f})",
        "",
        "| side | items/s wall | items/s generating | wall s | generating s | fixed s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| bare engine, one process | {n / b['wall_s']:.3f} | {n / b['busy_s']:.3f} | {b['wall_s']:.1f} | {b['busy_s']:.1f} | {b['wall_s'] - b['busy_s']:.1f} |",
        f"| run_sweep (Ray + store + MLflow) | {n / p['wall_s']:.3f} | {n / p['busy_s']:.3f} | {p['wall_s']:.1f} | {p['busy_s']:.1f} | {p['wall_s'] - p['busy_s']:.1f} |",
        "",
        f"**pipeline ÷ bare, wall clock (start-up, load and tracking included): {wall_ratio:.3f}** "
        f"(target ≥ 0.95: {'PASS' if wall_ratio >= 0.95 else 'MISS'})",
        f"pipeline ÷ bare, generation only: {gen_ratio:.3f}",
        "",
        "Bare engine fixed costs: "
        f"process start + imports {b['imports_s']:.1f} s, items {b['items_s']:.1f} s, model load {b['load_s']:.1f} s, "
        f"loop outside generation {b['generate_s'] - b['busy_s']:.2f} s, exit {b['wall_s'] - b['process_s']:.1f} s.",
        "",
        "| pipeline wall clock, item by item | s |",
        "|---|---:|",
    ]
    rows = fixed_costs(p)
    for name, seconds in rows:
        lines.append(f"| {name} | {seconds:.2f} |")
    lines.append(f"| generation (sum of the records' latency_s) | {p['busy_s']:.2f} |")
    accounted = sum(s for name, s in rows if not name.startswith("  ")) + p["busy_s"]
    lines.append(f"| total (= wall {p['wall_s']:.2f} s) | {accounted:.2f} |")
    lines.append("")
    lines.append(
        f"Pipeline fixed costs beyond the bare engine's: {(p['wall_s'] - p['busy_s']) - (b['wall_s'] - b['busy_s']):.1f} s; "
        f"with equal generation speed the ratio reaches 0.95 from {max(0.0, (0.95 * (p['wall_s'] - p['busy_s']) - (b['wall_s'] - b['busy_s'])) / 0.05 * n / b['busy_s']):.0f} items "
        f"(if generation speed were equal)."
    )
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(
            "# Pipeline vs bare engine (bench/throughput.py)\n\n"
            f"Command: `.venv/bin/python bench/throughput.py {' '.join(sys.argv[1:])}`\n\n" + text + "\n"
        )
        Path(args.out).with_suffix(".json").write_text(json.dumps({"bare": b, "pipeline": p}, indent=1))


if __name__ == "__main__":
    main()
