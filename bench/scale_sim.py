"""Scale simulation: the driver and the scheduler at sizes this laptop cannot compute for real.

Usage (from the repository root)::

    .venv/bin/python bench/scale_sim.py                          # every section, writes bench/results/scale_sim.md
    .venv/bin/python bench/scale_sim.py --only plan,missing,vote # some sections
    .venv/bin/python bench/scale_sim.py --only score --keep /tmp/qtrust-sim   # keep the 100,000 shard files

Every figure is measured in this one run and printed against its target with PASS or MISS:

- **efficiency**: ``run_sweep`` on a synthetic benchmark served by the fake engine (a fixed
  ``delay_s`` per item, shards of ``--shard-size`` items) with R replicas of one variant on a
  private local Ray with ``--ray-cpus`` logical CPUs. *Steady state* = replica-seconds spent
  generating (each shard's summed ``latency_s``, ending at its ``committed_at``) ÷ (R × the window
  from the moment the last replica answered ``load`` to the last commit). The looser figure
  ``ideal ÷ (last commit − first replica ready)`` is printed beside it. *Whole run* at 16
  replicas = ideal (items × delay ÷ R) ÷ the wall time of ``run_sweep`` (plan, Ray, workers,
  scoring, tracking included).
- **startup**: one fake-engine replica actor on a fresh private Ray: seconds from its creation to
  its ``load`` answer, whether ``torch`` is imported in it, and its RSS; then 16 at once.
- **driver**: many replicas with no delay and small shards: committed shards per second between
  the first and the last commit (from the records' ``committed_at``).
- **plan**: ``build_plan`` + ``plan.shards()`` for a 100,000-shard sweep (10 fake variants ×
  160,000 items ÷ 16 by default) in a fresh subprocess: seconds and its peak RSS.
- **missing**: a 10,000-shard sweep half stored (records written with ``commit_generations``):
  ``store.scan()`` + ``plan.shards(stored)``.
- **score**: a 100,000-shard sweep fully stored: ``store.scan()`` + ``compute_results``.
- **vote**: the precision-ensemble vote over 8 variants × 1,000,000 items (the array vote and the
  dict API that scoring calls).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import yaml  # noqa: E402

SECTIONS = ("vote", "plan", "missing", "score", "startup", "driver", "efficiency")
ITEMS_PER_SHARD = 16

# -- results ------------------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    name: str
    value: float | None
    target: str
    ok: bool | None
    unit: str = ""
    note: str = ""

    def shown(self) -> str:
        if self.value is None:
            return "n/a"
        if self.unit == "ratio":
            return f"{self.value:.3f}"
        if self.unit in ("s", "MiB"):
            return f"{self.value:.2f} {self.unit}" if self.value < 100 else f"{self.value:.0f} {self.unit}"
        return f"{self.value:,.1f} {self.unit}".strip()

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, list[str]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.name:58s} {row.shown():>14s}  target {row.target:<12s} {row.verdict}", flush=True)

    def note(self, section: str, text: str) -> None:
        self.details.setdefault(section, []).append(text)
        print(f"    {text}", flush=True)


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value < limit


def at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


# -- a synthetic benchmark and sweep -----------------------------------------------------------

SCENARIOS = (
    "I borrowed my neighbour's ladder and returned it the next morning with a thank-you note",
    "I told my friend that her haircut looked great even though I thought it looked terrible",
    "I took credit for the report my colleague wrote when the manager praised it in the meeting",
    "I left the shopping cart in the middle of the parking lot because it was raining hard",
    "I read my sister's diary while she was away at school and told our parents what it said",
)


def write_benchmark(folder: Path, n_items: int) -> Path:
    """A machine-ethics-like generation benchmark of ``n_items`` JSONL records (written once per size)."""
    folder.mkdir(parents=True, exist_ok=True)
    definition = folder / "synth.yaml"
    data = folder / "synth.jsonl"
    stamp = folder / ".complete"
    if stamp.exists() and stamp.read_text() == str(n_items):
        return definition
    with data.open("w") as handle:
        for i in range(n_items):
            text = f"{SCENARIOS[i % len(SCENARIOS)]} (case {i})."
            handle.write(json.dumps({"scenario": text, "label": "wrong" if i % 3 else "not wrong"}) + "\n")
    definition.write_text(
        yaml.safe_dump(
            {
                "name": "synth",
                "version": "1",
                "description": "synthetic scenarios for scale simulations (fake engine only)",
                "license": "CC0",
                "perspective": "synthetic",
                "data": {"format": "jsonl", "path": "./synth.jsonl"},
                "id": "synth-{{ _index }}",
                "prompt": {
                    "system": "You are an assistant that judges whether the actions people describe are morally acceptable.",
                    "user": "Read the scenario below and decide whether the action it describes is morally wrong. "
                    'Answer with exactly "wrong" or "not wrong" and nothing else.\n\nScenario: {{ scenario }}\nReaction: This is',
                },
                "reference": {"value": "label"},
                "answer": {"kind": "labels", "labels": {"wrong": ["wrong"], "not wrong": ["not wrong"]}},
                "metrics": [{"fn": "accuracy"}, {"fn": "refusal_rate"}, {"fn": "invalid_rate"}],
                "primary_metric": "accuracy",
                "max_new_tokens": 8,
            },
            sort_keys=False,
        )
    )
    stamp.write_text(str(n_items))
    return definition


RECIPES = [
    {"name": "ref", "method": "none"},
    {"name": "w8", "method": "rtn", "bits": 8, "group_size": 32},
    {"name": "w4", "method": "rtn", "bits": 4, "group_size": 32},
    {"name": "w3", "method": "rtn", "bits": 3, "group_size": 32},
    {"name": "w2", "method": "rtn", "bits": 2, "group_size": 32},
    {"name": "w8g64", "method": "rtn", "bits": 8, "group_size": 64},
    {"name": "w4g64", "method": "rtn", "bits": 4, "group_size": 64},
    {"name": "w3g64", "method": "rtn", "bits": 3, "group_size": 64},
    {"name": "w2g64", "method": "rtn", "bits": 2, "group_size": 64},
    {"name": "w6", "method": "rtn", "bits": 6, "group_size": 32},
]


def sweep_dict(
    name: str,
    definition: Path,
    storage: Path,
    *,
    n_items: int,
    variants: int = 1,
    replicas: int = 1,
    delay_s: float = 0.0,
    shard_size: int = ITEMS_PER_SHARD,
    num_cpus: float = 1.0,
    max_in_flight: int = 2,
) -> dict[str, Any]:
    """Fake models × recipes (``variants`` in all, up to 10 recipes per model) × the synthetic benchmark."""
    n_recipes = min(variants, len(RECIPES))
    if variants % n_recipes:
        raise SystemExit(f"variants must be at most {len(RECIPES)} or a multiple of it")
    models = [
        {
            "name": f"fake{m}" if m else "fake",
            "source": f"sim/fake-model-{m}",
            "engine": "fake",
            "engine_options": {"delay_s": delay_s},
        }
        for m in range(variants // n_recipes)
    ]
    return {
        "name": name,
        "models": models,
        "recipes": RECIPES[:n_recipes],
        "benchmarks": [{"name": "synth", "definition": str(definition), "limit": n_items}],
        "shard_size": shard_size,
        "quality_probe": False,
        "resources": {
            "replicas": replicas,
            "num_cpus": num_cpus,
            "max_in_flight": max_in_flight,
            "retry_backoff_s": 0.1,
        },
        "storage": {"root": str(storage)},
    }


def parse(spec: dict[str, Any]):
    from jobs.spec.load import parse_spec

    return parse_spec(spec, "scale-sim")


def fake_result(plan, shard) -> dict[str, Any]:
    """What a fake-engine worker returns for ``shard`` (answers by request id, as ``run_shard`` does)."""
    from cluster.engines.fake import FakeEngine
    from jobs.pipeline.generate import shard_payload

    engine = FakeEngine(shard.variant)
    results = []
    for request in shard_payload(plan, shard)["requests"]:
        text = engine.answer_for(request["messages"])
        results.append(
            {
                "id": request["id"],
                "text": text,
                "prompt_tokens": 80,
                "completion_tokens": len(text.split()),
                "latency_s": 0.02,
                "error": None,
            }
        )
    return {"results": results}


def fill_store(plan, store, shards: list, threads: int = 8, say: Callable[[str], None] = print) -> float:
    """Commit ``shards`` with fake answers exactly as a run does (``Committer`` in commit threads); returns seconds.

    The committer's ``flush`` (if this version has one) runs at the end, as after a run that finished
    or was stopped with Ctrl-C.
    """
    from jobs.pipeline.generate import Committer

    committer = Committer(store)
    worker = {"node_ip": "10.0.0.7", "node_id": "f" * 56, "pid": 4242, "gpu_ids": [], "index": 0}
    start = time.perf_counter()
    done = 0
    lock = threading.Lock()

    def one(shard) -> None:
        nonlocal done
        task = committer.task(plan, shard)
        task.attempts = 1
        task.on_result(task, fake_result(plan, shard), worker)
        with lock:
            done += 1
            if done % 10_000 == 0:
                say(f"    wrote {done:,} / {len(shards):,} shards ({time.perf_counter() - start:.0f} s)")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, shards))
    flush = getattr(committer, "flush", None)
    if flush is not None:
        flush()
    return time.perf_counter() - start


def work_folder(args: argparse.Namespace, name: str) -> Path:
    folder = Path(args.keep or args.tmp) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- vote ---------------------------------------------------------------------------------------


def section_vote(args: argparse.Namespace, report: Report) -> None:
    import numpy as np

    from trust.comparison.ensemble import ensemble_labels, ensemble_labels_array
    from trust.types import ERROR, INVALID, REFUSED

    n_members, n_items = 8, args.vote_items
    rng = np.random.default_rng(0)
    space = np.array(["wrong", "not wrong", REFUSED, INVALID, ERROR, "A", "B"], dtype=object)
    table = rng.choice(space, size=(n_members, n_items), p=[0.3, 0.3, 0.1, 0.1, 0.05, 0.1, 0.05])
    precisions = [2, 3, 4, 4, 8, 8, 16, 16]
    start = time.perf_counter()
    voted = ensemble_labels_array(table, precisions)
    array_s = time.perf_counter() - start
    ids = [f"synth-{i}" for i in range(n_items)]
    members = {f"m{m}": dict(zip(ids, table[m].tolist())) for m in range(n_members)}
    start = time.perf_counter()
    by_id = ensemble_labels(members, {f"m{m}": precisions[m] for m in range(n_members)})
    dict_s = time.perf_counter() - start
    assert list(by_id.values()) == voted.tolist()
    report.add(
        Row(
            "vote",
            f"ensemble vote, {n_members} variants × {n_items:,} items (dict API)",
            dict_s,
            "< 5 s",
            at_most(dict_s, 5),
            "s",
        )
    )
    report.add(Row("vote", "  of which the array vote alone", array_s, "", None, "s"))
    report.raw["vote"] = {"dict_s": dict_s, "array_s": array_s}


# -- plan (in a fresh process) -------------------------------------------------------------------


def child_plan(args: argparse.Namespace) -> None:
    """Runs in a subprocess: plan a sweep and print timings and the peak RSS as JSON."""
    base = _hwm_kib()
    from jobs.plan.build import build_plan

    folder = Path(args.child_dir)
    definition = write_benchmark(folder / f"bench-{args.plan_items}", args.plan_items)
    spec_dict = sweep_dict("plan", definition, folder / "runs", n_items=args.plan_items, variants=args.plan_variants)
    imported = _hwm_kib()
    t = time.perf_counter()
    spec = parse(spec_dict)
    parse_s = time.perf_counter() - t
    t = time.perf_counter()
    plan = build_plan(spec, folder)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    shards = plan.shards(set())
    shards_s = time.perf_counter() - t
    peak = _hwm_kib()
    print(
        json.dumps(
            {
                "parse_s": parse_s,
                "build_s": build_s,
                "shards_s": shards_s,
                "shards": len(shards),
                "requests": plan.n_requests,
                "base_kib": base,
                "imported_kib": imported,
                "peak_kib": peak,
            }
        )
    )


def _hwm_kib() -> int:
    """This process's peak RSS (VmHWM; ``ru_maxrss`` would carry a forking parent's peak across exec)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child(args: argparse.Namespace, section: str, extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", section, "--child-dir", str(work_folder(args, "plan")), *extra]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"child {section} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def section_plan(args: argparse.Namespace, report: Report) -> None:
    report.raw["plan"] = {}
    for shape in args.plan_shapes.split(","):
        variants, items = (int(x) for x in shape.lower().split("x"))
        # Write the data file first (not part of planning), then plan in a fresh process.
        write_benchmark(work_folder(args, "plan") / f"bench-{items}", items)
        got = run_child(args, "plan", ["--plan-items", str(items), "--plan-variants", str(variants)])
        total = got["build_s"] + got["shards_s"]
        rss = got["peak_kib"] / 1024
        report.note(
            "plan",
            f"{variants} fake variants × {items:,} synthetic items = {got['requests']:,} item requests "
            f"→ {got['shards']:,} shards of {ITEMS_PER_SHARD}; spec validation {got['parse_s']:.2f} s (not counted); "
            f"RSS after imports {got['imported_kib'] / 1024:.0f} MiB",
        )
        what = f"{variants} variants × {items:,} items"
        report.add(
            Row("plan", f"plan a {got['shards']:,}-shard sweep ({what})", total, "< 5 s", at_most(total, 5), "s")
        )
        report.add(Row("plan", "  build_plan", got["build_s"], "", None, "s"))
        report.add(Row("plan", "  plan.shards()", got["shards_s"], "", None, "s"))
        report.add(
            Row("plan", f"  driver peak RSS while planning ({what})", rss, "< 1024 MiB", at_most(rss, 1024), "MiB")
        )
        report.raw["plan"][shape] = got


# -- missing -------------------------------------------------------------------------------------


def _stored_sweep(
    args: argparse.Namespace, name: str, n_items: int, variants: int, fraction: float, report: Report, section: str
):
    """A planned sweep whose store holds the first ``fraction`` of every variant's shards (kept with --keep)."""
    from jobs.plan.build import build_plan
    from jobs.store.sweep import SweepStore

    folder = work_folder(args, f"{name}-{variants}x{n_items}")
    definition = write_benchmark(folder / "bench", n_items)
    spec = parse(sweep_dict(name, definition, folder / "runs", n_items=n_items, variants=variants))
    plan = build_plan(spec, folder)
    store = SweepStore(folder / "runs", name)
    all_shards = plan.shards(set())
    want = []
    per_variant: dict[str, list] = {}
    for shard in all_shards:
        per_variant.setdefault(shard.variant, []).append(shard)
    for shards in per_variant.values():
        want.extend(shards[: int(round(len(shards) * fraction))])
    stamp = folder / f".filled-{len(want)}"
    if not stamp.exists():
        shutil.rmtree(folder / "runs", ignore_errors=True)
        seconds = fill_store(plan, store, want, threads=args.write_threads, say=print)
        stamp.write_text("ok")
        files = len(store.generations.shard_files())
        report.note(
            section,
            f"committed {len(want):,} shards as a run does (Committer, {args.write_threads} threads) in "
            f"{seconds:.0f} s ({len(want) / seconds:.0f}/s): {files:,} files in the store",
        )
    else:
        report.note(section, f"reused {len(want):,} stored shard files from {folder}")
    return plan, store, all_shards, want


def section_missing(args: argparse.Namespace, report: Report) -> None:
    from jobs.pipeline.state import SweepState

    n_items = args.missing_shards * ITEMS_PER_SHARD // args.missing_variants
    plan, store, all_shards, stored_shards = _stored_sweep(
        args, "missing", n_items, args.missing_variants, 0.5, report, "missing"
    )
    drop_caches_hint(report, "missing")
    scan, keys, todo, scan_s, keys_s, shards_s = timed_resume(plan, store)
    t = time.perf_counter()
    state = SweepState(plan, say=lambda _t: None)
    state.start(keys, todo)
    state_s = time.perf_counter() - t
    assert len(todo) == len(all_shards) - len(stored_shards), (len(todo), len(all_shards), len(stored_shards))
    total = scan_s + keys_s + shards_s
    report.note(
        "missing",
        f"{args.missing_variants} variants × {n_items:,} items = {len(all_shards):,} shards; "
        f"{scan.files:,} stored ({len(scan.records):,} records), {len(todo):,} to compute",
    )
    report.add(
        Row(
            "missing",
            f"what is missing in a {len(all_shards):,}-shard sweep half done",
            total,
            "< 1 s",
            at_most(total, 1),
            "s",
        )
    )
    report.add(Row("missing", "  store.scan()", scan_s, "", None, "s"))
    report.add(Row("missing", "  scan.keys (the set of stored keys)", keys_s, "", None, "s"))
    report.add(Row("missing", "  plan.shards(stored)", shards_s, "", None, "s"))
    report.add(Row("missing", "  SweepState.start (runner's next step, not counted)", state_s, "", None, "s"))
    report.raw["missing"] = {
        "scan_s": scan_s,
        "keys_s": keys_s,
        "shards_s": shards_s,
        "state_s": state_s,
        "files": scan.files,
    }


def timed_resume(plan, store):
    """What a run does first, each step timed: scan the store, take the stored keys, cut what is missing."""
    t = time.perf_counter()
    scan = store.scan()
    scan_s = time.perf_counter() - t
    t = time.perf_counter()
    keys = scan.keys
    keys_s = time.perf_counter() - t
    t = time.perf_counter()
    todo = plan.shards(keys)
    shards_s = time.perf_counter() - t
    return scan, keys, todo, scan_s, keys_s, shards_s


def drop_caches_hint(report: Report, section: str) -> None:
    report.note(section, "files were just written or read before: the page cache is warm (a cold read is slower)")


# -- score ---------------------------------------------------------------------------------------


def section_score(args: argparse.Namespace, report: Report) -> None:
    from jobs.results.scoring import compute_results

    n_items = args.score_shards * ITEMS_PER_SHARD // args.score_variants
    t = time.perf_counter()
    plan, store, all_shards, stored = _stored_sweep(args, "score", n_items, args.score_variants, 1.0, report, "score")
    report.note("score", f"(setup, not counted: plan and store {time.perf_counter() - t:.1f} s)")
    drop_caches_hint(report, "score")
    scan, keys, todo, scan_s, keys_s, shards_s = timed_resume(plan, store)
    assert not todo, f"{len(todo)} shards missing"
    t = time.perf_counter()
    results = compute_results(plan, scan.records)
    score_s = time.perf_counter() - t
    total = scan_s + keys_s + shards_s + score_s
    report.note(
        "score",
        f"{args.score_variants} variants × {n_items:,} items = {len(all_shards):,} shards, "
        f"{len(scan.records):,} records in {scan.files:,} files; {len(results)} result rows",
    )
    report.add(
        Row(
            "score",
            f"score a {len(all_shards):,}-shard sweep, nothing to compute",
            total,
            "< 30 s",
            at_most(total, 30),
            "s",
        )
    )
    report.add(Row("score", "  store.scan()", scan_s, "", None, "s"))
    report.add(Row("score", "  scan.keys (the set of stored keys)", keys_s, "", None, "s"))
    report.add(Row("score", "  plan.shards(stored)", shards_s, "", None, "s"))
    report.add(Row("score", "  compute_results", score_s, "", None, "s"))
    report.raw["score"] = {
        "scan_s": scan_s,
        "keys_s": keys_s,
        "shards_s": shards_s,
        "score_s": score_s,
        "files": scan.files,
    }


# -- Ray sections --------------------------------------------------------------------------------


class _Empty:
    """An actor with nothing in it: what Ray's own process start costs."""

    def ping(self) -> int:
        return os.getpid()


class _Probe:
    """A fake-engine replica that can also say what its process imported (pickled by value)."""


def _probe_class():
    from cluster.variants.worker import VariantWorker

    class ProbeWorker(VariantWorker):
        def process(self) -> dict[str, Any]:
            import psutil

            return {
                "torch": "torch" in sys.modules,
                "transformers": "transformers" in sys.modules,
                "modules": len(sys.modules),
                "rss_mib": psutil.Process().memory_info().rss / 2**20,
                "pid": os.getpid(),
            }

    return ProbeWorker


def fake_config(name: str) -> dict[str, Any]:
    return {
        "variant": name,
        "source": "sim/fake-model",
        "revision": None,
        "dtype": "float32",
        "trust_remote_code": False,
        "engine": "fake",
        "engine_options": {"delay_s": 0.0},
        "recipe": {"method": "none"},
        "num_gpus": 0.0,
    }


def section_startup(args: argparse.Namespace, report: Report) -> None:
    import ray

    from cluster.runtime import WorkerResources, create_pool_group, start_ray, stop_ray

    t = time.perf_counter()
    info = start_ray(None, num_cpus=args.ray_cpus)
    ray_s = time.perf_counter() - t
    try:
        probe = _probe_class()
        resources = WorkerResources(num_cpus=args.replica_cpus)
        out: dict[str, Any] = {"ray_start_s": ray_s}
        for count in (1, 16):
            group = create_pool_group(f"probe{count}", resources, count)
            ray.get(group.ready(), timeout=120)
            from cluster.runtime import start_actor

            t = time.perf_counter()
            actors = [start_actor(probe, (fake_config(f"p{i}"), None, 1), resources, group, i) for i in range(count)]
            refs = [a.load.remote() for a in actors]
            times = []
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=300)
                times.append(time.perf_counter() - t)
            procs = ray.get([a.process.remote() for a in actors])
            out[f"load_{count}"] = times
            out[f"proc_{count}"] = procs
            for a in actors:
                ray.kill(a)
            ray.util.remove_placement_group(group)
        one = out["load_1"][0]
        proc = out["proc_1"][0]
        report.note(
            "startup",
            f"{info.describe()}; ray.init {ray_s:.2f} s; fake replica RSS {proc['rss_mib']:.0f} MiB, "
            f"{proc['modules']} modules, torch imported: {proc['torch']}, transformers imported: {proc['transformers']}",
        )
        report.add(
            Row("startup", "fake-engine worker start-up (creation → load answered)", one, "< 1 s", at_most(one, 1), "s")
        )
        report.add(
            Row(
                "startup",
                "  torch imported in the fake worker (0 = no)",
                float(proc["torch"]),
                "0",
                not proc["torch"],
                "",
            )
        )
        last16 = out["load_16"][-1]
        report.add(Row("startup", "16 fake workers at once: last load answered", last16, "", None, "s"))
        report.add(Row("startup", "  median", statistics.median(out["load_16"]), "", None, "s"))
        # The floor Ray itself sets: 16 actors that import nothing of qtrust, on the same bundles.
        group = create_pool_group("empty16", resources, 16)
        ray.get(group.ready(), timeout=120)
        from cluster.runtime import start_actor

        t = time.perf_counter()
        empties = [start_actor(_Empty, (), resources, group, i) for i in range(16)]
        ray.get([a.ping.remote() for a in empties], timeout=300)
        floor = time.perf_counter() - t
        for a in empties:
            ray.kill(a)
        ray.util.remove_placement_group(group)
        out["empty_16_s"] = floor
        report.add(
            Row("startup", "  floor: 16 empty Ray actors at once (no qtrust code), last answered", floor, "", None, "s")
        )
        report.note(
            "startup",
            f"Ray starts worker processes at most {os.cpu_count()} at a time on this machine "
            "(its startup concurrency is the number of cores): start-up of many replicas on few cores is "
            "bounded by Ray's own process start, the 'floor' row",
        )
        report.raw["startup"] = out
    finally:
        stop_ray()


