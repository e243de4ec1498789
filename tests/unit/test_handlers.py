"""Each handler, loaded from template.yaml with its environment, against moto's real server.

The SageMaker calls go to moto here (it records them); the local SageMaker, which refuses
duplicates and really trains, is exercised in tests/local and tests/e2e.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pandas as pd
import pytest

from m5flow import naming
from m5flow.manifest import Manifest
from m5flow.schema import INPUT_FILES, SALES_FILE
from tests.conftest import killed_at_put_events, sample_event

RUN_IN_SAMPLES = "demo-3f2a9c1b7e4d"


def _upload(
    bucket: str, dataset: str, data_dir: Path, files: tuple[str, ...] = INPUT_FILES
) -> None:
    s3 = boto3.client("s3")
    for name in files:
        s3.upload_file(str(data_dir / name), bucket, f"raw/{dataset}/{name}")


def _created(bucket: str, key: str) -> dict:
    return sample_event(
        "s3_object_created_raw",
        **{"m5flow-data-123456789012": bucket, "raw/demo/sales_train_evaluation.csv": key},
    )


def _manifest_created(bucket: str, run: str) -> dict:
    return sample_event(
        "s3_object_created_manifest",
        **{"m5flow-data-123456789012": bucket, f"runs/{RUN_IN_SAMPLES}/": f"runs/{run}/"},
    )


def _run_started(bucket: str, load_function, data_dir: Path, bus, dataset: str) -> str:
    """Upload a dataset and shard it; its events so far are drained. Returns the run id."""
    bus.watch(dataset)
    _upload(bucket, dataset, data_dir)
    run = _shard(bucket, load_function, dataset)
    bus.drain()
    return run


def _keys(bucket: str, prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def _shard(bucket: str, load_function, dataset: str) -> str:
    result = load_function("ShardFunction").invoke(_created(bucket, f"raw/{dataset}/{SALES_FILE}"))
    assert result["status"] == "started", result
    return result["run_id"]


@contextmanager
def _local_sagemaker(tmp_path: Path, **options) -> Iterator:
    """A boto3 SageMaker client of a local SageMaker whose events go nowhere: these tests
    call the step functions themselves."""
    from m5flow_local.sagemaker import LocalSageMaker

    local = LocalSageMaker(lambda event: None, tmp_path, **options)
    try:
        yield boto3.client("sagemaker", endpoint_url=local.start())
    finally:
        local.stop()


def test_shard_waits_for_all_three_inputs(bucket, load_function, small_m5, bus):
    bus.watch("waiting")
    _upload(bucket, "waiting", small_m5, (SALES_FILE,))
    result = load_function("ShardFunction").invoke(_created(bucket, f"raw/waiting/{SALES_FILE}"))
    assert result["status"] == "waiting"
    assert _keys(bucket, "runs/") == []
    assert bus.drain() == []


def test_shard_writes_shards_then_manifest_once(bucket, load_function, small_m5, bus):
    bus.watch("demo")
    _upload(bucket, "demo", small_m5)
    run = _shard(bucket, load_function, "demo")

    manifest = Manifest.from_json(
        boto3.client("s3").get_object(Bucket=bucket, Key=f"runs/{run}/manifest.json")["Body"].read()
    )
    assert manifest.series == 30 and manifest.last_day == 1941
    written = set(_keys(bucket, f"runs/{run}/"))
    for model in manifest.models:
        for shard in model.train + model.validation + model.inference:
            assert shard.key in written
    events = bus.drain()
    assert [e["detail-type"] for e in events] == ["Run Started"]
    assert events[0]["detail"]["run_id"] == run

    # The same event delivered again starts nothing and announces nothing.
    again = load_function("ShardFunction").invoke(_created(bucket, f"raw/demo/{SALES_FILE}"))
    assert again["status"] == "duplicate"
    assert bus.drain() == []


def test_a_failed_shard_write_starts_nothing_and_its_retry_completes(bucket, small_m5, bus):
    """A write that fails midway (S3 refuses, the function dies) leaves no manifest, so no
    training starts on a partial shard set; Lambda's retry then writes the run whole."""
    from m5flow.notifications import EventPublisher
    from m5flow.stages.shard import shard_dataset
    from m5flow.storage import S3Storage

    class FailingOnce(S3Storage):
        failed = False

        def write(self, key: str, body: bytes, **conditions) -> str:
            if "/train/h21/" in key and not FailingOnce.failed:
                FailingOnce.failed = True
                raise OSError("S3 refused the write")
            return super().write(key, body, **conditions)

    bus.watch("partial")
    _upload(bucket, "partial", small_m5)
    storage = FailingOnce(boto3.client("s3"), bucket)
    publisher = EventPublisher(boto3.client("events"), ledger=storage)
    key = f"raw/partial/{SALES_FILE}"

    with pytest.raises(OSError, match="S3 refused the write"):
        shard_dataset(storage, publisher, key)
    assert _keys(bucket, "runs/")  # some shards were written ...
    assert not [k for k in _keys(bucket, "runs/") if k.endswith("manifest.json")]  # ... no manifest
    assert bus.drain() == []

    outcome = shard_dataset(storage, publisher, key)
    assert outcome.status == "started"
    manifest = Manifest.from_json(
        boto3.client("s3")
        .get_object(Bucket=bucket, Key=f"runs/{outcome.run_id}/manifest.json")["Body"]
        .read()
    )
    written = set(_keys(bucket, f"runs/{outcome.run_id}/"))
    assert all(
        shard.key in written
        for model in manifest.models
        for shard in model.train + model.validation + model.inference
    )
    assert [e["detail-type"] for e in bus.drain()] == ["Run Started"]


def test_shard_decodes_the_key_s3_sends_url_encoded(bucket, load_function, small_m5, bus):
    """S3's events carry keys URL-encoded ('my store' as 'my+store'): the run is of the
    dataset as uploaded."""
    bus.watch("my store")
    _upload(bucket, "my store", small_m5)
    encoded = f"raw/my+store/{SALES_FILE}"

    result = load_function("ShardFunction").invoke(_created(bucket, encoded))

    assert result["status"] == "started" and result["dataset"] == "my store"
    (started,) = bus.drain()
    assert started["detail"]["dataset"] == "my store"


def test_inputs_past_the_size_limit_are_rejected_before_any_is_read(
    bucket, small_m5, bus, monkeypatch
):
    """Sized by HEAD: a file far past the limit is refused, not loaded into the function's
    memory first (which would end in an out-of-memory crash instead of a reason)."""
    from m5flow import schema
    from m5flow.notifications import EventPublisher
    from m5flow.stages.shard import shard_dataset
    from m5flow.storage import S3Storage

    bus.watch("huge")
    _upload(bucket, "huge", small_m5)
    storage = S3Storage(boto3.client("s3"), bucket)
    reads: list[str] = []
    real_read = storage.read

    def read(key: str, **kwargs):
        reads.append(key)
        return real_read(key, **kwargs)

    monkeypatch.setattr(storage, "read", read)
    monkeypatch.setattr(schema, "MAX_INPUT_BYTES", 4_000)  # every input of small_m5 is larger

    outcome = shard_dataset(storage, EventPublisher(boto3.client("events"), ledger=storage),
                            f"raw/huge/{SALES_FILE}")  # fmt: skip

    assert outcome.status == "rejected"
    assert not [key for key in reads if key.startswith("raw/")]
    (event,) = bus.drain()
    assert event["detail-type"] == "Input Rejected"
    sizes = {name: (small_m5 / name).stat().st_size for name in INPUT_FILES}
    assert event["detail"]["reasons"] == [
        f"{name}: size: found {size:,} bytes; expected at most 4,000 bytes"
        for name, size in sizes.items()
    ]
    assert _keys(bucket, "runs/") == []


def test_shard_rejects_malformed_sales_and_writes_nothing(
    bucket, load_function, small_m5, bus, tmp_path
):
    bus.watch("broken")
    sales = pd.read_csv(small_m5 / SALES_FILE)
    sales.loc[3, "d_100"] = -2
    for name in INPUT_FILES:
        (tmp_path / name).write_bytes((small_m5 / name).read_bytes())
    sales.to_csv(tmp_path / SALES_FILE, index=False)
    _upload(bucket, "broken", tmp_path)
    before = (
        boto3.client("s3").get_object(Bucket=bucket, Key=f"raw/broken/{SALES_FILE}")["Body"].read()
    )

    result = load_function("ShardFunction").invoke(_created(bucket, f"raw/broken/{SALES_FILE}"))

    assert result["status"] == "rejected"
    assert _keys(bucket, "runs/") == []
    after = (
        boto3.client("s3").get_object(Bucket=bucket, Key=f"raw/broken/{SALES_FILE}")["Body"].read()
    )
    assert after == before
    (event,) = bus.drain()
    assert event["detail-type"] == "Input Rejected"
    assert event["detail"]["stage"] == "shard"
    assert "row 5, column d_100" in event["detail"]["reason"]
    assert "non-negative integer" in event["detail"]["reason"]


def test_start_training_creates_one_job_per_model(bucket, load_function, small_m5, bus):
    run = _run_started(bucket, load_function, small_m5, bus, "train")
    event = _manifest_created(bucket, run)

    result = load_function("StartTrainingFunction").invoke(event)

    # The default: one model per horizon week and the recursive one, each its own job, and
    # each direct model's backtest twin.
    jobs = result["training_jobs"]
    models = ("h7", "h14", "h21", "h28", "r1", "h7-bt", "h14-bt", "h21-bt", "h28-bt")
    assert jobs == [f"m5flow-{run}-{m}" for m in models]
    sagemaker = boto3.client("sagemaker")
    described = sagemaker.describe_training_job(TrainingJobName=f"m5flow-{run}-h28")
    assert described["HyperParameters"]["objective"] == "reg:tweedie"
    # Every day, a fixed count of trees: nothing to stop early on.
    assert described["HyperParameters"]["num_round"] == "150"
    assert "early_stopping_rounds" not in described["HyperParameters"]
    assert described["AlgorithmSpecification"]["TrainingImage"].endswith("/sagemaker-xgboost:1.7-1")
    assert described["ResourceConfig"] == {
        "InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30,
    }  # fmt: skip
    channels = {c["ChannelName"]: c for c in described["InputDataConfig"]}
    assert set(channels) == {"train"}
    assert channels["train"]["ContentType"] == "application/x-parquet"
    assert (
        channels["train"]["DataSource"]["S3DataSource"]["S3Uri"]
        == f"s3://{bucket}/runs/{run}/train/h28/"
    )
    twin = sagemaker.describe_training_job(TrainingJobName=f"m5flow-{run}-h28-bt")
    assert twin["HyperParameters"]["num_round"] == "150"
    (source,) = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in twin["InputDataConfig"]]
    assert source == f"s3://{bucket}/runs/{run}/train/h28-bt/"
    events = bus.drain()
    assert [e["detail-type"] for e in events] == ["Training Started"]
    assert events[0]["detail"]["training_jobs"] == jobs
    # TrainingInstanceCount=auto (the default) sizes each job: small data, one instance.
    assert events[0]["detail"]["instance_type"] == "ml.m5.xlarge"
    assert events[0]["detail"]["instances"] == dict.fromkeys(jobs, 1)
    assert events[0]["detail"]["manifest"] == f"s3://{bucket}/runs/{run}/manifest.json"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("raw/kaggle/sales_train_validation.csv",
         "raw/kaggle/sales_train_validation.csv: not an m5flow input; a dataset is "
         "sales_train_evaluation.csv, calendar.csv, sell_prices.csv "
         "(sales_train_validation.csv is Kaggle's first-stage file, which stops at d_1913; "
         "m5flow needs sales_train_evaluation.csv)"),
        ("raw/2016/june/calendar.csv",
         "raw/2016/june/calendar.csv: an input goes one folder under raw/, "
         "raw/<dataset>/calendar.csv"),
        ("raw/upper/CALENDAR.CSV",
         "raw/upper/CALENDAR.CSV: file names are case-sensitive; an input is named calendar.csv"),
        ("raw/calendar.csv",
         "raw/calendar.csv: an input goes one folder under raw/, raw/<dataset>/calendar.csv"),
        ("raw/mixed/Calendar.Csv",
         "raw/mixed/Calendar.Csv: file names are case-sensitive; an input is named calendar.csv"),
        ("raw/gz/sell_prices.csv.gz",
         "raw/gz/sell_prices.csv.gz: upload it as raw/gz/sell_prices.csv (gzip is read under "
         "that name)"),
        ("raw/zip/calendar.zip",
         "raw/zip/calendar.zip: archives are not read; extract it and upload "
         "raw/zip/calendar.csv"),
        ("raw/calendar.csv.gz",
         "raw/calendar.csv.gz: an input goes one folder under raw/, raw/<dataset>/calendar.csv"),
        ("raw/notes.csv",
         "raw/notes.csv: not an m5flow input; a dataset is one folder under raw/ holding "
         "sales_train_evaluation.csv, calendar.csv, sell_prices.csv"),
        ("raw/m5-forecasting-accuracy.zip",
         "raw/m5-forecasting-accuracy.zip: the competition's zip archive; unzip it and upload "
         "sales_train_evaluation.csv, calendar.csv, sell_prices.csv to raw/<dataset>/"),
        ("raw/kaggle-zip/m5-forecasting-accuracy.zip",
         "raw/kaggle-zip/m5-forecasting-accuracy.zip: the competition's zip archive; unzip it "
         "and upload sales_train_evaluation.csv, calendar.csv, sell_prices.csv to "
         "raw/kaggle-zip/"),
    ],
)  # fmt: skip
def test_a_file_that_can_never_start_a_run_is_refused_and_kept(
    bucket, load_function, bus, key, reason
):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body=b"id,d_1\n")
    bus.watch(key, field="key")  # which dataset, if any, is what is wrong

    outcome = load_function("ShardFunction").invoke(_created(bucket, key))

    assert outcome["status"] == "rejected"
    (rejected,) = bus.drain()
    assert rejected["detail-type"] == "Input Rejected"
    assert rejected["detail"]["reason"] == reason and rejected["detail"]["key"] == key
    assert rejected["detail"]["run_id"] is None
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"id,d_1\n"


