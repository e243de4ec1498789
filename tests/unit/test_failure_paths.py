"""`fail_run` once the run is announced failed: no stop of its jobs may raise after that."""

from __future__ import annotations

import logging
import socket

import boto3
from botocore.config import Config

from m5flow.notifications import EventPublisher, ledger_key
from m5flow.stages import failure
from m5flow.storage import S3Storage
from tests.conftest import as_sent


def _unreachable_sagemaker() -> object:
    """A SageMaker client whose endpoint refuses connections, as when SageMaker is
    unreachable from the Lambda: botocore raises EndpointConnectionError, not a ClientError."""
    with socket.socket() as probe:  # a port just free, so nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return boto3.client(
        "sagemaker",
        endpoint_url=f"http://127.0.0.1:{port}",
        # One attempt each: botocore's own retries of a refused connection only slow the test.
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2),
    )


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_stop_that_cannot_reach_sagemaker_is_logged_and_the_failure_still_announced(bucket, bus):
    bus.watch("unreachable")
    storage = S3Storage(boto3.client("s3"), bucket)
    publisher = EventPublisher(boto3.client("events"), ledger=storage)
    run = "unreachable-000000000000"
    detail = {"run_id": run, "dataset": "unreachable", "stage": "publish_model", "reason": "x"}
    # Kept on the step's own logger: whether its records reach the root logger (caplog)
    # depends on the Powertools parent loggers that tests loaded before this one created.
    kept = _Kept()
    step_logger = logging.getLogger(failure.logger.name)
    step_logger.addHandler(kept)
    try:
        failure.fail_run(
            _unreachable_sagemaker(),
            publisher,
            detail,
            stop_training=["m5flow-unreachable-h28"],
            stop_transform=["m5flow-unreachable-h28-t"],
        )
    finally:
        step_logger.removeHandler(kept)

    (announced,) = bus.drain()
    assert announced["detail-type"] == "Run Failed" and announced["detail"] == as_sent(
        "Run Failed", detail
    )
    assert storage.head(ledger_key(run, failure.RUN_FAILED)) is not None
    not_stopped = [r for r in kept.records if r.getMessage() == "not stopped"]
    # Both stops were tried: the first failure did not end the loop.
    assert [(r.levelno, r.job) for r in not_stopped] == [
        (logging.WARNING, "m5flow-unreachable-h28"),
        (logging.WARNING, "m5flow-unreachable-h28-t"),
    ]
    assert all(r.why.startswith("EndpointConnectionError(") for r in not_stopped), [
        r.why for r in not_stopped
    ]
