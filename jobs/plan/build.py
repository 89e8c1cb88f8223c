"""Expand a validated sweep into variants, benchmark items and item keys (shards are cut from
what is missing, in :meth:`Plan.shards`).
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cluster.engines.selection import EngineChoice, choose_engine
from cluster.models.sources import model_identity
from cluster.variants.key import variant_key
from cluster.variants.source import VARIANT_CACHE_ENV
from jobs.plan.calibration import CalibrationSet, resolve_calibration
from jobs.plan.keys import CONTEXT_CHARS, _digest, context_digest, request_digest
from jobs.spec.checks import local_checkpoint_info
from jobs.spec.schema import (
    NOT_QUANTIZATION,
    BenchmarkSpec,
    EnsembleSpec,
    ModelSpec,
    RecipeSpec,
    ResourcesSpec,
    SweepSpec,
)
from trust.benchmarks.base import Benchmark
from trust.benchmarks.catalog import get_benchmark
from trust.types import Item


@dataclass
class Variant:
    """One model × recipe pair, served by its own worker."""

    name: str
    model: ModelSpec
    recipe: RecipeSpec
    identity: str
    calibration: CalibrationSet | None = None
    checkpoint_bits: int | None = None
    """Bits read from a prequantized checkpoint's config (when the recipe does not give them)."""
    quality_probe: bool = True
    variant_cache: str | None = None
    engine_choice: EngineChoice | None = None
    """The engine resolved for this variant (``auto`` decided on the driver, with its reason)."""
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    """Replicas, placement and scheduling of this variant's worker pool (never keyed)."""

    @property
    def engine(self) -> str:
        """The engine that serves this variant: ``hf``, ``vllm`` or ``fake`` (part of every shard key)."""
        return self.engine_choice.engine if self.engine_choice else self.model.engine

    @property
    def key(self) -> str:
        """What the variant computes: model identity, recipe, calibration text and dtype."""
        return variant_key(
            self.identity,
            self.recipe.key_fields(),
            self.calibration.digest if self.calibration else None,
            self.model.dtype,
        )

    @property
    def precision_bits(self) -> float:
        if self.recipe.quant_method.prequantized and self.recipe.bits is None and self.checkpoint_bits:
            return float(self.checkpoint_bits)
        return self.recipe.precision_bits

    def worker_config(self) -> dict[str, Any]:
        """What a worker needs to load this variant (plain data, sent through Ray)."""
        source = self.model.source
        if Path(source).expanduser().is_dir():  # workers may run in another working directory
            source = str(Path(source).expanduser().resolve())
        return {
            "variant": self.name,
            "source": source,
            "revision": self.model.revision,
            "dtype": self.model.dtype,
            "trust_remote_code": self.model.trust_remote_code,
            "engine": self.engine,
            "engine_options": dict(self.model.engine_options),
            "hf": self.model.hf.model_dump(),
            "vllm": self.model.vllm.model_dump(),
            "recipe": self.recipe.model_dump(exclude=NOT_QUANTIZATION),
            "variant_key": self.key,
            "calibration_texts": list(self.calibration.texts) if self.calibration else None,
            "variant_cache": self.variant_cache,
            "quality_probe": self.quality_probe,
        }


@dataclass
class BenchmarkRun:
    """A benchmark with its options and the (limited) items of this sweep."""

    spec: BenchmarkSpec
    benchmark: Benchmark
    items: list[Item]
    max_new_tokens: int

    @property
    def name(self) -> str:
        return self.spec.run_name

    _frame: pd.DataFrame | None = field(default=None, repr=False)
    _digest: str | None = field(default=None, repr=False)
    _arrays: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def items_frame(self) -> pd.DataFrame:
        """The evaluated items as a table (logged to MLflow as the run's dataset input); built once."""
        if self._frame is None:
            self._frame = self._build_frame()
        return self._frame

    def item_arrays(self) -> dict[str, np.ndarray]:
        """The columns of :meth:`items_frame` as arrays of Python objects (what scoring indexes into); built once."""
        if self._arrays is None:
            frame = self.items_frame()
            self._arrays = {c: frame[c].to_numpy(dtype=object) for c in frame.columns}
        return self._arrays

    def _build_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "item_id": [it.id for it in self.items],
                "prompt": [json.dumps(it.messages, ensure_ascii=False) for it in self.items],
                "reference": [it.reference for it in self.items],
                "choices": [json.dumps(it.choices, ensure_ascii=False) if it.choices else None for it in self.items],
                "attributes": [json.dumps(it.attributes, ensure_ascii=False, sort_keys=True) for it in self.items],
            }
        )

    def digest(self, data_dir: Path) -> str:
        """Digest of the source files and of the selected item ids (the files are hashed once)."""
        if self._digest is None:
            self._digest = _digest([self.benchmark.dataset_digest(data_dir), [it.id for it in self.items]])
        return self._digest