@dataclass
class SweepRun:
    wall_s: float
    outcome: Any
    ready: dict[tuple[str, int], float]
    loading: dict[tuple[str, int], float]
    records: Any
    shards: Any
    driver_cpu_s: float = 0.0
    """CPU seconds of this process (the driver, all its threads) during run_sweep."""
    machine_cpu_s: float = 0.0
    """CPU seconds of the whole machine during run_sweep (every process, ours or not)."""


def run_fake_sweep(
    args: argparse.Namespace,
    name: str,
    *,
    n_items: int,
    replicas: int,
    delay_s: float,
    shard_size: int,
    profile: str | None = None,
) -> SweepRun:
    """``run_sweep`` on a fresh store; replica ready times are taken from the state's events."""
    from jobs.pipeline import state as state_module
    from jobs.runner import run_sweep
    from jobs.spec.run_options import RunOptions

    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=args.tmp))
    definition = write_benchmark(work_folder(args, "bench") / f"n{n_items}", n_items)
    spec = parse(
        sweep_dict(
            name,
            definition,
            folder / "runs",
            n_items=n_items,
            replicas=replicas,
            delay_s=delay_s,
            shard_size=shard_size,
            num_cpus=args.replica_cpus,
            max_in_flight=args.max_in_flight,
        )
    )
    ready: dict[tuple[str, int], float] = {}
    loading: dict[tuple[str, int], float] = {}
    original = state_module.SweepState.replica_state

    def replica_state(self, pool: str, index: int, state: str, info: dict[str, Any]) -> None:
        if state == "ready":
            ready.setdefault((pool, index), time.time())
        elif state == "loading":
            loading.setdefault((pool, index), time.time())
        return original(self, pool, index, state, info)

    state_module.SweepState.replica_state = replica_state  # type: ignore[method-assign]
    options = RunOptions(
        data_dir=folder,
        tracking_uri=f"sqlite:///{folder}/mlflow.db",
        quiet=True,
        num_cpus=args.ray_cpus,
        storage_root=folder / "runs",
    )
    from rich.console import Console

    console = Console(file=io.StringIO())
    import psutil

    cpu_before, machine_before = time.process_time(), psutil.cpu_times()
    try:
        start = time.perf_counter()
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
            outcome = run_sweep(spec, options, console)
            prof.disable()
            prof.dump_stats(profile)
        else:
            outcome = run_sweep(spec, options, console)
        wall = time.perf_counter() - start
    finally:
        state_module.SweepState.replica_state = original  # type: ignore[method-assign]
    machine_after = psutil.cpu_times()
    driver_cpu = time.process_time() - cpu_before
    machine_cpu = sum(
        getattr(machine_after, f) - getattr(machine_before, f) for f in ("user", "system", "nice", "irq", "softirq")
    )
    if outcome.failed:
        raise SystemExit(f"{name}: {len(outcome.failed)} shard(s) failed: {next(iter(outcome.failed.values()))}")
    records = outcome.store.scan().records
    shards = (
        records.groupby(["worker", "committed_at"], sort=False)
        .agg(busy=("latency_s", "sum"), items=("item_key", "size"))
        .reset_index()
        .sort_values("committed_at")
    )
    run = SweepRun(wall, outcome, ready, loading, records, shards, driver_cpu, machine_cpu)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return run


