"""Start-training step: a manifest was written; start one training job per model it lists."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from m5flow import instances, jobs, naming
from m5flow.exceptions import RunFailedError
from m5flow.notifications import EventPublisher, Stage
from m5flow.shards import Manifest, ModelShards
from m5flow.stages.failure import RUN_FAILED, announce_run_failure
from m5flow.storage import Storage

logger = Logger(child=True)


def start_training(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest_key: str,
    settings: jobs.JobSettings,
) -> list[str]:
    """Create the run's training jobs; return the names of the jobs this call created.

    A job that already exists was started by an earlier delivery of the same event: it is
    counted as done, and `Training Started` is announced once per run.
    """
    manifest = Manifest.from_json(storage.read(manifest_key))
    if publisher.settle(manifest.run_id, RUN_FAILED) != "absent":
        # A late delivery after the run failed (a quota refused it): start nothing more.
        logger.warning("the run has failed; no training", extra={"run_id": manifest.run_id})
        return []
    try:
        requests = [jobs.training_request(manifest, model, settings) for model in manifest.models]
    except RunFailedError as exc:
        logger.error("refusing to train", extra={"run_id": manifest.run_id, "reason": exc.reason})
        announce_run_failure(
            publisher,
            {
                "run_id": manifest.run_id,
                "dataset": manifest.dataset,
                "stage": exc.stage,
                "reason": exc.reason,
            },
        )
        return []
    created = []
    for index, (model, request) in enumerate(zip(manifest.models, requests, strict=True)):
        _log_host_memory(manifest.run_id, model, request["ResourceConfig"])
        try:
            sagemaker.create_training_job(**request)
        except sagemaker.exceptions.ResourceInUse:
            logger.info("training job already exists", extra={"job": request["TrainingJobName"]})
            continue
        except sagemaker.exceptions.ResourceLimitExceeded as exc:
            _refused_by_quota(sagemaker, publisher, manifest, requests, index, exc)
            return created
        created.append(request["TrainingJobName"])
    publisher.publish(
        "Training Started",
        {
            "run_id": manifest.run_id,
            "dataset": manifest.dataset,
            "training_jobs": [request["TrainingJobName"] for request in requests],
            "instance_type": settings.training_instance_type,
            "instances": {
                r["TrainingJobName"]: r["ResourceConfig"]["InstanceCount"] for r in requests
            },
            "manifest": naming.manifest_key(manifest.run_id),
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


def _refused_by_quota(
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    requests: list[dict[str, Any]],
    refused: int,
    error: Any,
) -> None:
    """A service quota refused a job of the run: the run cannot finish, so announce
    `Run Failed` with what it needs, then stop the jobs it started (they are billed).

    Not left to Lambda's retries: a quota below what the run needs refuses every retry, and
    meanwhile the jobs already started would train to no end.
    """
    resources = [request["ResourceConfig"] for request in requests]
    needed = sum(r["InstanceCount"] for r in resources)
    kind = resources[refused]["InstanceType"]
    reason = (
        f"SageMaker refused training job {requests[refused]['TrainingJobName']} "
        f"(ResourceLimitExceeded: {error.response['Error']['Message']}) The run's "
        f"{len(requests)} training jobs need {needed} {kind} instances at once: raise that "
        "quota in Service Quotas, or choose a TrainingInstanceType with more memory (fewer "
        "instances a job)"
    )
    announce_run_failure(
        publisher,
        {
            "run_id": manifest.run_id,
            "dataset": manifest.dataset,
            "stage": Stage.START_TRAINING,
            "reason": reason,
        },
    )
    for request in requests[:refused]:
        try:
            sagemaker.stop_training_job(TrainingJobName=request["TrainingJobName"])
        except sagemaker.exceptions.ClientError as exc:  # ended already
            logger.info("not stopped", extra={"job": request["TrainingJobName"], "why": str(exc)})
