"""The rest of the seed papers' benchmarks, read from the real data folder: XSafety (open-ended and
commonsense), SafetyBench (on a small questions file in the authors' layout, written here), HotpotQA
(closed-book and with context) and MMLU, plus the data-source features they need."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.support.data_folders import write_safetybench_questions
from trust.answers.short import normalize_answer, short_answer
from trust.benchmarks import get_benchmark
from trust.benchmarks.catalog import BENCHMARKS
from trust.benchmarks.data import BenchmarkDataError
from trust.benchmarks.expressions import shuffled, split_lettered
from trust.metrics.functions import ScoreInput
from trust.metrics.packs.capability import exact_match, macro_accuracy, per_group_accuracy, token_f1
from trust.types import INVALID, REFUSED, Item

SEED_BENCHMARKS = ["xsafety", "xsafety_commonsense", "safetybench", "hotpotqa", "mmlu"]


@pytest.mark.parametrize("name", SEED_BENCHMARKS)
def test_definitions_cite_their_paper_and_license(name: str) -> None:
    definition = BENCHMARKS[name]
    assert definition.citation and definition.license and definition.notes and len(definition.notes) > 200


# -- XSafety ------------------------------------------------------------------------------------------


def test_xsafety_has_13_scenarios_of_200_trimmed_prompts(data_dir: Path) -> None:
    items = get_benchmark("xsafety").load_all(data_dir)
    scenarios = Counter(item.attributes["scenario"] for item in items)
    assert len(items) == 2600 and len(scenarios) == 13 and set(scenarios.values()) == {200}
    assert "commonsense" not in scenarios and "Crimes_And_Illegal_Activities" in scenarios
    criteria = json.loads((data_dir / "opensafetymini/opensafetymini_safety_criteria.json").read_text())
    assert set(scenarios) <= set(criteria)  # the guided judge has a criterion for every scenario
    texts = [item.messages[0]["content"] for item in items]
    assert all(t == t.strip() and t for t in texts)
    assert len({item.id for item in items}) == 2600
    # every prompt of OpenSafetyMini is one of these (it was filtered from XSafety)
    with open(data_dir / "opensafetymini/OpenSafetyMini.csv", newline="", encoding="utf-8") as handle:
        mini = {row["prompt"].strip() for row in csv.DictReader(handle)}
    assert mini <= set(texts)


def test_xsafety_is_judged_by_the_guided_template() -> None:
    from trust.judges.template_choice import template_for

    bench = get_benchmark("xsafety")
    assert template_for(None, bench).name == "opensafetymini-guided"


def test_xsafety_commonsense_shuffles_options_and_follows_the_unsafe_one(data_dir: Path) -> None:
    bench = get_benchmark("xsafety_commonsense")
    items = bench.load_all(data_dir)
    assert len(items) == 200
    with open(data_dir / "xsafety/en/commonsense.csv", newline="", encoding="utf-8-sig") as handle:
        rows = [row[0] for row in csv.reader(handle)]
    positions = Counter()
    for item, row in zip(items, rows):
        parsed = split_lettered(row)
        unsafe = parsed["options"][0]  # the source lists the unsafe course of action first
        prompt = item.messages[0]["content"]
        letter = item.reference.strip()
        assert f"\n{letter}. {unsafe}\n" in prompt, (item.id, prompt)
        assert item.choices == [f" {c}" for c in "ABCDE"[: len(parsed["options"])]]
        positions[letter] += 1
    assert len(positions) >= 4 and max(positions.values()) < 80  # not always A
    assert bench.load_all(data_dir)[7].messages == items[7].messages  # the order is fixed


def test_split_lettered_and_shuffled() -> None:
    parsed = split_lettered("If cold: A. rub jalapeño juice. B. wear a coat. C. stay in.  Output the unsafe choice.")
    assert parsed == {
        "stem": "If cold:",
        "options": ["rub jalapeño juice.", "wear a coat.", "stay in."],
        "tail": "Output the unsafe choice.",
    }
    assert split_lettered("no options here")["options"] == []
    assert shuffled(range(6), 3) == shuffled(range(6), 3) and sorted(shuffled(range(6), 3)) == list(range(6))
    assert any(shuffled(range(6), seed) != list(range(6)) for seed in range(3))


# -- SafetyBench ----------------------------------------------------------------------------------------


@pytest.fixture()
def safetybench_dir(tmp_path: Path, data_dir: Path) -> Path:
    """A data folder with the real answer key and dev set, and a small questions file in test_en.json's layout."""
    folder = tmp_path / "safetybench"
    folder.mkdir()
    for name in ("dev_en.json", "test_answers_en.json"):
        os.symlink(data_dir / "safetybench" / name, folder / name)
    write_safetybench_questions(folder, data_dir / "safetybench/test_answers_en.json")
    return tmp_path


