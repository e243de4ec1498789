"""The recursive model's passes in the event flow (m5flow.stages.assemble._next_pass)."""

from __future__ import annotations

import boto3
import pandas as pd
import pytest

from m5flow.schema import SALES_FILE
from tests.unit.test_handlers import (
    _keys,
    _model_event,
    _run_started,
    _step_parts,
    _write_predictions,
)


def _recursive_run(bucket, load_function, small_m5, bus, dataset: str, passes: int = 3) -> str:
    """A run of h28 and r1 (`passes` passes) whose pass 0 has predicted."""
    settings = f'{{"min_lags": [28], "recursive_passes": {passes}}}'.encode()
    boto3.client("s3").put_object(Bucket=bucket, Key=f"raw/{dataset}/m5flow.json", Body=settings)
    run = _run_started(bucket, load_function, small_m5, bus, dataset)
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE), recursive_pass=0)
    return run


class _Recorder:
    """Records the stop calls a step makes (moto has no StopTransformJob)."""

    def __init__(self, sagemaker, monkeypatch) -> None:
        self.training: list[str] = []
        self.transform: list[str] = []
        monkeypatch.setattr(
            sagemaker, "stop_training_job", lambda **kw: self.training.append(kw["TrainingJobName"])
        )
        monkeypatch.setattr(
            sagemaker,
            "stop_transform_job",
            lambda **kw: self.transform.append(kw["TransformJobName"]),
        )


def test_a_pass_started_while_a_sibling_fails_is_stopped_and_not_announced(
    bucket, load_function, small_m5, bus, monkeypatch
):
    """r1's first pass completes and finds the run alive; while the assemble step writes
    the second pass's shards (minutes at full scale), h28's training fails: the publish
    step announces Run Failed and stops r1's pass jobs, r1-p2 among them, which does not
    exist yet. Then the assemble step creates r1-p2: it must re-check the run and stop it,
    as the publish step does (test_a_model_published_while_a_sibling_fails_stops_its_own_
    transform), and announce nothing after Run Failed."""
    from m5flow.stages.assemble import assemble_forecast
    from m5flow.stages.publish import publish_model

    run = _recursive_run(bucket, load_function, small_m5, bus, "pass-race")
    storage, publisher, settings = _step_parts(bucket)
    sagemaker = boto3.client("sagemaker")
    stops = _Recorder(sagemaker, monkeypatch)
    create = sagemaker.create_transform_job
    failed = _model_event(bucket, run, "sagemaker_training_failed", "h28")["detail"]

    def sibling_fails_first(**request):
        publish_model(storage, sagemaker, publisher, failed, settings)
        stops.transform.clear()  # what the publish step stopped: r1-p2 did not exist yet
        return create(**request)

    monkeypatch.setattr(sagemaker, "create_transform_job", sibling_fails_first)
    completed = _model_event(bucket, run, "sagemaker_transform_completed", "r1")["detail"]
    assemble_forecast(storage, publisher, completed, sagemaker, settings)

    kinds = [e["detail-type"] for e in bus.drain()]
    assert kinds == ["Run Failed"], kinds  # not "Transform Started" after "Run Failed"
    assert stops.transform == [f"m5flow-{run}-r1-p2"]  # the pass created for a failed run


def test_a_pass_refused_by_a_quota_says_so_and_stops_the_other_models_jobs(
    bucket, load_function, small_m5, bus, monkeypatch
):
    """A later pass refused by a transform quota fails the run as the publish step's
    refusal does (_fail_model): worded as a quota, not as a malformed request of the stack's
    parameters, and with the other models' jobs stopped."""
    from m5flow.stages.assemble import assemble_forecast

    run = _recursive_run(bucket, load_function, small_m5, bus, "pass-quota")
    storage, publisher, settings = _step_parts(bucket)
    sagemaker = boto3.client("sagemaker")
    stops = _Recorder(sagemaker, monkeypatch)
    message = (
        "The account-level service limit 'ml.m5.xlarge for transform job usage' is 1 "
        "Instances, with current utilization of 1 Instances and a request delta of 1 Instances."
    )

    def refused(**request):
        error = {"Error": {"Code": "ResourceLimitExceeded", "Message": message}}
        raise sagemaker.exceptions.ResourceLimitExceeded(error, "CreateTransformJob")

    monkeypatch.setattr(sagemaker, "create_transform_job", refused)
    completed = _model_event(bucket, run, "sagemaker_transform_completed", "r1")["detail"]
    result = assemble_forecast(storage, publisher, completed, sagemaker, settings)
    assert result.note.endswith("refused: run failed")

    (failed,) = bus.drain()
    reason = failed["detail"]["reason"]
    assert "ValidationException" not in reason, reason
    assert "ResourceLimitExceeded" in reason, reason
    # the direct model's and its twin's jobs, which may still train or transform, as
    # _fail_model stops them
    direct = [f"m5flow-{run}-h28", f"m5flow-{run}-h28-bt"]
    assert stops.training == direct, stops.training
    assert stops.transform == direct, stops.transform


