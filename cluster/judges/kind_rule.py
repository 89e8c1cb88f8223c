"""The ``rule`` judge kind: qtrust's refusal rules (:class:`trust.judges.rule.RuleJudge`), no model, no network.

It reads no template: its request is the judged answer itself, its identity the rules' mode and
version, its raw output the label itself. Its worker is :class:`cluster.judges.workers.RuleJudgeWorker`;
``qtrust judge-eval`` runs the rules in its own process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.judges.kind_base import JudgeKind, JudgeSettings
from trust.judges.rule import RuleJudge
from trust.judges.templates import JudgeTemplate
from trust.judges.verdicts import Verdict, failed
from trust.types import Item


class RuleKind(JudgeKind):
    """The refusal rules as a three-way or binary judge (``mode``)."""

    name = "rule"
    worker = "cluster.judges.workers:RuleJudgeWorker"
    description = "qtrust's refusal rules as a three-way or binary judge (no model, no network)"
    needs_template = False
    default_num_cpus = 0.05

    def worker_config(self, judge: JudgeSettings, num_gpus: float) -> dict[str, Any]:
        return {"kind": judge.kind, "mode": judge.mode}

    def in_process(self, judge: JudgeSettings) -> Callable[[str | None], Verdict]:
        rules = RuleJudge(judge.mode)  # type: ignore[arg-type]
        return lambda response: rules.judge("", response)

    def identity(self, judge: JudgeSettings, template: JudgeTemplate | None, max_new_tokens: int) -> str:
        return RuleJudge(judge.mode).identity  # type: ignore[arg-type]

    def labels(self, judge: JudgeSettings, template: JudgeTemplate | None) -> list[str]:
        return list(RuleJudge(judge.mode).labels)  # type: ignore[arg-type]

    def request(
        self, judge: JudgeSettings, template: JudgeTemplate | None, item: Item, output: str | None, data_dir: Path
    ) -> dict[str, Any]:
        return {"response": output or ""}

    def parse(self, judge: JudgeSettings, template: JudgeTemplate | None, raw: str | None) -> Verdict:
        text = (raw or "").strip()
        if text in self.labels(judge, template):
            return Verdict(label=text, raw=text)
        return failed(raw or "", "the answer was empty" if not text else f"not a rule label: {text[:80]}")

    def tracking_params(self, judge: JudgeSettings) -> dict[str, str]:
        return {"mode": judge.mode}

    def eval_params(self, judge: JudgeSettings, template: JudgeTemplate | None, max_new_tokens: int) -> dict[str, str]:
        return {"mode": judge.mode}
