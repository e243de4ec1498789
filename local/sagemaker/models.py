"""State of the local SageMaker: training jobs, models, transform jobs, and their events.

Requests validate and record state here; each job then runs in its own thread
(``training.py``, ``transform.py``), reporting progress back through the small
``mark_*``/``finish_*`` methods.  Every primary status change is turned into an
EventBridge event while the state lock is held and queued, and one emitter
thread hands the events to ``emit`` in order: a job's events can never overtake
each other, and ``emit`` (which may call straight back into this API) never runs
under the lock nor blocks a job.

Errors, codes and messages are AWS's, checked against public reports:
duplicate training job -> ``ResourceInUse`` "Training job names must be unique
within an AWS account and region, and a training job with this name already
exists (<arn>)"; DescribeTrainingJob of an unknown job -> ``ValidationException``
"Requested resource not found." (AWS does not return the ``ResourceNotFound`` its
API model lists, see aws/aws-sdk#165); invalid names -> ``ValidationException``
in AWS's "1 validation error detected: ..." form.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from m5flow_local.sagemaker import events, s3io
from m5flow_local.sagemaker.capacity import Capacity
from m5flow_local.sagemaker.exceptions import (
    ResourceInUseError,
    ResourceLimitExceededError,
    ValidationError,
)
from m5flow_local.sagemaker.resources import (
    JOB_NAME_PATTERN,
    MODEL_NAME_PATTERN,
    TERMINAL,
    Model,
    TrainingJob,
    TransformJob,
    check_name_and_tags,
    clip_reason,
    tags_map,
)

LOG = logging.getLogger(__name__)


QUOTA_SUFFIXES = (" for training job usage", " for transform job usage")  # AWS's quota names


class SageMakerBackend:
    """All resources of one local SageMaker, and the emitter of their events.

    Parameters
    ----------
    emit
        Called with each state-change event (EventBridge envelope), from one thread.
    workdir
        Where jobs keep their files (``training/<job>/...``, ``transform/<job>/...``).
    region, account_id
        Used in ARNs and events.
    capacity
        Admits training jobs while this machine's memory holds them and shares its cores
        among them (default: what the operating system reports available).
    quotas
        Service quotas by AWS's names, "<instance type> for training job usage" and
        "<instance type> for transform job usage": the most instances of a type that jobs
        of that kind in progress may hold at once. A quota not in it has no limit, as this
        machine has none (`capacity` shares what it has instead).
    """

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None],
        workdir: Path,
        *,
        region: str,
        account_id: str,
        progress: Callable[[str], None] | None = None,
        capacity: Capacity | None = None,
        quotas: Mapping[str, int] | None = None,
    ) -> None:
        self.emit = emit
        self.capacity = capacity or Capacity()  # the training jobs share this machine
        self.quotas = dict(quotas or {})
        unknown = [k for k in self.quotas if not k.endswith(QUOTA_SUFFIXES)]
        if unknown:  # a bare instance type would otherwise be no quota at all, in silence
            raise ValueError(
                f"quota names are AWS's, '<instance type> for training job usage' or "
                f"'... for transform job usage': {unknown}"
            )
        self.progress = progress  # a line per step no event announces (the console's view)
        self.workdir = Path(workdir)
        self.region = region
        self.account_id = account_id
        self.lock = threading.RLock()
        self.training_jobs: dict[str, TrainingJob] = {}
        self.models: dict[str, Model] = {}
        self.transform_jobs: dict[str, TransformJob] = {}
        self._outbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._emitter = threading.Thread(
            target=self._emit_loop, name="sagemaker-events", daemon=True
        )
        self._emitter.start()

    # ----------------------------------------------------------------- events
    def _emit_loop(self) -> None:
        while True:
            event = self._outbox.get()
            if event is None:
                return
            try:
                self.emit(event)
            except Exception:  # a subscriber's failure must not stop later events
                LOG.exception("emit failed for %s", event["resources"])

    def arn(self, kind: str, name: str) -> str:
        """AWS's ARN form; SageMaker lower-cases the name in it."""
        return f"arn:aws:sagemaker:{self.region}:{self.account_id}:{kind}/{name.lower()}"

    def queue_event(self, detail_type: str, job: TrainingJob | TransformJob) -> None:
        """Queue the state-change event of the job's current status (call with the lock held)."""
        self._outbox.put(
            events.envelope(
                detail_type,
                job.describe(),
                job.arn,
                tags_map(job.request.get("Tags")),
                region=self.region,
                account_id=self.account_id,
                now=time.time(),
            )
        )

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop running jobs, wait for their threads, flush and stop the event thread."""
        with self.lock:
            running = [j for j in self.training_jobs.values() if j.status not in TERMINAL]
            transforms = [j for j in self.transform_jobs.values() if j.status not in TERMINAL]
        for job in running:
            self.request_training_stop(job, "Stopped")
        for tjob in transforms:
            tjob.stop_requested.set()
        for thread in [j.thread for j in running] + [t.thread for t in transforms]:
            if thread is not None:
                thread.join(timeout)
        self._outbox.put(None)
        self._emitter.join(timeout)

    # ---------------------------------------------------------- training jobs
    def create_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        from m5flow_local.sagemaker import training

        name = check_name_and_tags("CreateTrainingJob", params, "TrainingJobName", JOB_NAME_PATTERN)
        training.validate_request(params)
        now = time.time()
        with self.lock:
            if name in self.training_jobs:
                raise ResourceInUseError(
                    "Training job names must be unique within an AWS account and region, and a "
                    f"training job with this name already exists ({self.arn('training-job', name)})"
                )
            self._check_quota("training", params.get("ResourceConfig") or {})
            job = TrainingJob(
                name=name,
                arn=self.arn("training-job", name),
                request=params,
                creation_time=now,
                last_modified=now,
            )
            job.transition("Starting", "Launching requested ML instances", now)
            self.training_jobs[name] = job
            self.queue_event(events.TRAINING_DETAIL_TYPE, job)
            job.thread = threading.Thread(
                target=training.run_training_job,
                args=(self, job),
                name=f"training-{name}",
                daemon=True,
            )
            job.thread.start()
        return {"TrainingJobArn": job.arn}

    def get_training_job(self, name: Any) -> TrainingJob:
        with self.lock:
            job = self.training_jobs.get(name) if isinstance(name, str) else None
        if job is None:
            raise ValidationError("Requested resource not found.")
        return job

    def describe_training_job(self, name: Any) -> dict[str, Any]:
        job = self.get_training_job(name)
        with self.lock:
            return job.describe()

    def stop_training_job(self, name: Any) -> None:
        job = self.get_training_job(name)
        with self.lock:
            if job.status not in ("InProgress", "Stopping"):
                raise ValidationError(
                    f"The request was rejected because the training job is in status {job.status}."
                )
        self.request_training_stop(job, "Stopped")

    def request_training_stop(self, job: TrainingJob, reason: str) -> None:
        """Enter ``Stopping`` at once (with its event), then tell the job thread to stop."""
        if self.mark_training_stopping(job, reason):
            job.control.put(("stop",))
            self.capacity.wake()  # the job may be waiting for memory

    def list_training_jobs(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            jobs = list(self.training_jobs.values())
        return self._page(jobs, params, "TrainingJobSummaries", order="Ascending")

    def _page(
        self,
        items: list[Any],
        params: dict[str, Any],
        key: str,
        *,
        with_status: bool = True,
        order: str = "Descending",
    ) -> dict[str, Any]:
        """One page of a List* call: SageMaker's filters, sort orders and NextToken paging.

        Shared by training jobs, models and transform jobs, whose List* requests differ only
        in which of these filters they accept (models have no status) and in their default
        `order` (ListTrainingJobs alone lists the oldest first).
        """
        contains = params.get("NameContains")
        wanted = params.get("StatusEquals") if with_status else None
        bounds = {
            "CreationTimeAfter": lambda i, t: i.creation_time > t,
            "CreationTimeBefore": lambda i, t: i.creation_time < t,
            "LastModifiedTimeAfter": lambda i, t: i.last_modified > t,
            "LastModifiedTimeBefore": lambda i, t: i.last_modified < t,
        }
        selected = [
            i
            for i in items
            if (contains is None or contains in i.name)
            and (wanted is None or i.status == wanted)
            and all(test(i, float(params[name])) for name, test in bounds.items() if name in params)
        ]
        sort_by = params.get("SortBy", "CreationTime")
        sort_key: Callable[[Any], Any] = {
            "Name": lambda i: i.name,
            "Status": lambda i: i.status,
        }.get(sort_by, lambda i: i.creation_time)
        selected.sort(key=sort_key, reverse=params.get("SortOrder", order) == "Descending")
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults") or 10)
        with self.lock:
            page = [i.summary() for i in selected[start : start + size]]
        out: dict[str, Any] = {key: page}
        if start + size < len(selected):
            out["NextToken"] = str(start + size)
        return out

    def mark_training(
        self, job: TrainingJob, secondary: str, message: str, *, started: bool = False
    ) -> None:
        """Move an in-progress job to another secondary status (no event: primary unchanged)."""
        with self.lock:
            now = time.time()
            if started:
                job.start_time = now
            job.transition(secondary, message, now)
        self.report(f"training job {job.name}: {secondary} ({message})")

    def report(self, line: str) -> None:
        """Tell the console about progress that has no event (SageMaker's secondary status)."""
        if self.progress is not None:
            self.progress(line)

    def mark_training_stopping(self, job: TrainingJob, reason: str) -> bool:
        """Enter ``Stopping`` (one event); False if the job already ended or is stopping."""
        with self.lock:
            if job.status != "InProgress":
                return False
            job.stop_reason = reason
            job.status = "Stopping"
            job.transition("Stopping", "Stopping the training job", time.time())
            self.queue_event(events.TRAINING_DETAIL_TYPE, job)
            return True

    def finish_training(
        self,
        job: TrainingJob,
        status: str,
        *,
        reason: str | None = None,
        artifacts: str | None = None,
        metrics: list[dict[str, Any]] | None = None,
    ) -> None:
        """Set the final status (Completed, Failed or Stopped) and queue its event."""
        with self.lock:
            now = time.time()
            job.status = status
            job.end_time = now
            if job.start_time is None:
                job.start_time = now
            if reason is not None:
                job.failure_reason = clip_reason(reason)
            job.model_artifacts = artifacts
            job.final_metrics = [dict(m, Timestamp=now) for m in metrics or []]
            if status == "Completed":
                job.transition("Completed", "Training job completed", now)
            elif status == "Failed":
                job.transition("Failed", "Training job failed", now)
            elif job.stop_reason == "MaxRuntimeExceeded":
                job.transition(
                    "MaxRuntimeExceeded",
                    "Training job runtime exceeded MaxRuntimeInSeconds provided",
                    now,
                )
            else:
                job.transition("Stopped", "Training job stopped", now)
            self.queue_event(events.TRAINING_DETAIL_TYPE, job)

    def _check_quota(self, usage: str, resources: Mapping[str, Any]) -> None:
        """Refuse instances beyond the quota "<type> for <usage> job usage" (usage:
        "training" or "transform"), in AWS's words (call with the lock)."""

        def instances(of: Mapping[str, Any]) -> int:
            return int(of.get("InstanceCount", 1))

        kind = resources.get("InstanceType")
        quota_name = f"{kind} for {usage} job usage"
        quota = self.quotas.get(quota_name)
        if quota is None:
            return
        jobs, field = (
            (self.training_jobs, "ResourceConfig")
            if usage == "training"
            else (self.transform_jobs, "TransformResources")
        )
        held = [job.request.get(field) or {} for job in jobs.values() if job.status not in TERMINAL]
        in_use = sum(instances(of) for of in held if of.get("InstanceType") == kind)
        delta = instances(resources)
        if in_use + delta > quota:
            raise ResourceLimitExceededError(
                f"The account-level service limit '{quota_name}' is {quota} "
                f"Instances, with current utilization of {in_use} Instances and a request delta "
                f"of {delta} Instances. Please use AWS Service Quotas to request an increase "
                "for this quota. If AWS Service Quotas is not available, contact AWS support to "
                "request an increase for this quota."
            )

    # ----------------------------------------------------------------- models
    def create_model(self, params: dict[str, Any]) -> dict[str, Any]:
        name = check_name_and_tags("CreateModel", params, "ModelName", MODEL_NAME_PATTERN)
        if "PrimaryContainer" not in params and not params.get("Containers"):
            raise ValidationError("Either PrimaryContainer or Containers must be specified.")
        containers = [params.get("PrimaryContainer") or {}, *(params.get("Containers") or [])]
        for url in (c["ModelDataUrl"] for c in containers if c.get("ModelDataUrl")):
            if not s3io.exists(s3io.client(self.region), url):  # as SageMaker checks it
                raise ValidationError(f"Could not find model data at {url}.")
        with self.lock:
            arn = self.arn("model", name)
            if name in self.models:
                raise ValidationError(f'Cannot create already existing model "{arn}".')
            self.models[name] = Model(name=name, arn=arn, request=params, creation_time=time.time())
        return {"ModelArn": arn}

    def get_model(self, name: Any) -> Model:
        with self.lock:
            model = self.models.get(name) if isinstance(name, str) else None
        if model is None:
            raise ValidationError(f'Could not find model "{self.arn("model", str(name))}".')
        return model

    def describe_model(self, name: Any) -> dict[str, Any]:
        return self.get_model(name).describe()

    def list_models(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            models = list(self.models.values())
        return self._page(models, params, "Models", with_status=False)

    def delete_model(self, name: Any) -> None:
        model = self.get_model(name)
        with self.lock:
            self.models.pop(model.name, None)

    # --------------------------------------------------------- transform jobs
    def create_transform_job(self, params: dict[str, Any]) -> dict[str, Any]:
        from m5flow_local.sagemaker import transform

        name = check_name_and_tags(
            "CreateTransformJob", params, "TransformJobName", JOB_NAME_PATTERN
        )
        model = self.get_model(params.get("ModelName"))
        transform.validate_request(params, model, self.region)
        now = time.time()
        with self.lock:
            if name in self.transform_jobs:
                raise ResourceInUseError(
                    "Job name must be unique within an AWS account and region, and a job with "
                    f"this name already exists ({self.arn('transform-job', name)})"
                )
            self._check_quota("transform", params.get("TransformResources") or {})
            job = TransformJob(
                name=name, arn=self.arn("transform-job", name), request=params, creation_time=now
            )
            self.transform_jobs[name] = job
            self.queue_event(events.TRANSFORM_DETAIL_TYPE, job)
            job.thread = threading.Thread(
                target=transform.run_transform_job,
                args=(self, job, model),
                name=f"transform-{name}",
                daemon=True,
            )
            job.thread.start()
        return {"TransformJobArn": job.arn}

    def get_transform_job(self, name: Any) -> TransformJob:
        with self.lock:
            job = self.transform_jobs.get(name) if isinstance(name, str) else None
        if job is None:
            raise ValidationError(f"Could not find requested job with name {name}")
        return job

    def describe_transform_job(self, name: Any) -> dict[str, Any]:
        job = self.get_transform_job(name)
        with self.lock:
            return job.describe()

    def list_transform_jobs(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            jobs = list(self.transform_jobs.values())
        return self._page(jobs, params, "TransformJobSummaries")

    def stop_transform_job(self, name: Any) -> None:
        job = self.get_transform_job(name)
        with self.lock:
            if job.status != "InProgress":
                return
            job.status = "Stopping"
            self.queue_event(events.TRANSFORM_DETAIL_TYPE, job)
        job.stop_requested.set()

    def mark_transform_started(self, job: TransformJob) -> None:
        with self.lock:
            job.start_time = time.time()

    def finish_transform(self, job: TransformJob, status: str, reason: str | None = None) -> None:
        """Set the transform's final status and queue its event."""
        with self.lock:
            job.status = status
            job.end_time = time.time()
            if job.start_time is None:
                job.start_time = job.end_time
            if reason is not None:
                job.failure_reason = clip_reason(reason)
            self.queue_event(events.TRANSFORM_DETAIL_TYPE, job)
