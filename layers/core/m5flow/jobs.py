"""SageMaker request bodies for the built-in XGBoost: training, model and Batch Transform.

Pure functions from a manifest and settings to the keyword arguments of boto3's
`create_training_job`, `create_model` and `create_transform_job`, so the requests can be
checked without AWS and the handlers stay thin.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import isfinite
from typing import Any

from m5flow import naming
from m5flow.exceptions import RunFailedError
from m5flow.images import xgboost_image_uri
from m5flow.notifications import Stage
from m5flow.shards import CSV, Manifest, ModelShards

# Chosen on 28-day backtests of the real M5 slice ending by d_1941 (bench/accuracy/README.md):
# the original blog settings with a tweedie power near Poisson, histogram trees, and early
# stopping on a metric the container computes on predictions.
DEFAULT_HYPERPARAMETERS: dict[str, str] = {
    "objective": "reg:tweedie",
    "tweedie_variance_power": "1.1",
    "num_round": "2000",
    "eta": "0.1",
    "max_depth": "5",
    "min_child_weight": "7",
    "subsample": "0.7",
    "colsample_bytree": "0.7",
    "tree_method": "hist",
    "early_stopping_rounds": "20",
    # Not "rmse": the 1.7-1 container computes it in Python on the raw margin, which for
    # reg:tweedie is log(prediction); and "tweedie-nloglik" cannot be given a rho there.
    "eval_metric": "poisson-nloglik",
}
# Inference rows are `id,day,features...`: the model sees the features, and the output keeps
# id, day and the prediction. SageMaker's slices are end-inclusive.
TRANSFORM_DATA_PROCESSING = {
    "InputFilter": "$[2:]",
    "JoinSource": "Input",
    "OutputFilter": "$[0,1,-1]",
}


@dataclass(frozen=True)
class JobSettings:
    """Training and transform settings, from the stack parameters (Lambda environment)."""

    bucket: str
    role_arn: str
    image: str
    hyperparameters: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_HYPERPARAMETERS))
    training_instance_type: str = "ml.m5.xlarge"
    training_instance_count: int = 1
    transform_instance_type: str = "ml.m5.xlarge"
    max_training_seconds: int = 7200
    volume_gb: int = 30
    kms_key_arn: str = ""  # encrypts job volumes and outputs when set

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JobSettings:
        """Read the settings the template passes to the functions as environment variables."""
        overrides = stack_hyperparameters(env.get("HYPERPARAMETERS") or "{}")
        if env.get("OBJECTIVE"):
            overrides.setdefault("objective", env["OBJECTIVE"])
        if env.get("NUM_ROUND"):
            overrides.setdefault("num_round", str(int(env["NUM_ROUND"])))
        hyperparameters = merge_hyperparameters(DEFAULT_HYPERPARAMETERS, overrides)
        return cls(
            bucket=env["DATA_BUCKET"],
            role_arn=env.get("SAGEMAKER_ROLE_ARN", ""),
            image=env.get("TRAINING_IMAGE")
            or xgboost_image_uri(env.get("AWS_REGION", "us-east-1")),
            hyperparameters=hyperparameters,
            training_instance_type=env.get("TRAINING_INSTANCE_TYPE", "ml.m5.xlarge"),
            training_instance_count=int(env.get("TRAINING_INSTANCE_COUNT", "1")),
            transform_instance_type=env.get("TRANSFORM_INSTANCE_TYPE", "ml.m5.xlarge"),
            max_training_seconds=int(env.get("MAX_TRAINING_SECONDS", "7200")),
            kms_key_arn=env.get("KMS_KEY_ARN", ""),
        )


def strict_json(text: str | bytes) -> Any:
    """Parse JSON as RFC 8259 has it, from text or UTF-8 bytes (a byte-order mark allowed).

    Python's parser also takes NaN and Infinity, which no JSON tool writes and XGBoost then
    trains on, and lets a repeated key's last value win in silence; a settings file with
    either is refused up front rather than failing a run at training or at assembly.

    Raises
    ------
    ValueError
        Not UTF-8, not JSON, NaN or Infinity, or a key repeated within one object.
    """

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(f"key(s) {', '.join(map(repr, repeated))} given more than once")
        return dict(pairs)

    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(
        text.removeprefix("\ufeff"), parse_constant=no_constant, object_pairs_hook=unique_keys
    )


def hyperparameter_strings(
    values: Mapping[str, object], source: str
) -> tuple[dict[str, str | None], list[str]]:
    """Hyperparameters as SageMaker takes them (strings; None drops a value), and a reason
    for each that is not a string, a finite number or null (1e400 parses as infinity).
    `source` names where they came from.

    A whole number written as 6.0 goes on as "6": JSON has one kind of number, and the
    container refuses "6.0" for an integer hyperparameter such as max_depth.
    """
    strings: dict[str, str | None] = {}
    reasons: list[str] = []
    for name, value in values.items():
        if value is None or isinstance(value, str):
            strings[name] = value
        elif isinstance(value, bool) or not isinstance(value, int | float) or not isfinite(value):
            reasons.append(
                f"{source}: hyperparameter {name!r} must be a string or a finite number "
                f"(or null to drop the stack's value), found {json.dumps(value)}"
            )
        elif isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            strings[name] = str(int(value))
        else:
            strings[name] = str(value)
    return strings, reasons


def stack_hyperparameters(text: str) -> dict[str, str | None]:
    """The stack's `Hyperparameters` parameter (HYPERPARAMETERS), which must be a JSON object
    of strings, numbers and nulls.

    Raises
    ------
    ValueError
        Naming the parameter and what is wrong with it.
    """
    try:
        overrides = strict_json(text)
    except ValueError as exc:
        raise ValueError(f"the Hyperparameters parameter is not JSON ({exc}): {text!r}") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"the Hyperparameters parameter must be a JSON object, got {text!r}")
    strings, reasons = hyperparameter_strings(overrides, "the Hyperparameters parameter")
    if reasons:
        raise ValueError("; ".join(reasons))
    return strings


def merge_hyperparameters(
    base: Mapping[str, str], overrides: Mapping[str, str | None]
) -> dict[str, str]:
    """`base` with `overrides` applied: a value replaces, None removes.

    Another objective than reg:tweedie drops the tweedie power unless the overrides set it,
    since the container refuses `tweedie_variance_power` with any other objective; going
    back to reg:tweedie over a base without a power (a stack set to another objective)
    brings back m5flow's default power, not the container's, unless null drops it.

    Example
    -------
    >>> merge_hyperparameters({"objective": "reg:tweedie", "tweedie_variance_power": "1.1",
    ...     "eta": "0.1"}, {"objective": "count:poisson", "eta": None})
    {'objective': 'count:poisson'}
    """
    merged = dict(base)
    for name, value in overrides.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    power = "tweedie_variance_power"
    if merged.get("objective") != "reg:tweedie" and power not in overrides:
        merged.pop(power, None)
    elif (
        overrides.get("objective") == "reg:tweedie"
        and base.get("objective") != "reg:tweedie"
        and power not in {*merged, *overrides}
    ):
        merged[power] = DEFAULT_HYPERPARAMETERS[power]
    return merged


def _s3_prefix(bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}"


def _kms(settings: JobSettings) -> str:
    return settings.kms_key_arn.strip()


def _tags(manifest: Manifest, model: ModelShards) -> list[dict[str, str]]:
    return [
        {"Key": "m5flow:run", "Value": manifest.run_id},
        {"Key": "m5flow:dataset", "Value": manifest.dataset},
        {"Key": "m5flow:model", "Value": model.name},
    ]


def check_distribution(model: ModelShards, instance_count: int) -> None:
    """Refuse settings that would leave training hosts idle.

    With ShardedByS3Key each host reads whole objects, so fewer training objects than hosts
    leaves some hosts with nothing to train on.
    """
    if instance_count > 1 and len(model.train) < instance_count:
        raise RunFailedError(
            Stage.START_TRAINING,
            f"model {model.name} has {len(model.train)} training shard(s) but "
            f"TrainingInstanceCount is {instance_count}: ShardedByS3Key gives each host whole "
            "objects, so some hosts would get no data; lower TrainingInstanceCount or shard "
            "into more groups",
        )


def training_request(
    manifest: Manifest, model: ModelShards, settings: JobSettings
) -> dict[str, Any]:
    """Keyword arguments of `create_training_job` for one model of a run."""
    check_distribution(model, settings.training_instance_count)
    distribution = "ShardedByS3Key" if settings.training_instance_count > 1 else "FullyReplicated"

    def channel(name: str, dist: str) -> dict[str, Any]:
        return {
            "ChannelName": name,
            "ContentType": manifest.content_type,
            "CompressionType": "None",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": _s3_prefix(
                        settings.bucket, naming.channel_prefix(manifest.run_id, name, model.name)
                    ),
                    "S3DataDistributionType": dist,
                }
            },
        }

    channels = [channel("train", distribution)]
    if model.validation:
        # Every host scores the whole validation set, so early stopping sees the same metric.
        channels.append(channel("validation", "FullyReplicated"))
    hyperparameters = merge_hyperparameters(settings.hyperparameters, manifest.hyperparameters)
    if not model.validation:
        hyperparameters.pop("early_stopping_rounds", None)
    key = _kms(settings)
    return {
        "TrainingJobName": naming.job_name(manifest.run_id, model.name),
        "AlgorithmSpecification": {"TrainingImage": settings.image, "TrainingInputMode": "File"},
        "RoleArn": settings.role_arn,
        "InputDataConfig": channels,
        "OutputDataConfig": {
            "S3OutputPath": _s3_prefix(
                settings.bucket, naming.channel_prefix(manifest.run_id, "model", model.name)
            ),
            **({"KmsKeyId": key} if key else {}),
        },
        "ResourceConfig": {
            "InstanceType": settings.training_instance_type,
            "InstanceCount": settings.training_instance_count,
            "VolumeSizeInGB": settings.volume_gb,
            **({"VolumeKmsKeyId": key} if key else {}),
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_training_seconds},
        "HyperParameters": hyperparameters,
        "Tags": _tags(manifest, model),
    }


def model_request(
    manifest: Manifest, model: ModelShards, artifact_uri: str, settings: JobSettings
) -> dict[str, Any]:
    """Keyword arguments of `create_model` for a trained model."""
    return {
        "ModelName": naming.job_name(manifest.run_id, model.name),
        "ExecutionRoleArn": settings.role_arn,
        "PrimaryContainer": {"Image": settings.image, "ModelDataUrl": artifact_uri},
        "Tags": _tags(manifest, model),
    }


def transform_request(
    manifest: Manifest, model: ModelShards, settings: JobSettings
) -> dict[str, Any]:
    """Keyword arguments of `create_transform_job` scoring a model's inference shards."""
    name = naming.job_name(manifest.run_id, model.name)
    key = _kms(settings)
    return {
        "TransformJobName": name,
        "ModelName": name,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": _s3_prefix(
                        settings.bucket,
                        naming.channel_prefix(manifest.run_id, "inference", model.name),
                    ),
                }
            },
            "ContentType": CSV,
            "SplitType": "Line",
            "CompressionType": "None",
        },
        "TransformOutput": {
            "S3OutputPath": _s3_prefix(
                settings.bucket, naming.channel_prefix(manifest.run_id, "predictions", model.name)
            ),
            "Accept": CSV,
            "AssembleWith": "Line",
            **({"KmsKeyId": key} if key else {}),
        },
        "TransformResources": {
            "InstanceType": settings.transform_instance_type,
            "InstanceCount": 1,
            **({"VolumeKmsKeyId": key} if key else {}),
        },
        "DataProcessing": dict(TRANSFORM_DATA_PROCESSING),
        "Tags": _tags(manifest, model),
    }
