"""The resources of the local SageMaker: training jobs, models and transform jobs.

Each record keeps its request as given and its mutable state, and renders its
Describe response (timestamps in epoch seconds) the way SageMaker shows it, with
the defaults SageMaker fills in.  The helpers here carry AWS's exact wording for
the constraints of names and tags (every one a request breaks, in one message) and the
1024-character limit of ``FailureReason``.
"""

from __future__ import annotations

import queue
import re
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from m5flow_local.sagemaker.exceptions import ValidationError
from m5flow_local.sagemaker.shapes import shape_violations

JOB_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
MODEL_NAME_PATTERN = r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?"
DEFAULT_MAX_RUNTIME = 86400
FAILURE_REASON_MAX = 1024
TERMINAL = ("Completed", "Failed", "Stopped")


def _violation(value: Any, where: str, constraint: str) -> str:
    return f"Value '{value}' at '{where}' failed to satisfy constraint: Member must {constraint}"


def name_violations(value: Any, field_name: str, pattern: str, max_len: int = 63) -> list[str]:
    """What is wrong with a resource name, in AWS's words (see `check_request`)."""
    if not isinstance(value, str):
        return [_violation(value, field_name, f"satisfy regular expression pattern: {pattern}")]
    violations = []
    if not re.fullmatch(pattern.lstrip("^"), value):
        violations.append(
            _violation(value, field_name, f"satisfy regular expression pattern: {pattern}")
        )
    if len(value) > max_len:
        violations.append(
            _violation(value, field_name, f"have length less than or equal to {max_len}")
        )
    return violations


def check_request(*violations: list[str]) -> None:
    """Refuse a request with every constraint it breaks, as AWS's front end does.

    Raises
    ------
    ValidationError
        ``2 validation errors detected: Value 'x_y' at 'trainingJobName' failed to satisfy
        constraint: Member must satisfy regular expression pattern: <pattern>; Value ...``
    """
    found = [violation for group in violations for violation in group]
    if found:
        errors = "error" if len(found) == 1 else "errors"
        raise ValidationError(f"{len(found)} validation {errors} detected: {'; '.join(found)}")


def clip_reason(reason: str) -> str:
    """Fit a FailureReason into AWS's 1024 characters as AWS does: its first 1024.

    The built-in algorithm's reason is "AlgorithmError: framework error: " and a traceback
    with the message last, so a long traceback loses the message: real reasons quoted in
    aws/amazon-sagemaker-examples#1740 and #4555 stop mid-path. m5flow must cope with that
    (`m5flow.jobs.one_line`), so the local reason is cut the same way.
    """
    return reason[:FAILURE_REASON_MAX]


TAG_PATTERN = r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)"
_TAG_SYMBOLS = frozenset("_.:/=+-@")
_MAX_TAGS = 50


def check_name_and_tags(
    operation: str, params: Mapping[str, Any], name_key: str, pattern: str
) -> Any:
    """Validate a Create* request (`operation`, e.g. ``CreateTrainingJob``): its name
    (`name_key`, e.g. ``TrainingJobName``), ``Tags`` and the API model's other limits
    together, as SageMaker does (one message naming every violation); return the name."""
    name = params.get(name_key)
    field_name = name_key[0].lower() + name_key[1:]
    check_request(
        name_violations(name, field_name, pattern),
        tag_violations(params.get("Tags")),
        shape_violations(operation, dict(params)),
    )
    return name


def tag_violations(tags: Any) -> list[str]:
    """What is wrong with a Create* request's ``Tags``, in AWS's words, as SageMaker checks
    them: keys 1-128 and values 0-256 characters of letters, spaces, numbers and
    ``_.:/=+-@``; at most 50 (see `check_request`)."""
    tags = tags or []
    if len(tags) > _MAX_TAGS:
        return [_violation(tags, "tags", f"have length less than or equal to {_MAX_TAGS}")]
    violations = []
    for number, tag in enumerate(tags, start=1):
        for part, low, high in (("Key", 1, 128), ("Value", 0, 256)):
            text = tag.get(part, "")
            where = f"tags.{number}.member.{part.lower()}"
            allowed = all(
                unicodedata.category(char)[0] in "LZN" or char in _TAG_SYMBOLS for char in text
            )
            if not allowed:
                violations.append(
                    _violation(text, where, f"satisfy regular expression pattern: {TAG_PATTERN}")
                )
            if not low <= len(text) <= high:
                bound = (
                    "greater than or equal to 1"
                    if len(text) < low
                    else f"less than or equal to {high}"
                )
                violations.append(_violation(text, where, f"have length {bound}"))
    return violations