@pytest.mark.parametrize(
    "name",
    [
        "sales_test_evaluation.csv",
        "sample_submission.csv",
        "sales_train_validation.csv",
        "SALES_TRAIN_EVALUATION.CSV",
        "sales_train_evaluation.csv.gz",
        "m5-forecasting-accuracy.zip",
        "notes.txt",
        "m5flow.json",
    ],
)
def test_files_beside_complete_inputs_start_nothing_and_say_nothing(
    bucket, load_function, small_m5, bus, name
):
    """`aws s3 sync` of an unzipped Kaggle folder brings its other files along."""
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="raw/quiet/sales_train_evaluation.csv",
                  Body=(small_m5 / "sales_train_evaluation.csv").read_bytes())  # fmt: skip
    key = f"raw/quiet/{name}"
    s3.put_object(Bucket=bucket, Key=key, Body=b"id,d_1942\n")
    bus.watch("quiet")
    bus.watch(key, field="key")
    outcome = load_function("ShardFunction").invoke(_created(bucket, key))
    assert outcome["status"] == "ignored" and bus.drain() == []


def test_a_stand_in_beside_its_input_still_uploading_says_nothing(bucket, load_function, bus):
    """`aws s3 sync` of a Kaggle folder: the first-stage sales file may land while the final
    one is still going up in parts; refusing it then would be a false alarm."""
    s3 = boto3.client("s3")
    key = "raw/syncing/sales_train_validation.csv"
    s3.put_object(Bucket=bucket, Key=key, Body=b"id,d_1\n")
    bus.watch(key, field="key")
    sales = "raw/syncing/sales_train_evaluation.csv"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=sales)["UploadId"]
    shard = load_function("ShardFunction")

    assert shard.invoke(_created(bucket, key))["status"] == "ignored"
    assert bus.drain() == []

    s3.abort_multipart_upload(Bucket=bucket, Key=sales, UploadId=upload)  # it never came
    assert shard.invoke(_created(bucket, key))["status"] == "rejected"
    assert [e["detail-type"] for e in bus.drain()] == ["Input Rejected"]


def test_dataset_settings_file_picks_models_and_hyperparameters(
    bucket, load_function, small_m5, bus
):
    plain = _run_started(bucket, load_function, small_m5, bus, "tuned")
    settings = {"min_lags": [14, 28], "hyperparameters": {"eta": 0.3, "max_depth": None}}
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="raw/tuned/m5flow.json", Body=json.dumps(settings))

    # The settings file alone starts nothing; the next upload of an input starts a new run.
    ignored = load_function("ShardFunction").invoke(_created(bucket, "raw/tuned/m5flow.json"))
    assert ignored["status"] == "ignored"
    run = _shard(bucket, load_function, "tuned")
    assert run != plain
    manifest_key = f"runs/{run}/manifest.json"
    manifest = Manifest.from_json(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    models = ["h14", "h28", "r1", "h14-bt", "h28-bt"]
    assert [m.name for m in manifest.models] == models
    assert "m5flow.json" in manifest.inputs
    (started,) = bus.drain()
    assert started["detail"]["models"] == models
    assert started["detail"]["hyperparameter_overrides"] == {"eta": "0.3", "max_depth": None}

    event = _manifest_created(bucket, run)
    jobs = load_function("StartTrainingFunction").invoke(event)["training_jobs"]
    assert jobs == [f"m5flow-{run}-{m}" for m in models]
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=jobs[0])
    hyperparameters = described["HyperParameters"]
    assert hyperparameters["eta"] == "0.3" and "max_depth" not in hyperparameters
    assert hyperparameters["num_round"] == "50"  # 150 trees at eta 0.1, a third at 0.3
    assert hyperparameters["objective"] == "reg:tweedie"  # the stack's, untouched


def _training_event(bucket: str, run: str, name: str) -> dict:
    return sample_event(
        name,
        **{
            "m5flow-data-123456789012": bucket,
            RUN_IN_SAMPLES: run,
        },
    )


def test_publish_model_creates_model_and_transform(bucket, load_function, small_m5, bus):
    run = _run_started(bucket, load_function, small_m5, bus, "publish")

    result = load_function("PublishModelFunction").invoke(
        _training_event(bucket, run, "sagemaker_training_completed")
    )

    sagemaker = boto3.client("sagemaker")
    job = result["transform_job"]
    transform = sagemaker.describe_transform_job(TransformJobName=job)
    assert transform["DataProcessing"] == {
        "InputFilter": "$[2:]", "JoinSource": "Input", "OutputFilter": "$[0,1,-1]",
    }  # fmt: skip
    assert transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://{bucket}/runs/{run}/inference/h28/"
    )
    model = sagemaker.describe_model(ModelName=transform["ModelName"])
    assert model["PrimaryContainer"]["ModelDataUrl"].endswith("/output/model.tar.gz")
    assert [e["detail-type"] for e in bus.drain()] == ["Transform Started"]


def test_publish_model_asks_the_job_for_an_artifact_its_event_left_out(
    bucket, load_function, small_m5, bus
):
    run = _run_started(bucket, load_function, small_m5, bus, "no-artifact")
    load_function("StartTrainingFunction").invoke(_manifest_created(bucket, run))
    bus.drain()
    event = _training_event(bucket, run, "sagemaker_training_completed")
    del event["detail"]["ModelArtifacts"]
    sagemaker = boto3.client("sagemaker")
    job = sagemaker.describe_training_job(TrainingJobName=event["detail"]["TrainingJobName"])

    result = load_function("PublishModelFunction").invoke(event)

    transform = sagemaker.describe_transform_job(TransformJobName=result["transform_job"])
    model = sagemaker.describe_model(ModelName=transform["ModelName"])
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert model["PrimaryContainer"]["ModelDataUrl"] == artifact
    (started,) = bus.drain()
    assert started["detail"]["model_artifact"] == artifact


def test_publish_model_raises_a_model_refusal_it_does_not_know(
    bucket, load_function, small_m5, bus, tmp_path
):
    """Only "already existing model" means done; any other refusal (here: no model data
    at the artifact's URL) is raised, for Lambda's retries and then the failure report."""
    from botocore.exceptions import ClientError

    from m5flow.stages.publish import publish_model

    run = _run_started(bucket, load_function, small_m5, bus, "no-model-data")
    storage, publisher, settings = _step_parts(bucket)
    with _local_sagemaker(tmp_path) as sagemaker:
        trained = _training_event(bucket, run, "sagemaker_training_completed")["detail"]
        with pytest.raises(ClientError, match="Could not find model data at s3://"):
            publish_model(storage, sagemaker, publisher, trained, settings)
        assert sagemaker.list_transform_jobs()["TransformJobSummaries"] == []
        assert bus.drain() == []


def test_publish_model_reports_failed_training(bucket, load_function, small_m5, bus):
    run = _run_started(bucket, load_function, small_m5, bus, "failing")
    event = _training_event(bucket, run, "sagemaker_training_failed")

    result = load_function("PublishModelFunction").invoke(event)

    assert result["transform_job"] is None
    (failed,) = bus.drain()
    assert failed["detail-type"] == "Run Failed"
    assert failed["detail"]["stage"] == "training"
    # The sample's reason is the container's traceback, cut where AWS cuts it (1024
    # characters) before its message; the event says so and where the log is.
    job = event["detail"]["TrainingJobName"]
    assert failed["detail"]["reason"] == (
        f"training job {job} Failed: AlgorithmError: SageMaker cut the message off (it "
        "keeps 1024 characters); its traceback began with KeyError: 'horizon_days'; see "
        f"CloudWatch Logs group /aws/sagemaker/TrainingJobs, streams {job}/*"
    )
    assert failed["detail"]["failure_reason"] == event["detail"]["FailureReason"]


@pytest.mark.parametrize(
    ("secondary", "reason"),
    [
        ("MaxRuntimeExceeded", "the training job reached MaxRuntimeInSeconds (7200 s) and was "
         "stopped; raise the stack's MaxTrainingSeconds, or lower num_round"),
        ("Stopped", "the training job was stopped"),
    ],
)  # fmt: skip
def test_publish_model_says_why_a_training_job_stopped(
    bucket, load_function, small_m5, bus, secondary, reason
):
    run = _run_started(bucket, load_function, small_m5, bus, f"stop-{secondary.lower()}")
    event = _training_event(bucket, run, "sagemaker_training_failed")
    del event["detail"]["FailureReason"]  # SageMaker gives none for a stopped job
    event["detail"] |= {"TrainingJobStatus": "Stopped", "SecondaryStatus": secondary}

    assert load_function("PublishModelFunction").invoke(event)["transform_job"] is None

    (failed,) = bus.drain()
    name = event["detail"]["TrainingJobName"]
    assert failed["detail"]["reason"] == f"training job {name} Stopped: {reason}"


def _two_model_run(bucket: str, load_function, data_dir: Path, bus, dataset: str) -> str:
    """A run of models h14 and h28 (the dataset's m5flow.json); its events so far drained."""
    boto3.client("s3").put_object(
        Bucket=bucket, Key=f"raw/{dataset}/m5flow.json", Body=b'{"min_lags": [14, 28]}'
    )
    return _run_started(bucket, load_function, data_dir, bus, dataset)


def _model_event(bucket: str, run: str, name: str, model: str) -> dict:
    """A sample state-change event (of model h28), made the event of another model's job."""
    return sample_event(
        name,
        **{"m5flow-data-123456789012": bucket, RUN_IN_SAMPLES: run, "-h28": f"-{model}",
           "/h28/": f"/{model}/"},
    )  # fmt: skip


