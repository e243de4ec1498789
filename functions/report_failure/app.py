"""ReportFailure: a pipeline function failed for good (Lambda's on-failure event on the bus)."""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from m5flow.notifications import EventPublisher
from m5flow.stages.failure import report_failure
from m5flow.storage import S3Storage

logger = Logger()
storage = S3Storage(boto3.client("s3"), os.environ["DATA_BUCKET"])
publisher = EventPublisher(boto3.client("events"), os.environ["EVENT_BUS_NAME"], ledger=storage)


@logger.inject_lambda_context
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    return report_failure(storage, publisher, event.detail)
