"""The local event router never dies in silence: a run waiting on it learns why at once."""

from __future__ import annotations

from pathlib import Path

import boto3

from m5flow_local.cloud import LocalCloud


def test_a_router_that_cannot_read_the_bus_ends_the_wait_with_the_reason(tmp_path: Path) -> None:
    """Its queue gone, the receiver used to die with a thread traceback on stderr, and the
    run then waited for its whole --timeout (an hour by default) for events never read."""
    with LocalCloud(tmp_path, echo=None) as cloud:
        assert cloud.router is not None
        boto3.client("sqs").delete_queue(QueueUrl=cloud.router.queue_url)

        outcome = cloud.wait_for_outcome("any-dataset", timeout=60)

    assert outcome["source"] == "lambda"
    assert outcome["detail"]["function"] == "event router"
    assert "QueueDoesNotExist" in outcome["detail"]["reason"]
