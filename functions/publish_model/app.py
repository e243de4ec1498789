"""PublishModel: a training job reached a final state ("SageMaker Training Job State Change")."""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from m5flow.jobs import JobSettings
from m5flow.notifications import EventPublisher
from m5flow.stages.publish import publish_model
from m5flow.storage import S3Storage

logger = Logger()
settings = JobSettings.from_env(os.environ)
storage = S3Storage(boto3.client("s3"), settings.bucket)
sagemaker = boto3.client("sagemaker")
publisher = EventPublisher(boto3.client("events"), os.environ["EVENT_BUS_NAME"], ledger=storage)


@logger.inject_lambda_context
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    transform_job = publish_model(storage, sagemaker, publisher, event.detail, settings)
    return {"transform_job": transform_job}
