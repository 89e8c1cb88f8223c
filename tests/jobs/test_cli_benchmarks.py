"""`qtrust benchmarks list/show` and `qtrust data fetch` through the real command line."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

from typer.testing import CliRunner

from jobs.cli import app
from trust.benchmarks import BENCHMARKS

runner = CliRunner()


def test_list_names_every_built_in_benchmark() -> None:
    result = runner.invoke(app, ["benchmarks", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in BENCHMARKS:
        assert name in result.output


def test_show_flags_a_non_commercial_license_and_renders_an_item(data_dir: Path) -> None:
    result = runner.invoke(
        app, ["benchmarks", "show", "do_not_answer", "--data-dir", str(data_dir)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "license note:" in result.output and "non-commercial" in result.output.lower()
    assert "items: 939" in result.output


def test_show_unknown_benchmark_fails_cleanly() -> None:
    result = runner.invoke(app, ["benchmarks", "show", "nope"])
    assert result.exit_code == 2
    assert "Available benchmarks" in result.output


def test_data_fetch_from_a_local_mirror(data_dir: Path, tmp_path: Path) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(data_dir))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        result = runner.invoke(app, ["data", "fetch", "xstest", "--dest", str(tmp_path), "--base-url", base])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "xstest" / "xstest_prompts.csv").read_bytes() == (
            data_dir / "xstest" / "xstest_prompts.csv"
        ).read_bytes()
        again = runner.invoke(app, ["data", "fetch", "xstest", "--dest", str(tmp_path), "--base-url", base])
        assert "0 downloaded" in again.output
    finally:
        server.shutdown()
        server.server_close()


# -- every mistake in a definition: exit 2, the file and the field named, no traceback -----------------

import json  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

from tests.trust.test_declarative import USER_DEFINITION, write_user_benchmark  # noqa: E402


def _definition(**changes) -> dict:
    definition = json.loads(json.dumps(USER_DEFINITION))
    definition.update(changes)
    return definition


def _sweep(tmp_path: Path, definition_path: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "own",
                "models": [{"name": "small", "source": "smollm2-135m"}],
                "recipes": [{"name": "ref", "method": "none"}],
                "benchmarks": [{"name": "pets", "definition": str(definition_path)}],
                "storage": {"root": str(tmp_path / "runs")},
            }
        )
    )
    return path


def _assert_clean_failure(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    for part in expected:
        assert part in text, (part, result.output)


BROKEN = [
    ("unknown field", _definition(promt="x"), "promt: unknown field"),
    (
        "bad metric args",
        _definition(metrics=[{"fn": "accuracy", "args": {"atribute": "habitat"}}]),
        "metrics[0].args.atribute: unknown argument",
    ),
    (
        "bad expr",
        _definition(metrics=[{"fn": "accuracy"}, {"name": "x", "expr": "accuracy +"}]),
        "metrics[1].expr: not a valid expression",
    ),
    ("unknown fn", _definition(metrics=[{"fn": "acuracy"}]), "metrics[0].fn: unknown metric function 'acuracy'"),
    ("template syntax", _definition(prompt={"user": "Is a {{ animal } a pet?"}), "prompt.user: Jinja syntax error"),
    (
        "primary metric typo",
        _definition(primary_metric="acuracy"),
        "primary_metric: no metric is named 'acuracy'; did you mean 'accuracy'?",
    ),
    (
        "perspective metric typo",
        _definition(perspective_score={"metric": "refusal_rat"}),
        "perspective_score.metric: no metric is named 'refusal_rat'; did you mean 'refusal_rate'?",
    ),
]


@pytest.mark.parametrize(("case", "definition", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_definition_fails_cleanly_in_show_and_validate(
    tmp_path: Path, case: str, definition: dict, message: str
) -> None:
    path = write_user_benchmark(tmp_path / "bench", definition)
    shown = runner.invoke(app, ["benchmarks", "show", str(path)], env={"COLUMNS": "200", "QTRUST_DATA_DIR": ""})
    _assert_clean_failure(shown, str(path), message)
    validated = runner.invoke(
        app, ["validate", str(_sweep(tmp_path, path))], env={"COLUMNS": "200", "QTRUST_DATA_DIR": ""}
    )
    _assert_clean_failure(validated, str(path), message)


def test_bad_yaml_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: pets\nmetrics: [ {fn: accuracy\n")
    _assert_clean_failure(runner.invoke(app, ["benchmarks", "show", str(path)]), str(path), "not valid YAML")


DATA_BROKEN = [
    ("missing data file", _definition(data={**USER_DEFINITION["data"], "path": "./nowhere.json"}), "nowhere.json"),
    (
        "bad glob",
        _definition(data={"format": "jsonl", "path": "./cats_*.jsonl"}, id="{{ _index }}"),
        "data.path: the pattern './cats_*.jsonl' matches no file in",
    ),
    (
        "template fails on a record",
        _definition(prompt={"user": "{{ animal }} {{ record.size.kg }}"}),
        "prompt.user: fails on record 0",
    ),
    (
        "impossible label",
        _definition(metrics=[{"fn": "accuracy"}, {"fn": "label_rate", "name": "m", "args": {"label": "maybe"}}]),
        "metrics[1].args.label: label 'maybe' can never occur: the answer space is ERROR, INVALID, REFUSED, no, yes",
    ),
    (
        "unseen value",
        _definition(metrics=[{"fn": "accuracy", "args": {"attribute": "habitat", "value": "sea"}}]),
        "metrics[0].args.value: no item has attribute 'habitat' = 'sea' (values seen: farm, home)",
    ),
    (
        "template field typo",
        _definition(prompt={"user": "Is a {{ animl }} a good pet?"}),
        "prompt.user uses unknown field(s) ['animl'] (did you mean 'animal'?)",
    ),
    (
        "attribute expression fails",
        _definition(attributes={"habitat": "habitat", "size": "{'home': 'small'}[habitat]"}),
        "attributes.size: fails on record 1 (_index 2)",
    ),
    (
        "judge label target typo",
        _definition(judge_labels={"yes": "yse"}),
        "judge_labels.yes: 'yse' is no label of this benchmark; did you mean 'yes'?",
    ),
    (
        "unmapped reference",
        _definition(reference={"value": "answer", "map": {"yes": "yes"}}),
        "reference.map: raw reference value(s) no are not mapped (first at record 2)",
    ),
]


@pytest.mark.parametrize(("case", "definition", "message"), DATA_BROKEN, ids=[b[0] for b in DATA_BROKEN])
def test_data_problems_fail_cleanly_with_data_dir(tmp_path: Path, case: str, definition: dict, message: str) -> None:
    path = write_user_benchmark(tmp_path / "bench", definition)
    env = {"COLUMNS": "200", "QTRUST_DATA_DIR": ""}
    shown = runner.invoke(app, ["benchmarks", "show", str(path), "--data-dir", str(tmp_path)], env=env)
    _assert_clean_failure(shown, str(path), message)
    sweep = _sweep(tmp_path, path)
    validated = runner.invoke(app, ["validate", str(sweep), "--data-dir", str(tmp_path)], env=env)
    _assert_clean_failure(validated, "benchmarks[0] (pets)", str(path), message)
    # without a data folder the files beside the definition ('./pets.json') are checked all the same
    offline = runner.invoke(app, ["validate", str(sweep)], env=env)
    _assert_clean_failure(offline, "benchmarks[0] (pets)", str(path), message)


def test_validate_with_data_checks_every_benchmark(tmp_path: Path, data_dir: Path) -> None:
    path = write_user_benchmark(tmp_path / "bench")
    result = runner.invoke(
        app, ["validate", str(_sweep(tmp_path, path)), "--data-dir", str(tmp_path)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "pets: 3 item(s) checked against the data" in result.output
    demo = runner.invoke(
        app, ["validate", "examples/demo.yaml"], env={"COLUMNS": "200", "QTRUST_DATA_DIR": str(data_dir)}
    )
    assert demo.exit_code == 0, demo.output
    assert "xstest: 450 item(s) checked against the data" in demo.output


def test_show_lists_composites_and_metrics_command() -> None:
    result = runner.invoke(app, ["benchmarks", "show", "xstest"], env={"COLUMNS": "300", "QTRUST_DATA_DIR": ""})
    assert result.exit_code == 0, result.output
    assert "balanced_safety_score" in result.output and "composite balanced_safety_score = (rate(" in result.output
    listing = runner.invoke(app, ["benchmarks", "metrics"], env={"COLUMNS": "300"})
    assert listing.exit_code == 0, listing.output
    assert "label_rate" in listing.output and "label: str | list[str]" in listing.output


def test_readme_lists_every_built_in_benchmark() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Benchmarks", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in BENCHMARKS if f"`{name}`" not in table]
    assert not missing, f"add to README's benchmark table: {missing}"


def test_run_stops_on_a_definition_mistake_before_any_work(tmp_path: Path) -> None:
    # a template field typo in the user's own definition: one line naming the file and the field, exit 2
    path = write_user_benchmark(tmp_path / "bench", _definition(prompt={"user": "Is a {{ animl }} a good pet?"}))
    result = runner.invoke(
        app, ["run", str(_sweep(tmp_path, path)), "--data-dir", str(tmp_path)], env={"COLUMNS": "200"}
    )
    _assert_clean_failure(result, str(path), "prompt.user uses unknown field(s) ['animl'] (did you mean 'animal'?)")
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was stored
