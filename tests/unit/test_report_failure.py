"""ReportFailure: a pipeline function's on-failure record becomes an m5flow `Run Failed`.

The handler runs as template.yaml configures it, against moto's server; the parsing of the
failed event is also checked on its own, over a folder standing in for the bucket.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import boto3
import pytest

from m5flow import jobs, naming, schema
from m5flow.stages import failure
from m5flow.storage import DiskStorage
from tests.conftest import REPO_ROOT, as_sent, sample_event

SAMPLE_BUCKET = "m5flow-data-123456789012"
SAMPLE_RUN = "demo-3f2a9c1b7e4d"
SAMPLE_FUNCTION = "m5flow-ShardFunction-9QW2XK7LM4ZT"


def _record(bucket: str, trigger: str | None = None, **replacements: str) -> dict:
    """The sample failure event, about `bucket`, optionally failed on another sample event."""
    event = sample_event("lambda_invocation_failure", **{SAMPLE_BUCKET: bucket})
    if trigger is not None:
        event["detail"]["requestPayload"] = sample_event(
            trigger, **{SAMPLE_BUCKET: bucket, **replacements}
        )
    return event


def _put(bucket: str, key: str, body: bytes) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)


@pytest.mark.parametrize("with_settings", [False, True])
def test_failed_shard_step_is_reported_with_the_run_of_its_inputs(
    bucket, load_function, bus, with_settings
):
    """The run id is the one the shard step would have made: m5flow.json's ETag joins it."""
    bus.watch("demo")
    names = (*schema.INPUT_FILES, *([naming.OVERRIDES_FILE] if with_settings else []))
    for n, name in enumerate(names):
        _put(bucket, f"raw/demo/{name}", f"input {n}".encode())
    s3 = boto3.client("s3")
    etags = {name: s3.head_object(Bucket=bucket, Key=f"raw/demo/{name}")["ETag"] for name in names}
    event = _record(bucket)

    detail = load_function("ReportFailureFunction").invoke(event)

    (announced,) = bus.drain()
    assert announced["source"] == "m5flow" and announced["detail-type"] == "Run Failed"
    assert announced["detail"] == as_sent("Run Failed", detail)
    assert detail == {
        "run_id": naming.run_id("demo", etags, f"s3://{bucket}/"),
        "dataset": "demo",
        "stage": "shard",
        "reason": "ClientError: An error occurred (SlowDown) when calling the PutObject "
        "operation (reached max retries: 4): Please reduce your request rate.",
        "function": SAMPLE_FUNCTION,
        "attempts": 3,
        "condition": "RetriesExhausted",
        "request_id": event["detail"]["requestContext"]["requestId"],
        "trigger": f"s3://{bucket}/raw/demo/sales_train_evaluation.csv",
    }


def test_the_reporter_names_the_run_the_shard_step_made(bucket, load_function, bus, small_m5):
    """Both derive the run from the dataset's objects and the bucket: they must agree."""
    from tests.unit.test_handlers import _shard, _upload

    bus.watch("agree")
    _upload(bucket, "agree", small_m5)
    run = _shard(bucket, load_function, "agree")
    event = _record(bucket, "s3_object_created_raw", **{"raw/demo/": "raw/agree/"})

    detail = load_function("ReportFailureFunction").invoke(event)

    assert (detail["stage"], detail["dataset"], detail["run_id"]) == ("shard", "agree", run)


def test_a_crashed_step_is_said_once_and_does_not_stop_a_run_another_delivery_makes(
    bucket, load_function, bus, small_m5
):
    """Three deliveries of one upload that all crash are one Run Failed; and the run that a
    later delivery (or the user's re-upload) then makes still gets its transforms."""
    from tests.unit.test_handlers import _shard, _training_event, _upload

    bus.watch("flaky")
    _upload(bucket, "flaky", small_m5)
    report = load_function("ReportFailureFunction")
    for _ in range(3):
        report.invoke(_record(bucket, "s3_object_created_raw", **{"raw/demo/": "raw/flaky/"}))
    assert [e["detail-type"] for e in bus.drain()] == ["Run Failed"]

    run = _shard(bucket, load_function, "flaky")
    published = load_function("PublishModelFunction").invoke(
        _training_event(bucket, run, "sagemaker_training_completed")
    )

    assert published["transform_job"] == f"m5flow-{run}-h28"
    assert [e["detail-type"] for e in bus.drain()] == ["Run Started", "Transform Started"]


