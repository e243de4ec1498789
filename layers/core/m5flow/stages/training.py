"""Start-training step: a manifest was written; start one training job per model it lists."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from m5flow import jobs, naming
from m5flow.exceptions import RunFailedError
from m5flow.notifications import EventPublisher
from m5flow.shards import Manifest
from m5flow.stages.failure import announce_run_failure
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
    for request in requests:
        try:
            sagemaker.create_training_job(**request)
        except sagemaker.exceptions.ResourceInUse:
            logger.info("training job already exists", extra={"job": request["TrainingJobName"]})
            continue
        created.append(request["TrainingJobName"])
    publisher.publish(
        "Training Started",
        {
            "run_id": manifest.run_id,
            "dataset": manifest.dataset,
            "training_jobs": [request["TrainingJobName"] for request in requests],
            "instance_count": settings.training_instance_count,
            "manifest": naming.manifest_key(manifest.run_id),
        },
        once="training-started",
    )
    return created
