"""Publish-model step: a training job finished; create its model and Batch Transform job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger

from m5flow import jobs, naming
from m5flow.manifest import Manifest
from m5flow.notifications import EventPublisher, Stage
from m5flow.stages.backtest_loss import job_failed, lost_backtest
from m5flow.stages.failure import failure_name, is_refusal, refusal_reason
from m5flow.stages.training import start_waiting
from m5flow.stages.transforms import announce_transform, fail_model, start_transform
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
    or the run has already failed (nothing is created), or the transform waits for the
    quota that the run's other transforms hold (`stages.transforms`). A transform quota
    that refuses a forecasting model's job otherwise fails the run and stops the other
    models' jobs.
    Failed or Stopped: announce `Run Failed` with SageMaker's reason, stop the other
    models' jobs, and create nothing (a later failure of the run is only logged). A backtest
    twin's failure or refusal costs the backtest only (`stages.backtest_loss`), and a twin
    completed after its backtest was lost gets no transform.

    Either way the job no longer holds its instances: the run's jobs that waited for the
    quota start now (`stages.training.start_waiting`).
    """
    _, run, model_name = naming.run_and_model_of(training["OutputDataConfig"]["S3OutputPath"])
    manifest = Manifest.from_json(storage.read(naming.manifest_key(run)))
    head = storage.head(naming.manifest_key(run))  # read once, for both ledger names
    failure = failure_name(storage, run, head)
    transform = _publish(storage, sagemaker, publisher, manifest, model_name, training, settings,
                         failure)  # fmt: skip
    start_waiting(storage, sagemaker, publisher, manifest, settings, stage=Stage.PUBLISH_MODEL,
                  failure=failure, manifest_head=head)  # fmt: skip
    return transform


def _publish(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    model_name: str,
    training: Mapping[str, Any],
    settings: jobs.JobSettings,
    failure: str,
) -> str | None:
    """What `publish_model` does for the job that ended, before the waiting jobs start."""
    run, name = manifest.run_id, training["TrainingJobName"]
    if training["TrainingJobStatus"] != "Completed":
        # Stops the run's other jobs (a training job may run for hours), or a lost twin's.
        job_failed(storage, sagemaker, publisher, manifest, training, kind=Stage.TRAINING,
                   model=model_name, failure=failure)  # fmt: skip
        return None

    if publisher.settle(run, failure) != "absent":
        # A sibling's job or a step already failed the run: its forecast can never be
        # assembled, so no model, no transform, and no event after its `Run Failed`.
        logger.warning("the run has failed; no transform", extra={"run_id": run, "job": name})
        return None
    model = manifest.model(model_name)
    if model.backtest and lost_backtest(publisher, run):
        # A sibling twin failed: a backtest with its days missing is not scored.
        logger.warning("the backtest is lost; no transform", extra={"run_id": run, "job": name})
        return None
    artifact = (training.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if not artifact:  # Some deliveries omit it; the job itself always knows.
        artifact = sagemaker.describe_training_job(TrainingJobName=name)["ModelArtifacts"][
            "S3ModelArtifacts"
        ]
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
            fail_model(storage, sagemaker, publisher, manifest, model.name, Stage.PUBLISH_MODEL,
                       reason, failure)  # fmt: skip
            return None
        else:
            raise
    started = start_transform(
        storage, sagemaker, publisher, manifest, model, settings,
        number=0, stage=Stage.PUBLISH_MODEL, failure=failure, artifact=artifact,
    )  # fmt: skip
    if started in ("refused", "stopped", "waiting"):
        return None
    job = announce_transform(publisher, manifest, model, 0, model_artifact=artifact)
    return job if started == "created" else None
