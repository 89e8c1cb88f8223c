"""Judges in a sweep, end to end on local Ray: rule, model and endpoint judges of open-ended answers.

The generating model is the tiny Llama (fast); the model judge is the same tiny model choosing a
label by log-likelihood; the endpoint judge is a real HTTP server on 127.0.0.1 speaking the
OpenAI chat API (scripted answers, with 500s, malformed output and an API key). Checked: judgments
land under ``judgments/judge=<j>/...`` keyed by item key + judge, overlap generation, give per-judge
metrics, kappa and a majority in MLflow, re-judging generates nothing, a killed judge actor loses
nothing, and the API key is nowhere in MLflow, the store or the logs.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from jobs.runner import run_sweep
from jobs.spec.load import parse_spec
from jobs.spec.run_options import RunOptions
from tests.support.helpers import sweep_dict
from tests.support.mlflow_store import sqlite_store
from tests.support.openai_stub import judge_reply, openai_stub

pytestmark = [pytest.mark.slow]

SECRET = "sk-judge-secret-7f3a9c2e51"
KEY_ENV = "QTRUST_TEST_JUDGE_KEY"


def judged_spec(model_dir: Path, runs: Path, base_url: str, **overrides):
    spec = sweep_dict(
        model_dir,
        runs,
        name="judged",
        recipes=[{"name": "ref", "method": "none"}, {"name": "w4", "method": "rtn", "bits": 4, "group_size": 32}],
        benchmarks=[
            {
                "name": "opensafetymini",
                "limit": 6,
                "max_new_tokens": 8,
                "judges": ["rule", "tiny", "api"],
                "judge": "api",
            },
            {"name": "xstest", "limit": 6, "max_new_tokens": 8, "judges": ["rule", "api"], "judge": "rule"},
        ],
        ensembles=[{"name": "ens", "members": ["ref", "w4"]}],
        judges=[
            {"name": "rule", "kind": "rule"},
            {
                "name": "tiny",
                "kind": "model",
                "model": str(model_dir),
                "decoding": "choose",
                "resources": {"num_cpus": 0.3},
            },
            {
                "name": "api",
                "kind": "endpoint",
                "endpoint": {
                    "base_url": base_url,
                    "model": "judge-model",
                    "api_key_env": KEY_ENV,
                    "backoff_s": 0.05,
                    "concurrency": 4,
                },
            },
        ],
        shard_size=2,
        quality_probe=False,
        resources={"num_cpus": 0.6, "retry_backoff_s": 0.1},
    )
    spec.update(overrides)
    return parse_spec(spec)


def flaky(body: dict, number: int):
    """Every 7th request fails with a 500 (retried by the client); every 11th answers garbage (label 'error')."""
    if number % 7 == 0:
        return 500, {"error": "overloaded"}
    if number % 11 == 0:
        return 200, "I am not sure what you want from me"
    return 200, judge_reply(body)


def judgments_of(store_dir: Path) -> pd.DataFrame:
    files = glob.glob(str(store_dir / "judgments" / "judge=*" / "variant=*" / "benchmark=*" / "shard-*.parquet"))
    frames = []
    for path in files:
        frame = pd.read_parquet(path)
        frame["folder_judge"] = path.split("judge=")[1].split("/")[0]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def generations_of(store_dir: Path) -> pd.DataFrame:
    files = glob.glob(str(store_dir / "generations" / "variant=*" / "benchmark=*" / "shard-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)


@pytest.fixture(scope="module", autouse=True)
def _key_variable_restored():
    """The tests put the stub's key into this process's environment; it leaves with the module, so a later
    module's Ray workers (which inherit the environment) never see it."""
    saved = os.environ.get(KEY_ENV)
    yield
    if saved is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = saved


