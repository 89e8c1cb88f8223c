"""Live tracking of a whole sweep: MLflow shows it while it runs, and survives the server dying."""

from __future__ import annotations

import io
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient
from rich.console import Console

from jobs.results.colours import (
    REFERENCE_COLOR,
    RUN_COLOR_TAG,
    ensemble_palette,
    variant_color,
)
from jobs.tracking.comparison import frame_entries, run_metrics, run_tags, summary_table
from jobs.tracking.sweep import SweepTracking
from tests.support.mlflow_server import _free_port, _kill, _mlflow_server
from tests.support.pipeline_helpers import fake_sweep, run, wait_for

pytestmark = pytest.mark.usefixtures("ray_local")


class SweepThread(threading.Thread):
    """``run_sweep`` in a background thread (the test reads MLflow meanwhile)."""

    def __init__(self, spec: dict, root: Path, data_dir: Path, tracking_uri: str):
        super().__init__(daemon=True)
        self.args = (spec, root, data_dir, tracking_uri)
        self.outcome: Any = None
        self.error: BaseException | None = None
        self.console = Console(file=io.StringIO(), width=300)

    def run(self) -> None:
        spec, root, data_dir, uri = self.args
        try:
            self.outcome = run(spec, root, data_dir, console=self.console, tracking_uri=uri)
        except BaseException as err:
            self.error = err


def _child_runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [
        r
        for r in client.search_runs([found.experiment_id], max_results=200)
        if r.data.tags.get("qtrust.kind") == "variant"
    ]


