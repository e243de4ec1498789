"""Local SageMaker training, driven only through boto3 (SageMaker API + moto's S3).

Pins what the pipeline relies on: container-like training and validation,
model.tar.gz layout, the EventBridge events, AWS's errors, stop and max runtime,
and distributed training matching single-instance training.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError

from m5flow import jobs
from m5flow.stages.failure import is_refusal
from m5flow_local.sagemaker import LocalSageMaker, hyperparameters, training
from tests.local.conftest_sagemaker import (
    ACCOUNT,
    REGION,
    EventLog,
    LocalCloud,
    csv_bytes,
    load_model,
    local_cloud,
    parquet_bytes,
    put,
    training_request,
    tweedie_data,
)

TWEEDIE = {
    "objective": "reg:tweedie",
    "tweedie_variance_power": "1.5",
    "eta": "0.3",
    "max_depth": "4",
}


@pytest.fixture(scope="module")
def cloud(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LocalCloud]:
    """This module's local SageMaker and bucket, on the session's moto server."""
    yield from local_cloud(tmp_path_factory, request)


def _arn(name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name.lower()}"


def _is_millis(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 10**12


@pytest.fixture(scope="module")
def csv_prefix(cloud: LocalCloud) -> str:
    """CSV train/validation channels like the pipeline's shards."""
    rng = np.random.default_rng(7)
    put(cloud, "runs/csv/train/part-0.csv", csv_bytes(tweedie_data(rng, 400)))
    put(cloud, "runs/csv/train/part-1.csv", csv_bytes(tweedie_data(rng, 400)))
    put(cloud, "runs/csv/validation/part-0.csv", csv_bytes(tweedie_data(rng, 200)))
    return "runs/csv"


@pytest.fixture(scope="module")
def failing_jobs(cloud: LocalCloud, csv_prefix: str) -> dict[str, dict[str, Any]]:
    """Jobs the container refuses, started together so they fail in parallel."""
    rng = np.random.default_rng(3)
    put(cloud, "runs/hidden/train/part-0.csv", csv_bytes(tweedie_data(rng, 50)))
    put(cloud, "runs/hidden/train/.part-0.csv.crc", b"crc")
    put(cloud, "runs/extra/train/part-0.csv", csv_bytes(tweedie_data(rng, 50)))
    put(cloud, "runs/extra/test/part-0.csv", csv_bytes(tweedie_data(rng, 50)))
    ok = {**TWEEDIE, "num_round": "5"}
    cases = {
        "bad-power": training_request(
            cloud, "bad-power", csv_prefix, {**ok, "tweedie_variance_power": "2.5"}
        ),
        "no-num-round": training_request(cloud, "no-num-round", csv_prefix, TWEEDIE),
        "unknown-hp": training_request(
            cloud, "unknown-hp", csv_prefix, {**ok, "n_estimators": "5"}
        ),
        "metric-at": training_request(
            cloud, "metric-at", csv_prefix, {**ok, "eval_metric": "tweedie-nloglik@1.5"}
        ),
        "metric-bare": training_request(
            cloud, "metric-bare", csv_prefix, {**ok, "eval_metric": "tweedie-nloglik"}
        ),
        "hidden-file": training_request(
            cloud, "hidden-file", "runs/hidden", ok, channels=("train",)
        ),
        "extra-channel": training_request(
            cloud, "extra-channel", "runs/extra", ok, channels=("train", "test")
        ),
        "empty-prefix": training_request(cloud, "empty-prefix", "runs/nothing", ok),
        "label-size": training_request(
            cloud,
            "label-size",
            csv_prefix,
            ok,
            channels=("train",),
            content_type="text/csv;label_size=1",
        ),
    }
    for request in cases.values():
        cloud.sm.create_training_job(**request)
    return {name: cloud.events.wait_final(name) for name in cases}


