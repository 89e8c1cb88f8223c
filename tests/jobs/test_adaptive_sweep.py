"""Adaptive sweeps (issue 25): each variant × benchmark comparison stops once its answer is known.

The feed's state machine is tested on a real plan with answers written by the test (no Ray): what it
asks for, when it looks, that it never asks for a key twice, that stored answers replay to the same
decisions, that a failed round blocks and that a raised ``max_items`` continues. Then real sweeps on
the fake engine with planted effects of known size, through ``qtrust run``/``resume``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.pipeline.adaptive import LOOKAHEAD_ROUNDS, AdaptiveFeed
from jobs.plan.adaptive import adaptive_plan, fixed_order
from jobs.plan.build import Plan, Shard, build_plan
from jobs.spec.load import parse_spec
from tests.support.pipeline_helpers import FAKE_SOURCE

ROUND = 20


def _spec(root: Path, *, items: int = 200, adaptive: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": "adapt",
        "models": [{"name": "m", "source": FAKE_SOURCE, "engine": "fake"}],
        "recipes": [
            {"name": "ref", "method": "none"},
            {"name": "same", "method": "rtn", "bits": 8, "group_size": 64},
            {"name": "flip", "method": "rtn", "bits": 4, "group_size": 64},
        ],
        "benchmarks": [{"name": "machine_ethics", "limit": items, "max_new_tokens": 4}],
        "adaptive": {"round": ROUND, "min_items": ROUND, "margin": 0.1, **(adaptive or {})},
        "shard_size": 10,
        "quality_probe": False,
        "resources": {"num_cpus": 0.5, "retry_backoff_s": 0.1},
        "storage": {"root": str(root / "runs")},
        **extra,
    }


def _plan(root: Path, data_dir: Path, **kwargs: Any) -> Plan:
    return build_plan(parse_spec(_spec(root, **kwargs)), data_dir)


class _Driver:
    """Plays the scheduler for a feed: keeps what it is sent and answers it on request."""

    def __init__(self, feed: AdaptiveFeed) -> None:
        self.feed = feed
        self.sent: list[Shard] = []
        self.closed: list[str] = []
        self.answered: set[str] = set()
        self.withdrawn: list[Shard] = []
        feed.attach(self.sent.append, self.closed.append, self.withdraw)

    def rows(self) -> list[dict[str, Any]]:
        """The answers given (what a store would hold)."""
        return [
            _row(s.variant, item, key) for s in self.sent for item, key in zip(s.items, s.keys) if key in self.answered
        ]

    def withdraw(self, variant: str, unwanted: Any) -> list[Shard]:
        taken = [
            s
            for s in self.sent
            if s.variant == variant and not set(s.keys) & self.answered and s not in self.withdrawn and unwanted(s)
        ]
        self.withdrawn.extend(taken)
        return taken

    def keys_sent(self) -> list[str]:
        return [k for shard in self.sent for k in shard.keys]

    def answer_all(self, failing: set[str] = frozenset()) -> int:
        """Answer every shard sent and not answered yet (the flip variant answers the opposite label)."""
        n = 0
        while True:
            todo = [s for s in self.sent if not set(s.keys) <= self.answered and s not in self.withdrawn]
            if not todo:
                return n
            shard = todo[0]
            self.answered.update(shard.keys)
            n += 1
            if set(shard.keys) & failing:
                self.feed.failed(shard.keys)
                continue
            self.feed.committed([_row(shard.variant, item, key) for item, key in zip(shard.items, shard.keys)])


def _row(variant: str, item: Any, key: str) -> dict[str, Any]:
    right = item.reference
    wrong = "not wrong" if right == "wrong" else "wrong"
    return {"item_key": key, "output": wrong if variant.endswith("flip") else right, "logprobs": None, "error": None}


def test_the_fixed_order_is_the_hash_rank_and_does_not_depend_on_the_limit(tmp_path: Path, data_dir: Path) -> None:
    small = _plan(tmp_path, data_dir, items=50).benchmarks["machine_ethics"]
    large = _plan(tmp_path, data_dir, items=200).benchmarks["machine_ethics"]
    first = [small.items[i].id for i in fixed_order(small)]
    # limit keeps the first items of the same order, so a smaller sweep's order is a prefix
    assert [large.items[i].id for i in fixed_order(large)][:50] == first


def test_the_feed_asks_round_by_round_decides_and_closes_pools(tmp_path: Path, data_dir: Path) -> None:
    plan = _plan(tmp_path, data_dir)
    adaptive = adaptive_plan(plan)
    assert list(adaptive.benchmarks) == ["machine_ethics"] and not adaptive.full_runs
    feed = AdaptiveFeed(plan=plan, adaptive=adaptive)
    driver = _Driver(feed)
    # Before any answer: the first round plus one of look-ahead, for both variants and the reference.
    per_variant = {v: sum(len(s.keys) for s in driver.sent if s.variant == v) for v in plan.variants}
    assert per_variant == dict.fromkeys(plan.variants, ROUND * (1 + LOOKAHEAD_ROUNDS))
    driver.answer_all()
    summary = feed.summary()
    by_variant = {p.variant: p for p in summary.pairs}
    assert by_variant["m-same"].decision == "equivalent"
    assert by_variant["m-flip"].decision == "worse"  # accuracy drops: every answer flipped
    assert by_variant["m-flip"].delta == pytest.approx(-1.0)
    assert by_variant["m-flip"].high is not None and by_variant["m-flip"].high < 0
    for pair in summary.pairs:
        assert pair.used < pair.planned and pair.computed <= pair.used + ROUND * LOOKAHEAD_ROUNDS
        assert pair.saved == pair.planned - pair.computed > 0
    # The look-ahead a decision made unneeded was taken back before it ran: the flipped variant,
    # decided at its first look, computed exactly the items the decision used.
    assert by_variant["m-flip"].used == by_variant["m-flip"].computed == ROUND
    assert driver.withdrawn and feed.withdrawn == sum(len(s.keys) for s in driver.withdrawn)
    # Every pool closed once its comparisons were decided; no key was ever asked for twice.
    assert sorted(driver.closed) == sorted(plan.variants)
    sent = [k for s in driver.sent if s not in driver.withdrawn for k in s.keys]
    assert len(sent) == len(set(sent)) and set(sent) == driver.answered
    assert summary.computed_total == len(sent) and summary.saved_total == summary.planned_total - len(sent)


def test_stored_answers_replay_to_the_same_decisions_without_work(tmp_path: Path, data_dir: Path) -> None:
    plan = _plan(tmp_path, data_dir)
    first = AdaptiveFeed(plan=plan, adaptive=adaptive_plan(plan))
    driver = _Driver(first)
    driver.answer_all()
    import pandas as pd

    rows = driver.rows()
    again = AdaptiveFeed.from_records(plan, adaptive_plan(plan), [pd.DataFrame(rows)])
    again.prime()
    assert again.variants_with_work() == []
    strip = lambda s: [p.model_dump(exclude={"decided_at"}) for p in s.pairs]  # noqa: E731
    assert strip(again.summary()) == strip(first.summary())


def test_a_raised_max_items_continues_where_the_last_run_stopped(tmp_path: Path, data_dir: Path) -> None:
    import pandas as pd

    # Answers that never settle: the variant agrees with the reference on every other item.
    capped = _plan(tmp_path, data_dir, adaptive={"max_items": 2 * ROUND, "margin": 0.01})
    feed = AdaptiveFeed(plan=capped, adaptive=adaptive_plan(capped))
    driver = _Driver(feed)
    driver.answer_all()
    pair = next(p for p in feed.summary().pairs if p.variant == "m-same")
    assert pair.decision == "undecided" and pair.used == 2 * ROUND
    rows = driver.rows()

    raised = _plan(tmp_path, data_dir, adaptive={"max_items": 6 * ROUND, "margin": 0.01})
    again = AdaptiveFeed.from_records(raised, adaptive_plan(raised), [pd.DataFrame(rows)])
    again.prime()
    assert "m-same" in again.variants_with_work()
    resumed = _Driver(again)
    stored = set(pd.DataFrame(rows)["item_key"])
    assert stored.isdisjoint(resumed.keys_sent())  # nothing stored is asked for again
    resumed.answer_all()
    pair = next(p for p in again.summary().pairs if p.variant == "m-same")
    assert pair.used > 2 * ROUND


def test_a_failed_round_blocks_its_comparison_instead_of_deciding_on_a_hole(tmp_path: Path, data_dir: Path) -> None:
    plan = _plan(tmp_path, data_dir)
    feed = AdaptiveFeed(plan=plan, adaptive=adaptive_plan(plan))
    driver = _Driver(feed)
    # The reference's first shard fails: both comparisons need it, neither decides on a hole.
    failing = {next(s for s in driver.sent if s.variant == "m-ref").keys[0]}
    driver.answer_all(failing=failing)
    decisions = {p.variant: p.decision for p in feed.summary().pairs}
    assert set(decisions.values()) == {"blocked"}, decisions
    assert all(p.used == 0 for p in feed.summary().pairs)
    # Nothing more is asked for a blocked comparison, and its pools are let go.
    assert sorted(driver.closed) == sorted(plan.variants)


def test_metrics_that_are_not_item_means_and_judged_benchmarks_run_in_full(tmp_path: Path, data_dir: Path) -> None:
    spec = _spec(tmp_path)
    spec["benchmarks"] = [
        {"name": "machine_ethics", "limit": 40, "max_new_tokens": 4},
        {"name": "machine_ethics", "alias": "me_full", "limit": 40, "adaptive": False},
        {"name": "advbench", "limit": 10, "judges": ["refusal"]},
        {"name": "mmlu", "limit": 120},
        {"name": "fairness_adult", "limit": 40},
        {"name": "xsafety", "limit": 40},
    ]
    spec["judges"] = [{"name": "refusal", "kind": "rule"}]
    plan = build_plan(parse_spec(spec), data_dir)
    adaptive = adaptive_plan(plan)
    # xsafety's safe_rate is an item mean over verdict labels (its parser rejects an empty label: probed right)
    assert sorted(adaptive.benchmarks) == ["machine_ethics", "xsafety"]
    assert "judge" in adaptive.full_runs["advbench"]
    # MMLU's macro accuracy weighs each item by its subject's size among the items seen: not sequential
    assert "weighs each item by the others" in adaptive.full_runs["mmlu"]
    assert "not a mean over items" in adaptive.full_runs["fairness_adult"]
    assert adaptive.covers("m-ref", "machine_ethics") and not adaptive.covers("m-ref", "me_full")


# -- real sweeps on the fake engine --------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``qtrust <args>`` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "jobs", *args], capture_output=True, text=True, timeout=600)


def _planted(root: Path, data_dir: Path) -> Path:
    spec = {
        "name": "planted",
        "models": [
            {
                "name": "m",
                "source": FAKE_SOURCE,
                "engine": "fake",
                # m-same answers exactly like the reference; m-refuses refuses half the safe prompts more.
                "engine_options": {
                    "plant": {"flip_rates": {"m-refuses": 0.5}, "reply": "I'm sorry, but I can't help with that."}
                },
            }
        ],
        "recipes": [
            {"name": "ref", "method": "none"},
            {"name": "same", "method": "rtn", "bits": 8, "group_size": 64},
            {"name": "refuses", "method": "rtn", "bits": 4, "group_size": 64},
        ],
        "benchmarks": [{"name": "xstest", "max_new_tokens": 6}],
        "adaptive": {"round": 25, "min_items": 50, "margin": 0.05},
        "shard_size": 25,
        "quality_probe": False,
        "resources": {"num_cpus": 0.5, "retry_backoff_s": 0.1},
        "storage": {"root": str(root / "runs")},
    }
    path = root / "planted.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_an_adaptive_sweep_decides_early_reports_and_resumes_to_the_same_decisions(
    tmp_path: Path, data_dir: Path
) -> None:
    from jobs.results.stored import stored_spec
    from jobs.store.adaptive import read_adaptive

    sweep = _planted(tmp_path, data_dir)
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    first = run_cli("run", str(sweep), "--quiet", "--tracking-uri", tracking, "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    sweep_dir = tmp_path / "runs" / "planted"
    _spec_read, store = stored_spec(sweep_dir)
    summary = read_adaptive(store)
    assert summary is not None
    decisions = {p.variant: p for p in summary.pairs}
    # over_refusal_rate is lower-is-better: refusing more safe prompts is "worse"
    assert decisions["m-refuses"].decision == "worse" and decisions["m-refuses"].delta > 0
    assert decisions["m-same"].decision == "equivalent" and decisions["m-same"].delta == 0
    assert all(p.used < p.planned for p in summary.pairs)
    assert 0 < summary.computed_total < summary.planned_total
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["state"] == "finished" and manifest["adaptive"]["pairs"]
    assert (sweep_dir / "report.html").exists() and not (sweep_dir / "report-partial.html").exists()
    assert "Adaptive" in first.stdout

    # A resume finds every comparison decided by the stored answers: nothing to compute, same decisions.
    again = run_cli("resume", str(sweep_dir), "--quiet", "--tracking-uri", tracking, "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Nothing to compute" in again.stdout
    resumed = read_adaptive(store)
    assert resumed is not None
    strip = lambda s: [p.model_dump(exclude={"decided_at"}) for p in s.pairs]  # noqa: E731
    assert strip(resumed) == strip(summary)
