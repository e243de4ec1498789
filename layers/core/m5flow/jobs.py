"""SageMaker request bodies for the built-in XGBoost: training, model and Batch Transform.

Pure functions from a manifest and settings to the keyword arguments of boto3's
`create_training_job`, `create_model` and `create_transform_job`, so the requests can be
checked without AWS and the handlers stay thin; and `one_line`, what a job's FailureReason
says, for the events and the local console alike (this module logs nothing, so the console
may import it without a Powertools logger of its own).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from m5flow import instances, naming
from m5flow.exceptions import RunFailedError
from m5flow.hyperparameters import (
    DEFAULT_HYPERPARAMETERS,
    merge_hyperparameters,
    stack_hyperparameters,
)
from m5flow.images import xgboost_image_uri
from m5flow.manifest import CSV, Manifest, ModelShards
from m5flow.notifications import Stage

# Inference rows are `id,day,features...`: the model sees the features, and the output keeps
# id, day and the prediction. SageMaker's slices are end-inclusive.
TRANSFORM_DATA_PROCESSING = {
    "InputFilter": "$[2:]",
    "JoinSource": "Input",
    "OutputFilter": "$[0,1,-1]",
}
# The tag template.yaml's SageMaker permissions require, valued with the stack's name.
STACK_TAG = "m5flow:stack"
# SageMaker keeps a FailureReason's first 1024 characters: a long traceback loses its message.
FAILURE_REASON_CHARS = 1024
_TRACEBACK = "Traceback (most recent call last):"
# What Python writes between the tracebacks of chained exceptions
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


@dataclass(frozen=True)
class JobSettings:
    """Training and transform settings, from the stack parameters (Lambda environment)."""

    bucket: str
    role_arn: str
    image: str
    hyperparameters: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_HYPERPARAMETERS))
    training_instance_type: str = "ml.m5.xlarge"
    # None ("auto"): as many as each model's data needs (`training_instance_count`).
    training_instance_count: int | None = None
    transform_instance_type: str = "ml.m5.xlarge"
    max_training_seconds: int = 7200
    volume_gb: int = 30
    kms_key_arn: str = ""  # encrypts job volumes and outputs when set
    stack_name: str = ""  # the CloudFormation stack, tagged on every job and model it creates

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> JobSettings:
        """Read the settings the template passes to the functions as environment variables."""
        overrides = stack_hyperparameters(env.get("HYPERPARAMETERS") or "{}")
        if env.get("OBJECTIVE"):
            overrides.setdefault("objective", env["OBJECTIVE"])
        if env.get("NUM_ROUND"):
            overrides.setdefault("num_round", str(_whole(env["NUM_ROUND"])))
        hyperparameters = merge_hyperparameters(DEFAULT_HYPERPARAMETERS, overrides)
        return cls(
            bucket=env["DATA_BUCKET"],
            role_arn=env.get("SAGEMAKER_ROLE_ARN", ""),
            image=env.get("TRAINING_IMAGE")
            or xgboost_image_uri(env.get("AWS_REGION", "us-east-1")),
            hyperparameters=hyperparameters,
            training_instance_type=env.get("TRAINING_INSTANCE_TYPE", cls.training_instance_type),
            training_instance_count=_instance_count(env.get("TRAINING_INSTANCE_COUNT")),
            transform_instance_type=env.get("TRANSFORM_INSTANCE_TYPE", cls.transform_instance_type),
            max_training_seconds=_whole(
                env.get("MAX_TRAINING_SECONDS", str(cls.max_training_seconds))
            ),
            kms_key_arn=env.get("KMS_KEY_ARN", ""),
            stack_name=env.get("STACK_NAME", ""),
        )


def _whole(value: str) -> int:
    """A CloudFormation Number parameter as a whole number: the template's checks let
    "7200.5" through, and a function that cannot start would fail every run."""
    return int(float(value))


def _instance_count(value: str | None) -> int | None:
    """TrainingInstanceCount: a number, or None for `auto` (also when unset)."""
    value = (value or instances.AUTO).strip()
    return None if value == instances.AUTO else int(value)


def training_instance_count(model: ModelShards, settings: JobSettings) -> int:
    """The instances of `model`'s training job: the stack's number, else as many as its
    data needs (`instances.instances_needed`).

    Raises
    ------
    RunFailedError
        A number that would leave hosts without data, or data no instance count holds.
    """
    if settings.training_instance_count is None:
        return instances.instances_needed(model, settings.training_instance_type)
    _check_distribution(model, settings.training_instance_count)
    return settings.training_instance_count


def _s3_prefix(bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}"


def _kms(settings: JobSettings) -> str:
    return settings.kms_key_arn.strip()


def _volume_kms(key: str, instance_type: str) -> dict[str, str]:
    """VolumeKmsKeyId, unless the type's own hardware encrypts its local volumes (then
    SageMaker refuses the key)."""
    return {"VolumeKmsKeyId": key} if key and not instances.has_local_storage(instance_type) else {}


def _tags(manifest: Manifest, model: ModelShards, settings: JobSettings) -> list[dict[str, str]]:
    """The run's tags, and the stack's: its functions may create, stop and retag only what
    carries their stack's tag (template.yaml), not another stack's jobs in the account."""
    tags = [
        {"Key": "m5flow:run", "Value": manifest.run_id},
        {"Key": "m5flow:dataset", "Value": naming.tag_value(manifest.dataset)},
        {"Key": "m5flow:model", "Value": model.name},
    ]
    if settings.stack_name:
        tags.append({"Key": STACK_TAG, "Value": settings.stack_name})
    return tags


def _check_distribution(model: ModelShards, instance_count: int) -> None:
    """Refuse settings that would leave training hosts idle.

    With ShardedByS3Key each host reads whole objects, so fewer training objects than hosts
    leaves some hosts with nothing to train on.
    """
    if instance_count > 1 and len(model.train) < instance_count:
        raise RunFailedError(
            Stage.START_TRAINING,
            f"model {model.name} has {len(model.train)} training shard(s) but "
            f"TrainingInstanceCount is {instance_count}: ShardedByS3Key gives each host whole "
            "objects, so some hosts would get no data; set "
            f"TrainingInstanceCount to {instances.AUTO}, which sizes each job from its shards, "
            f"or to at most {len(model.train)}",
        )


# the eta a model's fixed count of trees was chosen at (recursive.TREES, shards.DIRECT_TREES)
_TREES_ETA = 0.1
_XGBOOST_ETA = "0.3"  # XGBoost's own, when the hyperparameters drop eta
_INF = float("inf")
_MOST_TREES = 2**31 - 1  # a bound for an eta so small the count would overflow


def fixed_trees(trees: int, hyperparameters: Mapping[str, str]) -> int:
    """The trees to train of a model that trains a fixed count (`trees`, chosen at eta 0.1)
    with these hyperparameters: as many times more as eta is smaller, since each tree then
    takes a shorter step, and no more than num_round, which caps every model.

    >>> fixed_trees(150, {"eta": "0.05", "num_round": "2000"}), fixed_trees(150, {"eta": "0.1",
    ...     "num_round": "100"})
    (300, 100)
    """
    # The container takes learning_rate for eta; of the two, the later key wins there.
    rates = [value for name, value in hyperparameters.items() if name in ("eta", "learning_rate")]
    eta = _number(rates[-1] if rates else _XGBOOST_ETA)
    ratio = trees * _TREES_ETA / eta if eta is not None and 0 < eta < _INF else trees
    scaled = round(min(ratio, _MOST_TREES))
    cap = _number(hyperparameters.get("num_round"))
    return max(1, min(scaled, int(cap))) if cap is not None and 1 <= cap < _INF else scaled


def _number(value: str | None) -> float | None:
    """A hyperparameter's number, or None: a value that is not one (m5flow.json passes
    strings on as they are) is left to the container to refuse, with its own reason."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def training_request(
    manifest: Manifest, model: ModelShards, settings: JobSettings
) -> dict[str, Any]:
    """Keyword arguments of `create_training_job` for one model of a run."""
    instance_count = training_instance_count(model, settings)
    distribution = "ShardedByS3Key" if instance_count > 1 else "FullyReplicated"

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
    if model.trees is not None:
        hyperparameters["num_round"] = str(fixed_trees(model.trees, hyperparameters))
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
            "InstanceCount": instance_count,
            "VolumeSizeInGB": settings.volume_gb,
            **_volume_kms(key, settings.training_instance_type),
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_training_seconds},
        "HyperParameters": hyperparameters,
        # Built-in XGBoost needs no network: SageMaker itself reads the channels and writes
        # the model. Hosts of one job still reach each other, encrypted.
        "EnableNetworkIsolation": True,
        "EnableInterContainerTrafficEncryption": instance_count > 1,
        "Tags": _tags(manifest, model, settings),
    }


