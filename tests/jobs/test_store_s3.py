"""The sweep store, the sweep lock and the variant cache on a real S3-compatible server (moto on 127.0.0.1).

Commits are single PUTs and scans never count a temporary or partial object; a second driver is
refused; a sweep on S3 killed mid-way and run again loses and duplicates nothing; another process
with only the endpoint and credentials reads its status and report; the credentials appear nowhere
in what the sweep writes or logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from cluster.storage.uri import open_location
from cluster.variants.cache import META_FILE, VariantCache
from jobs.store.lock import SweepLock, SweepLockHeld
from jobs.store.sweep import SweepStore
from tests.support.helpers import generation_row
from tests.support.pipeline_helpers import fake_sweep, kill_session, wait_for

QTRUST = str(Path(sys.executable).parent / "qtrust")


def _objects(bucket: str) -> list[str]:
    fs = open_location(f"s3://{bucket}").fs
    return sorted(
        i.path for i in fs.get_file_info(pafs.FileSelector(bucket, recursive=True)) if i.type == pafs.FileType.File
    )


# --------------------------------------------------------------------------------------------- store
def test_a_commit_is_one_put_and_scans_count_no_partial_or_temporary_object(s3_server) -> None:
    bucket = s3_server.create_bucket()
    store = SweepStore(f"s3://{bucket}/runs", "s1")
    before = len(s3_server.requests())
    path = store.commit_generations("m-ref", "xstest", [generation_row("k1"), generation_row("k2")])
    sent = s3_server.requests()[before:]
    key = path.split("/", 1)[1]
    writes = [r for r in sent if r.split()[0] in ("PUT", "POST")]
    assert writes == [f"PUT /{bucket}/{key} HTTP/1.1"], sent  # one PutObject: no multipart, no folder markers

    fs = store.fs
    folder = f"{bucket}/runs/s1/generations/variant=m-ref/benchmark=xstest"
    good = fs.open_input_stream(path).readall()
    with fs.open_output_stream(f"{folder}/.tmp-shard-upload") as out:  # a writer's temporary object
        out.write(good)
    with fs.open_output_stream(f"{folder}/shard-0123456789abcdef0123.parquet") as out:  # half an object
        out.write(good[: len(good) // 2])
    scan = store.scan()
    assert scan.keys == {"k1", "k2"} and scan.duplicates == 0
    assert [d.path.rsplit("/", 1)[1] for d in scan.damaged] == ["shard-0123456789abcdef0123.parquet"]
    assert f"{folder}/.damaged-shard-0123456789abcdef0123.parquet" in _objects(bucket)  # set aside, not counted
    again = store.scan(use_index=False)
    assert again.keys == {"k1", "k2"} and again.damaged == []

    store.write_manifest({"state": "running", "sweep": "s1"})
    assert store.read_manifest() == {"state": "running", "sweep": "s1"}
    assert store.uri == f"s3://{bucket}/runs/s1"


def test_a_second_driver_is_refused_on_s3_until_the_lease_is_released(s3_server) -> None:
    bucket = s3_server.create_bucket()
    uri = f"s3://{bucket}/runs/s1"
    first = SweepLock(uri, lease_s=10).acquire()
    assert first.mode == "lease"
    try:
        lease = json.loads(open_location(uri).fs.open_input_stream(f"{bucket}/runs/s1/.lock.json").readall())
        assert lease["pid"] == os.getpid() and lease["host"] and lease["lease_expires"]
        with pytest.raises(SweepLockHeld, match=f"pid {os.getpid()}"):
            SweepLock(uri, lease_s=10).acquire()
    finally:
        first.release()
    second = SweepLock(uri, lease_s=10).acquire()
    second.release()
    assert SweepLock(uri).holder() is None


def test_the_variant_cache_on_s3_builds_once_and_every_node_mirrors_it(s3_server, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket()
    key = "ab" * 16
    calls = []

    def build(out: Path) -> dict:
        calls.append(out)
        (out / "model.safetensors").write_bytes(b"\x02" * 3000)
        (out / "sub").mkdir()
        (out / "sub" / "config.json").write_text('{"bits": 4}')
        return {"bits": 4}

    first = VariantCache(f"s3://{bucket}/variants", local_mirror=tmp_path / "node-a").get_or_build(key, build)
    assert not first.hit and first.url == f"s3://{bucket}/variants/{key}"
    objects = _objects(bucket)
    assert f"{bucket}/variants/{key}/{META_FILE}" in objects and f"{bucket}/variants/{key}/sub/config.json" in objects
    assert not any(".leases" in o for o in objects)  # released after the build
    other = VariantCache(f"s3://{bucket}/variants", local_mirror=tmp_path / "node-b")
    second = other.get_or_build(key, build)
    assert second.hit and len(calls) == 1 and (second.path / "model.safetensors").read_bytes() == b"\x02" * 3000
    assert [e.key for e in other.entries()] == [key]


# --------------------------------------------------------------------------------------------- a sweep on S3
class Driver:
    """``qtrust run`` in its own session, its output kept in a file."""

    def __init__(self, args: list[str], cwd: Path, log: Path, env: dict[str, str]):
        self.log = log
        self.handle = open(log, "w")
        self.proc = subprocess.Popen(
            [QTRUST, *args], cwd=cwd, env=env, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        kill_session(self.proc.pid)
        self.handle.close()


def _driver_env(s3_server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        s3_server.env,
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        COLUMNS="250",
        PYTHONUNBUFFERED="1",
        QTRUST_SWEEP_LEASE_S="3",
    )
    return env


def _second_machine_env(s3_server) -> dict[str, str]:
    """Only what another machine would have: the endpoint, the credentials, a PATH and a HOME."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **s3_server.env}