def test_a_waiting_job_refused_on_every_try_fails_the_run_for_good(bucket, load_function, bus):
    """The publish step raised QuotaNotReleasedError on every try (Lambda's retries spent,
    or the local router's at once): no job of the run is left to start the one that waited,
    so this Run Failed is the run's final one, as the step's own would have been."""
    bus.watch("demo")
    event = _record(bucket, "sagemaker_training_completed")
    event["detail"]["responsePayload"] = {
        "errorType": "QuotaNotReleasedError",
        "errorMessage": "SageMaker refused training job m5flow-x-h14 (...)",
    }

    detail = load_function("ReportFailureFunction").invoke(event)

    assert detail["reason"] == (
        "still refused after Lambda's retries: SageMaker refused training job m5flow-x-h14 (...)"
    )
    assert [e["detail"]["stage"] for e in bus.drain()] == ["publish_model"]
    ledger = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"events/{SAMPLE_RUN}/")
    assert [o["Key"] for o in ledger["Contents"]] == [f"events/{SAMPLE_RUN}/run-failed.json"]


def test_failed_shard_step_before_all_inputs_arrived_has_no_run(bucket, load_function, bus):
    bus.watch("early")
    _put(bucket, f"raw/early/{schema.SALES_FILE}", b"only the sales")
    event = _record(bucket, "s3_object_created_raw", **{"raw/demo/": "raw/early/"})

    detail = load_function("ReportFailureFunction").invoke(event)

    assert (detail["stage"], detail["dataset"], detail["run_id"]) == ("shard", "early", None)
    assert [e["detail"] for e in bus.drain()] == [as_sent("Run Failed", detail)]


def test_a_failure_on_a_stray_csv_is_not_the_dataset_s_run(bucket, load_function, bus):
    """Beside complete inputs, a failure on sample_submission.csv names no run of theirs."""
    for name in schema.INPUT_FILES:
        _put(bucket, f"raw/stray/{name}", b"an input")
    event = _record(
        bucket,
        "s3_object_created_raw",
        **{"raw/demo/sales_train_evaluation.csv": "raw/stray/sample_submission.csv"},
    )

    detail = load_function("ReportFailureFunction").invoke(event)

    assert (detail["stage"], detail["dataset"], detail["run_id"]) == ("shard", None, None)
    assert detail["trigger"] == f"s3://{bucket}/raw/stray/sample_submission.csv"


def test_failed_start_training_reads_the_dataset_from_the_manifest(bucket, load_function, bus):
    # The run id holds a sanitised dataset name; the manifest holds the real one.
    bus.watch("demo store")
    _put(bucket, f"runs/{SAMPLE_RUN}/manifest.json", json.dumps({"dataset": "demo store"}).encode())
    event = _record(bucket, "s3_object_created_manifest")

    detail = load_function("ReportFailureFunction").invoke(event)

    assert detail["stage"] == "start_training"
    assert (detail["run_id"], detail["dataset"]) == (SAMPLE_RUN, "demo store")
    assert detail["trigger"] == f"s3://{bucket}/runs/{SAMPLE_RUN}/manifest.json"
    assert [e["detail"]["stage"] for e in bus.drain()] == ["start_training"]