def tags_map(tags: list[dict[str, str]] | None) -> dict[str, str]:
    """Tags as EventBridge shows them: a key -> value map."""
    return {t["Key"]: t["Value"] for t in tags or []}


def _channel_with_defaults(channel: dict[str, Any]) -> dict[str, Any]:
    """A channel as DescribeTrainingJob shows it, with the defaults SageMaker fills in."""
    out = {"CompressionType": "None", "RecordWrapperType": "None", **channel}
    source = out.get("DataSource", {})
    if "S3DataSource" in source:
        out["DataSource"] = {
            **source,
            "S3DataSource": {"S3DataDistributionType": "FullyReplicated", **source["S3DataSource"]},
        }
    return out


@dataclass
class TrainingJob:
    """A training job's request and its mutable state."""

    name: str
    arn: str
    request: dict[str, Any]
    creation_time: float
    status: str = "InProgress"
    secondary_status: str = "Starting"
    failure_reason: str | None = None
    last_modified: float = 0.0
    start_time: float | None = None
    end_time: float | None = None
    # Seconds it waited for this machine's memory (`capacity`): on SageMaker a job waits for
    # instances before its TrainingStartTime, unbilled, so they are not training time.
    waited: float = 0.0
    transitions: list[dict[str, Any]] = field(default_factory=list)
    model_artifacts: str | None = None
    final_metrics: list[dict[str, Any]] = field(default_factory=list)
    # Stop requests and host process exits reach the job thread here, in order.
    control: queue.Queue[tuple[Any, ...]] = field(default_factory=queue.Queue)
    stop_reason: str | None = None
    thread: threading.Thread | None = None

    def transition(self, secondary: str, message: str, now: float) -> None:
        """Record a secondary status change, closing the previous one."""
        if self.transitions and "EndTime" not in self.transitions[-1]:
            self.transitions[-1]["EndTime"] = now
        entry: dict[str, Any] = {"Status": secondary, "StartTime": now, "StatusMessage": message}
        if secondary in ("Completed", "Failed", "Stopped", "MaxRuntimeExceeded"):
            entry["EndTime"] = now
        self.transitions.append(entry)
        self.secondary_status = secondary
        self.last_modified = now

    def describe(self) -> dict[str, Any]:
        """The DescribeTrainingJob response (timestamps in epoch seconds)."""
        req = self.request
        out: dict[str, Any] = {"TrainingJobName": self.name, "TrainingJobArn": self.arn}
        if self.model_artifacts is not None:
            out["ModelArtifacts"] = {"S3ModelArtifacts": self.model_artifacts}
        out["TrainingJobStatus"] = self.status
        out["SecondaryStatus"] = self.secondary_status
        if self.status == "Failed" and self.failure_reason:
            out["FailureReason"] = self.failure_reason
        for key in ("HyperParameters", "AlgorithmSpecification", "RoleArn"):
            if key in req:
                out[key] = req[key]
        if "InputDataConfig" in req:
            out["InputDataConfig"] = [_channel_with_defaults(c) for c in req["InputDataConfig"]]
        out["OutputDataConfig"] = {"CompressionType": "GZIP", **req["OutputDataConfig"]}
        for key in ("ResourceConfig", "VpcConfig"):
            if key in req:
                out[key] = req[key]
        out["StoppingCondition"] = req.get("StoppingCondition") or {
            "MaxRuntimeInSeconds": DEFAULT_MAX_RUNTIME
        }
        out["CreationTime"] = self.creation_time
        if self.start_time is not None:
            out["TrainingStartTime"] = self.start_time
        if self.end_time is not None:
            out["TrainingEndTime"] = self.end_time
        out["LastModifiedTime"] = self.last_modified
        out["SecondaryStatusTransitions"] = [dict(t) for t in self.transitions]
        if self.final_metrics:
            out["FinalMetricDataList"] = [dict(m) for m in self.final_metrics]
        for key in (
            "EnableNetworkIsolation",
            "EnableInterContainerTrafficEncryption",
            "EnableManagedSpotTraining",
        ):
            out[key] = bool(req.get(key, False))
        if self.start_time is not None and self.end_time is not None:
            seconds = max(1, round(self.end_time - self.start_time - self.waited))
            out["TrainingTimeInSeconds"] = seconds
            out["BillableTimeInSeconds"] = seconds
        for key in ("CheckpointConfig", "Environment", "ExperimentConfig", "RetryStrategy"):
            if key in req:
                out[key] = req[key]
        return out

    def summary(self) -> dict[str, Any]:
        """The ListTrainingJobs entry."""
        out: dict[str, Any] = {
            "TrainingJobName": self.name,
            "TrainingJobArn": self.arn,
            "CreationTime": self.creation_time,
        }
        if self.end_time is not None:
            out["TrainingEndTime"] = self.end_time
        out["LastModifiedTime"] = self.last_modified
        out["TrainingJobStatus"] = self.status
        out["SecondaryStatus"] = self.secondary_status
        return out


