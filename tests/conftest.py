"""Shared fixtures: the benchmark data folder, a tiny offline model, and one local Ray for the session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Two test workers share two cores (pytest-xdist, see the Makefile): OpenMP threads that spin while
# they wait would steal the other worker's core. Passive waiting costs a single run nothing measurable.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# pytest-xdist gives its workers COLUMNS=80 (the controller's width); the CLI's consoles, created at
# import, would then wrap every line the CLI tests read at 80 columns. A test that wants a width
# sets COLUMNS itself, as without xdist.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)

#: Test modules that must not run beside each other: those that keep both cores busy for minutes
#: (quantizing, vLLM, the built-in model end to end). They are marked ``serial``. ``make test`` runs
#: them as **one chain** on one pytest-xdist worker, one after another, while the other worker takes
#: every other module (see tests/support/xdist_chain.py): two of them at once were seen to starve
#: each other (a 70 s quantized-model test took > 15 minutes beside a vLLM test).
SERIAL_MODULES = (
    "tests/cluster/test_quant_builtin.py",
    "tests/jobs/test_demo_cli.py",
    "tests/cluster/test_vllm_engine.py",
    "tests/jobs/test_vllm_sweep.py",
    "tests/cluster/test_vllm_prefix_scoring.py",
    "tests/cluster/test_judge_vllm_serve.py",
    "tests/cluster/test_builtin_model.py",
    "tests/jobs/test_cli_quantize.py",
    "tests/cluster/test_quant_llmc.py",
    "tests/cluster/test_quant_variants.py",
)

#: The slowest of the other modules (measured on 2 cores), longest first: they start first, so that
#: the last units handed out are short ones and both workers end at about the same time.
LONG_MODULES = (
    "tests/jobs/test_quantized_sweep.py",
    "tests/infra/test_ray_job_submit.py",
    "tests/jobs/test_pipeline_faults.py",
    "tests/jobs/test_seed_benchmarks_sweep.py",
    "tests/cluster/test_hf_prefix_scoring.py",
    "tests/jobs/test_cli_run_status.py",
    "tests/jobs/test_secrets_nowhere.py",
    "tests/jobs/test_judges_pipeline.py",
    "tests/jobs/test_adaptive_sweep.py",
    "tests/jobs/test_tracking_sweep.py",
    "tests/jobs/test_pipeline_replicas.py",
    "tests/jobs/test_store_s3.py",
    "tests/jobs/test_mlflow_ui.py",
    "tests/jobs/test_tracking_server_pg.py",
    "tests/jobs/test_faults.py",
    "tests/jobs/test_e2e.py",
    "tests/jobs/test_all_benchmarks.py",
    "tests/jobs/test_user_benchmark.py",
    "tests/jobs/test_data_first_use.py",
    "tests/jobs/test_spec_bad_input.py",
    "tests/cluster/test_quant_prequantized.py",
    "tests/jobs/test_tracking_live.py",
    "tests/jobs/test_reuse.py",
    "tests/cluster/test_placement.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of :data:`SERIAL_MODULES` ``serial``; order: the chain, :data:`LONG_MODULES`, the rest."""
    order = {module: index for index, module in enumerate(SERIAL_MODULES + LONG_MODULES)}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if module in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
    items.sort(key=lambda item: order.get(item.nodeid.split("::", 1)[0], len(order)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object):
    """``--dist loadfile``: the serial modules run as one chain on one worker (tests/support/xdist_chain.py)."""
    from tests.support.xdist_chain import make_scheduler

    return make_scheduler(config, log, SERIAL_MODULES)


def shared_benchmarks() -> Path:
    """``$QTRUST_DATA_DIR`` or ``../shared/benchmarks`` beside the repository; fail loudly if absent."""
    path = Path(os.environ.get("QTRUST_DATA_DIR") or REPO.parent / "shared" / "benchmarks")
    if not path.is_dir():
        raise RuntimeError(
            f"benchmark data folder not found at {path}; set QTRUST_DATA_DIR to a folder laid out like shared/benchmarks"
        )
    return path


@pytest.fixture(scope="session", autouse=True)
def isolated_variant_cache(tmp_path_factory: pytest.TempPathFactory):
    """Quantized variants go to a temporary cache for the session, never ~/.cache.

    Under pytest-xdist every worker of one run shares the same folder (beside the workers' own
    temporary folders), so a variant is quantized once per run, not once per worker: the variant
    cache's own lock makes concurrent builders wait for the first. Without xdist the folder is
    removed afterwards; with it, pytest's retention of old temporary folders cleans it up.
    """
    import shutil

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        folder = tmp_path_factory.getbasetemp().parent / "shared-variant-cache"
        folder.mkdir(exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("variant-cache")
    previous = os.environ.get("QTRUST_VARIANT_CACHE")
    os.environ["QTRUST_VARIANT_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("QTRUST_VARIANT_CACHE", None)
    else:
        os.environ["QTRUST_VARIANT_CACHE"] = previous
    if not worker:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def isolated_data_cache(tmp_path_factory: pytest.TempPathFactory):
    """Benchmark data fetched or copied on first use goes to a temporary cache, never ~/.cache/qtrust/data."""
    folder = tmp_path_factory.mktemp("data-cache")
    previous = os.environ.get("QTRUST_DATA_CACHE")
    os.environ["QTRUST_DATA_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("QTRUST_DATA_CACHE", None)
    else:
        os.environ["QTRUST_DATA_CACHE"] = previous


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small matrices run far faster on one torch thread on a busy two-core machine (measured ~20x)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return shared_benchmarks()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance for one test module (2 CPUs, no dashboard)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible server (moto) on 127.0.0.1 for the session; its endpoint and credentials are
    put into this process's environment (what pyarrow's S3 filesystem reads) and removed afterwards."""
    from tests.support.s3_server import start_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("s3-server"))
    saved = {name: os.environ.get(name) for name in server.env}
    os.environ.update(server.env)
    yield server
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.stop()
