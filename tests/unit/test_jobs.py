"""SageMaker request bodies: distribution, encryption and the names that make them idempotent."""

from __future__ import annotations

import pytest

from m5flow.exceptions import RunFailedError
from m5flow.jobs import (
    STACK_TAG,
    JobSettings,
    model_request,
    training_request,
    transform_request,
)
from m5flow.manifest import PARQUET, Manifest, ModelShards, ShardInfo

ENV = {
    "DATA_BUCKET": "bkt",
    "SAGEMAKER_ROLE_ARN": "arn:aws:iam::1:role/r",
    "AWS_REGION": "eu-west-1",
}


def _manifest(train_shards: int, dataset: str = "d") -> Manifest:
    shards = [ShardInfo(f"runs/r-1/train/h28/{i}.parquet", 10, 100) for i in range(train_shards)]
    model = ModelShards("h28", 28, (1, 28), ["lag28"], train=shards,
                        validation=shards[:1], inference=shards[:1])  # fmt: skip
    return Manifest("r-1", dataset, {}, 1941, 28, 3, PARQUET, [model])


def test_defaults_use_the_regions_builtin_image_and_one_replicated_host():
    settings = JobSettings.from_env(ENV)
    request = training_request(_manifest(3), _manifest(3).models[0], settings)
    assert request["AlgorithmSpecification"]["TrainingImage"] == (
        "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    )
    assert request["TrainingJobName"] == "m5flow-r-1-h28"
    train = request["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    assert train["S3DataDistributionType"] == "FullyReplicated"
    assert "KmsKeyId" not in request["OutputDataConfig"]


def test_several_hosts_shard_by_key_and_validation_stays_replicated():
    settings = JobSettings.from_env({**ENV, "TRAINING_INSTANCE_COUNT": "2"})
    manifest = _manifest(3)
    request = training_request(manifest, manifest.models[0], settings)
    distribution = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3DataDistributionType"]
        for c in request["InputDataConfig"]
    }
    assert distribution == {"train": "ShardedByS3Key", "validation": "FullyReplicated"}


def test_auto_is_the_default_and_sizes_each_job_from_its_manifest():
    assert JobSettings.from_env(ENV).training_instance_count is None
    assert JobSettings.from_env({**ENV, "TRAINING_INSTANCE_COUNT": "auto"}) == JobSettings.from_env(
        ENV
    )
    shards = [ShardInfo(f"runs/r-1/train/h7/{i}.parquet", 700_000, 1) for i in range(70)]
    big = ModelShards("h7", 7, (1, 7), [f"f{i}" for i in range(33)], train=shards)
    manifest = Manifest("r-1", "d", {}, 1941, 28, 30_490, PARQUET, [big])

    request = training_request(manifest, big, JobSettings.from_env(ENV))
    # 49 M rows of 34 cells: about 31 GiB on one host; 24 shards a host fit an ml.m5.xlarge.
    assert request["ResourceConfig"]["InstanceCount"] == 3
    train = request["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    assert train["S3DataDistributionType"] == "ShardedByS3Key"

    fixed = JobSettings.from_env({**ENV, "TRAINING_INSTANCE_COUNT": "2"})
    assert training_request(manifest, big, fixed)["ResourceConfig"]["InstanceCount"] == 2
    larger = JobSettings.from_env({**ENV, "TRAINING_INSTANCE_TYPE": "ml.r5.4xlarge"})
    assert training_request(manifest, big, larger)["ResourceConfig"]["InstanceCount"] == 1


def test_more_hosts_than_training_objects_is_refused_with_a_reason():
    settings = JobSettings.from_env({**ENV, "TRAINING_INSTANCE_COUNT": "4"})
    manifest = _manifest(3)
    with pytest.raises(RunFailedError, match=r"3 training shard.*TrainingInstanceCount is 4"):
        training_request(manifest, manifest.models[0], settings)


def test_no_volume_key_for_types_whose_local_disks_encrypt_themselves():
    """SageMaker refuses VolumeKmsKeyId with local-storage types (m5d, g4dn...)."""
    settings = JobSettings.from_env(
        {**ENV, "KMS_KEY_ARN": "arn:aws:kms:eu-west-1:1:key/k",
         "TRAINING_INSTANCE_TYPE": "ml.m5d.2xlarge", "TRANSFORM_INSTANCE_TYPE": "ml.g4dn.xlarge"}
    )  # fmt: skip
    manifest = _manifest(1)
    training = training_request(manifest, manifest.models[0], settings)
    transform = transform_request(manifest, manifest.models[0], settings)
    assert "VolumeKmsKeyId" not in training["ResourceConfig"]
    assert "VolumeKmsKeyId" not in transform["TransformResources"]
    # the outputs in S3 are still encrypted with the key
    assert training["OutputDataConfig"]["KmsKeyId"] == settings.kms_key_arn
    assert transform["TransformOutput"]["KmsKeyId"] == settings.kms_key_arn


def test_kms_key_encrypts_volumes_and_outputs():
    settings = JobSettings.from_env({**ENV, "KMS_KEY_ARN": "arn:aws:kms:eu-west-1:1:key/k"})
    manifest = _manifest(1)
    training = training_request(manifest, manifest.models[0], settings)
    transform = transform_request(manifest, manifest.models[0], settings)
    assert training["OutputDataConfig"]["KmsKeyId"] == settings.kms_key_arn
    assert training["ResourceConfig"]["VolumeKmsKeyId"] == settings.kms_key_arn
    assert transform["TransformOutput"]["KmsKeyId"] == settings.kms_key_arn
    assert transform["TransformResources"]["VolumeKmsKeyId"] == settings.kms_key_arn


def test_hyperparameter_overrides_are_merged_as_strings():
    settings = JobSettings.from_env(
        {**ENV, "NUM_ROUND": "50", "HYPERPARAMETERS": '{"eta": 0.3, "max_depth": "5"}'}
    )
    assert settings.hyperparameters["num_round"] == "50"
    assert settings.hyperparameters["eta"] == "0.3"
    assert settings.hyperparameters["max_depth"] == "5"
    assert settings.hyperparameters["objective"] == "reg:tweedie"
    with pytest.raises(ValueError, match="JSON object"):
        JobSettings.from_env({**ENV, "HYPERPARAMETERS": "[1]"})
    with pytest.raises(ValueError, match="the Hyperparameters parameter is not JSON"):
        JobSettings.from_env({**ENV, "HYPERPARAMETERS": "{eta: 0.3}"})


@pytest.mark.parametrize(
    ("dataset", "tagged"),
    [
        ("M5 (2016), west", "M5 _2016__ west"),
        ("café/ü-2016", "café/ü-2016"),
        ("cafe\u0301", "café"),  # macOS writes accents apart; SageMaker refuses them alone
        ("a" * 300, "a" * 256),
    ],
)
def test_every_request_tags_the_dataset_as_sagemaker_accepts_it(dataset: str, tagged: str):
    """A dataset is named by its S3 folder; SageMaker refuses tag values with `(` or `,`
    and over 256 characters, which would fail the run at training for its name alone."""
    settings = JobSettings.from_env(ENV)
    manifest = _manifest(1, dataset)
    model = manifest.models[0]
    for request in (
        training_request(manifest, model, settings),
        model_request(manifest, model, "s3://bkt/model.tar.gz", settings),
        transform_request(manifest, model, settings),
    ):
        assert {"Key": "m5flow:dataset", "Value": tagged} in request["Tags"]


@pytest.mark.parametrize("stack", ["m5flow", ""])
def test_every_request_carries_the_stack_tag_its_permissions_require(stack: str):
    settings = JobSettings.from_env({**ENV, "STACK_NAME": stack} if stack else ENV)
    manifest = _manifest(1)
    model = manifest.models[0]
    for request in (
        training_request(manifest, model, settings),
        model_request(manifest, model, "s3://bkt/model.tar.gz", settings),
        transform_request(manifest, model, settings),
    ):
        tagged = [tag["Value"] for tag in request["Tags"] if tag["Key"] == STACK_TAG]
        # `m5flow shard` and direct calls of the core have no stack: no tag, and no stack's
        # permissions to satisfy either.
        assert tagged == ([stack] if stack else [])


@pytest.mark.parametrize(("hosts", "encrypted"), [("1", False), ("2", True)])
def test_containers_run_without_a_network_and_hosts_talk_encrypted(hosts, encrypted):
    settings = JobSettings.from_env({**ENV, "TRAINING_INSTANCE_COUNT": hosts})
    manifest = _manifest(3)
    training = training_request(manifest, manifest.models[0], settings)
    assert training["EnableNetworkIsolation"] is True
    assert training["EnableInterContainerTrafficEncryption"] is encrypted
    model = model_request(manifest, manifest.models[0], "s3://bkt/m.tar.gz", settings)
    assert model["EnableNetworkIsolation"] is True


def test_number_parameters_with_a_fraction_still_start_the_function():
    """CloudFormation's Number lets "7200.5" through: the settings read it, not crash."""
    settings = JobSettings.from_env({**ENV, "MAX_TRAINING_SECONDS": "7200.5", "NUM_ROUND": "300.0"})
    assert settings.max_training_seconds == 7200
    assert settings.hyperparameters["num_round"] == "300"


# --- survivors of a mutation test (session 15): each of these once passed every test ---


def test_a_model_without_a_validation_channel_is_not_asked_to_stop_early():
    """The built-in XGBoost fails a job whose early_stopping_rounds has nothing to watch."""
    manifest = _manifest(3)
    model = manifest.models[0]
    alone = ModelShards(model.name, model.min_lag, model.horizon_days, model.feature_names,
                        train=model.train, validation=[], inference=model.inference)  # fmt: skip
    request = training_request(manifest, alone, JobSettings.from_env(ENV))
    assert "early_stopping_rounds" not in request["HyperParameters"]
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train"]
    with_validation = training_request(manifest, model, JobSettings.from_env(ENV))
    assert "early_stopping_rounds" in with_validation["HyperParameters"]


@pytest.mark.parametrize(
    ("overrides", "trees"),
    [
        ({}, "150"),  # the stack's defaults: eta 0.1, num_round 2000
        ({"eta": "0.05"}, "300"),  # shorter steps, as many more trees
        ({"eta": "0.2", "num_round": "900"}, "75"),
        ({"num_round": "100"}, "100"),  # num_round caps every model (a full-scale run)
        ({"eta": None}, "50"),  # XGBoost's own eta, 0.3
        ({"eta": "fast", "num_round": "many"}, "150"),  # the container refuses them, saying so
        ({"eta": "1e-320", "num_round": "5000"}, "5000"),
        ({"eta": None, "learning_rate": "0.05"}, "300"),  # the container's name for eta
    ],
)
def test_a_model_of_a_fixed_number_of_trees_trains_them_at_the_runs_eta(overrides, trees):
    """The recursive model trains on every day a count of trees chosen at eta 0.1; the
    early-stopped models keep num_round as their cap."""
    manifest = _manifest(3)
    manifest.hyperparameters = overrides
    model = manifest.models[0]
    fixed = ModelShards("r1", 1, (1, 28), model.feature_names, train=model.train,
                        inference=model.inference, passes=5, trees=150)  # fmt: skip
    hyperparameters = training_request(manifest, fixed, JobSettings.from_env(ENV))[
        "HyperParameters"
    ]
    assert hyperparameters["num_round"] == trees
    assert "early_stopping_rounds" not in hyperparameters
    capped = training_request(manifest, model, JobSettings.from_env(ENV))["HyperParameters"]
    assert capped["num_round"] == overrides.get("num_round", "2000")
    assert hyperparameters.get("eta") == capped.get("eta")  # passed on as they are


def test_the_objective_in_the_hyperparameters_wins_over_the_objective_parameter():
    env = {**ENV, "OBJECTIVE": "reg:squarederror",
           "HYPERPARAMETERS": '{"objective": "count:poisson"}'}  # fmt: skip
    assert JobSettings.from_env(env).hyperparameters["objective"] == "count:poisson"
    only = JobSettings.from_env({**ENV, "OBJECTIVE": "reg:squarederror"})
    assert only.hyperparameters["objective"] == "reg:squarederror"