def model_request(
    manifest: Manifest, model: ModelShards, artifact_uri: str, settings: JobSettings
) -> dict[str, Any]:
    """Keyword arguments of `create_model` for a trained model."""
    return {
        "ModelName": naming.job_name(manifest.run_id, model.name),
        "ExecutionRoleArn": settings.role_arn,
        "PrimaryContainer": {"Image": settings.image, "ModelDataUrl": artifact_uri},
        "EnableNetworkIsolation": True,  # its transform jobs, too, run with no network
        "Tags": _tags(manifest, model, settings),
    }


def transform_request(
    manifest: Manifest, model: ModelShards, settings: JobSettings, number: int = 0
) -> dict[str, Any]:
    """Keyword arguments of `create_transform_job` scoring a model's inference shards (of
    its pass `number`, for the recursive model: m5flow.recursive)."""
    own = naming.pass_name(model.name, number)
    name = naming.job_name(manifest.run_id, own)
    key = _kms(settings)
    return {
        "TransformJobName": name,
        "ModelName": naming.job_name(manifest.run_id, model.name),
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
        "TransformInput": {
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": _s3_prefix(
                        settings.bucket,
                        naming.channel_prefix(manifest.run_id, "inference", own),
                    ),
                }
            },
            "ContentType": CSV,
            "SplitType": "Line",
            "CompressionType": "None",
        },
        "TransformOutput": {
            "S3OutputPath": _s3_prefix(
                settings.bucket, naming.channel_prefix(manifest.run_id, "predictions", own)
            ),
            "Accept": CSV,
            "AssembleWith": "Line",
            **({"KmsKeyId": key} if key else {}),
        },
        "TransformResources": {
            "InstanceType": settings.transform_instance_type,
            "InstanceCount": 1,
            **_volume_kms(key, settings.transform_instance_type),
        },
        "DataProcessing": dict(TRANSFORM_DATA_PROCESSING),
        "Tags": _tags(manifest, model, settings),
    }


