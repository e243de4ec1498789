"""Fixtures shared by every test folder: a real moto server, and small generated datasets."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from m5flow import naming
from m5flow_local.synth import write_synthetic_m5

# moto's server logs every request at INFO; the tests' own output is what matters.
logging.getLogger("werkzeug").setLevel(logging.WARNING)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
REAL_M5 = SHARED / "m5-real"
EVENTS = REPO_ROOT / "events"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's real server on 127.0.0.1; boto3 finds it through AWS_ENDPOINT_URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        )
    }
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def bucket(moto_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh, versioned bucket per test, so tests never see each other's objects."""
    name = f"m5flow-test-{abs(hash(request.node.nodeid)) % 10**10}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture(scope="session")
def small_m5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 generated series in the M5 layout."""
    out = tmp_path_factory.mktemp("small_m5")
    write_synthetic_m5(out, 30, seed=7)
    return out


@pytest.fixture
def load_function(bucket: str):
    """Load a function of template.yaml, with the environment the template gives it."""
    from m5flow_local.router.runtime import LocalFunction
    from m5flow_local.router.template import load_stack

    stack = load_stack(
        {
            "DataBucket": bucket,
            "DataBucket.Arn": f"arn:aws:s3:::{bucket}",
            "SageMakerExecutionRole.Arn": "arn:aws:iam::123456789012:role/m5flow-test",
        }
    )

    def load(logical_id: str):
        return LocalFunction(stack.functions[logical_id], "us-east-1", "123456789012")

    return load


@pytest.fixture
def bus(moto_endpoint: str, request: pytest.FixtureRequest):
    """Capture the m5flow events of one dataset from moto's EventBridge (through SQS)."""
    import json

    suffix = abs(hash(request.node.nodeid)) % 10**10

    class Bus:
        def __init__(self) -> None:
            self.sqs = boto3.client("sqs")
            self.events = boto3.client("events")
            self.url = self.sqs.create_queue(QueueName=f"bus-{suffix}")["QueueUrl"]
            self.arn = self.sqs.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]

        def watch(self, dataset: str, field: str = "dataset") -> None:
            """Capture the events whose detail has `field` (the dataset, or e.g. the key) equal
            to `dataset`."""
            rule = f"watch-{suffix}-{naming.sanitize(dataset)}"
            pattern = {"source": ["m5flow"], "detail": {field: [dataset]}}
            self.events.put_rule(Name=rule, EventPattern=json.dumps(pattern))
            self.events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": self.arn}])

        def drain(self) -> list[dict]:
            received = []
            while True:
                batch = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10)
                messages = batch.get("Messages", [])
                if not messages:
                    return received
                for message in messages:
                    received.append(json.loads(message["Body"]))
                    self.sqs.delete_message(
                        QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"]
                    )

    return Bus()


@contextmanager
def killed_at_put_events(monkeypatch: pytest.MonkeyPatch, publisher: object) -> Iterator[None]:
    """Run the block as a step whose Lambda times out at its first PutEvents: the ledger
    record is written, the event never sent, and no except runs (SystemExit, as a timeout
    looks from inside). `publisher`: an EventPublisher, or the class for every one."""

    def killed(*_: object) -> None:
        raise SystemExit

    monkeypatch.setattr(publisher, "_put", killed)
    with pytest.raises(SystemExit):
        yield
    monkeypatch.undo()


def as_sent(detail_type: str, detail: dict) -> dict:
    """`detail` as EventPublisher sends it: with its `summary`."""
    from m5flow.notifications import summary

    return {**detail, "summary": summary(detail_type, detail)}


def sample_event(name: str, **replacements: str) -> dict:
    """Load events/<name>.json, replacing strings (bucket, key...) everywhere in it."""
    import json

    text = (EVENTS / f"{name}.json").read_text()
    for old, new in replacements.items():
        text = text.replace(old, new)
    return json.loads(text)