@dataclass
class Shard:
    """Items of one variant and one benchmark computed (and committed) together.

    Shards are cut from the items that are missing when a run starts, so their boundaries are not
    part of any key: a new ``shard_size`` or a raised limit reuses every stored item.
    """

    variant: str
    benchmark: str
    index: int
    items: list[Item]
    keys: list[str]

    @property
    def id(self) -> str:
        return f"{self.variant}/{self.benchmark}/{self.index:05d}"


@dataclass
class Plan:
    """Variants × benchmarks with the item key of every (variant, item) request."""

    spec: SweepSpec
    variants: dict[str, Variant]
    benchmarks: dict[str, BenchmarkRun]
    keys: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    """(variant, benchmark) -> item keys, parallel to ``benchmarks[benchmark].items``."""
    judges: dict[str, Any] = field(default_factory=dict)
    """Judge name -> :class:`jobs.plan.judges.PlannedJudge` (the judges some benchmark lists)."""

    def keys_of(self, variant: str, benchmark: str) -> list[str]:
        return self.keys[(variant, benchmark)]

    @property
    def n_requests(self) -> int:
        """(variant, item) pairs the sweep scores (an item shared by two aliases counts twice)."""
        return sum(len(k) for k in self.keys.values())

    def unique_keys(self) -> set[str]:
        """Every distinct item key of the sweep (what the store must hold)."""
        out: set[str] = set()
        for keys in self.keys.values():
            out.update(keys)
        return out

    def ensembles_of(self, model: ModelSpec) -> list[tuple[EnsembleSpec, list[Variant]]]:
        """The ensembles ``model`` has every member of, with the member variants."""
        out = []
        for ens in self.spec.ensembles:
            names = [self.spec.variant_name(model, self.spec.recipe(m)) for m in ens.members]
            if all(n in self.variants for n in names):
                out.append((ens, [self.variants[n] for n in names]))
        return out

    def shards(
        self, stored: set[str] | frozenset[str] = frozenset(), skip: Callable[[str, str], bool] | None = None
    ) -> list[Shard]:
        """The items whose key is not in ``stored``, cut into shards of ``spec.shard_size``.

        Each key is computed once per sweep even when several benchmarks (aliases with the same
        prompts) ask for it; the first benchmark in sweep order gets it. ``skip(variant, benchmark)``
        leaves a variant × benchmark out (an adaptive sweep's feed asks for those items itself).
        """
        with bulk_allocation():
            return self._shards(stored, skip)

    def _shards(self, stored: set[str] | frozenset[str], skip: Callable[[str, str], bool] | None = None) -> list[Shard]:
        size = self.spec.shard_size
        out: list[Shard] = []
        for variant in self.variants:
            planned: set[str] = set()
            for bench_name, run in self.benchmarks.items():
                if skip is not None and skip(variant, bench_name):
                    continue
                keys = self.keys[(variant, bench_name)]
                todo_items: list[Item] = []
                todo_keys: list[str] = []
                unique = set(keys)
                if len(unique) == len(keys) and unique.isdisjoint(stored) and unique.isdisjoint(planned):
                    todo_items, todo_keys = run.items, keys  # nothing stored, nothing repeated: every item
                    planned |= unique
                else:
                    for item, key in zip(run.items, keys):
                        if key in stored or key in planned:
                            continue
                        planned.add(key)
                        todo_items.append(item)
                        todo_keys.append(key)
                for index, start in enumerate(range(0, len(todo_keys), size)):
                    out.append(
                        Shard(
                            variant,
                            bench_name,
                            index,
                            todo_items[start : start + size],
                            todo_keys[start : start + size],
                        )
                    )
        return out


def load_benchmarks(spec: SweepSpec, data_dir: Path, limit: int | None = None) -> dict[str, BenchmarkRun]:
    """Load every benchmark's items (raises ``BenchmarkDataError`` when files are missing)."""
    runs = {}
    for bench_spec in spec.benchmarks:
        benchmark = get_benchmark(bench_spec.name, bench_spec.options, bench_spec.definition)
        effective = bench_spec.limit
        if limit is not None:
            effective = min(limit, effective) if effective is not None else limit
        items = benchmark.load(data_dir, effective)
        suggested = getattr(getattr(benchmark, "definition", None), "max_new_tokens", None)
        runs[bench_spec.run_name] = BenchmarkRun(
            spec=bench_spec,
            benchmark=benchmark,
            items=items,
            max_new_tokens=bench_spec.max_new_tokens or suggested or spec.generation.max_new_tokens,
        )
    return runs


