"""The local cloud's console: one readable line per event (`m5flow_local.cloud.describe`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from m5flow.notifications import summary
from m5flow_local.console import describe, said


def test_an_m5flow_line_is_its_summary_and_says_the_reason_once() -> None:
    traceback = "AlgorithmError: framework error: \nTraceback ...\nUserError: bad"
    detail = {"run_id": "r", "dataset": "d", "stage": "training",
              "reason": "training job j Failed: AlgorithmError: UserError: bad",
              "failure_reason": traceback}  # fmt: skip
    line = describe({"source": "m5flow", "detail-type": "Run Failed",
                     "detail": {**detail, "summary": summary("Run Failed", detail)}})  # fmt: skip
    assert line == (
        "m5flow | Run Failed: Run r of dataset d failed at training: training job j Failed: "
        "AlgorithmError: UserError: bad"
    )
    # Another sender's event (no summary) is shown whole.
    line = describe({"source": "m5flow", "detail-type": "Run Failed", "detail": detail})
    assert line.startswith('m5flow | Run Failed: {"run_id": "r"') and "Traceback" in line


def test_a_container_traceback_is_said_in_one_line() -> None:
    line = describe({
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Training Job State Change",
        "detail": {"TrainingJobName": "j", "TrainingJobStatus": "Failed",
                   "FailureReason": "AlgorithmError: framework error: \nTraceback (most recent "
                   "call last):\n  File x\nsagemaker_algorithm_toolkit.exceptions.UserError: "
                   "Hyperparameter max_depth: -1 is not in [0, +inf)\n"},
    })  # fmt: skip
    assert line.endswith(": j Failed: AlgorithmError: UserError: Hyperparameter max_depth: -1 "
                         "is not in [0, +inf)")  # fmt: skip
    assert "\n" not in line


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
        ("ShardFunction", {"status": "refused", "dataset": "d", "run_id": "d-1"},
         "refused before (run d-1): not announced again"),
        ("ShardFunction", {"status": "rejected", "dataset": "d", "run_id": None},
         "d: refused (Input Rejected)"),
        ("ShardFunction", {"status": "rejected", "dataset": None, "run_id": None},
         "refused (Input Rejected)"),  # a file outside any dataset's folder
        ("ShardFunction", {"status": "ignored", "dataset": "d", "run_id": None},
         "starts nothing: not one of the three inputs (m5flow.json and "
         "sales_test_evaluation.csv are read with them)"),
        ("StartTrainingFunction", {"training_jobs": ["m5flow-d-1-h7", "m5flow-d-1-h28"]},
         "created training jobs m5flow-d-1-h7, m5flow-d-1-h28"),
        ("PublishModelFunction", {"transform_job": None},
         "created no transform job (an earlier delivery did, or the run has failed)"),
        ("AssembleForecastFunction", {"submission": None, "note": "h7 predicted; waiting for h28"},
         "h7 predicted; waiting for h28"),
        ("ReportFailureFunction", {"stage": "shard"}, '{"stage": "shard"}'),
    ],
)  # fmt: skip
def test_a_handler_result_is_said_in_words(function, result, line) -> None:
    """`{"submission": null}` read like an error where a sibling only does the work."""
    assert said(function, result) == line


def test_the_console_imports_no_step_module_before_the_functions_do() -> None:
    """A step module's Powertools child logger takes its parent from the service name at
    import: imported by the console first, before a function set it, its ERROR lines came
    out bare ("training did not complete") instead of as the function's JSON."""
    code = (
        "import sys, m5flow_local.cli, m5flow_local.cloud; "
        "print(sorted(m for m in sys.modules if m.startswith('m5flow.stages')))"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
    assert imported == "[]"
