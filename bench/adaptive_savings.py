"""Savings of adaptive early stopping, by replay on a complete stored sweep.

Usage (from the repository root)::

    .venv/bin/python bench/adaptive.py savings --store qtrust-runs/demo            # margin 0.02
    .venv/bin/python bench/adaptive.py savings --store qtrust-runs/demo --margin 0.02 0.05 --out report.md

A sweep that ran every item of every variant × benchmark holds the answers an adaptive sweep would
have asked for, so the adaptive decisions can be *replayed* from it. The pairs, their fixed item
order (the hash rank ``limit`` uses), the primary metric and its direction come from
:func:`jobs.plan.adaptive.adaptive_plan`, as in a real adaptive sweep; each pair's per-item values
(the primary metric's, an error answer left out) are fed to
:func:`trust.comparison.sequential.replay_pair` — the :class:`~trust.comparison.sequential.SequentialPair`
the adaptive feed runs — a round at a time until it decides.

Reported per pair: the decision, the items it used of those planned, ``Δ`` with its confidence
sequence, against the *full-data paired test*: the mean of the per-item differences over every item
with a 95% t interval, ``worse``/``better`` where that interval excludes 0, ``equivalent`` where it
lies inside ±margin, else ``undecided``. Totals: items evaluated ÷ the full sweep and the share of
pairs whose decisions agree. Items evaluated, per benchmark: each variant's ``used`` positions, the
reference's the most any of its variants used (it runs on every item one of them still needs); the
*look-ahead* count adds the round the adaptive feed asks for ahead of each look (capped at the
planned items), as a real sweep computes it. The full sweep is every variant's and reference's planned
items of the benchmarks replayed.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402

from jobs.plan.adaptive import (  # noqa: E402
    AdaptiveBenchmarkPlan,
    AdaptivePair,
    AdaptivePlan,
    adaptive_plan,
    fixed_order,
)
from jobs.plan.build import Plan  # noqa: E402
from jobs.plan.labels import higher_is_better  # noqa: E402
from jobs.plan.naming import reference_variants  # noqa: E402
from jobs.results.scoring import ResultRow  # noqa: E402
from jobs.results.stored import StoredSweep, load_stored_sweep  # noqa: E402
from jobs.spec.schema import AdaptiveSpec  # noqa: E402
from trust.benchmarks.label_metrics import item_values  # noqa: E402
from trust.comparison.sequential import Decision, SequentialConfig, replay_pair  # noqa: E402

#: The yardstick's confidence (a fixed-n interval on all items).
FULL_CONFIDENCE = 0.95


class IncompleteSweep(Exception):
    """The stored sweep lacks answers: a replay needs every item of every variant (one line for the user)."""


@dataclass
class FullTest:
    """The full-data paired test of one pair: every item, a 95% t interval of the mean difference."""

    n: int
    delta: float
    low: float
    high: float
    decision: Decision


@dataclass
class PairReplay:
    """One variant × benchmark replayed: the sequential decision next to the full-data test."""

    variant: str
    reference: str
    benchmark: str
    metric: str
    higher_is_better: bool | None
    planned: int
    used: int
    paired: int
    decision: Decision
    delta: float
    low: float
    high: float
    full: FullTest
    margin: float
    round: int
    flip_rate: float | None = None
    """The planted flip rate of a fake-engine variant (``engine_options.plant``), when it has one."""

    @property
    def lookahead(self) -> int:
        """Items the adaptive feed may have computed for the variant: ``used`` plus the round it asks for
        ahead of each look, capped at ``planned`` (an upper bound)."""
        return min(self.planned, self.used + self.round)

    @property
    def agree(self) -> bool:
        """The sequential decision is the full-data test's."""
        return self.decision == self.full.decision

    @property
    def full_inside_margin(self) -> bool:
        """Whether the full-data interval lies inside ±margin: there ``equivalent`` holds as well, even where
        the interval also excludes 0 (the full-data test then says ``worse``/``better``, by precedence)."""
        return -self.margin <= self.full.low and self.full.high <= self.margin

    @property
    def compatible(self) -> bool:
        """The same decision, or ``equivalent`` where the full-data interval lies inside ±margin."""
        return self.agree or (self.decision == Decision.EQUIVALENT and self.full_inside_margin)

    @property
    def full_within_margin(self) -> bool:
        """Whether the full-data Δ itself lies within ±margin (where a disagreement is allowed)."""
        return abs(self.full.delta) <= self.margin