def test_duplicate_pass_completions_write_byte_identical_shards(
    bucket, load_function, small_m5, bus
):
    """Sound-check: a re-delivered completion rewrites pass 1's shards while its transform
    may read them: the bytes must be the same."""
    run = _recursive_run(bucket, load_function, small_m5, bus, "pass-dup")
    assemble = load_function("AssembleForecastFunction")
    event = _model_event(bucket, run, "sagemaker_transform_completed", "r1")
    for _ in range(2):
        assemble.invoke(event)
    s3 = boto3.client("s3")
    for key in _keys(bucket, f"runs/{run}/inference/r1-p2/"):
        versions = s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
        assert len(versions) == 2 and len({v["ETag"] for v in versions}) == 1, versions
    assert [e["detail-type"] for e in bus.drain()] == ["Transform Started"]


def test_a_pass_event_that_crashed_is_reported_for_its_run(bucket, load_function, small_m5, bus):
    """Sound-check: the failure reporter reads a pass's job name and output path."""
    from m5flow.stages.failure import report_failure

    run = _recursive_run(bucket, load_function, small_m5, bus, "pass-crash")
    storage, publisher, _ = _step_parts(bucket)
    event = _model_event(bucket, run, "sagemaker_transform_completed", "r1-p2")
    record = {
        "requestContext": {
            "functionArn": "arn:aws:lambda:us-east-1:1:function:s-AssembleForecastFunction-x",
            "requestId": "r",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": event,
        "responsePayload": {"errorType": "ClientError", "errorMessage": "AccessDenied"},
    }
    detail = report_failure(storage, publisher, record)
    assert detail["run_id"] == run and detail["dataset"] == "pass-crash"
    assert detail["stage"] == "assemble_forecast"
    assert detail["trigger"] == f"m5flow-{run}-r1-p2"
    (failed,) = bus.drain()
    assert failed["detail"]["trigger"] == f"m5flow-{run}-r1-p2"


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_a_failed_pass_fails_the_run_once_naming_the_pass(
    bucket, load_function, small_m5, bus, status
):
    """Sound-check: a pass's transform that failed or was stopped: one Run Failed naming the
    pass's job; a second delivery and a later pass's completion say nothing."""
    run = _recursive_run(bucket, load_function, small_m5, bus, f"pass-{status.lower()}")
    assemble = load_function("AssembleForecastFunction")
    event = _model_event(bucket, run, "sagemaker_transform_failed", "r1-p2")
    event["detail"]["TransformJobStatus"] = status
    assemble.invoke(event)
    assemble.invoke(event)
    later = assemble.invoke(_model_event(bucket, run, "sagemaker_transform_completed", "r1"))
    assert later["note"] == "the run has failed: no forecast"
    (failed,) = bus.drain()
    assert failed["detail"]["reason"].startswith(f"transform job m5flow-{run}-r1-p2 {status}")


def test_a_failed_transform_stops_the_other_models_jobs(
    bucket, load_function, small_m5, bus, monkeypatch
):
    """As a failed training job does: h28's transform failed, so r1's training and every
    pass's transform would run on for a run that cannot finish."""
    from m5flow.stages.assemble import assemble_forecast

    run = _recursive_run(bucket, load_function, small_m5, bus, "transform-fails", passes=2)
    storage, publisher, settings = _step_parts(bucket)
    sagemaker = boto3.client("sagemaker")
    stops = _Recorder(sagemaker, monkeypatch)
    failed = _model_event(bucket, run, "sagemaker_transform_failed", "h28")["detail"]
    assemble_forecast(storage, publisher, failed, sagemaker, settings)
    assert [e["detail-type"] for e in bus.drain()] == ["Run Failed"]
    assert stops.training == [f"m5flow-{run}-r1", f"m5flow-{run}-h28-bt"]
    assert stops.transform == [f"m5flow-{run}-r1", f"m5flow-{run}-r1-p2", f"m5flow-{run}-h28-bt"]