def test_csv_training_job_trains_uploads_and_emits(cloud: LocalCloud, csv_prefix: str) -> None:
    """The pipeline's training request: a tweedie model in model.tar.gz, AWS-shaped events."""
    hps = {**TWEEDIE, "num_round": "200", "early_stopping_rounds": "3", "eval_metric": "rmsle"}
    cloud.sm.create_training_job(**training_request(cloud, "csv-job", csv_prefix, hps))
    final = cloud.events.wait_final("csv-job")

    desc = cloud.sm.describe_training_job(TrainingJobName="csv-job")
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["SecondaryStatus"] == "Completed"
    artifacts = desc["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifacts == f"s3://{cloud.bucket}/runs/csv/model/csv-job/output/model.tar.gz"
    assert [t["Status"] for t in desc["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    assert all("EndTime" in t for t in desc["SecondaryStatusTransitions"])
    assert desc["TrainingStartTime"] <= desc["TrainingEndTime"]
    assert [m["MetricName"] for m in desc["FinalMetricDataList"]] == ["validation:rmsle"]

    booster = load_model(cloud, artifacts)
    assert booster.num_features() == 3
    # Early stopping on the validation channel kept fewer rounds than asked for.
    assert booster.num_boosted_rounds() < 200
    import xgboost as xgb

    preds = booster.predict(xgb.DMatrix(np.array([[0.0, 1, 1], [11, 1, 1]])))
    assert np.all(preds > 0) and preds[1] > preds[0]

    # Events: InProgress then Completed, each the full EventBridge envelope.
    sent = cloud.events.for_job("csv-job")
    assert [e["detail"]["TrainingJobStatus"] for e in sent] == ["InProgress", "Completed"]
    assert sent[-1] is final
    for event in sent:
        assert set(event) == {
            "version",
            "id",
            "detail-type",
            "source",
            "account",
            "time",
            "region",
            "resources",
            "detail",
        }
        assert event["version"] == "0" and event["source"] == "aws.sagemaker"
        assert event["detail-type"] == "SageMaker Training Job State Change"
        assert (event["account"], event["region"]) == (ACCOUNT, REGION)
        assert event["resources"] == [_arn("csv-job")]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
        detail = event["detail"]
        assert detail["TrainingJobArn"] == _arn("csv-job")
        assert detail["HyperParameters"] == hps
        assert detail["Tags"] == {}
        assert "FailureReason" not in detail
        assert _is_millis(detail["CreationTime"]) and _is_millis(detail["LastModifiedTime"])
    assert len({e["id"] for e in sent}) == 2
    assert "ModelArtifacts" not in sent[0]["detail"]
    done = sent[-1]["detail"]
    assert done["ModelArtifacts"] == {"S3ModelArtifacts": artifacts}
    assert _is_millis(done["TrainingStartTime"]) and _is_millis(done["TrainingEndTime"])
    assert all(_is_millis(t["StartTime"]) for t in done["SecondaryStatusTransitions"])


def test_parquet_channels_and_container_rmse_on_margins(cloud: LocalCloud) -> None:
    """Parquet (label first) trains; ``rmse`` is the container's, computed on raw margins.

    The 1.7-1 container computes ``rmse`` itself and XGBoost hands it margins, so
    for ``reg:tweedie`` it is the RMSE between labels and log(prediction).
    """
    rng = np.random.default_rng(11)
    train, valid = tweedie_data(rng, 500), tweedie_data(rng, 200)
    put(cloud, "runs/pq/train/part-0.parquet", parquet_bytes(train))
    put(cloud, "runs/pq/validation/part-0.parquet", parquet_bytes(valid))
    hps = {**TWEEDIE, "num_round": "15", "eval_metric": "rmse"}
    cloud.sm.create_training_job(
        **training_request(
            cloud, "parquet-job", "runs/pq", hps, content_type="application/x-parquet"
        )
    )
    final = cloud.events.wait_final("parquet-job")["detail"]
    assert final["TrainingJobStatus"] == "Completed", final.get("FailureReason")

    import xgboost as xgb

    booster = load_model(cloud, final["ModelArtifacts"]["S3ModelArtifacts"])
    assert booster.num_boosted_rounds() == 15
    margins = booster.predict(xgb.DMatrix(valid[:, 1:]), output_margin=True)
    expected = float(np.sqrt(np.mean((valid[:, 0] - margins) ** 2)))
    (metric,) = final["FinalMetricDataList"]
    assert metric["MetricName"] == "validation:rmse"
    assert metric["Value"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("bad-power", "Hyperparameter tweedie_variance_power: 2.5 is not in (1, 2)"),
        ("no-num-round", "Missing required hyperparameter: num_round"),
        ("unknown-hp", "Extraneous hyperparameter found: n_estimators"),
        (
            "metric-at",
            "Metric 'tweedie-nloglik@1.5' is not supported. Parameter 'eval_metric' with "
            "customized threshold should be one of these options: 'error', 'ndcg', 'map'.",
        ),
        ("hidden-file", "Hidden file found in the data path! Remove that before training."),
        ("extra-channel", "Extraneous channel found: test"),
        # The container matches content types exactly, so the label_size parameter is refused.
        (
            "label-size",
            "Channel configuration for 'train' channel is not supported: "
            "{'ContentType': 'text/csv;label_size=1', 'TrainingInputMode': 'File', "
            "'S3DistributionType': 'FullyReplicated', 'RecordWrapperType': 'None'}",
        ),
    ],
)
def test_container_refusals_fail_the_job(
    cloud: LocalCloud, failing_jobs: dict[str, dict[str, Any]], job: str, message: str
) -> None:
    """Refused settings fail the job with the container's words after its traceback, in the
    reason unless the traceback is long: AWS keeps a reason's first 1024 characters. The
    host's log has the words either way."""
    detail = failing_jobs[job]["detail"]
    assert detail["TrainingJobStatus"] == "Failed"
    assert detail["SecondaryStatus"] == "Failed"
    reason = detail["FailureReason"]
    assert reason.startswith("AlgorithmError: framework error: \nTraceback")
    assert reason.endswith(message) or len(reason) == 1024
    log = (cloud.workdir / "training" / job / "algo-1" / "algo.log").read_text()
    assert message in log
    said = jobs.one_line(reason, "the log")
    assert said in (f"AlgorithmError: UserError: {message}", f"AlgorithmError: {message}") or (
        said == "AlgorithmError: SageMaker cut the message off (it keeps 1024 characters); "
        "see the log"
    )
    assert "ModelArtifacts" not in detail


def test_a_long_failure_reason_keeps_its_first_1024_characters_and_the_log_the_rest(
    failing_jobs: dict[str, dict[str, Any]],
) -> None:
    """As AWS's do (aws/amazon-sagemaker-examples#1740): the traceback's head, its message
    lost; the message is in the job's CloudWatch log stream, where `Run Failed` points."""
    reason = failing_jobs["metric-at"]["detail"]["FailureReason"]
    assert len(reason) == 1024
    assert "is not supported" not in reason
    assert jobs.one_line(reason).startswith("AlgorithmError: SageMaker cut the message off")
    logs = boto3.client("logs", region_name=REGION)
    group = "/aws/sagemaker/TrainingJobs"
    (stream,) = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix="metric-at/")[
        "logStreams"
    ]
    assert re.fullmatch(r"metric-at/algo-1-\d{10}", stream["logStreamName"])
    events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"])
    assert any(
        "Metric 'tweedie-nloglik@1.5' is not supported" in e["message"] for e in events["events"]
    )


def test_an_unparseable_constraint_fails_raw_as_in_the_container() -> None:
    """The container parses tuples with eval and catches ValueError only (its
    sagemaker_algorithm_toolkit/hyperparameter_validation.py): a SyntaxError escapes."""
    with pytest.raises(SyntaxError):
        hyperparameters.validate({"num_round": "1", "monotone_constraints": "(1,"})
    with pytest.raises(hyperparameters.UserError, match="num_round: could not parse value"):
        hyperparameters.validate({"num_round": "ten"})


def test_bare_tweedie_nloglik_fails_inside_xgboost(
    cloud: LocalCloud, failing_jobs: dict[str, dict[str, Any]]
) -> None:
    """The container accepts ``tweedie-nloglik`` but XGBoost 1.7 needs ``@rho``: no usable form.

    With ``@1.5`` the container refuses it (above); without, XGBoost fails the job. Its
    reason's first 1024 characters hold XGBoost's own error, the first of the chain, with
    its native stack trace; the container's wrapping of it is in the log only.
    """
    detail = failing_jobs["metric-bare"]["detail"]
    assert detail["TrainingJobStatus"] == "Failed"
    said = jobs.one_line(detail["FailureReason"])
    assert said.startswith("AlgorithmError: XGBoostError: [")
    assert said.endswith("tweedie-nloglik must be in format tweedie-nloglik@rho")
    log = (cloud.workdir / "training" / "metric-bare" / "algo-1" / "algo.log").read_text()
    assert "XGB train call failed with exception" in log


def test_empty_channel_prefix_fails_like_aws(
    cloud: LocalCloud, failing_jobs: dict[str, dict[str, Any]]
) -> None:
    detail = failing_jobs["empty-prefix"]["detail"]
    assert detail["TrainingJobStatus"] == "Failed"
    assert detail["FailureReason"].startswith(
        f'ClientError: No S3 objects found under S3 URL "s3://{cloud.bucket}/runs/nothing/train/"'
    )


def test_failed_job_events_carry_reason_only_when_failed(
    cloud: LocalCloud, failing_jobs: dict[str, dict[str, Any]]
) -> None:
    sent = cloud.events.for_job("bad-power")
    assert [e["detail"]["TrainingJobStatus"] for e in sent] == ["InProgress", "Failed"]
    assert "FailureReason" not in sent[0]["detail"]
    assert sent[1]["detail"]["FailureReason"]
    desc = cloud.sm.describe_training_job(TrainingJobName="bad-power")
    assert desc["FailureReason"] == sent[1]["detail"]["FailureReason"]


def test_api_errors_use_aws_codes_and_messages(
    cloud: LocalCloud, csv_prefix: str, failing_jobs: dict[str, Any]
) -> None:
    with pytest.raises(ClientError) as dup:
        cloud.sm.create_training_job(**training_request(cloud, "bad-power", csv_prefix, TWEEDIE))
    assert dup.value.response["Error"]["Code"] == "ResourceInUse"
    assert dup.value.response["Error"]["Message"] == (
        "Training job names must be unique within an AWS account and region, and a training "
        f"job with this name already exists ({_arn('bad-power')})"
    )

    with pytest.raises(ClientError) as missing:
        cloud.sm.describe_training_job(TrainingJobName="no-such-job")
    assert missing.value.response["Error"]["Code"] == "ValidationException"
    assert missing.value.response["Error"]["Message"] == "Requested resource not found."

    with pytest.raises(ClientError) as invalid:
        cloud.sm.create_training_job(**training_request(cloud, "bad_name", csv_prefix, TWEEDIE))
    assert invalid.value.response["Error"]["Code"] == "ValidationException"
    assert invalid.value.response["Error"]["Message"] == (
        "1 validation error detected: Value 'bad_name' at 'trainingJobName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: "
        "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
    )

    # An image the local SageMaker cannot run is refused as a malformed request, which
    # m5flow fails the run on at once rather than retrying (a traceback on the console).
    request = training_request(cloud, "other-image", csv_prefix, TWEEDIE)
    request["AlgorithmSpecification"]["TrainingImage"] = "my-own-image:1"
    with pytest.raises(ClientError) as image:
        cloud.sm.create_training_job(**request)
    assert image.value.response["Error"]["Message"].startswith(
        "1 validation error detected: Value 'my-own-image:1' at "
        "'algorithmSpecification.trainingImage' failed to satisfy constraint: the local "
        "SageMaker runs the built-in XGBoost algorithm only"
    )
    assert is_refusal(image.value)

    # The pipeline tags jobs with the dataset's folder name, which may hold any character.
    tagged = training_request(cloud, "bad-tag", csv_prefix, TWEEDIE)
    tagged["Tags"] = [
        {"Key": "m5flow:run", "Value": "r"},
        {"Key": "m5flow:dataset", "Value": "M5 (2016)"},
    ]
    with pytest.raises(ClientError) as bad_tag:
        cloud.sm.create_training_job(**tagged)
    assert bad_tag.value.response["Error"]["Message"] == (
        "1 validation error detected: Value 'M5 (2016)' at 'tags.2.member.value' failed to "
        "satisfy constraint: Member must satisfy regular expression pattern: "
        "([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)"
    )
    tagged["Tags"] = [{"Key": "m5flow:dataset", "Value": "x" * 257}]
    with pytest.raises(
        ClientError, match=r"at 'tags\.1\.member\.value' .* less than or equal to 256"
    ):
        cloud.sm.create_training_job(**tagged)

    # AWS names every constraint a request breaks, in one message.
    worst = training_request(cloud, "bad_" + "x" * 63, csv_prefix, TWEEDIE)
    worst["Tags"] = [{"Key": "k" * 129, "Value": "a,b"}]
    with pytest.raises(ClientError) as everything:
        cloud.sm.create_training_job(**worst)
    message = everything.value.response["Error"]["Message"]
    assert message.startswith("4 validation errors detected: Value 'bad_xxx")
    assert [part.split(" failed")[0].split(" at ")[1] for part in message.split("; ")] == [
        "'trainingJobName'",
        "'trainingJobName'",
        "'tags.1.member.key'",
        "'tags.1.member.value'",
    ]
    assert "Member must have length less than or equal to 63" in message
    assert "Member must have length less than or equal to 128" in message

    # What botocore lets through and SageMaker's API model still refuses: an instance type
    # that does not exist, a hyperparameter value or name over its length.
    beyond = training_request(cloud, "bad-shape", csv_prefix, TWEEDIE)
    beyond["ResourceConfig"]["InstanceType"] = "ml.m5.3xlarge"
    beyond["HyperParameters"] = {**TWEEDIE, "eta": "0." + "1" * 2499, "k" * 257: "1"}
    with pytest.raises(ClientError) as shape:
        cloud.sm.create_training_job(**beyond)
    message = shape.value.response["Error"]["Message"]
    assert message.startswith("3 validation errors detected: ")
    assert (
        "Value 'ml.m5.3xlarge' at 'resourceConfig.instanceType' failed to satisfy constraint: "
        "Member must satisfy enum value set: [ml.m4.xlarge, "
    ) in message
    too_long = "failed to satisfy constraint: Member must have length less than or equal to"
    assert f"at 'hyperParameters.eta' {too_long} 2500" in message
    assert f"at 'hyperParameters.key' {too_long} 256" in message

    listed = cloud.sm.list_training_jobs(NameContains="bad-", MaxResults=100)
    assert [s["TrainingJobName"] for s in listed["TrainingJobSummaries"]] == ["bad-power"]


def test_stop_training_job(cloud: LocalCloud, csv_prefix: str) -> None:
    """Stopping goes InProgress -> Stopping -> Stopped, one event each."""
    hps = {**TWEEDIE, "num_round": "1000000"}
    cloud.sm.create_training_job(**training_request(cloud, "stop-me", csv_prefix, hps))
    cloud.sm.stop_training_job(TrainingJobName="stop-me")
    final = cloud.events.wait_final("stop-me")["detail"]
    assert (final["TrainingJobStatus"], final["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "FailureReason" not in final
    sent = cloud.events.for_job("stop-me")
    assert [e["detail"]["TrainingJobStatus"] for e in sent] == ["InProgress", "Stopping", "Stopped"]
    with pytest.raises(ClientError) as again:
        cloud.sm.stop_training_job(TrainingJobName="stop-me")
    assert again.value.response["Error"]["Code"] == "ValidationException"


def test_max_runtime_stops_training_and_keeps_saved_model(
    cloud: LocalCloud, csv_prefix: str
) -> None:
    """MaxRuntimeInSeconds ends a running job as Stopped / MaxRuntimeExceeded.

    With ``save_model_on_termination`` the model saved so far is uploaded.
    """
    hps = {**TWEEDIE, "num_round": "100000000", "save_model_on_termination": "true"}
    cloud.sm.create_training_job(
        **training_request(cloud, "too-long", csv_prefix, hps, max_runtime=8)
    )
    final = cloud.events.wait_final("too-long")["detail"]
    assert final["TrainingJobStatus"] == "Stopped"
    assert final["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert final["SecondaryStatusTransitions"][-1]["StatusMessage"] == (
        "Training job runtime exceeded MaxRuntimeInSeconds provided"
    )
    booster = load_model(cloud, final["ModelArtifacts"]["S3ModelArtifacts"])
    assert booster.num_boosted_rounds() > 0


def test_a_quota_by_another_name_is_refused_not_ignored(tmp_path: Path) -> None:
    """A bare instance type ('ml.m5.large': 3) names no AWS quota: taken silently, it would
    limit nothing and a test of a quota would pass for the wrong reason."""
    local = LocalSageMaker(lambda event: None, tmp_path, quotas={"ml.m5.large": 3})
    with pytest.raises(ValueError, match="quota names are AWS's"):
        local.start()


def test_a_quota_refuses_instances_beyond_it_until_jobs_end(
    cloud: LocalCloud, csv_prefix: str, tmp_path: Path
) -> None:
    """Instances of a type held by training jobs in progress count against its quota
    ("<type> for training job usage"); AWS's error and wording; freed when a job ends."""
    events = EventLog()
    local = LocalSageMaker(events.emit, tmp_path, region=REGION, account_id=ACCOUNT,
                           quotas={"ml.m5.large for training job usage": 3})  # fmt: skip
    sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=local.start())
    endless = {**TWEEDIE, "eta": "0.001", "num_round": "100000000"}
    try:
        sm.create_training_job(
            **training_request(cloud, "q-two", csv_prefix, endless, instances=2,
                               distribution={"train": "ShardedByS3Key"})
        )  # fmt: skip
        with pytest.raises(sm.exceptions.ResourceLimitExceeded) as refused:
            sm.create_training_job(
                **training_request(cloud, "q-more", csv_prefix, endless, instances=2,
                                   distribution={"train": "ShardedByS3Key"})
            )  # fmt: skip
        assert refused.value.response["Error"]["Message"] == (
            "The account-level service limit 'ml.m5.large for training job usage' is 3 "
            "Instances, with current utilization of 2 Instances and a request delta of 2 "
            "Instances. Please use AWS Service Quotas to request an increase for this quota. "
            "If AWS Service Quotas is not available, contact AWS support to request an "
            "increase for this quota."
        )
        with pytest.raises(ClientError, match="Requested resource not found"):  # none kept
            sm.describe_training_job(TrainingJobName="q-more")
        other_type = training_request(cloud, "q-other", csv_prefix, endless)
        other_type["ResourceConfig"]["InstanceType"] = "ml.m5.xlarge"  # no quota here
        sm.create_training_job(**other_type)
        sm.stop_training_job(TrainingJobName="q-two")
        events.wait_final("q-two")
        sm.create_training_job(  # the stopped job's instances are free again
            **training_request(cloud, "q-more", csv_prefix, endless, instances=2,
                               distribution={"train": "ShardedByS3Key"})
        )  # fmt: skip
    finally:
        local.stop()


class Console:
    """The lines a local SageMaker reports to its console, with a blocking wait for one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._heard = threading.Condition()

    def say(self, line: str) -> None:
        with self._heard:
            self.lines.append(line)
            self._heard.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], bool]) -> None:
        with self._heard:
            assert self._heard.wait_for(lambda: predicate(self.lines), 60), self.lines


@pytest.fixture
def console_cloud(tmp_path: Path) -> Iterator[tuple[Any, EventLog, Console]]:
    """A local SageMaker of this test's own whose console lines are kept."""
    events, console = EventLog(), Console()
    local = LocalSageMaker(events.emit, tmp_path, region=REGION, account_id=ACCOUNT,
                           progress=console.say)  # fmt: skip
    try:
        yield (
            boto3.client("sagemaker", region_name=REGION, endpoint_url=local.start()),
            events,
            console,
        )
    finally:
        local.stop()


ENDLESS = {**TWEEDIE, "eta": "0.001", "num_round": "100000000"}


@pytest.mark.parametrize("instances", [1, 2])
def test_a_running_job_reports_its_latest_round(
    cloud: LocalCloud,
    csv_prefix: str,
    console_cloud: tuple[Any, EventLog, Console],
    monkeypatch: pytest.MonkeyPatch,
    instances: int,
) -> None:
    """Between secondary statuses the console hears the latest evaluation line, not silence
    (on a collective's hosts XGBoost logs it through the tracker, after a logging prefix)."""
    monkeypatch.setattr(training, "PROGRESS_SECONDS", 0.2)
    sm, events, console = console_cloud
    sm.create_training_job(
        **training_request(cloud, "talkative", csv_prefix, ENDLESS, instances=instances)
    )

    def rounds(lines: list[str]) -> list[str]:
        return [line for line in lines if re.search(r"talkative: round \d+: ", line)]

    console.wait_for(lambda lines: len(rounds(lines)) >= 2)
    sm.stop_training_job(TrainingJobName="talkative")
    events.wait_final("talkative")
    first, second = rounds(console.lines)[:2]
    assert re.search(r"round \d+: train-tweedie-nloglik@1.5:[\d.]+ validation-", first), first
    assert first != second  # a line is reported when the job has moved on, not on a timer


def test_a_host_killed_from_outside_fails_the_job_and_the_console_says_how(
    cloud: LocalCloud, csv_prefix: str, console_cloud: tuple[Any, EventLog, Console]
) -> None:
    """As the kernel's out-of-memory killer would: exit code 137, and a hint on the console."""
    sm, events, console = console_cloud
    sm.create_training_job(**training_request(cloud, "oom", csv_prefix, ENDLESS))
    console.wait_for(lambda lines: any("XGBoost log" in line for line in lines))  # launched
    for proc in list(training._LIVE):
        os.killpg(proc.pid, signal.SIGKILL)
    final = events.wait_final("oom")["detail"]
    assert final["TrainingJobStatus"] == "Failed"
    assert final["FailureReason"].endswith("exit code: 137")
    assert any("algo-1 killed by SIGKILL" in line and "out-of-memory" in line
               for line in console.lines)  # fmt: skip


@pytest.fixture(scope="module")
def sharded_prefix(cloud: LocalCloud) -> str:
    """Four training objects (sharded over hosts) and one validation object (replicated)."""
    rng = np.random.default_rng(5)
    for i in range(4):
        put(cloud, f"runs/dist/train/part-{i}.csv", csv_bytes(tweedie_data(rng, 300)))
    put(cloud, "runs/dist/validation/part-0.csv", csv_bytes(tweedie_data(rng, 300)))
    return "runs/dist"


def test_two_sharded_instances_match_one(cloud: LocalCloud, sharded_prefix: str) -> None:
    """Two hosts joined by XGBoost's collective score like one host on the same data."""
    hps = {**TWEEDIE, "num_round": "25", "tree_method": "hist", "eval_metric": "rmsle"}
    sharded = {"train": "ShardedByS3Key"}
    cloud.sm.create_training_job(
        **training_request(cloud, "dist-1", sharded_prefix, hps, instances=1, distribution=sharded)
    )
    cloud.sm.create_training_job(
        **training_request(cloud, "dist-2", sharded_prefix, hps, instances=2, distribution=sharded)
    )
    one = cloud.events.wait_final("dist-1")["detail"]
    two = cloud.events.wait_final("dist-2")["detail"]
    assert one["TrainingJobStatus"] == "Completed", one.get("FailureReason")
    assert two["TrainingJobStatus"] == "Completed", two.get("FailureReason")
    score_1 = one["FinalMetricDataList"][0]["Value"]
    score_2 = two["FinalMetricDataList"][0]["Value"]
    assert score_2 == pytest.approx(score_1, rel=1e-3)
    # Each host got half of the training objects (object i -> host i mod 2).
    for host, parts in (
        ("algo-1", ["part-0.csv", "part-2.csv"]),
        ("algo-2", ["part-1.csv", "part-3.csv"]),
    ):
        folder = cloud.workdir / "training" / "dist-2" / host / "input" / "data" / "train"
        assert sorted(p.name for p in folder.iterdir()) == parts


def test_hosts_without_data_drop_out(cloud: LocalCloud, csv_prefix: str) -> None:
    """Three hosts, two training objects: the third host leaves, the job still completes."""
    hps = {**TWEEDIE, "num_round": "5", "tree_method": "hist"}
    cloud.sm.create_training_job(
        **training_request(
            cloud, "dropout", csv_prefix, hps, instances=3, distribution={"train": "ShardedByS3Key"}
        )
    )
    final = cloud.events.wait_final("dropout")["detail"]
    assert final["TrainingJobStatus"] == "Completed", final.get("FailureReason")
    assert load_model(cloud, final["ModelArtifacts"]["S3ModelArtifacts"]).num_features() == 3
    log = (cloud.workdir / "training" / "dropout" / "algo-3" / "algo.log").read_text()
    assert "Host algo-3 not being used for distributed training." in log


@pytest.mark.parametrize(
    ("status", "sample"),
    [("Completed", "sagemaker_training_completed"), ("Failed", "sagemaker_training_failed")],
)
def test_training_events_carry_the_fields_of_aws_examples(
    cloud: LocalCloud, csv_prefix: str, failing_jobs: dict[str, dict[str, Any]], status: str,
    sample: str,
) -> None:  # fmt: skip
    """Field by field against the AWS-shaped samples in events/ (what handlers are tested on)."""
    from tests.conftest import sample_event

    if status == "Completed":
        hps = {**TWEEDIE, "num_round": "3"}
        cloud.sm.create_training_job(**training_request(cloud, "shape-job", csv_prefix, hps))
        ours = cloud.events.wait_final("shape-job")
    else:
        ours = failing_jobs["bad-power"]
    expected = sample_event(sample)
    assert set(ours) == set(expected)
    assert ours["detail"]["TrainingJobStatus"] == expected["detail"]["TrainingJobStatus"] == status
    # Optional on AWS's side (set only when the request or the job has them).
    optional = {
        "VpcConfig", "FinalMetricDataList", "BillableTimeInSeconds", "DebugHookConfig",
        "ProfilerConfig", "ProfilingStatus", "WarmPoolStatus", "RetryStrategy",
        "EnableManagedSpotTraining", "CheckpointConfig", "Environment", "TrainingTimeInSeconds",
        "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption",
    }  # fmt: skip
    assert set(expected["detail"]) - optional <= set(ours["detail"])
    assert set(ours["detail"]) - optional <= set(expected["detail"])
    for name, value in expected["detail"].items():
        if name in ours["detail"] and name.endswith("Time"):
            assert type(ours["detail"][name]) is type(value), name
