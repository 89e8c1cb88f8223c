"""``bench/adaptive.py savings``: the replay of a complete stored sweep through the adaptive decisions.

One small fake-engine sweep with planted effects (a reference; a variant that flips nothing; one that
refuses on 60% of the items) is run for real and replayed: the numbers must agree with the stored
results and with each other.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.support.pipeline_helpers import FAKE_SOURCE, REPO, run

REFUSAL = "I'm sorry, but I can't help with that."
ITEMS = 300


def _bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("adaptive_savings", REPO / "bench" / "adaptive_savings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def planted_sweep(root: Path) -> dict[str, Any]:
    """A reference and two variants: ``f0`` answers like it everywhere, ``f06`` refuses on 60% of the items."""
    return {
        "name": "planted",
        "models": [
            {
                "name": "fake",
                "source": FAKE_SOURCE,
                "engine": "fake",
                "engine_options": {
                    "plant": {"like_seed": "planted", "reply": REFUSAL, "flip_rates": {"fake-f0": 0.0, "fake-f06": 0.6}}
                },
            }
        ],
        "recipes": [
            {"name": "ref", "method": "none"},
            {"name": "f0", "method": "rtn", "bits": 8, "group_size": 32},
            {"name": "f06", "method": "rtn", "bits": 4, "group_size": 32},
        ],
        "benchmarks": [
            {"name": "machine_ethics", "limit": ITEMS, "max_new_tokens": 8},
            {"name": "xstest", "limit": ITEMS, "max_new_tokens": 8},
        ],
        "shard_size": 100,
        "quality_probe": False,
        "resources": {"num_cpus": 0.5, "retry_backoff_s": 0.1},
        "storage": {"root": str(root / "runs")},
    }


@pytest.fixture(scope="module")
def sweep_dir(ray_local, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("planted")
    run(planted_sweep(root), root, data_dir)
    return root / "runs" / "planted"


def test_replay_of_a_planted_sweep_is_consistent(sweep_dir: Path, data_dir: Path) -> None:
    bench = _bench_module()
    from jobs.results.stored import load_stored_sweep
    from jobs.spec.schema import AdaptiveSpec
    from trust.comparison.sequential import Decision, SequentialConfig

    stored = load_stored_sweep(sweep_dir, data_dir)
    config = SequentialConfig(margin=0.1, min_items=50, round=50)
    replay = bench.replay_sweep(stored, config, str(sweep_dir))
    pairs = {(p.variant, p.benchmark): p for p in replay.pairs}
    assert set(pairs) == {(v, b) for v in ("fake-f0", "fake-f06") for b in ("machine_ethics", "xstest")}
    assert replay.planned == {"machine_ethics": ITEMS, "xstest": ITEMS}
    rows = {(r.name, r.benchmark): r for r in stored.results if r.kind == "variant"}

    for (variant, benchmark), p in pairs.items():
        # the full-data Δ is the difference of the stored metrics (every item answered, none failed)
        metric = p.metric
        expected = rows[(variant, benchmark)].metrics[metric] - rows[("fake-ref", benchmark)].metrics[metric]
        assert p.full.delta == pytest.approx(expected, abs=1e-12)
        assert p.full.low <= p.full.delta <= p.full.high
        assert p.flip_rate == (0.0 if variant == "fake-f0" else 0.6)
    for benchmark in ("machine_ethics", "xstest"):
        same = pairs[("fake-f0", benchmark)]  # flips nothing: Δ is 0 on every item
        assert same.full.delta == 0.0 and same.full.decision == Decision.EQUIVALENT
        assert same.decision == Decision.EQUIVALENT and same.used < same.planned and same.agree
        assert same.low <= 0.0 <= same.high
    # refusing on 60% of XSTest's safe prompts raises the over-refusal rate far beyond the margin
    refuses = pairs[("fake-f06", "xstest")]
    assert refuses.full.delta > 0.3 and refuses.decision == Decision.BETTER == refuses.full.decision
    assert bench.word(refuses.decision, refuses.higher_is_better) == "worse"  # over-refusal: lower is better
    assert refuses.used < refuses.planned

    # per-item values in the fixed order (sha256 rank of the item id): over-refusal counts safe prompts only
    from jobs.plan.adaptive import fixed_order

    xstest = stored.plan.benchmarks["xstest"]
    order = fixed_order(xstest)
    assert sorted(order) == list(range(ITEMS)) and order != list(range(ITEMS))
    plan = bench.replay_plan(stored.plan, AdaptiveSpec(margin=0.1, min_items=50, round=50)).benchmarks["xstest"]
    values = bench.ordered_values(plan, rows[("fake-f06", "xstest")])
    safe = np.array([xstest.items[i].attributes["label"] == "safe" for i in order])
    assert np.array_equal(~np.isnan(values), safe)
    assert np.nanmean(values) == pytest.approx(rows[("fake-f06", "xstest")].metrics["over_refusal_rate"])

    # totals: each variant's used items, each reference's most over its variants; full = 3 variants × planned
    used = {b: [pairs[(v, b)].used for v in ("fake-f0", "fake-f06")] for b in ("machine_ethics", "xstest")}
    evaluated = sum(sum(u) + max(u) for u in used.values())
    assert replay.evaluated() == evaluated and replay.full == 3 * ITEMS * 2
    assert replay.fraction() == pytest.approx(evaluated / (6 * ITEMS))
    ahead = {b: [min(ITEMS, u + 50) for u in us] for b, us in used.items()}
    assert replay.evaluated(lookahead=True) == sum(sum(u) + max(u) for u in ahead.values())
    assert replay.agreement == np.mean([p.agree for p in replay.pairs])


def test_savings_command_prints_the_tables_and_writes_them(sweep_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "savings.md"
    done = subprocess.run(
        [sys.executable, "bench/adaptive.py", "savings", "--store", str(sweep_dir), "--margin", "0.05", "0.1"]
        + ["--min-items", "50", "--round", "50", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.count("Items evaluated ÷ full sweep") == 2 and "margin 0.05" in text and "margin 0.1," in text
    assert "| fake-f0 | machine_ethics | 0 | equivalent |" in text
    assert text in done.stdout + "\n"


def test_savings_command_names_a_folder_that_is_no_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench_module().main(["--store", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "sweep.yaml not found" in err and err.count("\n") == 1


def test_replay_plan_takes_the_safety_verdict_benchmarks(data_dir: Path, tmp_path: Path) -> None:
    """xsafety's safe_rate is a mean over items: the replay compares it (the plan's probe label "" is no verdict)."""
    from jobs.plan.adaptive import fixed_order
    from jobs.plan.build import build_plan
    from jobs.spec.load import parse_spec
    from jobs.spec.schema import AdaptiveSpec

    spec = planted_sweep(tmp_path)
    spec["benchmarks"] = [{"name": "xsafety", "limit": 20, "max_new_tokens": 8}]
    plan = build_plan(parse_spec(spec), data_dir)
    adaptive = _bench_module().replay_plan(plan, AdaptiveSpec())
    xsafety = adaptive.benchmarks["xsafety"]
    assert xsafety.metric == "safe_rate" and xsafety.higher_is_better is True
    assert xsafety.order == fixed_order(plan.benchmarks["xsafety"]) and "xsafety" not in adaptive.full_runs
    assert {(p.variant, p.reference) for p in xsafety.pairs} == {("fake-f0", "fake-ref"), ("fake-f06", "fake-ref")}


def test_a_sweep_still_running_is_replayed_only_with_partial(
    sweep_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "planted"
    shutil.copytree(sweep_dir, copy)
    shutil.rmtree(copy / "generations" / "variant=fake-f06" / "benchmark=xstest")  # as if not computed yet
    bench = _bench_module()
    args = ["--store", str(copy), "--min-items", "50", "--round", "50", "--margin", "0.1"]
    assert bench.main(args) == 2
    err = capsys.readouterr().err
    assert "not complete (fake-f06 × xstest: 0 of 300)" in err and "--partial" in err

    [replay] = bench.run_savings(str(copy), [0.1], min_items=50, round_items=50, partial=True)
    assert {(p.variant, p.benchmark) for p in replay.pairs} == {
        ("fake-f0", "machine_ethics"),
        ("fake-f06", "machine_ethics"),
        ("fake-f0", "xstest"),
    }
    assert "fake-f06 × xstest" in replay.full_runs
    xstest = replay.pairs[-1]
    assert replay.full == 3 * ITEMS + 2 * ITEMS  # the missing pair counts neither in full nor in evaluated
    assert (
        replay.evaluated()
        == sum(p.used for p in replay.pairs[:2]) + max(p.used for p in replay.pairs[:2]) + 2 * xstest.used
    )