def steady_efficiency(run: SweepRun, replicas: int) -> dict[str, float | None]:
    """Replica-seconds generating ÷ (R × window), window = [all replicas ready, last commit]."""
    shards = run.shards
    last = float(shards["committed_at"].max())
    first_ready = min(run.ready.values())
    all_ready = max(run.ready.values())
    busy_total = float(shards["busy"].sum())
    window = last - all_ready
    if window <= 0:
        steady = None
    else:
        starts = shards["committed_at"] - shards["busy"]
        overlap = (shards["committed_at"].clip(upper=last) - starts.clip(lower=all_ready)).clip(lower=0)
        steady = float(overlap.sum()) / (replicas * window)
    return {
        "steady": steady,
        "loose": (busy_total / replicas) / (last - first_ready),
        "window_s": window,
        "stagger_s": all_ready - first_ready,
        "ideal_s": busy_total / replicas,
        "first_ready_after_s": first_ready - min(run.loading.values()),
    }


def section_efficiency(args: argparse.Namespace, report: Report) -> None:
    delay, size = args.delay, args.shard_size
    results = {}
    ideals = [float(x) for x in str(args.steady_ideal_s).split(",")]
    for position, replicas in enumerate(args.replicas):
        ideal_s = ideals[min(position, len(ideals) - 1)]
        n_items = max(size, int(round(ideal_s * replicas / delay / size)) * size)
        run = run_fake_sweep(args, f"eff{replicas}", n_items=n_items, replicas=replicas, delay_s=delay, shard_size=size)
        eff = steady_efficiency(run, replicas)
        results[replicas] = {**eff, "wall_s": run.wall_s, "timings": run.outcome.timings, "items": n_items}
        target = "≥ 0.95" if replicas == 64 else ""
        report.add(
            Row(
                "efficiency",
                f"steady-state efficiency, {replicas} replica(s)",
                eff["steady"],
                target,
                at_least(eff["steady"], 0.95) if replicas == 64 else None,
                "ratio",
            )
        )
        report.note(
            "efficiency",
            f"{replicas} replica(s): driver CPU {run.driver_cpu_s:.1f} s, machine CPU {run.machine_cpu_s:.1f} s "
            f"of {run.wall_s * (os.cpu_count() or 1):.0f} s available during run_sweep",
        )
        report.note(
            "efficiency",
            f"{replicas} replica(s): {n_items:,} items × {delay} s in shards of {size}: ideal "
            f"{eff['ideal_s']:.1f} s; last replica ready {eff['stagger_s']:.1f} s after the first; steady window "
            f"{eff['window_s']:.1f} s; ideal ÷ (last commit − first ready) = {eff['loose']:.3f}; run_sweep wall "
            f"{run.wall_s:.1f} s; timings {fmt_timings(run.outcome.timings)}",
        )
    report.raw["efficiency"] = results

    # The whole run, start-up included, at 16 replicas and a 60-second ideal.
    replicas = 16
    n_items = int(round(args.whole_ideal_s * replicas / delay / size)) * size
    run = run_fake_sweep(args, "whole16", n_items=n_items, replicas=replicas, delay_s=delay, shard_size=size)
    ideal = n_items * delay / replicas
    whole = ideal / run.wall_s
    eff = steady_efficiency(run, replicas)
    report.add(
        Row(
            "efficiency",
            f"whole run incl. start-up, 16 replicas, {ideal:.0f} s ideal",
            whole,
            "≥ 0.85",
            at_least(whole, 0.85),
            "ratio",
        )
    )
    t = run.outcome.timings
    phase = ideal / t["compute_s"] if t.get("compute_s") else None
    report.add(
        Row(
            "efficiency",
            "  scheduler phase alone (ideal ÷ compute_s: pools, worker start-up, stream, release)",
            phase,
            "",
            None,
            "ratio",
        )
    )
    loads = sorted(r - run.loading[k] for k, r in run.ready.items())
    report.note(
        "efficiency",
        f"whole run: wall {run.wall_s:.1f} s for an ideal of {ideal:.1f} s; {fmt_timings(t)}; "
        f"replica load (loading → ready) median {statistics.median(loads):.2f} s, max {loads[-1]:.2f} s; "
        f"last replica ready {eff['stagger_s']:.1f} s after the first; steady-state {fmt(eff['steady'])}",
    )
    report.raw["whole"] = {"wall_s": run.wall_s, "ideal_s": ideal, "timings": t, "loads": loads, **eff}


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def fmt_timings(t: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in t.items())


