"""Data folders for tests: the shared benchmarks folder, completed where it lacks a file a benchmark needs.

Two files that ``qtrust data fetch`` downloads are not in the shared folder (see their SOURCE.md):
SafetyBench's 11,435 English questions (``safetybench/test_en.json``) and HotpotQA's full dev
distractor file. :func:`completed_data_folder` links everything else and adds, in their place, a small
questions file in SafetyBench's layout made from real ids of the answer key, and the first 100 dev
questions with their paragraphs (a prefix of the full file, in its layout).
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


HOTPOT_FULL = "hotpotqa/hotpot_dev_distractor_v1.json"


def completed_data_folder(data_dir: Path, root: Path) -> Path:
    """``data_dir`` itself when it has both fetched files, else a folder under ``root`` linking every entry
    of ``data_dir`` plus stand-ins for the missing ones (see the module docstring)."""
    if (data_dir / "safetybench" / "test_en.json").is_file() and (data_dir / HOTPOT_FULL).is_file():
        return data_dir
    folder = root / "data-completed"
    if (folder / "safetybench" / "test_en.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for entry in data_dir.iterdir():
        if entry.name not in ("safetybench", "hotpotqa") and not (folder / entry.name).exists():
            os.symlink(entry, folder / entry.name)
    for name in ("safetybench", "hotpotqa"):
        (folder / name).mkdir(exist_ok=True)
        for entry in (data_dir / name).iterdir():
            if not (folder / name / entry.name).exists():
                os.symlink(entry, folder / name / entry.name)
    if not (folder / "safetybench" / "test_en.json").exists():
        write_safetybench_questions(folder / "safetybench", data_dir / "safetybench" / "test_answers_en.json")
    if not (folder / HOTPOT_FULL).exists():
        os.symlink(data_dir / "hotpotqa" / "hotpot_dev_distractor_first100.json", folder / HOTPOT_FULL)
    return folder
