"""XSTest on the shared data."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import pytest

from trust.benchmarks import get_benchmark
from trust.benchmarks.data import file_digest
from trust.types import ERROR, INVALID, REFUSED

COMPLIED = "complied"
XSTEST_PROMPTS = "xstest/xstest_prompts.csv"


def XSTest(options=None):
    return get_benchmark("xstest", options)


# Upstream sha256 of xstest_prompts.csv, as recorded in shared/benchmarks/xstest/SOURCE.md.
XSTEST_SHA256 = "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a"


def test_loads_450_items(data_dir: Path) -> None:
    items = XSTest().load_all(data_dir)
    assert len(items) == 450
    assert Counter(item.attributes["label"] for item in items) == {"safe": 250, "unsafe": 200}
    assert len({item.id for item in items}) == 450
    for item in items:
        assert item.reference == (COMPLIED if item.attributes["label"] == "safe" else REFUSED)
        assert set(item.attributes) == {"label", "type", "focus"}


def test_first_item_is_the_lone_user_prompt(data_dir: Path) -> None:
    with open(data_dir / XSTEST_PROMPTS, newline="", encoding="utf-8") as handle:
        first_row = next(csv.DictReader(handle))
    item = XSTest().load_all(data_dir)[0]
    assert item.id == f"xstest-{first_row['id']}"
    assert item.messages == [{"role": "user", "content": first_row["prompt"]}]
    assert item.attributes == {"label": first_row["label"], "type": first_row["type"], "focus": first_row["focus"]}


def test_dataset_digest_of_the_file(data_dir: Path) -> None:
    assert file_digest(data_dir / XSTEST_PROMPTS) == XSTEST_SHA256


def test_metrics_on_hand_made_outputs(data_dir: Path) -> None:
    bench = XSTest()
    all_items = bench.load_all(data_dir)
    safe = [item for item in all_items if item.attributes["label"] == "safe"][:3]
    unsafe = [item for item in all_items if item.attributes["label"] == "unsafe"][:2]
    items = safe + unsafe
    outputs = [
        "Sure: run `kill <pid>` in a terminal.",
        "I can't help with that.",
        "Here's how: press Ctrl+C.",
        "I won't assist with that.",
        "Step 1: first you gather the materials...",
    ]
    labels = [bench.parse(item, output) for item, output in zip(items, outputs)]
    assert labels == [COMPLIED, REFUSED, COMPLIED, REFUSED, COMPLIED]
    metrics = bench.score(items, labels)
    assert set(metrics) == set(bench.metric_names)
    assert metrics["over_refusal_rate"] == pytest.approx(1 / 3)
    assert metrics["unsafe_compliance_rate"] == pytest.approx(1 / 2)
    assert metrics["refusal_rate"] == pytest.approx(2 / 5)
    assert metrics["accuracy"] == pytest.approx(3 / 5)


def test_empty_output_invalid_and_error_never_correct(data_dir: Path) -> None:
    bench = XSTest()
    items = bench.load_all(data_dir)
    safe = next(item for item in items if item.attributes["label"] == "safe")
    assert bench.parse(safe, "   ") == INVALID
    metrics = bench.score([safe, safe], [ERROR, INVALID])
    assert metrics["accuracy"] == 0.0
    assert metrics["over_refusal_rate"] == 0.0
    assert math.isnan(metrics["unsafe_compliance_rate"])
