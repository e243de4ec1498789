"""At-least-once delivery through the whole local flow: after a run finished, every event it
consumed is delivered three more times (from three threads) and nothing new happens."""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3

from m5flow.notifications import EVENTS_PREFIX, SOURCE
from m5flow.schema import INPUT_FILES
from m5flow.shards import ShardConfig
from m5flow_local.cloud import LocalCloud


def _wait_until_routed(cloud: LocalCloud, events: Any) -> None:
    """Return once every event already on the bus has been routed, and every handler those
    events started has returned: a sentinel put now is routed after them, since moto hands
    the queue's messages over in order and the router routes them one at a time. Without it,
    an event announced by a redelivery could still be on its way when the test looks."""
    (entry,) = events.put_events(
        Entries=[{"Source": "m5flow.test", "DetailType": "Sentinel", "Detail": "{}"}]
    )["Entries"]
    deadline = time.monotonic() + 120
    while not any(event.get("id") == entry["EventId"] for event, _ in list(cloud.routed)):
        assert time.monotonic() < deadline, "the router never routed the sentinel"
        time.sleep(0.1)


def _announced(cloud: LocalCloud) -> dict[str, str]:
    """The m5flow events routed so far: their ids (a redelivered event keeps its own), and
    detail-types."""
    return {e["id"]: e["detail-type"] for e, _ in list(cloud.routed) if e.get("source") == SOURCE}


def _ledger(s3: Any, bucket: str, run: str) -> set[tuple[str, str, str]]:
    """Every version of every record of the run's announcements, so that a record written
    again with the same bytes counts as written."""
    found = set()
    for page in s3.get_paginator("list_object_versions").paginate(
        Bucket=bucket, Prefix=f"{EVENTS_PREFIX}{run}/"
    ):
        found |= {(v["Key"], v["VersionId"], v["ETag"]) for v in page.get("Versions", [])}
        found |= {(m["Key"], m["VersionId"], "deleted") for m in page.get("DeleteMarkers", [])}
    return found


def _sagemaker_resources(sagemaker: Any) -> dict[str, list[dict]]:
    return {
        "training jobs": sagemaker.list_training_jobs(MaxResults=100)["TrainingJobSummaries"],
        "models": sagemaker.list_models(MaxResults=100)["Models"],
        "transform jobs": sagemaker.list_transform_jobs(MaxResults=100)["TransformJobSummaries"],
    }


def test_redelivered_events_start_nothing_and_announce_nothing(small_m5, tmp_path):
    with LocalCloud(tmp_path / "cloud", echo=None) as cloud:
        assert cloud.router is not None
        cloud.upload_dataset(small_m5, "again", INPUT_FILES)
        outcome = cloud.wait_for_outcome("again", timeout=600)
        assert outcome["detail-type"] == "Forecast Ready"
        run = outcome["detail"]["run_id"]
        events, s3, sagemaker = (boto3.client(s) for s in ("events", "s3", "sagemaker"))
        _wait_until_routed(cloud, events)
        announced_before = _announced(cloud)
        ledger_before = _ledger(s3, cloud.bucket, run)
        made_before = _sagemaker_resources(sagemaker)
        consumed = [event for event, targets in list(cloud.routed) if targets]
        routed_to = {t for _, targets in cloud.routed for t in targets}
        assert routed_to == {
            "ShardFunction", "StartTrainingFunction", "PublishModelFunction",
            "AssembleForecastFunction",
        }  # fmt: skip
        # The snapshots hold the run's announcements, each sent and recorded once, so that an
        # unchanged snapshot below means something.
        recorded = {key.rsplit("/", 1)[-1] for key, _, _ in ledger_before}
        models = len(made_before["models"])
        transforms = len(made_before["transform jobs"])  # a model's, and the recursive passes'
        assert models >= 1 and transforms == models + ShardConfig().recursive_passes - 1
        assert sorted(announced_before.values()) == sorted(
            ["Run Started", "Training Started", "Forecast Ready"]
            + ["Transform Started"] * transforms
        )
        assert len(recorded) == len(announced_before), recorded
        assert {"run-started.json", "training-started.json", "forecast-ready.json"} <= recorded

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
        _wait_until_routed(cloud, events)

        assert all(r.error is None for r in results), [r.error for r in results if r.error]
        by_function: dict[str, list] = {}
        for r in results:
            by_function.setdefault(r.function, []).append(r.result)
        assert {r["status"] for r in by_function["ShardFunction"]} == {"duplicate"}
        assert all(r["training_jobs"] == [] for r in by_function["StartTrainingFunction"])
        assert all(r["transform_job"] is None for r in by_function["PublishModelFunction"])
        assert all(r["submission"] is None for r in by_function["AssembleForecastFunction"])
        # A handler's result does not tell whether it announced its event again (a step
        # that re-sends Transform Started or Forecast Ready still returns "nothing made"):
        # the bus and the ledger do.
        announced_again = {
            i: kind for i, kind in _announced(cloud).items() if i not in announced_before
        }
        assert announced_again == {}
        assert _ledger(s3, cloud.bucket, run) == ledger_before
        assert _sagemaker_resources(sagemaker) == made_before
