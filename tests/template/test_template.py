"""template.yaml: it lints, and its rules route every event to exactly the right function."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from m5flow_local.router.patterns import matches
from m5flow_local.router.template import TEMPLATE_PATH, load_stack
from tests.conftest import sample_event

SAMPLE_BUCKET = "m5flow-data-123456789012"


def _tool(name: str) -> str:
    """A CLI from the tools venv that `make test` installs (SAM CLI, checkov)."""
    tools_bin = os.environ.get("M5FLOW_TOOLS_BIN")
    path = Path(tools_bin) / name if tools_bin else None
    if path is not None and path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} not found: run the suite with `make test`, which installs it"
    return found


SAMPLE_SHARD_FUNCTION = "m5flow-ShardFunction-9QW2XK7LM4ZT"  # in lambda_invocation_failure
PIPELINE_FUNCTIONS = (
    "ShardFunction", "StartTrainingFunction", "PublishModelFunction", "AssembleForecastFunction",
)  # fmt: skip


def _function_arn(logical_id: str) -> str:
    """As CloudFormation names a function of the stack `m5flow`."""
    name = SAMPLE_SHARD_FUNCTION.replace("ShardFunction", logical_id)
    return f"arn:aws:lambda:us-east-1:123456789012:function:{name}"


@pytest.fixture(scope="module")
def stack():
    return load_stack(
        {
            "DataBucket": SAMPLE_BUCKET,
            "DataBucket.Arn": f"arn:aws:s3:::{SAMPLE_BUCKET}",
            "SageMakerExecutionRole.Arn": "arn:aws:iam::123456789012:role/r",
            **{f"{f}.Arn": _function_arn(f) for f in PIPELINE_FUNCTIONS},
        }
    )


def _targets(stack, event) -> list[str]:
    return [t for rule in stack.rules if matches(rule.pattern, event) for t in rule.targets]


@pytest.mark.parametrize(
    ("sample", "replacements", "expected"),
    [
        ("s3_object_created_raw", {}, ["ShardFunction"]),
        (
            "s3_object_created_raw",
            {"sales_train_evaluation.csv": "calendar.csv"},
            ["ShardFunction"],
        ),
        (
            "s3_object_created_raw",
            {"sales_train_evaluation.csv": "sell_prices.csv"},
            ["ShardFunction"],
        ),
        # Every object under raw/ reaches the shard step, which ignores the truth and
        # refuses what it can never use (tests/unit/test_handlers.py).
        (
            "s3_object_created_raw",
            {"sales_train_evaluation.csv": "sales_test_evaluation.csv"},
            ["ShardFunction"],
        ),
        (
            "s3_object_created_raw",
            {"sales_train_evaluation.csv": "sales_train_validation.csv"},
            ["ShardFunction"],
        ),
        # Every object under raw/: a compressed or misnamed input is refused with its reason;
        # the settings file and other files are ignored there (they start nothing).
        (
            "s3_object_created_raw",
            {"sales_train_evaluation.csv": "calendar.csv.gz"},
            ["ShardFunction"],
        ),
        ("s3_object_created_raw", {"sales_train_evaluation.csv": "m5flow.json"}, ["ShardFunction"]),
        ("s3_object_created_raw", {"raw/demo/": "runs/demo/"}, []),
        ("s3_object_created_raw", {SAMPLE_BUCKET: "someone-elses-bucket"}, []),
        ("s3_object_created_manifest", {}, ["StartTrainingFunction"]),
        # Shards land under runs/ too, but only the manifest starts training.
        ("s3_object_created_manifest", {"manifest.json": "train/h28/CA_1_FOODS_1.parquet"}, []),
        ("sagemaker_training_completed", {}, ["PublishModelFunction"]),
        ("sagemaker_training_failed", {}, ["PublishModelFunction"]),
        ("sagemaker_training_completed", {'"Completed"': '"InProgress"'}, []),
        ("sagemaker_training_completed", {"m5flow-demo": "other-demo"}, []),
        ("sagemaker_transform_completed", {}, ["AssembleForecastFunction"]),
        ("sagemaker_transform_failed", {}, ["AssembleForecastFunction"]),
        # Job events are account-wide: another stack's jobs write to another bucket.
        ("sagemaker_training_completed", {SAMPLE_BUCKET: "someone-elses-bucket"}, []),
        ("sagemaker_transform_completed", {SAMPLE_BUCKET: "someone-elses-bucket"}, []),
        # A pipeline function failed for good: the record is kept and reported.
        ("lambda_invocation_failure", {}, ["FailureQueue", "ReportFailureFunction"]),
        # Another stack's function, or a function whose name merely starts like ours.
        ("lambda_invocation_failure", {"m5flow-ShardFunction": "other-ShardFunction"}, []),
        ("lambda_invocation_failure", {"9QW2XK7LM4ZT:": "9QW2XK7LM4ZTX:"}, []),
        ("lambda_invocation_failure", {"Result - Failure": "Result - Success"}, []),
    ],
)
def test_rules_route_each_event_to_one_function(stack, sample, replacements, expected):
    assert _targets(stack, sample_event(sample, **replacements)) == expected


@pytest.mark.parametrize(
    ("function", "trigger"),
    [
        ("ShardFunction", "s3_object_created_raw"),
        ("StartTrainingFunction", "s3_object_created_manifest"),
        ("PublishModelFunction", "sagemaker_training_completed"),
        ("AssembleForecastFunction", "sagemaker_transform_completed"),
    ],
)
@pytest.mark.parametrize("with_payload", [True, False])
def test_failure_rule_catches_every_pipeline_function_s_failures(
    stack, function, trigger, with_payload
):
    """A pipeline function's failure record reaches the queue and the reporter, also when
    Lambda left out the event it failed on (a record over 256 KB)."""
    record = sample_event("lambda_invocation_failure")
    record["detail"]["requestContext"]["functionArn"] = f"{_function_arn(function)}:$LATEST"
    if with_payload:
        record["detail"]["requestPayload"] = sample_event(trigger)
    else:
        del record["detail"]["requestPayload"]
    assert _targets(stack, record) == ["FailureQueue", "ReportFailureFunction"]


def test_the_reporter_s_own_failures_do_not_loop_back_to_it(stack):
    record = sample_event("lambda_invocation_failure")
    arn = _function_arn("ReportFailureFunction")
    record["detail"]["requestContext"]["functionArn"] = f"{arn}:$LATEST"
    assert _targets(stack, record) == []


def test_every_function_has_a_rule_and_its_code(stack):
    routed = {t for rule in stack.rules for t in rule.targets}
    # The one target that is not a function: the failure queue, FailureRule's dead-letter store.
    assert routed - set(stack.functions) == {"FailureQueue"}
    assert set(stack.functions) <= routed
    for spec in stack.functions.values():
        assert (spec.code_dir / "app.py").is_file()


def test_cfn_lint_passes():
    result = subprocess.run(["cfn-lint", str(TEMPLATE_PATH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_passes():
    result = subprocess.run(
        [
            _tool("sam"),
            "validate",
            "--lint",
            "--template",
            str(TEMPLATE_PATH),
            "--region",
            "us-east-1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