@dataclass
class Replay:
    """A whole stored sweep replayed under one :class:`SequentialConfig`."""

    store: str
    config: SequentialConfig
    pairs: list[PairReplay] = field(default_factory=list)
    planned: dict[str, int] = field(default_factory=dict)
    """Benchmark -> its items (each variant's and reference's planned count)."""
    full_runs: dict[str, str] = field(default_factory=dict)
    """Benchmarks (or, with ``partial``, pairs) left out of the replay, with the reason (not an item mean, …)."""

    def evaluated(self, lookahead: bool = False) -> int:
        """Items an adaptive sweep evaluates: every variant's, and each reference's most over its variants."""
        total = 0
        for bench in self.planned:
            pairs = [p for p in self.pairs if p.benchmark == bench]
            cost = [p.lookahead if lookahead else p.used for p in pairs]
            total += sum(cost)
            for ref in {p.reference for p in pairs}:
                total += max(c for p, c in zip(pairs, cost) if p.reference == ref)
        return total

    @property
    def full(self) -> int:
        """Items the full sweep evaluated for the replayed benchmarks (variants and references)."""
        return sum(
            planned * (len([p for p in self.pairs if p.benchmark == bench]) + self._references(bench))
            for bench, planned in self.planned.items()
        )

    def _references(self, bench: str) -> int:
        return len({p.reference for p in self.pairs if p.benchmark == bench})

    def fraction(self, lookahead: bool = False) -> float:
        """Items evaluated ÷ the full sweep (target ≤ 0.5)."""
        return self.evaluated(lookahead) / self.full if self.full else math.nan

    @property
    def agreement(self) -> float:
        """Share of pairs whose sequential decision is the full-data test's (target ≥ 95%)."""
        return sum(p.agree for p in self.pairs) / len(self.pairs) if self.pairs else math.nan

    @property
    def compatibility(self) -> float:
        """Share of pairs whose decision the full data bear out (:attr:`PairReplay.compatible`)."""
        return sum(p.compatible for p in self.pairs) / len(self.pairs) if self.pairs else math.nan

    @property
    def disagreements(self) -> list[PairReplay]:
        return [p for p in self.pairs if not p.agree]