@pytest.mark.parametrize(
    ("trigger", "stage"),
    [
        ("sagemaker_training_completed", "publish_model"),
        ("sagemaker_transform_completed", "assemble_forecast"),
    ],
)
def test_failed_job_steps_are_reported_with_the_run_of_the_job(
    bucket, load_function, bus, trigger, stage
):
    # No manifest here: the dataset comes from the run id `<dataset>-<12 hex>`.
    bus.watch("demo")
    event = _record(bucket, trigger)
    job = event["detail"]["requestPayload"]["detail"]

    detail = load_function("ReportFailureFunction").invoke(event)

    assert (detail["stage"], detail["run_id"], detail["dataset"]) == (stage, SAMPLE_RUN, "demo")
    assert detail["trigger"] == job.get("TrainingJobName", job.get("TransformJobName"))
    assert [e["detail"]["stage"] for e in bus.drain()] == [stage]


def test_a_failed_assembly_on_backtest_lost_is_reported_with_its_run(bucket, load_function, bus):
    """The assemble step also hears m5flow's own `Backtest Lost`: its run is in the detail."""
    bus.watch("demo")
    detail = load_function("ReportFailureFunction").invoke(_record(bucket, "m5flow_backtest_lost"))

    assert (detail["stage"], detail["run_id"], detail["dataset"]) == (
        "assemble_forecast", SAMPLE_RUN, "demo",
    )  # fmt: skip
    assert detail["trigger"] == f"Backtest Lost of run {SAMPLE_RUN}"
    assert [e["detail"]["run_id"] for e in bus.drain()] == [SAMPLE_RUN]


@pytest.mark.parametrize("detail", ["not a mapping", {"run_id": "", "dataset": "d"}])
def test_an_m5flow_event_that_names_no_run_is_reported_by_function(tmp_path, detail):
    payload = sample_event("m5flow_backtest_lost")
    payload["detail"] = detail
    record = failure.InvocationFailure.from_record(_failure(payload))
    step = failure.failed_step(DiskStorage(tmp_path), record)
    assert (step.run_id, step.dataset) == (None, None)


def test_an_m5flow_event_s_empty_dataset_comes_from_the_run_s_manifest(tmp_path):
    storage = DiskStorage(tmp_path)
    storage.write(f"runs/{SAMPLE_RUN}/manifest.json", json.dumps({"dataset": "demo"}).encode())
    payload = sample_event("m5flow_backtest_lost")
    payload["detail"]["dataset"] = ""
    step = failure.failed_step(storage, failure.InvocationFailure.from_record(_failure(payload)))
    assert (step.run_id, step.dataset) == (SAMPLE_RUN, "demo")


def test_record_without_its_event_is_reported_by_function(bucket, load_function, bus):
    # Lambda drops a payload too large for the destination; the step then comes from the
    # function's name, and nothing identifies the run.
    event = _record(bucket)
    del event["detail"]["requestPayload"]
    event["detail"]["responsePayload"] = {
        "errorMessage": "RequestId: 3f6c1d2a Error: Task timed out after 900.00 seconds",
        "errorType": "Sandbox.Timedout",
    }
    rule = "watch-unidentified-failures"
    bus.events.put_rule(
        Name=rule,
        EventPattern=json.dumps({"source": ["m5flow"], "detail": {"function": [SAMPLE_FUNCTION]}}),
    )
    bus.events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": bus.arn}])

    detail = load_function("ReportFailureFunction").invoke(event)

    assert (detail["stage"], detail["run_id"], detail["dataset"]) == ("shard", None, None)
    assert detail["reason"].startswith("Sandbox.Timedout: RequestId: 3f6c1d2a Error: Task timed")
    assert [e["detail"] for e in bus.drain()] == [as_sent("Run Failed", detail)]


# --------------------------------------------------------------------------- parsing alone


def _failure(payload: dict | None, function: str = SAMPLE_FUNCTION, **response) -> dict:
    record = sample_event("lambda_invocation_failure")["detail"]
    record["requestContext"]["functionArn"] = (
        f"arn:aws:lambda:us-east-1:123456789012:function:{function}:$LATEST"
    )
    record["requestPayload"] = payload
    if response:
        record["responsePayload"] = response
    return record


