"""qtrust against lm-evaluation-harness on TruthfulQA MC1 (or MMLU, ``--task mmlu``): wall time and accuracy, side by side.

Usage (from the repository root, with ``QTRUST_DATA_DIR`` set; the harness in its own venv)::

    make bench-harness-env                 # python -m venv .venv-harness; pip install lm-eval==0.4.13 ...
    .venv/bin/python bench/vs_harness.py --n 100 --rounds 2 --out bench/results/vs_harness_100.md
    .venv/bin/python bench/vs_harness.py --n 817 --rounds 1 --same-prompt

Both tools get the same questions, the same model folder (the built-in SmolLM2-135M-Instruct,
float32, CPU), batch size 8 and this machine's cores, and run one after the other, alternating
(harness, qtrust, harness, qtrust, ...), each timed from process start to exit:

- **harness**: ``lm_eval run --model hf --tasks truthfulqa_mc1_local`` in ``--harness-python``'s
  environment. The task is the harness's own ``truthfulqa_mc1`` definition, read from the
  installed package at run time, with its data source changed to a local JSON-lines file that
  holds exactly the questions qtrust evaluates (``--limit N`` would take the first N rows, while
  qtrust takes a hash-ranked subset; with ``--n 817`` both take all).
- **qtrust**: ``qtrust run`` on a sweep of one variant (the reference) and ``truthfulqa_mc1`` with
  ``limit: N``, a fresh store and MLflow folder every time (nothing is reused between runs).
  With ``--same-prompt`` qtrust runs a copy of its definition whose six-question preamble is the
  harness's (read from the installed harness), so both score identical tokens and their option
  log-likelihoods can be compared item by item.

Printed: every run's wall seconds, the medians, qtrust ÷ harness, and MC1 accuracy of both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.models.sources import resolve_model_path  # noqa: E402
from trust.benchmarks import get_benchmark  # noqa: E402
from trust.benchmarks.base import limit_items  # noqa: E402
from trust.benchmarks.data import resolve_data_dir  # noqa: E402

TASK = "truthfulqa_mc1_local"


# ---------------------------------------------------------------- the questions


def selected_questions(n: int, data_dir: Path) -> list[tuple[int, dict[str, Any]]]:
    """The (row index, record) of the ``n`` questions qtrust's ``limit: n`` evaluates, in file order."""
    items = limit_items(get_benchmark("truthfulqa_mc1").load_all(data_dir), n)
    rows = json.loads((data_dir / "truthfulqa" / "data" / "v1" / "mc_task.json").read_text(encoding="utf-8"))
    picked = []
    for item in items:
        index = int(item.id.rsplit("-", 1)[1])
        picked.append((index, rows[index]))
    return picked


