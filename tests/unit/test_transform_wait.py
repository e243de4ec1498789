"""Transforms beyond the transform quota wait for the run's own transforms to end
(m5flow.stages.transforms, stages.quota_wait), against a local SageMaker with that quota.

The steps are called directly, with real training and real transforms; a transform is held
in progress where a test needs one to be (`_held`), as a slow one on AWS would be.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import boto3
import pytest

from m5flow.manifest import Manifest
from tests.unit.test_handlers import _local_sagemaker, _run_started, _step_parts, _until_ended

QUOTA = {"ml.m5.xlarge for transform job usage": 1}
MODELS = ("h14", "h28", "h14-bt", "h28-bt")  # manifest order: the twins last


def _trained_run(bucket, load_function, small_m5, bus, storage, publisher, settings, sagemaker,
                 dataset: str) -> tuple[str, dict[str, dict]]:  # fmt: skip
    """A run of two direct models and their twins, every training job completed: (run,
    each model's training job description, the publish step's event detail)."""
    from m5flow.stages.training import start_training

    overrides = b'{"min_lags": [14, 28], "recursive_passes": 0}'
    boto3.client("s3").put_object(Bucket=bucket, Key=f"raw/{dataset}/m5flow.json", Body=overrides)
    run = _run_started(bucket, load_function, small_m5, bus, dataset)
    start_training(storage, sagemaker, publisher, f"runs/{run}/manifest.json", settings)
    bus.drain()
    trained = {m: _until_ended(sagemaker, f"m5flow-{run}-{m}") for m in MODELS}
    assert {job["TrainingJobStatus"] for job in trained.values()} == {"Completed"}
    return run, trained


@contextmanager
def _held(monkeypatch, *names: str) -> Iterator[dict[str, threading.Event]]:
    """Hold the transform jobs named in progress, each until its event is set."""
    from m5flow_local.sagemaker import transform

    releases, run = {name: threading.Event() for name in names}, transform.run_transform_job

    def held(backend, job, model):
        if job.name in releases:
            releases[job.name].wait(120)
        run(backend, job, model)

    monkeypatch.setattr(transform, "run_transform_job", held)
    try:
        yield releases
    finally:
        for release in releases.values():
            release.set()


def _transforms(sagemaker) -> dict[str, str]:
    jobs = sagemaker.list_transform_jobs(MaxResults=100)["TransformJobSummaries"]
    return {job["TransformJobName"]: job["TransformJobStatus"] for job in jobs}


def test_transforms_beyond_the_quota_wait_and_start_as_the_run_s_transforms_end(
    bucket, load_function, small_m5, bus, tmp_path, monkeypatch
):
    """Room for one transform: each model's transform that the quota refuses while the
    run's own transform holds the instance waits (`Transform Waiting`), the end of each
    transform starts the next, forecasting models first, and the last one's end assembles
    the forecast with its backtest."""
    from m5flow.stages.assemble import assemble_forecast
    from m5flow.stages.publish import publish_model

    storage, publisher, settings = _step_parts(bucket)
    with _local_sagemaker(tmp_path, quotas=QUOTA) as sagemaker:
        run, trained = _trained_run(bucket, load_function, small_m5, bus, storage, publisher,
                                    settings, sagemaker, "tq-turns")  # fmt: skip
        names = {m: f"m5flow-{run}-{m}" for m in MODELS}
        with _held(monkeypatch, *names.values()) as releases:
            # The twins' training ends first: they wait behind h14's transform as well.
            for model in ("h14", "h14-bt", "h28-bt", "h28"):
                publish_model(storage, sagemaker, publisher, trained[model], settings)
            events = bus.drain()
            assert [(e["detail-type"], e["detail"]["model"]) for e in events] == [
                ("Transform Started", "h14"), ("Transform Waiting", "h14-bt"),
                ("Transform Waiting", "h28-bt"), ("Transform Waiting", "h28"),
            ]  # fmt: skip
            waiting = events[-1]["detail"]
            assert waiting["transform_job"] == names["h28"]
            assert waiting["model_artifact"] == trained["h28"]["ModelArtifacts"]["S3ModelArtifacts"]
            assert waiting["reason"].startswith(
                f"transform job {names['h28']} waits for the quota (ResourceLimitExceeded: The "
                "account-level service limit 'ml.m5.xlarge for transform job usage' is 1 "
                "Instances, with current utilization of 1 Instances"
            ), waiting["reason"]
            assert waiting["summary"].startswith(f"Run {run} of dataset tq-turns: model h28 "
                                                 "trained: transform job ")  # fmt: skip
            # A second delivery of h28's end neither starts it nor says it again.
            assert publish_model(storage, sagemaker, publisher, trained["h28"], settings) is None
            assert bus.drain() == []
            assert _transforms(sagemaker) == {names["h14"]: "InProgress"}
            releases[names["h14"]].set()
            ended = _until_ended(sagemaker, names["h14"], kind="transform")

            order = []
            while True:
                assert ended["TransformJobStatus"] == "Completed", ended.get("FailureReason")
                assembly = assemble_forecast(storage, publisher, ended, sagemaker, settings)
                events = bus.drain()
                if assembly.submission:
                    assert [e["detail-type"] for e in events] == ["Forecast Ready"]
                    assert "backtest_wrmsse" in events[0]["detail"]["headline"]
                    break
                (started,) = events
                assert started["detail-type"] == "Transform Started" and started["detail"]["waited"]
                assert started["detail"]["summary"].endswith(", after waiting for the quota")
                assert started["detail"]["model_artifact"].startswith("s3://")
                job = started["detail"]["transform_job"]
                assert assembly.note.endswith(f"started {job}, which waited for the quota")
                order.append(started["detail"]["model"])
                releases[job].set()
                ended = _until_ended(sagemaker, job, kind="transform")
            assert order == ["h28", "h14-bt", "h28-bt"]  # the forecasting model first
        assert set(_transforms(sagemaker).values()) == {"Completed"}


def test_a_transform_that_waits_with_none_of_the_run_s_left_fails_the_run(
    bucket, load_function, small_m5, bus, tmp_path, monkeypatch
):
    """Another team's transform holds the only instance and none of the run's is in
    progress, whose end would start it: a forecasting model's transform fails the run at
    once (no `Transform Waiting` that nothing would ever end), a twin's costs the backtest."""
    from m5flow import jobs
    from m5flow.stages.publish import publish_model

    storage, publisher, settings = _step_parts(bucket)
    with _local_sagemaker(tmp_path, quotas=QUOTA) as sagemaker:
        run, trained = _trained_run(bucket, load_function, small_m5, bus, storage, publisher,
                                    settings, sagemaker, "tq-other")  # fmt: skip
        manifest = Manifest.from_json(storage.read(f"runs/{run}/manifest.json"))
        with _held(monkeypatch, "another-teams-transform"):
            # Its model: the run's h14, created as the publish step would.
            sagemaker.create_model(**jobs.model_request(
                manifest, manifest.model("h14"),
                trained["h14"]["ModelArtifacts"]["S3ModelArtifacts"], settings,
            ))  # fmt: skip
            other = jobs.transform_request(manifest, manifest.model("h14"), settings)
            sagemaker.create_transform_job(
                **{**other, "TransformJobName": "another-teams-transform"}
            )

            publish_model(storage, sagemaker, publisher, trained["h28-bt"], settings)
            (lost,) = bus.drain()
            assert lost["detail-type"] == "Backtest Lost", lost
            assert lost["detail"]["model"] == "h28-bt"

            publish_model(storage, sagemaker, publisher, trained["h28"], settings)
            (failed,) = bus.drain()
            assert failed["detail-type"] == "Run Failed", failed
            assert failed["detail"]["stage"] == "publish_model"
            reason = failed["detail"]["reason"]
            assert reason.startswith(f"SageMaker refused transform job m5flow-{run}-h28 "), reason
            assert (
                "this job 1: the quota holds this job, but other jobs held 1, and none of this "
                "run's is in progress, whose end would start it"
            ) in reason
            assert _transforms(sagemaker) == {"another-teams-transform": "InProgress"}


