"""Training jobs share this machine's memory and cores: a job that would not fit waits for one
to end, and the hosts training at a time share the cores, told again as jobs start and end."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m5flow_local.sagemaker import LocalSageMaker
from m5flow_local.sagemaker.algorithm import _FollowThreadShare
from m5flow_local.sagemaker.capacity import (
    BYTES_PER_PARQUET_CELL,
    BYTES_PER_QUANTILE_CELL,
    BYTES_PER_TEXT_BYTE,
    HOST_BASE_BYTES,
    Capacity,
    cgroup_memory_available,
    host_memory_estimate,
)
from m5flow_local.sagemaker.training import _child_env
from tests.local.conftest_sagemaker import (
    ACCOUNT,
    REGION,
    EventLog,
    LocalCloud,
    csv_bytes,
    put,
    training_request,
    tweedie_data,
)

GB = 10**9
LONG = {"objective": "reg:tweedie", "max_depth": "3", "num_round": "1000000"}
SHORT = {"objective": "reg:tweedie", "max_depth": "3", "num_round": "5"}


NEVER = threading.Event()  # a stop request that never comes


def _admit_now(gate: Capacity, job: str, need: int, hosts: int = 1) -> int:
    """`gate.admit` for a job that must not wait; the threads each of its hosts gets."""
    threads = gate.admit(job, need, NEVER.is_set, pytest.fail, hosts=hosts)
    assert threads is not None
    return threads


def _machine_running(*jobs: tuple[str, int]) -> Capacity:
    """A gate on a machine with 10 GB available and 2 cores, holding memory for these
    running jobs."""
    gate = Capacity(lambda: 10 * GB, cores=2)
    for job, need in jobs:
        _admit_now(gate, job, need)
    return gate


def _admit_in_thread(
    gate: Capacity, job: str, need: int, stop: threading.Event = NEVER
) -> tuple[threading.Thread, list[int | None], list[tuple[int, int]]]:
    """Run `gate.admit` in a thread; return the thread, its result list and its waits."""
    result: list[int | None] = []
    waits: list[tuple[int, int]] = []
    thread = threading.Thread(
        target=lambda: result.append(
            gate.admit(job, need, stop.is_set, lambda held, budget: waits.append((held, budget)))
        )
    )
    thread.start()
    return thread, result, waits


def test_jobs_that_fit_together_start_together_and_the_next_waits_for_an_end() -> None:
    gate = _machine_running(("a", 4 * GB), ("b", 5 * GB))
    thread, result, waits = _admit_in_thread(gate, "c", 3 * GB)
    thread.join(0.3)
    assert thread.is_alive() and waits == [(9 * GB, 10 * GB)]
    gate.release("b")  # 4 + 3 fit in 10
    thread.join(5)
    assert result == [1] and waits == [(9 * GB, 10 * GB)]  # a thread each of the 2 cores


def test_a_job_too_large_for_the_machine_still_starts_once_nothing_else_runs() -> None:
    """The estimate may be wrong: refusing on it would fail runs that could finish."""
    gate = _machine_running(("small", 1 * GB))
    thread, result, _ = _admit_in_thread(gate, "huge", 50 * GB)
    thread.join(0.3)
    assert thread.is_alive()
    gate.release("small")
    thread.join(5)
    assert result == [2]  # alone: both cores


def test_jobs_start_in_the_order_they_asked() -> None:
    """A large job is not overtaken forever by smaller ones that keep fitting."""
    gate = _machine_running(("a", 6 * GB))
    large, large_result, _ = _admit_in_thread(gate, "large", 9 * GB)
    large.join(0.3)
    small, small_result, _ = _admit_in_thread(gate, "small", 1 * GB)
    small.join(0.3)
    assert large.is_alive() and small.is_alive()  # "small" would fit, but "large" asked first
    gate.release("a")
    large.join(5)
    assert large_result == [2]
    small.join(5)
    assert small_result == [1]  # 9 + 1 fit in 10


def test_a_stopped_job_leaves_the_queue_holding_nothing() -> None:
    gate = _machine_running(("running", 8 * GB))
    stop = threading.Event()
    thread, result, _ = _admit_in_thread(gate, "queued", 8 * GB, stop)
    thread.join(0.3)
    stop.set()
    gate.wake()
    thread.join(5)
    assert result == [None]
    gate.release("running")
    assert _admit_now(gate, "next", 9 * GB) == 2  # "queued" held nothing


def test_the_budget_is_measured_again_whenever_no_job_holds_memory() -> None:
    """Memory other programs took between runs is respected."""
    available = [10 * GB]
    gate = Capacity(lambda: available[0], cores=2)
    _admit_now(gate, "a", 4 * GB)
    gate.release("a")
    available[0] = 6 * GB
    _admit_now(gate, "b", 4 * GB)
    thread, result, waits = _admit_in_thread(gate, "c", 4 * GB)
    thread.join(0.3)
    assert waits == [(4 * GB, 6 * GB)]
    gate.release("b")
    thread.join(5)
    assert result == [2]


def test_the_cores_are_shared_again_whenever_a_job_starts_or_ends() -> None:
    """At least one thread a host, however many hosts train; each job hears of every change
    while it holds its place, and only of changes."""
    gate = Capacity(lambda: 100 * GB, cores=4)
    told: dict[str, list[int]] = {}

    def admit(job: str, hosts: int = 1) -> int | None:
        told[job] = []
        return gate.admit(job, GB, NEVER.is_set, pytest.fail, hosts, told[job].append)

    assert admit("alone") == 4
    assert admit("second") == 2
    assert admit("three-hosts", hosts=3) == 1
    assert admit("one-more") == 1
    gate.release("three-hosts")
    gate.release("one-more")
    gate.release("second")
    assert told == {
        "alone": [4, 2, 1, 2, 4],
        "second": [2, 1, 2],
        "three-hosts": [1],
        "one-more": [1],  # no change when "three-hosts" left: 4 cores over 3 hosts
    }
    gate.release("alone")
    assert admit("two-hosts", hosts=2) == 2
    assert told["two-hosts"] == [2]


@pytest.mark.parametrize(
    ("nthread", "threads"),
    [(None, "3"), ("2", "2"), (" 2", "2"), ("+4", "4"), ("many", "3")],  # "many": refused later
)
def test_a_jobs_own_nthread_sets_its_hosts_openmp_threads(
    nthread: str | None, threads: str
) -> None:
    """XGBoost builds the DMatrix on OpenMP's default threads: the job's nthread (as the
    container reads it) or else the share."""
    hyperparameters = {} if nthread is None else {"nthread": nthread}
    assert _child_env({"HyperParameters": hyperparameters}, 3)["OMP_NUM_THREADS"] == threads


def test_a_host_follows_its_thread_share_between_rounds(tmp_path: Path) -> None:
    """The trees stay the same (test_algorithm_data); the threads follow the platform."""
    import xgboost as xgb

    threads_file = tmp_path / "threads"
    threads_file.write_text("3")

    class ShareChangesAfterRound2(xgb.callback.TrainingCallback):
        def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict) -> bool:
            if epoch == 2:
                threads_file.write_text("1")
            return False

    def trained_on(rounds: int) -> str:
        table = tweedie_data(np.random.default_rng(1), 300)
        data = xgb.DMatrix(table[:, 1:], label=table[:, 0])
        callbacks = [ShareChangesAfterRound2(), _FollowThreadShare(threads_file).callback]
        booster = xgb.train({"max_depth": 2}, data, rounds, callbacks=callbacks)
        return json.loads(booster.save_config())["learner"]["generic_param"]["nthread"]

    assert trained_on(2) == "3"
    threads_file.write_text("3")
    assert trained_on(4) == "1"


def test_memory_estimate_counts_parquet_cells_and_text_bytes(tmp_path: Path) -> None:
    parquet_dir, csv_dir = tmp_path / "train", tmp_path / "validation"
    parquet_dir.mkdir()
    csv_dir.mkdir()
    table = pa.table({f"c{i}": np.zeros(1000, np.float32) for i in range(5)})
    pq.write_table(table, parquet_dir / "a.parquet")
    pq.write_table(table, parquet_dir / "b.parquet")
    (parquet_dir / ".hidden").write_text("x" * 10)  # not data: never loaded
    (csv_dir / "v.csv").write_text("1,2,3\n" * 100)
    # The train channel's type is every channel's: a CSV file among Parquet counts by size.
    assert host_memory_estimate([parquet_dir, csv_dir], parquet=True) == (
        HOST_BASE_BYTES + 2 * 5000 * BYTES_PER_PARQUET_CELL + 600 * BYTES_PER_TEXT_BYTE
    )
    assert host_memory_estimate([parquet_dir, csv_dir], parquet=True, quantile=True) == (
        HOST_BASE_BYTES + 2 * 5000 * BYTES_PER_QUANTILE_CELL + 600 * BYTES_PER_TEXT_BYTE
    )
    parquet_size = sum(p.stat().st_size for p in parquet_dir.glob("*.parquet"))
    assert host_memory_estimate([parquet_dir, csv_dir], parquet=False) == (
        HOST_BASE_BYTES + (parquet_size + 600) * BYTES_PER_TEXT_BYTE
    )


@pytest.fixture(scope="module")
def small_machine(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCloud]:
    """A local SageMaker on a machine with room for one training job at a time."""
    events = EventLog()
    workdir = tmp_path_factory.mktemp("sagemaker")
    local = LocalSageMaker(
        events.emit,
        workdir,
        region=REGION,
        account_id=ACCOUNT,
        capacity=Capacity(lambda: HOST_BASE_BYTES + 50 * 2**20, cores=2),
    )
    url = local.start()
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="m5flow-capacity")
    sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=url)
    cloud = LocalCloud(sm=sm, s3=s3, events=events, workdir=workdir, bucket="m5flow-capacity")
    rng = np.random.default_rng(3)
    put(cloud, "runs/cap/train/part-0.csv", csv_bytes(tweedie_data(rng, 400)))
    put(cloud, "runs/cap/validation/part-0.csv", csv_bytes(tweedie_data(rng, 100)))
    try:
        yield cloud
    finally:
        local.stop()


def _wait_for_message(cloud: LocalCloud, job: str, text: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        described = cloud.sm.describe_training_job(TrainingJobName=job)
        if text in described["SecondaryStatusTransitions"][-1].get("StatusMessage", ""):
            return described
        time.sleep(0.1)
    raise TimeoutError(f"{job} never said {text!r}: {described['SecondaryStatusTransitions']}")


def _queue_behind(cloud: LocalCloud, running: str, queued: str) -> dict:
    """Start `running` (long) and, once it trains, `queued` (short); return `queued` waiting."""
    cloud.sm.create_training_job(**training_request(cloud, running, "runs/cap", LONG))
    _wait_for_message(cloud, running, "Training in progress")
    cloud.sm.create_training_job(**training_request(cloud, queued, "runs/cap", SHORT))
    return _wait_for_message(cloud, queued, "waiting for memory")


def test_a_job_that_does_not_fit_beside_a_running_one_trains_after_it(
    small_machine: LocalCloud,
) -> None:
    cloud = small_machine
    waiting = _queue_behind(cloud, "cap-first", "cap-second")
    assert waiting["TrainingJobStatus"] == "InProgress"
    assert waiting["SecondaryStatus"] == "Downloading"
    cloud.sm.stop_training_job(TrainingJobName="cap-first")
    first = cloud.events.wait_final("cap-first")["detail"]
    second = cloud.events.wait_final("cap-second")["detail"]
    assert first["TrainingJobStatus"] == "Stopped"
    assert second["TrainingJobStatus"] == "Completed", second.get("FailureReason")
    training = next(t for t in second["SecondaryStatusTransitions"] if t["Status"] == "Training")
    assert training["StartTime"] >= first["TrainingEndTime"]
    for job in ("cap-first", "cap-second"):  # each trained alone: on both cores
        host = json.loads((cloud.workdir / "training" / job / "algo-1" / "config.json").read_text())
        assert Path(host["threads_file"]).read_text() == "2"


def test_a_job_stopped_while_it_waits_for_memory_ends_stopped_without_training(
    small_machine: LocalCloud,
) -> None:
    cloud = small_machine
    _queue_behind(cloud, "cap-running", "cap-queued")
    cloud.sm.stop_training_job(TrainingJobName="cap-queued")
    queued = cloud.events.wait_final("cap-queued", timeout=30)["detail"]
    assert queued["TrainingJobStatus"] == "Stopped"
    assert "Training" not in [t["Status"] for t in queued["SecondaryStatusTransitions"]]
    assert cloud.sm.describe_training_job(TrainingJobName="cap-running")["SecondaryStatus"] == (
        "Training"
    )
    cloud.sm.stop_training_job(TrainingJobName="cap-running")
    assert cloud.events.wait_final("cap-running")["detail"]["TrainingJobStatus"] == "Stopped"


def test_waiting_for_memory_is_neither_run_time_nor_training_time(
    small_machine: LocalCloud,
) -> None:
    """As waiting for instances does not on SageMaker: a job that waited longer than its
    MaxRuntimeInSeconds still trains, and is billed for its download and training only."""
    cloud = small_machine
    cloud.sm.create_training_job(**training_request(cloud, "cap-ahead", "runs/cap", LONG))
    _wait_for_message(cloud, "cap-ahead", "Training in progress")
    patient = training_request(cloud, "cap-patient", "runs/cap", SHORT, max_runtime=10)
    cloud.sm.create_training_job(**patient)
    _wait_for_message(cloud, "cap-patient", "waiting for memory")
    time.sleep(12)
    cloud.sm.stop_training_job(TrainingJobName="cap-ahead")
    done = cloud.events.wait_final("cap-patient")["detail"]
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    described = cloud.sm.describe_training_job(TrainingJobName="cap-patient")
    elapsed = (described["TrainingEndTime"] - described["TrainingStartTime"]).total_seconds()
    assert elapsed >= 12  # nor is it training time, billed
    assert described["TrainingTimeInSeconds"] <= elapsed - 11
    assert described["BillableTimeInSeconds"] == described["TrainingTimeInSeconds"]


@pytest.mark.parametrize(
    ("files", "room"),
    [
        # cgroup v2, 4 GiB limit, 3 GiB used of which 1 GiB inactive page cache
        ({"memory.max": "4294967296\n", "memory.current": "3221225472\n",
          "memory.stat": "anon 2147483648\ninactive_file 1073741824\n"}, 2 * 2**30),
        ({"memory.max": "max\n", "memory.current": "3221225472\n"}, None),  # no limit
        # cgroup v1, 2 GiB limit, 2.5 GiB used (cache over the limit), 1 GiB inactive
        ({"memory/memory.limit_in_bytes": "2147483648\n",
          "memory/memory.usage_in_bytes": "2684354560\n",
          "memory/memory.stat": "cache 1\ntotal_inactive_file 1073741824\n"}, 512 * 2**20),
        # v1 without a limit: a number near 2**63
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n",
          "memory/memory.usage_in_bytes": "9475850240\n"}, None),
        ({}, None),  # no memory cgroup mounted
    ],
)  # fmt: skip
def test_a_container_s_memory_limit_bounds_what_jobs_may_take(
    tmp_path: Path, files: dict[str, str], room: int | None
) -> None:
    """A CI runner's container may see the host's free memory while its cgroup holds far
    less: admitting jobs by the host's figure would let the kernel kill one (exit 137)."""
    _write(tmp_path, files)
    assert cgroup_memory_available(tmp_path, tmp_path / "no-proc") == room  # the roots alone