@pytest.mark.parametrize(
    ("function", "stage"),
    [
        ("m5flow-ShardFunction-9QW2XK7LM4ZT", "shard"),
        ("m5flow-StartTrainingFunction-1AB2CD3EF4GH", "start_training"),
        ("m5flow-PublishModelFunction-1AB2CD3EF4GH", "publish_model"),
        ("m5flow-AssembleForecastFunction-1AB2CD3EF4GH", "assemble_forecast"),
        ("someone-elses-function", "someone-elses-function"),
    ],
)
def test_stage_of_a_record_without_event_comes_from_the_function_name(tmp_path, function, stage):
    record = failure.InvocationFailure.from_record(_failure(None, function))
    assert failure.failed_step(DiskStorage(tmp_path), record) == failure.FailedStep(
        stage, None, None, None
    )


def test_url_encoded_keys_are_decoded(tmp_path):
    payload = sample_event("s3_object_created_raw", **{"raw/demo/": "raw/my+store/"})
    record = failure.InvocationFailure.from_record(_failure(payload))
    step = failure.failed_step(DiskStorage(tmp_path), record)
    assert (step.dataset, step.trigger) == (
        "my store",
        f"s3://{SAMPLE_BUCKET}/raw/my store/sales_train_evaluation.csv",
    )


def test_run_id_not_of_m5flow_shape_leaves_the_dataset_unknown(tmp_path):
    payload = sample_event("s3_object_created_manifest", **{SAMPLE_RUN: "handmade"})
    record = failure.InvocationFailure.from_record(_failure(payload))
    step = failure.failed_step(DiskStorage(tmp_path), record)
    assert (step.stage, step.run_id, step.dataset) == ("start_training", "handmade", None)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ({"errorType": "KeyError", "errorMessage": "'detail'"}, "KeyError: 'detail'"),
        ({"errorMessage": "Process exited before completing request"},
         "Process exited before completing request"),
        ({}, "Lambda gave up on the event (RetriesExhausted) without an error message"),
    ],
)  # fmt: skip
def test_reason_is_the_error_type_and_message(response, reason):
    record = _failure(None)
    record["responsePayload"] = response
    assert failure.InvocationFailure.from_record(record).reason == reason


def test_reporter_imports_no_dataframe_library():
    """ReportFailureFunction ships with the core layer only (template.yaml)."""
    code = (
        "import sys; import m5flow.stages.failure; "
        "loaded = {'pandas', 'pyarrow', 'numpy'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("failure_reason", "said"),
    [
        ("ClientError: No S3 objects found", "ClientError: No S3 objects found"),
        ("AlgorithmError: framework error: \nTraceback (most recent call last):\n  File x\n"
         "sagemaker_algorithm_toolkit.exceptions.UserError: Extraneous hyperparameter found: etaa",
         "AlgorithmError: UserError: Extraneous hyperparameter found: etaa"),
        ("AlgorithmError: see the log\ntrain.csv: no rows", "AlgorithmError: train.csv: no rows"),
        # XGBoost's error, then its native stack trace and the chained container error, cut.
        ("AlgorithmError: framework error: \nTraceback (most recent call last):\n  File x\n"
         "    y()\nxgboost.core.XGBoostError: [10:46:29] metric.cc:49: bad metric\nStack trace:\n"
         "  [bt] (0) /lib/libxgboost.so(+0x8f5c9) [0x7f]\n\nThe above exception was the direct "
         + "cause of the following exception:\n\nTraceback (most recent call last):\n  File" * 40,
         "AlgorithmError: SageMaker cut the message off (it keeps 1024 characters); its "
         "traceback began with XGBoostError: [10:46:29] metric.cc:49: bad metric"),
        ("Please retry\nsomething: bad", "something: bad"),
    ],
)  # fmt: skip
def test_a_sagemaker_failure_reason_is_said_on_one_line(failure_reason: str, said: str) -> None:
    assert jobs.one_line(failure_reason) == said


