"""`qtrust plan`: a dry run that prices a sweep (items still missing, tokens, memory, replicas, hours)
without Ray or a model; the paper sweeps are priced on the GPUs they name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from jobs.plan.build import build_plan
from jobs.plan.cost import Architecture, estimate, load_tables, parse_cluster
from jobs.spec.load import load_spec
from jobs.store.sweep import SweepStore
from tests.support.data_folders import completed_data_folder
from tests.support.helpers import generation_row

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _plan(args: list[str], data: Path) -> dict:
    result = runner.invoke(app, ["plan", *args, "--json"], env={"COLUMNS": "200", "QTRUST_DATA_DIR": str(data)})
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_demo_is_priced_on_cpu_cores_and_stored_items_are_left_out(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the demo's store (qtrust-runs/demo) is relative to here
    first = _plan([str(REPO / "examples/demo.yaml"), "--gpus", "cpu:2"], data_dir)
    assert first["cluster"] == {"device": "cpu", "count": 2, "source": "declared"}
    lines = [line for v in first["variants"] for line in v["lines"]]
    assert len(first["variants"]) == 6 and len(lines) == 12
    assert all(line["planned"] == line["to_compute"] == 48 for line in lines)
    assert all(line["prompt_tokens"] > 48 * 10 for line in lines)
    xstest = next(line for line in lines if line["benchmark"] == "xstest")
    assert xstest["output_tokens"] == 48 * 40  # max_new_tokens: an upper bound
    builds = {v["name"]: v["build_hours"] for v in first["variants"]}
    assert builds["smollm2-ref"] == 0 and builds["smollm2-awq-w4"] > builds["smollm2-w4"] > 0
    assert 0 < first["wall_hours_lower_bound"] < first["device_hours"]

    # Ten answers of one variant × benchmark are already stored: the plan prices the rest only.
    spec = load_spec(REPO / "examples/demo.yaml")
    plan = build_plan(spec, data_dir)
    keys = plan.keys_of("smollm2-w4", "xstest")[:10]
    SweepStore(str(tmp_path / "qtrust-runs"), "demo").commit_generations(
        "smollm2-w4", "xstest", [generation_row(k) for k in keys]
    )
    second = _plan([str(REPO / "examples/demo.yaml"), "--gpus", "cpu:2"], data_dir)
    again = {(line["variant"], line["benchmark"]): line for v in second["variants"] for line in v["lines"]}
    assert again[("smollm2-w4", "xstest")]["to_compute"] == 38
    assert again[("smollm2-w4", "xstest")]["output_tokens"] == 38 * 40
    assert again[("smollm2-ref", "xstest")]["to_compute"] == 48
    assert second["device_hours"] < first["device_hours"]


def test_the_paper_sweeps_are_priced_on_their_gpus(data_dir: Path, tmp_path: Path) -> None:
    data = completed_data_folder(data_dir, tmp_path)
    study = _plan([str(REPO / "examples/kharinaev2025.yaml"), "--gpus", "4xA40-48GB"], data)
    by_name = {v["name"]: v for v in study["variants"] + study["judges"]}
    assert by_name["llama31-8b-bf16"]["bits"] == 16 and by_name["llama31-8b-bf16"]["devices_per_replica"] == 1
    assert by_name["llama31-8b-llama-aqlm-w2"]["bits"] == 2  # read from the checkpoint's name
    assert by_name["llama31-8b-quip-w2"]["build_hours"] > by_name["llama31-8b-quik-w4"]["build_hours"] > 0
    gemma = by_name["gemma"]  # 27B in bfloat16 does not fit one 48 GB A40: two per replica
    assert gemma["devices_per_replica"] == 2 and gemma["replicas_fit"] == 2
    assert gemma["lines"][0]["benchmark"] == "opensafetymini,xsafety"
    assert gemma["lines"][0]["planned"] == 12 * (1067 + 2600)  # every answer of 12 variants judged once
    assert study["device_hours"] > 10
    lu = _plan([str(REPO / "examples/lu2025.yaml"), "--gpus", "8xA100-80GB"], data)
    assert {v["bits"] for v in lu["variants"]} == {16, 3, 4, 8}
    assert all(v["replicas_fit"] >= 8 for v in lu["variants"])


def test_a_model_too_large_for_one_gpu_is_split_over_several(data_dir: Path) -> None:
    tables = load_tables()
    tables.models["big/model-70b"] = Architecture(params_b=70, layers=80, kv_heads=8, head_dim=128)
    spec = load_spec(REPO / "examples/demo.yaml")
    spec = spec.model_copy(
        update={
            "models": [spec.models[0].model_copy(update={"source": "big/model-70b", "dtype": "bfloat16"})],
            "recipes": [r for r in spec.recipes if r.name == "ref"],
            "ensembles": [],
        }
    )
    cost = estimate(build_plan(spec, data_dir), set(), tables, parse_cluster("8xA100-80GB", tables))
    (variant,) = cost.variants
    assert variant.bits == 16 and variant.memory_gb > 140
    assert variant.devices_per_replica == 2 and variant.replicas_fit == 4


@pytest.mark.parametrize("gpus", ["8xB999", "x", "cpu:zero"])
def test_a_bad_cluster_is_one_clear_line(gpus: str, data_dir: Path) -> None:
    result = runner.invoke(
        app, ["plan", str(REPO / "examples/demo.yaml"), "--gpus", gpus], env={"QTRUST_DATA_DIR": str(data_dir)}
    )
    assert result.exit_code == 2 and "--gpus" in result.output and "Traceback" not in result.output


def test_a_throughput_file_overrides_the_rates(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = _plan([str(REPO / "examples/demo.yaml"), "--gpus", "cpu:2"], data_dir)
    faster = tmp_path / "rates.yaml"
    faster.write_text("devices:\n  cpu: {kind: cpu, memory_gb: 0, prefill_tok_s: 800, decode_tok_s: 52}\n")
    quick = _plan([str(REPO / "examples/demo.yaml"), "--gpus", "cpu:2", "--throughput", str(faster)], data_dir)
    base_lines = sum(line["hours"] for v in base["variants"] for line in v["lines"])
    quick_lines = sum(line["hours"] for v in quick["variants"] for line in v["lines"])
    assert quick_lines == pytest.approx(base_lines / 2)


def test_the_cluster_can_be_read_from_ray(ray_local) -> None:
    from jobs.plan.cost import cluster_from_ray

    tables = load_tables()
    cluster = cluster_from_ray("auto", tables, None)
    assert cluster.device_name == "cpu" and cluster.count == 2 and "Ray cluster" in cluster.source