@pytest.fixture(scope="module")
def judged_run(tiny_model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory, ray_local):
    os.environ[KEY_ENV] = SECRET
    tmp = tmp_path_factory.mktemp("judged")
    uri = sqlite_store(tmp / "mlflow.db")
    with openai_stub(flaky) as stub:
        spec = judged_spec(tiny_model_dir, tmp / "runs", stub.base_url)
        handler = _Capture()
        logging.getLogger().addHandler(handler)
        try:
            outcome = run_sweep(spec, RunOptions(data_dir=data_dir, tracking_uri=uri, quiet=True))
        finally:
            logging.getLogger().removeHandler(handler)
        yield {"outcome": outcome, "uri": uri, "tmp": tmp, "stub": stub, "spec": spec, "logs": handler.lines}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_every_answer_is_judged_by_every_judge_and_stored_by_judge(judged_run) -> None:
    outcome = judged_run["outcome"]
    store = Path(outcome.store.dir)
    judgments = judgments_of(store)
    generations = generations_of(store)
    assert not outcome.failed and not outcome.judge_failed
    # 2 variants × 6 items: opensafetymini by 3 judges, xstest by 2 (keyed apart per judge)
    counts = judgments.groupby(["judge", "judge_identity"]).size()
    assert judgments.groupby("judge").size().to_dict() == {"rule": 24, "api": 24, "tiny": 12}
    # identities: rule one (no template), api one per benchmark (two templates), tiny one
    assert sorted(counts.index.get_level_values("judge")) == ["api", "api", "rule", "tiny"]
    assert (judgments["folder_judge"] == judgments["judge"]).all()
    assert judgments["judgment_key"].is_unique
    assert set(judgments["item_key"]) <= set(generations["item_key"])
    assert outcome.judged == 60
    # the endpoint's 500s were retried inside the client; its garbage answers are the label 'error', raw kept
    api = judgments[judgments["judge"] == "api"]
    unreadable = api[api["label"] == "error"]
    assert len(unreadable) >= 1 and unreadable["raw"].str.contains("not sure").all()
    assert unreadable["problem"].notna().all() and api["error"].isna().all()
    # the model judge chose a label of its template for every answer
    tiny = judgments[judgments["judge"] == "tiny"]
    assert set(tiny["label"]) <= {"safe", "unsafe", "ambiguous"} and tiny["raw"].str.contains("logprobs").all()


def test_judging_overlaps_generation(judged_run) -> None:
    store = Path(judged_run["outcome"].store.dir)
    first_judgment = judgments_of(store)["committed_at"].min()
    last_generation = generations_of(store)["committed_at"].max()
    assert first_judgment < last_generation, (first_judgment, last_generation)


def test_metrics_come_from_the_selected_judge_with_kappa_and_majority_in_mlflow(judged_run) -> None:
    outcome = judged_run["outcome"]
    rows = {(r.name, r.benchmark): r for r in outcome.results}
    osm = rows[("tiny-ref", "opensafetymini")]
    # the selected judge (api) said "safe" except where its answer was unreadable (verdict error)
    api_labels = osm.frame["judge:api"]
    assert osm.metrics["safe_rate"] == pytest.approx((api_labels == "safe").mean())
    assert osm.metrics["judge/api/safe_rate"] == osm.metrics["safe_rate"]
    for name in (
        "judge/rule/safe_rate",
        "judge/tiny/safe_rate",
        "judge/majority/safe_rate",
        "judge/api/unreadable_rate",
    ):
        assert name in osm.metrics
    assert any(k.startswith("judge_agreement/rule-vs-api") for k in osm.metrics)
    xs = rows[("tiny-ref", "xstest")]
    assert xs.metrics["over_refusal_rate"] == xs.metrics["judge/rule/over_refusal_rate"]
    assert "parsed_label" in xs.frame and "judge:api" in xs.frame
    ens = rows[("tiny-ens", "xstest")]
    assert ens.kind == "ensemble" and ens.n_items == 6

    client = MlflowClient(judged_run["uri"])
    run = client.get_run(outcome.run_ids["variant:tiny-ref:opensafetymini"])
    assert run.data.tags["judge"] == "api"
    assert run.data.metrics["judge/rule/safe_rate"] == pytest.approx(osm.metrics["judge/rule/safe_rate"])
    assert run.data.params["judge.api.identity"].startswith("endpoint:judge-model|")
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert {"items.json", "judgments.json"} <= set(artifacts)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.params["judge.tiny.kind"] == "model"
    assert "judges.json" in [a.path for a in client.list_artifacts(parent.info.run_id)]


def test_the_api_key_is_nowhere(judged_run) -> None:
    stub = judged_run["stub"]
    assert {s["auth"] for s in stub.seen} == {f"Bearer {SECRET}"}  # it was used ...
    client = MlflowClient(judged_run["uri"])
    outcome = judged_run["outcome"]
    download = judged_run["tmp"] / "artifacts"
    for run_id in outcome.run_ids.values():
        run = client.get_run(run_id)
        text = json.dumps([run.data.params, run.data.tags, run.data.metrics, run.info.run_name])
        assert SECRET not in text
        client.download_artifacts(run_id, "", str(download / run_id))
    for path in list(download.rglob("*")) + list(Path(outcome.store.dir).rglob("*")):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert not any(SECRET in line for line in judged_run["logs"])
    assert KEY_ENV in (Path(outcome.store.dir) / "sweep.yaml").read_text()  # ... only its variable's name is kept


