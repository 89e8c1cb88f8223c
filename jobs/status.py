"""``qtrust status SWEEP_DIR``: a running or finished sweep, read from its ``manifest.json``.

The driver rewrites ``<sweep_dir>/manifest.json`` atomically about once a second, so this works from
another terminal (or another machine, for object-store roots) during a run and after it. Every key of
the manifest is optional here: a manifest from an older or killed driver may lack some."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from jobs.store.health import FolderHealth
from jobs.store.lock import parse_iso
from jobs.store.manifest import StatusError, lock_holder, read_manifest

#: A "running" manifest older than this, with the sweep lock free, is a driver that died.
STALE_AFTER_S = 60.0


#: Events shown (the newest).
EVENTS_SHOWN = 5


#: Failed shards listed before "... and N more".
FAILED_SHOWN = 5


WIDTH = 100


# --------------------------------------------------------------------------------------------- facts
def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def manifest_age_s(manifest: dict[str, Any], now: datetime | None = None) -> float | None:
    """Seconds since the manifest was last written (None when it carries no time)."""
    updated = parse_iso(manifest.get("updated")) or parse_iso(manifest.get("started"))
    if updated is None:
        return None
    return (_now(now) - updated).total_seconds()


def is_stale(manifest: dict[str, Any], lock_holder: dict[str, Any] | None, now: datetime | None = None) -> bool:
    """A "running" manifest nobody updates: the lock is free and the last write is over 60 s old."""
    if manifest.get("state") != "running" or lock_holder is not None:
        return False
    age = manifest_age_s(manifest, now)
    return age is None or age > STALE_AFTER_S


def human_duration(seconds: float | None) -> str:
    """``4m12s``, ``1h02m``, ``2d03h``, ``12s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    try:
        total = int(round(float(seconds)))
    except (TypeError, ValueError):
        return "-"
    if total < 0:
        return "-"
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _num(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _rate(value: Any) -> str:
    try:
        return f"{float(value):.1f}"
    except (TypeError, ValueError):
        return "-"


def _eta_s(totals: dict[str, Any]) -> float | None:
    """The driver's ETA, or pending / items_per_s when it gave none."""
    if totals.get("eta_s") is not None:
        return totals["eta_s"]
    pending, rate = _num(totals.get("pending")), totals.get("items_per_s")
    try:
        return pending / float(rate) if pending and rate and float(rate) > 0 else None
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------- rendering
def _t(value: Any, style: str = "") -> Text:
    """Plain text (never markup: error texts and names may hold square brackets); None shows as ``-``."""
    return Text("-" if value is None else str(value), style=style)


def _clock(text: Any, *, date: bool = True) -> str:
    """An ISO time as ``2026-12-01 22:00:00Z`` (or ``22:00:00`` without ``date``); other text as is."""
    moment = parse_iso(text) if isinstance(text, str) else None
    if moment is None:
        return "" if text is None else str(text)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ" if date else "%H:%M:%S")


_STATE_STYLE = {
    "running": "bold cyan",
    "finished": "bold green",
    "interrupted": "bold yellow",
    "failed": "bold red",
    "ready": "green",
    "loading": "yellow",
    "waiting": "dim",
    "dead": "red",
    "released": "dim",
}


def _driver_text(
    manifest: dict[str, Any], holder: dict[str, Any] | None, sweep_dir: str | None, now: datetime | None
) -> Text:
    """Who drives the sweep: its pid and host, "driver not running" when stale, or a newer holder."""
    text = Text()
    driver = manifest.get("driver") or {}
    if is_stale(manifest, holder, now):
        target = sweep_dir or f"qtrust-runs/{manifest.get('sweep', '<name>')}"
        text.append(" — driver not running", style="bold red")
        text.append(f"\nstale: the driver stopped without finishing; run `qtrust resume {target}`", style="red")
    elif driver.get("pid") is not None:
        text.append(f" — driver pid {driver.get('pid')} on {driver.get('host', '?')}")
        if driver.get("command"):
            text.append(f" ({driver['command']})", style="dim")
    if holder and manifest.get("state") != "running":
        text.append(
            f"\na driver (pid {holder.get('pid')} on {holder.get('host')}) holds the sweep now; "
            "this manifest is from an earlier run",
            style="yellow",
        )
    return text


def _times_text(manifest: dict[str, Any], now: datetime | None) -> str:
    """Start, last update and the Ray cluster, on one dim line."""
    parts = []
    if manifest.get("started"):
        parts.append(f"started {_clock(manifest['started'])}")
    age = manifest_age_s(manifest, now)
    if age is not None:
        parts.append(f"updated {human_duration(max(age, 0))} ago")
    ray = manifest.get("ray") or {}
    if ray:
        parts.append(
            f"Ray {ray.get('address', '?')}: {_num(ray.get('nodes'))} node(s), "
            f"{_num(ray.get('cpus'))} CPU, {_num(ray.get('gpus'))} GPU"
        )
    return " · ".join(parts)


def _header(
    manifest: dict[str, Any], holder: dict[str, Any] | None, sweep_dir: str | None, now: datetime | None
) -> Text:
    state = str(manifest.get("state") or "unknown")
    line = Text.assemble(
        "Sweep ",
        (str(manifest.get("sweep") or sweep_dir or "?"), "bold"),
        " — ",
        (state, _STATE_STYLE.get(state, "bold")),
    )
    line.append_text(_driver_text(manifest, holder, sweep_dir, now))
    times = _times_text(manifest, now)
    if times:
        line.append("\n" + times, style="dim")
    return line


def _totals(manifest: dict[str, Any], store: FolderHealth | None = None, stale: bool = False) -> Text:
    totals = manifest.get("totals") or {}
    planned, done = _num(totals.get("planned")), _num(totals.get("done"))
    done = max(0, done - (store.lost_records if store is not None else 0))
    pct = f" ({100.0 * done / planned:.0f}%)" if planned else ""
    line = Text.assemble("Items: ", (f"{done}/{planned}", "bold"), f" done{pct}")
    if store is not None and store.problems:
        line.append(f"; {_store_summary(store)}", style="bold red")
    if totals.get("stored"):
        line.append(f", {_num(totals.get('stored'))} already stored")
    line.append(" · ")
    line.append(f"{_num(totals.get('failed'))} failed", style="red" if _num(totals.get("failed")) else "")
    line.append(f" · {_num(totals.get('pending'))} pending · {_rate(totals.get('items_per_s'))} items/s")
    # a stopped sweep (interrupted, failed, or "running" with its driver gone) has no end to predict
    if manifest.get("state") == "running" and not stale:
        line.append(" · ETA ")
        line.append(human_duration(_eta_s(totals)), style="bold")
    return line


def _store_summary(store: FolderHealth) -> str:
    """``4 item(s) lost from the store: 1 damaged shard(s), 1 shard(s) gone``."""
    parts = []
    if store.damaged:
        parts.append(f"{len(store.damaged)} damaged shard(s)")
    if store.missing:
        parts.append(f"{len(store.missing)} shard(s) gone")
    return f"{store.lost_records} item(s) lost from the store: {', '.join(parts)}"


def _store_lines(store: FolderHealth | None, sweep_dir: str | None) -> Text | None:
    """The shards a store check found damaged or gone, and what to do about them."""
    if store is None or not store.problems:
        return None
    text = Text(f"Store: {_store_summary(store)}", style="bold red")
    for problem in store.problems[:FAILED_SHOWN]:
        lost = "" if problem.lost is None else f", {problem.lost} item(s) lost"
        text.append(f"\n{problem.problem}: {problem.relative} ({problem.reason}{lost})")
    if len(store.problems) > FAILED_SHOWN:
        text.append(f"\n… and {len(store.problems) - FAILED_SHOWN} more (qtrust status --json)", style="dim")
    target = sweep_dir or "<sweep dir>"
    text.append(
        f"\nrun `qtrust resume {target}` to compute them again; `qtrust report --verify-store {target}` reads every shard",
        style="red",
    )
    return text


def store_check(sweep_dir: str) -> FolderHealth | None:
    """The quick check of the sweep's generation shards (:func:`jobs.store.health.check_folder`);
    None when the store cannot be opened or holds no shards (status then shows the manifest alone)."""
    from jobs.results.stored import split_sweep_dir
    from jobs.store.health import check_folder
    from jobs.store.sweep import SweepStore

    try:
        health = check_folder(SweepStore(*split_sweep_dir(sweep_dir)).generations)
    except Exception:
        return None
    return health if health.shards or health.problems else None


def _progress_table(manifest: dict[str, Any]) -> Table | None:
    progress = manifest.get("progress") or {}
    if not progress:
        return None
    table = Table(title="Progress", title_justify="left", expand=False)
    table.add_column("Variant", overflow="fold", max_width=36)
    table.add_column("Benchmark", overflow="fold", max_width=28)
    for name in ("Done", "Failed", "Pending", "Planned"):
        table.add_column(name, justify="right")
    for variant, benchmarks in progress.items():
        first = True
        for benchmark, counts in (benchmarks or {}).items():
            counts = counts or {}
            failed = _num(counts.get("failed"))
            table.add_row(
                Text(str(variant)) if first else Text(""),
                _t(benchmark),
                _t(_num(counts.get("done"))),
                _t(failed, "red" if failed else ""),
                _t(_num(counts.get("pending"))),
                _t(_num(counts.get("planned"))),
                end_section=False,
            )
            first = False
    return table


def _adaptive_part(manifest: dict[str, Any]) -> RenderableType | None:
    """An adaptive sweep's comparisons (table "Adaptive comparisons") and the items saved."""
    from jobs.results.adaptive_view import adaptive_renderable, summary_from_manifest

    summary = summary_from_manifest(manifest)
    return adaptive_renderable(summary) if summary is not None else None


def _judges_table(manifest: dict[str, Any]) -> Table | None:
    judges = manifest.get("judges") or {}
    if not judges:
        return None
    table = Table(title="Judges (this run)", title_justify="left", expand=False)
    table.add_column("Judge", overflow="fold", max_width=36)
    for name in ("Submitted", "Judged", "Unreadable", "Failed"):
        table.add_column(name, justify="right")
    for name, counts in judges.items():
        counts = counts or {}
        failed = _num(counts.get("failed"))
        table.add_row(
            _t(name),
            _t(_num(counts.get("submitted"))),
            _t(_num(counts.get("judged"))),
            _t(_num(counts.get("unreadable"))),
            _t(failed, "red" if failed else ""),
        )
    return table


def _node_label(replica: dict[str, Any]) -> str:
    if replica.get("node_ip"):
        return str(replica["node_ip"])
    if replica.get("node_id"):
        return str(replica["node_id"])[:12]
    return str(replica.get("host") or "-")


def _replica_table(manifest: dict[str, Any]) -> Table | None:
    pools = manifest.get("pools") or {}
    if not pools:
        return None
    table = Table(title="Replicas", title_justify="left", expand=False)
    table.add_column("Pool", overflow="fold", max_width=40)
    table.add_column("#", justify="right")
    table.add_column("State")
    table.add_column("Node", overflow="fold", max_width=20)
    table.add_column("GPUs", overflow="fold", max_width=12)
    table.add_column("Items", justify="right")
    table.add_column("Repl.", justify="right")
    for name, pool in pools.items():
        pool = pool or {}
        label = f"{name}\n{pool.get('state', '?')}, {_rate(pool.get('items_per_s'))} items/s"
        replicas = pool.get("replicas") or []
        if not replicas:
            table.add_row(_t(label), _t("-"), _t("no replicas"), _t("-"), _t("-"), _t("-"), _t("-"))
        for i, replica in enumerate(replicas):
            state = str(replica.get("state") or "?")
            gpus = ",".join(str(g) for g in replica.get("gpu_ids") or []) or "-"
            table.add_row(
                Text(label if i == 0 else ""),
                _t(replica.get("index", i)),
                _t(state, _STATE_STYLE.get(state, "")),
                _t(_node_label(replica)),
                _t(gpus),
                _t(_num(replica.get("items_done"))),
                _t(_num(replica.get("replacements"))),
            )
    return table


def _event_lines(manifest: dict[str, Any]) -> Text | None:
    events = [e for e in manifest.get("events") or [] if isinstance(e, dict)][-EVENTS_SHOWN:]
    if not events:
        return None
    text = Text("Recent events", style="bold")
    for event in events:
        text.append(f"\n{_clock(event.get('time'), date=False)} ", style="dim")
        text.append(f"{event.get('kind', '?')}: ", style="yellow")
        text.append(str(event.get("message", "")))
    return text


def _failed_lines(manifest: dict[str, Any]) -> Text | None:
    failed = manifest.get("failed_shards") or {}
    if not failed:
        return None
    text = Text(f"Failed shards ({len(failed)})", style="bold red")
    for shard, error in sorted(failed.items())[:FAILED_SHOWN]:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        text.append(f"\n{shard}: {first_line}")
    if len(failed) > FAILED_SHOWN:
        text.append(f"\n… and {len(failed) - FAILED_SHOWN} more (qtrust status --json)", style="dim")
    return text


def _mlflow_line(manifest: dict[str, Any]) -> Text | None:
    mlflow = manifest.get("mlflow") or {}
    if mlflow.get("url"):
        return Text.assemble("MLflow: ", (str(mlflow["url"]), "underline"))
    if mlflow.get("uri"):
        exp = f", experiment {mlflow['experiment_id']}" if mlflow.get("experiment_id") else ""
        return Text(f"MLflow: {mlflow['uri']}{exp}")
    return None


def build_status(
    manifest: dict[str, Any],
    lock_holder: dict[str, Any] | None = None,
    *,
    sweep_dir: str | None = None,
    now: datetime | None = None,
    store: FolderHealth | None = None,
) -> RenderableType:
    """Everything ``render_status`` prints, as one rich renderable (``--watch`` updates it in place).

    ``store``: a check of the store's shards (:func:`store_check`); items it finds lost are not done.
    """
    parts: Iterable[RenderableType | None] = (
        _header(manifest, lock_holder, sweep_dir, now),
        _totals(manifest, store, is_stale(manifest, lock_holder, now)),
        _progress_table(manifest),
        _adaptive_part(manifest),
        _judges_table(manifest),
        _replica_table(manifest),
        _failed_lines(manifest),
        _store_lines(store, sweep_dir),
        _event_lines(manifest),
        _mlflow_line(manifest),
    )
    return Group(*(p for p in parts if p is not None))


def render_status(
    manifest: dict[str, Any],
    console: Console,
    lock_holder: dict[str, Any] | None = None,
    *,
    sweep_dir: str | None = None,
    now: datetime | None = None,
    store: FolderHealth | None = None,
) -> None:
    """Print the sweep's status: header, totals, progress and replica tables, events, MLflow URL."""
    console.print(build_status(manifest, lock_holder, sweep_dir=sweep_dir, now=now, store=store))


# --------------------------------------------------------------------------------------------- command
def status_document(
    manifest: dict[str, Any], holder: dict[str, Any] | None, store: FolderHealth | None = None
) -> dict[str, Any]:
    """The ``--json`` output: the manifest plus ``lock_holder``, ``stale`` and ``store`` (the shard check:
    damaged and gone shards with the items they lose; null when not made). An adaptive sweep's
    ``adaptive`` entry gets each pair's ``saved`` and ``final`` and the sweep's ``totals`` (planned,
    computed, saved, saved_fraction, decisions)."""
    from jobs.results.adaptive_view import adaptive_document, summary_from_manifest

    check = None
    if store is not None:
        check = {
            "shards": store.shards,
            "lost_items": store.lost_records,
            "problems": [
                {"shard": p.relative, "problem": p.problem, "reason": p.reason, "records": p.records, "lost": p.lost}
                for p in store.problems
            ],
        }
    document = {**manifest, "lock_holder": holder, "stale": is_stale(manifest, holder), "store": check}
    adaptive = summary_from_manifest(manifest)
    if adaptive is not None:
        document["adaptive"] = adaptive_document(adaptive)
    return document


def _snapshot(sweep_dir: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The manifest and the lock's holder, with the credentials of every URL in them masked (an older
    manifest may hold a tracking URI in clear; a holder's command line may carry ``--tracking-uri``)."""
    return _redacted(read_manifest(sweep_dir)), _redacted(lock_holder(sweep_dir))


def _redacted(value: Any) -> Any:
    """``value`` (JSON-like) with :func:`jobs.tracking.uri.redact` applied to every string in it."""
    from jobs.tracking.uri import redact

    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


def _finished(manifest: dict[str, Any], holder: dict[str, Any] | None) -> bool:
    """``--watch`` stops once the run is over (or its driver is gone)."""
    return manifest.get("state") != "running" or is_stale(manifest, holder)


def _watch(
    sweep_dir: str,
    console: Console,
    interval_s: float,
    as_json: bool,
    first: tuple[dict[str, Any], dict[str, Any] | None],
) -> int:
    manifest, holder = first
    if as_json:  # one compact JSON object per line, for scripts that follow a run
        while True:
            done = _finished(manifest, holder)  # the store is checked once the run is over
            store = store_check(sweep_dir) if done else None
            console.out(json.dumps(status_document(manifest, holder, store)), highlight=False)
            if done:
                return 0
            time.sleep(interval_s)
            manifest, holder = _refresh(sweep_dir, manifest, holder)
    with Live(
        build_status(manifest, holder, sweep_dir=sweep_dir),
        console=console,
        auto_refresh=False,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as live:
        while not _finished(manifest, holder):
            time.sleep(interval_s)
            manifest, holder = _refresh(sweep_dir, manifest, holder)
            live.update(build_status(manifest, holder, sweep_dir=sweep_dir), refresh=True)
        store = store_check(sweep_dir)  # once the run is over: what the store holds now
        if store is not None and store.problems:
            live.update(build_status(manifest, holder, sweep_dir=sweep_dir, store=store), refresh=True)
    return 0


def _refresh(
    sweep_dir: str, manifest: dict[str, Any], holder: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A new snapshot; keeps the last good manifest through a transient read error."""
    try:
        return _snapshot(sweep_dir)
    except StatusError:
        return manifest, lock_holder(sweep_dir)


def status_main(
    sweep_dir: str,
    *,
    watch: bool = False,
    as_json: bool = False,
    interval_s: float = 2.0,
    console: Console | None = None,
) -> int:
    """``qtrust status``: print the status once (or follow it with ``watch``); returns the exit code.

    0 on success or Ctrl-C; 2 with one error line when the manifest is missing or unreadable.
    ``as_json`` prints the manifest plus ``lock_holder`` and ``stale``; with ``watch`` one compact
    JSON object per line each ``interval_s`` until the run is over.
    """
    console = console or Console()
    try:
        first = _snapshot(sweep_dir)
    except StatusError as err:
        console.print(Text(f"error: {err}", style="red"), soft_wrap=True)
        return 2
    try:
        if watch:
            return _watch(sweep_dir, console, max(float(interval_s), 0.05), as_json, first)
        manifest, holder = first
        store = store_check(sweep_dir)
        if as_json:
            console.out(json.dumps(status_document(manifest, holder, store), indent=2), highlight=False)
        else:
            render_status(manifest, console, holder, sweep_dir=sweep_dir, store=store)
    except KeyboardInterrupt:
        return 0
    return 0