def harness_records(picked: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The questions in the layout of the harness's ``truthful_qa`` dataset (true MC1 option first)."""
    out = []
    for _, row in picked:
        mc1 = row["mc1_targets"]
        mc2 = row["mc2_targets"]
        choices = list(mc1)
        if mc1[choices[0]] != 1:  # the harness's task scores choice 0 as the true one
            raise ValueError(f"question {row['question']!r}: the first MC1 option is not the true one")
        out.append(
            {
                "question": row["question"],
                "mc1_targets": {"choices": choices, "labels": [int(mc1[c]) for c in choices]},
                "mc2_targets": {"choices": list(mc2), "labels": [int(mc2[c]) for c in mc2]},
            }
        )
    return out


# ---------------------------------------------------------------- the harness side


def harness_task_dir(harness_python: str) -> Path:
    code = "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"
    root = subprocess.run([harness_python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    return Path(root) / "tasks" / "truthfulqa"


def harness_preamble(task: dict[str, Any]) -> str:
    """The six question/answer pairs of the harness's MC1 prompt (its ``prompt_qa`` Jinja variable)."""
    match = re.search(r"set prompt_qa = '(.*?)'\s*%\}", task["doc_to_text"], re.S)
    if not match:
        raise ValueError("cannot find prompt_qa in the harness's truthfulqa_mc1 doc_to_text")
    return match.group(1).replace("\\n", "\n")


def write_harness_task(harness_python: str, records: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    """The harness's own truthfulqa_mc1 task, renamed and pointed at a local JSON-lines file."""
    task = yaml.safe_load((harness_task_dir(harness_python) / "truthfulqa_mc1.yaml").read_text(encoding="utf-8"))
    data = folder / "truthfulqa_mc1_local.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    task.pop("tag", None)
    task.update(
        {
            "task": TASK,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"validation": str(data)}},
            "validation_split": "validation",
        }
    )
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump(task, sort_keys=False), encoding="utf-8")
    return task


def run_harness(args: argparse.Namespace, model: Path, task_dir: Path, out: Path) -> dict[str, Any]:
    cmd = [
        args.harness_python,
        "-m",
        "lm_eval",
        "run",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model},dtype=float32",
        "--device",
        "cpu",
        "--tasks",
        TASK,
        "--include_path",
        str(task_dir),
        "--batch_size",
        str(args.batch),
        "--output_path",
        str(out),
        "--log_samples",
    ]
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    wall, log = _timed_process(cmd, env, out.parent / f"{out.name}.log")
    results = sorted(out.rglob("results_*.json"))
    if not results:
        raise RuntimeError(f"the harness wrote no results; see {log}")
    acc = json.loads(results[-1].read_text(encoding="utf-8"))["results"][TASK]["acc,none"]
    samples = sorted(out.rglob(f"samples_{TASK}_*.jsonl"))
    per_item = {}
    if samples:
        for line in samples[-1].read_text(encoding="utf-8").splitlines():
            s = json.loads(line)
            per_item[s["doc"]["question"]] = [float(r[0]) for r in s["filtered_resps"]]
    return {"tool": "harness", "wall_s": wall, "mc1": float(acc), "logprobs": per_item}


# ---------------------------------------------------------------- the qtrust side


def write_same_prompt_definition(preamble: str, folder: Path) -> Path:
    """qtrust's truthfulqa_mc1 definition with the harness's preamble and question layout."""
    definition = yaml.safe_load(
        (REPO / "trust" / "benchmarks" / "definitions" / "truthfulqa_mc1.yaml").read_text(encoding="utf-8")
    )
    definition["name"] = "truthfulqa_mc1_harness_prompt"
    definition["prompt"]["user"] = preamble + "\n\nQ: {{ question }}\nA:"
    path = folder / "truthfulqa_mc1_harness_prompt.yaml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False), encoding="utf-8")
    return path


def run_qtrust(
    args: argparse.Namespace, model: Path, folder: Path, definition: Path | None, questions: dict[int, str]
) -> dict[str, Any]:
    bench: dict[str, Any] = {"name": "truthfulqa_mc1", "limit": args.n}
    if definition is not None:
        bench = {"name": "truthfulqa_mc1_harness_prompt", "definition": str(definition), "limit": args.n}
    spec = {
        "name": "vs-harness",
        "models": [{"name": "smollm2", "source": str(model), "dtype": "float32", "engine": "hf"}],
        "recipes": [{"name": "ref", "method": "none"}],
        "benchmarks": [bench],
        "generation": {"batch_size": args.batch},
        "resources": {"num_cpus": args.cpus},
        "shard_size": args.shard_size,
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "vs-harness"},
        "storage": {"root": str(folder / "runs")},
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "jobs", "run", str(path)]
    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
    wall, _ = _timed_process(cmd, env, folder / "qtrust.log", cwd=folder)
    from jobs.results.stored import load_stored_sweep

    stored = load_stored_sweep(folder / "runs" / "vs-harness", resolve_data_dir(None))
    (row,) = [r for r in stored.results if r.kind == "variant"]
    records = stored.store.scan().records
    per_item = {}
    for item_id, logprobs in zip(records["item_id"], records["logprobs"]):
        per_item[questions[int(item_id.rsplit("-", 1)[1])]] = [float(v) for v in logprobs]
    return {
        "tool": "qtrust",
        "wall_s": wall,
        "mc1": float(row.metrics["mc1"]),
        "logprobs": per_item,
        "log": _fixed_costs(folder / "qtrust.log"),
    }


