"""A finished (or partial) sweep's results, read from its store alone: no Ray, no model, no inference."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.plan.build import Plan, build_plan
from jobs.results.completeness import Completeness, completeness
from jobs.results.scoring import ResultRow, compute_results
from jobs.spec.load import parse_spec
from jobs.spec.schema import SpecError, SweepSpec
from jobs.store.adaptive import AdaptiveSummary, read_adaptive
from jobs.store.health import FolderHealth, check_folder
from jobs.store.sweep import SweepStore
from trust.yaml_safe import YamlInputError, load_yaml_text


class StoredSweepError(Exception):
    """The folder is not a sweep qtrust can read (one line for the user)."""


@dataclass
class StoredSweep:
    """What ``qtrust report`` works from."""

    store: SweepStore
    plan: Plan
    results: list[ResultRow]
    manifest: dict[str, Any] = field(default_factory=dict)
    health: FolderHealth | None = None
    """The check of the sweep's ``generations/`` shards (damaged, missing), made after the scan."""
    adaptive: AdaptiveSummary | None = None
    """An adaptive sweep's decisions (``adaptive.json``); None for a sweep that is not adaptive."""

    @property
    def completeness(self) -> Completeness:
        """Items planned, found and missing per variant × benchmark: whether a report is partial (items an
        adaptive decision did not need are not missing)."""
        return completeness(self.results, self.health, self.manifest.get("state"), self.adaptive)

    @property
    def quant_reports(self) -> dict[str, dict[str, Any]]:
        """Each variant's quantization report (probe perplexity, size...) as its worker recorded it."""
        return {
            name: dict(info.get("quantization", {}) or {}) for name, info in self.manifest.get("workers", {}).items()
        }


def split_sweep_dir(sweep_dir: str | Path) -> tuple[str, str]:
    """``qtrust-runs/demo`` -> (``qtrust-runs``, ``demo``); URIs (``s3://bucket/runs/demo``) alike."""
    text = str(sweep_dir)
    if "://" in text:
        text, _, query = text.partition("?")  # s3://b/runs/demo?endpoint_override=...: the query stays on the root
        scheme, rest = text.rstrip("/").split("://", 1)
        parent, name = posixpath.split(rest)
        return f"{scheme}://{parent}" + (f"?{query}" if query else ""), name
    text = text.rstrip("/")
    path = Path(text).resolve()
    return str(path.parent), path.name


def stored_spec(sweep_dir: str | Path) -> tuple[SweepSpec, SweepStore]:
    """The spec a sweep stored (``<sweep dir>/sweep.yaml``, local or any pyarrow.fs URI) and its store."""
    root, name = split_sweep_dir(sweep_dir)
    try:
        store = SweepStore(root, name)
    except Exception as err:
        raise StoredSweepError(f"cannot open {sweep_dir}: {err}") from err
    try:
        text = store.read_text(store.spec_path)
    except UnicodeDecodeError:
        raise StoredSweepError(
            f"{store.spec_path} is not UTF-8 text (damaged); start the sweep again with qtrust run SWEEP.yaml"
        ) from None
    if text is None:
        raise StoredSweepError(
            f"{store.spec_path} not found; pass the folder of a sweep started with 'qtrust run' "
            "(it holds sweep.yaml), e.g. qtrust-runs/demo or s3://bucket/runs/demo"
        )
    try:
        return parse_spec(load_yaml_text(text, store.spec_path), source=store.spec_path), store
    except (SpecError, YamlInputError) as err:
        raise StoredSweepError(str(err)) from err


def stored_plan(spec: SweepSpec, store: SweepStore, data_dir: Path | None = None) -> Plan:
    """The plan of a stored sweep: its items from the store's plan snapshot (:mod:`jobs.store.plan_snapshot`),
    or from the benchmark files under ``data_dir`` when it is given (or when the store holds no snapshot:
    then ``$QTRUST_DATA_DIR`` or the data cache; ``StoredSweepError`` when the files are not there either)."""
    from jobs.plan.build import resolve_variant_cache
    from jobs.store.plan_snapshot import SnapshotMissing, load_plan_snapshot
    from trust.benchmarks.data import BenchmarkDataError, resolve_data_dir

    variant_cache = resolve_variant_cache(None, spec)
    missing: SnapshotMissing | None = None
    if data_dir is None:
        try:
            return load_plan_snapshot(spec, store, variant_cache)
        except SnapshotMissing as err:
            missing = err
    try:
        return build_plan(spec, resolve_data_dir(data_dir), variant_cache=variant_cache)
    except BenchmarkDataError as err:
        if missing is None:
            raise
        raise StoredSweepError(
            f"{missing}: the store does not hold this sweep's items (stored by an older qtrust?); pass "
            f"--data-dir DIR, the benchmark files hold the items and references that scoring needs ({err})"
        ) from None


def load_stored_sweep(sweep_dir: str | Path, data_dir: Path | None = None) -> StoredSweep:
    """Plan the sweep (:func:`stored_plan`) from its stored ``sweep.yaml`` and score every stored answer
    and judgment."""
    spec, store = stored_spec(sweep_dir)
    plan = stored_plan(spec, store, data_dir)
    records = store.scan().records
    judgments = store.scan_judgments().records if plan.judges else None
    results = compute_results(plan, records, judgments)
    health = check_folder(store.generations)  # after the scan: a shard it found damaged is set aside by now
    return StoredSweep(
        store=store,
        plan=plan,
        results=results,
        manifest=store.read_manifest(),
        health=health,
        adaptive=read_adaptive(store),
    )
