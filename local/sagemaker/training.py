"""Running a training job: the platform's part around the algorithm.

What SageMaker does around the container is done here, in the job's thread:
download each channel's S3 objects to every host's ``input/data/<channel>/``
(``ShardedByS3Key``: object *i* in key order to host *i mod N*; ``FullyReplicated``:
all objects to every host), start one algorithm process per instance
(``algorithm.py``) joined by XGBoost's collective, wait for them (blocking waits,
no polling; the first host's evaluation lines reach the console as they are written, at
most one every 30 s, as SageMaker's console shows an algorithm's metrics), then tar the
model directory into ``<S3OutputPath>/<job>/output/model.tar.gz``.
``StopTrainingJob`` and ``MaxRuntimeInSeconds`` send SIGTERM (SIGKILL 120 s later,
AWS's grace period); the job ends ``Stopped`` with secondary status ``Stopped``
or ``MaxRuntimeExceeded``.

Local layout: ``<workdir>/training/<job>/<host>/`` is that host's ``/opt/ml``
(``input/data/<channel>/``, ``model/``, ``output/failure``), with the host's log
in ``<host>/algo.log``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m5flow_local.sagemaker import joblogs, s3io
from m5flow_local.sagemaker.algorithm_data import PARQUET, get_content_type, quantile_bins
from m5flow_local.sagemaker.capacity import host_memory_estimate
from m5flow_local.sagemaker.exceptions import UserError, ValidationError
from m5flow_local.sagemaker.resources import DEFAULT_MAX_RUNTIME

if TYPE_CHECKING:
    from m5flow_local.sagemaker.models import SageMakerBackend
    from m5flow_local.sagemaker.resources import TrainingJob

LOG = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 120
PROGRESS_SECONDS = 30.0  # at most one evaluation line per job reaches the console this often
XGBOOST_IMAGE = "sagemaker-xgboost"
LOCAL_HOST_IP = "127.0.0.1"
# XGBoost's "[41]\ttrain-rmse:1.2\tvalidation-...", after a logging prefix on a collective's
# hosts ("[2026-11-26 12:39:35,272:INFO] [41]\t...").
_ROUND = re.compile(r"\[(\d+)\]\t(.*)$")


class _JobFailedError(Exception):
    """Raised inside the job thread when the platform itself fails the job."""


def validate_request(params: dict[str, Any]) -> None:
    """Checks CreateTrainingJob makes before accepting a job.

    Raises
    ------
    ValidationError
        No XGBoost training image, no S3 output path, duplicate channel names, or a
        data source the local SageMaker cannot read.
    """
    spec = params.get("AlgorithmSpecification") or {}
    image = spec.get("TrainingImage")
    if not image:
        raise ValidationError(
            "The local SageMaker runs the built-in XGBoost algorithm only: set "
            "AlgorithmSpecification.TrainingImage to a sagemaker-xgboost:1.7-1 image."
        )
    if XGBOOST_IMAGE not in image:
        # Worded as AWS words a request's constraint: a client that refuses to retry a
        # malformed request (m5flow does) stops at once here too.
        raise ValidationError(
            f"1 validation error detected: Value '{image}' at 'algorithmSpecification."
            "trainingImage' failed to satisfy constraint: the local SageMaker runs the "
            "built-in XGBoost algorithm only (a sagemaker-xgboost:1.7-1 image)"
        )
    if not image.endswith(":1.7-1"):
        LOG.warning("Image %s: running the sagemaker-xgboost:1.7-1 algorithm anyway", image)
    out = params.get("OutputDataConfig") or {}
    if not str(out.get("S3OutputPath", "")).startswith("s3://"):
        raise ValidationError("OutputDataConfig.S3OutputPath must be an s3:// URI.")
    names = [c.get("ChannelName") for c in params.get("InputDataConfig") or []]
    if len(names) != len(set(names)):
        raise ValidationError(f"Channel names must be unique; got {names}.")
    for channel in params.get("InputDataConfig") or []:
        if "S3DataSource" not in channel.get("DataSource", {}):
            raise ValidationError(
                f"Channel {channel.get('ChannelName')}: the local SageMaker reads S3 only."
            )
    count = (params.get("ResourceConfig") or {}).get("InstanceCount", 1)
    if count < 1:
        raise ValidationError("ResourceConfig.InstanceCount must be at least 1.")


def _channel_settings(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What SageMaker writes to ``inputdataconfig.json`` for each channel."""
    default_mode = (params.get("AlgorithmSpecification") or {}).get("TrainingInputMode", "File")
    config: dict[str, dict[str, Any]] = {}
    for channel in params.get("InputDataConfig") or []:
        src = channel["DataSource"]["S3DataSource"]
        entry: dict[str, Any] = {}
        if "ContentType" in channel:
            entry["ContentType"] = channel["ContentType"]
        entry["TrainingInputMode"] = channel.get("InputMode", default_mode)
        entry["S3DistributionType"] = src.get("S3DataDistributionType", "FullyReplicated")
        entry["RecordWrapperType"] = channel.get("RecordWrapperType", "None")
        config[channel["ChannelName"]] = entry
    return config


