"""Pools of replicas on real local Ray: data parallel replicas, placement errors, replacement of dead
replicas, and the scheduler's own rules (chained stages, bounded in-flight work, retries with
backoff, idle pools giving their bundles back, no busy loop) proven with a tiny actor class."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.runtime import WorkerResources, create_pool_group
from jobs.pipeline.pools import PoolConfig, Task
from jobs.pipeline.scheduler import Scheduler
from tests.support.pipeline_helpers import (
    console_text,
    fake_sweep,
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

#: A custom resource the module's Ray has exactly one of: two pools asking for it cannot both hold it.
SLOT = "qtrust_test_slot"


@pytest.fixture(scope="module")
def ray_two_cpus():
    """A local Ray for this module: 2 CPUs, no GPU (whatever the machine has), one SLOT."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=0, resources={SLOT: 1}, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


pytestmark = pytest.mark.usefixtures("ray_two_cpus")


# -- a tiny replica class for the scheduler's own tests ------------------------------------------
class TinyReplica:
    """Offers load/ping/run_shard/close like a variant worker; counts what happens to it.

    It runs with ``max_concurrency`` > 1, so every call the scheduler sends runs at once and the
    actor itself sees how many of its calls are in flight.
    """

    def __init__(self, name: str):
        self.name = name
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.calls: dict[str, list[float]] = {}
        self.loaded_at = 0.0

    def load(self) -> dict[str, Any]:
        self.loaded_at = time.time()
        return {"placement": {"pid": os.getpid()}, "loaded_at": self.loaded_at, "name": self.name}

    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "loads": 1}

    def run_shard(self, payload: dict[str, Any]) -> dict[str, Any]:
        start = time.time()
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            times = self.calls.setdefault(payload["id"], [])
            times.append(start)
            attempt = len(times)
        try:
            time.sleep(payload.get("sleep", 0.0))
            if attempt <= payload.get("fail_attempts", 0):
                raise RuntimeError(f"injected failure of attempt {attempt}")
            return {
                "id": payload["id"],
                "value": payload.get("value"),
                "pid": os.getpid(),
                "max_active": self.max_active,
                "call_times": list(times),
                "start": start,
                "end": time.time(),
                "name": self.name,
            }
        finally:
            with self.lock:
                self.active -= 1

    def close(self) -> None:
        return None


class Recorder:
    """PoolEvents that keep every event with the time it came."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, Any]] = []

    def replica_state(self, pool: str, index: int, state: str, info: dict[str, Any]) -> None:
        self.events.append((time.time(), "replica", (pool, index, state)))

    def task_done(self, pool: str, task: Task, replica: int) -> None:
        self.events.append((time.time(), "done", (pool, task.id)))

    def task_retry(self, pool: str, task: Task, error: str, delay_s: float, replica: dict[str, Any]) -> None:
        self.events.append((time.time(), "retry", (pool, task.id, task.attempts, delay_s, error)))

    def task_failed(self, pool: str, task: Task, error: str) -> None:
        self.events.append((time.time(), "failed", (pool, task.id, error)))

    def message(self, kind: str, text: str) -> None:
        self.events.append((time.time(), "message", (kind, text)))

    def first(self, kind: str, match: tuple) -> float:
        for when, k, what in self.events:
            if k == kind and what[: len(match)] == match:
                return when
        raise AssertionError(f"no {kind} event {match} in {self.events}")


def tiny_pool(
    name: str,
    *,
    replicas: int = 1,
    num_cpus: float = 0.25,
    custom: dict[str, float] | None = None,
    concurrency: int = 8,
    **rules: Any,
) -> PoolConfig:
    resources = WorkerResources(num_cpus=num_cpus, custom=dict(custom or {}), max_restarts=0)

    def make_group() -> Any:
        return create_pool_group(name, resources, replicas)

    def make_actor(group: Any, index: int) -> Any:
        return (
            ray.remote(TinyReplica)
            .options(
                num_cpus=resources.num_cpus,
                resources=dict(resources.custom) or None,
                max_concurrency=concurrency,
                max_restarts=0,
                max_task_retries=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_bundle_index=index
                ),
            )
            .remote(name)
        )

    return PoolConfig(name=name, make_group=make_group, make_actor=make_actor, replicas=replicas, **rules)


def keep(results: dict[str, Any]):
    """An ``on_result`` that keeps each task's value."""

    def on_result(task: Task, value: Any, replica: dict[str, Any]) -> Any:
        results[task.id] = value
        return value

    return on_result