@pytest.mark.parametrize(
    ("proc", "files", "room"),
    [
        # a systemd service in a slice with MemoryMax: the slice's limit binds
        ("0::/system.slice/m5.service\n",
         {"system.slice/memory.max": "2147483648\n", "system.slice/memory.current": "1073741824\n",
          "system.slice/m5.service/memory.max": "max\n",
          "system.slice/m5.service/memory.current": "536870912\n"}, 2**30),
        # cgroup v1, a nested group seen from the host, limited itself
        ("4:memory:/process_api/abc\n1:cpu:/\n",
         {"memory/process_api/abc/memory.limit_in_bytes": "3221225472\n",
          "memory/process_api/abc/memory.usage_in_bytes": "1073741824\n",
          "memory/memory.limit_in_bytes": "9223372036854771712\n",
          "memory/memory.usage_in_bytes": "9475850240\n"}, 2 * 2**30),
        # a container's view: /proc names a group it cannot see; its own is at the root
        ("0::/system.slice/docker-abc.scope\n",
         {"memory.max": "1073741824\n", "memory.current": "268435456\n"}, 768 * 2**20),
        # ".." names nothing inside the tree: the root alone is read, not a folder above it
        ("0::/..\n", {"memory.max": "1073741824\n", "memory.current": "268435456\n",
                      "../memory.max": "1\n", "../memory.current": "0\n"}, 768 * 2**20),
    ],
)  # fmt: skip
def test_the_process_s_own_group_and_its_parents_limit_it(
    tmp_path: Path, proc: str, files: dict[str, str], room: int
) -> None:
    root = tmp_path / "cgroup-root"  # a "../" file lands beside it, inside tmp_path
    root.mkdir()
    _write(root, files)
    (tmp_path / "cgroup").write_text(proc)
    assert cgroup_memory_available(root, tmp_path / "cgroup") == room


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
