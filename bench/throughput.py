"""Pipeline overhead: the same items through the bare engine in one process and through `qtrust run`.

Usage (from the repository root, with the data folder set as for the demo)::

    .venv/bin/python bench/throughput.py --items 32

Both sides use the same model, recipe, benchmark items, batch size, token budget and number of
CPU threads. The bare side loads the variant in this process and calls ``engine.generate``; the
pipeline side runs ``qtrust run`` on a one-variant sweep in a subprocess (local Ray, one worker,
Parquet shards, MLflow). Printed: items/s of each (wall clock, including start-up and model load,
and generation only) and the ratios measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.engines.base import GenerationRequest, GenerationSettings  # noqa: E402
from cluster.models.sources import resolve_model_path  # noqa: E402
from cluster.quantization.recipes import QuantRecipe  # noqa: E402
from cluster.variant import VariantSource, load_variant  # noqa: E402
from trust.benchmarks.registry import get_benchmark  # noqa: E402
from trust.data import resolve_data_dir  # noqa: E402


def bare(args: argparse.Namespace, data_dir: Path) -> dict[str, float]:
    start = time.perf_counter()
    items = get_benchmark(args.benchmark).load(data_dir, args.items)
    path = resolve_model_path(args.model)
    engine = load_variant(VariantSource(model_path=path, recipe=QuantRecipe(method="none")), num_threads=args.threads, quality_probe=False)
    loaded = time.perf_counter()
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    results = engine.generate([GenerationRequest(it.id, it.messages) for it in items], settings)
    done = time.perf_counter()
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    return {"items": len(items), "wall_s": done - start, "generate_s": done - loaded}


def pipeline(args: argparse.Namespace, data_dir: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "name": "throughput",
            "models": [{"name": "m", "source": args.model}],
            "recipes": [{"name": "ref", "method": "none"}],
            "benchmarks": [{"name": args.benchmark, "limit": args.items, "max_new_tokens": args.max_new_tokens}],
            "generation": {"batch_size": args.batch_size},
            "resources": {"num_cpus_per_worker": args.threads, "max_in_flight_per_worker": 2},
            "shard_size": args.shard_size,
            "storage": {"root": f"{tmp}/runs"},
        }
        sweep = Path(tmp) / "sweep.yaml"
        sweep.write_text(yaml.safe_dump(spec))
        env = dict(os.environ, QTRUST_DATA_DIR=str(data_dir))
        command = [sys.executable, "-m", "jobs", "run", str(sweep), "--quiet", "--tracking-uri", f"sqlite:///{tmp}/m.db"]
        start = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"qtrust run failed:\n{proc.stdout}\n{proc.stderr}")
        import pyarrow.dataset as ds

        table = ds.dataset(f"{tmp}/runs/throughput/generations", format="parquet").to_table()
        busy = sum(table.column("latency_s").to_pylist())
        return {"items": table.num_rows, "wall_s": wall, "generate_s": busy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--benchmark", default="machine_ethics")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    resolve_model_path(args.model)  # prepare the built-in model once, outside both timings

    b = bare(args, data_dir)
    p = pipeline(args, data_dir)
    rows = [
        ("bare engine, one process", b),
        ("qtrust run (Ray + store + MLflow)", p),
    ]
    print(f"{args.items} {args.benchmark} items, {args.model}, batch {args.batch_size}, "
          f"{args.max_new_tokens} new tokens, {args.threads} thread(s)")
    print(f"{'':36s} {'items/s wall':>13s} {'items/s generating':>19s} {'wall s':>8s}")
    for name, r in rows:
        print(f"{name:36s} {r['items'] / r['wall_s']:13.2f} {r['items'] / r['generate_s']:19.2f} {r['wall_s']:8.1f}")
    print(f"ratio pipeline/bare, wall clock (incl. start-up and load): {(p['items'] / p['wall_s']) / (b['items'] / b['wall_s']):.2f}")
    print(f"ratio pipeline/bare, generation only:                     {(p['items'] / p['generate_s']) / (b['items'] / b['generate_s']):.2f}")


if __name__ == "__main__":
    main()
