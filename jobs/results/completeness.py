"""How complete a sweep's stored results are: per variant × benchmark, items planned, found and
missing, and the damaged or missing shards behind them. A report with any item missing is *partial*.

Planned items come from the stored sweep and its plan (:class:`jobs.results.scoring.ResultRow`
``n_planned``); found items are the planned keys with a stored record (``n_items``); the shards
come from :func:`jobs.store.health.check_folder` of the sweep's ``generations/`` folder.

An adaptive sweep (:mod:`jobs.store.adaptive`) stops a variant × benchmark once its decision is
final: the items it did not compute were not needed, so they are not missing. Nor are the
reference's, once every pair compared with it on the benchmark is final. A pair still running
(``continue``) or ``blocked`` by failed items is partial as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.results.scoring import ResultRow
from jobs.store.adaptive import AdaptiveSummary
from jobs.store.health import FolderHealth, partition_names

#: The MLflow tag on the sweep's parent run: "true" while it holds only a partial report.
PARTIAL_TAG = "qtrust.report.partial"


#: Exit code of ``qtrust report`` (and ``--verify-store``) when items are missing or shards damaged.
EXIT_PARTIAL = 1


@dataclass(frozen=True)
class PairCount:
    """One variant × benchmark: items planned and found, shards damaged or missing in its folder."""

    variant: str
    benchmark: str
    planned: int
    found: int
    damaged_shards: int = 0
    missing_shards: int = 0
    not_needed: int = 0
    """Planned items an adaptive decision made unnecessary (never computed, not missing)."""

    @property
    def missing(self) -> int:
        return max(0, self.planned - self.not_needed - self.found)

    @property
    def state(self) -> str:
        """``ok``, ``damaged`` (a damaged shard loses items) or ``missing`` (items not stored)."""
        if self.damaged_shards:
            return "damaged"
        return "missing" if self.missing else "ok"

    def describe(self) -> str:
        """``tiny-w4 × xstest: 36/40 items, 4 missing (1 damaged shard)``."""
        text = f"{self.variant} × {self.benchmark}: {self.found}/{self.planned} items, {self.missing} missing"
        if self.not_needed:
            text += f", {self.not_needed} not needed (decided early)"
        shards = []
        if self.damaged_shards:
            shards.append(f"{self.damaged_shards} damaged shard(s)")
        if self.missing_shards:
            shards.append(f"{self.missing_shards} shard(s) gone from the store")
        return text + (f" ({', '.join(shards)})" if shards else "")


@dataclass
class Completeness:
    """Every variant × benchmark of a sweep, with what its store holds of it."""

    pairs: list[PairCount] = field(default_factory=list)
    state: str | None = None
    """The manifest's state (``running``, ``finished``, ``interrupted``, ``failed``), when known."""

    @property
    def gaps(self) -> list[PairCount]:
        return [p for p in self.pairs if p.missing]

    @property
    def partial(self) -> bool:
        return bool(self.gaps)

    @property
    def planned(self) -> int:
        return sum(p.planned for p in self.pairs)

    @property
    def missing(self) -> int:
        return sum(p.missing for p in self.pairs)

    @property
    def not_needed(self) -> int:
        return sum(p.not_needed for p in self.pairs)

    def headline(self) -> str:
        """One line: how much is missing, where, and whether the sweep is still running."""
        if not self.partial and self.not_needed:
            needed = self.planned - self.not_needed
            return (
                f"complete: {needed}/{needed} needed items stored; {self.not_needed} of {self.planned} planned "
                "not needed (adaptive decisions reached early)"
            )
        if not self.partial:
            return f"complete: {self.planned}/{self.planned} planned items stored"
        running = f"; the sweep is {self.state}" if self.state and self.state != "finished" else ""
        return (
            f"PARTIAL: {self.missing} of {self.planned} planned items missing in {len(self.gaps)} of "
            f"{len(self.pairs)} variant × benchmark pair(s){running}"
        )

    def lines(self) -> list[str]:
        """The headline, then one line per variant × benchmark that misses items."""
        return [self.headline(), *(f"  {p.describe()}" for p in self.gaps)]

    def tags(self) -> dict[str, str]:
        """What MLflow records of a partial report on the parent run."""
        return {
            PARTIAL_TAG: "true" if self.partial else "false",
            "qtrust.report.missing_items": str(self.missing),
            "qtrust.report.planned_items": str(self.planned),
        }


def shard_counts(health: FolderHealth | None) -> dict[tuple[str, str], tuple[int, int]]:
    """(variant, benchmark) -> (damaged shards, missing shards) of a generations folder's check."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for problem in health.problems if health else []:
        names = partition_names(problem.partition)
        pair = (names.get("variant", ""), names.get("benchmark", ""))
        damaged, missing = out.get(pair, (0, 0))
        if problem.problem == "damaged":
            damaged += 1
        else:
            missing += 1
        out[pair] = (damaged, missing)
    return out


def not_needed(adaptive: AdaptiveSummary | None, variant: str, benchmark: str, planned: int) -> int:
    """Of a variant × benchmark's ``planned`` items, those an adaptive sweep did not need: a pair whose
    decision is final needs the items it computed; a reference needs those stored for the benchmark
    once every pair compared with it there is final. 0 otherwise (not adaptive, still running)."""
    if adaptive is None:
        return 0
    pair = adaptive.pair(variant, benchmark)
    if pair is not None:
        return max(0, planned - pair.computed) if pair.final else 0
    bench = adaptive.benchmarks.get(benchmark)
    if bench is None or variant not in bench.references:
        return 0
    compared = [p for p in adaptive.pairs if p.reference == variant and p.benchmark == benchmark]
    if not compared or not all(p.final for p in compared):
        return 0
    return max(0, planned - bench.references[variant])


def completeness(
    results: list[ResultRow],
    health: FolderHealth | None = None,
    state: str | None = None,
    adaptive: AdaptiveSummary | None = None,
) -> Completeness:
    """Per variant × benchmark (ensembles follow their members), from scored results and a store check;
    ``adaptive``: the sweep's adaptive summary (:func:`not_needed` items are not missing)."""
    shards = shard_counts(health)
    pairs = []
    for row in results:
        if row.kind != "variant":
            continue
        damaged, missing = shards.get((row.name, row.benchmark), (0, 0))
        spared = not_needed(adaptive, row.name, row.benchmark, row.n_planned)
        pairs.append(PairCount(row.name, row.benchmark, row.n_planned, row.n_items, damaged, missing, spared))
    return Completeness(pairs, state)
