"""A training job's container output in CloudWatch Logs, where SageMaker puts it.

SageMaker streams each instance's output to the log group ``/aws/sagemaker/TrainingJobs``,
stream ``<job>/algo-<n>-<epoch seconds>``, one event per line. A job's FailureReason
keeps only its first 1024 characters, so that log is where a long traceback's message
is read (m5flow's `Run Failed` points there); locally the same group and streams exist on
the local endpoint, through an ordinary boto3 client (``AWS_ENDPOINT_URL``, as `s3io`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# PutLogEvents' limits: 10,000 events and 1,048,576 bytes a call, counting 26 bytes an
# event; 256 KB an event.
_BATCH_EVENTS, _BATCH_BYTES, _EVENT_OVERHEAD = 10_000, 1_048_576, 26
_EVENT_BYTES = 256 * 1024 - _EVENT_OVERHEAD


def client(region: str) -> Any:
    """A new CloudWatch Logs client for one job thread."""
    return boto3.session.Session().client("logs", region_name=region)


def stream_name(job: str, host: str, started: float) -> str:
    """SageMaker's stream name for one instance of a training job.

    Example
    -------
    >>> stream_name("m5flow-shop-1a2b-h7", "algo-1", 1795798649.2)
    'm5flow-shop-1a2b-h7/algo-1-1795798649'
    """
    return f"{job}/{host}-{int(started)}"


def put_log(logs: Any, group: str, stream: str, log: Path) -> None:
    """Put the lines of file `log` into a new stream of `group`, the group made if need be."""
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    for batch in _batches(log.read_bytes().decode(errors="replace").splitlines()):
        events = [{"timestamp": now, "message": line} for line in batch]
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


def _batches(lines: list[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for line in lines:
        line = line.encode()[:_EVENT_BYTES].decode(errors="ignore") or " "  # no empty events
        cost = len(line.encode()) + _EVENT_OVERHEAD
        if batch and (len(batch) == _BATCH_EVENTS or size + cost > _BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += cost
    if batch:
        yield batch
