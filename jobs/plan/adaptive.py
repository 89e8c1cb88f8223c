"""Which comparisons of a sweep stop early, and in what order their items run.

A benchmark entry is *adaptive* when the sweep's ``adaptive:`` (or its own ``adaptive:``) says so and a
valid sequential rule exists for its primary metric: the metric must be a mean of per-item values in
``[0, 1]`` (accuracy, exact match, token F1, refusal/unsafe/attack-success rates…), read from rule
labels. Everything else runs in full, with the reason (:attr:`AdaptivePlan.full_runs`):

* a primary metric that is not an item mean (fairness gaps, composites, knowledge scores) — a
  difference of group rates or a ratio has no per-item difference to bound;
* a judged benchmark — its labels come from a judge after generation (not sequential in this release);
* a model with a single variant — nothing to compare with.

Each adaptive benchmark's items run in one fixed random order: by the sha256 of the item id (ties by
file position), the hash rank ``limit`` uses, so the order never depends on a seed, a shard size or
which variant asks. Every variant of a model is compared with the model's reference
(:func:`jobs.plan.naming.reference_variants`) on the same positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from jobs.plan.build import BenchmarkRun, Plan
from jobs.plan.labels import higher_is_better
from jobs.plan.naming import reference_variants
from jobs.spec.schema import AdaptiveSpec
from trust.benchmarks.base import rank_key
from trust.benchmarks.label_metrics import item_values
from trust.comparison.sequential import SequentialConfig
from trust.types import Item


@dataclass
class AdaptivePair:
    """One variant × benchmark compared with its reference."""

    variant: str
    reference: str
    benchmark: str


@dataclass
class AdaptiveBenchmarkPlan:
    """One adaptive benchmark: its settings, its item order and its pairs."""

    name: str
    run: BenchmarkRun
    settings: AdaptiveSpec
    config: SequentialConfig
    metric: str
    higher_is_better: bool | None
    order: list[int]
    """Item indices (into ``run.items``) in the fixed order."""
    pairs: list[AdaptivePair] = field(default_factory=list)

    @property
    def planned(self) -> int:
        return len(self.order)

    def ordered_keys(self, plan: Plan, variant: str) -> list[str]:
        """The variant's item keys in the fixed order."""
        keys = plan.keys_of(variant, self.name)
        return [keys[i] for i in self.order]


@dataclass
class AdaptivePlan:
    """The adaptive benchmarks of a sweep (empty when the sweep is not adaptive)."""

    benchmarks: dict[str, AdaptiveBenchmarkPlan] = field(default_factory=dict)
    full_runs: dict[str, str] = field(default_factory=dict)
    """Benchmark -> why it runs in full although adaptive settings apply to it."""

    def __bool__(self) -> bool:
        return bool(self.benchmarks)

    def covers(self, variant: str, benchmark: str) -> bool:
        """Whether the items of ``variant`` × ``benchmark`` are scheduled by the adaptive feed."""
        bench = self.benchmarks.get(benchmark)
        if bench is None:
            return False
        return any(variant in (p.variant, p.reference) for p in bench.pairs)


def fixed_order(run: BenchmarkRun) -> list[int]:
    """Item indices of ``run`` in the fixed random order (sha256 of the item id, ties by position)."""
    return sorted(range(len(run.items)), key=lambda i: (rank_key(run.items[i].id), i))


def _labelers(run: BenchmarkRun) -> list[Callable[[Item], str | None]]:
    """Labels the benchmark can really give an item: the right answer, what its parser makes of an empty
    answer, its first choice."""

    def parsed_empty(item: Item) -> str | None:
        try:
            return run.benchmark.parse(item, "")
        except Exception:  # a parser that needs more than an empty answer
            return None

    return [
        lambda item: item.reference if isinstance(item.reference, str) else None,
        parsed_empty,
        lambda item: item.choices[0] if item.choices else None,
    ]


def _item_mean_metric(run: BenchmarkRun, probe_items: int = 40) -> str | None:
    """Why the primary metric has no sequential rule (None: it is a mean of per-item values in [0, 1]).

    The per-item values must exist, lie in [0, 1], and be each item's own: an item's value computed with
    other items must equal its value alone (a weighted macro average, whose weights depend on which
    items were seen, fails this and runs in full).
    """
    metric = run.benchmark.primary_metric
    if not run.items:
        return "it has no items"
    items = run.items[:: max(1, len(run.items) // probe_items)][:probe_items]  # spread over the file
    found = False
    for labeler in _labelers(run):
        labels = {item.id: label for item in items if (label := labeler(item)) is not None}
        if not labels:
            continue
        try:
            together = item_values(run.benchmark, items, labels).get(metric)
        except Exception:  # this labelling cannot be scored; try the next
            continue
        if together is None:
            continue
        scored = [item for item in items if item.id in labels]
        alone = [item_values(run.benchmark, [item], {item.id: labels[item.id]})[metric][0] for item in scored]
        together = np.asarray(together, dtype=np.float64)
        alone_arr = np.asarray(alone, dtype=np.float64)
        same = np.array_equal(np.isnan(together), np.isnan(alone_arr)) and np.allclose(
            together[~np.isnan(together)], alone_arr[~np.isnan(alone_arr)]
        )
        if not same:
            return f"its primary metric {metric!r} weighs each item by the others (not a plain mean over items)"
        kept = together[~np.isnan(together)]
        if kept.size and (kept.min() < 0.0 or kept.max() > 1.0):
            return f"its primary metric {metric!r} has per-item values outside [0, 1]"
        found = True
    if not found:
        return f"its primary metric {metric!r} is not a mean over items (no per-item values)"
    return None


def adaptive_plan(plan: Plan) -> AdaptivePlan:
    """The sweep's adaptive benchmarks with their pairs; benchmarks that run in full get a reason."""
    out = AdaptivePlan()
    spec = plan.spec
    references = reference_variants(plan)
    for bench_spec in spec.benchmarks:
        settings = spec.adaptive_for(bench_spec)
        if settings is None:
            continue
        name = bench_spec.run_name
        run = plan.benchmarks[name]
        if bench_spec.judges or bench_spec.judge:
            out.full_runs[name] = "its labels come from a judge (judged benchmarks run in full)"
            continue
        why = _item_mean_metric(run)
        if why is not None:
            out.full_runs[name] = why
            continue
        pairs = [
            AdaptivePair(variant=v.name, reference=references[v.model.name], benchmark=name)
            for v in plan.variants.values()
            if v.model.name in references and v.name != references[v.model.name]
        ]
        if not pairs:
            out.full_runs[name] = "no model has a variant besides its reference"
            continue
        config = SequentialConfig(**settings.model_dump())
        metric = run.benchmark.primary_metric
        out.benchmarks[name] = AdaptiveBenchmarkPlan(
            name=name,
            run=run,
            settings=settings,
            config=config,
            metric=metric,
            higher_is_better=higher_is_better(run, metric),
            order=fixed_order(run),
            pairs=pairs,
        )
    return out


__all__ = ["AdaptiveBenchmarkPlan", "AdaptivePair", "AdaptivePlan", "adaptive_plan", "fixed_order"]