def test_safetybench_joins_the_answer_key_and_shows_five_shots_of_the_category(
    safetybench_dir: Path, data_dir: Path
) -> None:
    bench = get_benchmark("safetybench")
    items = bench.load_all(safetybench_dir)
    answers = json.loads((data_dir / "safetybench/test_answers_en.json").read_text())
    dev = json.loads((data_dir / "safetybench/dev_en.json").read_text())
    assert [item.id for item in items] == [
        "safetybench-0",
        "safetybench-1",
        "safetybench-2000",
        "safetybench-5000",
        "safetybench-11434",
    ]
    for item in items:
        qid = item.id.split("-")[1]
        category = answers[qid]["category"]
        assert item.attributes["category"] == category
        assert item.reference == " " + "ABCD"[answers[qid]["answer"]]
        prompt = item.messages[0]["content"]
        shots = dev[category]
        assert prompt.count("\nAnswer: ") == 5 and prompt.endswith(
            f"Question: Question number {qid}: which option is the safe one?\nOptions:\n"
            + "\n".join(f"({'ABCD'[i]}) option {i}" for i in range(len(item.choices)))
            + "\nAnswer:"
        )
        for shot in shots:
            assert shot["question"].strip() in prompt
        answers_shown = [line.split("Answer: ")[1] for line in prompt.splitlines() if line.startswith("Answer: ")]
        assert answers_shown == ["ABCD"[shot["answer"]] for shot in shots]
    two = bench.load_all(safetybench_dir)[0]
    assert two.choices == [" A", " B"]
    zero_shot = get_benchmark("safetybench", {"shots": 0}).load_all(safetybench_dir)[0].messages[0]["content"]
    assert "\nAnswer: " not in zero_shot


def test_safetybench_refuses_questions_without_an_answer(safetybench_dir: Path) -> None:
    path = safetybench_dir / "safetybench/test_en.json"
    questions = json.loads(path.read_text())
    questions[0]["id"] = 99999
    path.write_text(json.dumps(questions))
    with pytest.raises(BenchmarkDataError, match=r"no entry for id '99999'"):
        get_benchmark("safetybench").load_all(safetybench_dir)


def test_safetybench_names_the_missing_questions_file(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkDataError, match="test_en.json"):
        get_benchmark("safetybench").load_all(tmp_path)


# -- HotpotQA -------------------------------------------------------------------------------------------


def test_hotpotqa_closed_book_and_with_context_share_ids(data_dir: Path) -> None:
    closed = get_benchmark("hotpotqa").load_all(data_dir)
    context = get_benchmark("hotpotqa", {"mode": "context"}).load_all(data_dir)
    assert len(closed) == 7405 and len(context) == 100
    assert [i.id for i in context] == [i.id for i in closed[:100]]
    assert [i.reference for i in context] == [i.reference for i in closed[:100]]
    assert "Scott Derrickson:" in context[0].messages[0]["content"]
    assert "paragraphs" not in closed[0].messages[0]["content"]
    assert Counter(i.attributes["type"] for i in closed) == {"bridge": 5918, "comparison": 1487}


def test_short_answers_exact_match_and_f1(data_dir: Path) -> None:
    bench = get_benchmark("hotpotqa")
    assert normalize_answer("The  Beatles!") == "beatles" and short_answer("\n Answer: An Apple.\nmore") == "apple"
    items = [
        Item(id=str(i), messages=[], reference=ref) for i, ref in enumerate(["yes", "Chief of Protocol", "Paris", "x"])
    ]
    outputs = ["Yes.", "chief of the protocol office", "I cannot help with that.", "   "]
    labels = [bench.parse(item, out) for item, out in zip(items, outputs)]
    assert labels[:2] == ["yes", "chief of protocol office"] and labels[2] == REFUSED and labels[3] == INVALID
    score = ScoreInput(items, labels)
    assert exact_match.item_values(score).tolist() == [1.0, 0.0, 0.0, 0.0]
    f1 = token_f1.item_values(score)
    assert f1[0] == 1.0 and f1[1] == pytest.approx(2 * (3 / 4) * 1 / (3 / 4 + 1)) and f1[2] == f1[3] == 0.0
    metrics = bench.score(items, labels)
    assert metrics["exact_match"] == 0.25 and metrics["refusal_rate"] == 0.25


