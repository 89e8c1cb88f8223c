"""Faults of a real sweep, and resume after them: the driver SIGKILLed, Ctrl-C (once and twice), a
full store (mid-run and at start), a tracking store that never answers, damaged shard files, the
real built-in model's worker killed, a node of a multi-node cluster removed. Each time the
final results equal an uninterrupted run's, with every item stored exactly once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import ray
import yaml

from tests.support.pipeline_helpers import (
    console_text,
    fake_sweep,
    kill_session,
    labels_of,
    metrics_of,
    outputs_by_key,
    planned_keys,
    quiet_console,
    records_in,
    run,
    shard_files,
    wait_for,
)

pytestmark = pytest.mark.slow

#: Items per benchmark of every fake sweep here (two benchmarks), two items per shard.
ITEMS = 8
QTRUST = str(Path(sys.executable).parent / "qtrust")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the in-process sweeps of this module (2 CPUs, no GPU, no dashboard)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def baseline(local_ray, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted run of the fake sweep every test here disturbs (and its MLflow store)."""
    root = tmp_path_factory.mktemp("baseline")
    outcome = run(fake_sweep(root, items=ITEMS), root, data_dir)
    assert not outcome.failed
    return {"outcome": outcome, "root": root, "records": records_in(outcome.store.dir)}


def assert_equals_baseline(sweep_dir: Path, baseline: dict[str, Any]) -> pd.DataFrame:
    """Every planned item stored exactly once, with the uninterrupted run's answers."""
    records = records_in(sweep_dir)
    assert outputs_by_key(records) == outputs_by_key(baseline["records"])
    assert set(records["item_key"]) == planned_keys(baseline["outcome"])
    return records


def mlflow_runs(db: Path) -> list[tuple[str, str]]:
    """(run name, status) of every run in the MLflow store at ``db``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return sorted((r.info.run_name, r.info.status) for r in client.search_runs(experiments, max_results=1000))


# -- the driver as a subprocess ----------------------------------------------------------------
class Driver:
    """``qtrust run|resume`` in its own session (its private Ray with it), output kept in a file."""

    def __init__(self, args: list[str], cwd: Path, log: Path):
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", COLUMNS="250", PYTHONUNBUFFERED="1")
        self.log = log
        self.handle = open(log, "w")
        self.proc = subprocess.Popen(
            [QTRUST, *args], cwd=cwd, env=env, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def output(self) -> str:
        self.handle.flush()
        return self.log.read_text()

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"qtrust did not end within {timeout_s:g}s:\n{self.output[-3000:]}") from None

    def cleanup(self) -> list[int]:
        """Kill what is left of the driver's session (its private Ray); returns what was left."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        left = kill_session(self.proc.pid)
        self.handle.close()
        return left


def driver_args(command: str, target: Path, root: Path, data_dir: Path) -> list[str]:
    return [
        command,
        str(target),
        "--data-dir",
        str(data_dir),
        "--tracking-uri",
        f"sqlite:///{root}/mlflow.db",
        "--quiet",
    ]


def start_slow_sweep(root: Path, data_dir: Path) -> tuple[Driver, Path]:
    """``qtrust run`` of the fake sweep, slowed down (1 s per item) so it can be disturbed."""
    sweep = root / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(fake_sweep(root, {"delay_s": 1.0}, items=ITEMS, resources={"max_in_flight": 1})))
    return Driver(driver_args("run", sweep, root, data_dir), root, root / "run.log"), root / "runs" / "pipe"


def wait_for_first_shard(driver: Driver, sweep_dir: Path, mlflow_runs: int = 0) -> int:
    """Wait until a shard is committed (and the manifest names ``mlflow_runs`` MLflow runs)."""

    def committed() -> int:
        if driver.proc.poll() is not None:
            raise AssertionError(f"the driver ended before any shard was committed:\n{driver.output[-3000:]}")
        if mlflow_runs:
            try:
                runs = json.loads((sweep_dir / "manifest.json").read_text())["mlflow"]["runs"]
            except (OSError, ValueError, KeyError, TypeError):
                return 0
            if len(runs) < mlflow_runs:
                return 0
        return len(shard_files(sweep_dir))

    return wait_for(committed, 240, 0.05, "the first committed shard")