def test_mlflow_shows_the_sweep_running_with_progress(tmp_path: Path, data_dir: Path) -> None:
    uri = f"sqlite:///{tmp_path}/live.db"
    spec = fake_sweep(tmp_path, {"delay_s": 0.25}, items=8, shard_size=2)
    spec["tracking"] = {"experiment": "live"}
    spec["models"][0]["trust_remote_code"] = True  # said at the start, in the manifest and on the runs
    sweep = SweepThread(spec, tmp_path, data_dir, uri)
    sweep.start()
    client = MlflowClient(uri)

    def running_with_progress() -> list:
        if not sweep.is_alive():
            return []
        runs = _child_runs(client, "live")
        return [r for r in runs if r.info.status == "RUNNING" and r.data.metrics.get("progress.items_done", 0) > 0]

    seen = wait_for(running_with_progress, 120, 0.3, "a RUNNING run with progress while the sweep runs")
    assert sweep.is_alive(), "the sweep ended before MLflow showed it running"
    assert all(0 < r.data.metrics["progress.items_done"] <= 8 for r in seen)
    sweep.join(180)
    assert sweep.error is None and sweep.outcome is not None and not sweep.outcome.failed
    runs = _child_runs(client, "live")
    assert "MLflow" not in sweep.console.file.getvalue(), sweep.console.file.getvalue()  # no tracking warning
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        history = sorted(client.get_metric_history(r.info.run_id, "progress.items_done"), key=lambda m: m.step)
        # at most one point a second (the step is the number of shards landed), ending at all 4 shards
        assert history[-1].step == 4 and history[-1].value == 8
        assert [m.value for m in history] == sorted(m.value for m in history)
        assert r.data.metrics["n_items"] == 8 and r.info.end_time - r.info.start_time > 500  # a real duration
    parent = client.get_run(sweep.outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["progress.items_done"] == 16
    said = sweep.console.file.getvalue()
    assert "warning: models[0] (tiny): trust_remote_code is true" in said, said
    assert sweep.outcome.store.read_manifest()["trust_remote_code"] == ["tiny"]
    for r in runs:
        assert r.data.tags["qtrust.trust_remote_code"] == "true"
        assert r.data.params["model.trust_remote_code"] == "True"


def test_a_corrupt_sqlite_store_is_a_warning_not_a_crash(tmp_path: Path, data_dir: Path) -> None:
    db = tmp_path / "broken.db"
    db.write_bytes(b"this is not a database" * 100)
    outcome = run(fake_sweep(tmp_path, items=4, shard_size=2), tmp_path, data_dir, tracking_uri=f"sqlite:///{db}")
    assert not outcome.failed and outcome.items_computed == 8
    assert outcome.tracking_failures >= 1 and outcome.run_ids == {}
    assert all(r.metrics for r in outcome.results)


@pytest.mark.slow
def test_a_tracking_server_killed_mid_sweep_costs_seconds_and_catches_up(tmp_path: Path, data_dir: Path) -> None:
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    spec = fake_sweep(tmp_path, {"delay_s": 1.0}, items=12, shard_size=2, resources={"max_in_flight": 1})
    spec["tracking"] = {"experiment": "outage"}
    server_root = tmp_path / "server"
    server_root.mkdir()
    with _mlflow_server(server_root, port) as server:
        sweep = SweepThread(spec, tmp_path, data_dir, uri)
        sweep.start()
        client = MlflowClient(uri)
        wait_for(
            lambda: any(r.data.metrics.get("progress.items_done", 0) > 0 for r in _child_runs(client, "outage")),
            120,
            0.5,
            "progress on the server",
        )
        _kill(server)
        killed_at = time.monotonic()
    time.sleep(2)
    assert sweep.is_alive(), "the sweep should still be running while the server is down"
    with _mlflow_server(server_root, port):
        sweep.join(300)
        # 24 items × 1 s on one replica: the outage must cost seconds, not the minutes MLflow's
        # default client retries would (each call to a dead server retried for minutes).
        assert time.monotonic() - killed_at < 24 + 60
        assert sweep.error is None and sweep.outcome is not None and not sweep.outcome.failed
        assert sweep.outcome.items_computed == 24
        assert sweep.outcome.tracking_unsent == {}  # caught up before the end: no "not logged" line
        warnings = sweep.console.file.getvalue()
        assert warnings.count(f"127.0.0.1:{port}") >= 1  # the outage was reported ...
        # ... once per outage, not once per call
        assert warnings.count("MLflow") <= 3, warnings
        # What could not be sent while the server was down is sent now, or by the next run of the
        # sweep (which computes nothing and finishes the same runs).
        again = run(spec, tmp_path, data_dir, tracking_uri=uri)
        assert again.items_computed == 0 and again.run_ids == sweep.outcome.run_ids or not sweep.outcome.run_ids
        client = MlflowClient(uri)
        runs = _child_runs(client, "outage")
        assert len(runs) == 2, "runs must not be duplicated by the outage"
        assert all(r.info.status == "FINISHED" for r in runs)
        for r in runs:
            assert r.data.metrics["n_items"] == 12 and r.data.metrics["progress.items_done"] == 12
            history = client.get_metric_history(r.info.run_id, "progress.items_done")
            points = [(m.step, m.timestamp) for m in history]
            assert len(points) == len(set(points)), points  # a caught-up point is never delivered twice
            assert {m.step for m in history} >= {6}


# -- what the UI shows: names, tags, colours, tables, the comparison -----------------------------


def _comparison_frame(names: dict[str, str], benchmarks: list[str]) -> pd.DataFrame:
    """A small comparison frame (jobs.results.compare's columns) for the variants ``names`` (name -> bits)."""
    rows = []
    for bench in benchmarks:
        for i, (name, bits) in enumerate(names.items()):
            ref = bits == "ref"
            rows.append(
                {
                    "model": "tiny",
                    "benchmark": bench,
                    "name": name,
                    "short": name.removeprefix("tiny-"),
                    "kind": "variant",
                    "method": "none" if ref else "rtn",
                    "bits": bits,
                    "bits_value": 16.0 if ref else float(bits),
                    "metric": "refusal_rate",
                    "primary": True,
                    "value": 0.5 - 0.1 * i,
                    "se": 0.1,
                    "low": 0.3 - 0.1 * i,
                    "high": 0.7 - 0.1 * i,
                    "interval": "wilson",
                    "n": 8,
                    "delta": math.nan if ref else -0.1,
                    "delta_low": math.nan if ref else -0.3,
                    "delta_high": math.nan if ref else 0.1,
                    "p_value": math.nan if ref else 0.5,
                    "significant": False,
                    "flags": "" if ref else "refuses 96% of items",
                }
            )
    return pd.DataFrame(rows)


def test_run_metrics_use_one_name_per_quantity_and_only_finite_values() -> None:
    frame = _comparison_frame({"tiny-ref": "ref", "tiny-w4": "4"}, ["xstest"])
    ref, w4 = frame[frame["name"] == "tiny-ref"], frame[frame["name"] == "tiny-w4"]
    assert run_metrics(ref) == {"refusal_rate_ci_low": 0.3, "refusal_rate_ci_high": 0.7, "refusal_rate_se": 0.1}
    assert run_metrics(w4) == pytest.approx(
        {
            "refusal_rate_ci_low": 0.2,
            "refusal_rate_ci_high": 0.6,
            "refusal_rate_se": 0.1,
            "delta_refusal_rate": -0.1,
            "delta_refusal_rate_ci_low": -0.3,
            "delta_refusal_rate_ci_high": 0.1,
            "delta_refusal_rate_p": 0.5,
        }
    )
    assert run_tags(ref) == {"qtrust.flags": "none", "qtrust.degenerate": "false"}
    assert run_tags(w4) == {"qtrust.flags": "refuses 96% of items", "qtrust.degenerate": "true"}
    summary = summary_table(frame_entries(frame), {"tiny-w4": {"safety": 40.0}, "tiny-ref": {"safety": 55.0}})
    assert list(summary["name"]) == ["tiny-ref", "tiny-w4"]
    assert {"xstest.refusal_rate", "xstest.delta_refusal_rate", "safety_score"} <= set(summary.columns)
    assert summary.set_index("name").loc["tiny-w4", "safety_score"] == 40.0


def test_the_ui_sees_tags_colours_short_names_tables_and_the_comparison(tmp_path: Path, data_dir: Path) -> None:
    uri = f"sqlite:///{tmp_path}/ui.db"
    spec = fake_sweep(tmp_path, items=4, shard_size=2)
    spec["recipes"] = [{"name": "ref", "method": "none"}, {"name": "w4", "method": "rtn", "bits": 4}]
    spec["ensembles"] = [{"name": "ens", "members": ["ref", "w4"]}]
    outcome = run(spec, tmp_path, data_dir, tracking_uri=uri)
    assert not outcome.failed
    client = MlflowClient(uri)
    runs = {r.info.run_id: r for r in client.search_runs([outcome.experiment_id], max_results=100)}
    assert len(runs) == 1 + 2 * 2 + 2
    for run_ in runs.values():
        tags = run_.data.tags
        assert {"variant", "method", "bits", "benchmark", "model", RUN_COLOR_TAG} <= set(tags), tags
        assert tags[RUN_COLOR_TAG].startswith("#") and len(tags[RUN_COLOR_TAG]) == 7
    parent = runs[outcome.parent_run_id]
    assert parent.data.tags["qtrust.kind"] == "sweep" and parent.data.tags["variant"] == "all"
    children = [r for r in runs.values() if r.info.run_id != outcome.parent_run_id]
    by = {(r.data.tags["variant"], r.data.tags["benchmark"]): r for r in children}
    assert by[("tiny-w4", "xstest")].info.run_name == "w4 · xstest"
    assert by[("tiny-ens", "machine_ethics")].info.run_name == "ens · machine_ethics"
    colors = {(v, b): r.data.tags[RUN_COLOR_TAG] for (v, b), r in by.items()}
    assert colors[("tiny-ref", "xstest")] == REFERENCE_COLOR == colors[("tiny-ref", "machine_ethics")]
    assert colors[("tiny-w4", "xstest")] == colors[("tiny-w4", "machine_ethics")] == variant_color("w4")
    assert colors[("tiny-ens", "xstest")] in ensemble_palette()
    assert "compared with ref on the same 4 items" in by[("tiny-w4", "xstest")].data.tags["mlflow.note.content"]
    for (variant, _bench), r in by.items():  # the sweep's own comparison (jobs.results.compare) is logged too
        listed = sorted(e["path"] for e in json.loads(r.data.tags["mlflow.loggedArtifacts"]))
        expected = ["comparison.json", "items.json"] + ([] if variant == "tiny-ref" else ["flips.json"])
        assert listed == sorted(expected), (variant, listed)
        assert r.data.tags["qtrust.degenerate"] in ("true", "false") and r.data.tags["qtrust.flags"]
    # no metric key names a variant: the per-variant scores are the parent's summary table
    assert not [k for k in parent.data.metrics if "tiny-" in k]
    parent_tables = [e["path"] for e in json.loads(parent.data.tags["mlflow.loggedArtifacts"])]
    assert {"summary.json", "comparison.json"} <= set(parent_tables)
    assert {
        "plots/xstest__over_refusal_rate_vs_bits.png",
        "plots/machine_ethics__accuracy_vs_bits.png",
        "plots/flips__xstest.png",
    } <= {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}

    # A comparison with known values, logged by a driver that reopens the sweep's runs (as a resumed
    # sweep does): the same runs, the tables replaced.
    tracking = SweepTracking.open(outcome.plan, outcome.store, outcome.store.read_manifest(), uri, data_dir, warn=print)
    frame = _comparison_frame({"tiny-ref": "ref", "tiny-w4": "4"}, ["xstest", "machine_ethics"])
    flips = {
        ("tiny-w4", b): pd.DataFrame([[3, 1], [0, 0]], index=["refused", "complied"], columns=["refused", "complied"])
        for b in ("xstest", "machine_ethics")
    }
    report = tmp_path / "report.html"
    report.write_text("<html><body>report</body></html>")
    tracking.log_comparison(frame, flips, {"tiny-ref": {"safety": 55.0}, "tiny-w4": {"safety": 40.0}}, report)
    tracking.final(outcome.results, {})
    assert tracking.close(60) == 0
    assert tracking.run_ids() == outcome.run_ids  # the same runs
    w4 = client.get_run(outcome.run_ids["variant:tiny-w4:xstest"])
    assert w4.data.metrics["delta_refusal_rate"] == pytest.approx(-0.1) and "refusal_rate_ci_low" in w4.data.metrics
    assert w4.data.tags["qtrust.degenerate"] == "true" and w4.data.tags["qtrust.flags"] == "refuses 96% of items"
    listed = [e["path"] for e in json.loads(w4.data.tags["mlflow.loggedArtifacts"])]
    assert sorted(listed) == ["comparison.json", "flips.json", "items.json"]
    ref = client.get_run(outcome.run_ids["variant:tiny-ref:xstest"])
    assert ref.data.tags["qtrust.degenerate"] == "false" and "delta_refusal_rate" not in ref.data.metrics
    plots = {a.path for a in client.list_artifacts(outcome.parent_run_id, "plots")}
    assert {
        "plots/flips__machine_ethics.png",
        "plots/flips__xstest.png",
        "plots/machine_ethics__refusal_rate_vs_bits.png",
        "plots/perspectives_radar.png",
        "plots/xstest__refusal_rate_vs_bits.png",
    } <= plots
    png = Path(
        client.download_artifacts(outcome.parent_run_id, "plots/xstest__refusal_rate_vs_bits.png", str(tmp_path / "dl"))
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
    summary = pd.read_json(
        client.download_artifacts(outcome.parent_run_id, "summary.json", str(tmp_path / "dl")), orient="split"
    )
    assert "xstest.delta_refusal_rate" in summary.columns  # the comparison's summary, not replaced by final's
    assert set(summary["name"]) == {"tiny-ref", "tiny-w4"}
    assert "report.html" in [a.path for a in client.list_artifacts(outcome.parent_run_id)]


def test_adaptive_decisions_go_to_the_pair_runs_once_each_and_the_parent_gets_the_total(
    tmp_path: Path, data_dir: Path
) -> None:
    from jobs.plan.build import build_plan
    from jobs.results.scoring import ResultRow
    from jobs.spec.load import parse_spec
    from jobs.store.sweep import SweepStore
    from tests.support.adaptive import pair, summary
    from tests.support.mlflow_store import sqlite_store

    spec = fake_sweep(tmp_path, items=8)
    spec["recipes"] = [{"name": "ref", "method": "none"}, {"name": "w4", "method": "rtn", "bits": 4}]
    plan = build_plan(parse_spec(spec), data_dir)
    uri = sqlite_store(tmp_path / "adaptive.db")
    tracking = SweepTracking.open(plan, SweepStore(str(tmp_path / "runs"), "pipe"), {}, uri, data_dir, warn=print)
    refs = {"xstest": {"tiny-ref": 4}, "machine_ethics": {"tiny-ref": 4}}
    running = pair("tiny-w4", "machine_ethics", "continue", 4, 8, 4)  # no Δ yet: left out
    first = summary([pair("tiny-w4", "xstest", "continue", 4, 8, 4, -0.1, -0.6, 0.4), running], refs)
    refs = {"xstest": {"tiny-ref": 6}, "machine_ethics": {"tiny-ref": 4}}
    later = summary([pair("tiny-w4", "xstest", "worse", 6, 8, 6, -0.3, -0.5, -0.1), running], refs)
    tracking.adaptive(first)
    tracking.adaptive(first)  # nothing changed: nothing sent
    tracking.adaptive(later)
    tracking.adaptive_final(later)
    rows = [  # what scoring finds stored: fewer items than planned where the sweep stopped early
        ResultRow("variant", name, "tiny", bench, bits, n, 8)
        for name, bench, bits, n in [
            ("tiny-w4", "xstest", "4", 6),
            ("tiny-w4", "machine_ethics", "4", 4),
            ("tiny-ref", "xstest", "ref", 6),
            ("tiny-ref", "machine_ethics", "ref", 4),
        ]
    ]
    tracking.final(rows, {})
    assert tracking.close(60) == 0
    client, ids = MlflowClient(uri), tracking.run_ids()

    def history(key: str, metric: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(ids[key], metric))

    decided = client.get_run(ids["variant:tiny-w4:xstest"])
    assert decided.data.tags["qtrust.adaptive.decision"] == "worse"
    assert history("variant:tiny-w4:xstest", "adaptive.items_used") == [(4, 4), (6, 6)]  # step: items used
    assert history("variant:tiny-w4:xstest", "adaptive.delta_high") == [(4, 0.4), (6, -0.1)]
    assert history("variant:tiny-w4:xstest", "adaptive.items_planned") == [(4, 8)]  # unchanged: sent once
    assert decided.data.metrics["adaptive.items_saved"] == 2 and decided.data.metrics["adaptive.delta"] == -0.3
    assert decided.data.metrics["adaptive.delta_low"] == -0.5 and decided.data.metrics["adaptive.items_computed"] == 6
    still = client.get_run(ids["variant:tiny-w4:machine_ethics"])
    assert still.data.tags["qtrust.adaptive.decision"] == "continue"
    assert history("variant:tiny-w4:machine_ethics", "adaptive.items_used") == [(4, 4)]  # four reports, one point
    assert not {"adaptive.delta", "adaptive.delta_low", "adaptive.delta_high"} & set(still.data.metrics)
    reference = client.get_run(ids["variant:tiny-ref:xstest"])
    assert not [k for k in reference.data.metrics if k.startswith("adaptive.")]
    assert "qtrust.adaptive.decision" not in reference.data.tags
    # a pair decided early, and its reference once all its pairs are, end FINISHED; one still running does not
    assert decided.info.status == "FINISHED" and reference.info.status == "FINISHED"
    assert (
        still.info.status == "FAILED" and client.get_run(ids["variant:tiny-ref:machine_ethics"]).info.status == "FAILED"
    )

    parent = client.get_run(tracking.tracker.run_ids()[tracking.parent_key])
    assert parent.data.metrics["adaptive.items_saved_total"] == 12  # planned 32 (8 + 8 + the reference's 8 + 8)
    assert parent.data.metrics["adaptive.items_planned_total"] == 32
    assert parent.data.metrics["adaptive.saved_fraction"] == pytest.approx(12 / 32)
    assert history(tracking.parent_key, "adaptive.items_planned_total") == [(16, 32)]
    assert history(tracking.parent_key, "adaptive.items_saved_total") == [(16, 16), (20, 12)]  # step: computed
    logged = [e["path"] for e in json.loads(parent.data.tags["mlflow.loggedArtifacts"])]
    assert logged.count("adaptive.json") == 1
    table = pd.read_json(client.download_artifacts(parent.info.run_id, "adaptive.json", str(tmp_path)), orient="split")
    assert list(table["decision"]) == ["worse", "continue"] and list(table["saved"]) == [2, 4]
    assert {"variant", "benchmark", "used", "planned", "computed", "delta", "low", "high", "confidence"} <= set(table)
