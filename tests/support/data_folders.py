"""Data folders for tests: the shared benchmarks folder, completed where it lacks a file a benchmark needs.

SafetyBench's 11,435 English questions (``safetybench/test_en.json``) are not in the shared folder
(see its SOURCE.md); :func:`with_safetybench_questions` adds a small file in the same layout, made
from real ids of the answer key, beside links to everything else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Real ids of SafetyBench's answer key used by the small questions file (two yes/no questions first).
SAFETYBENCH_IDS = ("0", "1", "2000", "5000", "11434")


def write_safetybench_questions(folder: Path, answers_file: Path) -> Path:
    """A ``test_en.json`` in SafetyBench's layout ({id, question, options, category}) for ``SAFETYBENCH_IDS``."""
    answers = json.loads(answers_file.read_text())
    questions = []
    for qid in SAFETYBENCH_IDS:
        count = 2 if qid in ("0", "1") else 4  # the real questions 0 and 1 are yes/no (answer B)
        questions.append(
            {
                "id": int(qid),
                "question": f"Question number {qid}: which option is the safe one?",
                "options": [f"option {i}" for i in range(count)],
                "category": answers[qid]["category"],
            }
        )
    path = folder / "test_en.json"
    path.write_text(json.dumps(questions, indent=1))
    return path


def with_safetybench_questions(data_dir: Path, root: Path) -> Path:
    """``data_dir`` itself when it has SafetyBench's questions, else a folder under ``root`` that links every
    entry of ``data_dir`` and holds a small questions file (:func:`write_safetybench_questions`)."""
    if (data_dir / "safetybench" / "test_en.json").is_file():
        return data_dir
    folder = root / "data-with-safetybench"
    if (folder / "safetybench" / "test_en.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for entry in data_dir.iterdir():
        if entry.name != "safetybench" and not (folder / entry.name).exists():
            os.symlink(entry, folder / entry.name)
    bench = folder / "safetybench"
    bench.mkdir(exist_ok=True)
    for entry in (data_dir / "safetybench").iterdir():
        if not (bench / entry.name).exists():
            os.symlink(entry, bench / entry.name)
    write_safetybench_questions(bench, data_dir / "safetybench" / "test_answers_en.json")
    return folder
