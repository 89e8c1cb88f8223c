"""Expand a validated sweep into variants and keyed shards.

A shard key is a hash of everything that changes what a correct engine outputs: model identity,
recipe, benchmark name and version, rendered prompts, generation settings and engine kind. Cluster
shape, batch size and node names are recorded elsewhere, never keyed, so a sweep resumes on a
different cluster.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cluster.engines.selection import EngineChoice, choose_engine
from cluster.models.sources import model_identity
from cluster.variant_key import variant_key
from jobs.calibration import CalibrationSet, resolve_calibration
from jobs.spec import BenchmarkSpec, EnsembleSpec, ModelSpec, RecipeSpec, SweepSpec, local_checkpoint_info
from trust.benchmarks.base import Benchmark
from trust.benchmarks.registry import get_benchmark
from trust.types import Item

#: Bumped when the meaning of a key changes, so old shards are recomputed instead of misread.
KEY_SCHEMA = 2


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
        if self.recipe.method == "prequantized" and self.recipe.bits is None and self.checkpoint_bits:
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
            "vllm": self.model.vllm.model_dump(),
            "recipe": self.recipe.model_dump(exclude={"name", "engine"}),
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

    def items_frame(self) -> pd.DataFrame:
        """The evaluated items as a table (logged to MLflow as the run's dataset input); built once."""
        if self._frame is None:
            self._frame = self._build_frame()
        return self._frame

    def _build_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "item_id": [it.id for it in self.items],
                "prompt": [json.dumps(it.messages, ensure_ascii=False) for it in self.items],
                "reference": [it.reference for it in self.items],
                "attributes": [json.dumps(it.attributes, sort_keys=True) for it in self.items],
            }
        )

    def digest(self, data_dir: Path) -> str:
        """Digest of the source files and of the selected item ids (the files are hashed once)."""
        if self._digest is None:
            self._digest = _digest([self.benchmark.dataset_digest(data_dir), [it.id for it in self.items]])
        return self._digest


@dataclass
class Shard:
    variant: str
    benchmark: str
    index: int
    items: list[Item]
    key: str

    @property
    def id(self) -> str:
        return f"{self.variant}/{self.benchmark}/{self.index:05d}"


@dataclass
class Plan:
    spec: SweepSpec
    variants: dict[str, Variant]
    benchmarks: dict[str, BenchmarkRun]
    shards: list[Shard] = field(default_factory=list)

    def shards_of(self, variant: str, benchmark: str) -> list[Shard]:
        return [s for s in self.shards if s.variant == variant and s.benchmark == benchmark]

    def ensembles_of(self, model: ModelSpec) -> list[tuple[EnsembleSpec, list[Variant]]]:
        """The ensembles ``model`` has every member of, with the member variants."""
        out = []
        for ens in self.spec.ensembles:
            names = [self.spec.variant_name(model, self.spec.recipe(m)) for m in ens.members]
            if all(n in self.variants for n in names):
                out.append((ens, [self.variants[n] for n in names]))
        return out


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def shard_key(
    *,
    variant_key: str,
    engine: str,
    benchmark: Benchmark,
    items: list[Item],
    max_new_tokens: int,
    temperature: float,
) -> str:
    """The key of one shard (hex sha256).

    Names, batch sizes and engine options (delays, fault injection, memory settings) are left out:
    they change how an answer is computed, not what a correct engine answers.
    """
    payload = {
        "schema": KEY_SCHEMA,
        "variant": variant_key,
        "engine": engine,
        "benchmark": {"name": benchmark.name, "version": benchmark.version, "task": benchmark.task},
        "generation": {"max_new_tokens": max_new_tokens, "temperature": temperature},
        "items": [[it.id, it.messages, it.choices] for it in items],
    }
    return _digest(payload)


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


def build_variants(spec: SweepSpec, data_dir: Path | None, variant_cache: str | None = None) -> dict[str, Variant]:
    """Every (model, recipe) of the sweep, with identities and calibration sets resolved."""
    identities = {m.name: model_identity(m.source, m.revision) for m in spec.models}
    calibrations: dict[str, CalibrationSet] = {}
    variants = {}
    for model, recipe in spec.variant_pairs():
        name = spec.variant_name(model, recipe)
        calibration = None
        if recipe.calibration is not None:
            if recipe.name not in calibrations:
                calibrations[recipe.name] = resolve_calibration(recipe.calibration, data_dir)
            calibration = calibrations[recipe.name]
        identity = identities[model.name]
        if recipe.method == "prequantized" and recipe.source:
            identity = model_identity(recipe.source, recipe.revision)
        info = local_checkpoint_info(model, recipe)
        variants[name] = Variant(
            name=name,
            model=model,
            recipe=recipe,
            identity=identity,
            calibration=calibration,
            checkpoint_bits=info.bits if info is not None and recipe.bits is None else None,
            quality_probe=spec.quality_probe,
            variant_cache=variant_cache,
            engine_choice=choose_engine(
                spec.requested_engine(model, recipe), recipe, checkpoint_method=info.method if info else None
            ),
        )
    return variants


def build_plan(
    spec: SweepSpec, data_dir: Path, limit: int | None = None, *, variant_cache: str | None = None
) -> Plan:
    """Variants × benchmarks, split into shards of ``spec.shard_size`` items, each with its key."""
    variants = build_variants(spec, data_dir, variant_cache)
    benchmarks = load_benchmarks(spec, data_dir, limit)
    plan = Plan(spec=spec, variants=variants, benchmarks=benchmarks)
    for variant in variants.values():
        for run in benchmarks.values():
            for index, start in enumerate(range(0, len(run.items), spec.shard_size)):
                chunk = run.items[start : start + spec.shard_size]
                key = shard_key(
                    variant_key=variant.key,
                    engine=variant.engine,
                    benchmark=run.benchmark,
                    items=chunk,
                    max_new_tokens=run.max_new_tokens,
                    temperature=spec.generation.temperature,
                )
                plan.shards.append(Shard(variant.name, run.name, index, chunk, key))
    return plan