def test_a_waiting_transform_refused_moments_after_the_run_s_last_ended_is_tried_again(
    bucket, load_function, small_m5, bus, tmp_path, monkeypatch
):
    """h28 waits behind h14's transform; h14's ends, and another team's transform takes the
    instance first. SageMaker may still count h14's instances: the assemble step raises,
    for Lambda's retries, rather than fail the run at once; a retry past RELEASE_SECONDS
    that is refused too fails it."""
    from m5flow import jobs
    from m5flow.exceptions import QuotaNotReleasedError
    from m5flow.stages import quota_wait
    from m5flow.stages.assemble import assemble_forecast
    from m5flow.stages.publish import publish_model

    storage, publisher, settings = _step_parts(bucket)
    with _local_sagemaker(tmp_path, quotas=QUOTA) as sagemaker:
        run, trained = _trained_run(bucket, load_function, small_m5, bus, storage, publisher,
                                    settings, sagemaker, "tq-release")  # fmt: skip
        manifest = Manifest.from_json(storage.read(f"runs/{run}/manifest.json"))
        h14, h28 = f"m5flow-{run}-h14", f"m5flow-{run}-h28"
        with _held(monkeypatch, h14, "another-teams-transform") as releases:
            publish_model(storage, sagemaker, publisher, trained["h14"], settings)
            publish_model(storage, sagemaker, publisher, trained["h28"], settings)
            assert [e["detail-type"] for e in bus.drain()] == ["Transform Started",
                                                               "Transform Waiting"]  # fmt: skip
            releases[h14].set()
            ended = _until_ended(sagemaker, h14, kind="transform")
            other = jobs.transform_request(manifest, manifest.model("h14"), settings)
            sagemaker.create_transform_job(
                **{**other, "TransformJobName": "another-teams-transform"}
            )

            with pytest.raises(
                QuotaNotReleasedError, match=r"the run's last job ended \d+ s before"
            ):
                assemble_forecast(storage, publisher, ended, sagemaker, settings)
            assert bus.drain() == []

            later = time.time() + quota_wait.RELEASE_SECONDS + 1
            monkeypatch.setattr(quota_wait, "time", SimpleNamespace(time=lambda: later))
            assembly = assemble_forecast(storage, publisher, ended, sagemaker, settings)
            assert assembly.submission is None
            (failed,) = bus.drain()
            assert failed["detail-type"] == "Run Failed"
            assert failed["detail"]["stage"] == "assemble_forecast"
            assert f"SageMaker refused transform job {h28}" in failed["detail"]["reason"]
            assert "the quota holds this job, but other jobs held 1" in failed["detail"]["reason"]
            assert _transforms(sagemaker)["another-teams-transform"] == "InProgress"


