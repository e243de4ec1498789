"""The whole flow, as a user runs it: `m5flow local run` on a small generated dataset."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m5flow.schema import INPUT_FILES, SALES_FILE


def _local_run(
    data: Path, out: Path, timeout: float = 600, *more: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "m5flow_local.cli", "local", "run", "--data", str(data),
         "--out", str(out), *more],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )  # fmt: skip


def test_local_run_ends_with_a_forecast_for_every_series(small_m5, tmp_path):
    # A relative --workdir once reached the training hosts as is, and they run elsewhere.
    result = _local_run(small_m5, tmp_path / "out", 600, "--workdir", "work", cwd=tmp_path)

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("forecast ready in ")
    assert "(and metrics.json and report.html beside it)" in last  # the report is there too
    assert '"level":"INFO"' not in result.stdout  # LogLevel=WARNING: events, not INFO logs
    submission = pd.read_csv(tmp_path / "out" / "submission.csv")
    ids = pd.read_csv(small_m5 / SALES_FILE, usecols=["id"])["id"]
    assert list(submission["id"]) == list(ids)
    assert list(submission.columns) == ["id", *(f"F{h}" for h in range(1, 29))]
    values = submission.drop(columns="id").to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    # A trained model, not a constant: forecasts differ between series.
    assert submission.drop(columns="id").sum(axis=1).nunique() > 10
    # No truth was uploaded, so the run scored its backtest of the last 28 sales days.
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["scored_on"] == "backtest" and metrics["wrmsse"] is None
    assert 0 < metrics["backtest_wrmsse"]["wrmsse"] < 2
    assert metrics["backtest_days"] == "d_1914..d_1941"
    report = (tmp_path / "out" / "report.html").read_text()
    assert "backtest WRMSSE" in report
    # The items whose backtest forecast cost it most, each with the score without it.
    costly = metrics["backtest_wrmsse"]["costliest_items"]
    assert (
        1 <= len(costly) <= 3
        and costly[0]["series"] == ids.str.startswith(costly[0]["item"] + "_").sum()
    )
    assert "Where the error is" in report and f'aria-label="{costly[0]["item"]}"' in report
    assert f"WRMSSE without it {costly[0]['wrmsse_without']:.3f}" in report
    # The default's models: four direct, and the recursive one's five passes, each a
    # transform, and the direct models' backtest twins
    assert metrics["models"] == [
        "h7", "h14", "h21", "h28", "r1", "h7-bt", "h14-bt", "h21-bt", "h28-bt"
    ]  # fmt: skip
    assert "r1 (days 1-28, recursive: 5 passes)" in report
    assert "h7-bt (days 1-7 of the backtest)" in report
    assert "backtest twins (h7-bt, h14-bt, h21-bt, h28-bt: trained as" in metrics["backtest_note"]
    assert "optimistic" not in report  # the twins' backtest is honest
    assert "the mean of r1&#x27;s and h7, h14, h21, h28&#x27;s" in report
    assert metrics["forecast_is"] == "the mean of r1's and h7, h14, h21, h28's"
    assert "model r1 trained; pass 1 of 5 of its recursive forecast" in result.stdout
    assert "model r1, pass 5 of 5" in result.stdout
    # Progress was visible: every stage's event was printed as it happened.
    for stage in (
        "Object Created",
        "Run Started",
        "Training Started",
        "Training Job State Change",
        "Transform Started",
        "Transform Job State Change",
        "Forecast Ready",
    ):
        assert stage in result.stdout, stage
    # Each of m5flow's events as its summary (the e-mail's text), every field found.
    said = [line for line in result.stdout.splitlines() if " event  m5flow | " in line]
    assert len(said) >= 4 and not [line for line in said if "None" in line]
    assert re.search(r"series is ready, backtest WRMSSE \d\.\d{4} of h7-bt, h14-bt", said[-1])


def test_local_run_applies_the_dataset_settings_beside_the_inputs(small_m5, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in INPUT_FILES:
        (data / name).write_bytes((small_m5 / name).read_bytes())
    settings = {"min_lags": [28], "recursive_passes": 0, "hyperparameters": {"num_round": 25}}
    (data / "m5flow.json").write_text(json.dumps(settings))
    # And one item not yet on the shelf in its store: never sold, never priced.
    sales = pd.read_csv(data / SALES_FILE)
    unlaunched = sales.iloc[0]
    sales.iloc[0, 6:] = 0
    sales.to_csv(data / SALES_FILE, index=False)
    prices = pd.read_csv(data / "sell_prices.csv")
    mine = (prices["store_id"] == unlaunched["store_id"]) & (
        prices["item_id"] == unlaunched["item_id"]
    )
    prices[~mine].to_csv(data / "sell_prices.csv", index=False)

    result = _local_run(data, tmp_path / "out")

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "upload" in result.stdout and "m5flow.json" in result.stdout
    # The console says what the settings changed and what was let through.
    (started,) = [line for line in result.stdout.splitlines() if "m5flow | Run Started" in line]
    assert (
        "model(s) h28, h28-bt to train; " in started
        and "1 series never sold and has no price" in started
    )
    assert started.endswith("; hyperparameters from m5flow.json: num_round=25")
    report = (tmp_path / "out" / "report.html").read_text()
    assert "h28 (days 1-28)" in report and "h7 " not in report
    assert "num_round=25" in report
    assert "forecast 0: never sold" in report and "1 series never sold and has no price" in report
    submission = pd.read_csv(tmp_path / "out" / "submission.csv").set_index("id")
    assert (submission.loc[unlaunched["id"]] == 0).all()
    assert submission.drop(index=unlaunched["id"]).to_numpy().sum() > 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["never_sold"] == {"series": 1, "ids": [unlaunched["id"]]}


def test_local_run_exits_non_zero_with_the_reason_on_rejected_input(small_m5, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in INPUT_FILES:
        (data / name).write_bytes((small_m5 / name).read_bytes())
    calendar = pd.read_csv(data / "calendar.csv")
    calendar.iloc[:1950].to_csv(data / "calendar.csv", index=False)

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.json").write_text("{}")  # an earlier run's

    result = _local_run(data, tmp_path / "out")

    assert result.returncode != 0
    reason = result.stderr.strip().splitlines()[-1]  # last, where `tail` finds it
    assert reason.startswith("FAILED (Input Rejected): calendar.csv"), result.stderr[-2000:]
    assert "d_1951" in reason
    (said,) = [line for line in result.stdout.splitlines() if " m5flow | " in line]
    assert said.endswith(": its upload was refused, 1 problem(s): " + reason.split(": ", 1)[1])
    assert "metrics.json in " in result.stderr and "an earlier run's" in result.stderr
    assert "job files and logs are kept" not in result.stderr  # no job ran: nothing to keep
    # The functions' own logs reach the console as Powertools JSON, as in CloudWatch.
    logs = result.stdout + result.stderr
    assert '"message":"input rejected"' in logs and "\ninput rejected\n" not in logs
    assert not (tmp_path / "out" / "submission.csv").exists()
    # An --out this run made, and put nothing in, is not left behind, nor its new parents.
    again = _local_run(data, tmp_path / "new" / "out")
    assert again.returncode != 0 and not (tmp_path / "new").exists()


def test_local_run_refuses_parameters_the_stack_would_refuse(small_m5, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "m5flow_local.cli", "local", "run", "--data", str(small_m5),
         "--out", str(tmp_path / "out"), "--parameter", "NumRounds=50",
         "--parameter", "ModelMinLags=7,14", "--parameter", "TrainingInstanceCount=0",
         "--parameter", "RecursivePasses=2.5", "--parameter", "NumRound=0",
         "--parameter", "MaxTrainingSeconds=30", "--parameter", "RunRetentionDays=inf",
         "--parameter", "LogRetentionDays=nan"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "NumRounds: not a parameter of template.yaml" in result.stderr
    assert "ModelMinLags=7,14: must be increasing minimum lags" in result.stderr
    assert "TrainingInstanceCount=0: must be auto, or a whole number from 1 to 20" in result.stderr
    # a Number would have let it deploy, and the shard function fail at every start
    assert "RecursivePasses=2.5: must be a whole number of passes from 0 to 28" in result.stderr
    assert "NumRound=0: must be at least 1\n" in result.stderr  # not "within 1..inf"
    assert "MaxTrainingSeconds=30: must be at least 60 and at most 2419200" in result.stderr
    assert "RunRetentionDays=inf: must be a number" in result.stderr
    assert "LogRetentionDays=nan: must be a number" in result.stderr
    assert "local cloud up" not in result.stdout  # refused before anything started


def test_local_run_holds_its_jobs_to_the_quotas_given(small_m5, tmp_path):
    """`--quota` rehearses an account's service quota: none for training ends the run at
    its start-training step, in SageMaker's words (the runs whose jobs wait for a quota:
    tests/unit/test_handlers.py, tests/e2e/test_permissions.py). A quota of a type no job
    uses is said to limit nothing."""
    result = _local_run(small_m5, tmp_path / "out", 300,
                        "--quota", "ml.m5.xlarge for training job usage=0",
                        "--quota", "ml.c5.xlarge for transform job usage=1")  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert (
        "note: --quota 'ml.c5.xlarge for transform job usage' limits nothing: the transform "
        "jobs run on ml.m5.xlarge (TransformInstanceType)"
    ) in result.stdout
    reason = result.stderr.strip().splitlines()[-1]
    assert reason.startswith("FAILED (Run Failed): SageMaker refused training job "), reason
    assert "'ml.m5.xlarge for training job usage' is 0 Instances" in reason
    assert "raise that quota in Service Quotas" in reason


def test_local_jobs_train_on_one_host_unless_told_otherwise():
    """On one machine more hosts add no memory (README: Local mode); `auto` stays a choice."""
    from argparse import Namespace

    from m5flow_local.cli import _stack_parameters

    assert _stack_parameters(Namespace(parameter=[]))["TrainingInstanceCount"] == "1"
    told = _stack_parameters(Namespace(parameter=[("TrainingInstanceCount", "auto")]))
    assert told == {"LogLevel": "WARNING", "TrainingInstanceCount": "auto"}


@pytest.mark.parametrize(
    ("parameter", "reason"),
    [
        # CloudFormation's pattern lets these through; the functions then fail at every start
        ("Hyperparameters={eta: 0.2}", "the Hyperparameters parameter is not JSON"),
        ("ModelMinLags=14,7,28", "ModelMinLags=14,7,28: min_lags must be increasing: (14, 7, 28)"),
    ],
)
def test_local_run_refuses_parameters_the_functions_could_not_load(
    small_m5, tmp_path, parameter, reason
):
    result = subprocess.run(
        [sys.executable, "-m", "m5flow_local.cli", "local", "run", "--data", str(small_m5),
         "--out", str(tmp_path / "out"), "--parameter", parameter],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert reason in result.stderr
    assert "local cloud up" not in result.stdout


def test_a_stopped_local_run_stops_its_jobs_and_says_where_their_logs_are(small_m5, tmp_path):
    """`kill` or a closed terminal during training: exit 130, no XGBoost host left behind."""
    run = subprocess.Popen(
        [sys.executable, "-m", "m5flow_local.cli", "local", "run", "--data", str(small_m5),
         "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert run.stdout is not None
    for line in run.stdout:  # until a training job's hosts run
        if "XGBoost log " in line:
            break
    run.terminate()
    _, stderr = run.communicate(timeout=120)

    assert run.returncode == 130, stderr
    assert "interrupted" in stderr and str(tmp_path / "work") in stderr
    hosts = subprocess.run(["pgrep", "-f", str(tmp_path / "work")], capture_output=True)
    assert hosts.stdout == b""


def test_a_second_ctrl_c_during_the_shutdown_still_stops_every_host(tmp_path):
    """An impatient double Ctrl-C: the second lands while the first's shutdown runs, and
    used to end the command before the training hosts were killed (they ran on, orphaned).
    As a terminal sends it: to the whole foreground process group, while the hosts load."""
    import os
    import signal
    import time

    from m5flow_local.synth import write_synthetic_m5

    write_synthetic_m5(tmp_path / "data", 1500, seed=7)  # hosts busy for seconds, not ms
    run = subprocess.Popen(
        [sys.executable, "-m", "m5flow_local.cli", "local", "run", "--data",
         str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--workdir",
         str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert run.stdout is not None
    for line in run.stdout:
        if "XGBoost log " in line:
            break
    time.sleep(4)
    os.killpg(run.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(run.pid, signal.SIGINT)
    _, stderr = run.communicate(timeout=120)

    assert run.returncode == 130, stderr
    hosts = subprocess.run(["pgrep", "-f", str(tmp_path / "work")], capture_output=True)
    assert hosts.stdout == b"", "training hosts outlived the command"


def test_local_up_stops_on_sigint_even_as_a_background_job(tmp_path):
    """A shell starts `cmd &` with SIGINT ignored; `kill -INT` must stop it all the same."""
    import signal

    up = subprocess.Popen(
        [sys.executable, "-m", "m5flow_local.cli", "local", "up"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    assert up.stdout is not None
    for line in up.stdout:  # until it is up and listening for signals
        if "Ctrl-C stops" in line:
            break
    up.send_signal(signal.SIGINT)
    stdout, stderr = up.communicate(timeout=60)

    assert up.returncode == 0, stderr
    assert "stopped the local cloud" in stdout and "removed " in stdout
