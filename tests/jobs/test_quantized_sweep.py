"""A sweep naming gptq, awq, hqq, bnb, aqlm, quip_sharp and quik variants next to rtn, on local Ray
with the tiny model.

Quantization happens in the workers, lands in the variant cache once, and a second sweep of the
cached recipes (another storage root, same cache) reuses it and reproduces the same answers.
MLflow records the recipe, the quantization report and the perplexity probe of every variant.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cluster.variants.cache import VariantCache
from jobs.runner import run_sweep
from jobs.spec.load import parse_spec
from jobs.spec.run_options import RunOptions
from tests.support.helpers import stored_records, sweep_dict
from tests.support.mlflow_store import sqlite_store

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]

CAL = {"samples": 8, "seq_len": 64}
RECIPES = [
    {"name": "ref", "method": "none"},
    {"name": "rtn4", "method": "rtn", "bits": 4, "group_size": 32},
    {"name": "gptq4", "method": "gptq", "bits": 4, "group_size": 32, "calibration": CAL},
    {"name": "awq3", "method": "awq", "bits": 3, "group_size": 32, "calibration": CAL},
    {"name": "hqq4", "method": "hqq", "bits": 4, "group_size": 32},
    {"name": "nf4", "method": "bnb", "bnb_type": "nf4"},
    {"name": "aqlm2", "method": "aqlm", "bits": 2, "calibration": CAL},
    {"name": "quip2", "method": "quip_sharp", "bits": 2, "calibration": CAL},
    {"name": "quik4", "method": "quik", "bits": 4, "calibration": CAL},
]
#: The recipes built once into the variant cache.
CACHED = ("tiny-rtn4", "tiny-gptq4", "tiny-awq3", "tiny-aqlm2", "tiny-quip2", "tiny-quik4")


def _spec(model_dir: Path, runs: Path, recipes: list[dict] = RECIPES):
    return parse_spec(
        sweep_dict(
            model_dir,
            runs,
            recipes=recipes,
            benchmarks=[{"name": "machine_ethics", "limit": 4, "max_new_tokens": 4}],
            ensembles=[{"name": "vote", "members": ["gptq4", "awq3", "rtn4"]}],
        )
    )


@pytest.fixture(scope="module")
def two_sweeps(tiny_model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("quant-sweep")
    cache = str(root / "variants")
    uri = sqlite_store(root / "mlflow.db")
    first = run_sweep(
        _spec(tiny_model_dir, root / "runs-a"),
        RunOptions(data_dir=data_dir, tracking_uri=uri, quiet=True, variant_cache=cache),
    )
    # The second sweep runs the recipes built into the cache (load-time methods build nothing).
    cached = [r for r in RECIPES if f"tiny-{r['name']}" in CACHED]
    second = run_sweep(
        _spec(tiny_model_dir, root / "runs-b", cached),
        RunOptions(data_dir=data_dir, tracking_uri=uri, quiet=True, variant_cache=cache),
    )
    return root, cache, first, second


def _outputs(outcome) -> dict[tuple[str, str], str]:
    table = stored_records(outcome)
    return {(v, i): o for v, i, o in zip(table["variant"], table["item_id"], table["output"])}


def test_every_variant_ran_with_its_method(two_sweeps) -> None:
    _root, _cache, first, _second = two_sweeps
    assert not first.failed and first.computed == len(RECIPES)
    storage = {v: r["storage"] for v, r in first.quant_reports.items()}
    assert storage == {
        "tiny-ref": "none",
        "tiny-rtn4": "simulated",
        "tiny-gptq4": "packed",
        "tiny-awq3": "simulated",
        "tiny-hqq4": "load-time",
        "tiny-nf4": "load-time",
        "tiny-aqlm2": "packed",
        "tiny-quip2": "simulated",
        "tiny-quik4": "simulated",
    }
    for name in CACHED:
        assert first.quant_reports[name]["cache"] == "built"
    assert first.quant_reports["tiny-aqlm2"]["backend"] == "qtrust aqlm"
    assert first.quant_reports["tiny-quik4"]["activation_bits"] == "4,8"  # down_proj at 8 bits
    assert {r.name for r in first.results} >= {"tiny-vote"}


def test_second_sweep_reuses_the_cache_and_reproduces_answers(two_sweeps) -> None:
    _root, cache, first, second = two_sweeps
    assert second.computed == len(CACHED)  # another storage root: evaluated again ...
    for name in CACHED:
        assert second.quant_reports[name]["cache"] == "hit"  # ... but not quantized again
    assert len(VariantCache(cache).entries()) == len(CACHED)
    assert {k: v for k, v in _outputs(first).items() if k[0] in CACHED} == _outputs(second)


def test_mlflow_records_recipe_report_and_probe(two_sweeps) -> None:
    root, _cache, first, _second = two_sweeps
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    run = client.get_run(first.run_ids[next(k for k in first.run_ids if k.startswith("variant:tiny-gptq4:"))])
    params, metrics = run.data.params, run.data.metrics
    assert params["method"] == "gptq" and params["quant.bits"] == "4" and params["quant.group_size"] == "32"
    assert params["quant.symmetric"] == "false" and params["quant.storage"] == "packed"
    assert params["quant.calibration.source"] == "builtin" and params["quant.calibration.samples"] == "8"
    assert params["quant.calibration.seed"] == "0" and params["quant.keep_full_precision"] == "lm_head"
    assert params["quant.report.cache"] == "built" and params["quant.report.backend"].startswith("llm-compressor")
    assert math.isfinite(metrics["quant.probe_perplexity"]) and metrics["quant.size_mb"] > 0
    assert metrics["quant.build_s"] > 0 and metrics["quant.quantize_s"] > 0
    # 4-bit codes + a 16-bit scale and a 4-bit zero point per group of 32: 4 + 20/32
    assert metrics["quant.bits_per_weight"] == pytest.approx(4.625, abs=1e-3)
    parent = client.get_run(first.parent_run_id)
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "variants.json", str(root))).read_text())
    rows = {row[0]: row for row in table["data"]}
    assert set(rows) == {f"tiny-{r['name']}" for r in RECIPES}