def test_a_run_fails_once_and_its_other_models_stop_there(bucket, load_function, small_m5, bus):
    """Four models could fail four times: a subscriber got a mail per failed job, and the
    surviving models went on to transforms (and events) for a run that could never finish."""
    run = _two_model_run(bucket, load_function, small_m5, bus, "fails-once")

    publish = load_function("PublishModelFunction")
    publish.invoke(_model_event(bucket, run, "sagemaker_training_failed", "h14"))
    survivor = publish.invoke(_model_event(bucket, run, "sagemaker_training_completed", "h28"))
    load_function("AssembleForecastFunction").invoke(
        _model_event(bucket, run, "sagemaker_transform_failed", "h28")
    )

    (failed,) = bus.drain()  # the first failure only; the later one is logged
    assert failed["detail-type"] == "Run Failed"
    assert f"-{run}-h14 Failed" in failed["detail"]["reason"]
    assert survivor["transform_job"] is None
    sagemaker = boto3.client("sagemaker")
    with pytest.raises(sagemaker.exceptions.ClientError):
        sagemaker.describe_transform_job(TransformJobName=f"m5flow-{run}-h28")


def test_a_transform_that_lost_an_input_shard_fails_the_run(bucket, load_function, small_m5, bus):
    """Its siblings would otherwise wait for that shard's output forever: nothing polls."""
    run = _two_model_run(bucket, load_function, small_m5, bus, "lost-shard")
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))
    s3 = boto3.client("s3")
    lost = _keys(bucket, f"runs/{run}/predictions/h14/")[0]
    s3.delete_object(Bucket=bucket, Key=lost)  # as if its inference shard had been deleted

    assemble = load_function("AssembleForecastFunction")
    waiting = assemble.invoke(_model_event(bucket, run, "sagemaker_transform_completed", "h28"))
    assert bus.drain() == []  # h28's outputs are all there: it waits for h14, as it should
    assert waiting == {"submission": None, "note": "h28 predicted; waiting for h14"}
    lost_it = assemble.invoke(_model_event(bucket, run, "sagemaker_transform_completed", "h14"))
    assert lost_it["note"].endswith("left shards without output: run failed")

    (failed,) = bus.drain()
    assert failed["detail-type"] == "Run Failed"
    assert failed["detail"]["stage"] == "assemble_forecast"
    shard = lost.replace("/predictions/", "/inference/").removesuffix(".out")
    assert "without an output for 1 of its " in failed["detail"]["reason"]
    assert shard in failed["detail"]["reason"]


def test_the_same_files_again_after_a_failure_say_why_nothing_starts(
    bucket, load_function, small_m5, bus
):
    """A user's retry of a failed run is the same run: said once per upload (silent, it
    looked like a hang); a re-delivery of that upload's events says nothing more."""
    run = _run_started(bucket, load_function, small_m5, bus, "retried")
    load_function("PublishModelFunction").invoke(
        _training_event(bucket, run, "sagemaker_training_failed")
    )
    bus.drain()
    shard = load_function("ShardFunction")
    assert shard.invoke(_created(bucket, f"raw/retried/{SALES_FILE}"))["status"] == "duplicate"
    assert bus.drain() == []  # a re-delivery of the run's own upload

    # The user's retry, one file at a time as a slow upload lands: the same bytes, new
    # versions. Part way it is no request yet; the last file completes it.
    outcomes = []
    for name in INPUT_FILES:
        _upload(bucket, "retried", small_m5, (name,))
        outcomes.append(shard.invoke(_created(bucket, f"raw/retried/{name}"))["status"])
    assert outcomes == ["duplicate", "duplicate", "rejected"]
    again = shard.invoke(_created(bucket, f"raw/retried/{SALES_FILE}"))  # re-delivered
    assert again == {"status": "duplicate", "dataset": "retried", "run_id": run}

    (refused,) = bus.drain()
    assert refused["detail-type"] == "Input Rejected" and refused["detail"]["run_id"] == run
    assert refused["detail"]["reason"] == (
        f"these files already made run {run}, which failed; the same files make the same run, "
        "so uploading them again starts nothing: to run them again, upload them under a new "
        "raw/<dataset>/ (or change its m5flow.json)"
    )
    versions = {n: i["version"] for n, i in refused["detail"]["inputs"].items()}
    assert sorted(versions) == sorted(INPUT_FILES) and all(versions.values())


def test_a_malformed_upload_sent_again_is_refused_again(
    bucket, load_function, small_m5, bus, tmp_path
):
    for name in INPUT_FILES:
        (tmp_path / name).write_bytes((small_m5 / name).read_bytes())
    (tmp_path / "calendar.csv").write_text("date,wm_yr_wk\n")
    bus.watch("twice")
    shard = load_function("ShardFunction")
    _upload(bucket, "twice", tmp_path)
    assert shard.invoke(_created(bucket, f"raw/twice/{SALES_FILE}"))["status"] == "rejected"
    assert shard.invoke(_created(bucket, f"raw/twice/{SALES_FILE}"))["status"] == "refused"
    outcomes = []
    for name in INPUT_FILES:  # again, one file at a time: refused once, when complete
        _upload(bucket, "twice", tmp_path, (name,))
        outcomes.append(shard.invoke(_created(bucket, f"raw/twice/{name}"))["status"])
    assert outcomes == ["refused", "refused", "rejected"]
    assert [e["detail-type"] for e in bus.drain()] == ["Input Rejected", "Input Rejected"]


def _write_predictions(
    bucket: str,
    run: str,
    sales: pd.DataFrame,
    last_day: int = 1941,
    recursive: float = 0.0,
    recursive_pass: int | None = None,
) -> None:
    """What Batch Transform would write: `id,day,prediction` per inference row, where the
    prediction of horizon day h after the last sales day is h - 0.5, and the backtest's
    prediction of an earlier day is that day's true sales (in `sales`, the input file).

    A recursive model's rows are written for its pass `recursive_pass` (its last by
    default), `recursive` higher."""
    s3 = boto3.client("s3")
    manifest = Manifest.from_json(
        s3.get_object(Bucket=bucket, Key=f"runs/{run}/manifest.json")["Body"].read()
    )
    truth = sales.set_index("id")
    for model in manifest.models:
        number = max(model.passes - 1, 0) if recursive_pass is None else recursive_pass
        last_pass = f"/{naming.pass_name(model.name, number)}/"
        for shard in model.inference:
            rows = pd.read_csv(
                io.BytesIO(s3.get_object(Bucket=bucket, Key=shard.key)["Body"].read()), header=None
            )
            past = [
                truth.at[i, f"d_{d}"]
                for i, d in zip(rows[0], rows[1], strict=True)
                if d <= last_day
            ]
            prediction = rows[1] - last_day - 0.5 + (recursive if model.passes else 0)
            prediction[rows[1] <= last_day] = past
            out = rows[[0, 1]].assign(prediction=prediction)
            key = shard.key.replace("/inference/", "/predictions/") + ".out"
            key = key.replace(f"/{model.name}/", last_pass)
            body = out.to_csv(header=False, index=False).encode()
            s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_a_recursive_pass_starts_the_next_and_the_forecast_is_the_mean(
    bucket, load_function, small_m5, bus
):
    """Pass 0's completion writes pass 1's shards from pass 0's forecast and starts its
    transform (once, however often delivered); the last pass's completion assembles the
    mean of the direct and the recursive forecasts."""
    dataset = "recursive"
    settings = b'{"min_lags": [28], "recursive_passes": 2}'
    boto3.client("s3").put_object(Bucket=bucket, Key=f"raw/{dataset}/m5flow.json", Body=settings)
    run = _run_started(bucket, load_function, small_m5, bus, dataset)
    sales = pd.read_csv(small_m5 / SALES_FILE)
    _write_predictions(bucket, run, sales, recursive_pass=0)
    assemble = load_function("AssembleForecastFunction")

    job = f"m5flow-{run}-r1-p2"
    for _ in range(2):  # a re-delivery writes the same shards, starts nothing new
        result = assemble.invoke(_model_event(bucket, run, "sagemaker_transform_completed", "r1"))
        assert result == {"submission": None, "note": f"r1 pass 2 of 2 started: {job}"}
    (started,) = bus.drain()
    assert started["detail-type"] == "Transform Started"
    assert started["detail"] | {"pass": 2, "passes": 2, "model": "r1"} == started["detail"]
    transform = boto3.client("sagemaker").describe_transform_job(TransformJobName=job)
    assert transform["ModelName"] == f"m5flow-{run}-r1"
    source = transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    assert source == f"s3://{bucket}/runs/{run}/inference/r1-p2/"
    assert transform["TransformOutput"]["S3OutputPath"].endswith(f"/runs/{run}/predictions/r1-p2/")

    s3 = boto3.client("s3")
    first = _keys(bucket, f"runs/{run}/inference/r1/")
    second = _keys(bucket, f"runs/{run}/inference/r1-p2/")
    assert second == [key.replace("/r1/", "/r1-p2/") for key in first]
    rows = pd.concat(
        pd.read_csv(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), header=None)
        for key in second
    )
    assert len(rows) == len(sales) * 28  # no backtest: the model trained on every day
    assert rows[1].min() == 1942
    yesterday = rows.set_index([0, 1])[2]  # lag1: pass 0's forecast of the day before
    assert (yesterday.xs(1943, level=1) == 0.5).all()  # pass 0 forecast day 1942 at 1 - 0.5
    last_sale = sales.set_index("id")["d_1941"].astype(float).to_dict()
    assert yesterday.xs(1942, level=1).to_dict() == last_sale

    _write_predictions(bucket, run, sales, recursive=1.0)  # the last pass: h + 0.5
    done = assemble.invoke(_model_event(bucket, run, "sagemaker_transform_completed", "r1-p2"))
    assert done["submission"] == f"runs/{run}/forecast/submission.csv"
    submission = pd.read_csv(
        io.BytesIO(s3.get_object(Bucket=bucket, Key=done["submission"])["Body"].read())
    ).set_index("id")
    sold = submission.index[submission.sum(axis=1) > 0]
    assert len(sold) > 20
    expected = [float(h) for h in range(1, 29)]  # the mean of h - 0.5 and h + 0.5
    assert (submission.loc[sold] == expected).all().all()
    metrics = json.loads(
        s3.get_object(Bucket=bucket, Key=f"runs/{run}/forecast/metrics.json")["Body"].read()
    )
    # The direct model's backtest twin alone, which forecast the true sales: h28 and r1
    # trained on those days, and forecast none of them.
    assert metrics["backtest_wrmsse"]["wrmsse"] == 0
    assert metrics["backtest_note"] == (
        "the last sales days, forecast from the days before them by the direct models' "
        "backtest twins (h28-bt: trained as h28, on the days before these only)"
    )
    (ready,) = [e for e in bus.drain() if e["detail-type"] == "Forecast Ready"]
    assert ready["detail"]["headline"]["backtest_models"] == ["h28-bt"]
    assert "backtest WRMSSE 0.0000 of h28-bt alone" in ready["detail"]["summary"]


def test_a_run_sharded_before_the_recursive_model_trained_on_every_day_passes_on(
    bucket, load_function, small_m5, bus, monkeypatch
):
    """A version-2 run in flight when the stack is updated: its recursive model held out
    the last 28 days and its passes forecast the backtest too. Its later passes keep both
    origins, as their manifest counts them."""
    from m5flow import recursive

    def both_origins(data):
        return [
            (o, recursive.first_guess(data.sales[:, :o])) for o in recursive.origins(data, False)
        ]

    monkeypatch.setattr(recursive, "TREES", None)  # as the shard step wrote it then
    monkeypatch.setattr(recursive, "first_guesses", both_origins)
    dataset = "inflight"
    settings = b'{"min_lags": [28], "recursive_passes": 3}'
    boto3.client("s3").put_object(Bucket=bucket, Key=f"raw/{dataset}/m5flow.json", Body=settings)
    run = _run_started(bucket, load_function, small_m5, bus, dataset)
    monkeypatch.undo()
    sales = pd.read_csv(small_m5 / SALES_FILE)
    s3 = boto3.client("s3")
    manifest = Manifest.from_json(
        s3.get_object(Bucket=bucket, Key=f"runs/{run}/manifest.json")["Body"].read()
    )
    assert manifest.model("r1").trees is None and manifest.model("r1").validation
    assemble = load_function("AssembleForecastFunction")
    for number in (0, 1):
        _write_predictions(bucket, run, sales, recursive_pass=number)
        name = naming.pass_name("r1", number)
        assert assemble.invoke(_model_event(bucket, run, "sagemaker_transform_completed", name))[
            "note"
        ].startswith(f"r1 pass {number + 2} of 3 started")
    rows = pd.concat(
        pd.read_csv(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), header=None)
        for key in _keys(bucket, f"runs/{run}/inference/r1-p3/")
    )
    assert len(rows) == len(sales) * 28 * 2  # the backtest's days, then the forecast's
    backtest = rows.set_index([0, 1])[2].xs(1915, level=1)  # lag1: the pass before's d_1914
    assert backtest.to_dict() == sales.set_index("id")["d_1914"].astype(float).to_dict()


