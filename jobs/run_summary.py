"""The closing lines of a run that did not end well: interrupted, stopped by a full store, or
finished while MLflow was not answering. Each says what happened, what was kept and the command
that continues (``qtrust run``/``resume`` print them: :func:`jobs.cli._run`)."""

from __future__ import annotations

from typing import Any

from jobs.tracking.uri import redact

#: Words for :meth:`jobs.tracking.LiveTracker.unsent`'s counts, in the order they are told.
_UNSENT_WORDS = (
    ("runs", "run(s) not opened"),
    ("metric_points", "metric point(s)"),
    ("params", "param(s)"),
    ("tags", "tag(s)"),
    ("artifacts", "artifact(s) (tables, plots, files)"),
    ("run_ends", "run(s) left without their final status"),
)


def resume_command(store_uri: str) -> str:
    return f"qtrust resume {store_uri}"


def committed_text(outcome: Any) -> str:
    """``this run committed 16 item(s) in 8 shard(s); 44 shard(s) left to compute``."""
    return (
        f"this run committed {outcome.items_computed} item(s) in {outcome.computed} shard(s); "
        f"{outcome.shards_left} shard(s) left to compute"
    )


def interrupted_line(outcome: Any, aborted: bool) -> str:
    """The line a Ctrl-C (``aborted``: twice) ends a run with."""
    return (
        f"[yellow]Interrupted{' (aborted)' if aborted else ''}[/]: {committed_text(outcome)}. "
        f"Everything committed is kept under {outcome.store.uri}."
    )


def store_full_line(full: Any) -> str:
    """The one line of a run stopped because the store takes no more writes (:class:`jobs.runner.StoreFull`)."""
    if full.outcome is None:
        return (
            f"[red]error:[/] cannot write to the store {full.store_uri}: {full.reason}; nothing was started. "
            "Make room (or make it writable) and run the command again."
        )
    manifest = "the manifest says failed" if full.manifest_written else "the manifest could not be updated"
    log = f"; details in {full.log_path}" if full.log_path else ""
    return (
        f"[red]Stopped[/]: the store {full.store_uri} takes no more writes: {full.reason}. "
        f"T{committed_text(full.outcome)[1:]}; {manifest}{log}. "
        f"Make room, then resume with:  [bold]{resume_command(full.store_uri)}[/]"
    )


def unsent_text(unsent: dict[str, int]) -> str:
    """``2 run(s) not opened, 340 metric point(s)`` ("" when nothing was lost)."""
    return ", ".join(f"{unsent[key]} {words}" for key, words in _UNSENT_WORDS if unsent.get(key))


def tracking_gap_line(outcome: Any) -> str | None:
    """What never reached MLflow and how to log it again (None when everything was sent)."""
    lost = unsent_text(outcome.tracking_unsent or {})
    if not lost:
        return None
    return (
        f"[yellow]MLflow: not everything reached {redact(outcome.tracking_uri or '')}[/]: {lost} were not logged "
        "(the tracking store stopped answering). The results are stored; once it answers, log them again "
        f"(final metrics, tables, run states) with:  [bold]{resume_command(outcome.store.uri)}[/]"
    )


__all__ = [
    "committed_text",
    "interrupted_line",
    "resume_command",
    "store_full_line",
    "tracking_gap_line",
    "unsent_text",
]
