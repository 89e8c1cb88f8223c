"""Comparisons with the reference, terminal tables, the HTML report and `qtrust report`, on stored answers.

The answers are written by the test (no inference): the reference answers machine ethics correctly on
32 of 40 items, w8 answers exactly like it, w4 turns 10 of the reference's correct answers wrong and
w3 says "wrong" to everything. On XSTest the reference refuses the unsafe prompts, w4 complies with
6 of them and w3's answers do not parse as anything but compliance.
"""

from __future__ import annotations

import html.parser
import math
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from jobs.plan.build import Plan, build_plan
from jobs.results.compare import compare_results
from jobs.results.html import render_report
from jobs.results.scoring import compute_results
from jobs.results.tables import MAX_WIDTH, print_results
from jobs.spec.load import dump_spec, parse_spec
from jobs.store.sweep import SweepStore
from tests.support.helpers import sweep_dict

REFUSAL = "I'm sorry, but I can't help with that request."
COMPLY = "Sure. Here is a detailed answer to your question with the steps you need."


def _spec(model_dir: Path, root: Path) -> dict:
    return sweep_dict(
        model_dir,
        root,
        name="cmp",
        recipes=[
            {"name": "ref", "method": "none"},
            {"name": "w8", "method": "rtn", "bits": 8, "group_size": 32},
            {"name": "w4", "method": "rtn", "bits": 4, "group_size": 32},
            {"name": "w3", "method": "rtn", "bits": 3, "group_size": 32},
        ],
        benchmarks=[
            {"name": "machine_ethics", "limit": 40, "max_new_tokens": 4},
            {"name": "xstest", "limit": 40, "max_new_tokens": 8},
        ],
        ensembles=[{"name": "vote", "members": ["w8", "w4", "w3"]}],
    )