def test_assemble_forecast_writes_submission_in_input_order(bucket, load_function, small_m5, bus):
    run = _run_started(bucket, load_function, small_m5, bus, "assemble")
    s3 = boto3.client("s3")
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))
    event = _training_event(bucket, run, "sagemaker_transform_completed")

    result = load_function("AssembleForecastFunction").invoke(event)

    submission = pd.read_csv(
        io.BytesIO(s3.get_object(Bucket=bucket, Key=result["submission"])["Body"].read())
    )
    expected_ids = pd.read_csv(small_m5 / SALES_FILE, usecols=["id"])["id"]
    assert list(submission["id"]) == list(expected_ids)
    assert list(submission.columns) == ["id", *(f"F{h}" for h in range(1, 29))]
    assert (submission["F1"] == 0.5).all() and (submission["F28"] == 27.5).all()
    (ready,) = bus.drain()
    assert ready["detail-type"] == "Forecast Ready"
    assert ready["detail"]["submission"] == f"s3://{bucket}/{result['submission']}"
    metrics = json.loads(
        s3.get_object(Bucket=bucket, Key=f"runs/{run}/forecast/metrics.json")["Body"].read()
    )
    assert metrics["series"] == 30
    # No truth was uploaded: the run scores its backtest, here a perfect one.
    assert metrics["scored_on"] == "backtest" and metrics["wrmsse"] is None
    assert metrics["backtest_wrmsse"]["wrmsse"] == 0.0
    assert ready["detail"]["headline"]["backtest_wrmsse"] == 0.0

    # A second delivery of the same completion announces nothing new, and redoes nothing,
    # even once the predictions were cleared away as scratch (no `Run Failed` after it).
    s3.delete_object(Bucket=bucket, Key=f"runs/{run}/forecast/report.html")
    for key in _keys(bucket, f"runs/{run}/predictions/"):
        s3.delete_object(Bucket=bucket, Key=key)
    again = load_function("AssembleForecastFunction").invoke(event)
    assert again["submission"] is None and again["note"].startswith("the forecast was announced")
    assert bus.drain() == []
    assert f"runs/{run}/forecast/report.html" not in _keys(bucket, f"runs/{run}/forecast/")


def test_a_forecast_whose_announcer_died_is_announced_by_the_retry_not_rebuilt(
    bucket, load_function, small_m5, bus, monkeypatch
):
    """The assembly wrote the forecast and its ledger record, then died before PutEvents
    (a Lambda timeout): the retry sends the recorded event and writes nothing again."""
    from m5flow import notifications
    from m5flow.stages.assemble import assemble_forecast

    run = _run_started(bucket, load_function, small_m5, bus, "died-assembling")
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))
    storage, publisher, settings = _step_parts(bucket)
    sagemaker = boto3.client("sagemaker")  # not called: the run has no recursive passes
    transform = _training_event(bucket, run, "sagemaker_transform_completed")["detail"]

    with killed_at_put_events(monkeypatch, publisher):
        assemble_forecast(storage, publisher, transform, sagemaker, settings)
    assert bus.drain() == []
    s3 = boto3.client("s3")
    versions = s3.list_object_versions(Bucket=bucket, Prefix=f"runs/{run}/forecast/")["Versions"]

    later = notifications.time.time() + notifications.ABANDONED_AFTER + 1
    monkeypatch.setattr(notifications.time, "time", lambda: later)
    resent = assemble_forecast(storage, publisher, transform, sagemaker, settings)  # resent
    assert resent.submission is None and resent.note.startswith("Forecast Ready sent again")

    (ready,) = bus.drain()
    assert ready["detail-type"] == "Forecast Ready"
    assert ready["detail"]["submission"] == f"s3://{bucket}/runs/{run}/forecast/submission.csv"
    again = s3.list_object_versions(Bucket=bucket, Prefix=f"runs/{run}/forecast/")["Versions"]
    assert [v["VersionId"] for v in again] == [v["VersionId"] for v in versions]


def test_a_completion_after_the_run_failed_assembles_nothing(bucket, load_function, small_m5, bus):
    """A sibling's job failed the run: a later completion neither reads the predictions
    (minutes, at full scale) nor announces anything."""
    from m5flow.stages.failure import RUN_FAILED

    run = _run_started(bucket, load_function, small_m5, bus, "failed-first")
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))
    _, publisher, _ = _step_parts(bucket)
    detail = {"run_id": run, "dataset": "failed-first", "stage": "training", "reason": "x"}
    assert publisher.publish("Run Failed", detail, once=RUN_FAILED)
    bus.drain()

    event = _training_event(bucket, run, "sagemaker_transform_completed")
    result = load_function("AssembleForecastFunction").invoke(event)
    assert result == {"submission": None, "note": "the run has failed: no forecast"}

    assert bus.drain() == []
    assert _keys(bucket, f"runs/{run}/forecast/") == []


def test_an_input_deleted_during_the_run_fails_it_with_the_reason(
    bucket, load_function, small_m5, bus
):
    run = _run_started(bucket, load_function, small_m5, bus, "deleted")
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))
    boto3.client("s3").delete_object(Bucket=bucket, Key="raw/deleted/calendar.csv")

    event = _training_event(bucket, run, "sagemaker_transform_completed")
    assert load_function("AssembleForecastFunction").invoke(event)["submission"] is None

    (failed,) = bus.drain()
    assert failed["detail-type"] == "Run Failed"
    assert failed["detail"]["stage"] == "assemble_forecast"
    assert failed["detail"]["reason"] == (
        f"s3://{bucket}/raw/deleted/calendar.csv does not exist: an input was deleted while "
        "the run trained, and the forecast is assembled from its rows; to forecast these "
        "files, upload them under a new raw/<dataset>/ (the same files again would name this "
        "failed run)"
    )
    assert _keys(bucket, f"runs/{run}/forecast/") == []


def _upload_perfect_truth(
    bucket: str, dataset: str, ids: pd.Series, encode: Callable[[str], bytes] = str.encode
) -> None:
    """The truth `_write_predictions` forecasts exactly: every level's error is zero."""
    truth = pd.DataFrame({"id": ids, **{f"d_{1941 + h}": h - 0.5 for h in range(1, 29)}})
    boto3.client("s3").put_object(
        Bucket=bucket,
        Key=f"raw/{dataset}/sales_test_evaluation.csv",
        Body=encode(truth.to_csv(index=False)),
    )


def _excel_gzipped(text: str) -> bytes:
    """A truth file as a Windows export, gzipped under its .csv name, as inputs may be."""
    return gzip.compress(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())


# A truth file of more series than the run: Kaggle's, for all 30,490, beside a slice.
@pytest.mark.parametrize(
    ("other_series", "encode"),
    [([], str.encode), (["X_1_001_WI_3_evaluation"], str.encode), ([], _excel_gzipped)],
)
def test_assemble_forecast_scores_against_an_uploaded_truth(
    bucket, load_function, small_m5, bus, other_series, encode
):
    dataset = f"truth-{len(other_series)}-{'gz' if encode is _excel_gzipped else 'plain'}"
    bus.watch(dataset)
    _upload(bucket, dataset, small_m5)
    ids = pd.read_csv(small_m5 / SALES_FILE, usecols=["id"])["id"]
    all_ids = pd.concat([ids, pd.Series(other_series, dtype=str)])
    _upload_perfect_truth(bucket, dataset, all_ids, encode)
    run = _shard(bucket, load_function, dataset)
    bus.drain()
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))

    load_function("AssembleForecastFunction").invoke(
        _training_event(bucket, run, "sagemaker_transform_completed")
    )

    (ready,) = bus.drain()
    assert ready["detail"]["headline"]["scored_on"] == "truth"
    assert ready["detail"]["headline"]["wrmsse"] == 0.0
    assert "score_problems" not in ready["detail"]["headline"]


def test_a_new_item_is_left_out_of_the_score_not_the_run(
    bucket, load_function, small_m5, bus, tmp_path
):
    """A series whose first sale is on the last history day has no scale for its RMSSE."""
    for name in INPUT_FILES:
        shutil.copy(small_m5 / name, tmp_path / name)
    sales = pd.read_csv(small_m5 / SALES_FILE)
    days = [c for c in sales.columns if c.startswith("d_")]
    sales.loc[0, days] = 0
    sales.loc[0, days[-1]] = 3  # launched on d_1941, priced like every series
    sales.to_csv(tmp_path / SALES_FILE, index=False)
    bus.watch("new-item")
    _upload(bucket, "new-item", tmp_path)
    _upload_perfect_truth(bucket, "new-item", sales["id"])
    run = _shard(bucket, load_function, "new-item")
    bus.drain()
    _write_predictions(bucket, run, sales)

    load_function("AssembleForecastFunction").invoke(
        _training_event(bucket, run, "sagemaker_transform_completed")
    )

    (ready,) = bus.drain()
    assert ready["detail-type"] == "Forecast Ready"
    metrics = json.loads(
        boto3.client("s3")
        .get_object(Bucket=bucket, Key=f"runs/{run}/forecast/metrics.json")["Body"]
        .read()
    )
    item, store = sales.loc[0, "item_id"], sales.loc[0, "store_id"]
    assert f"item x store {item} / {store}" in metrics["wrmsse"]["unscored_examples"]
    assert metrics["wrmsse"]["wrmsse"] == 0.0


def test_a_day_the_stores_closed_on_every_year_is_forecast_zero(
    bucket, load_function, small_m5, bus, tmp_path
):
    """Sales up to d_1773 (2015-11-27): the horizon holds Christmas Day, on which the
    generated stores close every year, as M5's do."""
    sales = pd.read_csv(small_m5 / SALES_FILE)
    sales = sales.drop(columns=[f"d_{d}" for d in range(1774, 1942)])
    data_dir = tmp_path / "december"
    shutil.copytree(small_m5, data_dir)
    sales.to_csv(data_dir / SALES_FILE, index=False)
    run = _run_started(bucket, load_function, data_dir, bus, "december")
    _write_predictions(bucket, run, sales, last_day=1773)

    _forecast_ready(bucket, load_function, run, bus)

    s3 = boto3.client("s3")
    frame = pd.read_csv(
        io.BytesIO(
            s3.get_object(Bucket=bucket, Key=f"runs/{run}/forecast/submission.csv")["Body"].read()
        )
    )
    christmas = 1792 - 1773  # d_1792 is 2015-12-25
    assert (frame[f"F{christmas}"] == 0).all()
    assert (frame.drop(columns=["id", f"F{christmas}"]) > 0).all().all()
    metrics = json.loads(
        s3.get_object(Bucket=bucket, Key=f"runs/{run}/forecast/metrics.json")["Body"].read()
    )
    assert metrics["closed_days"] == ["2015-12-25"]
    page = s3.get_object(Bucket=bucket, Key=f"runs/{run}/forecast/report.html")["Body"].read()
    assert b"2015-12-25 (the stores closed on it in every earlier year)" in page


def _forecast_ready(bucket: str, load_function, run: str, bus) -> dict:
    """Assemble a run whose predictions are all written: the submission is written and
    `Forecast Ready` announced. Returns the announcement's headline."""
    result = load_function("AssembleForecastFunction").invoke(
        _training_event(bucket, run, "sagemaker_transform_completed")
    )
    assert result["submission"] == f"runs/{run}/forecast/submission.csv"
    (ready,) = bus.drain()
    assert ready["detail-type"] == "Forecast Ready"
    return ready["detail"]["headline"]


