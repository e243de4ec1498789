"""Publish-model step: a training job finished; create its model and Batch Transform job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger

from m5flow import jobs, naming
from m5flow.manifest import Manifest, ModelShards
from m5flow.notifications import EventPublisher, Stage
from m5flow.stages.failure import (
    announce_job_failure,
    fail_run,
    failure_name,
    is_refusal,
    other_models_jobs,
    quota_reason,
    refusal_reason,
    stop_jobs,
)
from m5flow.storage import Storage

logger = Logger(child=True)


def publish_model(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    training: Mapping[str, Any],
    settings: jobs.JobSettings,
) -> str | None:
    """React to a training job's final state (`training`: the event's detail).

    Completed: create the model and its transform job; return the transform job's name, or
    None when an earlier delivery already created it (the announcement is still sent once)
    or the run has already failed (nothing is created). A transform quota that refuses the
    job fails the run and stops the other models' jobs.
    Failed or Stopped: announce `Run Failed` with SageMaker's reason, stop the other
    models' jobs, and create nothing (a later failure of the run is only logged).
    """
    name = training["TrainingJobName"]
    _, run, model_name = naming.run_and_model_of(training["OutputDataConfig"]["S3OutputPath"])
    manifest = Manifest.from_json(storage.read(naming.manifest_key(run)))
    failure = failure_name(storage, run)
    if training["TrainingJobStatus"] != "Completed":
        announce_job_failure(
            publisher, training, kind=Stage.TRAINING, run=run, dataset=manifest.dataset,
            once=failure,
        )  # fmt: skip
        # The forecast needs every model: the others' jobs would run on, billed (a training
        # job up to MaxTrainingSeconds), for a run that cannot finish. Stopped on every
        # delivery, not only the announcing one: a retry after a crash between the two
        # must still stop them, and a job that has ended is passed over.
        training_jobs, transform_jobs = other_models_jobs(manifest, model_name)
        stop_jobs(sagemaker, training=training_jobs, transform=transform_jobs)
        return None

    if publisher.settle(run, failure) != "absent":
        # A sibling's job or a step already failed the run: its forecast can never be
        # assembled, so no model, no transform, and no event after its `Run Failed`.
        logger.warning("the run has failed; no transform", extra={"run_id": run, "job": name})
        return None
    artifact = (training.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if not artifact:  # Some deliveries omit it; the job itself always knows.
        artifact = sagemaker.describe_training_job(TrainingJobName=name)["ModelArtifacts"][
            "S3ModelArtifacts"
        ]
    model = manifest.model(model_name)
    try:
        sagemaker.create_model(**jobs.model_request(manifest, model, artifact, settings))
    except sagemaker.exceptions.ClientError as exc:
        # CreateModel has no ResourceInUse: a model that exists is a ValidationException
        # whose message alone says so ('Cannot create already existing model "arn:..."').
        message = exc.response.get("Error", {}).get("Message", "")
        if "already existing model" in message:
            logger.info("model already exists", extra={"model": name})
        elif is_refusal(exc):
            reason = refusal_reason(f"model {name}", message)
            _fail_model(sagemaker, publisher, manifest, model, reason, failure)
            return None
        else:
            raise
    request = jobs.transform_request(manifest, model, settings)
    created: str | None = request["TransformJobName"]
    try:
        sagemaker.create_transform_job(**request)
    except sagemaker.exceptions.ResourceInUse:
        logger.info("transform job already exists", extra={"job": request["TransformJobName"]})
        created = None
    except sagemaker.exceptions.ResourceLimitExceeded as exc:
        # What the run's transforms need at once, beside the quota SageMaker names
        requests = [jobs.transform_request(manifest, m, settings) for m in manifest.models]
        index = manifest.models.index(model)
        reason = quota_reason("transform", requests, index, exc.response["Error"]["Message"])
        _fail_model(sagemaker, publisher, manifest, model, reason, failure)
        return None
    except sagemaker.exceptions.ClientError as exc:
        if not is_refusal(exc):
            raise
        reason = refusal_reason(f"transform job {created}", exc.response["Error"]["Message"])
        _fail_model(sagemaker, publisher, manifest, model, reason, failure)
        return None
    if publisher.settle(run, failure) != "absent":
        # A sibling failed while this model was being published, after the check above; its
        # stop came before this transform existed, so it is stopped here.
        logger.warning("the run failed meanwhile; transform stopped", extra={"run_id": run})
        stop_jobs(sagemaker, transform=[request["TransformJobName"]])
        return None
    publisher.publish(
        "Transform Started",
        {
            "run_id": run,
            "dataset": manifest.dataset,
            "model": model.name,
            "model_artifact": artifact,
            "transform_job": request["TransformJobName"],
            **({"pass": 1, "passes": model.passes} if model.passes else {}),
        },
        once=f"transform-started-{model.name}",
    )
    return created


def _fail_model(
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    refused: ModelShards,
    reason: str,
    failure: str,
) -> None:
    """SageMaker refused a model's model or transform job (a quota, or a malformed
    request): the forecast needs every model, so the run fails now with `reason`, and the
    other models' jobs are stopped (a transform still running, or a training job whose
    model would never be used).

    Before, Lambda retried twice and the failure queue announced the crash, while the
    siblings' transforms ran on to no end."""
    training_jobs, transform_jobs = other_models_jobs(manifest, refused.name)
    detail = {
        "run_id": manifest.run_id,
        "dataset": manifest.dataset,
        "stage": Stage.PUBLISH_MODEL,
        "reason": reason,
    }
    fail_run(
        sagemaker, publisher, detail, stop_training=training_jobs, stop_transform=transform_jobs,
        once=failure,
    )  # fmt: skip