def test_a_failed_training_job_names_the_hyperparameters_m5flow_json_set() -> None:
    """The container names a misspelt hyperparameter, not where it was written."""
    job = {
        "TrainingJobName": "m5flow-d-1-h7",
        "TrainingJobStatus": "Failed",
        "FailureReason": "AlgorithmError: UserError: Extraneous hyperparameter found: max_dept",
    }
    overrides = {"max_dept": "6", "gamma": None}
    assert failure.job_failure_reason(job, "training", overrides).endswith(
        "max_dept (this dataset's m5flow.json set hyperparameters max_dept=6, gamma=unset)"
    )
    assert "m5flow.json" not in failure.job_failure_reason(job, "training")
    stopped = {**job, "TrainingJobStatus": "Stopped"}  # stopped by us: not their doing
    assert "m5flow.json" not in failure.job_failure_reason(stopped, "training", overrides)
    transform = {"TransformJobName": "t", "TransformJobStatus": "Failed", "FailureReason": "x"}
    assert "m5flow.json" not in failure.job_failure_reason(transform, "transform", overrides)


_CHAIN = (
    "AlgorithmError: framework error: \nTraceback (most recent call last):\n"
    '  File "/miniconda3/lib/PATH.py", line 278, in validate\n    hp = self.hyperparameters[hp]\n'
    "KeyError: 'horizon_days'\n\nDuring handling of the above exception, another exception "
    'occurred:\n\nTraceback (most recent call last):\n  File "/miniconda3/lib/v.py", line 280\n'
    "sagemaker_algorithm_toolkit.exceptions.UserError: Extraneous hyperparameter found: horizon"
)


@pytest.mark.parametrize(
    ("cut_in", "said"),
    [
        ("During handling", "began with KeyError: 'horizon_days'"),  # the outer error lost
        ("UserError: Extr", "began with KeyError: 'horizon_days'"),  # its line cut short
        ("KeyErr", None),  # before any whole exception line
    ],
)
def test_a_reason_cut_anywhere_is_said_to_be_cut(cut_in: str, said: str | None) -> None:
    """SageMaker keeps 1024 characters wherever they end: a line cut short, or an inner
    error whose outer one was lost, is not said as the error."""
    padding = jobs.FAILURE_REASON_CHARS - (_CHAIN.index(cut_in) + len(cut_in)) + len("PATH")
    reason = _CHAIN.replace("PATH", "p" * padding)[: jobs.FAILURE_REASON_CHARS]
    assert reason.endswith(cut_in)
    line = jobs.one_line(reason, "L")
    assert line.startswith("AlgorithmError: SageMaker cut the message off") and line.endswith(
        "; see L"
    )
    assert (said in line) if said else ("began with" not in line)


def test_a_reason_cut_before_its_message_says_so_and_where_the_log_is() -> None:
    head = "AlgorithmError: framework error: \nTraceback (most recent call last):\n"
    cut = head + '  File "/miniconda3/lib/python3.8/site-packages/x.py", line 1, in f\n' * 20
    cut = cut[: jobs.FAILURE_REASON_CHARS]
    assert jobs.one_line(cut, jobs.job_logs("transform", "t")) == (
        "AlgorithmError: SageMaker cut the message off (it keeps 1024 characters); see "
        "CloudWatch Logs group /aws/sagemaker/TransformJobs, streams t/*"
    )
    # A short traceback without its exception's line was not cut: its last line is said.
    assert jobs.one_line(head + "  File x\n    y()") == "AlgorithmError: y()"


def test_every_stage_a_failure_can_name_is_in_the_readme():
    """Subscribers write rules on `stage`: the README's list must be the code's vocabulary."""
    from m5flow.notifications import Stage

    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    listed = readme.split("`stage` is one of ", 1)[1].split(":", 1)[0]
    assert sorted(re.findall(r"`([a-z_]+)`", listed)) == sorted(stage.value for stage in Stage)


