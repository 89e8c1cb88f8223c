"""What a user sees in the MLflow UI after a real sweep: a real `mlflow server`, the built-in model
(reference + RTN 4-bit) on one short benchmark, checks through the REST API, and the runs page
rendered by headless Chromium (a screenshot kept as a test artifact, and the rendered DOM)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jobs.runner import run_sweep
from jobs.spec.load import parse_spec
from jobs.spec.run_options import RunOptions
from tests.support.mlflow_server import _free_port, _mlflow_server, mlflow_rest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

REPO = Path(__file__).resolve().parents[2]
SWEEP = "ui-sweep"
#: How FACTS.md drives the MLflow UI in headless Chromium.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--virtual-time-budget=20000", "--window-size=1400,900",
]  # fmt: skip


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not on PATH: this test drives the MLflow UI in headless Chromium; install it with "
            "`apt-get install -y chromium` (Debian/Ubuntu)"
        )
    return path


def _artifacts_dir() -> Path:
    """Where screenshots are kept after the test: $QTRUST_TEST_ARTIFACTS, else tests/artifacts/."""
    folder = Path(os.environ.get("QTRUST_TEST_ARTIFACTS") or REPO / "tests" / "artifacts") / "mlflow_ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _browse(chromium: str, url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _spec(storage: Path) -> dict[str, Any]:
    return {
        "name": SWEEP,
        "models": [{"name": "smol", "source": "smollm2-135m"}],
        "recipes": [{"name": "ref", "method": "none"}, {"name": "w4", "method": "rtn", "bits": 4, "group_size": 32}],
        "benchmarks": [{"name": "xstest", "limit": 8, "max_new_tokens": 8}],
        "shard_size": 4,
        "quality_probe": False,
        "resources": {"num_cpus_per_worker": 1, "retry_backoff_s": 0.1},
        "storage": {"root": str(storage)},
    }


def test_the_mlflow_ui_shows_a_real_sweep(tmp_path: Path, data_dir: Path) -> None:
    from PIL import Image

    chromium = _chromium()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server_root = tmp_path / "server"
    server_root.mkdir()
    with _mlflow_server(server_root, port):
        outcome = run_sweep(
            parse_spec(_spec(tmp_path / "runs")), RunOptions(data_dir=data_dir, tracking_uri=base, quiet=True)
        )
        assert not outcome.failed and outcome.tracking_failures == 0 and outcome.experiment_id

        # -- the REST API: tags, colours, tables, the parent's plots -----------------------------
        runs = mlflow_rest(base, "runs/search", {"experiment_ids": [outcome.experiment_id], "max_results": 100})["runs"]
        assert len(runs) == 1 + 2  # the sweep, and (ref, w4) × xstest
        names = {}
        for run in runs:
            tags = _tags(run)
            missing = {"variant", "method", "bits", "benchmark", "model", "mlflow.runColor"} - set(tags)
            assert not missing, (run["info"]["run_name"], missing)
            names[run["info"]["run_id"]] = run["info"]["run_name"]
            if tags.get("qtrust.kind") == "variant":
                listed = [entry["path"] for entry in json.loads(tags["mlflow.loggedArtifacts"])]
                assert "items.json" in listed and "comparison.json" in listed, listed
        parent = next(r for r in runs if _tags(r).get("qtrust.kind") == "sweep")
        assert parent["info"]["run_name"] == SWEEP
        assert sorted(names.values()) == sorted([SWEEP, "ref · xstest", "w4 · xstest"])
        colors = {_tags(r)["variant"]: _tags(r)["mlflow.runColor"] for r in runs}
        assert len(set(colors.values())) == 3, colors  # the sweep, the reference and w4 apart
        parent_id = parent["info"]["run_id"]
        plots = [
            f["path"] for f in mlflow_rest(base, "artifacts/list", run_id=parent_id, path="plots").get("files", [])
        ]
        assert {"plots/xstest__over_refusal_rate_vs_bits.png", "plots/flips__xstest.png"} <= set(plots), plots
        top = [f["path"] for f in mlflow_rest(base, "artifacts/list", run_id=parent_id).get("files", [])]
        assert {"summary.json", "comparison.json"} <= set(top), top
        assert not [m["key"] for m in parent["data"].get("metrics", []) if "smol-" in m["key"]]

        # -- the runs page in headless Chromium --------------------------------------------------
        page = f"{base}/#/experiments/{outcome.experiment_id}/runs"
        shot = tmp_path / "runs_page.png"
        result = _browse(chromium, page, tmp_path / "profile-shot", f"--screenshot={shot}")
        assert shot.is_file(), result.stderr[-2000:]
        shutil.copy(shot, _artifacts_dir() / "runs_page.png")
        image = Image.open(shot).convert("RGB")
        assert image.size == (1400, 900)
        counts = image.getcolors(maxcolors=1 << 22) or []
        most = max(count for count, _color in counts)
        assert len(counts) > 50, f"the page looks blank: {len(counts)} colours"
        assert most / (image.size[0] * image.size[1]) < 0.97, "one colour covers nearly the whole page"

        dom = _browse(chromium, page, tmp_path / "profile-dom", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        (_artifacts_dir() / "runs_page.html").write_text(dom.stdout)
        # Nested runs start collapsed under their parent: the sweep's own name is what the table shows.
        assert SWEEP in dom.stdout, "the runs table did not render the sweep's run name"

        # -- the sweep's shared view: grouped by benchmark, metric columns, children shown -------
        assert outcome.view_url and "viewStateShareKey=" in outcome.view_url, outcome.view_url
        key = outcome.view_url.split("viewStateShareKey=", 1)[1]
        experiment = mlflow_rest(base, "experiments/get", experiment_id=outcome.experiment_id)["experiment"]
        stored = {t["key"]: t["value"] for t in experiment.get("tags", [])}
        state = json.loads(stored[f"mlflow.sharedViewState.{key}"])
        assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "benchmark"}]
        assert "metrics.`over_refusal_rate`" in state["selectedColumns"]
        assert state["runsExpanded"] == {parent_id: True}
        view_page = outcome.view_url.replace("http://127.0.0.1:5000", base)
        view_shot = tmp_path / "runs_view.png"
        result = _browse(chromium, view_page, tmp_path / "profile-view", f"--screenshot={view_shot}")
        assert view_shot.is_file(), result.stderr[-2000:]
        shutil.copy(view_shot, _artifacts_dir() / "runs_view.png")
        view_dom = _browse(chromium, view_page, tmp_path / "profile-view-dom", "--dump-dom")
        (_artifacts_dir() / "runs_view.html").write_text(view_dom.stdout)
        assert "share key" not in view_dom.stdout.lower(), "the UI could not load the shared view"
        assert "w4 · xstest" in view_dom.stdout, "the shared view did not show the variant runs"
        assert "over_refusal_rate" in view_dom.stdout, "the shared view did not show the metric columns"
