"""Helpers for the local SageMaker tests: the local SageMaker on moto's server, and its events.

The tests talk to both only through ordinary boto3 clients.  moto's server and
the environment pointing boto3 at it come from the session fixture
``moto_endpoint`` (tests/conftest.py); each test module gets its own bucket and
local SageMaker (``local_cloud``).  This is a plain helper module, not a pytest
plugin, so test modules import from it freely.  Events are collected as they
are emitted and tests block on the one they need (a condition variable, never a
sleep loop).
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from m5flow_local.sagemaker import LocalSageMaker

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
TERMINAL = ("Completed", "Failed", "Stopped")
WAIT_SECONDS = 60


class EventLog:
    """Events emitted by the local SageMaker, with a blocking wait for a matching one."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def emit(self, event: dict[str, Any]) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def for_job(self, name: str) -> list[dict[str, Any]]:
        key = ("TrainingJobName", "TransformJobName")
        with self._cond:
            return [e for e in self.events if name in (e["detail"].get(k) for k in key)]

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT_SECONDS
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events if predicate(e)), None)

        with self._cond:
            event = self._cond.wait_for(found, timeout)
        if event is None:
            raise TimeoutError(f"no matching event within {timeout}s; got {self.events}")
        return event

    def wait_final(self, name: str, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        """The job's terminal event (Completed, Failed or Stopped)."""

        def is_final(e: dict[str, Any]) -> bool:
            d = e["detail"]
            status = d.get("TrainingJobStatus") or d.get("TransformJobStatus")
            return name in (d.get("TrainingJobName"), d.get("TransformJobName")) and (
                status in TERMINAL
            )

        return self.wait(is_final, timeout)


@dataclass
class LocalCloud:
    """Clients and collaborators a test needs."""

    sm: Any
    s3: Any
    events: EventLog
    workdir: Path
    bucket: str


def local_cloud(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LocalCloud]:
    """A local SageMaker and a fresh bucket on moto's server, for one test module.

    Test modules wrap this in a module-scoped ``cloud`` fixture that also requests
    ``moto_endpoint`` (tests/conftest.py), which points boto3 at moto's server.

    Every successful response the module's tests receive is also checked, as sent, against
    the operation's output shape in botocore's SageMaker model (`wire_violations`): botocore
    drops a member it does not know and does not check the types of those it keeps, so a
    misspelt or mistyped field would otherwise reach code as a silent None.
    """
    events = EventLog()
    workdir = tmp_path_factory.mktemp("sagemaker")
    local = LocalSageMaker(events.emit, workdir, region=REGION, account_id=ACCOUNT)
    url = local.start()
    bucket = "m5flow-" + request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=bucket)
    sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=url)
    violations: list[str] = []

    def check(http_response: Any, model: Any, **_: Any) -> None:
        if http_response.status_code == 200 and model.output_shape is not None:
            body = json.loads(http_response.content or b"{}")
            violations.extend(wire_violations(model.output_shape, body, model.name))

    sm.meta.events.register("after-call.sagemaker", check)
    try:
        yield LocalCloud(sm=sm, s3=s3, events=events, workdir=workdir, bucket=bucket)
    finally:
        local.stop()
    assert violations == [], "responses unlike SageMaker's model:\n" + "\n".join(violations)


_WIRE_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "blob": (str,), "boolean": (bool,), "integer": (int,), "long": (int,),
    "float": (int, float), "double": (int, float), "timestamp": (int, float),
}  # fmt: skip


def wire_violations(shape: Any, value: Any, where: str) -> list[str]:
    """How a JSON response body departs from a botocore output `shape`: members the shape
    lacks, values of the wrong JSON type or outside an enum. Not members it marks required:
    AWS leaves some out (a failed job's ModelArtifacts, as its own event example shows)."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object"]
        found = [f"{where}.{name}: not in the model" for name in value if name not in shape.members]
        for name, member in value.items():
            if name in shape.members:
                found += wire_violations(shape.members[name], member, f"{where}.{name}")
        return found
    if kind == "list":
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        return [v for i, item in enumerate(value)
                for v in wire_violations(shape.member, item, f"{where}[{i}]")]  # fmt: skip
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a map"]
        return [v for key, item in value.items()
                for v in wire_violations(shape.value, item, f"{where}[{key}]")]  # fmt: skip
    allowed = _WIRE_TYPES[kind]
    if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
        return [f"{where}: {value!r} is not a {kind}"]
    if getattr(shape, "enum", None) and value not in shape.enum:
        return [f"{where}: {value!r} is not one of {shape.enum}"]
    return []


def tweedie_data(rng: np.random.Generator, rows: int, features: int = 3) -> np.ndarray:
    """Label first, then small-integer features; counts that grow with feature 0."""
    x = rng.integers(0, 12, size=(rows, features)).astype(float)
    y = rng.poisson(0.3 + x[:, 0] / 4.0).astype(float)
    return np.column_stack([y, x])


def csv_bytes(table: np.ndarray) -> bytes:
    """Rows as headerless CSV, numbers written compactly (``3`` not ``3.0``)."""
    return "".join(",".join(f"{v:g}" for v in row) + "\n" for row in table).encode()


def parquet_bytes(table: np.ndarray) -> bytes:
    """The same table as Parquet, label in the first column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {f"c{i}": table[:, i] for i in range(table.shape[1])}
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def put(cloud: LocalCloud, key: str, body: bytes) -> str:
    cloud.s3.put_object(Bucket=cloud.bucket, Key=key, Body=body)
    return f"s3://{cloud.bucket}/{key}"


def training_request(
    cloud: LocalCloud,
    name: str,
    prefix: str,
    hyperparameters: dict[str, str],
    *,
    content_type: str = "text/csv",
    instances: int = 1,
    channels: tuple[str, ...] = ("train", "validation"),
    distribution: dict[str, str] | None = None,
    max_runtime: int = 600,
) -> dict[str, Any]:
    """A CreateTrainingJob request shaped like the pipeline's."""
    distribution = distribution or {}
    return {
        "TrainingJobName": name,
        "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "HyperParameters": hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "ContentType": content_type,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{cloud.bucket}/{prefix}/{channel}/",
                        "S3DataDistributionType": distribution.get(channel, "FullyReplicated"),
                    }
                },
            }
            for channel in channels
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{cloud.bucket}/{prefix}/model/"},
        "ResourceConfig": {
            "InstanceType": "ml.m5.large",
            "InstanceCount": instances,
            "VolumeSizeInGB": 5,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
    }


def load_model(cloud: LocalCloud, s3_uri: str) -> Any:
    """Download a model.tar.gz and load its ``xgboost-model`` with XGBoost."""
    import xgboost as xgb

    bucket, key = s3_uri[len("s3://") :].split("/", 1)
    body = cloud.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.getnames() == ["xgboost-model"]
        raw = tar.extractfile("xgboost-model")
        assert raw is not None
        booster = xgb.Booster()
        booster.load_model(bytearray(raw.read()))
    return booster