def resume(root: Path, sweep_dir: Path, data_dir: Path) -> str:
    """``qtrust resume <dir>`` in this process (on the module's Ray: no second private Ray to start)."""
    from typer.testing import CliRunner

    from jobs.cli import app

    result = CliRunner().invoke(app, driver_args("resume", sweep_dir, root, data_dir))
    assert result.exit_code == 0, result.output[-3000:]
    assert "Traceback" not in result.output
    return result.output


def test_a_sigkilled_driver_is_resumed_to_the_results_of_an_uninterrupted_run(
    baseline: dict[str, Any], local_ray, data_dir: Path, tmp_path: Path
) -> None:
    driver, sweep_dir = start_slow_sweep(tmp_path, data_dir)
    baseline_runs = mlflow_runs(baseline["root"] / "mlflow.db")
    try:
        # Killed once its MLflow runs are open (and named in the manifest): the resume must reuse them.
        done = wait_for_first_shard(driver, sweep_dir, mlflow_runs=len(baseline_runs))
        os.kill(driver.proc.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        driver.cleanup()
    total = len(baseline["outcome"].plan.shards())
    assert 0 < len(shard_files(sweep_dir)) < total, "the driver was killed after the sweep ended: nothing was tested"
    assert done < total
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["state"] == "running"  # what a killed driver leaves

    before = len(records_in(sweep_dir))
    output = resume(tmp_path, sweep_dir, data_dir)
    todo = len(planned_keys(baseline["outcome"])) - before
    assert f"Items: {todo} computed in {todo // 2} shard(s), {before} already stored" in output, output
    assert_equals_baseline(sweep_dir, baseline)
    assert json.loads((sweep_dir / "manifest.json").read_text())["state"] == "finished"

    # MLflow: the resumed sweep finished the same runs (none doubled, none left RUNNING).
    runs = mlflow_runs(tmp_path / "mlflow.db")
    assert [name for name, _ in runs] == [name for name, _ in baseline_runs]
    assert all(status == "FINISHED" for _, status in runs), runs

    # Scored from the store, the resumed sweep equals the uninterrupted one (nothing is computed).
    (tmp_path / "check").mkdir()
    check = run(
        yaml.safe_load((sweep_dir / "sweep.yaml").read_text()),
        tmp_path / "check",
        data_dir,
        storage_root=tmp_path / "runs",
    )
    assert check.items_computed == 0
    assert labels_of(check) == labels_of(baseline["outcome"])
    assert metrics_of(check) == metrics_of(baseline["outcome"])


def test_ctrl_c_stops_after_the_shards_in_flight_and_resume_completes(
    baseline: dict[str, Any], local_ray, data_dir: Path, tmp_path: Path
) -> None:
    driver, sweep_dir = start_slow_sweep(tmp_path, data_dir)
    baseline_runs = mlflow_runs(baseline["root"] / "mlflow.db")
    try:
        wait_for_first_shard(driver, sweep_dir, mlflow_runs=len(baseline_runs))
        sent = time.monotonic()
        os.kill(driver.proc.pid, signal.SIGINT)
        code = driver.wait(90)
        took = time.monotonic() - sent
        output = driver.output
    finally:
        left = driver.cleanup()
    assert code == 130, output[-3000:]
    assert took < 60.0, f"the driver took {took:.0f}s to stop (stop deadline 60 s)"
    assert "Stopping: no new shards start" in output
    stored = len(records_in(sweep_dir))
    assert 0 < stored < len(planned_keys(baseline["outcome"])), "nothing was left to resume: nothing was tested"
    assert f"this run committed {stored} item(s)" in " ".join(output.split()), output[-3000:]
    assert f"qtrust resume {sweep_dir}" in output
    assert "Traceback" not in output
    interrupted = json.loads((sweep_dir / "manifest.json").read_text())
    assert interrupted["state"] == "interrupted"
    assert not [
        p for p in left if Path(f"/proc/{p}/cmdline").exists() and b"ray" in Path(f"/proc/{p}/cmdline").read_bytes()
    ], "the interrupted driver left Ray processes running"

    resume(tmp_path, sweep_dir, data_dir)
    assert_equals_baseline(sweep_dir, baseline)
    runs = mlflow_runs(tmp_path / "mlflow.db")
    assert [name for name, _ in runs] == [name for name, _ in baseline_runs], (runs, interrupted["mlflow"])
    assert all(status == "FINISHED" for _, status in runs), (runs, interrupted["mlflow"])


# -- damaged shard files -----------------------------------------------------------------------
def test_damaged_shards_are_named_set_aside_and_exactly_their_items_recomputed(
    baseline: dict[str, Any], data_dir: Path, tmp_path: Path
) -> None:
    spec = fake_sweep(tmp_path, items=ITEMS)
    first = run(spec, tmp_path, data_dir)
    sweep_dir = Path(first.store.dir)
    files = shard_files(sweep_dir)
    # group commit: shards that finish together share a file (one per benchmark), each shard whole in it
    assert 2 <= len(files) <= len(first.plan.shards())
    truncated, overwritten = files[0], files[-1]
    damaged_keys = set(pq.read_table(truncated)["item_key"].to_pylist()) | set(
        pq.read_table(overwritten)["item_key"].to_pylist()
    )
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    data = overwritten.read_bytes()
    middle = len(data) // 2
    # Same length, Parquet magic and footer intact: only the content digest can tell.
    overwritten.write_bytes(data[: middle - 8] + bytes(reversed(data[middle - 8 : middle + 8])) + data[middle + 8 :])
    assert overwritten.read_bytes()[-4:] == b"PAR1" and len(overwritten.read_bytes()) == len(data)

    console = quiet_console()
    second = run(spec, tmp_path, data_dir, console=console)
    text = console_text(console)
    assert str(truncated) in text and str(overwritten) in text, text
    assert text.count("damaged shard") == 2
    assert sorted(second.damaged) == sorted([str(truncated), str(overwritten)])
    for path in (truncated, overwritten):
        assert not path.exists()
        assert (path.parent / f".damaged-{path.name}").exists()
    assert second.items_computed == len(damaged_keys)
    new_files = set(shard_files(sweep_dir)) - set(files)
    recomputed = set()
    for path in new_files:
        recomputed |= set(pq.read_table(path)["item_key"].to_pylist())
    assert recomputed == damaged_keys
    assert_equals_baseline(sweep_dir, baseline)
    assert labels_of(second) == labels_of(first) == labels_of(baseline["outcome"])


# -- a bad day: Ctrl-C twice, a full store, a tracking store that does not answer ------------------
def invoke(args: list[str]) -> Any:
    """``qtrust <args>`` in this process (on the module's Ray); returns the CliRunner result."""
    from typer.testing import CliRunner

    from jobs.cli import app

    return CliRunner().invoke(app, args)


def test_ctrl_c_twice_tells_what_was_committed_and_status_shows_no_eta(
    baseline: dict[str, Any], data_dir: Path, tmp_path: Path
) -> None:
    driver, sweep_dir = start_slow_sweep(tmp_path, data_dir)
    try:
        wait_for_first_shard(driver, sweep_dir)
        os.kill(driver.proc.pid, signal.SIGINT)
        wait_for(lambda: "Stopping: no new shards start" in driver.output or None, 30, 0.05, "the first Ctrl-C")
        os.kill(driver.proc.pid, signal.SIGINT)
        code = driver.wait(90)
        output = driver.output
    finally:
        driver.cleanup()
    assert code == 130, output[-3000:]
    assert "Aborting" in output and "Interrupted (aborted)" in output, output[-3000:]
    assert "Traceback" not in output
    flat = " ".join(output.split())
    total = len(baseline["outcome"].plan.shards())
    found = re.search(r"this run committed (\d+) item\(s\) in (\d+) shard\(s\); (\d+) shard\(s\) left to compute", flat)
    assert found, output[-3000:]
    items, shards, left = (int(n) for n in found.groups())
    assert shards >= 1 and items == 2 * shards  # two items per shard
    assert left == total - shards
    assert len(records_in(sweep_dir)) >= items  # (a commit in flight when killed may land after the count)
    assert f"qtrust resume {sweep_dir}" in output

    status = invoke(["status", str(sweep_dir)])
    assert status.exit_code == 0, status.output
    assert "interrupted" in status.output and "ETA" not in status.output, status.output


def test_a_full_store_stops_the_sweep_with_one_line_and_resume_completes(
    baseline: dict[str, Any], local_ray, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import cluster.storage.atomic as atomic

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(fake_sweep(tmp_path, {"delay_s": 0.1}, items=ITEMS, resources={"max_in_flight": 1}))
    )
    sweep_dir = tmp_path / "runs" / "pipe"
    real_write = atomic.atomic_write_bytes
    refused: list[str] = []

    def disk_fills_after_the_first_shard(path: Any, data: bytes) -> None:
        # A shard file after the first one: the disk is full (the manifest, smaller, still fits).
        if "shard-" in str(path) and shard_files(sweep_dir):
            refused.append(str(path))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(atomic, "atomic_write_bytes", disk_fills_after_the_first_shard)
    result = invoke(driver_args("run", sweep, tmp_path, data_dir))
    monkeypatch.undo()
    output = result.output
    assert result.exit_code == 1, output[-3000:]
    assert "Traceback" not in output and isinstance(result.exception, SystemExit), result.exception
    assert 1 <= len(refused) <= 2, refused  # no new work after the first refused write (old: every shard, retried)
    flat = " ".join(output.split())
    assert flat.count("No space left on device") == 1, output[-3000:]
    assert f"the store {sweep_dir} takes no more writes: the disk is full" in flat, output[-3000:]
    assert f"qtrust resume {sweep_dir}" in flat and "the manifest says failed" in flat
    stored = len(records_in(sweep_dir))
    assert f"This run committed {stored} item(s) in {stored // 2} shard(s)" in flat, output[-3000:]
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["state"] == "failed" and "Errno 28" in manifest["reason"], manifest.get("reason")
    log = (sweep_dir / "logs" / "driver.log").read_text()
    assert "Traceback" in log and "No space left on device" in log
    assert f"details in {sweep_dir / 'logs' / 'driver.log'}" in flat

    output = resume(tmp_path, sweep_dir, data_dir)
    assert_equals_baseline(sweep_dir, baseline)
    assert json.loads((sweep_dir / "manifest.json").read_text())["state"] == "finished"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real, small filesystem of its own: a 4 MiB tmpfs (root only; unmounted after)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        # Deliberately a failure, not a skip: CI runs as root, where a tmpfs mounts; elsewhere say what is missing.
        pytest.fail(f"this test mounts a 4 MiB tmpfs and needs root: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last page with a ballast file (returned, to free the room again)."""
    ballast = disk / "ballast"
    handle = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(handle, b"\0" * 65536)
    except OSError as err:
        assert err.errno == 28
    try:
        while True:
            os.write(handle, b"\0" * 4096)
    except OSError as err:
        assert err.errno == 28
    finally:
        os.close(handle)
    return ballast


@pytest.fixture
def full_disk(small_disk: Path):
    """A real filesystem with no room left."""
    fill(small_disk)
    return small_disk


def test_a_disk_filling_up_mid_run_is_one_line_not_a_flood(
    baseline: dict[str, Any], local_ray, small_disk: Path, data_dir: Path, tmp_path: Path
) -> None:
    """The whole driver (``qtrust run``, its logging) on a real tmpfs that fills up after the first shard."""
    sweep = tmp_path / "sweep.yaml"
    spec = fake_sweep(small_disk, {"delay_s": 0.5}, items=ITEMS, resources={"max_in_flight": 1})
    sweep.write_text(yaml.safe_dump(spec))
    sweep_dir = small_disk / "runs" / "pipe"
    driver = Driver(driver_args("run", sweep, tmp_path, data_dir), tmp_path, tmp_path / "run.log")
    try:
        wait_for_first_shard(driver, sweep_dir)
        ballast = fill(small_disk)
        code = driver.wait(120)
        output = driver.output
    finally:
        driver.cleanup()
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 1, output[-3000:]
    assert "Traceback" not in output and "Logging error" not in output, output[-3000:]
    assert output.count("No space left on device") == 1, output[-3000:]
    flat = " ".join(output.split())
    assert f"the store {sweep_dir} takes no more writes: the disk is full" in flat, output[-3000:]
    assert f"qtrust resume {sweep_dir}" in flat
    assert len(lines) <= 6, lines  # the plan, Ray, the line; old: a traceback per attempt of every shard
    # The run's reserve of room (jobs/store/reserve.py), freed at the stop, held the manifest's last words.
    assert "the manifest says failed" in flat, output[-3000:]
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["state"] == "failed" and "Errno 28" in manifest["reason"], manifest.get("reason")
    assert not (sweep_dir / ".reserve").exists()
    stored = len(records_in(sweep_dir))
    assert 0 < stored < len(planned_keys(baseline["outcome"])), "the disk filled after the last shard"

    ballast.unlink()  # room again: the resume computes what is missing
    resume(tmp_path, sweep_dir, data_dir)
    assert_equals_baseline(sweep_dir, baseline)


@pytest.mark.parametrize(
    ("pages_free", "code", "says"),
    [
        (0, 2, "cannot write a file in"),  # the start-up probe of the root finds it (cluster/storage/writable.py)
        (1, 1, "nothing was started"),  # the probe's page fits, the lock takes it, the spec does not fit
    ],
)
def test_a_store_full_at_start_is_one_line(
    full_disk: Path, data_dir: Path, tmp_path: Path, pages_free: int, code: int, says: str
) -> None:
    ballast = full_disk / "ballast"
    size = ballast.stat().st_size
    os.truncate(ballast, size - size % 4096 - 4096 * pages_free)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(fake_sweep(full_disk, items=ITEMS)))
    result = invoke(driver_args("run", sweep, tmp_path, data_dir))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output[-3000:]
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.exception
    assert len(lines) == 1 and str(full_disk / "runs") in lines[0] and "the disk is full" in lines[0], lines
    assert says in lines[0], lines


def test_a_tracking_store_that_never_answers_is_told_and_resume_logs_everything_there(
    baseline: dict[str, Any], local_ray, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from tests.support.mlflow_server import _free_port, _mlflow_server

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"  # nothing answers there during the run
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(fake_sweep(tmp_path, items=ITEMS)))
    sweep_dir = tmp_path / "runs" / "pipe"
    args = [a if not a.startswith("sqlite:") else uri for a in driver_args("run", sweep, tmp_path, data_dir)]
    result = invoke(args)
    output = " ".join(result.output.split())
    assert result.exit_code == 0, result.output[-3000:]
    assert "Open the MLflow UI" not in output
    assert f"MLflow: not everything reached {uri}:" in output, output[-3000:]
    n_runs = len(mlflow_runs(baseline["root"] / "mlflow.db"))
    assert f"{n_runs} run(s) not opened" in output and "metric point(s)" in output, output[-3000:]
    assert f"log them again (final metrics, tables, run states) with: qtrust resume {sweep_dir}" in output
    assert json.loads((sweep_dir / "manifest.json").read_text())["mlflow"]["uri"] == uri

    # The server answers now: a resume with no --tracking-uri logs into it (the stored URI), not ./mlflow.db.
    with _mlflow_server(tmp_path, port):
        caught_up = invoke(["resume", str(sweep_dir), "--data-dir", str(data_dir), "--quiet"])
        client = MlflowClient(uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, max_results=1000)
    assert caught_up.exit_code == 0, caught_up.output[-3000:]
    assert "not everything reached" not in caught_up.output and "Open the MLflow UI" in caught_up.output
    assert not (tmp_path / "mlflow.db").exists()
    assert len(runs) == n_runs and all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.metrics for r in runs if r.data.tags.get("qtrust.kind") == "variant")