def _download_channels(
    s3: Any, params: dict[str, Any], hosts: list[str], job_dir: Path, region: str
) -> None:
    """Copy every channel to each host's ``input/data/<channel>/`` with SageMaker's distribution."""
    for channel in params.get("InputDataConfig") or []:
        name = channel["ChannelName"]
        src = channel["DataSource"]["S3DataSource"]
        if src.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise _JobFailedError(
                f"ClientError: The local SageMaker supports S3DataType S3Prefix only "
                f"(channel {name}: {src.get('S3DataType')})."
            )
        uri = src["S3Uri"]
        keys = s3io.list_keys(s3, uri)
        if not keys:
            raise _JobFailedError(
                "ClientError: " + s3io.no_objects_message(uri, region, params.get("RoleArn", ""))
            )
        bucket, prefix = s3io.split_uri(uri)
        sharded = src.get("S3DataDistributionType", "FullyReplicated") == "ShardedByS3Key"
        roots = {h: job_dir / h / "input" / "data" / name for h in hosts}
        for root in roots.values():
            root.mkdir(parents=True, exist_ok=True)
        for i, key in enumerate(keys):
            targets = [hosts[i % len(hosts)]] if sharded else hosts
            rel = s3io.relative_key(key, prefix)
            first = (roots[targets[0]] / rel).resolve()
            if not first.is_relative_to(roots[targets[0]].resolve()):
                raise _JobFailedError(f"ClientError: S3 key {key} escapes the channel directory.")
            s3io.download(s3, bucket, key, first)
            for host in targets[1:]:
                dest = roots[host] / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(first, dest)


def _host_config(
    params: dict[str, Any], hosts: list[str], host: str, job_dir: Path, tracker_port: int | None
) -> Path:
    host_dir = job_dir / host
    channels = _channel_settings(params)
    run = {
        "hyperparameters": params.get("HyperParameters") or {},
        "input_data_config": channels,
        "hosts": hosts,
        "current_host": host,
        "channel_dirs": {c: str(host_dir / "input" / "data" / c) for c in channels},
        "host_dir": str(host_dir),
        "model_dir": str(host_dir / "model"),
        "output_dir": str(host_dir / "output"),
        "tracker_port": tracker_port,
        "threads_file": str(_threads_file(job_dir, host)),
    }
    (host_dir / "model").mkdir(parents=True, exist_ok=True)
    (host_dir / "output").mkdir(parents=True, exist_ok=True)
    path = host_dir / "config.json"
    path.write_text(json.dumps(run))
    return path


def _threads_file(job_dir: Path, host: str) -> Path:
    """Where a host reads, between rounds, how many threads it may use (`capacity`)."""
    return job_dir / host / "threads"


def _share_threads(job_dir: Path, hosts: list[str]) -> Callable[[int], None]:
    def tell(threads: int) -> None:
        for host in hosts:
            path = _threads_file(job_dir, host)
            part = path.with_name(".threads.part")  # a host never reads half a number
            part.write_text(str(threads))
            part.replace(path)

    return tell