@pytest.mark.parametrize(
    ("first_day", "bad_cell", "named"),
    [
        (1914, None, "missing column(s) d_1942"),
        # inf once broke the report's axes and so the whole forecast
        (1942, "inf", "2 value(s) are not units sold, 0 to 16,777,216, e.g. "),
        (1942, "1e200", "2 value(s) are not units sold"),
    ],
)
def test_a_wrong_truth_file_costs_the_score_not_the_forecast(
    bucket, load_function, small_m5, bus, first_day, bad_cell, named
):
    dataset = f"bad-truth-{first_day}-{bad_cell}".replace("+", "").replace(".", "")
    bus.watch(dataset)
    _upload(bucket, dataset, small_m5)
    ids = pd.read_csv(small_m5 / SALES_FILE, usecols=["id"])["id"]
    truth = pd.DataFrame({"id": ids, **{f"d_{first_day + h}": "1" for h in range(28)}})
    if bad_cell:
        truth.loc[3, "d_1950"], truth.loc[4, "d_1951"] = bad_cell, "-2"
    boto3.client("s3").put_object(
        Bucket=bucket,
        Key=f"raw/{dataset}/sales_test_evaluation.csv",
        Body=truth.to_csv(index=False).encode(),
    )
    run = _shard(bucket, load_function, dataset)
    bus.drain()
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))

    headline = _forecast_ready(bucket, load_function, run, bus)

    assert headline["scored_on"] == "backtest"
    (problem,) = headline["score_problems"]
    assert problem.startswith("not scored: sales_test_evaluation.csv: ")
    assert "csv: sales_test_evaluation.csv" not in problem  # the file named once, not twice
    assert named in problem
    metrics = json.loads(
        boto3.client("s3")
        .get_object(Bucket=bucket, Key=f"runs/{run}/forecast/metrics.json")["Body"]
        .read()
    )
    assert metrics["score_problems"] == [problem] and "truth_etag" not in metrics
    assert metrics["backtest_days"] == "d_1914..d_1941"
    page = (
        boto3.client("s3")
        .get_object(Bucket=bucket, Key=f"runs/{run}/forecast/report.html")["Body"]
        .read()
        .decode()
    )
    assert "The uploaded truth could not be used" in page and "No truth was uploaded" not in page


def test_a_backtest_that_cannot_be_scored_costs_the_score_not_the_forecast(
    bucket, load_function, small_m5, bus, tmp_path
):
    """No sales in the 28 days before the backtest's origin leave no dollar weights to
    score it by: the forecast is still written and announced, saying why it is unscored."""
    sales = pd.read_csv(small_m5 / SALES_FILE)
    sales[[f"d_{d}" for d in range(1886, 1914)]] = 0
    data_dir = tmp_path / "quiet"
    shutil.copytree(small_m5, data_dir)
    sales.to_csv(data_dir / SALES_FILE, index=False)
    run = _run_started(bucket, load_function, data_dir, bus, "quiet")
    _write_predictions(bucket, run, sales)

    headline = _forecast_ready(bucket, load_function, run, bus)

    assert headline["scored_on"] == "nothing"
    (problem,) = headline["score_problems"]
    assert problem.startswith("no backtest score: ") and "weight" in problem
    forecast = set(_keys(bucket, f"runs/{run}/forecast/"))
    assert forecast == {f"runs/{run}/forecast/{name}"
                        for name in ("submission.csv", "metrics.json", "report.html")}  # fmt: skip


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_assemble_forecast_reports_failed_transform(bucket, load_function, small_m5, bus, status):
    dataset = f"tf-{status.lower()}"
    run = _run_started(bucket, load_function, small_m5, bus, dataset)
    event = _training_event(bucket, run, "sagemaker_transform_failed")
    event["detail"]["TransformJobStatus"] = status

    result = load_function("AssembleForecastFunction").invoke(event)
    name = event["detail"]["TransformJobName"]
    assert result == {"submission": None, "note": f"transform job {name} {status}: run failed"}

    (failed,) = bus.drain()
    assert failed["detail-type"] == "Run Failed" and failed["detail"]["stage"] == "transform"
    name = event["detail"]["TransformJobName"]
    assert failed["detail"]["reason"] == (
        f"transform job {name} {status}: ClientError: See job logs for more information"
    )
    assert _keys(bucket, f"runs/{run}/forecast/") == []


def _step_parts(bucket: str):
    """The storage, publisher and job settings a step gets from its handler, for calling a
    step directly against a SageMaker of the test's own."""
    from m5flow.jobs import JobSettings
    from m5flow.notifications import EventPublisher
    from m5flow.storage import S3Storage

    storage = S3Storage(boto3.client("s3"), bucket)
    publisher = EventPublisher(boto3.client("events"), ledger=storage)
    role = "arn:aws:iam::123456789012:role/m5flow"
    settings = JobSettings.from_env({"DATA_BUCKET": bucket, "SAGEMAKER_ROLE_ARN": role})
    return storage, publisher, settings


def test_a_quota_that_cannot_hold_a_job_fails_the_run_at_once(
    bucket, load_function, small_m5, bus, tmp_path
):
    """No training instance at all: no job could ever start, so the run fails with what it
    needs, and a late delivery of the manifest event starts nothing."""
    from m5flow.stages.training import start_training

    run = _run_started(bucket, load_function, small_m5, bus, "quota")
    storage, publisher, settings = _step_parts(bucket)
    with _local_sagemaker(tmp_path, quotas={"ml.m5.xlarge for training job usage": 0}) as sagemaker:
        manifest = f"runs/{run}/manifest.json"
        assert start_training(storage, sagemaker, publisher, manifest, settings) == []

        (failed,) = bus.drain()
        assert failed["detail-type"] == "Run Failed"
        assert failed["detail"]["stage"] == "start_training"
        reason = failed["detail"]["reason"]
        assert reason.startswith(
            f"SageMaker refused training job m5flow-{run}-h7 (ResourceLimitExceeded: The "
            "account-level service limit 'ml.m5.xlarge for training job usage' is 0 Instances"
        )
        assert (
            "The run's 9 training jobs need up to 9 ml.m5.xlarge instances at once, this job "
            "1, more than the quota holds: raise that quota in Service Quotas"
        ) in reason

        assert start_training(storage, sagemaker, publisher, manifest, settings) == []
        assert bus.drain() == []
        assert sagemaker.list_training_jobs()["TrainingJobSummaries"] == []


def test_jobs_beyond_the_quota_wait_and_start_as_the_run_s_jobs_end(
    bucket, load_function, small_m5, bus, tmp_path
):
    """Room for one job: the run trains one model after another. Each job that ends (its
    state change, at the publish step) starts the next that waited, and says so."""
    from m5flow.stages.publish import publish_model
    from m5flow.stages.training import start_training

    run = _run_started(bucket, load_function, small_m5, bus, "quota-turns")
    storage, publisher, settings = _step_parts(bucket)
    names = [f"m5flow-{run}-{m}" for m in
             ("h7", "h14", "h21", "h28", "r1", "h7-bt", "h14-bt", "h21-bt", "h28-bt")]  # fmt: skip
    with _local_sagemaker(tmp_path, quotas={"ml.m5.xlarge for training job usage": 1}) as sagemaker:
        manifest = f"runs/{run}/manifest.json"
        assert start_training(storage, sagemaker, publisher, manifest, settings) == names[:1]
        (started,) = bus.drain()
        assert started["detail-type"] == "Training Started"
        assert started["detail"]["training_jobs"] == names[:1]
        assert started["detail"]["waiting"] == names[1:]
        assert started["detail"]["waiting_reason"].startswith(
            f"training job {names[1]} waits for the quota (ResourceLimitExceeded: The "
            "account-level service limit 'ml.m5.xlarge for training job usage' is 1 Instances"
        )
        assert "8 more wait for the quota" in started["detail"]["summary"]
        # A late delivery of the manifest event starts none of them, and says nothing.
        assert start_training(storage, sagemaker, publisher, manifest, settings) == []
        assert bus.drain() == []

        ended = _until_ended(sagemaker, names[0])
        assert ended["TrainingJobStatus"] == "Completed", ended.get("FailureReason")
        publish_model(storage, sagemaker, publisher, ended, settings)

        transform, resumed = bus.drain()
        assert transform["detail-type"] == "Transform Started"
        assert resumed["detail-type"] == "Training Started"
        assert resumed["detail"]["training_jobs"] == names[1:2] and resumed["detail"]["waited"]
        statuses = {j["TrainingJobName"]: j["TrainingJobStatus"]
                    for j in sagemaker.list_training_jobs()["TrainingJobSummaries"]}  # fmt: skip
        assert statuses == {names[0]: "Completed", names[1]: "InProgress"}
        # The same state change delivered again starts no third job while h14 trains.
        publish_model(storage, sagemaker, publisher, ended, settings)
        assert bus.drain() == []
        assert len(sagemaker.list_training_jobs()["TrainingJobSummaries"]) == 2


def test_two_deliveries_of_a_job_s_end_at_once_start_the_next_job_once(
    bucket, load_function, small_m5, bus, tmp_path, monkeypatch
):
    """EventBridge may deliver h7's end twice, at once. The second delivery starts h14
    while the first has looked at the jobs (none in progress) and not yet tried it: the
    first then finds h14 taken and h21 refused. h14, which the first never saw, holds the
    instance and will end: the run goes on, and h14 is announced once."""
    from m5flow.stages import training
    from m5flow.stages.publish import publish_model
    from m5flow.stages.training import start_training

    run = _run_started(bucket, load_function, small_m5, bus, "quota-twice")
    storage, publisher, settings = _step_parts(bucket)
    h7, h14 = f"m5flow-{run}-h7", f"m5flow-{run}-h14"
    with _local_sagemaker(tmp_path, quotas={"ml.m5.xlarge for training job usage": 1}) as sagemaker:
        start_training(storage, sagemaker, publisher, f"runs/{run}/manifest.json", settings)
        bus.drain()
        ended = _until_ended(sagemaker, h7)
        create, nested = training._create, []

        def second_delivery_meanwhile(*args, **kwargs):
            if not nested:  # the first call's: the second runs to its end inside it
                nested.append(True)
                publish_model(storage, sagemaker, publisher, ended, settings)
            return create(*args, **kwargs)

        monkeypatch.setattr(training, "_create", second_delivery_meanwhile)
        publish_model(storage, sagemaker, publisher, ended, settings)

        kinds = [(e["detail-type"], e["detail"].get("training_jobs")) for e in bus.drain()]
        assert kinds == [("Transform Started", None), ("Training Started", [h14])], kinds
        statuses = {j["TrainingJobName"]: j["TrainingJobStatus"]
                    for j in sagemaker.list_training_jobs()["TrainingJobSummaries"]}  # fmt: skip
        assert statuses == {h7: "Completed", h14: "InProgress"}


def test_a_late_delivery_of_the_manifest_starts_a_waiting_job_and_says_so(
    bucket, load_function, small_m5, bus, tmp_path
):
    """The manifest event delivered again after h7 ended, before h7's own state change:
    the start-training step starts h14, which waited, as the publish step would, and
    announces it; h7's state change then finds h14 holding the instance."""
    from m5flow.stages.publish import publish_model
    from m5flow.stages.training import start_training

    run = _run_started(bucket, load_function, small_m5, bus, "quota-late")
    storage, publisher, settings = _step_parts(bucket)
    manifest = f"runs/{run}/manifest.json"
    h7, h14 = f"m5flow-{run}-h7", f"m5flow-{run}-h14"
    with _local_sagemaker(tmp_path, quotas={"ml.m5.xlarge for training job usage": 1}) as sagemaker:
        start_training(storage, sagemaker, publisher, manifest, settings)
        bus.drain()
        ended = _until_ended(sagemaker, h7)

        assert start_training(storage, sagemaker, publisher, manifest, settings) == [h14]
        (started,) = bus.drain()
        assert started["detail-type"] == "Training Started" and started["detail"]["waited"]
        assert started["detail"]["training_jobs"] == [h14]

        publish_model(storage, sagemaker, publisher, ended, settings)
        assert [e["detail-type"] for e in bus.drain()] == ["Transform Started"]
        assert len(sagemaker.list_training_jobs()["TrainingJobSummaries"]) == 2


