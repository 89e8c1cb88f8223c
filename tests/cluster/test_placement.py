"""Workers on a simulated two-node cluster with declared GPUs: each is pinned to its own bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from cluster.runtime import WorkerResources, start_worker, stop_worker
from jobs.runner import run_sweep
from jobs.spec.load import parse_spec
from jobs.spec.run_options import RunOptions
from tests.support.helpers import sweep_dict
from tests.support.mlflow_store import sqlite_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_gpu_nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 2, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, num_gpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def fake_config(name: str) -> dict:
    return {
        "variant": name,
        "source": "x",
        "revision": None,
        "dtype": "float32",
        "trust_remote_code": False,
        "engine": "fake",
        "engine_options": {},
        "recipe": {"method": "none"},
    }


def test_one_gpu_per_worker_spreads_over_nodes(two_gpu_nodes) -> None:
    handles = [
        start_worker(f"v{i}", fake_config(f"v{i}"), WorkerResources(num_cpus=0.25, num_gpus=1)) for i in range(4)
    ]
    try:
        infos = ray.get([h.actor.load.remote() for h in handles], timeout=120)
        seats = {(i["placement"]["node_id"], tuple(i["placement"]["gpu_ids"])) for i in infos}
        assert len(seats) == 4, infos
        assert len({node for node, _ in seats}) == 2
        for info in infos:
            assert len(info["placement"]["gpu_ids"]) == 1
            assert info["placement"]["cuda_visible_devices"] == info["placement"]["gpu_ids"][0]
    finally:
        for h in handles:
            stop_worker(h)


def test_fractional_gpus_share_one_device(two_gpu_nodes) -> None:
    handles = [
        start_worker(f"s{i}", fake_config(f"s{i}"), WorkerResources(num_cpus=0.1, num_gpus=0.5)) for i in range(8)
    ]
    try:
        infos = ray.get([h.actor.load.remote() for h in handles], timeout=120)
        seats = [(i["placement"]["node_id"], tuple(i["placement"]["gpu_ids"])) for i in infos]
        # 8 half-GPU workers on 4 GPUs: every GPU holds exactly two of them.
        assert sorted(seats.count(s) for s in set(seats)) == [2, 2, 2, 2]
    finally:
        for h in handles:
            stop_worker(h)


def test_sweep_runs_on_the_cluster_address(two_gpu_nodes, tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    spec = sweep_dict(
        tiny_model_dir, tmp_path / "runs", resources={"num_cpus_per_worker": 0.25, "num_gpus_per_worker": 1}
    )
    spec["models"][0]["engine"] = "fake"
    outcome = run_sweep(
        parse_spec(spec),
        RunOptions(
            data_dir=data_dir, address=two_gpu_nodes.address, tracking_uri=sqlite_store(tmp_path / "m.db"), quiet=True
        ),
    )
    assert not outcome.failed and outcome.items_computed == outcome.plan.n_requests
    assert ray.is_initialized(), "a sweep must not shut down a cluster it did not start"
