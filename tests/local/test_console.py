"""The local cloud's console: one readable line per event (`m5flow_local.cloud.describe`)."""

from __future__ import annotations

from m5flow_local.cloud import describe


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
