"""A user's own benchmark definition, next to the sweep file, runs end to end on Ray with the HF engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobs.runner import run_sweep
from jobs.spec.load import load_spec
from jobs.spec.run_options import RunOptions
from jobs.spec.schema import SpecError
from tests.support.mlflow_store import sqlite_store
from tests.trust.test_declarative import write_user_benchmark


def sweep(tmp_path: Path, model_dir: Path, definition: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "own",
                "models": [{"name": "tiny", "source": str(model_dir)}],
                "recipes": [
                    {"name": "ref", "method": "none"},
                    {"name": "w4", "method": "rtn", "bits": 4, "group_size": 32},
                ],
                "benchmarks": [
                    {"name": "pets", "definition": definition},
                    {"name": "pets", "definition": definition, "alias": "pets_polite", "options": {"style": "polite"}},
                ],
                "storage": {"root": str(tmp_path / "runs")},
                "resources": {"num_cpus_per_worker": 1},
            }
        )
    )
    return path


@pytest.mark.usefixtures("ray_local")
def test_user_benchmark_runs_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    write_user_benchmark(tmp_path / "mine")
    spec = load_spec(sweep(tmp_path, tiny_model_dir, "mine/pets.yaml"))  # relative to the sweep file
    outcome = run_sweep(spec, RunOptions(data_dir=tmp_path, tracking_uri=sqlite_store(tmp_path / "m.db"), quiet=True))
    assert not outcome.failed
    assert set(outcome.plan.benchmarks) == {"pets", "pets_polite"}
    rows = {(r.name, r.benchmark): r for r in outcome.results}
    assert rows[("tiny-w4", "pets_polite")].n_items == 3
    assert {"accuracy", "refusal_rate", "farm_yes_rate", "perspective_score"} <= set(rows[("tiny-ref", "pets")].metrics)
    polite = outcome.plan.benchmarks["pets_polite"].items[0].messages[0]["content"]
    assert polite.startswith("Please be kind.")
    assert set(outcome.plan.keys_of("tiny-ref", "pets")).isdisjoint(outcome.plan.keys_of("tiny-ref", "pets_polite"))


def test_broken_user_definition_is_reported_before_anything_runs(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "mine"
    write_user_benchmark(folder)
    text = (folder / "pets.yaml").read_text().replace("kind: labels", "kind: label")
    (folder / "pets.yaml").write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(sweep(tmp_path, tiny_model_dir, "mine/pets.yaml"))
    assert any(p.startswith("benchmarks[0].definition:") and "answer.kind" in p for p in info.value.problems)


def docs_files(folder: Path) -> list[Path]:
    """The files of docs/benchmarks.md's "Trying a definition" snippet, written into ``folder``."""
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    written = []
    for name, body in re.findall(r"<!-- try-a-definition: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        written.append(path)
    return written


@pytest.mark.usefixtures("ray_local")
def test_the_docs_fake_engine_snippet_runs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app

    files = docs_files(tmp_path)
    assert [p.name for p in files] == ["pets.yaml", "pets.jsonl", "try.yaml"]
    sweep_file = tmp_path / "try.yaml"
    checked = CliRunner().invoke(app, ["validate", str(sweep_file)], env={"COLUMNS": "200", "QTRUST_DATA_DIR": ""})
    assert checked.exit_code == 0, checked.output
    assert "pets: 4 item(s) checked against the data" in checked.output  # beside the definition: no --data-dir
    spec = load_spec(sweep_file)
    assert spec.models[0].engine == "fake"
    options = RunOptions(
        data_dir=tmp_path, tracking_uri=sqlite_store(tmp_path / "m.db"), quiet=True, storage_root=str(tmp_path / "runs")
    )
    outcome = run_sweep(spec, options)
    assert not outcome.failed
    (row,) = outcome.results
    assert row.n_items == 4 and {"accuracy", "refusal_rate", "yes_bias"} <= set(row.metrics)
    assert outcome.plan.benchmarks["pets"].benchmark.higher_is_better("yes_bias") is False
