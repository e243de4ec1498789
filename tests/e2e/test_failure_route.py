"""A handler that crashes in the local cloud: its failure record takes the template's
failure rule to ReportFailureFunction, which announces a readable `Run Failed`."""

from __future__ import annotations

from pathlib import Path

import boto3

from m5flow_local.cloud import LocalCloud


def test_a_crashed_step_ends_in_run_failed_through_the_failure_rule(tmp_path: Path) -> None:
    run = "broken-0123456789ab"
    with LocalCloud(tmp_path, echo=None) as cloud:
        # A manifest that is not JSON: StartTrainingFunction raises on it, three times.
        boto3.client("s3").put_object(
            Bucket=cloud.bucket, Key=f"runs/{run}/manifest.json", Body=b"{not json"
        )
        with cloud.outcomes.condition:
            reported = cloud.outcomes.condition.wait_for(
                lambda: any(e.get("detail-type") == "Run Failed" for e in cloud.outcomes.events),
                timeout=120,
            )
        routed = [targets for event, targets in cloud.routed if event.get("source") == "lambda"]

    assert reported
    (failed,) = [e for e in cloud.outcomes.events if e.get("detail-type") == "Run Failed"]
    assert failed["detail"]["stage"] == "start_training" and failed["detail"]["run_id"] == run
    assert "JSONDecodeError" in failed["detail"]["reason"]
    assert routed == [["FailureQueue", "ReportFailureFunction"]]
