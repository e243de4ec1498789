"""A run waiting on the local cloud learns why the wait ended: the router never dies in
silence, and a timeout says what was still going."""

from __future__ import annotations

import time
from pathlib import Path

import boto3
import pytest

from m5flow.schema import INPUT_FILES
from m5flow_local.cloud import LocalCloud, LocalRunFailedError


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


def test_a_timeout_names_the_option_and_what_was_running(tmp_path: Path) -> None:
    with LocalCloud(tmp_path, echo=None) as cloud, pytest.raises(LocalRunFailedError) as ended:
        cloud.wait_for_outcome("quiet", timeout=0.5)

    assert str(ended.value) == (
        "no forecast for quiet within 0.5 s (--timeout waits longer); no job was running"
    )


def test_the_router_knows_which_function_it_is_invoking(tmp_path: Path, small_m5: Path) -> None:
    seen: set[str | None] = set()
    with LocalCloud(tmp_path, echo=None) as cloud:
        assert cloud.router is not None
        cloud.upload_dataset(small_m5, "busy-router", INPUT_FILES)
        deadline = time.monotonic() + 60
        while "ShardFunction" not in seen and time.monotonic() < deadline:
            seen.add(cloud.router.busy)
            time.sleep(0.002)
        # To its end: moto's queues outlive this cloud in the process, and events left in
        # them would reach the next test's router.
        outcome = cloud.wait_for_outcome("busy-router", timeout=300)
    assert "ShardFunction" in seen
    assert outcome["detail-type"] == "Forecast Ready"


def test_a_timeout_names_the_function_at_work(tmp_path: Path) -> None:
    """Between jobs (assembly, or a transform being created) "no job was running" read
    like a hang; the step the router is invoking is named too."""
    with LocalCloud(tmp_path, echo=None) as cloud, pytest.raises(LocalRunFailedError) as ended:
        assert cloud.router is not None and cloud.router.busy is None
        cloud.router.busy = "AssembleForecastFunction"
        cloud.wait_for_outcome("quiet", timeout=0.5)

    assert str(ended.value).endswith("no job was running; AssembleForecastFunction was at work")
