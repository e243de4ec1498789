"""The sample events in events/ are shaped as AWS delivers them to a Lambda target of an
EventBridge rule, and each is routed by template.yaml to exactly the function meant for it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import pytest

from m5flow_local.router.patterns import matches
from m5flow_local.router.template import StackSpec, load_stack

EVENTS = Path(__file__).resolve().parents[2] / "events"
BUCKET = "m5flow-data-123456789012"
# Which function of template.yaml each sample is meant for.
SAMPLES = {
    "s3_object_created_raw.json": "ShardFunction",
    "s3_object_created_manifest.json": "StartTrainingFunction",
    "sagemaker_training_completed.json": "PublishModelFunction",
    "sagemaker_training_failed.json": "PublishModelFunction",
    "sagemaker_transform_completed.json": "AssembleForecastFunction",
    "sagemaker_transform_failed.json": "AssembleForecastFunction",
    "lambda_invocation_failure.json": "ReportFailureFunction",
    "m5flow_backtest_lost.json": "AssembleForecastFunction",
}
ENVELOPE = {"version", "id", "detail-type", "source", "account", "time", "region", "resources",
            "detail"}  # fmt: skip


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def test_every_sample_is_covered() -> None:
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_envelope(name: str) -> None:
    event = load(name)
    assert set(event) == ENVELOPE
    assert event["version"] == "0"
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", event["id"])
    assert re.fullmatch(r"\d{12}", event["account"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    assert event["region"] == "us-east-1"
    assert isinstance(event["resources"], list)
    assert all(arn.startswith("arn:aws:") for arn in event["resources"])
    assert isinstance(event["detail"], dict)


@pytest.fixture(scope="module")
def stack() -> StackSpec:
    """The rules of template.yaml itself, resolved for the samples' bucket."""
    return load_stack(
        {
            "DataBucket": BUCKET,
            "DataBucket.Arn": f"arn:aws:s3:::{BUCKET}",
            "SageMakerExecutionRole.Arn": "arn:aws:iam::123456789012:role/r",
            # The function whose failure the sample records, as CloudFormation names it.
            "ShardFunction.Arn": "arn:aws:lambda:us-east-1:123456789012:function:"
            "m5flow-ShardFunction-9QW2XK7LM4ZT",
        }
    )


@pytest.mark.parametrize(("name", "intended"), sorted(SAMPLES.items()))
def test_routed_by_exactly_its_rule(stack: StackSpec, name: str, intended: str) -> None:
    event = load(name)
    routed = [t for rule in stack.rules if matches(rule.pattern, event) for t in rule.targets]
    assert [t for t in routed if t in stack.functions] == [intended]


@pytest.mark.parametrize("name", [n for n in sorted(SAMPLES) if n.startswith("s3_")])
def test_s3_detail(name: str) -> None:
    event = load(name)
    detail = event["detail"]
    assert event["resources"] == [f"arn:aws:s3:::{detail['bucket']['name']}"]
    obj = detail["object"]
    assert {"key", "size", "etag", "version-id", "sequencer"} <= set(obj)  # a versioned bucket
    # S3 URL-encodes the key (spaces as "+", "/" kept); these keys read the same either way.
    assert quote_plus(unquote_plus(obj["key"]), safe="/") == obj["key"]
    assert re.fullmatch(r"[0-9a-f]{32}", obj["etag"])  # single-part upload: an MD5, no quotes
    assert re.fullmatch(r"[0-9A-F]{18}", obj["sequencer"])
    assert detail["reason"] == "PutObject"
    assert {"version", "request-id", "requester", "source-ip-address"} <= set(detail)


def _times(node: Any) -> list[tuple[str, Any]]:
    """Every ``...Time`` field in ``node``, nested ones included."""
    if isinstance(node, list):
        return [pair for item in node for pair in _times(item)]
    if not isinstance(node, dict):
        return []
    own = [(key, value) for key, value in node.items() if key.endswith("Time")]
    return own + [pair for value in node.values() for pair in _times(value)]


@pytest.mark.parametrize("name", [n for n in sorted(SAMPLES) if n.startswith("sagemaker_")])
def test_sagemaker_detail(name: str) -> None:
    event = load(name)
    detail = event["detail"]
    kind = "Training" if "training" in name else "Transform"
    job = detail[f"{kind}JobName"]
    assert event["resources"] == [detail[f"{kind}JobArn"]]
    assert detail[f"{kind}JobArn"].endswith(f":{kind.lower()}-job/{job}")
    failed = name.endswith("_failed.json")
    assert detail[f"{kind}JobStatus"] == ("Failed" if failed else "Completed")
    assert ("FailureReason" in detail) is failed
    assert len(detail.get("FailureReason", "")) <= 1024  # the API's limit
    if kind == "Training":
        assert ("ModelArtifacts" in detail) is not failed
        assert detail["SecondaryStatus"] == detail["TrainingJobStatus"]
    times = _times(detail)
    assert len(times) >= 3
    for key, value in times:
        assert isinstance(value, int) and not isinstance(value, bool), (key, value)
        assert 1_500_000_000_000 < value < 2_500_000_000_000, (key, value)  # epoch milliseconds


def test_m5flow_detail_is_what_the_publisher_sends() -> None:
    """m5flow's own events: PutEvents' envelope (no resources), and the summary the
    publisher adds to every detail."""
    from m5flow.notifications import summary

    event = load("m5flow_backtest_lost.json")
    detail = dict(event["detail"])
    assert event["source"] == "m5flow" and event["resources"] == []
    assert detail.pop("summary") == summary(event["detail-type"], detail)
    assert detail["manifest"] == f"s3://{BUCKET}/runs/{detail['run_id']}/manifest.json"


def test_another_stack_s_lost_backtest_is_not_routed_here(stack: StackSpec) -> None:
    """m5flow events are account-wide: a second stack's runs live in its own bucket."""
    event = load("m5flow_backtest_lost.json")
    event["detail"]["manifest"] = event["detail"]["manifest"].replace(BUCKET, "another-bucket")
    assert not [t for rule in stack.rules if matches(rule.pattern, event) for t in rule.targets
                if t in stack.functions]  # fmt: skip
