"""The adaptive feed: each variant × benchmark comparison runs a round at a time until it is decided.

For every adaptive benchmark (:mod:`jobs.plan.adaptive`) the items run in one fixed order. Each
pair (a variant and its model's reference) holds a :class:`trust.comparison.sequential.SequentialPair`
that looks after positions ``round, 2·round, …``. The feed:

1. **replays** what is stored: answers of an earlier run (or the response cache) are labelled and fed
   through the same looks, so a resumed or re-run sweep reaches the same decisions from the same
   answers, and a raised ``max_items`` continues where the last run stopped;
2. **asks** for the positions an open pair needs — its next round plus one round of look-ahead (so
   the replicas are not idle while a round is being decided), for the variant and for the
   reference; the reference gets the most any of its open pairs needs, never more;
3. **looks** when both sides of a round are committed (labels by the benchmark's current parser,
   per-item values of the primary metric; an item whose answer is an error is left out of the
   pair), and decides: ``worse``/``better`` (the sequence excludes 0), ``equivalent`` (inside
   ±margin) or ``undecided`` (``max_items`` or the last item reached);
4. **closes** a variant's pool once none of its pairs is open, so the scheduler hands its room to
   pools still waiting (see ``Scheduler`` parking for pools that are open but idle).

A round with an item that failed (its shard's retries spent) *blocks* its pair: nothing is decided
on a hole; a resume computes the item and goes on. The feed never sends a key twice in one run and
never sends one that is stored, in flight, or computed by the sweep's non-adaptive shards.

The state is summarised as :class:`jobs.store.adaptive.AdaptiveSummary` (``<sweep>/adaptive.json``,
the manifest, MLflow).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jobs.pipeline.state import SweepState, now_iso
from jobs.plan.adaptive import AdaptiveBenchmarkPlan, AdaptivePlan
from jobs.plan.build import Plan, Shard
from jobs.plan.labels import label_for
from jobs.store.adaptive import AdaptiveBenchmark, AdaptiveSummary, PairDecision
from trust.benchmarks.label_metrics import item_values
from trust.comparison.sequential import Decision, SequentialPair

#: Rounds asked for beyond the one a pair waits on, so its replicas keep working while a round is decided.
LOOKAHEAD_ROUNDS = 1

#: A stored answer: (output, per-choice log-probabilities, error).
Answer = tuple[Any, Any, Any]


@dataclass
class _Side:
    """One variant's items of one adaptive benchmark, in the fixed order."""

    variant: str
    keys: list[str]
    values: np.ndarray
    valued: np.ndarray
    """Positions whose per-item value has been computed (NaN values included)."""
    wanted: int = 0
    """Positions ``[0, wanted)`` are needed."""
    submitted: int = 0
    """Positions ``[0, submitted)`` are stored, in flight or asked for."""
    replanned: bool = False
    """Its progress count was cut to what it computes (no open comparison needs it any more)."""

    @functools.cached_property
    def position(self) -> dict[str, int]:
        """Key -> its first position in the fixed order."""
        return {key: p for p, key in reversed(list(enumerate(self.keys)))}


@dataclass
class _Pair:
    variant: str
    reference: str
    bench: str
    sequential: SequentialPair
    blocked: bool = False
    decided_at: str | None = None
    note: str | None = None

    @property
    def open(self) -> bool:
        return not self.sequential.done and not self.blocked