@dataclass
class Model:
    """A model: where its artifact is and which container serves it."""

    name: str
    arn: str
    request: dict[str, Any]
    creation_time: float

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ModelName": self.name}
        for key in (
            "PrimaryContainer",
            "Containers",
            "InferenceExecutionConfig",
            "ExecutionRoleArn",
            "VpcConfig",
        ):
            if key in self.request:
                out[key] = self.request[key]
        out["CreationTime"] = self.creation_time
        out["ModelArn"] = self.arn
        out["EnableNetworkIsolation"] = bool(self.request.get("EnableNetworkIsolation", False))
        return out

    def summary(self) -> dict[str, Any]:
        """The ListModels entry."""
        return {"ModelName": self.name, "ModelArn": self.arn, "CreationTime": self.creation_time}

    def container(self) -> dict[str, Any]:
        """The container serving the model: the primary one, or the first of ``Containers``."""
        if "PrimaryContainer" in self.request:
            return self.request["PrimaryContainer"]
        return (self.request.get("Containers") or [{}])[0]


@dataclass
class TransformJob:
    """A batch transform job's request and its mutable state."""

    name: str
    arn: str
    request: dict[str, Any]
    creation_time: float
    status: str = "InProgress"
    failure_reason: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def last_modified(self) -> float:
        """A transform changes state when created, started and finished; the latest of these."""
        return self.end_time or self.start_time or self.creation_time

    def summary(self) -> dict[str, Any]:
        """The ListTransformJobs entry."""
        out: dict[str, Any] = {
            "TransformJobName": self.name,
            "TransformJobArn": self.arn,
            "CreationTime": self.creation_time,
        }
        if self.end_time is not None:
            out["TransformEndTime"] = self.end_time
        out["LastModifiedTime"] = self.last_modified
        out["TransformJobStatus"] = self.status
        if self.status == "Failed" and self.failure_reason:
            out["FailureReason"] = self.failure_reason
        return out

    def describe(self) -> dict[str, Any]:
        """The DescribeTransformJob response (timestamps in epoch seconds)."""
        req = self.request
        out: dict[str, Any] = {
            "TransformJobName": self.name,
            "TransformJobArn": self.arn,
            "TransformJobStatus": self.status,
        }
        if self.status == "Failed" and self.failure_reason:
            out["FailureReason"] = self.failure_reason
        out["ModelName"] = req["ModelName"]
        for key in (
            "MaxConcurrentTransforms",
            "ModelClientConfig",
            "MaxPayloadInMB",
            "BatchStrategy",
            "Environment",
        ):
            if key in req:
                out[key] = req[key]
        out["TransformInput"] = {
            "CompressionType": "None",
            "SplitType": "None",
            **req["TransformInput"],
        }
        out["TransformOutput"] = dict(req["TransformOutput"])
        out["TransformResources"] = req["TransformResources"]
        out["CreationTime"] = self.creation_time
        if self.start_time is not None:
            out["TransformStartTime"] = self.start_time
        if self.end_time is not None:
            out["TransformEndTime"] = self.end_time
        if "DataProcessing" in req:
            out["DataProcessing"] = {
                "InputFilter": "$",
                "OutputFilter": "$",
                "JoinSource": "None",
                **req["DataProcessing"],
            }
        if "ExperimentConfig" in req:
            out["ExperimentConfig"] = req["ExperimentConfig"]
        return out
