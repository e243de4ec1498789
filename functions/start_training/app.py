"""StartTraining: a run's manifest was written (EventBridge "Object Created")."""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import (
    S3EventBridgeNotificationEvent,
    event_source,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from m5flow.jobs import JobSettings
from m5flow.notifications import EventPublisher
from m5flow.stages.training import start_training
from m5flow.storage import S3Storage

logger = Logger()
settings = JobSettings.from_env(os.environ)
storage = S3Storage(boto3.client("s3"), settings.bucket)
sagemaker = boto3.client("sagemaker")
publisher = EventPublisher(boto3.client("events"), os.environ["EVENT_BUS_NAME"], ledger=storage)


@logger.inject_lambda_context
@event_source(data_class=S3EventBridgeNotificationEvent)
def lambda_handler(event: S3EventBridgeNotificationEvent, context: LambdaContext) -> dict[str, Any]:
    created = start_training(storage, sagemaker, publisher, event.detail.object.key, settings)
    return {"training_jobs": created}
