"""``qtrust report --verify-store``: read every shard of a stored sweep, check it, and say per
variant × benchmark whether its items are all there (ok), some are not stored (missing) or a
damaged shard lost some (damaged). Reads only; moves and writes nothing.

Each shard is checked as the store committed it (:mod:`jobs.store.health`): its bytes against the
digest in its name, a readable qtrust Parquet file of this version, as many records as its index
segment recorded; shards the index names that are gone count as missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from jobs.plan.build import Plan
from jobs.results.completeness import EXIT_PARTIAL, Completeness, PairCount, not_needed, shard_counts
from jobs.store.adaptive import AdaptiveSummary
from jobs.store.health import FolderHealth, ShardProblem


@dataclass
class StoreVerification:
    """The check of a sweep's generations and judgments against its plan."""

    completeness: Completeness
    generations: FolderHealth
    judgments: FolderHealth

    @property
    def problems(self) -> list[tuple[str, ShardProblem]]:
        return [("generations", p) for p in self.generations.problems] + [
            ("judgments", p) for p in self.judgments.problems
        ]

    @property
    def ok(self) -> bool:
        return not self.completeness.partial and not self.problems


def verify_plan(
    plan: Plan,
    generations: FolderHealth,
    judgments: FolderHealth,
    state: str | None,
    adaptive: AdaptiveSummary | None = None,
) -> StoreVerification:
    """Items planned per variant × benchmark against the keys the whole shards hold (``adaptive``: items
    an adaptive decision did not need are not missing)."""
    shards = shard_counts(generations)
    pairs = []
    for (variant, benchmark), keys in plan.keys.items():
        found = sum(1 for key in keys if key in generations.keys)
        damaged, missing = shards.get((variant, benchmark), (0, 0))
        spared = not_needed(adaptive, variant, benchmark, len(keys))
        pairs.append(PairCount(variant, benchmark, len(keys), found, damaged, missing, spared))
    return StoreVerification(Completeness(pairs, state), generations, judgments)


def print_verification(console: Console, verification: StoreVerification, where: str) -> int:
    """Print the per variant × benchmark table and every problem shard; returns the exit code."""
    gen = verification.generations
    table = Table(title=f"Store check: {where}", title_justify="left", expand=False)
    table.add_column("Variant", overflow="fold", max_width=36)
    table.add_column("Benchmark", overflow="fold", max_width=28)
    for name in ("Shards ok", "Damaged", "Gone", "Items", "Missing"):
        table.add_column(name, justify="right")
    table.add_column("State")
    style = {"ok": "green", "missing": "yellow", "damaged": "bold red"}
    for pair in verification.completeness.pairs:
        ok = gen.ok.get(f"variant={pair.variant}/benchmark={pair.benchmark}", 0)
        table.add_row(
            Text(pair.variant),
            Text(pair.benchmark),
            str(ok),
            str(pair.damaged_shards),
            str(pair.missing_shards),
            f"{pair.found}/{pair.planned}",
            str(pair.missing),
            Text(pair.state, style=style[pair.state]),
        )
    console.print(table)
    judged = verification.judgments
    console.print(
        f"{gen.shards} generation shard(s) read and checked, {len(gen.damaged)} damaged, {len(gen.missing)} gone; "
        f"{judged.shards} judgment shard(s), {len(judged.damaged)} damaged, {len(judged.missing)} gone",
        soft_wrap=True,
    )
    for folder, problem in verification.problems:
        lost = "" if problem.lost is None else f" ({problem.lost} item(s) lost)"
        console.print(
            Text(f"{problem.problem}: {folder}/{problem.relative}: {problem.reason}{lost}", style="red"),
            soft_wrap=True,
        )
    if verification.ok:
        complete = verification.completeness
        if complete.not_needed:
            console.print(Text(f"ok: every needed item is stored; {complete.headline()}", style="green"))
        else:
            console.print(Text(f"ok: every planned item is stored ({complete.planned})", style="green"))
        return 0
    console.print(
        Text(
            f"{verification.completeness.headline()}; `qtrust resume` computes what is missing or damaged again",
            style="red",
        ),
        soft_wrap=True,
    )
    return EXIT_PARTIAL