@pytest.mark.slow
def test_a_sweep_on_s3_killed_and_run_again_loses_and_duplicates_nothing(
    s3_server, data_dir: Path, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from jobs.plan.build import build_plan
    from jobs.spec.load import parse_spec

    bucket = s3_server.create_bucket()
    spec = fake_sweep(tmp_path, {"delay_s": 0.4}, items=6, resources={"max_in_flight": 1})
    spec["storage"] = {"root": f"s3://{bucket}/runs", "variant_cache": f"s3://{bucket}/variants"}
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    args = [
        "run",
        str(sweep_file),
        "--data-dir",
        str(data_dir),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
        "--quiet",
    ]
    env = _driver_env(s3_server)
    store = SweepStore(f"s3://{bucket}/runs", "pipe")
    planned = build_plan(parse_spec(spec), data_dir).unique_keys()

    first = Driver(args, tmp_path, tmp_path / "first.log", env)
    try:

        def some_shards() -> int:
            if first.proc.poll() is not None:
                raise AssertionError(f"the driver ended early:\n{(tmp_path / 'first.log').read_text()[-3000:]}")
            return len(store.generations.shard_files())

        wait_for(some_shards, 240, 0.2, "a shard on S3")
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=30)
    finally:
        first.cleanup()
    partial = store.scan(update_index=False)
    assert 0 < len(partial.keys) < len(planned), "killed after the sweep ended: nothing was tested"

    # The killed driver's lease object stays until it expires (3 s here, 60 s by default): a second driver
    # started before then is refused with who holds it; afterwards it runs.
    lock = SweepLock(store.uri)
    holder = lock.holder()
    if holder is not None:
        assert holder["pid"] == first.proc.pid
    wait_for(lambda: lock.holder() is None, 30, 0.2, "the dead driver's lease to expire")
    second = Driver(args, tmp_path, tmp_path / "second.log", env)
    try:
        assert second.proc.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        second.cleanup()
    resumed = store.scan(use_index=False)  # every shard read and checked against its digest
    assert resumed.damaged == [] and resumed.duplicates == 0
    assert resumed.keys == planned
    assert store.read_manifest()["state"] == "finished"

    # Another machine: only the endpoint and the credentials in its environment.
    sweep_uri = f"s3://{bucket}/runs/pipe"
    status = subprocess.run(
        [QTRUST, "status", sweep_uri, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_second_machine_env(s3_server),
        cwd=tmp_path,
    )
    assert status.returncode == 0, status.stderr[-2000:]
    shown = json.loads(status.stdout)
    assert shown["state"] == "finished" and shown["lock_holder"] is None and shown["stale"] is False
    report = subprocess.run(
        [
            QTRUST,
            "report",
            sweep_uri,
            "--data-dir",
            str(data_dir),
            "--no-mlflow",
            "--out",
            str(tmp_path / "report.html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=_second_machine_env(s3_server),
        cwd=tmp_path,
    )
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    assert (tmp_path / "report.html").stat().st_size > 0 and "xstest" in report.stdout

    # The credentials are nowhere: manifest, stored spec, drivers' output, status output, MLflow runs.
    written = {
        "manifest": store.read_text(store.manifest_path) or "",
        "sweep.yaml": store.read_text(store.spec_path) or "",
        "first driver": (tmp_path / "first.log").read_text(),
        "second driver": (tmp_path / "second.log").read_text(),
        "status": status.stdout + status.stderr,
        "report": report.stdout + report.stderr,
    }
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=500)
    assert runs
    written["mlflow"] = json.dumps([{"params": r.data.params, "tags": r.data.tags} for r in runs])
    assert f"s3://{bucket}/runs/pipe" in written["mlflow"]  # the store is named, without credentials
    for secret in (s3_server.access_key, s3_server.secret_key):
        leaked = [name for name, text in written.items() if secret in text]
        assert not leaked, f"credential found in {leaked}"
