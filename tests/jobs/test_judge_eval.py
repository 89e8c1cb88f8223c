"""``qtrust judge-eval``: a judge measured against Do-Not-Answer's human labels, logged to MLflow."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from jobs.cli import app
from tests.conftest import shared_benchmarks

runner = CliRunner()


@pytest.fixture(scope="module")
def tracking_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store for the module (creating a SQLite store takes ~10 s); each test has its experiment."""
    return tmp_path_factory.mktemp("judge-eval")


def _run(folder: Path, experiment: str, *args: str):
    return runner.invoke(
        app,
        [
            "judge-eval",
            *args,
            "--data-dir",
            str(shared_benchmarks()),
            "--tracking-uri",
            f"sqlite:///{folder / 'm.db'}",
            "--experiment",
            experiment,
        ],
    )


def _the_run(folder: Path, experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'm.db'}")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for entry in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return out


def test_rule_judge_on_report_split(tracking_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tracking_dir)  # MLflow's default artifact root is ./mlruns
    result = _run(tracking_dir, "rule-eval", "--judge", "rule", "--limit", "400")
    assert result.exit_code == 0, result.output
    assert "binary" in result.output and "three_way" in result.output

    client, run = _the_run(tracking_dir, "rule-eval")
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    assert run.info.run_name == "judge-eval · rule · donotanswer/report"
    assert tags["qtrust.kind"] == "judge-eval" and tags["judge"] == "rule"
    assert params["n"] == "400" and params["split"] == "report" and params["judge.kind"] == "rule"
    assert 0.0 <= metrics["binary/accuracy"] <= 1.0
    assert "three_way/kappa" in metrics and "action/accuracy" not in metrics and "harmful/accuracy" not in metrics

    # The same subset, computed here: the report half, sorted by the sha256 of the answer id, first 400.
    from trust.judges.agreement import agreement
    from trust.judges.labelled import donotanswer_answers
    from trust.judges.rule import BINARY_LABELS, RuleJudge

    frame = donotanswer_answers(shared_benchmarks())
    rows = sorted(
        frame[frame["split"] == "report"].to_dict("records"), key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest()
    )[:400]
    judge = RuleJudge("binary")
    expected = agreement(
        [r["binary"] for r in rows], [judge.judge("", r["response"]).label for r in rows], BINARY_LABELS
    )
    assert metrics["binary/accuracy"] == pytest.approx(expected["accuracy"])
    assert metrics["binary/kappa"] == pytest.approx(expected["kappa"])

    artifacts = _artifacts(client, run.info.run_id)
    assert {"confusion/binary.json", "confusion/three_way.json", "judgments.json"} <= artifacts
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "judgments.json", str(tmp_path))).read_text())
    assert {"id", "model", "action", "harmful", "label", "raw", "problem"} <= set(table["columns"])
    assert len(table["data"]) == 400
    assert {row[0] for row in table["data"]} == {r["id"] for r in rows}


def test_model_judge_choose(
    tracking_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, one_torch_thread: None
) -> None:
    monkeypatch.chdir(tracking_dir)
    judges = tmp_path / "judges.yaml"
    judges.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "tiny-action",
                    "kind": "model",
                    "model": str(tiny_model_dir),
                    "decoding": "choose",
                    "template": "donotanswer-action",
                    "batch_size": 4,
                }
            ]
        )
    )
    result = _run(tracking_dir, "model-eval", "--judge", "tiny-action", "--judges-file", str(judges), "--limit", "12")
    assert result.exit_code == 0, result.output

    client, run = _the_run(tracking_dir, "model-eval")
    metrics = run.data.metrics
    assert metrics["unreadable_rate"] == 0.0  # 'choose' always picks a label
    for name in ("action", "three_way", "binary"):
        assert 0.0 <= metrics[f"{name}/accuracy"] <= 1.0
    assert "harmful/accuracy" not in metrics
    assert metrics["answers_per_s"] > 0
    assert run.data.params["judge.decoding"] == "choose" and run.data.params["n"] == "12"
    assert "donotanswer-action" in run.data.params["judge.identity"]
    assert {"confusion/action.json", "judgments.json"} <= _artifacts(client, run.info.run_id)


def test_unknown_judge_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run(tmp_path, "unknown", "--judge", "no-such-judge")
    assert result.exit_code == 2
    assert "no-such-judge" in result.output and "rule-binary" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.db").exists()  # nothing tracked


def test_bad_judges_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "judges.yaml"
    bad.write_text("judges: {name: x}\n")
    result = _run(tmp_path, "bad", "--judge", "x", "--judges-file", str(bad))
    assert result.exit_code == 2 and "judges.yaml" in result.output and "Traceback" not in result.output
    bad.write_text(yaml.safe_dump([{"name": "x", "kind": "model", "decoding": "sometimes"}]))
    result = _run(tmp_path, "bad", "--judge", "x", "--judges-file", str(bad))
    assert result.exit_code == 2 and "decoding" in result.output and "Traceback" not in result.output


def test_label_families_map_every_label() -> None:
    from trust.judges.label_families import (
        COMPARISON_LABELS,
        LABEL_FAMILIES,
        LabelFamilyError,
        family_for_labels,
    )
    from trust.judges.templates import builtin_templates

    for family in LABEL_FAMILIES.values():
        for comparison, table in family.to.items():
            assert set(table.values()) <= set(COMPARISON_LABELS[comparison]), (family.name, comparison)
    #: templates that judge something no labelled set has people's labels for (answer correctness)
    unmeasured = {"qa-correctness"}
    for template in builtin_templates().values():  # every refusal/harm template can be measured
        if template.name in unmeasured:
            with pytest.raises(LabelFamilyError, match="cannot be compared with people's labels"):
                family_for_labels(list(template.labels))
            continue
        family = family_for_labels(list(template.labels))
        unmapped = {label for label in template.labels if not any(label in table for table in family.to.values())}
        assert unmapped <= {"ambiguous"}, (template.name, unmapped)
