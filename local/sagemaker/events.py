"""EventBridge events for job state changes, in the envelope AWS delivers.

SageMaker publishes ``SageMaker Training Job State Change`` and ``SageMaker
Transform Job State Change`` events to the default bus; the pipeline is driven
by them, so the local SageMaker hands the very same shape to its ``emit``
callback.  ``detail`` carries the Describe response's fields with timestamps as
epoch milliseconds (integers) and ``Tags`` as a key -> value map, as in the
examples of the SageMaker developer guide ("Automating SageMaker with Amazon
EventBridge"); ``FailureReason`` is present only when the job failed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

TRAINING_DETAIL_TYPE = "SageMaker Training Job State Change"
TRANSFORM_DETAIL_TYPE = "SageMaker Transform Job State Change"
TIMESTAMP_FIELDS = frozenset(
    {
        "CreationTime",
        "LastModifiedTime",
        "TrainingStartTime",
        "TrainingEndTime",
        "TransformStartTime",
        "TransformEndTime",
        "StartTime",
        "EndTime",
        "Timestamp",
    }
)


def _to_millis(value: Any) -> Any:
    """Replace epoch-second timestamps (anywhere in the detail) by integer milliseconds."""
    if isinstance(value, dict):
        return {
            k: round(v * 1000)
            if k in TIMESTAMP_FIELDS and isinstance(v, int | float)
            else _to_millis(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_to_millis(v) for v in value]
    return value


def envelope(
    detail_type: str,
    describe: dict[str, Any],
    arn: str,
    tags: dict[str, str],
    *,
    region: str,
    account_id: str,
    now: float,
) -> dict[str, Any]:
    """Build one EventBridge event from a job's Describe response.

    Parameters
    ----------
    detail_type
        ``TRAINING_DETAIL_TYPE`` or ``TRANSFORM_DETAIL_TYPE``.
    describe
        The job's Describe response (timestamps in epoch seconds).
    arn
        The job's ARN, the event's only resource.
    tags
        The job's tags as a key -> value map.
    region, account_id
        Where the job runs.
    now
        Event time, epoch seconds.

    Returns
    -------
    dict
        ``{"version": "0", "id": ..., "detail-type": ..., "source": "aws.sagemaker", ...}``.

    Example
    -------
    >>> envelope(TRAINING_DETAIL_TYPE, {"CreationTime": 1.5}, "arn:x", {},
    ...          region="us-east-1", account_id="123456789012", now=0)["detail"]
    {'CreationTime': 1500, 'Tags': {}}
    """
    detail = _to_millis(describe)
    detail["Tags"] = dict(tags)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.sagemaker",
        "account": account_id,
        "time": dt.datetime.fromtimestamp(int(now), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [arn],
        "detail": detail,
    }