def test_a_job_that_waits_with_none_of_the_run_s_left_fails_the_run(
    bucket, load_function, small_m5, bus, tmp_path
):
    """Another job of the account holds the only instance: none of this run's would ever
    end to start it, so the run fails, saying whose instances they were, instead of
    waiting for an event that never comes."""
    from m5flow import jobs
    from m5flow.stages.training import start_training

    run = _run_started(bucket, load_function, small_m5, bus, "quota-other")
    storage, publisher, settings = _step_parts(bucket)
    manifest_key = f"runs/{run}/manifest.json"
    manifest = Manifest.from_json(storage.read(manifest_key))
    with _local_sagemaker(tmp_path, quotas={"ml.m5.xlarge for training job usage": 1}) as sagemaker:
        other = jobs.training_request(manifest, manifest.models[0], settings)
        sagemaker.create_training_job(**{**other, "TrainingJobName": "another-teams-job"})
        assert start_training(storage, sagemaker, publisher, manifest_key, settings) == []

        (failed,) = bus.drain()  # no Training Started that starts nothing
        assert failed["detail-type"] == "Run Failed"
        assert failed["detail"]["stage"] == "start_training"
        assert (
            "this job 1: the quota holds this job, but other jobs held 1, and none of this "
            "run's is in progress, whose end would start it; to run these files again once "
            "they end, upload them under a new raw/<dataset>/"
        ) in failed["detail"]["reason"]
        (job,) = sagemaker.list_training_jobs()["TrainingJobSummaries"]
        assert job["TrainingJobName"] == "another-teams-job"


def test_a_refusal_moments_after_the_run_s_last_job_ended_is_tried_again_then_fails(
    bucket, load_function, small_m5, bus, tmp_path, monkeypatch
):
    """SageMaker may count an ended job's instances against the quota for minutes: h7 has
    just ended, none of the run's jobs is in progress, and h14 is refused (here another
    job took the instance). The publish step raises, for Lambda's retries, rather than
    fail the run at once; a retry past RELEASE_SECONDS that is refused too fails it."""
    from types import SimpleNamespace

    from m5flow import jobs
    from m5flow.exceptions import QuotaNotReleasedError
    from m5flow.stages import quota_wait, training
    from m5flow.stages.publish import publish_model
    from m5flow.stages.training import start_training

    run = _run_started(bucket, load_function, small_m5, bus, "quota-release")
    storage, publisher, settings = _step_parts(bucket)
    manifest_key = f"runs/{run}/manifest.json"
    manifest = Manifest.from_json(storage.read(manifest_key))
    with _local_sagemaker(tmp_path, quotas={"ml.m5.xlarge for training job usage": 1}) as sagemaker:
        start_training(storage, sagemaker, publisher, manifest_key, settings)
        bus.drain()
        ended = _until_ended(sagemaker, f"m5flow-{run}-h7")
        other = jobs.training_request(manifest, manifest.models[0], settings)
        sagemaker.create_training_job(**{**other, "TrainingJobName": "another-teams-job"})

        with pytest.raises(QuotaNotReleasedError, match=r"the run's last job ended \d+ s before"):
            publish_model(storage, sagemaker, publisher, ended, settings)
        assert [e["detail-type"] for e in bus.drain()] == ["Transform Started"]

        later = time.time() + quota_wait.RELEASE_SECONDS + 1
        monkeypatch.setattr(quota_wait, "time", SimpleNamespace(time=lambda: later))
        # A concurrent delivery creates h21 just before this one's Run Failed is recorded
        # (here on an instance type without a quota): it is stopped, not left to train.
        h21 = jobs.training_request(manifest, manifest.model("h21"), settings)
        h21["ResourceConfig"]["InstanceType"] = "ml.m5.large"
        fail_run = training.fail_run

        def created_meanwhile(*args, **kwargs):
            sagemaker.create_training_job(**h21)
            fail_run(*args, **kwargs)

        monkeypatch.setattr(training, "fail_run", created_meanwhile)
        publish_model(storage, sagemaker, publisher, ended, settings)  # Lambda's last retry
        status = sagemaker.describe_training_job(TrainingJobName=h21["TrainingJobName"])
        assert status["TrainingJobStatus"] in ("Stopping", "Stopped"), status
        (failed,) = bus.drain()
        assert failed["detail-type"] == "Run Failed"
        assert failed["detail"]["stage"] == "publish_model"
        assert f"SageMaker refused training job m5flow-{run}-h14" in failed["detail"]["reason"]
        assert "the quota holds this job, but other jobs held 1" in failed["detail"]["reason"]
        other_job = sagemaker.describe_training_job(TrainingJobName="another-teams-job")
        assert other_job["TrainingJobStatus"] == "InProgress"  # not this run's to stop


def test_a_twin_refused_moments_after_the_last_end_costs_the_backtest_not_the_run(
    bucket, load_function, small_m5, bus, tmp_path
):
    """The five forecasting models trained and the twins waited; another job took the
    instances as the last ended. A twin is not retried through Lambda, whose spent retries
    would fail the whole run (report_failure): it costs the backtest at once."""
    from m5flow import jobs
    from m5flow.stages.publish import publish_model
    from m5flow.stages.training import start_training

    run = _run_started(bucket, load_function, small_m5, bus, "quota-twin-end")
    storage, publisher, settings = _step_parts(bucket)
    manifest_key = f"runs/{run}/manifest.json"
    manifest = Manifest.from_json(storage.read(manifest_key))
    with _local_sagemaker(tmp_path, quotas={"ml.m5.xlarge for training job usage": 5}) as sagemaker:
        created = start_training(storage, sagemaker, publisher, manifest_key, settings)
        assert len(created) == 5  # the forecasting models'; the four twins wait
        bus.drain()
        last = [_until_ended(sagemaker, name) for name in created][-1]
        other = jobs.training_request(manifest, manifest.models[0], settings)
        resources = {**other["ResourceConfig"], "InstanceCount": 5}
        sagemaker.create_training_job(
            **{**other, "TrainingJobName": "another-teams-job", "ResourceConfig": resources}
        )

        publish_model(storage, sagemaker, publisher, last, settings)  # no raise

        transform, lost = bus.drain()
        assert transform["detail-type"] == "Transform Started"
        assert lost["detail-type"] == "Backtest Lost" and lost["detail"]["model"] == "h7-bt"
        assert lost["detail"]["stage"] == "publish_model"
        assert "the quota holds this job, but other jobs held 5" in lost["detail"]["reason"]
        assert len(sagemaker.list_training_jobs()["TrainingJobSummaries"]) == 6  # no twin


def test_twins_beyond_the_quota_wait_as_the_forecasting_models_do(
    bucket, load_function, small_m5, bus, tmp_path
):
    """Six instances hold the five forecasting models' jobs and one twin: the other twins
    wait for the quota rather than cost the run its backtest."""
    from m5flow.stages.training import start_training

    run = _run_started(bucket, load_function, small_m5, bus, "quota-twins")
    storage, publisher, settings = _step_parts(bucket)
    with _local_sagemaker(tmp_path, quotas={"ml.m5.xlarge for training job usage": 6}) as sagemaker:
        manifest = f"runs/{run}/manifest.json"
        created = start_training(storage, sagemaker, publisher, manifest, settings)

        forecasting = [f"m5flow-{run}-{m}" for m in ("h7", "h14", "h21", "h28", "r1")]
        assert created == [*forecasting, f"m5flow-{run}-h7-bt"]
        (started,) = bus.drain()  # no Backtest Lost
        assert started["detail-type"] == "Training Started"
        assert started["detail"]["training_jobs"] == created
        assert started["detail"]["waiting"] == [f"m5flow-{run}-h{h}-bt" for h in (14, 21, 28)]
        for name in created:
            job = sagemaker.describe_training_job(TrainingJobName=name)
            assert job["TrainingJobStatus"] not in ("Stopping", "Stopped", "Failed")


def _until_ended(sagemaker, name: str, timeout: float = 120.0, kind: str = "training") -> dict:
    """The job's description once it has ended (a test waits; the steps never do): its
    state change's detail. `kind`: "training" or "transform"."""
    describe, field = getattr(sagemaker, f"describe_{kind}_job"), f"{kind.capitalize()}Job"
    deadline = time.monotonic() + timeout
    while True:
        job = describe(**{f"{field}Name": name})
        if job[f"{field}Status"] in ("Completed", "Failed", "Stopped"):
            return job
        assert time.monotonic() < deadline, f"{name} still {job[f'{field}Status']}"
        time.sleep(0.2)


def test_a_twin_s_failed_training_costs_the_backtest_not_the_forecast(
    bucket, load_function, small_m5, bus
):
    """The twins forecast only days the run has: the forecast is assembled without them,
    when the loss arrives after every other model's transform, and says why it has no
    backtest score."""
    run = _run_started(bucket, load_function, small_m5, bus, "twin-fails")
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))
    s3 = boto3.client("s3")
    for key in _keys(bucket, f"runs/{run}/predictions/h7-bt/"):  # its job never finished
        s3.delete_object(Bucket=bucket, Key=key)
    publish, assemble = (
        load_function("PublishModelFunction"),
        load_function("AssembleForecastFunction"),
    )
    completed = _model_event(bucket, run, "sagemaker_transform_completed", "h28")
    waiting = assemble.invoke(completed)
    assert waiting == {"submission": None, "note": "h28 predicted; waiting for h7-bt"}

    failed = _model_event(bucket, run, "sagemaker_training_failed", "h7-bt")
    assert publish.invoke(failed)["transform_job"] is None
    (lost,) = bus.drain()
    assert lost["detail-type"] == "Backtest Lost" and lost["detail"]["model"] == "h7-bt"
    job = f"m5flow-{run}-h7-bt"
    assert lost["detail"]["reason"].startswith(f"training job {job} Failed: AlgorithmError")
    # A sibling twin that trained after the loss gets no transform.
    late = publish.invoke(_model_event(bucket, run, "sagemaker_training_completed", "h14-bt"))
    assert late["transform_job"] is None and bus.drain() == []

    # No completion is left: the loss itself, routed to the assemble step, assembles.
    result = assemble.invoke(lost)
    assert result["submission"] == f"runs/{run}/forecast/submission.csv"
    (ready,) = bus.drain()
    headline = ready["detail"]["headline"]
    assert headline["scored_on"] == "nothing" and "backtest_wrmsse" not in headline
    (problem,) = headline["score_problems"]
    reason = lost["detail"]["reason"]
    assert problem == f"no backtest score: backtest twin h7-bt failed at training: {reason}"
    metrics = json.loads(
        s3.get_object(Bucket=bucket, Key=f"runs/{run}/forecast/metrics.json")["Body"].read()
    )
    assert metrics["backtest_wrmsse"] is None and metrics["score_problems"] == [problem]
    # The models it read, and apart, the twins it did not.
    assert metrics["models"] == ["h7", "h14", "h21", "h28", "r1"]
    assert metrics["models_lost"] == ["h7-bt", "h14-bt", "h21-bt", "h28-bt"]
    page = s3.get_object(Bucket=bucket, Key=f"runs/{run}/forecast/report.html")["Body"].read()
    assert b"h7-bt (days 1-7 of the backtest): lost" in page
    submission = pd.read_csv(io.BytesIO(s3.get_object(Bucket=bucket, Key=result["submission"])[
        "Body"].read()))  # fmt: skip
    assert (submission["F1"] == 0.5).all()  # the forecasting models' predictions
    # The loss delivered again, or a twin's late completion, does nothing more.
    assert assemble.invoke(lost)["note"].startswith("the forecast was announced")
    assert bus.drain() == []


