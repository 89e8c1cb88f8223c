"""Progress display: one bar per variant and one overall, with items/s and ETA (rich), and one bar
of judgments once a judge has answers to judge (``qtrust judge`` judges stored answers and
generates none: its progress is that bar)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    """Live bars for a sweep; use as a context manager."""

    def __init__(self, console: Console, totals: dict[str, int]):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}", justify="left"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("items"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        total = sum(totals.values())
        self.overall: TaskID = self.progress.add_task("overall", total=total, status="", visible=total > 0)
        self.judgments: TaskID | None = None
        self.tasks: dict[str, TaskID] = {
            variant: self.progress.add_task(variant, total=total, status="waiting for a worker", start=False)
            for variant, total in totals.items()
        }
        self.failed_items = 0

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def variant_started(self, variant: str, info: dict[str, Any]) -> None:
        task = self.tasks[variant]
        self.progress.start_task(task)
        engine = info.get("engine", {})
        device = engine.get("device", "?")
        self.progress.update(
            task, status=f"{engine.get('engine', '?')} on {device}, loaded in {info.get('load_seconds', 0):.1f}s"
        )

    def shard_done(self, variant: str, items: int) -> None:
        self.progress.advance(self.tasks[variant], items)
        self.progress.advance(self.overall, items)

    def set_total(self, variant: str, total: int) -> None:
        """A variant's items to compute changed (an adaptive comparison was decided)."""
        task = self.tasks.get(variant)
        if task is None or self.progress.tasks[task].total == total:
            return
        self.progress.update(task, total=total)
        self.progress.update(self.overall, total=sum(self.progress.tasks[t].total or 0 for t in self.tasks.values()))
        self.progress.update(self.overall, visible=True)

    def shard_failed(self, variant: str, items: int, error: str) -> None:
        self.failed_items += items
        self.progress.advance(self.tasks[variant], items)
        self.progress.advance(self.overall, items)
        self.progress.update(self.tasks[variant], status=f"[red]{self.failed_items} item(s) failed")

    def judges_submitted(self, answers: int) -> None:
        """``answers`` more answers were handed to a judge (the judgments bar grows)."""
        if self.judgments is None:
            self.judgments = self.progress.add_task("judgments", total=0, status="")
        task = self.progress.tasks[self.judgments]
        self.progress.update(self.judgments, total=(task.total or 0) + answers)

    def judged(self, answers: int) -> None:
        """``answers`` judgments were committed (or failed)."""
        if self.judgments is not None:
            self.progress.advance(self.judgments, answers)

    def message(self, text: str) -> None:
        self.progress.console.print(f"[yellow]{text}")


class QuietProgress:
    """Progress sink that only logs problems (for tests and non-interactive use)."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.messages: list[str] = []

    def __enter__(self) -> QuietProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def variant_started(self, variant: str, info: dict[str, Any]) -> None:
        return None

    def shard_done(self, variant: str, items: int) -> None:
        return None

    def set_total(self, variant: str, total: int) -> None:
        return None

    def shard_failed(self, variant: str, items: int, error: str) -> None:
        self.messages.append(f"{variant}: {error}")

    def judges_submitted(self, answers: int) -> None:
        return None

    def judged(self, answers: int) -> None:
        return None

    def message(self, text: str) -> None:
        self.messages.append(text)