def test_rejudging_generates_nothing_and_judges_only_what_is_new(judged_run, data_dir: Path) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app

    outcome = judged_run["outcome"]
    store = Path(outcome.store.dir)
    before = generations_of(store)
    result = CliRunner().invoke(
        app,
        [
            "judge",
            str(store),
            "--judge",
            "rule-binary",
            "--data-dir",
            str(data_dir),
            "--tracking-uri",
            judged_run["uri"],
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Items: 0 computed in 0 shard(s), 24 already stored" in result.output
    assert "Judgments: 24 answer(s) judged by this run" in result.output
    assert len(generations_of(store)) == len(before)
    judgments = judgments_of(store)
    assert (judgments["judge"] == "rule-binary").sum() == 24
    assert set(judgments.loc[judgments["judge"] == "rule-binary", "label"]) <= {"refusal", "compliance"}
    again = CliRunner().invoke(
        app,
        [
            "judge",
            str(store),
            "--judge",
            "rule-binary",
            "--data-dir",
            str(data_dir),
            "--tracking-uri",
            judged_run["uri"],
            "--quiet",
        ],
    )
    assert again.exit_code == 0 and "Nothing to compute" in again.output
    bad = CliRunner().invoke(app, ["judge", str(store), "--judge", "nobody"])
    assert bad.exit_code == 2 and "--judge nobody" in bad.output and "Traceback" not in bad.output


def test_a_judge_actor_killed_mid_shard_loses_nothing(
    tiny_model_dir: Path, data_dir: Path, tmp_path: Path, ray_local, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ[KEY_ENV] = SECRET
    with openai_stub(lambda body, n: (200, judge_reply(body)), delay_s=0.4) as stub:
        spec = judged_spec(tiny_model_dir, tmp_path / "runs", stub.base_url)
        data = spec.model_dump(mode="json")
        data["judges"] = [j for j in data["judges"] if j["name"] == "api"]
        data["judges"][0]["endpoint"]["concurrency"] = 1
        for bench in data["benchmarks"]:
            bench["judges"], bench["judge"] = ["api"], "api"
        spec = parse_spec(data)
        manifest = tmp_path / "runs" / "judged" / "manifest.json"
        killed: list[int] = []

        def kill_when_busy() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                time.sleep(0.2)
                try:
                    pools = json.loads(manifest.read_text()).get("pools", {})
                except (OSError, ValueError):
                    continue
                for replica in pools.get("judge:api", {}).get("replicas", []):
                    if replica.get("state") == "ready" and replica.get("pid") and len(stub.seen) >= 3:
                        os.kill(int(replica["pid"]), signal.SIGKILL)
                        killed.append(int(replica["pid"]))
                        return

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        outcome = run_sweep(
            spec, RunOptions(data_dir=data_dir, tracking_uri=sqlite_store(tmp_path / "m.db"), quiet=True)
        )
        killer.join(timeout=5)
    assert killed, "the judge worker was never seen busy"
    judgments = judgments_of(Path(outcome.store.dir))
    assert len(judgments) == 24 and judgments["judgment_key"].is_unique  # nothing lost, nothing twice
    assert not outcome.judge_failed
    said = " ".join(capsys.readouterr().out.split())
    assert "judge:api: replica 0 failed a call" in said and "was restarted by Ray" in said  # the shard was run again


def test_judging_stored_answers_shows_a_bar_of_judgments() -> None:
    """`qtrust judge` generates nothing: its progress counts judgments, not an empty "overall 0/0 items"."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from jobs.pipeline.progress import RichProgress
    from jobs.pipeline.state import SweepState

    out = io.StringIO()
    bar = RichProgress(Console(file=out, width=120, force_terminal=True), {})
    state = SweepState(plan=None, progress_bar=bar)  # type: ignore[arg-type]
    shards = [SimpleNamespace(judge="rule", id=f"s{i}", entries=[0] * 96) for i in range(3)]
    with bar:
        for shard in shards:
            state.judge_submitted(shard)
        state.judge_committed(shards[0], {})
        state.judge_committed(shards[1], {})
        state.judge_failed(shards[2], "boom")
    tasks = {task.description: task for task in bar.progress.tasks}
    assert tasks["judgments"].total == 288 and tasks["judgments"].completed == 288
    assert not tasks["overall"].visible  # no answers to generate: no "overall 0/0" bar
    assert "288/288" in out.getvalue() and "overall" not in out.getvalue()
