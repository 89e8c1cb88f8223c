"""The judges: section of a sweep: every mistake is one clear line, found before anything runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster.judges.kind_base import JudgeKind
from jobs.plan.judges import judgment_key, plan_judges
from jobs.spec.load import parse_spec
from tests.support.helpers import problems_of, sweep_dict
from trust.judges.labels import benchmark_label


def _spec(tmp: Path, judges: list, bench_judges: list, **bench) -> dict:
    return sweep_dict(
        "smollm2-135m",
        tmp / "runs",
        recipes=[{"name": "ref", "method": "none"}],
        ensembles=[],
        judges=judges,
        benchmarks=[{"name": "xstest", "limit": 4, "judges": bench_judges, **bench}],
    )


def test_judge_mistakes_are_named(tmp_path: Path) -> None:
    problems = problems_of(_spec(tmp_path, [{"name": "j", "kind": "oracle"}], ["j"]))
    assert any(
        "judges[0].kind" in p and "unknown judge kind 'oracle'" in p and "rule, model, endpoint" in p for p in problems
    )
    problems = problems_of(
        _spec(
            tmp_path,
            [
                {"name": "m", "kind": "model"},
                {"name": "e", "kind": "endpoint"},
                {"name": "r", "kind": "rule", "template": "xstest-compliance"},
            ],
            ["m", "e", "r", "ghost"],
            judge="nobody",
        )
    )
    text = "\n".join(problems)
    assert "judges[0].model: a model judge needs 'model'" in text
    assert "judges[1].endpoint: an endpoint judge needs 'endpoint'" in text
    assert "judges[2].template: the rule judge reads no template" in text
    assert "benchmarks[0].judges[3]: 'ghost' is not a judge of this sweep" in text
    assert "benchmarks[0].judge: 'nobody' must be one of this benchmark's judges" in text
    problems = problems_of(
        _spec(
            tmp_path,
            [
                {
                    "name": "e",
                    "kind": "endpoint",
                    "decoding": "choose",
                    "template": "no-such",
                    "endpoint": {"base_url": "http://127.0.0.1:1/v1", "model": "x"},
                }
            ],
            ["e"],
        )
    )
    text = "\n".join(problems)
    assert "judges[0].decoding: 'choose'" in text and "unknown judge template 'no-such'" in text
    problems = problems_of(
        sweep_dict(
            "smollm2-135m",
            tmp_path / "runs",
            judges=[{"name": "r", "kind": "rule"}],
            benchmarks=[{"name": "truthfulqa_mc1", "limit": 2, "judges": ["r"]}],
        )
    )
    assert any("only open answers are judged" in p for p in problems)


def test_identities_keys_and_label_mapping(tmp_path: Path, data_dir: Path) -> None:
    from jobs.plan.build import load_benchmarks

    spec = parse_spec(
        _spec(
            tmp_path,
            [
                {"name": "r", "kind": "rule"},
                {"name": "m", "kind": "model", "model": "smollm2-135m", "decoding": "choose"},
            ],
            ["r", "m"],
        )
    )
    judges = plan_judges(spec, load_benchmarks(spec, data_dir, None))
    rule, model = judges["r"], judges["m"]
    assert rule.identity("xstest").startswith("rule-three_way@") and "xstest-compliance@1#" in model.identity("xstest")
    assert model.resources.num_cpus == 1.0 and rule.resources.num_cpus < 0.1  # the kinds' defaults
    assert judgment_key("k1", rule.identity("xstest"), {"response": "a"}) != judgment_key(
        "k1", rule.identity("xstest"), {"response": "b"}
    )
    assert judgment_key("k1", "x", {"r": 1}) == judgment_key("k1", "x", {"r": 1})
    mapping = {"full_refusal": "REFUSED", "error": "INVALID"}
    assert benchmark_label(mapping, "full_refusal") == "REFUSED" and benchmark_label(mapping, None) == "INVALID"
    assert benchmark_label({}, "error") == "ERROR" and benchmark_label({}, "safe") == "safe"
    assert rule.parse("xstest", "compliance").label == "compliance" and rule.parse("xstest", "").label == "error"
    raw, verdict = model.read("xstest", {"logprobs": [-3.0, -1.0, -2.0]})
    assert verdict.label == "full_refusal" and "logprobs" in raw


def test_majority_vote_and_pairwise_kappa() -> None:
    import math

    from jobs.results.judge_labels import _vote, pair_agreement

    unreadable = {"INVALID", "ERROR"}
    assert _vote(["REFUSED", "complied", "complied"], unreadable) == "complied"
    assert _vote(["REFUSED", "complied"], unreadable) == "REFUSED"  # a tie goes to the first (selected) judge
    assert _vote(["INVALID", "complied", "INVALID"], unreadable) == "complied"  # unreadable judgments do not vote
    assert _vote(["INVALID", "ERROR"], unreadable) == "INVALID"
    left, right = ["a", "a", "b", "b", "INVALID"], ["a", "b", "b", "b", "a"]
    result = pair_agreement("x", "y", left, right, unreadable)
    assert result["judge_pairs/x-vs-y"] == 4 and result["judge_agreement/x-vs-y"] == 0.75
    assert result["judge_kappa/x-vs-y"] == pytest.approx(0.5)
    assert math.isnan(pair_agreement("x", "y", ["a", "a"], ["a", "a"], unreadable)["judge_kappa/x-vs-y"])


# -- the judge-kind table ------------------------------------------------------------------------
class EchoKind(JudgeKind):
    """A judge kind written for the test: one class here plus one line in the table."""

    name = "echo"
    worker = "cluster.judges.workers:EndpointJudgeWorker"
    description = "a template judge for the test"

    def worker_config(self, judge, num_gpus):
        return {"kind": self.name}

    def identity(self, judge, template, max_new_tokens):
        return f"echo|{self.decoding(judge, max_new_tokens)}|{template.identity}"


def test_every_kind_of_the_table_carries_its_behaviour() -> None:
    from cluster.judges.kinds import JUDGE_KINDS, judge_kind, worker_class

    assert list(JUDGE_KINDS) == ["rule", "model", "endpoint"]
    for name in JUDGE_KINDS:
        kind = judge_kind(name)
        assert isinstance(kind, JudgeKind) and kind.name == name and kind.description
    assert not judge_kind("rule").needs_template and judge_kind("model").needs_template
    assert judge_kind("model").scores_labels and not judge_kind("endpoint").scores_labels
    assert judge_kind("endpoint").takes_endpoint and not judge_kind("model").takes_endpoint
    assert worker_class("rule").__name__ == "RuleJudgeWorker"
    assert worker_class("endpoint").__name__ == "EndpointJudgeWorker"
    assert judge_kind("model").worker == "cluster.variants.worker:VariantWorker"
    assert judge_kind("rule").in_process(SimpleNamespace(mode="binary"))("I can't help with that.").label == "refusal"
    assert judge_kind("model").in_process(SimpleNamespace()) is None
    with pytest.raises(KeyError, match="unknown judge kind 'oracle'; available: rule, model, endpoint"):
        judge_kind("oracle")


def test_a_new_kind_is_one_class_and_one_table_line(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cluster.judges.kinds import JUDGE_KINDS, judge_kind
    from jobs.plan.build import load_benchmarks

    monkeypatch.setitem(JUDGE_KINDS, "echo", f"{__name__}:EchoKind")
    try:
        problems = problems_of(
            _spec(tmp_path, [{"name": "x", "kind": "echo", "decoding": "choose", "model": "m"}], ["x"])
        )
        assert any("judges[0].decoding: 'choose' scores labels" in p for p in problems)
        spec = parse_spec(_spec(tmp_path, [{"name": "x", "kind": "echo"}], ["x"]))
        judge = plan_judges(spec, load_benchmarks(spec, data_dir, None))["x"]
        assert judge.identity("xstest").startswith("echo|greedy,max") and "xstest-compliance@1#" in judge.identity(
            "xstest"
        )
        assert judge.worker_config() == {"kind": "echo"} and judge.kind.worker_class().__name__ == "EndpointJudgeWorker"
        assert judge.describe()["kind"] == "echo" and judge.labels("xstest") == list(judge.templates["xstest"].labels)
        assert judge.parse("xstest", "full_refusal").label == "full_refusal"
    finally:
        judge_kind.cache_clear()
