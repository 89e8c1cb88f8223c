"""Ray runtime: connect (or start local Ray), and place variant workers on placement-group bundles.

Each worker gets its own placement group with one bundle ``{"CPU": c, "GPU": g}``; fractional GPUs
let several small variants share one GPU. Ray restarts a crashed worker (``max_restarts``) but never
retries calls on its own (``max_task_retries=0``): the scheduler owns retries, so it can count
attempts and record a shard as failed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.worker import VariantWorker, prepare_variant

log = logging.getLogger(__name__)

_PACKAGE_DIRS = [Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "trust"]


@dataclass
class WorkerResources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_restarts: int = 3

    def bundle(self) -> dict[str, float]:
        bundle = {"CPU": self.num_cpus}
        if self.num_gpus:
            bundle["GPU"] = self.num_gpus
        return bundle

    @property
    def torch_threads(self) -> int:
        return max(1, int(self.num_cpus))


@dataclass
class WorkerHandle:
    """A started worker actor and the placement group that holds its resources."""

    variant: str
    actor: Any
    placement_group: PlacementGroup


def start_ray(address: str | None = None, *, quiet: bool = True) -> dict[str, Any]:
    """Start local Ray (no address) or connect to a cluster; return a description of it.

    Connecting to a remote cluster ships the ``cluster`` and ``trust`` packages with the job.
    """
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": not quiet, "logging_level": logging.WARNING}
        if address:
            kwargs["address"] = address
            if not os.environ.get("RAY_JOB_ID"):
                kwargs["runtime_env"] = {"py_modules": [str(p) for p in _PACKAGE_DIRS]}
        else:
            kwargs["include_dashboard"] = False
        ray.init(**kwargs)
    resources = ray.cluster_resources()
    return {
        "address": address or "local",
        "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
        "cpus": resources.get("CPU", 0.0),
        "gpus": resources.get("GPU", 0.0),
    }


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


def start_worker(
    variant: str,
    config: dict[str, Any],
    resources: WorkerResources,
    cache_dir: str | None = None,
) -> WorkerHandle:
    """Reserve a bundle for one variant and start its worker actor there (returns at once)."""
    group = placement_group([resources.bundle()], strategy="PACK", name=f"qtrust-{variant}")
    actor_cls = ray.remote(VariantWorker)
    actor = actor_cls.options(
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus,
        max_restarts=resources.max_restarts,
        max_task_retries=0,
        scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=0
        ),
        name=None,
    ).remote({**config, "num_gpus": resources.num_gpus}, cache_dir, resources.torch_threads)
    return WorkerHandle(variant=variant, actor=actor, placement_group=group)


def stop_worker(handle: WorkerHandle) -> None:
    """Stop a worker's engine, kill the worker and give its bundle back to the cluster."""
    try:
        # A vLLM engine runs in child processes: let the worker stop them before it goes.
        ray.get(handle.actor.close.remote(), timeout=30)
    except Exception as err:  # noqa: BLE001 - dead, busy or slow: killed below anyway
        log.debug("close %s: %s", handle.variant, err)
    try:
        ray.kill(handle.actor, no_restart=True)
    except Exception as err:  # pragma: no cover - already dead
        log.debug("kill %s: %s", handle.variant, err)
    try:
        remove_placement_group(handle.placement_group)
    except Exception as err:  # pragma: no cover
        log.debug("remove placement group %s: %s", handle.variant, err)


def start_prepare_task(config: dict[str, Any], resources: WorkerResources, cache_dir: str | None = None) -> Any:
    """Run :func:`cluster.worker.prepare_variant` as a Ray task with a worker's resources (returns a ref)."""
    task = ray.remote(prepare_variant).options(
        num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=0, name=f"qtrust-prepare-{config.get('variant')}"
    )
    return task.remote({**config, "num_gpus": resources.num_gpus}, cache_dir, resources.torch_threads)
