"""The local cloud's console: one readable line per event (`m5flow_local.cloud.describe`)."""

from __future__ import annotations

import pytest

from m5flow_local.cloud import describe, said


def test_a_run_failed_line_says_the_reason_once() -> None:
    traceback = "AlgorithmError: framework error: \nTraceback ...\nUserError: bad"
    line = describe({
        "source": "m5flow",
        "detail-type": "Run Failed",
        "detail": {"run_id": "r", "dataset": "d", "stage": "training",
                   "reason": "training job j Failed: AlgorithmError: UserError: bad",
                   "failure_reason": traceback},
    })  # fmt: skip
    assert line.startswith("m5flow | Run Failed: {")
    assert "AlgorithmError: UserError: bad" in line and "Traceback" not in line


def test_a_sagemaker_line_names_the_job_its_states_and_its_reason() -> None:
    line = describe({
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Training Job State Change",
        "detail": {"TrainingJobName": "j", "TrainingJobStatus": "Failed",
                   "SecondaryStatus": "Failed", "FailureReason": "ClientError: no data"},
    })  # fmt: skip
    assert (
        line == "aws.sagemaker | SageMaker Training Job State Change: j Failed (Failed): "
        "ClientError: no data"
    )


@pytest.mark.parametrize(
    ("function", "result", "line"),
    [
        ("ShardFunction", {"status": "duplicate", "dataset": "d", "run_id": "d-1"},
         "these files already made run d-1: nothing to start"),
        ("ShardFunction", {"status": "started", "dataset": "d", "run_id": "d-1"},
         "started run d-1"),
        ("StartTrainingFunction", {"training_jobs": ["m5flow-d-1-h7", "m5flow-d-1-h28"]},
         "created training jobs m5flow-d-1-h7, m5flow-d-1-h28"),
        ("PublishModelFunction", {"transform_job": None},
         "created nothing (done before, or the run failed)"),
        ("AssembleForecastFunction", {"submission": None, "note": "h7 predicted; waiting for h28"},
         "h7 predicted; waiting for h28"),
        ("ReportFailureFunction", {"stage": "shard"}, '{"stage": "shard"}'),
    ],
)  # fmt: skip
def test_a_handler_result_is_said_in_words(function, result, line) -> None:
    """`{"submission": null}` read like an error where a sibling only does the work."""
    assert said(function, result) == line
