"""Check `qtrust plan` against what is known: a measured CPU run of the demo, and Kharinaev et al.'s own
figure for their study (about 80 GPU-hours on 4 x A40).

Usage (from the repository root)::

    .venv/bin/python bench/plan_check.py --out bench/results/plan_check.md            # runs the demo once
    .venv/bin/python bench/plan_check.py --measured-demo-s 420 --out ...              # a demo time you measured

1. The demo (`examples/demo.yaml`) is priced on this machine's cores (`cpu:N`), then run with
   `qtrust run` into a fresh store and a fresh variant cache (quantization included, as the plan
   prices it), and the two times are compared (target: within 2x).
2. `examples/kharinaev2025.yaml` is priced on 4 x A40-48GB. The two files `qtrust data fetch` adds
   and this machine lacks are stood in for by files of the real size and layout: SafetyBench's
   11,435 questions (real ids and categories from the answer key, the dev questions' texts cycled)
   and HotpotQA's 7,405 questions with paragraphs (the first 100 with their paragraphs, cycled).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs.plan.build import build_plan  # noqa: E402
from jobs.plan.cost import estimate, load_tables, parse_cluster  # noqa: E402
from jobs.spec.load import load_spec  # noqa: E402
from trust.benchmarks.data import resolve_data_dir  # noqa: E402


def full_size_data(data_dir: Path, root: Path) -> Path:
    """``data_dir`` linked, plus stand-ins of the real size for SafetyBench's questions and HotpotQA's paragraphs."""
    folder = root / "data"
    folder.mkdir()
    for entry in data_dir.iterdir():
        if entry.name not in ("safetybench", "hotpotqa"):
            os.symlink(entry, folder / entry.name)
    for name in ("safetybench", "hotpotqa"):
        (folder / name).mkdir()
        for entry in (data_dir / name).iterdir():
            os.symlink(entry, folder / name / entry.name)
    answers = json.loads((data_dir / "safetybench/test_answers_en.json").read_text())
    dev = json.loads((data_dir / "safetybench/dev_en.json").read_text())
    shots = [shot for entries in dev.values() for shot in entries]
    questions = []
    for i, (qid, entry) in enumerate(answers.items()):
        fitting = [s for s in shots if len(s["options"]) > entry["answer"]]  # as many options as the answer needs
        shot = fitting[i % len(fitting)]
        questions.append(
            {"id": int(qid), "question": shot["question"], "options": shot["options"], "category": entry["category"]}
        )
    (folder / "safetybench/test_en.json").write_text(json.dumps(questions))
    first = json.loads((data_dir / "hotpotqa/hotpot_dev_distractor_first100.json").read_text())
    simple = json.loads((data_dir / "hotpotqa/hotpot_dev_v1_simplified.json").read_text())
    full = [{**first[i % len(first)], **row} for i, row in enumerate(simple)]
    (folder / "hotpotqa/hotpot_dev_distractor_v1.json").write_text(json.dumps(full))
    return folder


def price(sweep: Path, data_dir: Path, cluster: str, storage: str | None = None):
    spec = load_spec(sweep)
    if storage is not None:
        spec = spec.model_copy(update={"storage": spec.storage.model_copy(update={"root": storage})})
    tables = load_tables()
    return estimate(build_plan(spec, data_dir), set(), tables, parse_cluster(cluster, tables))


def run_demo(data_dir: Path, root: Path) -> float:
    """Wall seconds of `qtrust run examples/demo.yaml` into a fresh store and variant cache."""
    env = dict(os.environ, QTRUST_DATA_DIR=str(data_dir), QTRUST_VARIANT_CACHE=str(root / "variants"))
    started = time.perf_counter()
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("qtrust")),
            "run",
            str(REPO / "examples/demo.yaml"),
            "--storage-root",
            str(root / "runs"),
            "--tracking-uri",
            f"sqlite:///{root}/mlflow.db",
            "--quiet",
        ],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the demo failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--measured-demo-s", type=float, help="skip running the demo: its measured wall time")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    lines = ["# `qtrust plan` against measurements", ""]
    with tempfile.TemporaryDirectory(prefix="qtrust-plan-") as tmp:
        root = Path(tmp)
        demo = price(REPO / "examples/demo.yaml", data_dir, f"cpu:{args.cores}", storage=str(root / "runs"))
        measured = args.measured_demo_s if args.measured_demo_s is not None else run_demo(data_dir, root)
        estimated_s = demo.wall_hours * 3600
        ratio = measured / estimated_s
        lines += [
            f"## The demo on {args.cores} CPU cores",
            "",
            "| | seconds |",
            "|---|---:|",
            f"| `qtrust plan` (lower bound: every core busy) | {estimated_s:.0f} |",
            f"| measured `qtrust run` (fresh store and variant cache) | {measured:.0f} |",
            f"| measured / estimated | {ratio:.2f} (target: within 2x: {'met' if 0.5 <= ratio <= 2 else 'NOT met'}) |",
            "",
        ]
        data = full_size_data(data_dir, root)
        study = price(REPO / "examples/kharinaev2025.yaml", data, "4xA40-48GB")
        lines += [
            "## examples/kharinaev2025.yaml on 4 x A40-48GB",
            "",
            "| | GPU-hours |",
            "|---|---:|",
            *[f"| {v.name} | {v.device_hours:.1f} |" for v in study.variants + study.judges],
            f"| **total** | **{study.device_hours:.1f}** |",
            "| Kharinaev et al. 2025, their own figure | about 80 |",
            "",
            f"At least {study.wall_hours:.1f} hours of wall time on the 4 GPUs. Rates: jobs/plan/cost_tables.yaml "
            "(round public figures for GPUs, not measured here).",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