def _child_env(params: dict[str, Any], threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(params.get("Environment") or {})
    asked = (params.get("HyperParameters") or {}).get("nthread")
    with contextlib.suppress(ValueError):  # else the algorithm fails the job with the reason
        threads = max(int(asked), 1) if asked is not None else threads  # int(" 2") is 2
    env["OMP_NUM_THREADS"] = str(threads)
    # Two cores here: idle OpenMP workers must not spin while the collective waits.
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Tracker:
    """The first collective's tracker, run by the platform so no port is guessed."""

    def __init__(self, n_workers: int) -> None:
        from xgboost.tracker import RabitTracker

        self.tracker = RabitTracker(
            LOCAL_HOST_IP, n_workers, port=0, use_logger=True, sortby="task"
        )
        self.port = int(self.tracker.port)
        self.thread = threading.Thread(target=self._serve, args=(n_workers,), daemon=True)
        self.thread.start()

    def _serve(self, n_workers: int) -> None:
        try:
            self.tracker.accept_workers(n_workers)
        except OSError:  # closed by close(): the job ended before every host joined
            return

    def close(self) -> None:
        self.tracker.sock.close()


_LIVE: set[subprocess.Popen[bytes]] = set()  # host processes not yet reaped, for kill_hosts
_LIVE_LOCK = threading.Lock()


def kill_hosts() -> int:
    """Kill every host process still running (each leads its own process group, which is
    killed whole); returns how many. The last step of a shutdown, so that no XGBoost
    training outlives the local cloud that started it."""
    with _LIVE_LOCK:
        live = [proc for proc in _LIVE if proc.poll() is None]
    for proc in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return len(live)


def _reap(job: TrainingJob, host: str, proc: subprocess.Popen[bytes]) -> None:
    code = proc.wait()
    with _LIVE_LOCK:
        _LIVE.discard(proc)
    job.control.put(("exit", host, code))


def _tee(output: Any, log: Path, on_round: Callable[[str], None] | None) -> None:
    """Copy a host's output into its log as it comes (a blocking read until the host
    exits), handing each evaluation line to `on_round`."""
    with output, log.open("wb") as sink:
        for raw in output:
            sink.write(raw)
            sink.flush()  # the log is read while the job runs
            if on_round is None:
                continue
            found = _ROUND.search(raw.decode(errors="replace").rstrip("\n"))
            if found:
                try:
                    on_round(f"round {found[1]}: {' '.join(found[2].split())}")
                except Exception:  # a console that cannot print must not block the host
                    LOG.exception("progress report failed")


def _launch(
    job: TrainingJob,
    params: dict[str, Any],
    hosts: list[str],
    job_dir: Path,
    tracker_port: int | None,
    threads: int,
    on_round: Callable[[str], None],
) -> dict[str, subprocess.Popen[bytes]]:
    env = _child_env(params, threads)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for host in hosts:
        config = _host_config(params, hosts, host, job_dir, tracker_port)
        proc = subprocess.Popen(
            [sys.executable, "-m", "m5flow_local.sagemaker.algorithm", str(config)],
            cwd=job_dir / host,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(
            target=_tee,
            args=(proc.stdout, job_dir / host / "algo.log", on_round if host == hosts[0] else None),
            name=f"log-{job.name}-{host}",
            daemon=True,
        ).start()
        procs[host] = proc
        with _LIVE_LOCK:
            _LIVE.add(proc)
        threading.Thread(
            target=_reap, args=(job, host, proc), name=f"wait-{job.name}-{host}", daemon=True
        ).start()
    return procs


def _signal_all(procs: dict[str, subprocess.Popen[bytes]], kill: bool = False) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill() if kill else proc.terminate()


def _wait(job: TrainingJob, procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, int]:
    """Block until every host exits; a failure or a stop request ends the others."""
    exits: dict[str, int] = {}
    stopping = False
    killer: threading.Timer | None = None
    try:
        while len(exits) < len(procs):
            message = job.control.get()
            if message[0] == "exit":
                exits[message[1]] = message[2]
                if message[2] != 0 and not stopping:
                    stopping = True
                    _signal_all(procs)
            elif message[0] == "stop" and killer is None:
                stopping = True
                _signal_all(procs)
                killer = threading.Timer(STOP_GRACE_SECONDS, _signal_all, args=(procs, True))
                killer.daemon = True
                killer.start()
    finally:
        if killer is not None:
            killer.cancel()
    return exits


def _put_logs(region: str, job: str, hosts: list[str], job_dir: Path, launched: float) -> None:
    """Put each host's log where SageMaker puts it, before the job's final state is known
    (a failed job's reason points there). Never fails the job: it logs why not instead."""
    try:
        logs = joblogs.client(region)
        for host in hosts:
            stream = joblogs.stream_name(job, host, launched)
            joblogs.put_log(logs, joblogs.TRAINING_LOG_GROUP, stream, job_dir / host / "algo.log")
    except Exception:
        LOG.warning("training job %s: its log was not put in CloudWatch Logs", job, exc_info=True)


def _failure_reason(job_dir: Path, hosts: list[str], exits: dict[str, int]) -> str:
    """The reason SageMaker reports: the failing host's failure file, else its exit code."""
    failed = [h for h in exits if exits[h] != 0]
    for host in failed + hosts:
        path = job_dir / host / "output" / "failure"
        if path.exists():
            return "AlgorithmError: " + path.read_text()
    code = exits[failed[0]]
    return f"AlgorithmError: , exit code: {128 - code if code < 0 else code}"


def _upload_model(
    s3: Any, params: dict[str, Any], name: str, hosts: list[str], job_dir: Path
) -> str:
    """Tar the hosts' model directories (first host wins on clashes) and upload the archive."""
    archive = job_dir / "model.tar.gz"
    seen: set[str] = set()
    with tarfile.open(archive, "w:gz") as tar:
        for host in hosts:
            model_dir = job_dir / host / "model"
            for path in sorted(model_dir.rglob("*")):
                rel = str(path.relative_to(model_dir))
                if path.is_file() and rel not in seen and not path.name.startswith("."):
                    seen.add(rel)
                    tar.add(path, arcname=rel)
    bucket, prefix = s3io.split_uri(params["OutputDataConfig"]["S3OutputPath"])
    key = s3io.join_key(prefix, name, "output", "model.tar.gz")
    s3.upload_file(str(archive), bucket, key)
    return f"s3://{bucket}/{key}"


def _metrics(job_dir: Path, hosts: list[str]) -> list[dict[str, Any]]:
    for host in hosts:
        path = job_dir / host / "output" / "metrics.json"
        if path.exists():
            return list(json.loads(path.read_text()))
    return []


def _admit(
    backend: SageMakerBackend,
    job: TrainingJob,
    hosts: list[str],
    job_dir: Path,
    on_wait: Callable[[], None],
) -> int | None:
    """Wait until this machine's memory can hold the job's hosts beside the training jobs
    running (`capacity`), calling `on_wait` first if it must; return the threads each host
    may use, or None if the job is stopped while it waits."""
    channels = job.request.get("InputDataConfig") or []
    train: dict[str, Any] = next((c for c in channels if c.get("ChannelName") == "train"), {})
    try:
        parquet = get_content_type(train.get("ContentType")) == PARQUET
    except UserError:  # the algorithm fails the job with the reason
        parquet = False
    quantile = quantile_bins(job.request.get("HyperParameters") or {}, len(hosts)) is not None
    need = sum(
        host_memory_estimate(
            (job_dir / host / "input" / "data" / c["ChannelName"] for c in channels),
            parquet,
            quantile,
        )
        for host in hosts
    )

    def waiting(held: int, budget: int) -> None:
        on_wait()
        backend.mark_training(
            job,
            "Downloading",
            f"Input data downloaded; waiting for memory: this job needs about "
            f"{need / 1e9:.1f} GB, and the training jobs running hold {held / 1e9:.1f} GB "
            f"of the {budget / 1e9:.1f} GB this machine had available",
        )

    return backend.capacity.admit(
        job.name,
        need,
        lambda: job.stop_reason is not None,
        waiting,
        hosts=len(hosts),
        on_share=_share_threads(job_dir, hosts),
    )


def _stop_after(seconds: float, backend: SageMakerBackend, job: TrainingJob) -> threading.Timer:
    """Start MaxRuntimeInSeconds' clock: the job is stopped as MaxRuntimeExceeded after it."""
    timer = threading.Timer(
        max(seconds, 0.0), backend.request_training_stop, args=(job, "MaxRuntimeExceeded")
    )
    timer.daemon = True
    timer.start()
    return timer


def run_training_job(backend: SageMakerBackend, job: TrainingJob) -> None:
    """The job thread: download, train, upload, and set the final status."""
    params = job.request
    hosts = [
        f"algo-{i + 1}"
        for i in range(int((params.get("ResourceConfig") or {}).get("InstanceCount", 1)))
    ]
    job_dir = backend.workdir / "training" / job.name
    max_runtime = (params.get("StoppingCondition") or {}).get(
        "MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME
    )
    began = time.monotonic()
    timer = _stop_after(max_runtime, backend, job)
    waiting_since: list[float] = []

    def pause_runtime() -> None:  # waiting for memory is not run time, as waiting for
        timer.cancel()  # instances is not on SageMaker
        waiting_since.append(time.monotonic())

    tracker: _Tracker | None = None
    try:
        s3 = s3io.client(backend.region)
        backend.mark_training(job, "Downloading", "Downloading input data", started=True)
        if job_dir.exists():
            shutil.rmtree(job_dir)
        _download_channels(s3, params, hosts, job_dir, backend.region)
        threads = (
            _admit(backend, job, hosts, job_dir, pause_runtime) if job.stop_reason is None else None
        )
        if threads is None:
            backend.finish_training(job, "Stopped")
            return
        if waiting_since:
            job.waited = time.monotonic() - waiting_since[0]
            timer = _stop_after(max_runtime - (waiting_since[0] - began), backend, job)
        backend.mark_training(
            job, "Training", "Training image download completed. Training in progress."
        )
        if len(hosts) > 1:
            tracker = _Tracker(len(hosts))
        last_report = [float("-inf")]

        def report_round(line: str) -> None:  # throttled as lines arrive: no timer runs
            if time.monotonic() - last_report[0] >= PROGRESS_SECONDS:
                last_report[0] = time.monotonic()
                backend.report(f"training job {job.name}: {line}")

        port = tracker.port if tracker else None
        launched = time.time()
        procs = _launch(job, params, hosts, job_dir, port, threads, report_round)
        hosts_shown = hosts[0] if len(hosts) == 1 else f"algo-{{1..{len(hosts)}}}"
        backend.report(f"training job {job.name}: XGBoost log {job_dir}/{hosts_shown}/algo.log")
        exits = _wait(job, procs)
        _put_logs(backend.region, job.name, hosts, job_dir, launched)
        killed = [host for host, code in exits.items() if code == -signal.SIGKILL]
        if killed and job.stop_reason is None:  # SageMaker says only "exit code: 137"
            backend.report(
                f"training job {job.name}: {', '.join(killed)} killed by SIGKILL, on this "
                "machine most often the kernel's out-of-memory killer (see dmesg)"
            )
        if job.stop_reason is not None:
            has_model = any(
                not p.name.startswith(".") for h in hosts for p in (job_dir / h / "model").iterdir()
            )
            artifacts = _upload_model(s3, params, job.name, hosts, job_dir) if has_model else None
            backend.finish_training(job, "Stopped", artifacts=artifacts)
        elif any(code != 0 for code in exits.values()):
            backend.finish_training(job, "Failed", reason=_failure_reason(job_dir, hosts, exits))
        else:
            backend.mark_training(job, "Uploading", "Uploading generated training model")
            artifacts = _upload_model(s3, params, job.name, hosts, job_dir)
            backend.finish_training(
                job, "Completed", artifacts=artifacts, metrics=_metrics(job_dir, hosts)
            )
    except _JobFailedError as exc:
        backend.finish_training(job, "Failed", reason=str(exc))
    except Exception as exc:  # the job thread's boundary: a job must never stay InProgress
        LOG.exception("training job %s crashed", job.name)
        backend.finish_training(
            job,
            "Failed",
            reason="InternalServerError: We encountered an internal error. Please try again. "
            f"(local: {type(exc).__name__}: {exc})",
        )
    finally:
        backend.capacity.release(job.name)
        timer.cancel()
        if tracker is not None:
            tracker.close()