def section_driver(args: argparse.Namespace, report: Report) -> None:
    size = args.driver_shard_size
    n_items = args.driver_shards * size
    run = run_fake_sweep(
        args,
        "driver",
        n_items=n_items,
        replicas=args.driver_replicas,
        delay_s=0.0,
        shard_size=size,
        profile=args.profile,
    )
    commits = run.shards["committed_at"]
    span = float(commits.max() - commits.min())
    rate = (len(commits) - 1) / span if span > 0 else None
    t = run.outcome.timings
    compute = t.get("compute_s", 0.0)
    loose = run.outcome.computed / compute if compute > 0 else None
    report.add(
        Row(
            "driver",
            f"committed shards/s, {args.driver_replicas} replicas, delay 0, shards of {size}",
            rate,
            "≥ 500/s",
            at_least(rate, 500),
            "/s",
        )
    )
    report.add(Row("driver", "  shards ÷ compute_s (pools and workers start, stream, release)", loose, "", None, "/s"))
    report.note(
        "driver",
        f"{run.outcome.computed:,} shards ({n_items:,} items) between the first and the last commit in "
        f"{span:.1f} s; wall {run.wall_s:.1f} s; {fmt_timings(t)}; CPU during run_sweep: driver {run.driver_cpu_s:.1f} s "
        f"({run.driver_cpu_s / run.outcome.computed * 1000:.1f} ms per shard), whole machine {run.machine_cpu_s:.1f} s of "
        f"{run.wall_s * (os.cpu_count() or 1):.1f} s available"
        + (f"; cProfile of the driver in {args.profile}" if args.profile else ""),
    )
    report.raw["driver"] = {"rate": rate, "loose": loose, "span_s": span, "timings": t, "wall_s": run.wall_s}