def test_a_twin_s_failed_transform_costs_the_backtest(bucket, load_function, small_m5, bus):
    run = _run_started(bucket, load_function, small_m5, bus, "twin-transform")
    event = _model_event(bucket, run, "sagemaker_transform_failed", "h28-bt")

    result = load_function("AssembleForecastFunction").invoke(event)

    name = f"m5flow-{run}-h28-bt"
    assert result == {"submission": None, "note": f"transform job {name} Failed: backtest lost"}
    (lost,) = bus.drain()
    assert lost["detail-type"] == "Backtest Lost" and lost["detail"]["stage"] == "transform"
    assert lost["detail"]["reason"] == (
        f"transform job {name} Failed: ClientError: See job logs for more information"
    )
    # Delivered back to the assemble step, the loss finds the forecasting models running.
    waiting = load_function("AssembleForecastFunction").invoke(lost)
    assert waiting["note"] == (
        "backtest lost; waiting for h7, h14, h21, h28, r1 (recursive: its pass 5 of 5)"
    )  # not for a twin
    # Other models still finish the run: h28's completion waits for its siblings, not the twins.
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))
    note = load_function("AssembleForecastFunction").invoke(
        _model_event(bucket, run, "sagemaker_transform_completed", "h28")
    )
    assert note["submission"] == f"runs/{run}/forecast/submission.csv"
    (ready,) = bus.drain()
    assert ready["detail"]["headline"]["score_problems"] == [
        f"no backtest score: backtest twin h28-bt failed at transform: {lost['detail']['reason']}"
    ]


def test_a_lost_backtest_the_run_s_ledger_does_not_hold_does_nothing(
    bucket, load_function, small_m5, bus
):
    """Anyone in the account may put an m5flow event on the bus: it is checked against the
    run's own record before anything is assembled."""
    run = _run_started(bucket, load_function, small_m5, bus, "stray-loss")
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))
    stray = sample_event("m5flow_backtest_lost", **{"m5flow-data-123456789012": bucket,
                                                    RUN_IN_SAMPLES: run})  # fmt: skip

    result = load_function("AssembleForecastFunction").invoke(stray)

    assert result == {
        "submission": None,
        "note": "the run's ledger holds no lost backtest: nothing to do",
    }
    assert bus.drain() == [] and _keys(bucket, f"runs/{run}/forecast/") == []


def test_a_lost_backtest_of_a_run_whose_files_are_gone_does_nothing(bucket, load_function):
    """Its runs/ expired, or the event names a run of no one: nothing to assemble, no retry."""
    stray = sample_event("m5flow_backtest_lost", **{"m5flow-data-123456789012": bucket})

    result = load_function("AssembleForecastFunction").invoke(stray)

    assert result["submission"] is None and result["note"].endswith("nothing to do")


def test_a_twin_s_transform_without_its_outputs_costs_the_backtest(
    bucket, load_function, small_m5, bus
):
    run = _run_started(bucket, load_function, small_m5, bus, "twin-lost-shard")
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))
    s3 = boto3.client("s3")
    lost = _keys(bucket, f"runs/{run}/predictions/h21-bt/")[0]
    s3.delete_object(Bucket=bucket, Key=lost)

    assemble = load_function("AssembleForecastFunction")
    note = assemble.invoke(_model_event(bucket, run, "sagemaker_transform_completed", "h21-bt"))

    assert note["note"].endswith("left shards without output: backtest lost")
    (event,) = bus.drain()
    assert event["detail-type"] == "Backtest Lost" and event["detail"]["model"] == "h21-bt"
    assert event["detail"]["stage"] == "assemble_forecast"
    # Every other output is there: the loss, routed back here, assembles the forecast.
    assert assemble.invoke(event)["submission"] == f"runs/{run}/forecast/submission.csv"
    (ready,) = bus.drain()
    assert ready["detail-type"] == "Forecast Ready"


def test_a_twin_lost_after_the_forecast_was_announced_says_nothing(
    bucket, load_function, small_m5, bus
):
    """Every twin was done when the forecast was made: a late failure of one changes
    nothing, and an event saying the forecast goes on without a backtest would be false."""
    run = _run_started(bucket, load_function, small_m5, bus, "twin-late")
    _write_predictions(bucket, run, pd.read_csv(small_m5 / SALES_FILE))
    assemble = load_function("AssembleForecastFunction")
    assert assemble.invoke(_model_event(bucket, run, "sagemaker_transform_completed", "h28"))[
        "submission"
    ]  # fmt: skip
    assert [e["detail-type"] for e in bus.drain()] == ["Forecast Ready"]

    late = assemble.invoke(_model_event(bucket, run, "sagemaker_transform_failed", "h7-bt"))

    assert late["note"].endswith("Failed: the run had ended")
    assert bus.drain() == []


def test_a_twin_s_transform_created_while_its_backtest_was_lost_is_stopped(
    bucket, load_function, small_m5, bus, tmp_path
):
    """Two twins finished training at once; one was lost while the other created its
    transform, after the loss had stopped the jobs that existed then."""
    from m5flow import jobs
    from m5flow.manifest import Manifest as RunManifest
    from m5flow.stages.backtest_loss import BACKTEST_LOST
    from m5flow.stages.transforms import start_transform

    run = _run_started(bucket, load_function, small_m5, bus, "twin-race")
    storage, publisher, settings = _step_parts(bucket)
    manifest = RunManifest.from_json(storage.read(f"runs/{run}/manifest.json"))
    detail = {"run_id": run, "dataset": manifest.dataset, "stage": "training",
              "model": "h7-bt", "reason": "x", "manifest": "s3://b/m"}  # fmt: skip
    assert publisher.publish("Backtest Lost", detail, once=BACKTEST_LOST)
    bus.drain()
    with _local_sagemaker(tmp_path) as sagemaker:
        artifact = f"s3://{bucket}/runs/{run}/model/model.tar.gz"
        storage.write(f"runs/{run}/model/model.tar.gz", b"model")  # not a model: never read
        for name in ("h14-bt", "h14"):
            model = manifest.model(name)
            sagemaker.create_model(**jobs.model_request(manifest, model, artifact, settings))
            outcome = start_transform(
                storage, sagemaker, publisher, manifest, model, settings,
                number=0, stage="publish_model", failure="run-failed",
            )  # fmt: skip
            # The twin is stopped; a forecasting model's transform is not the backtest's.
            assert outcome == ("stopped" if model.backtest else "created")
        job = sagemaker.describe_transform_job(TransformJobName=f"m5flow-{run}-h14-bt")
        assert job["TransformJobStatus"] in ("Stopping", "Stopped", "Failed")
    assert bus.drain() == []


def test_a_loss_whose_sender_died_is_sent_by_the_next_step_that_finds_it(
    bucket, load_function, small_m5, bus, tmp_path, monkeypatch
):
    """start_training lost the backtest when SageMaker refused h14-bt's request, wrote the
    record and died before PutEvents (a Lambda timeout). Its retry finds the loss, sends
    the event its sender never did, and stops the twin the dead delivery had started."""
    from m5flow import notifications
    from m5flow.stages.training import start_training

    run = _run_started(bucket, load_function, small_m5, bus, "loss-died")
    storage, publisher, settings = _step_parts(bucket)
    manifest = f"runs/{run}/manifest.json"
    with _local_sagemaker(tmp_path) as sagemaker:
        create = sagemaker.create_training_job

        def refuse_h14_bt(**request):
            if request["TrainingJobName"].endswith("-h14-bt"):
                message = "1 validation error detected: Value 'x' at 'trainingJobName' ..."
                error = {"Error": {"Code": "ValidationException", "Message": message}}
                raise sagemaker.exceptions.ClientError(error, "CreateTrainingJob")
            return create(**request)

        monkeypatch.setattr(sagemaker, "create_training_job", refuse_h14_bt)
        with killed_at_put_events(monkeypatch, publisher):
            start_training(storage, sagemaker, publisher, manifest, settings)
        assert bus.drain() == []
        twin = f"m5flow-{run}-h7-bt"
        assert sagemaker.describe_training_job(TrainingJobName=twin)["TrainingJobStatus"] == (
            "InProgress"
        )  # fmt: skip

        later = notifications.time.time() + notifications.ABANDONED_AFTER + 1
        monkeypatch.setattr(notifications.time, "time", lambda: later)
        assert start_training(storage, sagemaker, publisher, manifest, settings) == []

        lost, started = bus.drain()
        assert lost["detail-type"] == "Backtest Lost" and lost["detail"]["model"] == "h14-bt"
        assert started["detail-type"] == "Training Started"
        status = sagemaker.describe_training_job(TrainingJobName=twin)["TrainingJobStatus"]
        assert status in ("Stopping", "Stopped")


def test_a_twin_lost_by_a_concurrent_delivery_is_stopped_by_the_one_that_created_it(
    bucket, load_function, small_m5, bus, tmp_path
):
    """Two deliveries of the manifest event: the other lost the backtest (and stopped the
    twins that existed then) while this one was creating h7-bt."""
    from m5flow.stages.backtest_loss import BACKTEST_LOST
    from m5flow.stages.training import start_training

    run = _run_started(bucket, load_function, small_m5, bus, "loss-race")
    storage, publisher, settings = _step_parts(bucket)
    with _local_sagemaker(tmp_path) as sagemaker:
        create = sagemaker.create_training_job

        def lost_meanwhile(**request):
            created = create(**request)
            if request["TrainingJobName"].endswith("-h7-bt"):
                detail = {"run_id": run, "dataset": "loss-race", "stage": "start_training",
                          "model": "h14-bt", "reason": "x", "manifest": "s3://b/m"}  # fmt: skip
                assert publisher.publish("Backtest Lost", detail, once=BACKTEST_LOST)
            return created

        sagemaker.create_training_job = lost_meanwhile
        created = start_training(storage, sagemaker, publisher, f"runs/{run}/manifest.json",
                                 settings)  # fmt: skip

        twins = [f"m5flow-{run}-{m}-bt" for m in ("h7", "h14", "h21", "h28")]
        assert set(twins) <= set(created)  # this delivery created them all
        for name in twins:
            status = sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
            assert status in ("Stopping", "Stopped"), name
        forecasting = sagemaker.describe_training_job(TrainingJobName=f"m5flow-{run}-h7")
        assert forecasting["TrainingJobStatus"] == "InProgress"
        lost, started = bus.drain()
        assert lost["detail-type"] == "Backtest Lost"  # the other delivery's, as recorded
        assert started["detail"]["training_jobs"] == [
            f"m5flow-{run}-{m}" for m in ("h7", "h14", "h21", "h28", "r1")
        ]


def test_a_lost_backtest_that_names_no_run_does_nothing(bucket, load_function):
    stray = sample_event("m5flow_backtest_lost", **{"m5flow-data-123456789012": bucket})
    del stray["detail"]["run_id"]

    result = load_function("AssembleForecastFunction").invoke(stray)

    assert result == {"submission": None, "note": "the event names no run: nothing to do"}


def test_a_forecasting_model_s_failure_still_fails_the_run(bucket, load_function, small_m5, bus):
    run = _run_started(bucket, load_function, small_m5, bus, "forecaster-fails")
    failed = _model_event(bucket, run, "sagemaker_training_failed", "h14")
    load_function("PublishModelFunction").invoke(failed)
    (event,) = bus.drain()
    assert event["detail-type"] == "Run Failed"
    # A twin's loss after that says nothing: the run has ended.
    twin = _model_event(bucket, run, "sagemaker_training_failed", "h14-bt")
    load_function("PublishModelFunction").invoke(twin)
    assert bus.drain() == []


def test_an_earlier_run_s_failure_neither_stops_nor_silences_the_new_run(
    bucket, load_function, small_m5, bus
):
    """An earlier run of the same inputs failed before any job started, and its runs/
    expired while its ledger stayed (lifecycle expiry can part them by a day). The new run
    of those inputs trains: its models still get their transforms, and its own failure is
    announced, not taken for the old one."""
    from m5flow.stages.failure import RUN_FAILED

    run = _run_started(bucket, load_function, small_m5, bus, "stale")
    storage, publisher, _ = _step_parts(bucket)
    old = {"run_id": run, "dataset": "stale", "stage": "start_training", "reason": "old"}
    assert publisher.publish("Run Failed", old, once=RUN_FAILED)
    bus.drain()
    time.sleep(1.2)  # S3's Last-Modified has whole seconds
    manifest_key = f"runs/{run}/manifest.json"
    storage.write(manifest_key, storage.read(manifest_key))  # the new run's manifest
    publish = load_function("PublishModelFunction")

    completed = publish.invoke(_training_event(bucket, run, "sagemaker_training_completed"))
    failed = publish.invoke(_training_event(bucket, run, "sagemaker_training_failed"))

    assert completed["transform_job"] == f"m5flow-{run}-h28" and failed["transform_job"] is None
    events = bus.drain()
    assert [e["detail-type"] for e in events] == ["Transform Started", "Run Failed"]
    assert events[1]["detail"]["stage"] == "training"