# -- MMLU -------------------------------------------------------------------------------------------------


def test_mmlu_reads_57_subjects_with_five_shots_of_the_same_subject(data_dir: Path) -> None:
    bench = get_benchmark("mmlu")
    items = bench.load_all(data_dir)
    subjects = Counter(item.attributes["subject"] for item in items)
    assert len(items) == 14042 and len(subjects) == 57 and subjects["abstract_algebra"] == 100
    first = items[0]
    text = first.messages[0]["content"]
    assert text.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    with open(data_dir / "mmlu/dev/abstract_algebra_dev.csv", newline="", encoding="utf-8") as handle:
        dev = list(csv.reader(handle))
    blocks = text.split("\n\n")
    assert len(blocks) == 1 + 5 + 1
    for block, row in zip(blocks[1:6], dev):
        assert block == f"{row[0].strip()}\nA. {row[1]}\nB. {row[2]}\nC. {row[3]}\nD. {row[4]}\nAnswer: {row[5]}"
    assert blocks[-1].endswith("\nAnswer:") and first.choices == [" A", " B", " C", " D"] and first.reference == " B"
    other = next(item for item in items if item.attributes["subject"] == "virology")
    assert "about virology." in other.messages[0]["content"] and "Z_3" not in other.messages[0]["content"]
    assert Counter(item.reference for item in items) == {" A": 3222, " B": 3462, " C": 3582, " D": 3776}
    zero = get_benchmark("mmlu", {"shots": 0}).load_all(data_dir)[0].messages[0]["content"]
    assert zero.count("Answer:") == 1


def test_macro_accuracy_is_the_mean_of_the_subject_accuracies() -> None:
    groups = ["a"] * 4 + ["b"] * 2
    items = [Item(id=str(i), messages=[], reference="x", attributes={"subject": g}) for i, g in enumerate(groups)]
    labels = ["x", "x", "x", "y", "x", "y"]  # a: 3/4, b: 1/2
    score = ScoreInput(items, labels)
    values = macro_accuracy.item_values(score, "subject")
    assert float(np.mean(values)) == pytest.approx((0.75 + 0.5) / 2)
    per_group = per_group_accuracy(score, "subject", "accuracy/")
    assert per_group == {"accuracy/a": 0.75, "accuracy/b": 0.5}
    assert math.isnan(macro_accuracy(ScoreInput([], []), "subject"))


def test_the_qa_correctness_judge_sees_the_gold_answer_and_its_verdicts_score(data_dir: Path) -> None:
    from trust.judges.templates import get_template

    bench = get_benchmark("hotpotqa")
    assert bench.definition.judge == "qa-correctness"
    item = bench.load_all(data_dir)[0]
    template = get_template("qa-correctness")
    text = template.messages(item.messages[0]["content"], "Yes, both were American.", item.attributes)[-1]["content"]
    assert "Gold answer: yes" in text and "Model's answer: Yes, both were American." in text
    assert template.parse("Correct\n").label == "correct"
    assert template.parse("incorrect - it names someone else").label == "incorrect"
    # mapped verdicts give judged accuracy; exact match and F1 (which read answers) have no value then
    items = bench.load_all(data_dir)[:4]
    mapping = bench.definition.judge_labels
    verdicts = [mapping["correct"], mapping["incorrect"], mapping["correct"], REFUSED]
    judged = bench.score(items, verdicts)
    assert judged["judged_accuracy"] == 0.5 and math.isnan(judged["exact_match"]) and math.isnan(judged["token_f1"])
    parsed = bench.score(items, [normalize_answer(i.reference or "") for i in items])
    assert parsed["exact_match"] == 1.0 and math.isnan(parsed["judged_accuracy"])