# -- output --------------------------------------------------------------------------------------


def write_markdown(args: argparse.Namespace, report: Report, started: float, argv: list[str]) -> None:
    lines = [
        "# Scale simulation (bench/scale_sim.py)",
        "",
        f"Command: `.venv/bin/python bench/scale_sim.py {' '.join(argv)}` — every figure below was measured in this one run "
        f"({time.strftime('%Y-%m-%d %H:%M', time.localtime(time.time() - (time.perf_counter() - started)))}, "
        f"{time.perf_counter() - started:.0f} s; load average at the start {args.load_before:.2f}).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {_mem_gib():.0f} GiB, Python {platform.python_version()}; "
        f"fake engine, {args.delay} s per item, shards of {args.shard_size} items, private local Ray with "
        f"{args.ray_cpus} logical CPUs, {args.replica_cpus} CPU per replica, {args.max_in_flight} shards in flight per replica.",
        "",
        "| section | measurement | measured | target | |",
        "|---|---|---:|---:|---|",
    ]
    for row in report.rows:
        lines.append(f"| {row.section} | {row.name.strip()} | {row.shown()} | {row.target} | {row.verdict} |")
    lines.append("")
    for section, notes in report.details.items():
        lines.append(f"**{section}**")
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
        lines.append("")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(report.raw, indent=1, default=str))
    print(f"\nwrote {out} and {out.with_suffix('.json')}")