def placement_groups_alive() -> int:
    """Placement groups of this Ray that are not removed (the dashboard-free table)."""
    return sum(1 for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED")


# -- 4. the scheduler's own rules --------------------------------------------------------------
def test_a_stage_submits_to_another_pool_from_on_done_while_running() -> None:
    events = Recorder()
    scheduler = Scheduler(events, max_wait_s=0.2)
    scheduler.add_pool(tiny_pool("first", max_retries=0))
    scheduler.add_pool(tiny_pool("second", max_retries=0))
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    n = 4
    chained: list[str] = []

    def then(task: Task, value: Any) -> None:
        # Runs on the scheduling loop while it runs: a later stage hangs on this one.
        chained.append(task.id)
        scheduler.submit(
            "second",
            Task(f"judge-{task.id}", {"id": f"judge-{task.id}", "value": value["value"] * 10}, on_result=keep(second)),
        )
        if len(chained) == n:
            scheduler.close("second")

    for i in range(n):
        scheduler.submit(
            "first", Task(f"t{i}", {"id": f"t{i}", "value": i, "sleep": 0.1}, on_result=keep(first), on_done=then)
        )
    scheduler.close("first")
    report = scheduler.run()

    assert sorted(first) == [f"t{i}" for i in range(n)]
    assert sorted(second) == sorted(f"judge-t{i}" for i in range(n))
    assert {k: v["value"] for k, v in second.items()} == {f"judge-t{i}": i * 10 for i in range(n)}
    assert not report.failed and not report.not_started
    assert len(report.done) == 2 * n
    # Each second-stage task started only after its first-stage task committed.
    for i in range(n):
        assert second[f"judge-t{i}"]["start"] >= first[f"t{i}"]["end"]
    assert placement_groups_alive() == 0, "both pools should have given their placement groups back"


def test_in_flight_work_per_replica_is_bounded() -> None:
    scheduler = Scheduler(Recorder(), max_wait_s=0.2)
    scheduler.add_pool(tiny_pool("bounded", replicas=2, max_in_flight=2, concurrency=16))
    results: dict[str, Any] = {}
    for i in range(16):
        scheduler.submit("bounded", Task(f"t{i}", {"id": f"t{i}", "sleep": 0.3}, on_result=keep(results)))
    scheduler.close("bounded")
    report = scheduler.run()

    assert len(report.done) == 16 and not report.failed
    per_actor: dict[int, int] = {}
    for value in results.values():
        per_actor[value["pid"]] = max(per_actor.get(value["pid"], 0), value["max_active"])
    assert len(per_actor) == 2, "both replicas should have worked"
    # The actor runs up to 16 calls at once, so only the scheduler's bound keeps it at 2.
    assert max(per_actor.values()) == 2, per_actor


def test_failed_attempts_are_retried_with_backoff_and_counted() -> None:
    events = Recorder()
    scheduler = Scheduler(events, max_wait_s=0.2)
    scheduler.add_pool(tiny_pool("flaky", max_retries=2, backoff_s=0.4))
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    scheduler.submit("flaky", Task("twice", {"id": "twice", "fail_attempts": 2}, on_result=keep(results)))
    scheduler.submit(
        "flaky",
        Task(
            "always",
            {"id": "always", "fail_attempts": 99},
            on_result=keep(results),
            on_failed=lambda task, error: failed.__setitem__(task.id, error),
        ),
    )
    scheduler.close("flaky")
    report = scheduler.run()

    assert report.done == ["twice"]
    assert set(report.failed) == {"always"} and "injected failure of attempt 3" in report.failed["always"]
    assert failed == report.failed
    assert report.retried == 4  # two retries of each task
    times = results["twice"]["call_times"]
    assert len(times) == 3
    # Backoff doubles: >= 0.4 s before the second attempt, >= 0.8 s before the third.
    assert times[1] - times[0] >= 0.4 - 0.02, times
    assert times[2] - times[1] >= 0.8 - 0.02, times
    delays = [what[3] for _when, kind, what in events.events if kind == "retry" and what[1] == "twice"]
    assert delays == [pytest.approx(0.4), pytest.approx(0.8)]


def test_an_idle_closed_pool_gives_its_bundle_back_before_a_waiting_pool_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both pools need the cluster's one SLOT: the second can only be placed once the first let go.
    monkeypatch.setattr("jobs.pipeline.scheduler.GROUP_WAIT_NOTICE_S", 0.5)
    events = Recorder()
    scheduler = Scheduler(events, max_wait_s=0.2)
    scheduler.add_pool(tiny_pool("a", custom={SLOT: 1}))
    scheduler.add_pool(tiny_pool("b", custom={SLOT: 1}))
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    for i in range(3):
        scheduler.submit("a", Task(f"a{i}", {"id": f"a{i}", "sleep": 0.3}, on_result=keep(a)))
    scheduler.close("a")
    for i in range(2):
        scheduler.submit("b", Task(f"b{i}", {"id": f"b{i}", "sleep": 0.1}, on_result=keep(b)))
    scheduler.close("b")
    report = scheduler.run()

    assert len(report.done) == 5 and not report.failed
    a_released = events.first("replica", ("a", 0, "released"))
    b_loading = events.first("replica", ("b", 0, "loading"))
    assert b_loading >= a_released, "b's replica started before a gave its bundle back"
    a_last_end = max(v["end"] for v in a.values())
    b_first_start = min(v["start"] for v in b.values())
    assert b_first_start >= a_last_end
    assert placement_groups_alive() == 0
    waiting = [what[1] for _when, kind, what in events.events if kind == "message" and what[0] == "waiting"]
    assert len(waiting) == 1 and waiting[0].startswith("b: no room for its 1 replica(s)"), waiting


def test_the_loop_does_not_spin_while_it_waits() -> None:
    marks: dict[str, float] = {}

    class Ready(Recorder):
        def replica_state(self, pool: str, index: int, state: str, info: dict[str, Any]) -> None:
            if state == "ready":
                marks["cpu"] = time.process_time()
                marks["wall"] = time.monotonic()
            super().replica_state(pool, index, state, info)

    scheduler = Scheduler(Ready())
    scheduler.add_pool(tiny_pool("slow"))
    scheduler.submit("slow", Task("slow", {"id": "slow", "sleep": 3.0}))
    scheduler.close("slow")
    report = scheduler.run()
    cpu = time.process_time() - marks["cpu"]
    wall = time.monotonic() - marks["wall"]
    assert report.done == ["slow"]
    assert wall >= 2.9
    assert cpu < 0.5, f"the driver used {cpu:.2f} s of CPU during a {wall:.1f} s wait"


# -- sweeps with the fake engine ---------------------------------------------------------------
def no_run_left_running(db: Path) -> bool:
    """True when no MLflow run of the store at ``db`` is RUNNING (or the store was never created)."""
    if not db.exists():
        return True
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = [r.info.run_name for r in client.search_runs(experiments) if r.info.status == "RUNNING"]
    assert not running, f"runs left RUNNING: {running}"
    return True


def test_two_replicas_share_the_work_and_answer_like_one(data_dir: Path, tmp_path: Path) -> None:
    two = fake_sweep(tmp_path / "two", {"delay_s": 0.15}, resources={"replicas": 2, "max_in_flight": 1})
    outcome = run(two, tmp_path / "two", data_dir)
    assert not outcome.failed
    replicas = outcome.store.read_manifest()["pools"]["generate:tiny-ref"]["replicas"]
    assert len(replicas) == 2
    assert all(r["items_done"] > 0 for r in replicas), replicas
    assert sum(r["items_done"] for r in replicas) == len(planned_keys(outcome))
    records = records_in(outcome.store.dir)
    pids = {json.loads(w)["pid"] for w in records["worker"]}
    assert len(pids) == 2, pids
    assert pids == {r["pid"] for r in replicas}

    one = fake_sweep(tmp_path / "one", {"delay_s": 0.0})
    single = run(one, tmp_path / "one", data_dir)
    assert labels_of(outcome) == labels_of(single)
    assert metrics_of(outcome) == metrics_of(single)
    assert outputs_by_key(records) == outputs_by_key(records_in(single.store.dir))
    assert set(records["item_key"]) == planned_keys(outcome)


def test_replicas_that_loaded_different_weights_are_warned_about(data_dir: Path, tmp_path: Path) -> None:
    # One of the two replicas reports altered weights, as if its node held a differently built variant.
    # Enough work (12 shards of 1 s) that the second replica has loaded before the first has done it
    # all, even on busy cores: a replica released while still loading reports no weights.
    options = {"altered_weights_marker": str(tmp_path / "altered"), "delay_s": 0.5}
    spec = fake_sweep(tmp_path, options, resources={"replicas": 2, "max_in_flight": 1}, items=12)
    console = quiet_console()
    outcome = run(spec, tmp_path, data_dir, console)
    assert not outcome.failed
    manifest = outcome.store.read_manifest()
    digests = {r["index"]: r.get("loaded_sha256") for r in manifest["pools"]["generate:tiny-ref"]["replicas"]}
    assert len(set(digests.values())) == 2 and None not in digests.values(), digests
    warnings = [e["message"] for e in manifest["events"] if e["kind"] == "replica_weights_differ"]
    assert len(warnings) == 1, manifest["events"]
    assert warnings[0].startswith("tiny-ref: replicas loaded different weights")
    for digest in digests.values():
        assert digest[:12] in warnings[0]
    assert "replica 0 on " in warnings[0] and "replica 1 on " in warnings[0]
    assert "tiny-ref: replicas loaded different weights" in console_text(console)


def test_a_bundle_the_cluster_cannot_hold_is_a_placement_error(data_dir: Path, tmp_path: Path) -> None:
    from jobs.runner import PlacementError

    spec = fake_sweep(tmp_path, resources={"num_gpus": 1})
    with pytest.raises(PlacementError) as info:
        run(spec, tmp_path, data_dir)
    message = str(info.value)
    assert len(info.value.problems) == 1
    assert "variant tiny-ref" in message and "1 GPU" in message
    assert "0 GPU" in message and "2 CPU" in message, "the message should say what the cluster has"
    assert shard_files(tmp_path / "runs" / "pipe") == []
    assert no_run_left_running(tmp_path / "mlflow.db")
    manifest = tmp_path / "runs" / "pipe" / "manifest.json"
    assert not manifest.exists() or json.loads(manifest.read_text())["state"] != "running"


def test_the_cli_reports_an_impossible_bundle_in_one_message(data_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(fake_sweep(tmp_path, resources={"memory": "10TiB"})))
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(sweep),
            "--data-dir",
            str(data_dir),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
            "--quiet",
        ],
    )
    output = result.output  # stdout and stderr as a terminal shows them
    assert result.exit_code == 2, output
    assert "Traceback" not in output and result.exception is None or isinstance(result.exception, SystemExit), output
    assert output.count("cannot hold") == 1, output
    assert "variant tiny-ref" in output and "10240.0 GiB memory" in output, output
    assert re.search(r"nodes: [^)]*GiB memory", output), output
    assert shard_files(tmp_path / "runs" / "pipe") == []


