"""Local SageMaker models and Batch Transform, driven only through boto3.

Pins the pipeline's inference contract: ``id,day,features`` rows in, with
``DataProcessing`` (``$[2:]`` in, input joined, ``$[0,1,-1]`` out) ``id,day,prediction``
rows out in ``<object>.out``; end-inclusive slices; payload limits; failed
records failing the job; AWS's errors and events.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.local.conftest_sagemaker import (
    ACCOUNT,
    IMAGE,
    REGION,
    ROLE,
    LocalCloud,
    csv_bytes,
    load_model,
    local_cloud,
    put,
    training_request,
    tweedie_data,
)

PIPELINE_PROCESSING = {"InputFilter": "$[2:]", "JoinSource": "Input", "OutputFilter": "$[0,1,-1]"}


@pytest.fixture(scope="module")
def cloud(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LocalCloud]:
    """This module's local SageMaker and bucket, on the session's moto server."""
    yield from local_cloud(tmp_path_factory, request)


@pytest.fixture(scope="module")
def model(cloud: LocalCloud) -> tuple[str, Any]:
    """A model trained by a local training job, registered with CreateModel."""
    rng = np.random.default_rng(21)
    put(cloud, "runs/m/train/part-0.csv", csv_bytes(tweedie_data(rng, 400)))
    put(cloud, "runs/m/validation/part-0.csv", csv_bytes(tweedie_data(rng, 100)))
    hps = {"objective": "reg:tweedie", "tweedie_variance_power": "1.5", "num_round": "10"}
    cloud.sm.create_training_job(**training_request(cloud, "model-job", "runs/m", hps))
    detail = cloud.events.wait_final("model-job")["detail"]
    assert detail["TrainingJobStatus"] == "Completed", detail.get("FailureReason")
    artifacts = detail["ModelArtifacts"]["S3ModelArtifacts"]
    cloud.sm.create_model(
        ModelName="m5-model",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": artifacts},
    )
    return "m5-model", load_model(cloud, artifacts)


def _inference_rows(rng: np.random.Generator, n: int, start: int) -> list[list[str]]:
    features = rng.integers(0, 12, size=(n, 3))
    return [
        [f"ITEM_{start + i}_CA_1_evaluation", f"d_{1942 + i % 28}", *map(str, f)]
        for i, f in enumerate(features)
    ]


def _csv(rows: list[list[str]]) -> bytes:
    return "".join(",".join(r) + "\n" for r in rows).encode()


def _read_csv(cloud: LocalCloud, key: str) -> list[list[str]]:
    body = cloud.s3.get_object(Bucket=cloud.bucket, Key=key)["Body"].read().decode()
    return list(csv.reader(io.StringIO(body)))


def _transform(
    cloud: LocalCloud,
    name: str,
    model_name: str,
    prefix: str,
    out: str,
    processing: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TransformJobName": name,
        "ModelName": model_name,
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"s3://{cloud.bucket}/{prefix}/",
                }
            },
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        "TransformOutput": {
            "S3OutputPath": f"s3://{cloud.bucket}/{out}/",
            "Accept": "text/csv",
            "AssembleWith": "Line",
        },
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "BatchStrategy": "MultiRecord",
        **extra,
    }
    if processing is not None:
        request["DataProcessing"] = processing
    cloud.sm.create_transform_job(**request)
    return cloud.events.wait_final(name)["detail"]


def _predict(booster: Any, features: list[list[str]]) -> np.ndarray:
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(np.array(features, dtype=float)))


def test_pipeline_transform_joins_ids_days_and_predictions(
    cloud: LocalCloud, model: tuple[str, Any]
) -> None:
    """``$[2:]`` in, input joined, ``$[0,1,-1]`` out: rows ``id,day,prediction`` per shard."""
    name, booster = model
    rng = np.random.default_rng(1)
    shards = {f"shard-{i}.csv": _inference_rows(rng, 150, 1000 * i) for i in range(2)}
    for shard, rows in shards.items():
        put(cloud, f"runs/t/inference/{shard}", _csv(rows))
    detail = _transform(
        cloud,
        "pipeline-transform",
        name,
        "runs/t/inference",
        "runs/t/predictions",
        PIPELINE_PROCESSING,
    )
    assert detail["TransformJobStatus"] == "Completed", detail.get("FailureReason")

    for shard, rows in shards.items():
        out = _read_csv(cloud, f"runs/t/predictions/{shard}.out")
        assert [r[:2] for r in out] == [r[:2] for r in rows]
        assert all(len(r) == 3 for r in out)
        expected = _predict(booster, [r[2:] for r in rows])
        np.testing.assert_allclose([float(r[2]) for r in out], expected, rtol=1e-6)

    sent = cloud.events.for_job("pipeline-transform")
    assert [e["detail"]["TransformJobStatus"] for e in sent] == ["InProgress", "Completed"]
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:transform-job/pipeline-transform"
    for event in sent:
        assert event["detail-type"] == "SageMaker Transform Job State Change"
        assert event["source"] == "aws.sagemaker" and event["resources"] == [arn]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
        assert event["detail"]["TransformJobArn"] == arn
        assert event["detail"]["ModelName"] == name
        assert event["detail"]["DataProcessing"] == PIPELINE_PROCESSING
        assert "FailureReason" not in event["detail"]
        assert isinstance(event["detail"]["CreationTime"], int)
    done = sent[-1]["detail"]
    assert isinstance(done["TransformEndTime"], int)
    assert done["TransformEndTime"] >= done["TransformStartTime"] >= done["CreationTime"]
    desc = cloud.sm.describe_transform_job(TransformJobName="pipeline-transform")
    assert desc["TransformJobStatus"] == "Completed"

    # Field by field against the AWS-shaped sample in events/ that the handlers are tested on.
    from tests.conftest import sample_event

    expected = sample_event("sagemaker_transform_completed")
    assert set(sent[-1]) == set(expected)
    # Set only when the request or the job has them (this request sets no MaxPayloadInMB).
    optional = {
        "MaxConcurrentTransforms", "MaxPayloadInMB", "ModelClientConfig", "ExperimentConfig",
        "Environment", "LabelingJobArn", "AutoMLJobArn", "BatchDataCaptureConfig",
        "DataCaptureConfig",
    }  # fmt: skip
    assert set(expected["detail"]) - optional <= set(done)
    assert set(done) - optional <= set(expected["detail"])


def test_slices_are_end_inclusive_and_negative_indexes_count_back(
    cloud: LocalCloud, model: tuple[str, Any]
) -> None:
    """``$[-3:]`` picks the three features; ``$[1:3]`` keeps columns 1, 2 and 3."""
    name, _ = model
    rows = _inference_rows(np.random.default_rng(2), 20, 0)
    put(cloud, "runs/slices/inference/shard-0.csv", _csv(rows))
    detail = _transform(
        cloud,
        "slices",
        name,
        "runs/slices/inference",
        "runs/slices/out",
        {"InputFilter": "$[-3:]", "JoinSource": "Input", "OutputFilter": "$[1:3]"},
    )
    assert detail["TransformJobStatus"] == "Completed", detail.get("FailureReason")
    out = _read_csv(cloud, "runs/slices/out/shard-0.csv.out")
    assert out == [r[1:4] for r in rows]


def test_without_data_processing_outputs_one_prediction_per_line(
    cloud: LocalCloud, model: tuple[str, Any]
) -> None:
    name, booster = model
    features = np.random.default_rng(3).integers(0, 12, size=(30, 3))
    put(cloud, "runs/plain/inference/x.csv", _csv([list(map(str, f)) for f in features]))
    detail = _transform(cloud, "plain", name, "runs/plain/inference", "runs/plain/out")
    assert detail["TransformJobStatus"] == "Completed", detail.get("FailureReason")
    assert "DataProcessing" not in detail
    lines = (
        cloud.s3.get_object(Bucket=cloud.bucket, Key="runs/plain/out/x.csv.out")["Body"]
        .read()
        .decode()
        .splitlines()
    )
    np.testing.assert_allclose(
        [float(v) for v in lines], _predict(booster, features.astype(str).tolist()), rtol=1e-6
    )


@pytest.fixture(scope="module")
def big_object(cloud: LocalCloud) -> int:
    """One ~8 MB CSV object of feature rows; returns its row count."""
    rng = np.random.default_rng(4)
    table = rng.random((150_000, 3))
    body = "".join(f"{a:.15f},{b:.15f},{c:.15f}\n" for a, b, c in table).encode()
    assert 7 * 2**20 < len(body) < 9 * 2**20
    put(cloud, "runs/big/inference/big.csv", body)
    return len(table)


def test_mini_batches_respect_max_payload(
    cloud: LocalCloud, model: tuple[str, Any], big_object: int
) -> None:
    """MaxPayloadInMB bounds each request: 6 MB batches pass the container's 6 MiB limit.

    With 10 MB the whole ~8 MB object goes in one request, which the container
    refuses (HTTP 413), failing the job: the batch size really follows MaxPayloadInMB.
    """
    name, _ = model
    ok = _transform(
        cloud, "payload-6", name, "runs/big/inference", "runs/big/out6", MaxPayloadInMB=6
    )
    assert ok["TransformJobStatus"] == "Completed", ok.get("FailureReason")
    body = cloud.s3.get_object(Bucket=cloud.bucket, Key="runs/big/out6/big.csv.out")["Body"]
    assert len(body.read().decode().splitlines()) == big_object

    too_big = _transform(
        cloud, "payload-10", name, "runs/big/inference", "runs/big/out10", MaxPayloadInMB=10
    )
    assert too_big["TransformJobStatus"] == "Failed"
    assert too_big["FailureReason"].startswith("ClientError: See job logs for more information")
    assert "ClientError: 413" in too_big["FailureReason"]


def test_record_larger_than_max_payload_fails(cloud: LocalCloud, model: tuple[str, Any]) -> None:
    name, _ = model
    huge = ",".join(["1"] * 700_000)  # one 1.4 MB record
    put(cloud, "runs/huge/inference/h.csv", f"1,2,3\n{huge}\n".encode())
    detail = _transform(
        cloud, "huge-record", name, "runs/huge/inference", "runs/huge/out", MaxPayloadInMB=1
    )
    assert detail["TransformJobStatus"] == "Failed"
    assert "larger than MaxPayloadInMB (1 MB)" in detail["FailureReason"]


def test_bad_records_fail_the_job_but_keep_good_outputs(
    cloud: LocalCloud, model: tuple[str, Any]
) -> None:
    """A non-number after filtering, or too many features, fails the job with a reason."""
    name, _ = model
    rng = np.random.default_rng(5)
    good = _inference_rows(rng, 10, 0)
    text = _inference_rows(rng, 10, 100)
    text[3][3] = "n/a"
    wide = [[*r, "1"] for r in _inference_rows(rng, 10, 200)]
    put(cloud, "runs/bad/inference/a-good.csv", _csv(good))
    put(cloud, "runs/bad/inference/b-text.csv", _csv(text))
    put(cloud, "runs/bad/inference/c-wide.csv", _csv(wide))
    detail = _transform(
        cloud, "bad-records", name, "runs/bad/inference", "runs/bad/out", PIPELINE_PROCESSING
    )
    assert detail["TransformJobStatus"] == "Failed"
    reason = detail["FailureReason"]
    assert reason.startswith("ClientError: See job logs for more information")
    assert "b-text.csv: ClientError: 415" in reason
    assert "could not convert string to float: 'n/a'" in reason
    listed = cloud.s3.list_objects_v2(Bucket=cloud.bucket, Prefix="runs/bad/out/")
    assert [o["Key"] for o in listed["Contents"]] == ["runs/bad/out/a-good.csv.out"]

    put(cloud, "runs/wide/inference/c-wide.csv", _csv(wide))
    detail = _transform(
        cloud, "wide-records", name, "runs/wide/inference", "runs/wide/out", PIPELINE_PROCESSING
    )
    assert detail["TransformJobStatus"] == "Failed"
    assert (
        "ClientError: 400 Message: Unable to evaluate payload provided" in detail["FailureReason"]
    )
    assert (
        "Number of columns does not match number of features in booster" in detail["FailureReason"]
    )


def test_model_and_transform_errors_use_aws_codes(
    cloud: LocalCloud, model: tuple[str, Any]
) -> None:
    name, _ = model
    model_arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{name}"
    model_data = cloud.sm.describe_model(ModelName=name)["PrimaryContainer"]["ModelDataUrl"]
    with pytest.raises(ClientError) as no_data:
        cloud.sm.create_model(
            ModelName="no-data",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": f"s3://{cloud.bucket}/gone.tar.gz"},
        )
    assert no_data.value.response["Error"]["Code"] == "ValidationException"
    assert no_data.value.response["Error"]["Message"] == (
        f"Could not find model data at s3://{cloud.bucket}/gone.tar.gz."
    )
    with pytest.raises(ClientError) as dup_model:
        cloud.sm.create_model(
            ModelName=name,
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": IMAGE, "ModelDataUrl": model_data},
        )
    assert dup_model.value.response["Error"]["Code"] == "ValidationException"
    assert dup_model.value.response["Error"]["Message"] == (
        f'Cannot create already existing model "{model_arn}".'
    )
    described = cloud.sm.describe_model(ModelName=name)
    assert described["ModelArn"] == model_arn
    assert described["PrimaryContainer"]["Image"] == IMAGE

    with pytest.raises(ClientError) as no_input:
        _transform(cloud, "no-input", name, "runs/empty/inference", "runs/empty/out")
    assert no_input.value.response["Error"]["Code"] == "ValidationException"
    assert no_input.value.response["Error"]["Message"].startswith(
        f'No S3 objects found under S3 URL "s3://{cloud.bucket}/runs/empty/inference/"'
    )

    put(cloud, "runs/dup/inference/x.csv", b"1,2,3\n")
    _transform(cloud, "dup-transform", name, "runs/dup/inference", "runs/dup/out")
    with pytest.raises(ClientError) as dup_job:
        _transform(cloud, "dup-transform", name, "runs/dup/inference", "runs/dup/out")
    assert dup_job.value.response["Error"]["Code"] == "ResourceInUse"

    with pytest.raises(ClientError) as missing:
        cloud.sm.describe_transform_job(TransformJobName="no-such-transform")
    assert missing.value.response["Error"]["Code"] == "ValidationException"

    with pytest.raises(ClientError) as unsupported:
        cloud.sm.list_endpoints()
    assert unsupported.value.response["Error"]["Code"] == "NotImplementedError"
    assert "ListEndpoints" in unsupported.value.response["Error"]["Message"]

    cloud.sm.create_model(
        ModelName="short-lived",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": model_data},
    )
    cloud.sm.delete_model(ModelName="short-lived")
    with pytest.raises(ClientError) as gone:
        cloud.sm.describe_model(ModelName="short-lived")
    assert gone.value.response["Error"]["Message"] == (
        f'Could not find model "arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/short-lived".'
    )


def test_stop_transform_job(cloud: LocalCloud, model: tuple[str, Any]) -> None:
    """Stopping goes InProgress -> Stopping -> Stopped, and nothing more is written."""
    name, _ = model
    rng = np.random.default_rng(5)
    for i in range(40):
        put(cloud, f"runs/stop/inference/shard-{i:02d}.csv", _csv(_inference_rows(rng, 2000, i)))
    request = {
        "TransformJobName": "stop-transform",
        "ModelName": name,
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"s3://{cloud.bucket}/runs/stop/inference",
                }
            },
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        "TransformOutput": {
            "S3OutputPath": f"s3://{cloud.bucket}/runs/stop/predictions/",
            "Accept": "text/csv",
            "AssembleWith": "Line",
        },
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "DataProcessing": PIPELINE_PROCESSING,
    }
    cloud.sm.create_transform_job(**request)
    cloud.sm.stop_transform_job(TransformJobName="stop-transform")
    final = cloud.events.wait_final("stop-transform")["detail"]

    assert final["TransformJobStatus"] == "Stopped"
    assert "FailureReason" not in final
    sent = cloud.events.for_job("stop-transform")
    assert [e["detail"]["TransformJobStatus"] for e in sent] == [
        "InProgress",
        "Stopping",
        "Stopped",
    ]
    listing = cloud.s3.list_objects_v2(Bucket=cloud.bucket, Prefix="runs/stop/predictions/")
    assert len(listing.get("Contents", [])) < 40


def test_transform_jobs_and_models_are_listed(cloud: LocalCloud, model: tuple[str, Any]) -> None:
    """ListTransformJobs and ListModels answer as SageMaker does, so that a user of
    `m5flow local up` sees their jobs with the calls they would make on AWS."""
    name, _ = model
    rng = np.random.default_rng(8)
    put(cloud, "runs/listed/inference/a.csv", _csv(_inference_rows(rng, 5, 0)))
    for job in ("listed-1", "listed-2"):
        detail = _transform(
            cloud, job, name, "runs/listed/inference", f"runs/listed/{job}", PIPELINE_PROCESSING
        )
        assert detail["TransformJobStatus"] == "Completed"

    # Newest first unless told otherwise: AWS's default for transforms and models (and
    # not for training jobs, which list oldest first).
    listed = cloud.sm.list_transform_jobs(NameContains="listed-")
    summaries = listed["TransformJobSummaries"]
    assert [s["TransformJobName"] for s in summaries] == ["listed-2", "listed-1"]
    assert {s["TransformJobStatus"] for s in summaries} == {"Completed"}
    assert summaries[0]["LastModifiedTime"] >= summaries[0]["CreationTime"]
    first = cloud.sm.list_transform_jobs(
        NameContains="listed-", SortOrder="Ascending", MaxResults=1
    )
    assert [s["TransformJobName"] for s in first["TransformJobSummaries"]] == ["listed-1"]
    rest = cloud.sm.list_transform_jobs(
        NameContains="listed-", SortOrder="Ascending", NextToken=first["NextToken"]
    )
    assert [s["TransformJobName"] for s in rest["TransformJobSummaries"]] == ["listed-2"]
    assert "NextToken" not in rest
    failed = cloud.sm.list_transform_jobs(StatusEquals="Failed", MaxResults=100)
    assert {s["TransformJobStatus"] for s in failed["TransformJobSummaries"]} <= {"Failed"}
    assert "listed-1" not in {s["TransformJobName"] for s in failed["TransformJobSummaries"]}

    models = cloud.sm.list_models(NameContains=name)["Models"]
    assert [m["ModelName"] for m in models] == [name]
    assert models[0]["ModelArn"].endswith(f":model/{name}")
