"""The judge feed of a run: which judgments are stored or cached, and judge tasks submitted as
generation shards commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console

from jobs.pipeline.pools import Task
from jobs.pipeline.scheduler import Scheduler
from jobs.pipeline.state import SweepState
from jobs.plan.build import Plan
from jobs.store.shards import ScanResult
from jobs.store.sweep import SweepStore

if TYPE_CHECKING:
    from jobs.spec.run_options import RunOptions


@dataclass
class Judging:
    """The judge stage of a run, with what the store held when it started."""

    stage: Any  # jobs.pipeline.judge.JudgeStage
    scan: ScanResult
    backlog_tasks: list[tuple[str, Task]]
    reused: int


def judge_stage(
    plan: Plan,
    store: SweepStore,
    data_dir: Path,
    scan: ScanResult,
    from_cache: pd.DataFrame | None,
    options: RunOptions,
    console: Console,
) -> Judging | None:
    """Scan the stored judgments and queue the stored answers that lack one (None: the sweep has no judges)."""
    if not plan.judges:
        return None
    from jobs.pipeline.judge import JudgeStage

    jscan = store.scan_judgments(use_index=not options.verify_store)
    for damaged in jscan.damaged:
        console.print(f"[yellow]damaged judgment shard {damaged.path}: {damaged.reason}; moved aside, judged again")
    stage = JudgeStage(plan, store, data_dir, jscan.keys)
    missing = stage.missing_secrets()
    if missing:
        from jobs.spec.schema import SpecError

        raise SpecError(str(store.spec_path), missing)
    records = scan.records if from_cache is None else pd.concat([scan.records, from_cache], ignore_index=True)
    backlog = stage.backlog(records)
    return Judging(stage=stage, scan=jscan, backlog_tasks=backlog, reused=len(jscan.keys))


class JudgeFeed:
    """Submits judge tasks as generation shards commit; closes the judge pools after the last shard."""

    def __init__(self, plan: Plan, scheduler: Scheduler, judging: Judging | None, state: SweepState, shards: int):
        self.scheduler = scheduler
        self.judging = judging
        self.state = state
        self.remaining = shards
        self.owners: dict[str, list[tuple[str, str, str]]] = {}
        """Item key -> (variant, judged benchmark, item id) of every judged request it answers."""
        if judging is not None:
            for (variant, bench), keys in plan.keys.items():
                if plan.benchmarks[bench].spec.judges:
                    for key, item in zip(keys, plan.benchmarks[bench].items):
                        self.owners.setdefault(key, []).append((variant, bench, item.id))

    def start(self) -> None:
        if self.judging is None:
            return
        self._submit(self.judging.backlog_tasks)
        self._close_if_done()

    def generation_committed(self, rows: list[dict[str, Any]]) -> None:
        if self.judging is not None:
            answers: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {}
            for row in rows:
                if row["error"]:
                    continue
                for variant, bench, item_id in self.owners.get(row["item_key"], ()):
                    answers.setdefault((variant, bench), []).append((row["item_key"], item_id, row["output"]))
            for (variant, bench), found in answers.items():
                self._submit(self.judging.stage.tasks_for(variant, bench, found))
        self.generation_finished()

    def generation_finished(self) -> None:
        self.remaining -= 1
        self._close_if_done()

    def _submit(self, tasks: list[tuple[str, Task]]) -> None:
        for pool, task in tasks:
            self.state.judge_submitted(task.subject)
            self.scheduler.submit(pool, task)

    def _close_if_done(self) -> None:
        if self.judging is not None and self.remaining <= 0:
            from jobs.pipeline.judge import judge_pool_name

            for name in self.judging.stage.judges:
                self.scheduler.close(judge_pool_name(name))