def _answers(plan: Plan) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Stored records for every (variant, benchmark), and the ids w4 flips on machine ethics."""
    rows, flipped = [], {"machine_ethics": [], "xstest": []}
    for bench_name, run in plan.benchmarks.items():
        for variant in plan.variants.values():
            keys = plan.keys_of(variant.name, bench_name)
            for index, (item, key) in enumerate(zip(run.items, keys)):
                if bench_name == "machine_ethics":
                    right = item.reference
                    wrong = "not wrong" if right == "wrong" else "wrong"
                    ref_correct = index % 5 != 0  # 32 of 40
                    answer = right if ref_correct else wrong
                    if variant.name.endswith("w4") and ref_correct and len(flipped[bench_name]) < 10:
                        answer = wrong
                        flipped[bench_name].append(item.id)
                    if variant.name.endswith("w3"):
                        answer = "wrong"
                else:
                    unsafe = item.attributes.get("label") == "unsafe"
                    answer = REFUSAL if unsafe else COMPLY
                    if variant.name.endswith("w4") and unsafe and len(flipped[bench_name]) < 6:
                        answer = COMPLY
                        flipped[bench_name].append(item.id)
                    if variant.name.endswith("w3"):
                        answer = "zzz"
                rows.append(
                    {
                        "item_key": key,
                        "item_id": item.id,
                        "prompt": "[]",
                        "choices": None,
                        "output": answer,
                        "logprobs": None,
                        "prompt_tokens": 10,
                        "completion_tokens": 3,
                        "latency_s": 0.1,
                        "error": None,
                        "attempt": 1,
                        "worker": "{}",
                        "committed_at": 1.0,
                        "_variant": variant.name,
                        "_bench": bench_name,
                    }
                )
    return pd.DataFrame(rows), flipped


@pytest.fixture(scope="module")
def sweep(tiny_model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("runs")
    spec = parse_spec(_spec(tiny_model_dir, root))
    plan = build_plan(spec, data_dir)
    records, flipped = _answers(plan)
    store = SweepStore(root, spec.name)
    store.write_spec(dump_spec(spec))
    for (variant, bench), group in records.groupby(["_variant", "_bench"]):
        store.commit_generations(variant, bench, group.drop(columns=["_variant", "_bench"]).to_dict("records"))
    frame = records.drop(columns=["_variant", "_bench"]).drop_duplicates("item_key")
    results = compute_results(plan, frame.set_index("item_key", drop=False))
    return plan, results, flipped, store


def test_paired_comparison_flags_flips_and_ensemble_search(sweep) -> None:
    plan, results, flipped, _store = sweep
    comparison = compare_results(plan, results)
    me = comparison.rows("machine_ethics").set_index("short")
    assert comparison.references == {"tiny": "tiny-ref"}
    assert math.isnan(me.loc["ref", "delta"])
    # w8 answers like the reference: no difference, McNemar p = 1.
    assert me.loc["w8", "delta"] == 0 and me.loc["w8", "p_value"] == 1.0 and not me.loc["w8", "significant"]
    # w4: 10 correct answers turned wrong, none the other way: -10/40, McNemar exact p = 2 * 0.5**10.
    assert me.loc["w4", "delta"] == pytest.approx(-10 / 40)
    assert me.loc["w4", "p_value"] == pytest.approx(2 * 0.5**10)
    assert me.loc["w4", "significant"] and me.loc["w4", "delta_high"] < 0
    # Every rate has an interval around its value (Wilson for 0/1 per-item values).
    assert (me["low"] <= me["value"]).all() and (me["value"] <= me["high"]).all()
    assert me.loc["ref", "interval"] == "wilson" and me.loc["ref", "n"] == 40
    assert me.loc["ref", "value"] == pytest.approx(32 / 40)

    flips = comparison.flips[("tiny-w4", "machine_ethics")]
    assert sorted(flips["item_id"]) == sorted(flipped["machine_ethics"])
    assert set(flips["change"]) == {"correct→wrong"}
    # The answers themselves come with the flips, so the change can be read.
    assert all(a != b for a, b in zip(flips["reference_output"], flips["variant_output"]))
    assert comparison.flips[("tiny-w8", "machine_ethics")].empty
    xs_flips = comparison.flips[("tiny-w4", "xstest")]
    assert sorted(xs_flips["item_id"]) == sorted(flipped["xstest"])
    assert set(xs_flips["change"]) == {"refused→complied"}

    # w3 says "wrong" to everything: flagged, with the majority-class baseline in the message.
    w3_flags = comparison.flags[("tiny-w3", "machine_ethics")]
    assert [f.code for f in w3_flags] == ["single_label"] and "baseline" in w3_flags[0].message
    assert comparison.flags[("tiny-ref", "machine_ethics")] == []
    assert "says 'wrong'" in me.loc["w3", "flags"]

    # Ensemble search: every subset (size >= 2) of the three RTN variants, per benchmark.
    search = comparison.ensembles[comparison.ensembles["benchmark"] == "machine_ethics"]
    assert sorted(search["members"]) == sorted(
        ["tiny-w8+tiny-w4", "tiny-w8+tiny-w3", "tiny-w4+tiny-w3", "tiny-w8+tiny-w4+tiny-w3"]
    )
    full = search[search["size"] == 3].iloc[0]
    declared = next(r for r in results if r.kind == "ensemble" and r.benchmark == "machine_ethics")
    assert full["value"] == pytest.approx(declared.metrics[plan.benchmarks["machine_ethics"].benchmark.primary_metric])
    assert full["best_member"] == "tiny-w8"


def test_terminal_tables_fit_100_columns(sweep) -> None:
    plan, results, _flipped, _store = sweep
    console = Console(width=160, record=True, color_system=None)
    print_results(console, plan, results)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= MAX_WIDTH, max(lines, key=len)
    assert "tiny-w4" not in text.split("Answers that changed")[0]  # short names in the tables
    assert "w4" in text and "one-label" in text and "reference" in text and "correct→wrong" in text
    console = Console(width=160, record=True, color_system=None)
    print_results(console, plan, results, metrics=["all"])
    assert max(len(line) for line in console.export_text().splitlines()) <= MAX_WIDTH
    console = Console(width=160, record=True, color_system=None)
    print_results(console, plan, results, long=True)
    assert max(len(line) for line in console.export_text().splitlines()) <= MAX_WIDTH


def test_html_report_is_self_contained(sweep) -> None:
    plan, results, flipped, _store = sweep
    text = render_report(plan, compare_results(plan, results))
    html.parser.HTMLParser().feed(text)  # parses
    assert text.count("data:image/png;base64,") >= 3  # metric-vs-bits per benchmark, flip matrices
    assert "http://" not in text and "https://" not in text  # nothing fetched from elsewhere
    for item_id in flipped["machine_ethics"]:
        assert item_id in text
    assert "Ensemble search" in text and "Majority-class baseline" in text


def test_qtrust_report_command(sweep, data_dir: Path) -> None:
    from jobs.cli import app

    _plan, _results, _flipped, store = sweep
    result = CliRunner().invoke(app, ["report", str(store.dir), "--data-dir", str(data_dir), "--no-mlflow"])
    assert result.exit_code == 0, result.output
    assert (Path(store.dir) / "report.html").is_file()
    assert "HTML report:" in result.output and "Δ vs ref" in result.output
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(store.dir),
            "--data-dir",
            str(data_dir),
            "--no-mlflow",
            "--metrics",
            "accuracy",
            "--out",
            str(Path(store.dir) / "elsewhere.html"),
            "--items",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (Path(store.dir) / "elsewhere.html").is_file()
    # --items: every stored answer with the label the parser gave it (labels are never stored: derived here)
    exported = pd.read_csv(Path(store.dir) / "items.csv", keep_default_na=False)
    assert list(exported.columns) == [
        "variant",
        "kind",
        "benchmark",
        "item_id",
        "reference",
        "output",
        "label",
        "error",
    ]
    w3 = exported[(exported["variant"] == "tiny-w3") & (exported["benchmark"] == "machine_ethics")]
    assert len(w3) == 40 and set(w3["label"]) == {"wrong"}
    assert "Items with their parsed labels:" in " ".join(result.output.split())
    missing = CliRunner().invoke(app, ["report", str(Path(store.dir).parent / "nope"), "--data-dir", str(data_dir)])
    assert missing.exit_code == 2 and "sweep.yaml" in missing.output and "Traceback" not in missing.output


def test_declared_direction_decides_over_the_metric_name(tmp_path: Path) -> None:
    """A bias score is lower-is-better when its definition says so (by name alone it read "higher is better")."""
    from types import SimpleNamespace

    from jobs.results.compare import higher_is_better
    from tests.trust.test_declarative import USER_DEFINITION, write_user_benchmark
    from trust.benchmarks import get_benchmark

    definition = {
        **USER_DEFINITION,
        "metrics": [
            *USER_DEFINITION["metrics"],
            {"fn": "invalid_rate"},
            {"name": "bias_score", "expr": "2 * rate(label='yes') - 1", "higher_is_better": False},
        ],
    }
    run = SimpleNamespace(benchmark=get_benchmark("pets", None, write_user_benchmark(tmp_path / "b", definition)))
    assert higher_is_better(run, "bias_score") is False  # declared by the entry
    assert higher_is_better(run, "accuracy") is True  # declared by the function
    assert higher_is_better(run, "invalid_rate") is False
    assert higher_is_better(run, "farm_yes_rate") is None  # label_rate: depends on the benchmark

    # by name alone: an unsafe rate is lower-is-better although its name contains "safe"
    opensafetymini = SimpleNamespace(benchmark=get_benchmark("opensafetymini"))
    assert higher_is_better(opensafetymini, "unsafe_rate") is False
    assert higher_is_better(opensafetymini, "safe_rate") is True
