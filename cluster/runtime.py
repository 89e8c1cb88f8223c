"""Ray runtime: connect (or start a private local Ray), check what the cluster can hold, place pools.

A **pool** is R replicas of one worker kind. Its bundles live in one placement group (``PACK`` or
``SPREAD``), one bundle per replica; each replica is an actor pinned to its bundle (whole GPUs for
tensor parallelism, fractions to share one). Ray restarts a crashed replica (``max_restarts``) but
never retries calls on its own (``max_task_retries=0``): the pipeline's scheduler owns retries, so
it can count attempts, replace a replica whose restarts are spent, and record a shard as failed.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

log = logging.getLogger(__name__)

_PACKAGE_DIRS = [Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "trust"]


@dataclass
class WorkerResources:
    """What one replica reserves (its placement-group bundle) and how often Ray restarts it."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None
    custom: dict[str, float] = field(default_factory=dict)
    max_restarts: int = 1

    def bundle(self) -> dict[str, float]:
        bundle: dict[str, float] = {"CPU": self.num_cpus}
        if self.num_gpus:
            bundle["GPU"] = self.num_gpus
        if self.memory:
            bundle["memory"] = float(self.memory)
        bundle.update({k: float(v) for k, v in self.custom.items() if v})
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


@dataclass
class RayInfo:
    """The cluster a driver is attached to (printed and kept in the manifest)."""

    address: str
    how: str
    nodes: int
    cpus: float
    gpus: float
    started_here: bool

    def describe(self) -> str:
        return f"Ray: {self.how} ({self.address}): {self.nodes} node(s), {self.cpus:g} CPU(s), {self.gpus:g} GPU(s)"


def start_ray(address: str | None = None, *, quiet: bool = True, num_cpus: int | None = None) -> RayInfo:
    """Attach to Ray and say which cluster that is.

    No address: a **private** local Ray (``address="local"``), never a cluster that ``ray start``
    left running on the machine (``RAY_ADDRESS`` is ignored unless passed as ``--address``). Inside
    ``ray job submit`` the job's own cluster is used. An already initialised Ray (tests, notebooks)
    is used as it is. A remote address ships the ``cluster`` and ``trust`` packages with the job.
    """
    started_here = False
    if ray.is_initialized():
        how = "already connected"
    else:
        kwargs: dict[str, Any] = {"log_to_driver": not quiet, "logging_level": logging.WARNING}
        in_job = bool(os.environ.get("RAY_JOB_ID") or os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))
        if address:
            kwargs["address"] = address
            if not in_job:
                kwargs["runtime_env"] = {"py_modules": [str(p) for p in _PACKAGE_DIRS]}
            how = "joined the cluster at --address"
        elif in_job and os.environ.get("RAY_ADDRESS"):
            kwargs["address"] = "auto"
            how = "inside a Ray job"
        else:
            kwargs["address"] = "local"
            kwargs["include_dashboard"] = False
            # The private cluster keeps Ray's token authentication; its start-up notice is noise here.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            if num_cpus is not None:
                kwargs["num_cpus"] = num_cpus
            # Ray lowers its workers to nice 15 by default; here they are the sweep's compute, and on
            # a small machine the driver and Ray's own processes would take turns before them.
            kwargs["_system_config"] = {"worker_niceness": 0}
            how = "private local Ray started for this sweep"
        saved = os.environ.pop("RAY_ADDRESS", None) if kwargs["address"] == "local" else None
        try:
            ray.init(**kwargs)
        finally:
            if saved is not None:
                os.environ["RAY_ADDRESS"] = saved
        started_here = True
    resources = ray.cluster_resources()
    try:
        gcs = ray.get_runtime_context().gcs_address
    except Exception:
        gcs = address or "local"
    return RayInfo(
        address=str(gcs),
        how=how,
        nodes=len(alive_nodes()),
        cpus=resources.get("CPU", 0.0),
        gpus=resources.get("GPU", 0.0),
        started_here=started_here,
    )


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


def alive_nodes() -> list[dict[str, Any]]:
    """Alive nodes with their total resources: ``{"node_id", "ip", "resources"}``."""
    return [
        {"node_id": n["NodeID"], "ip": n.get("NodeManagerAddress", "?"), "resources": dict(n.get("Resources") or {})}
        for n in ray.nodes()
        if n.get("Alive")
    ]


def _fmt_amount(name: str, value: float) -> str:
    if name == "memory":
        return f"{value / 2**30:.1f} GiB memory"
    return f"{value:g} {name}"


def describe_bundle(bundle: dict[str, float]) -> str:
    return ", ".join(_fmt_amount(k, v) for k, v in bundle.items())


def describe_nodes(nodes: list[dict[str, Any]]) -> str:
    parts = []
    for node in nodes:
        res = node["resources"]
        shown = {k: res.get(k, 0.0) for k in ("CPU", "GPU", "memory")}
        shown.update(
            {
                k: v
                for k, v in res.items()
                if k not in shown
                and not k.startswith(("node:", "object_store"))
                and not k.startswith("accelerator_type")
                and "_group_" not in k
            }
        )
        parts.append(f"{node['ip']}: {describe_bundle(shown)}")
    return "; ".join(parts) or "no alive node"


