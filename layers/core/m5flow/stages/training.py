"""Start-training step: a manifest was written; start one training job per model it lists."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from m5flow import instances, jobs, naming
from m5flow.exceptions import RunFailedError
from m5flow.manifest import Manifest, ModelShards
from m5flow.notifications import EventPublisher, Stage
from m5flow.stages.backtest_loss import lose_backtest, lost_backtest
from m5flow.stages.failure import (
    fail_run,
    failure_name,
    is_refusal,
    quota_reason,
    refusal_reason,
    stop_jobs,
)
from m5flow.storage import Storage

logger = Logger(child=True)
# S3 and SageMaker clocks may differ by this much: a job of this run is never created
# earlier than its manifest was written, less this.
CLOCK_SKEW_SECONDS = 2.0


def start_training(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest_key: str,
    settings: jobs.JobSettings,
) -> list[str]:
    """Create the run's training jobs; return the names of the jobs this call created.

    A job that already exists was started by an earlier delivery of the same event: it is
    counted as done, and `Training Started` is announced once per run. A backtest twin that
    SageMaker refuses (a quota that holds the forecasting models' jobs only) costs the run
    its backtest, not its forecast (`stages.backtest_loss`): no twin trains then.
    """
    manifest = Manifest.from_json(storage.read(manifest_key))
    head = storage.head(manifest_key)
    written = head.modified if head else None
    failure = failure_name(storage, manifest.run_id, head)
    if publisher.settle(manifest.run_id, failure) != "absent":
        # A late delivery after this run failed (a quota refused it): start nothing more.
        logger.warning("the run has failed; no training", extra={"run_id": manifest.run_id})
        return []
    try:
        requests = [jobs.training_request(manifest, model, settings) for model in manifest.models]
    except RunFailedError as exc:  # settings the run's data cannot train with
        _fail_run(sagemaker, publisher, manifest, exc.reason, stop=[], once=failure)
        return []
    twin_jobs = [r["TrainingJobName"] for m, r in zip(manifest.models, requests, strict=True)
                 if m.backtest]  # fmt: skip
    lost = lost_backtest(publisher, manifest.run_id) is not None
    if lost:  # a delivery that lost it may have died before stopping the twins it created
        stop_jobs(sagemaker, training=twin_jobs)
    created: list[str] = []
    for index, (model, request) in enumerate(zip(manifest.models, requests, strict=True)):
        if model.backtest and lost:  # a twin was refused before: no twin trains
            continue
        _log_host_memory(manifest.run_id, model, request["ResourceConfig"])
        name = request["TrainingJobName"]
        try:
            sagemaker.create_training_job(**request)
        except sagemaker.exceptions.ResourceInUse:
            reason = _taken_before(sagemaker, name, written)
            if reason is None:
                logger.info("training job already exists", extra={"job": name})
                continue
        except sagemaker.exceptions.ResourceLimitExceeded as exc:
            reason = quota_reason("training", requests, index, exc.response["Error"]["Message"])
        except sagemaker.exceptions.ClientError as exc:
            if not is_refusal(exc):
                raise
            reason = refusal_reason(f"training job {name}", exc.response["Error"]["Message"])
        else:
            created.append(name)
            continue
        if model.backtest:  # the twins come last: every forecasting model's job is created
            lose_backtest(storage, sagemaker, publisher, manifest, model=model.name,
                          stage=Stage.START_TRAINING, reason=reason, failure=failure,
                          transforms=False)  # fmt: skip
            lost = True
            continue
        started = [r["TrainingJobName"] for r in requests[:index]]
        _fail_run(sagemaker, publisher, manifest, reason, stop=started, once=failure)
        return created
    created_twins = [name for name in twin_jobs if name in created]
    if created_twins and not lost and lost_backtest(publisher, manifest.run_id):
        # A concurrent delivery lost the backtest after this one created twins: its stops
        # may have come before they existed.
        stop_jobs(sagemaker, training=created_twins)
        lost = True
    training = [r for m, r in zip(manifest.models, requests, strict=True)
                if not (m.backtest and lost)]  # fmt: skip
    publisher.publish(
        "Training Started",
        {
            "run_id": manifest.run_id,
            "dataset": manifest.dataset,
            "training_jobs": [request["TrainingJobName"] for request in training],
            "instance_type": settings.training_instance_type,
            "instances": {
                r["TrainingJobName"]: r["ResourceConfig"]["InstanceCount"] for r in training
            },
            "manifest": storage.uri(manifest_key),  # an s3:// URI, as in Run Started
        },
        once="training-started",
    )
    return created


def _log_host_memory(run: str, model: ModelShards, resources: dict[str, Any]) -> None:
    """Log what each host of a model's job is estimated to need, and warn when a stack's
    fixed TrainingInstanceCount leaves that above the instance's memory (the job would
    most likely end in an out-of-memory exit)."""
    count, instance_type = resources["InstanceCount"], resources["InstanceType"]
    need, memory = instances.host_memory(model, count), instances.instance_memory(instance_type)
    extra = {"run_id": run, "model": model.name, "instance_type": instance_type,
             "instance_count": count, "host_gib": round(need / instances.GIB, 2)}  # fmt: skip
    if memory is not None and need > memory * instances.USABLE_FRACTION:
        logger.warning(
            f"each host may need more memory than {instance_type} has: consider "
            f"TrainingInstanceCount={instances.AUTO} or a larger TrainingInstanceType",
            extra=extra | {"instance_gib": memory / instances.GIB},
        )
    else:
        logger.info("training hosts", extra=extra)


def _taken_before(sagemaker: Any, name: str, manifest_written: float | None) -> str | None:
    """Why job `name` cannot be this run's, if an earlier run of the same inputs created it
    (its `runs/<run>/` since expired, or deleted): SageMaker never frees a job name, so
    this run would wait forever for jobs that ended long ago. None for a job of this run,
    created after its manifest by an earlier delivery of the same event."""
    created = sagemaker.describe_training_job(TrainingJobName=name)["CreationTime"]
    if manifest_written is None or created.timestamp() >= manifest_written - CLOCK_SKEW_SECONDS:
        return None
    return (
        f"training job {name} already exists, created {created:%Y-%m-%d %H:%M} UTC by an "
        "earlier run of these same inputs whose files under runs/ have since gone; SageMaker "
        f"never frees a job name, so upload them under a new {naming.RAW_PREFIX}<dataset>/ "
        "to run them again"
    )


def _fail_run(
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    reason: str,
    *,
    stop: list[str],
    once: str,
) -> None:
    """Announce that the run cannot train, then stop the training jobs it had started."""
    detail = {"run_id": manifest.run_id, "dataset": manifest.dataset,
              "stage": Stage.START_TRAINING, "reason": reason}  # fmt: skip
    fail_run(sagemaker, publisher, detail, stop_training=stop, once=once)
