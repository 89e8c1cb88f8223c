"""What a scheduler reports as it runs: the :class:`PoolEvents` protocol (console, manifest and
tracking implement it) and :class:`NullEvents`, which ignores everything."""

from __future__ import annotations

from typing import Any, Protocol

from jobs.pipeline.pools import Task


class PoolEvents(Protocol):
    """Where the scheduler reports what happens (console, manifest, tracking)."""

    def replica_state(self, pool: str, index: int, state: str, info: dict[str, Any]) -> None: ...

    def task_done(self, pool: str, task: Task, replica: int) -> None: ...

    def task_retry(self, pool: str, task: Task, error: str, delay_s: float, replica: dict[str, Any]) -> None: ...

    def task_failed(self, pool: str, task: Task, error: str) -> None: ...

    def message(self, kind: str, text: str) -> None: ...


class NullEvents:
    """Ignores every event."""

    def replica_state(self, pool: str, index: int, state: str, info: dict[str, Any]) -> None:
        return None

    def task_done(self, pool: str, task: Task, replica: int) -> None:
        return None

    def task_retry(self, pool: str, task: Task, error: str, delay_s: float, replica: dict[str, Any]) -> None:
        return None

    def task_failed(self, pool: str, task: Task, error: str) -> None:
        return None

    def message(self, kind: str, text: str) -> None:
        return None