def build_variants(
    spec: SweepSpec, data_dir: Path | None, variant_cache: str | None = None, *, calibration: bool = True
) -> dict[str, Variant]:
    """Every (model, recipe) of the sweep, with identities and calibration sets resolved.

    ``calibration=False`` leaves calibration sets out (their texts are needed to quantize and to key a
    variant, not to score stored answers whose keys come from elsewhere, e.g. the store's plan snapshot).
    """
    identities = {m.name: model_identity(m.source, m.revision) for m in spec.models}
    calibrations: dict[str, CalibrationSet] = {}
    variants = {}
    for model, recipe in spec.variant_pairs():
        name = spec.variant_name(model, recipe)
        drawn = None
        if recipe.calibration is not None and calibration:
            if recipe.name not in calibrations:
                calibrations[recipe.name] = resolve_calibration(recipe.calibration, data_dir)
            drawn = calibrations[recipe.name]
        identity = identities[model.name]
        if recipe.checkpoint_source:
            identity = model_identity(recipe.checkpoint_source, recipe.revision)
        info = local_checkpoint_info(model, recipe)
        variants[name] = Variant(
            name=name,
            model=model,
            recipe=recipe,
            identity=identity,
            calibration=drawn,
            checkpoint_bits=info.bits if info is not None and recipe.bits is None else None,
            quality_probe=spec.quality_probe,
            variant_cache=variant_cache,
            engine_choice=choose_engine(
                spec.requested_engine(model, recipe), recipe, checkpoint_method=info.method if info else None
            ),
            resources=spec.resources_for(model, recipe),
        )
    return variants


def build_plan(spec: SweepSpec, data_dir: Path, limit: int | None = None, *, variant_cache: str | None = None) -> Plan:
    """Variants × benchmarks with every item request's key (shards are cut later, from what is missing)."""
    with bulk_allocation():
        return _build_plan(spec, data_dir, limit, variant_cache)


@contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building many objects that all stay alive.

    Planning creates millions of strings, items and shards and frees none of them; every collection
    would walk them all (measured: 0.9 s of work took 4.2 s). Reference counting still frees
    everything else; the collector resumes afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _build_plan(spec: SweepSpec, data_dir: Path, limit: int | None, variant_cache: str | None) -> Plan:
    variants = build_variants(spec, data_dir, variant_cache)
    benchmarks = load_benchmarks(spec, data_dir, limit)
    from jobs.plan.judges import plan_judges

    plan = Plan(spec=spec, variants=variants, benchmarks=benchmarks, judges=plan_judges(spec, benchmarks))
    requests = {
        name: [request_digest(run.benchmark.task, item) for item in run.items] for name, run in benchmarks.items()
    }
    for variant in variants.values():
        for name, run in benchmarks.items():
            context = context_digest(
                variant_key=variant.key,
                engine=variant.engine,
                task=run.benchmark.task,
                max_new_tokens=run.max_new_tokens,
                temperature=spec.generation.temperature,
            )[:CONTEXT_CHARS]
            plan.keys[(variant.name, name)] = [context + r[:40] for r in requests[name]]
    return plan


def resolve_variant_cache(option: str | None, spec: SweepSpec) -> str | None:
    """Where variants are cached: ``--variant-cache``, ``$QTRUST_VARIANT_CACHE``, the spec, else None.

    None means ``<cache dir>/variants`` on each worker's node. Local paths are made absolute (workers
    may run in another working directory); URLs (``s3://...``) are passed on as they are.
    """
    value = option or os.environ.get(VARIANT_CACHE_ENV) or spec.storage.variant_cache
    if not value:
        return None
    if "://" in value:
        from cluster.storage.uri import location_problem
        from jobs.spec.schema import SpecError

        field = (
            "--variant-cache"
            if option
            else (VARIANT_CACHE_ENV if os.environ.get(VARIANT_CACHE_ENV) else "storage.variant_cache")
        )
        problem = location_problem(value, field)
        if problem:
            raise SpecError(field, [problem])
        return value
    return str(Path(value).expanduser().resolve())