def full_data_test(variant: np.ndarray, reference: np.ndarray, margin: float) -> FullTest:
    """The paired t test on every item where both sides have a value (NaN: none)."""
    both = ~np.isnan(variant) & ~np.isnan(reference)
    d = variant[both] - reference[both]
    n = int(d.size)
    if n < 2:
        return FullTest(n, float(d.mean()) if n else math.nan, math.nan, math.nan, Decision.UNDECIDED)
    mean = float(d.mean())
    half = float(scipy.stats.t.ppf(0.5 + FULL_CONFIDENCE / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
    if high < 0.0:
        decision = Decision.WORSE
    elif low > 0.0:
        decision = Decision.BETTER
    elif low >= -margin and high <= margin:
        decision = Decision.EQUIVALENT
    else:
        decision = Decision.UNDECIDED
    return FullTest(n, mean, low, high, decision)


def word(decision: Decision, higher_is_better: bool | None) -> str:
    """A decision in the metric's own words (a lower mean is ``worse`` when higher is better; as the pipeline)."""
    if decision == Decision.WORSE:
        return {True: "worse", False: "better", None: "lower"}[higher_is_better]
    if decision == Decision.BETTER:
        return {True: "better", False: "worse", None: "higher"}[higher_is_better]
    return decision.value


def replay_plan(plan: Plan, settings: AdaptiveSpec) -> AdaptivePlan:
    """The adaptive plan ``settings`` would give the stored sweep (every benchmark's own ``adaptive:`` dropped).

    One correction: :func:`jobs.plan.adaptive.adaptive_plan` probes a benchmark's per-item values
    with the label ``""``, which the safety-verdict benchmarks (``xsafety``, ``opensafetymini``)
    reject, so it runs their item-mean ``safe_rate`` in full. Such a benchmark is probed again here
    with the label its own parser gives an empty answer, and replayed when that probe finds the metric.
    """
    benchmarks = [b.model_copy(update={"adaptive": None}) for b in plan.spec.benchmarks]
    spec = plan.spec.model_copy(update={"adaptive": settings, "benchmarks": benchmarks})
    planned = dataclasses.replace(plan, spec=spec)
    adaptive = adaptive_plan(planned)
    for name, why in list(adaptive.full_runs.items()):
        run = plan.benchmarks[name]
        if "not a mean over items" not in why or not run.items:
            continue
        probe = run.items[:1]
        metric = run.benchmark.primary_metric
        if metric not in item_values(run.benchmark, probe, {probe[0].id: run.benchmark.parse(probe[0], "")}):
            continue
        references = reference_variants(plan)
        pairs = [
            AdaptivePair(variant=v.name, reference=references[v.model.name], benchmark=name)
            for v in plan.variants.values()
            if v.model.name in references and v.name != references[v.model.name]
        ]
        if not pairs:
            continue
        adaptive.benchmarks[name] = AdaptiveBenchmarkPlan(
            name=name,
            run=run,
            settings=settings,
            config=SequentialConfig(**settings.model_dump()),
            metric=metric,
            higher_is_better=higher_is_better(run, metric),
            order=fixed_order(run),
            pairs=pairs,
        )
        del adaptive.full_runs[name]
    return adaptive


def ordered_values(bench: AdaptiveBenchmarkPlan, row: ResultRow) -> np.ndarray:
    """The primary metric's per-item values of one stored result, in the fixed order (NaN: no value).

    An item without a stored answer, or whose answer is an error, has no value (the adaptive feed
    leaves an error out of the comparison).
    """
    run = bench.run
    frame = row.frame
    values = np.full(len(run.items), np.nan)
    if frame is None or frame.empty:
        return values[bench.order]
    ok = frame["error"].isna().to_numpy()
    ids = frame["item_id"].to_numpy(dtype=object)[ok]
    labels = dict(zip(ids, frame["label"].to_numpy(dtype=object)[ok]))
    logprobs = None
    if run.benchmark.task == "loglikelihood":
        logprobs = dict(zip(ids, frame["logprobs"].to_numpy(dtype=object)[ok]))
    if labels:
        per_item = item_values(run.benchmark, run.items, labels, logprobs)[bench.metric]
        scored = [i for i, item in enumerate(run.items) if item.id in labels]
        values[scored] = np.asarray(per_item, dtype=np.float64)
    return values[bench.order]


def flip_rates(plan: Plan) -> dict[str, float]:
    """Variant -> its planted flip rate (fake-engine models with ``engine_options.plant``)."""
    out: dict[str, float] = {}
    for variant in plan.variants.values():
        plant = variant.model.engine_options.get("plant") if variant.model.engine == "fake" else None
        if isinstance(plant, dict):
            out[variant.name] = float(dict(plant.get("flip_rates") or {}).get(variant.name, 0.0))
    return out


def replay_sweep(stored: StoredSweep, config: SequentialConfig, store: str = "", partial: bool = False) -> Replay:
    """Replay every adaptive pair of a stored sweep under ``config``.

    ``partial``: a sweep still running; only the pairs whose variant and reference hold every answer
    are replayed (the others are listed in :attr:`Replay.full_runs`, and count in no total).
    """
    settings = AdaptiveSpec(**config.model_dump(exclude={"grid"}))
    adaptive = replay_plan(stored.plan, settings)
    rows = {(r.name, r.benchmark): r for r in stored.results if r.kind == "variant"}
    planted = flip_rates(stored.plan)
    out = Replay(store=store, config=config, full_runs=dict(adaptive.full_runs))
    for bench in adaptive.benchmarks.values():
        out.planned[bench.name] = bench.planned
        cache: dict[str, np.ndarray] = {}

        def values_of(name: str, bench: AdaptiveBenchmarkPlan = bench, cache: dict[str, np.ndarray] = cache) -> Any:
            if name not in cache:
                cache[name] = ordered_values(bench, rows[(name, bench.name)])
            return cache[name]

        for pair in bench.pairs:
            sides = [rows[(name, bench.name)] for name in (pair.variant, pair.reference)]
            if partial and not all(row.complete for row in sides):
                out.full_runs[f"{pair.variant} × {bench.name}"] = "incomplete in the store (the sweep is still running)"
                continue
            v, r = values_of(pair.variant), values_of(pair.reference)
            seq = replay_pair(v, r, config)
            low, high = seq.interval()
            out.pairs.append(
                PairReplay(
                    variant=pair.variant,
                    reference=pair.reference,
                    benchmark=bench.name,
                    metric=bench.metric,
                    higher_is_better=bench.higher_is_better,
                    planned=bench.planned,
                    used=seq.used,
                    paired=seq.paired,
                    decision=seq.decision,
                    delta=seq.mean,
                    low=low,
                    high=high,
                    full=full_data_test(v, r, config.margin),
                    margin=config.margin,
                    round=config.round,
                    flip_rate=planted.get(pair.variant),
                )
            )
    return out


def incomplete(stored: StoredSweep) -> list[str]:
    """Variant × benchmark results with fewer stored answers than planned (a replay needs complete sweeps)."""
    return [
        f"{r.name} × {r.benchmark}: {r.n_items} of {r.n_planned}"
        for r in stored.results
        if r.kind == "variant" and r.n_items < r.n_planned
    ]


def _num(value: float, fmt: str = "+.3f") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, fmt)


def render(replay: Replay) -> str:
    """One setting's replay as Markdown: a row per pair, then the totals."""
    c = replay.config
    planted = any(p.flip_rate is not None for p in replay.pairs)
    head = "| variant | benchmark | " + ("flip rate | " if planted else "")
    head += "decision | used / planned | Δ [sequence] | full-data Δ [95% CI] | full decision | agree |"
    lines = [
        f"### confidence {c.confidence}, margin {c.margin}, min_items {c.min_items}, round {c.round}, {c.method}",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for p in replay.pairs:
        flip = f"{p.flip_rate:g} | " if planted and p.flip_rate is not None else ("– | " if planted else "")
        lines.append(
            f"| {p.variant} | {p.benchmark} | {flip}{word(p.decision, p.higher_is_better)} | {p.used} / {p.planned} "
            f"| {_num(p.delta)} [{_num(p.low)}, {_num(p.high)}] "
            f"| {_num(p.full.delta)} [{_num(p.full.low)}, {_num(p.full.high)}] "
            f"| {word(p.full.decision, p.higher_is_better)} | {'yes' if p.agree else 'no'} |"
        )
    lines += ["", *summary_lines(replay)]
    return "\n".join(lines) + "\n"


def summary_lines(replay: Replay) -> list[str]:
    """The totals: items evaluated ÷ full (with and without look-ahead), agreement, disagreements."""
    frac, ahead = replay.fraction(), replay.fraction(lookahead=True)
    lines = [
        f"Items evaluated ÷ full sweep: **{frac:.3f}** ({replay.evaluated()} of {replay.full}); with one round of "
        f"look-ahead per pair, as the adaptive feed computes: **{ahead:.3f}** ({replay.evaluated(True)}) "
        f"— target ≤ 0.5: {'met' if ahead <= 0.5 else 'not met'}.",
        f"Decisions agreeing with the full-data paired test: **{sum(p.agree for p in replay.pairs)} of "
        f"{len(replay.pairs)}** ({100 * replay.agreement:.1f}%) — target ≥ 95%: "
        f"{'met' if replay.agreement >= 0.95 else 'not met'}; every disagreement where the full-data Δ lies "
        f"within ±margin: {'yes' if all(p.full_within_margin for p in replay.disagreements) else '**no**'}.",
        f"Decisions the full data bear out (the same, or equivalent where the full-data interval lies inside "
        f"±margin, so that equivalent holds too): **{sum(p.compatible for p in replay.pairs)} of "
        f"{len(replay.pairs)}** ({100 * replay.compatibility:.1f}%).",
    ]
    for p in replay.disagreements:
        where = "within" if p.full_within_margin else "**outside**"
        inside = "; its interval lies inside ±margin: equivalent holds too" if p.full_inside_margin else ""
        lines.append(
            f"- disagreement: {p.variant} × {p.benchmark}: {word(p.decision, p.higher_is_better)} at {p.used} items, "
            f"full data {word(p.full.decision, p.higher_is_better)} (Δ {_num(p.full.delta)} "
            f"[{_num(p.full.low)}, {_num(p.full.high)}], {where} ±{p.margin:g}{inside})"
        )
    for name, why in replay.full_runs.items():
        lines.append(f"- {name} not replayed: {why}")
    return lines


def run_savings(
    store: str,
    margins: Sequence[float],
    *,
    confidence: float = 0.95,
    min_items: int = 100,
    round_items: int = 50,
    method: str = "betting",
    data_dir: Path | None = None,
    partial: bool = False,
) -> list[Replay]:
    """Load the stored sweep once and replay it at every margin (``partial``: see :func:`replay_sweep`)."""
    stored = load_stored_sweep(store, data_dir)
    missing = incomplete(stored)
    if missing and not partial:
        raise IncompleteSweep(
            f"{store}: the sweep is not complete ({'; '.join(missing[:3])}); a replay needs every answer — "
            "finish it with qtrust resume (or pass --partial to replay the complete pairs only)"
        )
    return [
        replay_sweep(
            stored,
            SequentialConfig(confidence=confidence, margin=m, min_items=min_items, round=round_items, method=method),
            store,
            partial,
        )
        for m in margins
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``bench/adaptive.py savings``: replay a stored sweep, print the tables, write them with ``--out``."""
    import argparse
    import os
    import platform
    import time
    from datetime import datetime, timezone

    from jobs.results.stored import StoredSweepError

    parser = argparse.ArgumentParser(prog="bench/adaptive.py savings", description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="folder of a complete stored sweep (e.g. qtrust-runs/demo)")
    parser.add_argument("--margin", type=float, nargs="+", default=[0.02], help="equivalence margin(s)")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--min-items", type=int, default=100)
    parser.add_argument("--round", type=int, default=50)
    parser.add_argument("--method", choices=("betting", "bernstein"), default="betting")
    parser.add_argument("--data-dir", type=Path, default=None, help="benchmark data (when the store holds no plan)")
    parser.add_argument("--partial", action="store_true", help="a sweep still running: replay its complete pairs")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here (Markdown)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    started = time.perf_counter()
    try:
        replays = run_savings(
            args.store,
            args.margin,
            confidence=args.confidence,
            min_items=args.min_items,
            round_items=args.round,
            method=args.method,
            data_dir=args.data_dir,
            partial=args.partial,
        )
    except (IncompleteSweep, StoredSweepError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = " ".join(["bench/adaptive.py", "savings", *(argv if argv is not None else sys.argv[2:])])
    text = (
        f"## Replay of `{args.store}`\n\n"
        f"`.venv/bin/python {command}` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node() or 'this machine'} ({platform.machine()}, {os.cpu_count()} CPU cores), "
        f"{time.perf_counter() - started:.0f} s.\n\n" + "\n".join(render(r) for r in replays)
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


__all__ = ["FullTest", "PairReplay", "Replay", "full_data_test", "replay_sweep", "run_savings", "render"]