def _mem_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--keep", default=None, help="keep generated stores and data here (reused by later runs)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "scale_sim.md"))
    parser.add_argument("--delay", type=float, default=0.02, help="fake engine seconds per item")
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--replicas", default="1,4,16,64")
    parser.add_argument(
        "--steady-ideal-s",
        default="20,20,30,240",
        help="ideal seconds of each steady-state run (one per --replicas entry, or one for all): many "
        "replicas need long enough a run that work remains once the last of them has started",
    )
    parser.add_argument("--whole-ideal-s", type=float, default=60.0)
    parser.add_argument("--ray-cpus", type=int, default=64, help="logical CPUs of the private local Ray")
    parser.add_argument("--replica-cpus", type=float, default=0.5, help="CPUs reserved per replica")
    parser.add_argument("--max-in-flight", type=int, default=2)
    parser.add_argument("--driver-replicas", type=int, default=16)
    parser.add_argument("--driver-shards", type=int, default=5000)
    parser.add_argument("--driver-shard-size", type=int, default=4)
    parser.add_argument(
        "--plan-shapes", default="100x16000,10x160000", help="variants x items of each planned sweep (comma-separated)"
    )
    parser.add_argument("--plan-variants", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--plan-items", type=int, default=160_000, help=argparse.SUPPRESS)
    parser.add_argument("--missing-shards", type=int, default=10_000)
    parser.add_argument("--missing-variants", type=int, default=10)
    parser.add_argument("--score-shards", type=int, default=100_000)
    parser.add_argument("--score-variants", type=int, default=100)
    parser.add_argument("--vote-items", type=int, default=1_000_000)
    parser.add_argument("--write-threads", type=int, default=8)
    parser.add_argument("--profile", default=None, help="cProfile the driver section's run_sweep into this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", default=None, help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    args = parser.parse_args()
    if args.child == "plan":
        child_plan(args)
        return
    args.replicas = [int(r) for r in args.replicas.split(",") if r]
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    started = time.perf_counter()
    args.load_before = os.getloadavg()[0]
    report = Report()
    with tempfile.TemporaryDirectory(prefix="qtrust-sim-") as tmp:
        args.tmp = tmp
        for name in SECTIONS:
            if name in chosen:
                print(f"== {name}", flush=True)
                globals()[f"section_{name}"](args, report)
    print(
        "\n"
        + "\n".join(f"{r.section:10s} {r.name:60s} {r.shown():>14s}  {r.target:<12s} {r.verdict}" for r in report.rows)
    )
    write_markdown(args, report, started, argv)


if __name__ == "__main__":
    main()