def test_resume_stops_with_one_line_when_the_stored_tracking_uri_had_credentials(
    baseline: dict[str, Any], data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    sweep_dir = tmp_path / "runs" / "pipe"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "sweep.yaml").write_text((Path(baseline["outcome"].store.dir) / "sweep.yaml").read_text())
    (sweep_dir / "manifest.json").write_text(json.dumps({"mlflow": {"uri": "http://alice:***@127.0.0.1:9/"}}))
    result = invoke(["resume", str(sweep_dir), "--data-dir", str(data_dir), "--quiet"])
    assert result.exit_code == 2, result.output[-3000:]
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(sweep_dir / "manifest.json") in lines[0] and "--tracking-uri" in lines[0], lines
    assert not (tmp_path / "mlflow.db").exists()  # no new local store was started


# -- the real built-in model ---------------------------------------------------------------------
def test_the_builtin_model_survives_its_worker_being_killed(local_ray, data_dir: Path, tmp_path: Path) -> None:
    def spec(root: Path) -> dict[str, Any]:
        return {
            "name": "smol",
            "models": [{"name": "smol", "source": "smollm2-135m", "engine": "hf"}],
            "recipes": [{"name": "ref", "method": "none"}],
            "benchmarks": [{"name": "xstest", "limit": 8, "max_new_tokens": 4}],
            "shard_size": 1,
            "quality_probe": False,
            "resources": {"num_cpus": 1, "max_in_flight": 1, "retry_backoff_s": 0.1},
            "storage": {"root": str(root / "runs")},
        }

    calm = run(spec(tmp_path / "calm"), tmp_path / "calm", data_dir)
    assert not calm.failed

    sweep_dir = tmp_path / "hit" / "runs" / "smol"
    stop = threading.Event()
    killed: dict[str, Any] = {}

    def kill_the_worker() -> None:
        # The first committed shard names the worker's pid; kill it while shards remain.
        def first_worker() -> int | None:
            if stop.is_set():
                return -1
            files = shard_files(sweep_dir)
            if not files:
                return None
            try:
                worker = pq.read_table(files[0])["worker"][0].as_py()
            except Exception:
                return None
            return json.loads(worker)["pid"]

        pid = wait_for(first_worker, 300, 0.02, "the first shard")
        if pid == -1:
            return
        killed["shards_before"] = len(shard_files(sweep_dir))
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"VariantWorker" in cmdline, cmdline
        os.kill(pid, signal.SIGKILL)
        killed["pid"] = pid

    thread = threading.Thread(target=kill_the_worker, daemon=True)
    thread.start()
    try:
        console = quiet_console()
        hit = run(spec(tmp_path / "hit"), tmp_path / "hit", data_dir, console=console)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert "pid" in killed, "the worker was never killed"
    assert killed["shards_before"] < 8, "the worker was killed after the sweep's last shard: nothing was tested"
    assert not hit.failed, console_text(console)
    records = records_in(sweep_dir)
    assert killed["pid"] in {json.loads(w)["pid"] for w in records["worker"]}
    assert len({json.loads(w)["pid"] for w in records["worker"]}) == 2, "no shard was computed after the kill"
    assert outputs_by_key(records) == outputs_by_key(records_in(calm.store.dir))
    assert set(records["item_key"]) == planned_keys(calm)
    assert labels_of(hit) == labels_of(calm)


