"""qtrust against lm-evaluation-harness on MMLU (5-shot, option letter by log-likelihood): the same
choice on the same items with the same prompt, and the wall-time ratio. Run through
``bench/vs_harness.py --task mmlu`` (the harness in its own venv: ``make bench-harness-env``).

Both tools get the same items (qtrust's ``limit: N`` hash-ranked subset of the 14,042 test questions),
the same model folder (the built-in SmolLM2-135M-Instruct, float32, CPU), batch size and cores:

- **harness**: one local task per subject in the subset, written here in the layout of the harness's
  own ``mmlu`` tasks (``The following are multiple choice questions (with answers) about <subject>.``,
  ``question\\nA. ...\\nD. ...\\nAnswer:``, choices ``A``-``D`` after a space, 5 shots from the subject's
  dev split taken first-n), over JSON-lines files holding exactly those questions, grouped as
  ``mmlu_local``.
- **qtrust**: ``qtrust run`` on a sweep of the reference and ``mmlu`` with ``limit: N``, a fresh store.

Reported: wall seconds of each, qtrust ÷ harness, both tools' accuracy, and on how many items both pick
the same option (target: at least 99%), with the largest log-likelihood difference.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trust.benchmarks import get_benchmark  # noqa: E402
from trust.benchmarks.base import limit_items  # noqa: E402

LETTERS = "ABCD"


def selected(n: int, data_dir: Path) -> list[tuple[str, int]]:
    """(subject, row index) of the ``n`` items qtrust's ``limit: n`` evaluates."""
    items = limit_items(get_benchmark("mmlu").load_all(data_dir), n)
    out = []
    for item in items:
        _, rest = item.id.split("-", 1)
        subject, index = rest.rsplit("-", 1)
        out.append((subject, int(index)))
    return out


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [row for row in csv.reader(handle) if row]


def _doc(row: list[str], subject: str) -> dict[str, Any]:
    return {"question": row[0], "choices": row[1:5], "answer": LETTERS.index(row[5].strip()), "subject": subject}


def write_tasks(picked: list[tuple[str, int]], data_dir: Path, folder: Path) -> list[str]:
    """One harness task per subject (the harness's mmlu layout) over exactly the picked questions."""
    by_subject: dict[str, list[int]] = {}
    for subject, index in picked:
        by_subject.setdefault(subject, []).append(index)
    names = []
    for subject, indices in sorted(by_subject.items()):
        test = _rows(data_dir / "mmlu" / "test" / f"{subject}_test.csv")
        dev = _rows(data_dir / "mmlu" / "dev" / f"{subject}_dev.csv")
        test_file, dev_file = folder / f"{subject}_test.jsonl", folder / f"{subject}_dev.jsonl"
        test_file.write_text("".join(json.dumps(_doc(test[i], subject) | {"row": i}) + "\n" for i in sorted(indices)))
        dev_file.write_text("".join(json.dumps(_doc(r, subject)) + "\n" for r in dev))
        name = f"mmlu_local_{subject}"
        task = {
            "task": name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(test_file), "dev": str(dev_file)}},
            "test_split": "test",
            "fewshot_split": "dev",
            "fewshot_config": {"sampler": "first_n"},
            "num_fewshot": 5,
            "output_type": "multiple_choice",
            "description": f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
        names.append(name)
    (folder / "mmlu_local.yaml").write_text(yaml.safe_dump({"group": "mmlu_local", "task": names}, sort_keys=False))
    return names


def _timed(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as handle:
        code = subprocess.run(cmd, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {code}:\n{tail}")
    return time.perf_counter() - started


def run_harness(python: str, model: Path, tasks: Path, out: Path, batch: int) -> dict[str, Any]:
    cmd = [
        python, "-m", "lm_eval", "run", "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
        "--device", "cpu", "--tasks", "mmlu_local", "--include_path", str(tasks), "--batch_size", str(batch),
        "--output_path", str(out), "--log_samples",
    ]  # fmt: skip
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    wall = _timed(cmd, env, out.parent / "harness.log")
    per_item: dict[tuple[str, int], list[float]] = {}
    for samples in out.rglob("samples_mmlu_local_*.jsonl"):
        for line in samples.read_text(encoding="utf-8").splitlines():
            s = json.loads(line)
            per_item[(s["doc"]["subject"], int(s["doc"]["row"]))] = [float(r[0]) for r in s["filtered_resps"]]
    return {"tool": "harness", "wall_s": wall, "logprobs": per_item}


def run_qtrust(model: Path, folder: Path, n: int, batch: int, cpus: int, data_dir: Path) -> dict[str, Any]:
    spec = {
        "name": "vs-harness-mmlu",
        "models": [{"name": "smollm2", "source": str(model), "dtype": "float32", "engine": "hf"}],
        "recipes": [{"name": "ref", "method": "none"}],
        "benchmarks": [{"name": "mmlu", "limit": n}],
        "generation": {"batch_size": batch},
        "resources": {"num_cpus": cpus},
        "quality_probe": False,
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "vs-harness"},
        "storage": {"root": str(folder / "runs")},
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"), QTRUST_DATA_DIR=str(data_dir))
    wall = _timed([sys.executable, "-m", "jobs", "run", str(path), "--quiet"], env, folder / "qtrust.log", cwd=folder)
    from jobs.store.sweep import SweepStore

    records = SweepStore(str(folder / "runs"), "vs-harness-mmlu").scan().records
    per_item = {}
    for item_id, logprobs in zip(records["item_id"], records["logprobs"]):
        _, rest = item_id.split("-", 1)
        subject, index = rest.rsplit("-", 1)
        per_item[(subject, int(index))] = [float(v) for v in logprobs]
    return {"tool": "qtrust", "wall_s": wall, "logprobs": per_item}


def compare(
    harness: dict[str, Any], qtrust: dict[str, Any], picked: list[tuple[str, int]], data_dir: Path
) -> dict[str, Any]:
    """Same choice, largest log-likelihood difference and accuracy of both, over the picked items."""
    answers = {}
    for subject, index in picked:
        answers[(subject, index)] = LETTERS.index(
            _rows(data_dir / "mmlu" / "test" / f"{subject}_test.csv")[index][5].strip()
        )
    common = [k for k in picked if k in harness["logprobs"] and k in qtrust["logprobs"]]
    best = lambda v: max(range(len(v)), key=v.__getitem__)  # noqa: E731
    same = sum(best(harness["logprobs"][k]) == best(qtrust["logprobs"][k]) for k in common)
    delta = max(
        (abs(a - b) for k in common for a, b in zip(harness["logprobs"][k], qtrust["logprobs"][k])),
        default=float("nan"),
    )
    accuracy = {
        tool["tool"]: sum(best(tool["logprobs"][k]) == answers[k] for k in common) / max(1, len(common))
        for tool in (harness, qtrust)
    }
    return {"items": len(picked), "compared": len(common), "same": same, "max_delta": delta, "accuracy": accuracy}