@dataclass
class AdaptiveFeed:
    """See the module docstring."""

    plan: Plan
    adaptive: AdaptivePlan
    stored: dict[str, Answer] = field(default_factory=dict)
    """Item key -> stored answer (usable records of the store and the response cache)."""
    expected: set[str] = field(default_factory=set)
    """Keys the sweep's non-adaptive shards compute in this run (they arrive through :meth:`committed`)."""
    state: SweepState | None = None

    def __post_init__(self) -> None:
        self.sides: dict[tuple[str, str], _Side] = {}
        self.pairs: list[_Pair] = []
        self.in_flight: set[str] = set()
        self.failed_keys: set[str] = set()
        self.closed: set[str] = set()
        self.full_runs: dict[str, str] = dict(self.adaptive.full_runs)
        self.changed = True
        self._submit: Callable[[Shard], None] | None = None
        self._close: Callable[[str], None] | None = None
        self._withdraw: Callable[[str, Callable[[Shard], bool]], list[Shard]] | None = None
        self.withdrawn = 0
        """Items asked for and then taken back before they started (look-ahead a decision made unneeded)."""
        self._shard_counter: dict[tuple[str, str], int] = {}
        self.shards_submitted = 0
        self._summary: AdaptiveSummary | None = None
        self._stored_at_start = set(self.stored)
        for bench in self.adaptive.benchmarks.values():
            for pair in bench.pairs:
                for variant in (pair.variant, pair.reference):
                    if (bench.name, variant) not in self.sides:
                        n = bench.planned
                        self.sides[(bench.name, variant)] = _Side(
                            variant, bench.ordered_keys(self.plan, variant), np.full(n, np.nan), np.zeros(n, bool)
                        )
                self.pairs.append(_Pair(pair.variant, pair.reference, bench.name, SequentialPair(bench.config, n)))

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def from_records(
        cls, plan: Plan, adaptive: AdaptivePlan, records: Iterable[pd.DataFrame | None], state: SweepState | None = None
    ) -> AdaptiveFeed:
        """A feed over the usable stored answers in ``records`` (frames with item_key, output, logprobs, error)."""
        wanted = {key for side_keys in _all_keys(plan, adaptive) for key in side_keys}
        stored: dict[str, Answer] = {}
        for frame in records:
            if frame is None or frame.empty:
                continue
            frame = frame.reset_index(drop=True) if "item_key" in frame.columns else frame.reset_index()
            keys = frame["item_key"].to_numpy(dtype=object)
            mask = np.fromiter((k in wanted for k in keys), bool, len(keys))
            if "error" in frame.columns:
                mask &= frame["error"].isna().to_numpy()
            part = frame[mask]
            logprobs = part["logprobs"] if "logprobs" in part.columns else [None] * len(part)
            for key, output, lp in zip(part["item_key"], part["output"], logprobs):
                stored[key] = (output, lp, None)
        return cls(plan=plan, adaptive=adaptive, stored=stored, state=state)

    # -- the driver's side -------------------------------------------------------------------------
    @property
    def variants(self) -> list[str]:
        """Variants whose items of some benchmark this feed schedules."""
        return sorted({variant for (_bench, variant) in self.sides})

    def prime(self) -> None:
        """Replay the stored answers look by look and work out what is needed next (no Ray needed)."""
        self._advance_all()

    def variants_with_work(self) -> list[str]:
        """Variants the feed still has items to ask for (after :meth:`prime`)."""
        return sorted({side.variant for side in self.sides.values() if self._todo(side)})

    def attach(
        self,
        submit: Callable[[Shard], None],
        close: Callable[[str], None],
        withdraw: Callable[[str, Callable[[Shard], bool]], list[Shard]] | None = None,
    ) -> None:
        """Start sending work: ``submit`` queues a shard, ``close`` says a variant gets no more work,
        ``withdraw(variant, unwanted)`` takes back the variant's queued shards that ``unwanted`` picks."""
        self._submit, self._close, self._withdraw = submit, close, withdraw
        self._advance_all()

    def committed(self, rows: list[dict[str, Any]]) -> None:
        """A shard (adaptive or not) was committed: record its answers and look where a round is complete."""
        touched = False
        for row in rows:
            key = row.get("item_key")
            if key is None:
                continue
            self.in_flight.discard(key)
            self.expected.discard(key)
            self.stored[key] = (row.get("output"), row.get("logprobs"), row.get("error"))
            touched = True
        if touched:
            self._advance_all()

    def failed(self, keys: Iterable[str]) -> None:
        """A shard's last attempt failed: its keys block the pairs whose next round holds them."""
        for key in keys:
            self.in_flight.discard(key)
            self.expected.discard(key)
            self.failed_keys.add(key)
        self._advance_all()

    # -- the state machine -----------------------------------------------------------------------
    def _advance_all(self) -> None:
        self._summary = None
        for bench in self.adaptive.benchmarks.values():
            if bench.name in self.full_runs:
                continue
            for pair in self.pairs:
                if pair.bench == bench.name and pair.open:
                    self._advance(bench, pair)
            self._want_for_reference(bench)
            self._trim(bench)
        self._flush()
        self._close_finished()

    def _advance(self, bench: AdaptiveBenchmarkPlan, pair: _Pair) -> None:
        variant, reference = self.sides[(bench.name, pair.variant)], self.sides[(bench.name, pair.reference)]
        seq = pair.sequential
        while pair.open:
            start, stop = seq.used, seq.next_look
            keys = variant.keys[start:stop] + reference.keys[start:stop]
            if any(k in self.failed_keys for k in keys):
                pair.blocked = True
                pair.note = "items of its next round failed; `qtrust resume` computes them and goes on"
                self.changed = True
                return
            if not all(k in self.stored for k in keys):
                ahead = min(seq.cap, stop + LOOKAHEAD_ROUNDS * bench.config.round)
                variant.wanted = max(variant.wanted, ahead)
                return
            try:
                v = self._values(bench, variant, start, stop)
                r = self._values(bench, reference, start, stop)
                seq.look(v, r)
            except ValueError as err:
                self._run_in_full(bench, f"per-item values of {bench.metric!r} outside [0, 1] ({err})")
                return
            self.changed = True
            if seq.done:
                pair.decided_at = now_iso()

    def _want_for_reference(self, bench: AdaptiveBenchmarkPlan) -> None:
        """The reference needs what its most advanced open pair needs."""
        for pair in self.pairs:
            if pair.bench != bench.name or not pair.open:
                continue
            wanted = self.sides[(bench.name, pair.variant)].wanted
            reference = self.sides[(bench.name, pair.reference)]
            reference.wanted = max(reference.wanted, wanted)

    def _needed(self, bench: AdaptiveBenchmarkPlan, side: _Side) -> int:
        """Positions of ``side`` its open comparisons still need (0: none is open)."""
        wanted = [
            self.sides[(bench.name, p.variant)].wanted
            for p in self.pairs
            if p.bench == bench.name and p.open and side.variant in (p.variant, p.reference)
        ]
        return max(wanted, default=0)

    def _trim(self, bench: AdaptiveBenchmarkPlan) -> None:
        """Take back queued shards beyond what the open comparisons need (the look-ahead of a decided pair)."""
        for (name, variant), side in self.sides.items():
            if name != bench.name or bench.name in self.full_runs:
                continue
            needed = self._needed(bench, side)
            taken: list[Shard] = []
            if self._withdraw is not None and side.submitted > needed:
                position = side.position
                taken = self._withdraw(
                    variant,
                    lambda shard, needed=needed, position=position: (
                        shard.benchmark == bench.name and min(position.get(k, 0) for k in shard.keys) >= needed
                    ),
                )
                if taken:
                    first = min(position[k] for shard in taken for k in shard.keys)
                    for shard in taken:
                        self.in_flight.difference_update(shard.keys)
                        self.withdrawn += len(shard.keys)
                    self.shards_submitted -= len(taken)
                    side.submitted = min(side.submitted, first)
                    side.wanted = min(side.wanted, side.submitted)
            if not needed and (taken or not side.replanned):
                self._replan(bench, side)

    def _values(self, bench: AdaptiveBenchmarkPlan, side: _Side, start: int, stop: int) -> np.ndarray:
        """Per-item values of the primary metric at positions ``[start, stop)`` (NaN: no value)."""
        todo = [p for p in range(start, stop) if not side.valued[p]]
        if todo:
            run = bench.run
            items, labels, logprobs, positions = [], {}, {}, []
            for p in todo:
                output, lp, error = self.stored[side.keys[p]]
                side.valued[p] = True
                if error:
                    continue  # an error answer is left out of the comparison
                item = run.items[bench.order[p]]
                items.append(item)
                positions.append(p)
                labels[item.id] = label_for(run, item, output, lp, None)
                logprobs[item.id] = list(lp) if lp is not None else None
            if items:
                per_item = item_values(run.benchmark, items, labels, logprobs)[bench.metric]
                side.values[positions] = np.asarray(per_item, dtype=np.float64)
        return side.values[start:stop]

    def _run_in_full(self, bench: AdaptiveBenchmarkPlan, why: str) -> None:
        self.full_runs[bench.name] = why
        for pair in self.pairs:
            if pair.bench == bench.name and pair.open:
                pair.blocked = False
                pair.note = f"runs in full: {why}"
                pair.sequential.decision = Decision.UNDECIDED
        for (name, _variant), side in self.sides.items():
            if name == bench.name:
                side.wanted = len(side.keys)
        self.changed = True

    def _todo(self, side: _Side) -> bool:
        return any(
            k not in self.stored and k not in self.in_flight and k not in self.expected and k not in self.failed_keys
            for k in side.keys[side.submitted : side.wanted]
        )

    def _flush(self) -> None:
        if self._submit is None:
            return
        size = self.plan.spec.shard_size
        for (bench_name, variant), side in self.sides.items():
            if side.wanted <= side.submitted:
                continue
            bench = self.adaptive.benchmarks[bench_name]
            items, keys = [], []
            for p in range(side.submitted, side.wanted):
                key = side.keys[p]
                if key in self.stored or key in self.in_flight or key in self.expected or key in self.failed_keys:
                    continue
                self.in_flight.add(key)
                items.append(bench.run.items[bench.order[p]])
                keys.append(key)
            side.submitted = side.wanted
            for start in range(0, len(keys), size):
                index = self._shard_counter.get((variant, bench_name), 0)
                self._shard_counter[(variant, bench_name)] = index + 1
                self.shards_submitted += 1
                self._submit(Shard(variant, bench_name, index, items[start : start + size], keys[start : start + size]))

    def _close_finished(self) -> None:
        if self._close is None:
            return
        for variant in self.variants:
            if variant in self.closed:
                continue
            if any(p.open and variant in (p.variant, p.reference) for p in self.pairs):
                continue
            if any(self._todo(s) for s in self.sides.values() if s.variant == variant):
                continue  # a benchmark run in full still sends its items
            self.closed.add(variant)
            self._close(variant)

    def _replan(self, bench: AdaptiveBenchmarkPlan, side: _Side) -> None:
        """A side no open comparison needs: what it computes is what is stored or still in flight."""
        if self.state is None:
            return
        side.replanned = True  # what it computes only shrinks when shards are withdrawn: cut again then
        counts = self.state.counts.get((side.variant, bench.name))
        if counts is not None:
            coming = {k for k in side.keys if k in self.stored or k in self.in_flight}
            counts.planned = min(counts.planned, max(counts.done + counts.failed, len(coming)))

    # -- reading ---------------------------------------------------------------------------------
    def plan_lines(self) -> list[str]:
        """What the run is about to do, for the console (after :meth:`prime`)."""
        lines = []
        for bench in self.adaptive.benchmarks.values():
            s = bench.settings
            pairs = [p for p in self.pairs if p.bench == bench.name]
            decided = sum(1 for p in pairs if not p.open)
            cap = f", at most {s.max_items}" if s.max_items else ""
            lines.append(
                f"Adaptive {bench.name}: {len(pairs)} comparison(s) of {bench.metric} with the reference, "
                f"{bench.planned} item(s) each in rounds of {s.round} (decide from {s.min_items}{cap}; "
                f"{s.confidence:.0%} {s.method} sequence, margin ±{s.margin:g})"
                + (f"; {decided} decided by the stored answers" if decided else "")
            )
        for name, why in self.full_runs.items():
            lines.append(f"[yellow]Adaptive: {name} runs in full: {why}")
        return lines

    def items_at_most(self, variant: str) -> int:
        """Items of ``variant`` this run computes at most for the adaptive benchmarks (for progress bars):
        those asked for so far, and up to the cap of every comparison still open."""
        total = 0
        for (bench, name), side in self.sides.items():
            if name != variant:
                continue
            caps = [
                p.sequential.cap
                for p in self.pairs
                if p.bench == bench and p.open and variant in (p.variant, p.reference)
            ]
            upto = max([side.submitted, *caps])
            total += sum(1 for k in set(side.keys[:upto]) if k not in self._stored_at_start)
        return total

    @property
    def open_pairs(self) -> int:
        return sum(1 for p in self.pairs if p.open)

    def summary(self) -> AdaptiveSummary:
        """Where every pair stands (see :mod:`jobs.store.adaptive`); built once per change of state."""
        if self._summary is None:
            self._summary = self._build_summary()
        return self._summary

    def _build_summary(self) -> AdaptiveSummary:
        benchmarks: dict[str, AdaptiveBenchmark] = {}
        for bench in self.adaptive.benchmarks.values():
            s = bench.settings
            refs = sorted({p.reference for p in bench.pairs})
            benchmarks[bench.name] = AdaptiveBenchmark(
                metric=bench.metric,
                planned=bench.planned,
                confidence=s.confidence,
                margin=s.margin,
                min_items=s.min_items,
                max_items=s.max_items,
                round=s.round,
                method=s.method,
                references={r: self._computed(self.sides[(bench.name, r)]) for r in refs},
            )
        pairs = []
        for pair in self.pairs:
            bench = self.adaptive.benchmarks[pair.bench]
            seq = pair.sequential
            low, high = seq.interval()
            pairs.append(
                PairDecision(
                    variant=pair.variant,
                    reference=pair.reference,
                    benchmark=pair.bench,
                    metric=bench.metric,
                    higher_is_better=bench.higher_is_better,
                    decision=_word(seq.decision, bench.higher_is_better, pair.blocked),  # type: ignore[arg-type]
                    planned=bench.planned,
                    cap=seq.cap,
                    used=seq.used,
                    paired=seq.paired,
                    computed=self._computed(self.sides[(pair.bench, pair.variant)]),
                    delta=None if not seq.paired else _finite(seq.mean),
                    low=_finite(low),
                    high=_finite(high),
                    rounds=seq.rounds,
                    confidence=bench.settings.confidence,
                    margin=bench.settings.margin,
                    method=bench.settings.method,
                    decided_at=pair.decided_at,
                )
            )
        return AdaptiveSummary(pairs=pairs, benchmarks=benchmarks, full_runs=dict(self.full_runs))

    def _computed(self, side: _Side) -> int:
        return sum(1 for k in set(side.keys) if k in self.stored)


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _word(decision: Decision, higher_is_better: bool | None, blocked: bool) -> str:
    """A decision in the metric's own words: a lower mean is ``worse`` when higher is better, and so on."""
    if blocked and decision == Decision.CONTINUE:
        return "blocked"
    if decision == Decision.WORSE:  # the variant's mean is lower
        return {True: "worse", False: "better", None: "lower"}[higher_is_better]
    if decision == Decision.BETTER:
        return {True: "better", False: "worse", None: "higher"}[higher_is_better]
    return decision.value


def _all_keys(plan: Plan, adaptive: AdaptivePlan) -> Iterable[list[str]]:
    for bench in adaptive.benchmarks.values():
        for variant in {v for p in bench.pairs for v in (p.variant, p.reference)}:
            yield plan.keys_of(variant, bench.name)


__all__ = ["LOOKAHEAD_ROUNDS", "AdaptiveFeed"]