def _h28_trained_while_h7_trains(
    bucket: str, storage, sagemaker, run: str, settings
) -> tuple[dict, dict]:
    """Start the run's h7 training job (slow enough to be still training), and give the
    sample h28 job's completion event a model artifact: (h7's request, h28's detail)."""
    from m5flow.jobs import training_request

    manifest = Manifest.from_json(storage.read(f"runs/{run}/manifest.json"))
    sibling = training_request(manifest, manifest.models[0], settings)
    sibling["HyperParameters"] |= {"eta": "0.001", "num_round": "100000000"}
    sagemaker.create_training_job(**sibling)
    trained = _training_event(bucket, run, "sagemaker_training_completed")["detail"]
    artifact = trained["ModelArtifacts"]["S3ModelArtifacts"]
    storage.write(artifact.split(f"{bucket}/", 1)[1], b"model")
    return sibling, trained


def test_a_failed_training_job_stops_its_other_models_jobs(
    bucket, load_function, small_m5, bus, tmp_path
):
    """The forecast needs every model: a sibling left training would run on, billed, up
    to MaxTrainingSeconds, for a run that cannot finish. Its own Stopped event is then only
    logged."""
    from m5flow.stages.publish import publish_model

    run = _run_started(bucket, load_function, small_m5, bus, "tfailed")
    storage, publisher, settings = _step_parts(bucket)
    with _local_sagemaker(tmp_path) as sagemaker:
        sibling, _ = _h28_trained_while_h7_trains(bucket, storage, sagemaker, run, settings)
        failed = _training_event(bucket, run, "sagemaker_training_failed")["detail"]

        assert publish_model(storage, sagemaker, publisher, failed, settings) is None

        (announced,) = bus.drain()
        assert announced["detail-type"] == "Run Failed"
        assert f"m5flow-{run}-h28 Failed" in announced["detail"]["reason"]
        name = sibling["TrainingJobName"]
        job = sagemaker.describe_training_job(TrainingJobName=name)
        assert job["TrainingJobStatus"] in ("Stopping", "Stopped")
        stopped = {**failed, "TrainingJobName": name, "TrainingJobStatus": "Stopped"}
        del stopped["FailureReason"]
        assert publish_model(storage, sagemaker, publisher, stopped, settings) is None
        assert bus.drain() == []


def test_a_model_published_while_a_sibling_fails_stops_its_own_transform(
    bucket, load_function, small_m5, bus, tmp_path
):
    """h28 finds the run alive, then h7's failure is announced and stops the others before
    h28's transform exists: h28 must stop it itself, and announce nothing after Run Failed."""
    from m5flow.stages.publish import publish_model

    run = _run_started(bucket, load_function, small_m5, bus, "racing")
    storage, publisher, settings = _step_parts(bucket)
    with _local_sagemaker(tmp_path) as sagemaker:
        _, trained = _h28_trained_while_h7_trains(bucket, storage, sagemaker, run, settings)
        failed = _model_event(bucket, run, "sagemaker_training_failed", "h7")["detail"]
        create_model = sagemaker.create_model

        def sibling_fails_first(**request):
            publish_model(storage, sagemaker, publisher, failed, settings)
            return create_model(**request)

        sagemaker.create_model = sibling_fails_first
        stop_transform_job, stopped = sagemaker.stop_transform_job, []

        def recorded_stop(**request):
            exists = sagemaker.list_transform_jobs(NameContains=request["TransformJobName"])
            stopped.append((request["TransformJobName"], bool(exists["TransformJobSummaries"])))
            return stop_transform_job(**request)

        sagemaker.stop_transform_job = recorded_stop
        assert publish_model(storage, sagemaker, publisher, trained, settings) is None

        assert [e["detail-type"] for e in bus.drain()] == ["Run Failed"]
        # Stopped once it existed (its fake artifact may fail it first on a loaded machine)
        name = f"m5flow-{run}-h28"
        assert (name, True) in stopped
        status = sagemaker.describe_transform_job(TransformJobName=name)["TransformJobStatus"]
        assert status in ("Stopping", "Stopped", "Failed")


def test_a_transform_quota_fails_the_run_and_stops_its_other_models_jobs(
    bucket, load_function, small_m5, bus, tmp_path
):
    """A model trained but its transform is refused by a quota: the forecast needs every
    model, so the run fails now with what it needs (not after two Lambda retries), a
    sibling still training is stopped, and a second delivery creates nothing."""
    from m5flow.stages.publish import publish_model

    run = _run_started(bucket, load_function, small_m5, bus, "tquota")
    storage, publisher, settings = _step_parts(bucket)
    quotas = {f"{settings.transform_instance_type} for transform job usage": 0}
    with _local_sagemaker(tmp_path, quotas=quotas) as sagemaker:
        sibling, trained = _h28_trained_while_h7_trains(bucket, storage, sagemaker, run, settings)

        assert publish_model(storage, sagemaker, publisher, trained, settings) is None

        (failed,) = bus.drain()
        assert failed["detail-type"] == "Run Failed"
        assert failed["detail"]["stage"] == "publish_model"
        reason = failed["detail"]["reason"]
        assert reason.startswith(
            f"SageMaker refused transform job m5flow-{run}-h28 (ResourceLimitExceeded: The "
            f"account-level service limit '{settings.transform_instance_type} for transform "
            "job usage' is 0 Instances"
        )
        assert "The run's 9 transform jobs need up to 9 " in reason
        name = sibling["TrainingJobName"]
        status = sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
        assert status in ("Stopping", "Stopped")

        assert publish_model(storage, sagemaker, publisher, trained, settings) is None
        assert bus.drain() == []
        assert sagemaker.list_transform_jobs()["TransformJobSummaries"] == []


def test_a_request_sagemaker_refuses_as_malformed_fails_the_run_at_once(
    bucket, load_function, small_m5, bus, tmp_path
):
    """An instance type SageMaker does not have passes botocore and the template's pattern;
    SageMaker's front end refuses it, and would again on every retry: the run fails with
    that reason now (training: no job created; transform: the sibling jobs stopped)."""
    from dataclasses import replace

    from m5flow.stages.publish import publish_model
    from m5flow.stages.training import start_training

    storage, publisher, settings = _step_parts(bucket)
    refused = "Value 'ml.m5.3xlarge' at '{}.instanceType' failed to satisfy constraint: "
    with _local_sagemaker(tmp_path) as sagemaker:
        run = _run_started(bucket, load_function, small_m5, bus, "no-such-type")
        wrong = replace(settings, training_instance_type="ml.m5.3xlarge")
        assert (
            start_training(storage, sagemaker, publisher, f"runs/{run}/manifest.json", wrong) == []
        )
        (failed,) = bus.drain()
        assert (failed["detail-type"], failed["detail"]["stage"]) == (
            "Run Failed",
            "start_training",
        )
        reason = failed["detail"]["reason"]
        assert reason.startswith(
            f"SageMaker refused training job m5flow-{run}-h7 (ValidationException: 1 validation "
            f"error detected: {refused.format('resourceConfig')}Member must satisfy enum value "
            "set: "
        )
        assert reason.endswith("); the stack's parameters (TrainingImage, the instance types, "
                               "Hyperparameters) or the dataset's m5flow.json set it")  # fmt: skip
        assert len(reason) < 1000
        assert sagemaker.list_training_jobs()["TrainingJobSummaries"] == []

        run = _run_started(bucket, load_function, small_m5, bus, "no-such-transform-type")
        sibling, trained = _h28_trained_while_h7_trains(bucket, storage, sagemaker, run, settings)
        wrong = replace(settings, transform_instance_type="ml.m5.3xlarge")
        assert publish_model(storage, sagemaker, publisher, trained, wrong) is None
        (failed,) = bus.drain()
        assert (failed["detail-type"], failed["detail"]["stage"]) == ("Run Failed", "publish_model")
        assert failed["detail"]["reason"].startswith(
            f"SageMaker refused transform job m5flow-{run}-h28 (ValidationException: 1 "
            f"validation error detected: {refused.format('transformResources')}"
        )
        status = sagemaker.describe_training_job(TrainingJobName=sibling["TrainingJobName"])
        assert status["TrainingJobStatus"] in ("Stopping", "Stopped")
        assert sagemaker.list_transform_jobs()["TransformJobSummaries"] == []


def test_job_names_an_earlier_run_of_the_same_inputs_left_fail_the_run_with_a_reason(
    bucket, load_function, small_m5, bus, tmp_path
):
    """The same files uploaded again after their runs/ expired (RunRetentionDays) make the
    same job names, which SageMaker never frees: say so instead of waiting forever."""
    from m5flow.jobs import training_request
    from m5flow.manifest import Manifest
    from m5flow.stages.training import CLOCK_SKEW_SECONDS, start_training

    run = _run_started(bucket, load_function, small_m5, bus, "expired")
    storage, publisher, settings = _step_parts(bucket)
    manifest_key = f"runs/{run}/manifest.json"
    manifest = Manifest.from_json(storage.read(manifest_key))
    with _local_sagemaker(tmp_path) as sagemaker:  # moto's takes a name twice
        earlier = training_request(manifest, manifest.models[0], settings)
        sagemaker.create_training_job(**earlier)  # the earlier run's job
        # ... which started and failed; its ledger records outlived its runs/ (expired a
        # day apart): its Training Started, which named jobs that waited, and its failure
        stale = {"run_id": run, "dataset": "expired", "training_jobs": [], "instance_type": "x",
                 "instances": {}, "manifest": "s3://b/m", "waiting": ["m5flow-x-h14"],
                 "waiting_reason": "old"}  # fmt: skip
        assert publisher.publish("Training Started", stale, once="training-started")
        stale = {"run_id": run, "dataset": "expired", "stage": "training", "reason": "old"}
        assert publisher.publish("Run Failed", stale, once="run-failed")
        assert len(bus.drain()) == 2
        time.sleep(CLOCK_SKEW_SECONDS + 1.2)  # S3's Last-Modified has whole seconds
        storage.write(manifest_key, manifest.to_json())  # sharded again after the expiry

        created = start_training(storage, sagemaker, publisher, manifest_key, settings)

        assert created == []
        (failed,) = bus.drain()
        assert failed["detail-type"] == "Run Failed"
        assert failed["detail"]["stage"] == "start_training"
        assert failed["detail"]["reason"].startswith(
            f"training job m5flow-{run}-h7 already exists, created "
        )
        assert "upload them under a new raw/<dataset>/" in failed["detail"]["reason"]
        jobs = sagemaker.list_training_jobs()["TrainingJobSummaries"]
        assert [job["TrainingJobName"] for job in jobs] == [f"m5flow-{run}-h7"]


def test_start_training_refuses_more_hosts_than_shards_with_run_failed(
    bucket, load_function, small_m5, bus
):
    from m5flow.jobs import JobSettings
    from m5flow.notifications import EventPublisher
    from m5flow.stages.training import start_training
    from m5flow.storage import S3Storage

    run = _run_started(bucket, load_function, small_m5, bus, "hosts")
    storage = S3Storage(boto3.client("s3"), bucket)
    settings = JobSettings.from_env({"DATA_BUCKET": bucket, "TRAINING_INSTANCE_COUNT": "99"})

    created = start_training(
        storage,
        boto3.client("sagemaker"),
        EventPublisher(boto3.client("events"), ledger=storage),
        f"runs/{run}/manifest.json",
        settings,
    )

    assert created == []
    (failed,) = bus.drain()
    assert failed["detail-type"] == "Run Failed"
    assert failed["detail"]["stage"] == "start_training"
    assert "TrainingInstanceCount is 99" in failed["detail"]["reason"]
