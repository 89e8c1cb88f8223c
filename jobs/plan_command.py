"""``qtrust plan``: price a sweep before it runs (no Ray unless asked to read a cluster, no model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from jobs.plan.cost import PlanCost, VariantCost, cluster_from_ray, estimate, load_tables, parse_cluster


def stored_keys(spec: Any, storage_root: str | None = None) -> set[str]:
    """Item keys already in the sweep's store (none when the store does not exist yet)."""
    from jobs.store.sweep import SweepStore

    root = storage_root or spec.storage.root
    if "://" not in root and not (Path(root).expanduser() / spec.name).exists():
        return set()
    try:
        return set(SweepStore(root, spec.name).scan(update_index=False).keys)
    except FileNotFoundError:
        return set()


def plan_main(
    spec: Any,
    data_dir: Path,
    *,
    gpus: str | None,
    address: str | None,
    device: str | None,
    throughput: Path | None,
    as_json: bool,
    console: Console,
) -> PlanCost:
    """Build the plan (items and keys), read what is stored, price it and print the tables."""
    from jobs.plan.build import build_plan

    tables = load_tables(throughput)
    if address:
        cluster = cluster_from_ray(address, tables, device)
    else:
        cluster = parse_cluster(gpus or "cpu:1", tables)
    plan = build_plan(spec, data_dir)
    cost = estimate(plan, stored_keys(spec), tables, cluster)
    adaptive = [b.run_name for b in spec.benchmarks if spec.adaptive_for(b) is not None]
    if adaptive:
        cost.notes.append(
            f"adaptive ({', '.join(adaptive)}): priced as if every item ran; comparisons that are decided "
            "early compute fewer (docs/adaptive.md)"
        )
    if as_json:
        console.print_json(json.dumps(cost.as_dict()))
    else:
        _print(cost, console)
    return cost


def _hours(value: float) -> str:
    return f"{value:.2f}" if value >= 0.01 else f"{value * 3600:.0f} s"


def _print(cost: PlanCost, console: Console) -> None:
    table = Table(title=f"Plan on {cost.cluster.describe}", title_justify="left")
    for column in ("variant", "benchmark", "task", "items", "to compute", "prompt tok", "output tok", "hours"):
        table.add_column(column, justify="left" if column in ("variant", "benchmark", "task") else "right")
    for entry in cost.variants + cost.judges:
        for line in entry.lines:
            table.add_row(
                line.variant,
                line.benchmark,
                line.task,
                f"{line.planned:,}",
                f"{line.to_compute:,}",
                f"{line.prompt_tokens:,}",
                f"{line.output_tokens:,}",
                _hours(line.hours),
            )
    console.print(table)
    summary = Table(title="Per variant and judge", title_justify="left")
    for column in (
        "name",
        "params (B)",
        "bits",
        "memory GB",
        "devices/replica",
        "replicas fit",
        "build h",
        "hours",
        "device-hours",
    ):
        summary.add_column(column, justify="left" if column == "name" else "right")
    for entry in cost.variants + cost.judges:
        summary.add_row(*_summary_row(entry))
    console.print(summary)
    unit = "core-hours" if cost.cluster.device.kind == "cpu" else "GPU-hours"
    console.print(
        f"Total: {cost.device_hours:,.2f} {unit}; at least {cost.wall_hours:,.2f} h on {cost.cluster.describe} "
        "(output tokens at max_new_tokens: an upper bound; rates from jobs/plan/cost_tables.yaml or --throughput)"
    )
    unfit = [e.name for e in cost.variants + cost.judges if e.replicas_fit == 0]
    if unfit:
        console.print(f"[yellow]does not fit[/]: {', '.join(unfit)} need more devices than the cluster has")
    for note in cost.notes:
        console.print(f"note: {note}")


def _summary_row(entry: VariantCost) -> list[str]:
    return [
        entry.name,
        f"{entry.params_b:g}" + ("?" if entry.guessed else ""),
        f"{entry.bits:g}",
        f"{entry.memory_gb:.1f}",
        str(entry.devices_per_replica),
        str(entry.replicas_fit),
        _hours(entry.build_hours),
        _hours(entry.hours),
        _hours(entry.device_hours),
    ]