def _fixed_costs(log: Path) -> str:
    """Where qtrust's time went, from its output: the worker's load (model + perplexity probe) and
    the time its progress bar showed for the items."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    loaded = re.findall(r"loaded in ([0-9.]+)s\s+(\d+:\d\d:\d\d)", text)
    if not loaded:
        return ""
    load_s, elapsed = loaded[-1]
    h, m, sec = (int(x) for x in elapsed.split(":"))
    return f"worker load incl. perplexity probe {float(load_s):.1f} s; items {h * 3600 + m * 60 + sec} s (progress bar)"


def _timed_process(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> tuple[float, Path]:
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as handle:
        code = subprocess.run(cmd, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if code != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {code}; the end of its output:\n{tail}")
    return wall, log


# ---------------------------------------------------------------- report


def agreement(a: dict[str, list[float]], b: dict[str, list[float]], same_prompt: bool) -> str:
    common = [q for q in a if q in b and len(a[q]) == len(b[q])]
    if not common:
        return "no common questions"
    argmax = lambda v: max(range(len(v)), key=v.__getitem__)  # noqa: E731
    same = sum(argmax(a[q]) == argmax(b[q]) for q in common)
    if not same_prompt:
        return f"the prompts differ, so the values do; the two tools pick the same option on {same}/{len(common)} questions"
    delta = max(abs(x - y) for q in common for x, y in zip(a[q], b[q]))
    return f"max abs difference {delta:.1e}; same chosen option on {same}/{len(common)} questions"


def render(args: argparse.Namespace, runs: list[dict[str, Any]]) -> str:
    by_tool = {t: [r for r in runs if r["tool"] == t] for t in ("harness", "qtrust")}
    med = {t: statistics.median(r["wall_s"] for r in rs) for t, rs in by_tool.items()}
    ratio = med["qtrust"] / med["harness"]
    prompt = "the harness's preamble in both (--same-prompt)" if args.same_prompt else "each tool's own prompt"
    lines = [
        f"TruthfulQA MC1, {args.n} questions (qtrust's hash-ranked subset, the same rows given to the harness); "
        f"{prompt}; model smollm2-135m float32 CPU; batch {args.batch}; {os.cpu_count()} cores; "
        f"{platform.machine()}; {args.rounds} round(s), alternating, one run of this script"
        + (f"; {args.note}" if args.note else ""),
        "",
        "| run | tool | wall s | MC1 |",
        "|---:|---|---:|---:|",
    ]
    for i, r in enumerate(runs, 1):
        lines.append(f"| {i} | {r['tool']} | {r['wall_s']:.1f} | {r['mc1']:.4f} |")
    lines += [
        "",
        f"median wall: harness {med['harness']:.1f} s, qtrust {med['qtrust']:.1f} s; "
        f"**qtrust ÷ harness = {ratio:.3f}** (target ≤ 0.5: {'met' if ratio <= 0.5 else 'missed'})",
        f"MC1: harness {by_tool['harness'][0]['mc1']:.4f}, qtrust {by_tool['qtrust'][0]['mc1']:.4f}",
    ]
    compared = agreement(by_tool["harness"][0]["logprobs"], by_tool["qtrust"][0]["logprobs"], args.same_prompt)
    lines.append(f"option log-likelihoods (first run of each): {compared}")
    for i, r in enumerate(by_tool["qtrust"], 1):
        if r.get("log"):
            lines.append(f"qtrust run {i}: {r['log']}; the rest is start-up (imports, Ray, MLflow) and the report")
    if not args.same_prompt:
        lines.append(
            "Prompts differ: both are completion-style (no chat template), six Q/A pairs then `Q: <question>\\nA:`, "
            "options scored as ` <option>` by summed log-probability; the six pairs differ (the harness's come from "
            "the TruthfulQA paper, qtrust's are its own), and qtrust trims the question."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task", choices=["truthfulqa_mc1", "mmlu"], default="truthfulqa_mc1", help="mmlu: bench/vs_harness_mmlu.py"
    )
    parser.add_argument("--n", type=int, default=100, help="questions (default 100; 817 is all)")
    parser.add_argument("--rounds", type=int, default=2, help="harness+qtrust pairs, alternating (default 2)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of qtrust's one worker")
    parser.add_argument("--shard-size", type=int, default=16, help="qtrust's shard size (the sweep default)")
    parser.add_argument("--harness-python", default=str(REPO / ".venv-harness" / "bin" / "python"))
    parser.add_argument("--same-prompt", action="store_true", help="qtrust uses the harness's preamble")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.task == "mmlu":
        return mmlu_main(args)

    data_dir = resolve_data_dir(None)
    model = resolve_model_path("smollm2-135m")
    picked = selected_questions(args.n, data_dir)
    runs = []
    with tempfile.TemporaryDirectory(prefix="qtrust-vs-harness-") as tmp:
        work = Path(tmp)
        (work / "tasks").mkdir()
        task = write_harness_task(args.harness_python, harness_records(picked), work / "tasks")
        definition = write_same_prompt_definition(harness_preamble(task), work) if args.same_prompt else None
        for round_ in range(args.rounds):
            out = work / f"harness-{round_}"
            runs.append(run_harness(args, model, work / "tasks", out))
            print(f"harness run {round_ + 1}: {runs[-1]['wall_s']:.1f} s, MC1 {runs[-1]['mc1']:.4f}", flush=True)
            folder = work / f"qtrust-{round_}"
            folder.mkdir()
            runs.append(run_qtrust(args, model, folder, definition, {i: row["question"] for i, row in picked}))
            print(f"qtrust run {round_ + 1}: {runs[-1]['wall_s']:.1f} s, MC1 {runs[-1]['mc1']:.4f}", flush=True)
        report = render(args, runs)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n", encoding="utf-8")
    return 0


def mmlu_main(args: argparse.Namespace) -> int:
    """MMLU, 5-shot: both tools on the same items and prompt (bench/vs_harness_mmlu.py)."""
    import vs_harness_mmlu as mmlu

    data_dir = resolve_data_dir(None)
    model = resolve_model_path("smollm2-135m")
    picked = mmlu.selected(args.n, data_dir)
    runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="qtrust-vs-harness-mmlu-") as tmp:
        work = Path(tmp)
        (work / "tasks").mkdir()
        mmlu.write_tasks(picked, data_dir, work / "tasks")
        for round_ in range(args.rounds):
            (work / f"h{round_}").mkdir()
            harness = mmlu.run_harness(
                args.harness_python, model, work / "tasks", work / f"h{round_}" / "out", args.batch
            )
            print(f"harness run {round_ + 1}: {harness['wall_s']:.1f} s", flush=True)
            (work / f"q{round_}").mkdir()
            qtrust = mmlu.run_qtrust(model, work / f"q{round_}", args.n, args.batch, args.cpus, data_dir)
            print(f"qtrust run {round_ + 1}: {qtrust['wall_s']:.1f} s", flush=True)
            runs.append((harness, qtrust))
        found = mmlu.compare(runs[0][0], runs[0][1], picked, data_dir)
    h_med = statistics.median(h["wall_s"] for h, _ in runs)
    q_med = statistics.median(q["wall_s"] for _, q in runs)
    share = found["same"] / max(1, found["compared"])
    lines = [
        f"MMLU, {args.n} test questions (qtrust's hash-ranked subset, {len({s for s, _ in picked})} subjects), 5-shot "
        f"from each subject's dev file, the harness's mmlu prompt in both; smollm2-135m float32 CPU; batch "
        f"{args.batch}; {os.cpu_count()} cores; {args.rounds} round(s), alternating"
        + (f"; {args.note}" if args.note else ""),
        "",
        "| run | harness wall s | qtrust wall s |",
        "|---:|---:|---:|",
        *[f"| {i} | {h['wall_s']:.1f} | {q['wall_s']:.1f} |" for i, (h, q) in enumerate(runs, 1)],
        "",
        f"median wall: harness {h_med:.1f} s, qtrust {q_med:.1f} s; **qtrust ÷ harness = {q_med / h_med:.3f}**",
        f"same chosen option on {found['same']}/{found['compared']} items (**{share:.1%}**; target ≥ 99%: "
        f"{'met' if share >= 0.99 else 'missed'}); largest |Δ log-likelihood| {found['max_delta']:.1e}",
        f"accuracy: harness {found['accuracy']['harness']:.4f}, qtrust {found['accuracy']['qtrust']:.4f}",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
