"""Starting a model's Batch Transform, and failing the run when SageMaker refuses it.

Two steps start transforms: the publish step a model's first (once its training completes),
the assemble step each later pass of the recursive model (m5flow.recursive). Both must word
a refusal the same way, stop the other models' jobs, and stop their own job when a sibling
failed the run while they created it. Nothing here imports a dataframe library: the publish
step ships without one (m5flow.manifest).
"""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools import Logger

from m5flow import jobs, naming
from m5flow.manifest import Manifest, ModelShards
from m5flow.notifications import EventPublisher
from m5flow.stages.backtest_loss import lose_backtest, lost_backtest
from m5flow.stages.failure import (
    fail_run,
    is_refusal,
    other_models_jobs,
    quota_reason,
    refusal_reason,
    stop_jobs,
)
from m5flow.storage import Storage

logger = Logger(child=True)
Outcome = Literal["created", "existed", "refused", "stopped"]


def start_transform(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    model: ModelShards,
    settings: jobs.JobSettings,
    *,
    number: int,
    stage: str,
    failure: str,
) -> Outcome:
    """Create the transform job of the model's pass `number` (0: its only, or first).

    "created" or "existed" (an earlier delivery created it): the caller announces it.
    "refused": SageMaker refused the job (a quota, or a malformed request), and the run
    failed at `stage` with the reason (a backtest twin's: the run lost its backtest).
    "stopped": a sibling failed the run while this job was being created (its stop came
    before the job existed), or a twin's backtest was lost meanwhile, so it was stopped here.
    """
    request = jobs.transform_request(manifest, model, settings, number)
    job = request["TransformJobName"]
    outcome: Outcome = "created"
    try:
        sagemaker.create_transform_job(**request)
    except sagemaker.exceptions.ResourceInUse:
        logger.info("transform job already exists", extra={"job": job})
        outcome = "existed"
    except sagemaker.exceptions.ClientError as exc:
        message = exc.response["Error"]["Message"]
        if exc.response["Error"]["Code"] == "ResourceLimitExceeded":
            # What the run's transforms need at once, beside the quota SageMaker names
            requests = [
                request if m is model else jobs.transform_request(manifest, m, settings)
                for m in manifest.models
            ]
            reason = quota_reason("transform", requests, manifest.models.index(model), message)
        elif is_refusal(exc):
            reason = refusal_reason(f"transform job {job}", message)
        else:
            raise
        fail_model(storage, sagemaker, publisher, manifest, model.name, stage, reason, failure)
        return "refused"
    if publisher.settle(manifest.run_id, failure) != "absent":
        logger.warning("the run failed meanwhile; transform stopped", extra={"job": job})
        stop_jobs(sagemaker, transform=[job])
        return "stopped"
    if model.backtest and lost_backtest(publisher, manifest.run_id):
        # A sibling twin was lost while this one was being created (its stops came first).
        logger.warning("the backtest was lost meanwhile; transform stopped", extra={"job": job})
        stop_jobs(sagemaker, transform=[job])
        return "stopped"
    return outcome


def announce_transform(
    publisher: EventPublisher,
    manifest: Manifest,
    model: ModelShards,
    number: int,
    **extra: str,
) -> str:
    """Send `Transform Started` for the model's pass `number` once, whichever delivery
    created the job (`start_transform`); `extra`: more of the detail. Returns the job's name.
    """
    name = naming.pass_name(model.name, number)
    job = naming.job_name(manifest.run_id, name)
    publisher.publish(
        "Transform Started",
        {
            "run_id": manifest.run_id,
            "dataset": manifest.dataset,
            "model": model.name,
            **extra,
            "transform_job": job,
            **({"pass": number + 1, "passes": model.passes} if model.passes else {}),
        },
        once=f"transform-started-{name}",
    )
    return job


def fail_model(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    refused: str,
    stage: str,
    reason: str,
    failure: str,
) -> None:
    """SageMaker refused a job of model `refused` (its model or a transform): the forecast
    needs every model, so the run fails now with `reason`, and the other models' jobs are
    stopped (a transform still running, or a training job whose model would never be used).
    A backtest twin the forecast does not need: its refusal costs the backtest only.

    Before, Lambda retried twice and the failure queue announced the crash, while the
    siblings' transforms ran on to no end."""
    if manifest.model(refused).backtest:
        lose_backtest(storage, sagemaker, publisher, manifest, model=refused, stage=stage,
                      reason=reason, failure=failure)  # fmt: skip
        return
    training_jobs, transform_jobs = other_models_jobs(manifest, refused)
    detail = {"run_id": manifest.run_id, "dataset": manifest.dataset, "stage": stage,
              "reason": reason}  # fmt: skip
    fail_run(
        sagemaker, publisher, detail, stop_training=training_jobs, stop_transform=transform_jobs,
        once=failure,
    )  # fmt: skip
