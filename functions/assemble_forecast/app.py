"""AssembleForecast: a transform job finished ("SageMaker Transform Job State Change"), or a
run lost its backtest ("Backtest Lost", which may leave no transform to assemble)."""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from m5flow.jobs import JobSettings
from m5flow.notifications import EventPublisher
from m5flow.stages.assemble import assemble_forecast, assemble_without_backtest
from m5flow.storage import S3Storage

logger = Logger()
settings = JobSettings.from_env(os.environ)
storage = S3Storage(boto3.client("s3"), settings.bucket)
sagemaker = boto3.client("sagemaker")  # later passes, and transforms that waited, start here
publisher = EventPublisher(boto3.client("events"), os.environ["EVENT_BUS_NAME"], ledger=storage)


@logger.inject_lambda_context
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    if event.detail_type == "Backtest Lost":
        assembly = assemble_without_backtest(storage, publisher, event.detail)
    else:
        assembly = assemble_forecast(storage, publisher, event.detail, sagemaker, settings)
    return {"submission": assembly.submission, "note": assembly.note}
