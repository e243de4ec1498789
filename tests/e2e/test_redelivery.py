"""At-least-once delivery through the whole local flow: after a run finished, every event it
consumed is delivered three more times (from three threads) and nothing new happens."""

from __future__ import annotations

import threading

import boto3

from m5flow.schema import INPUT_FILES
from m5flow_local.cloud import LocalCloud


def test_redelivered_events_start_nothing_and_announce_nothing(small_m5, tmp_path):
    with LocalCloud(tmp_path / "cloud", echo=None) as cloud:
        assert cloud.router is not None
        cloud.upload_dataset(small_m5, "again", INPUT_FILES)
        assert cloud.wait_for_outcome("again", timeout=600)["detail-type"] == "Forecast Ready"
        sagemaker = boto3.client("sagemaker")
        jobs_before = sagemaker.list_training_jobs()["TrainingJobSummaries"]
        consumed = [event for event, targets in list(cloud.routed) if targets]
        routed_to = {t for _, targets in cloud.routed for t in targets}
        assert routed_to == {
            "ShardFunction", "StartTrainingFunction", "PublishModelFunction",
            "AssembleForecastFunction",
        }  # fmt: skip

        results = []
        for event in consumed:
            threads = [
                threading.Thread(target=lambda e=event: results.extend(cloud.router.deliver(e)))
                for _ in range(3)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        assert all(r.error is None for r in results), [r.error for r in results if r.error]
        by_function: dict[str, list] = {}
        for r in results:
            by_function.setdefault(r.function, []).append(r.result)
        # Nothing started, nothing announced a second time:
        assert {r["status"] for r in by_function["ShardFunction"]} == {"duplicate"}
        assert all(r["training_jobs"] == [] for r in by_function["StartTrainingFunction"])
        assert all(r["transform_job"] is None for r in by_function["PublishModelFunction"])
        assert all(r["submission"] is None for r in by_function["AssembleForecastFunction"])
        assert sagemaker.list_training_jobs()["TrainingJobSummaries"] == jobs_before