def one_line(failure_reason: str, logs: str = "") -> str:
    """A SageMaker FailureReason on one line.

    An algorithm's error carries the container's traceback between its kind and its
    message ("AlgorithmError: framework error: \\nTraceback ...\\nsagemaker_algorithm_toolkit
    .exceptions.UserError: Extraneous hyperparameter found: etaa"); the kind and the
    exception's line are what a person needs. Lines after that one (XGBoost's native stack
    trace, the message said again) add nothing.

    SageMaker keeps only a reason's first 1024 characters, so a long traceback loses its
    message; the line then says so and points to `logs`, where the job's log is.

    Example
    -------
    >>> one_line("AlgorithmError: framework error: \\nTraceback (most recent call last):\\n"
    ...          "  File ...\\n\\nExtraneous hyperparameter found: etaa")
    'AlgorithmError: Extraneous hyperparameter found: etaa'
    >>> one_line("AlgorithmError: framework error: \\nTraceback ...\\n"
    ...          "sagemaker_algorithm_toolkit.exceptions.UserError: Extraneous hyperparameter")
    'AlgorithmError: UserError: Extraneous hyperparameter'
    >>> cut = ("AlgorithmError: framework error: \\nTraceback (most recent call last):\\n"
    ...        + '  File "/miniconda3/lib/python3.7/site-packages/x.py", line 1, in f\\n' * 20)
    >>> one_line(cut[:1024], logs="its log")
    'AlgorithmError: SageMaker cut the message off (it keeps 1024 characters); see its log'
    >>> one_line("ClientError: No S3 objects found under S3 URL")
    'ClientError: No S3 objects found under S3 URL'
    """
    lines = [line.rstrip() for line in failure_reason.splitlines() if line.strip()]
    if len(lines) <= 1:
        return failure_reason.strip()
    kind = re.match(r"\w*Error(?=:)", lines[0])
    said = f"{kind[0]}: " if kind else ""
    found = _exception_lines(lines)
    final = found[-1] if found else len(lines) - 1
    if len(failure_reason) >= FAILURE_REASON_CHARS and found:
        # Cut: the last exception's line is whole only if more than chaining text follows it.
        complete = [i for i in found if i is not None and i + 1 < len(lines)]
        # (the chaining text itself may be cut short: "During handling")
        if final is None or final not in complete or _chaining(lines[final + 1]):
            message = f"SageMaker cut the message off (it keeps {FAILURE_REASON_CHARS} characters)"
            if complete:
                message += f"; its traceback began with {_unqualified(lines[complete[0]])}"
            message += f"; see {logs}" if logs else ""
            return said + message
    return said + _unqualified(lines[final if final is not None else -1])


def _chaining(line: str) -> bool:
    """Whether `line` is the text between chained tracebacks, or the start of it."""
    return any(line.startswith(text) or text.startswith(line) for text in _CHAINED)


def _exception_lines(lines: list[str]) -> list[int | None]:
    """Where the exception line of each traceback in `lines` is (None: a traceback without
    one). Python indents a traceback's frames; its exception's line is the next unindented
    one."""
    found: list[int | None] = []
    for i, line in enumerate(lines):
        if line.startswith(_TRACEBACK):
            after = (k for k in range(i + 1, len(lines)) if not lines[k][0].isspace())
            first = next(after, None)
            found.append(None if first is None or lines[first].startswith(_TRACEBACK) else first)
    return found


def _unqualified(line: str) -> str:
    """An exception's line without its module path; a file name ("train.csv: ...") stays."""
    return re.sub(r"^(?:\w+\.)+(?=[A-Z]\w*(?:Error|Exception): )", "", line.strip())


def job_logs(kind: str, name: str) -> str:
    """Where a SageMaker job's container log is (CloudWatch Logs, one stream per instance).

    Example
    -------
    >>> job_logs("training", "shop-1-m7")
    'CloudWatch Logs group /aws/sagemaker/TrainingJobs, streams shop-1-m7/*'
    """
    return f"CloudWatch Logs group /aws/sagemaker/{kind.capitalize()}Jobs, streams {name}/*"