# -- a node of a multi-node cluster removed mid-sweep (last: it replaces the module's Ray) -------------
@pytest.fixture
def three_gpu_nodes():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False})
    try:
        workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_node_removed_mid_sweep_loses_nothing(
    baseline: dict[str, Any], three_gpu_nodes, data_dir: Path, tmp_path: Path
) -> None:
    cluster, workers = three_gpu_nodes
    spec = fake_sweep(
        tmp_path,
        {"delay_s": 0.5},
        items=ITEMS,
        resources={"replicas": 2, "placement": "spread", "num_gpus": 1, "max_in_flight": 1},
    )
    sweep_dir = tmp_path / "runs" / "pipe"
    stop = threading.Event()
    removed: dict[str, Any] = {}

    def remove_a_node() -> None:
        def node_with_a_replica() -> Any:
            # A removable (non-head) node whose replica has committed a shard already.
            if stop.is_set():
                return "stop"
            seen = set()
            for path in shard_files(sweep_dir):
                try:
                    seen |= {json.loads(w)["node_id"] for w in pq.read_table(path)["worker"].to_pylist()}
                except Exception:
                    continue
            return next((n for n in workers if n.node_id in seen), None)

        node = wait_for(node_with_a_replica, 240, 0.05, "a replica on a node that can be removed")
        if node == "stop":
            return
        removed["shards_before"] = len(shard_files(sweep_dir))
        cluster.remove_node(node, allow_graceful=False)
        removed["node"] = node.node_id

    thread = threading.Thread(target=remove_a_node, daemon=True)
    thread.start()
    try:
        outcome = run(spec, tmp_path, data_dir)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert "node" in removed, "no node was removed"
    assert removed["shards_before"] < len(outcome.plan.shards()), "the node went after the sweep's last shard"
    assert not outcome.failed
    records = assert_equals_baseline(sweep_dir, baseline)
    nodes = {json.loads(w)["node_id"] for w in records["worker"]}
    assert removed["node"] in nodes, "the removed node never did any work: nothing was tested"
    assert len(nodes) >= 2
    events = outcome.store.read_manifest()["events"]
    assert any(e["kind"] == "worker_died" for e in events), events
    assert labels_of(outcome) == labels_of(baseline["outcome"])