@pytest.mark.parametrize(
    ("quota", "in_use", "advice"),
    [
        (0, 0, ", more than the quota holds: raise that quota in Service Quotas, or choose a "
               "TransformInstanceType whose quota holds it"),
        (4, 4, ": the quota holds this job, but other jobs held 4, and none of this run's is in "
               "progress, whose end would start it; to run these files again once they end, "
               "upload them under a new raw/<dataset>/"),
    ],
)  # fmt: skip
def test_a_quota_refusal_says_whether_the_run_alone_would_fit(quota, in_use, advice) -> None:
    requests = [
        {"TransformJobName": f"m5flow-r-h{h}",
         "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}}
        for h in (7, 14, 21, 28)
    ]  # fmt: skip
    message = (
        f"The account-level service limit 'ml.m5.xlarge for transform job usage' is {quota} "
        f"Instances, with current utilization of {in_use} Instances and a request delta of 1 "
        "Instances."
    )
    reason = failure.quota_reason("transform", requests, 2, message)
    assert reason.startswith("SageMaker refused transform job m5flow-r-h21 (ResourceLimit")
    needed = "The run's 4 transform jobs need up to 4 ml.m5.xlarge instances at once, this job 1"
    assert needed + advice in reason


_QUOTA_MESSAGE = (
    "The account-level service limit 'ml.m5.xlarge for training job usage' is {} Instances, "
    "with current utilization of {} Instances and a request delta of 2 Instances."
)


@pytest.mark.parametrize(
    ("message", "advice"),
    [
        (_QUOTA_MESSAGE.format(1, 0),
         ", this job 2, more than the quota holds: raise that quota in Service Quotas, or "
         "choose a TrainingInstanceType whose quota holds it, or one with more memory (fewer "
         "instances a job)"),
        (_QUOTA_MESSAGE.format(4, 4),
         ", this job 2: the quota holds this job, but other jobs held 4, and none of this "
         "run's is in progress, whose end would start it; to run these files again once they "
         "end, upload them under a new raw/<dataset>/"),
        # SageMaker's words without its numbers: whether the job fits is not known, not said
        ("Quota exceeded for ml.m5.xlarge",
         ", this job 2: raise that quota in Service Quotas, or choose a TrainingInstanceType "
         "whose quota holds it, or one"),
    ],
)  # fmt: skip
def test_a_training_quota_refusal_says_whether_the_job_alone_would_fit(
    message: str, advice: str
) -> None:
    """A training job waits while the run's own jobs hold the quota (stages.training): what
    stops the run is a quota that cannot hold the job alone, or other jobs of the account
    holding it when none of the run's is left."""
    requests = [
        {"TrainingJobName": f"m5flow-r-h{h}",
         "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2}}
        for h in (7, 14, 21, 28)
    ]  # fmt: skip
    reason = failure.quota_reason("training", requests, 2, message)
    assert reason.startswith("SageMaker refused training job m5flow-r-h21 (ResourceLimit")
    assert f"The run's 4 training jobs need up to 8 ml.m5.xlarge instances at once{advice}" in (
        reason
    )


def test_a_quota_message_names_its_numbers_or_nothing_is_assumed() -> None:
    """SageMaker's wording is no contract: without its numbers, nothing is assumed (the
    job does not wait, stages.training)."""
    assert failure.quota_numbers(_QUOTA_MESSAGE.format(5, 3)) == (5, 3)
    assert failure.quota_numbers("Quota exceeded for ml.m5.xlarge") is None


def test_a_wait_says_sagemaker_s_message_without_its_advice_to_ask_for_more() -> None:
    message = _QUOTA_MESSAGE.format(1, 1) + " Please use AWS Service Quotas to request more."
    assert failure.waiting_reason("training", "m5flow-r-h14", message) == (
        "training job m5flow-r-h14 waits for the quota (ResourceLimitExceeded: "
        + _QUOTA_MESSAGE.format(1, 1)
        + ") and starts as this run's training jobs in progress end"
    )