def placement_problem(
    name: str, bundle: dict[str, float], replicas: int, nodes: list[dict[str, Any]] | None = None
) -> str | None:
    """Why no placement of ``replicas`` × ``bundle`` could ever exist on this cluster, or None.

    Checked before anything starts, so an impossible request is an error, not a silent wait.
    """
    nodes = alive_nodes() if nodes is None else nodes
    fits = [n for n in nodes if all(n["resources"].get(k, 0.0) + 1e-9 >= v for k, v in bundle.items())]
    if not fits:
        return (
            f"{name}: a replica needs {describe_bundle(bundle)} but no node of the cluster has that much "
            f"(nodes: {describe_nodes(nodes)}); lower its resources or add such a node"
        )
    per_node = [
        min(int(n["resources"].get(k, 0.0) / v + 1e-9) if v else replicas for k, v in bundle.items()) for n in fits
    ]
    if sum(per_node) < replicas:
        return (
            f"{name}: {replicas} replicas × ({describe_bundle(bundle)}) do not fit in the cluster together "
            f"(room for {sum(per_node)}; nodes: {describe_nodes(nodes)}); lower replicas or the resources"
        )
    return None


def create_pool_group(name: str, resources: WorkerResources, replicas: int, placement: str = "pack") -> PlacementGroup:
    """One placement group holding a pool's bundles (returns at once; ``group.ready()`` resolves when placed).

    Its name is ``qtrust-<name>-<8 hex digits>``: Ray refuses a second group of the same name in a
    namespace, and a released pool that gets work again (or another driver's pool of the same
    variant) must not collide with a group whose removal is still under way.
    """
    strategy = "SPREAD" if placement == "spread" else "PACK"
    return placement_group(
        [resources.bundle() for _ in range(replicas)], strategy=strategy, name=f"qtrust-{name}-{uuid.uuid4().hex[:8]}"
    )


def start_actor(
    actor_class: type,
    args: tuple[Any, ...],
    resources: WorkerResources,
    group: PlacementGroup,
    bundle_index: int,
) -> Any:
    """Start one replica actor of ``actor_class`` on bundle ``bundle_index`` of ``group`` (returns at once)."""
    options: dict[str, Any] = {
        "num_cpus": resources.num_cpus,
        "num_gpus": resources.num_gpus,
        "max_restarts": resources.max_restarts,
        "max_task_retries": 0,
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=bundle_index
        ),
    }
    if resources.memory:
        options["memory"] = resources.memory
    if resources.custom:
        options["resources"] = dict(resources.custom)
    return ray.remote(actor_class).options(**options).remote(*args)


def kill_actor(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception as err:
        log.debug("kill: %s", err)


def remove_group(group: PlacementGroup | None) -> None:
    if group is None:
        return
    try:
        remove_placement_group(group)
    except Exception as err:
        log.debug("remove placement group: %s", err)


def start_worker(
    variant: str,
    config: dict[str, Any],
    resources: WorkerResources,
    cache_dir: str | None = None,
) -> WorkerHandle:
    """Reserve a bundle for one variant worker and start it there (returns at once)."""
    from cluster.variants.worker import VariantWorker

    group = create_pool_group(variant, resources, 1)
    actor = start_actor(
        VariantWorker,
        ({**config, "num_gpus": resources.num_gpus}, cache_dir, resources.torch_threads),
        resources,
        group,
        0,
    )
    return WorkerHandle(variant=variant, actor=actor, placement_group=group)


def stop_worker(handle: WorkerHandle, close_timeout_s: float = 30.0) -> None:
    """Stop a worker's engine, kill the worker and give its bundle back to the cluster."""
    close_actor(handle.actor, close_timeout_s)
    remove_group(handle.placement_group)


def close_actor(actor: Any, timeout_s: float = 30.0) -> None:
    """Ask a worker to stop its engine (vLLM child processes), then kill it."""
    try:
        ray.get(actor.close.remote(), timeout=timeout_s)
    except Exception as err:
        log.debug("close: %s", err)
    kill_actor(actor)


def _start_variant_task(
    fn: Any, label: str, config: dict[str, Any], resources: WorkerResources, cache_dir: str | None
) -> Any:
    """Run ``fn(config, cache_dir, torch_threads)`` as a Ray task with a worker's resources (returns a ref)."""
    task = ray.remote(fn).options(
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus,
        max_retries=0,
        name=f"qtrust-{label}-{config.get('variant')}",
    )
    return task.remote({**config, "num_gpus": resources.num_gpus}, cache_dir, resources.torch_threads)


def start_prepare_task(config: dict[str, Any], resources: WorkerResources, cache_dir: str | None = None) -> Any:
    """Run :func:`cluster.variants.worker.prepare_variant` as a Ray task with a worker's resources (returns a ref)."""
    from cluster.variants.worker import prepare_variant

    return _start_variant_task(prepare_variant, "prepare", config, resources, cache_dir)


def start_rebuild_check_task(config: dict[str, Any], resources: WorkerResources, cache_dir: str | None = None) -> Any:
    """Run :func:`cluster.variants.rebuild.rebuild_check` as a Ray task with a worker's resources (returns a ref)."""
    from cluster.variants.rebuild import rebuild_check

    return _start_variant_task(rebuild_check, "rebuild-check", config, resources, cache_dir)