def test_a_replica_dead_past_its_restarts_is_replaced_and_the_sweep_completes(data_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "crashes"
    # Every fresh worker process dies on its first call, twice in all; Ray does not restart them.
    crashing = fake_sweep(
        tmp_path / "a",
        {"crash_on_call": 1, "crash_marker": str(marker), "crash_times": 2, "delay_s": 0.05},
        resources={"max_restarts": 0, "max_retries": 3, "max_replacements": 3},
    )
    outcome = run(crashing, tmp_path / "a", data_dir)
    assert len(marker.read_text().splitlines()) == 2, "the workers did not crash twice: the test would prove nothing"
    assert not outcome.failed
    assert outcome.replaced >= 2
    manifest = outcome.store.read_manifest()
    replaced = [e for e in manifest["events"] if e["kind"] == "replica_replaced"]
    assert len(replaced) >= 2, manifest["events"]
    assert "starting a fresh actor" in replaced[0]["message"]
    replicas = manifest["pools"]["generate:tiny-ref"]["replicas"]
    assert replicas[0]["replacements"] >= 2
    crashed_pids = {int(line.split("pid=")[1].split()[0]) for line in marker.read_text().splitlines()}
    records = records_in(outcome.store.dir)
    assert not crashed_pids & {json.loads(w)["pid"] for w in records["worker"]}

    calm = run(fake_sweep(tmp_path / "b"), tmp_path / "b", data_dir)
    assert labels_of(outcome) == labels_of(calm)
    assert outputs_by_key(records) == outputs_by_key(records_in(calm.store.dir))
    assert set(records["item_key"]) == planned_keys(outcome)


def test_when_the_replacements_are_spent_the_pools_shards_fail_and_say_so(data_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "crashes"
    spec = fake_sweep(
        tmp_path,
        {"crash_on_call": 1, "crash_marker": str(marker), "crash_times": 5},
        resources={"max_restarts": 0, "max_retries": 3, "max_replacements": 1},
    )
    outcome = run(spec, tmp_path, data_dir)
    assert len(marker.read_text().splitlines()) == 2  # the first worker and its one replacement
    assert outcome.replaced == 1
    shards = len(outcome.plan.shards())
    assert len(outcome.failed) == shards and outcome.computed == 0
    for error in outcome.failed.values():
        assert "max_replacements=1 is spent" in error, outcome.failed
    manifest = outcome.store.read_manifest()
    assert manifest["state"] == "failed"
    assert any(e["kind"] == "pool_failed" and "max_replacements=1" in e["message"] for e in manifest["events"])
    assert shard_files(tmp_path / "runs" / "pipe") == []


def test_a_released_pool_that_gets_work_again_starts_again() -> None:
    events = Recorder()
    scheduler = Scheduler(events, max_wait_s=0.2)
    scheduler.add_pool(tiny_pool("again"))
    scheduler.add_pool(tiny_pool("between"))
    results: dict[str, Any] = {}

    def back(task: Task, value: Any) -> None:
        scheduler.submit("again", Task("second", {"id": "second"}, on_result=keep(results)))

    def forth(task: Task, value: Any) -> None:
        scheduler.submit(
            "between", Task("middle", {"id": "middle", "sleep": 0.5}, on_result=keep(results), on_done=back)
        )
        scheduler.close("between")

    scheduler.submit("again", Task("first", {"id": "first"}, on_result=keep(results), on_done=forth))
    scheduler.close("again")
    report = scheduler.run()
    assert report.done == ["first", "middle", "second"] and not report.failed
    states = [what[2] for _when, kind, what in events.events if kind == "replica" and what[0] == "again"]
    assert states.count("loading") == 2 and states.count("released") == 2, states
    assert results["first"]["pid"] != results["second"]["pid"]
    assert placement_groups_alive() == 0


def test_open_parkable_pools_waiting_on_each_other_hand_their_room_over() -> None:
    # The adaptive pattern: "ref" and "var" both need the cluster's one SLOT, and each gets its next
    # task only after the other's is done (a round needs both sides). Neither pool is closed until the
    # end, so without parking the first one placed would hold the SLOT idle forever.
    events = Recorder()
    scheduler = Scheduler(events, max_wait_s=0.1, park_after_s=0.2)
    scheduler.add_pool(tiny_pool("ref", custom={SLOT: 1}, parkable=True))
    scheduler.add_pool(tiny_pool("var", custom={SLOT: 1}, parkable=True))
    results: dict[str, Any] = {}
    rounds = 3

    def chain(pool: str, i: int) -> Task:
        other = "var" if pool == "ref" else "ref"

        def on_done(task: Task, value: Any) -> None:
            if pool == "ref":
                scheduler.submit(other, chain(other, i))
            elif i + 1 < rounds:
                scheduler.submit(other, chain(other, i + 1))
            else:
                scheduler.close("ref")
                scheduler.close("var")

        return Task(f"{pool}{i}", {"id": f"{pool}{i}"}, on_result=keep(results), on_done=on_done)

    scheduler.submit("ref", chain("ref", 0))
    scheduler.submit("var", Task("var-warm", {"id": "var-warm"}, on_result=keep(results)))
    report = scheduler.run()

    assert not report.failed and sorted(report.done) == sorted(
        ["var-warm", *(f"ref{i}" for i in range(rounds)), *(f"var{i}" for i in range(rounds))]
    )
    parked = [what[1] for _when, kind, what in events.events if kind == "message" and what[0] == "pool_parked"]
    assert parked and all("its room goes to" in text for text in parked), parked
    assert placement_groups_alive() == 0


def test_queued_tasks_no_longer_needed_are_withdrawn_before_they_run() -> None:
    scheduler = Scheduler(Recorder(), max_wait_s=0.1)
    scheduler.add_pool(tiny_pool("w", max_in_flight=1))
    results: dict[str, Any] = {}
    taken: list[Task] = []

    def decided(task: Task, value: Any) -> None:
        taken.extend(scheduler.withdraw("w", lambda t: t.id.startswith("ahead")))

    scheduler.submit("w", Task("first", {"id": "first"}, on_result=keep(results), on_done=decided))
    for i in range(3):
        scheduler.submit("w", Task(f"ahead{i}", {"id": f"ahead{i}"}, on_result=keep(results)))
    scheduler.submit("w", Task("kept", {"id": "kept"}, on_result=keep(results)))
    scheduler.close("w")
    report = scheduler.run()
    assert report.done == ["first", "kept"] and not report.failed and not report.not_started
    assert sorted(t.id for t in taken) == ["ahead0", "ahead1", "ahead2"]
    assert set(results) == {"first", "kept"} and placement_groups_alive() == 0


def test_a_pool_that_is_not_parkable_keeps_its_room_while_open() -> None:
    scheduler = Scheduler(Recorder(), max_wait_s=0.1, park_after_s=0.1)
    scheduler.add_pool(tiny_pool("held", custom={SLOT: 1}))
    scheduler.add_pool(tiny_pool("waits", custom={SLOT: 1}))
    results: dict[str, Any] = {}
    stop = threading.Timer(3.0, scheduler.request_stop)

    def later(task: Task, value: Any) -> None:
        scheduler.submit("waits", Task("w", {"id": "w"}, on_result=keep(results)))
        stop.start()

    scheduler.submit("held", Task("h", {"id": "h"}, on_result=keep(results), on_done=later))
    try:
        report = scheduler.run()
    finally:
        stop.cancel()
    # "held" is open and idle but not parkable: "waits" never gets the SLOT (the run is stopped).
    assert report.done == ["h"] and report.not_started == ["w"]


def test_an_exception_out_of_the_loop_kills_the_replicas_at_once() -> None:
    # What a second Ctrl-C or the stop deadline does: no waiting for the shard in flight to end.
    started: dict[str, float] = {}

    def tick() -> None:
        if "ready" in started and time.monotonic() - started["ready"] > 1.0:
            raise KeyboardInterrupt

    class Ready(Recorder):
        def replica_state(self, pool: str, index: int, state: str, info: dict[str, Any]) -> None:
            if state == "ready":
                started["ready"] = time.monotonic()
            super().replica_state(pool, index, state, info)

    scheduler = Scheduler(Ready(), tick=tick, tick_interval_s=0.2)
    scheduler.add_pool(tiny_pool("stuck", concurrency=1))  # busy like a variant worker: close would wait
    scheduler.submit("stuck", Task("long", {"id": "long", "sleep": 60.0}))
    scheduler.close("stuck")
    with pytest.raises(KeyboardInterrupt):
        scheduler.run()
    took = time.monotonic() - started["ready"]
    assert took < 5.0, f"aborting took {took:.1f}s"
    assert scheduler.report.stopped and "long" in scheduler.report.not_started
    scheduler.abort()  # what the runner calls next: harmless the second time
    wait_for(lambda: placement_groups_alive() == 0, 10, what="the pool's placement group to be removed")


def test_a_store_without_room_halts_the_scheduler_instead_of_retrying() -> None:
    # A commit that finds the disk full is not retried (it would fail the same) nor failed: the task and
    # everything still queued are left for a resume, nothing new starts, and the report says why.
    import errno

    stored: list[str] = []
    failed: list[str] = []

    def store(task: Task, value: Any, replica: dict[str, Any]) -> Any:
        if task.id != "first":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"/store/{task.id}.parquet")
        stored.append(task.id)
        return value

    scheduler = Scheduler(Recorder(), max_wait_s=0.2)
    scheduler.add_pool(tiny_pool("disk", max_in_flight=1, max_retries=3, backoff_s=0.05))
    for name in ("first", "second", "third", "fourth"):
        scheduler.submit(
            "disk", Task(name, {"id": name}, on_result=store, on_failed=lambda task, error: failed.append(task.id))
        )
    scheduler.close("disk")
    report = scheduler.run()
    assert report.halted == "the disk is full ([Errno 28] No space left on device: /store/second.parquet)"
    assert report.done == ["first"] and stored == ["first"]
    assert sorted(report.not_started) == ["fourth", "second", "third"]
    assert not report.failed and not failed and report.retried == 0 and report.stopped
    assert placement_groups_alive() == 0