def test_no_transform_waits_after_the_run_failed_and_a_late_waiter_is_stopped(
    bucket, load_function, small_m5, bus, tmp_path, monkeypatch
):
    """A sibling fails the run while h28's transform is being created: its stops leave
    h14's transform stopping, still holding the instance, and h28's refusal must not then
    announce a `Transform Waiting` after `Run Failed`. A waiting transform that a delivery
    created just before it died, after the run failed, is stopped by the next step that
    looks at the waiters, not left to run for nothing."""
    from m5flow import jobs
    from m5flow.stages.failure import fail_run, failure_name
    from m5flow.stages.publish import publish_model
    from m5flow.stages.transforms import start_waiting_transforms

    storage, publisher, settings = _step_parts(bucket)
    with _local_sagemaker(tmp_path, quotas=QUOTA) as sagemaker:
        run, trained = _trained_run(bucket, load_function, small_m5, bus, storage, publisher,
                                    settings, sagemaker, "tq-failed")  # fmt: skip
        manifest = Manifest.from_json(storage.read(f"runs/{run}/manifest.json"))
        h14, h14_bt = f"m5flow-{run}-h14", f"m5flow-{run}-h14-bt"
        failure = failure_name(storage, run)
        with _held(monkeypatch, h14, h14_bt) as releases:
            publish_model(storage, sagemaker, publisher, trained["h14"], settings)
            publish_model(storage, sagemaker, publisher, trained["h14-bt"], settings)
            assert [e["detail-type"] for e in bus.drain()] == ["Transform Started",
                                                               "Transform Waiting"]  # fmt: skip
            create = sagemaker.create_transform_job

            def sibling_fails_first(**request):
                detail = {"run_id": run, "dataset": "tq-failed", "stage": "transform",
                          "reason": "a sibling failed"}  # fmt: skip
                fail_run(sagemaker, publisher, detail, stop_training=[], stop_transform=[h14],
                         once=failure)  # fmt: skip
                return create(**request)

            monkeypatch.setattr(sagemaker, "create_transform_job", sibling_fails_first)
            publish_model(storage, sagemaker, publisher, trained["h28"], settings)
            assert [e["detail-type"] for e in bus.drain()] == ["Run Failed"]
            monkeypatch.setattr(sagemaker, "create_transform_job", create)

            releases[h14].set()  # h14 stopped: the instance is free for h14-bt, which waited
            assert _until_ended(sagemaker, h14, kind="transform")["TransformJobStatus"] == "Stopped"
            twin = jobs.transform_request(manifest, manifest.model("h14-bt"), settings)
            sagemaker.create_transform_job(**twin)  # by a delivery that died after it
            started = start_waiting_transforms(
                storage, sagemaker, publisher, manifest, settings,
                stage="assemble_forecast", failure=failure,
            )  # fmt: skip
            assert started == []
            status = sagemaker.describe_transform_job(TransformJobName=h14_bt)
            assert status["TransformJobStatus"] in ("Stopping", "Stopped"), status
            assert bus.drain() == []
