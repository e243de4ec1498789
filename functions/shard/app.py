"""Shard: a raw M5 input landed in S3 (EventBridge "Object Created")."""

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

from m5flow.notifications import EventPublisher
from m5flow.shards import ShardConfig
from m5flow.stages.shard import shard_dataset
from m5flow.storage import S3Storage

logger = Logger()
storage = S3Storage(boto3.client("s3"), os.environ["DATA_BUCKET"])
publisher = EventPublisher(boto3.client("events"), os.environ["EVENT_BUS_NAME"], ledger=storage)
config = ShardConfig.from_env(os.environ)


@logger.inject_lambda_context
@event_source(data_class=S3EventBridgeNotificationEvent)
def lambda_handler(event: S3EventBridgeNotificationEvent, context: LambdaContext) -> dict[str, Any]:
    outcome = shard_dataset(storage, publisher, event.detail.object.key, config)
    return {"status": outcome.status, "dataset": outcome.dataset, "run_id": outcome.run_id}
