"""The command line a user meets first: `m5flow synth`, `shard` and `score`."""

from __future__ import annotations

import fcntl
import gzip
import json
import shutil
import subprocess
import sys

import pytest

from m5flow.schema import INPUT_FILES
from tests.conftest import REAL_M5


def _m5flow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "m5flow_local.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_score_reproduces_the_10th_place_yardstick():
    result = _m5flow(
        "score",
        str(REAL_M5 / "sales_test_evaluation.csv"),
        str(REAL_M5 / "reference" / "submission_0010_DenisKokosinskiy_STU.csv"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "WRMSSE  0.9054"


def test_score_refuses_a_submission_missing_series(tmp_path):
    lines = (REAL_M5 / "reference" / "submission_0046_YK.csv").read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join(lines[:-3]) + "\n")
    result = _m5flow(
        "score", str(REAL_M5 / "sales_test_evaluation.csv"), str(tmp_path / "short.csv")
    )
    assert result.returncode == 2
    assert (
        "cannot score: short.csv: no row for 3 series: FOODS_3_377_WI_3_evaluation, "
        "FOODS_3_586_WI_3_evaluation, FOODS_3_702_WI_3_evaluation\n"
    ) in result.stderr, result.stderr


def test_synth_then_shard_on_disk(tmp_path):
    assert (
        _m5flow(
            "synth", "--series", "12", "--out", str(tmp_path / "data"), "--seed", "3"
        ).returncode
        == 0
    )
    for name in INPUT_FILES:
        assert (tmp_path / "data" / name).stat().st_size > 0
    result = _m5flow("shard", str(tmp_path / "data"), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "manifest" in result.stdout
    assert list((tmp_path / "out" / "runs").glob("*/manifest.json"))


def test_shard_reads_the_dataset_settings_and_the_command_line_wins(tmp_path):
    data = tmp_path / "data"
    assert _m5flow("synth", "--series", "12", "--out", str(data), "--seed", "4").returncode == 0
    settings = '{"min_lags": [28], "recursive_passes": 0, "hyperparameters": {"eta": 0.2}}'
    (data / "m5flow.json").write_text(settings)

    def manifest_of(*extra: str) -> dict:
        out = tmp_path / f"out{len(extra)}"
        result = _m5flow("shard", str(data), str(out), *extra)
        assert result.returncode == 0, result.stderr
        (path,) = (out / "runs").glob("*/manifest.json")
        return json.loads(path.read_text())

    from_file = manifest_of()
    assert [m["name"] for m in from_file["models"]] == ["h28", "h28-bt"]
    assert from_file["hyperparameters"] == {"eta": "0.2"}
    assert "m5flow.json" in from_file["inputs"]
    two = manifest_of("--min-lags", "14,28")["models"]
    assert [m["name"] for m in two] == ["h14", "h28", "h14-bt", "h28-bt"]
    both = manifest_of("--min-lags", "28", "--recursive-passes", "2")["models"]
    assert [(m["name"], m["passes"]) for m in both] == [("h28", 0), ("r1", 2), ("h28-bt", 0)]
    twinned = manifest_of("--min-lags", "28", "--direct-trees", "40", "--format", "csv")
    assert [(m["name"], m["trees"], m["backtest"]) for m in twinned["models"]] == [
        ("h28", 40, False), ("h28-bt", 40, True)
    ]  # fmt: skip


def test_shard_checks_min_lags_before_reading(tmp_path):
    result = _m5flow("shard", str(tmp_path / "absent"), str(tmp_path / "out"), "--min-lags", "7,14")
    assert result.returncode == 2
    assert "--min-lags: '7,14': min_lags must end at the horizon, 28" in result.stderr
    passes = _m5flow("shard", str(tmp_path / "absent"), str(tmp_path / "out"),
                     "--recursive-passes", "29")  # fmt: skip
    assert passes.returncode == 2
    assert "--recursive-passes: '29': recursive_passes must be 0 to 28: 29" in passes.stderr
    trees = _m5flow("shard", str(tmp_path / "absent"), str(tmp_path / "out"),
                    "--direct-trees", "-5")  # fmt: skip
    assert trees.returncode == 2
    assert "--direct-trees: '-5': direct_trees must be 0 (early stopping) to 99,999" in trees.stderr


@pytest.mark.parametrize("inside", ["", "forecast"])
def test_the_input_folder_is_never_an_output_folder(small_m5, tmp_path, inside):
    """README: the input folder is never written to; --out there would have been."""
    data = tmp_path / "data"
    shutil.copytree(small_m5, data)
    before = sorted(p.name for p in data.rglob("*"))
    run = _m5flow("local", "run", "--data", str(data), "--out", str(data / inside))
    shard = _m5flow("shard", str(data), str(data / inside))
    work = _m5flow("local", "run", "--data", str(data), "--out", str(tmp_path / "out"),
                   "--workdir", str(data / inside / "work"))  # fmt: skip
    assert (run.returncode, shard.returncode, work.returncode) == (2, 2, 2)
    assert f"--out {data / inside} is inside --data {data}, the input folder" in run.stderr
    assert f"--workdir {data / inside / 'work'} is inside --data {data}" in work.stderr
    assert f"OUT_DIR {data / inside} is inside DATA_DIR {data}" in shard.stderr
    assert sorted(p.name for p in data.rglob("*")) == before


@pytest.mark.parametrize("option", ["--out", "--workdir"])
def test_a_folder_another_local_run_holds_is_refused(small_m5, tmp_path, option):
    """Two runs into one --out had both said "forecast ready" while one forecast was lost;
    two in one --workdir failed each other's jobs."""
    held = tmp_path / "held"
    held.mkdir()
    with (held / ".m5flow-run.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the other run holds it
        lock.write("process 4242")
        lock.flush()
        other = {"--out": str(tmp_path / "out"), "--workdir": str(tmp_path / "work")}
        other[option] = str(held)
        run = _m5flow("local", "run", "--data", str(small_m5), "--out", other["--out"],
                      "--workdir", other["--workdir"])  # fmt: skip
        if option == "--workdir":  # `local up` holds its --workdir too
            up = _m5flow("local", "up", "--workdir", other["--workdir"])
    refusal = (
        f"{option} {held} is in use by another m5flow local run (process 4242); wait for it "
        f"to end, or choose another {option}"
    )
    assert (run.returncode, run.stderr.strip()) == (2, refusal)
    assert not (tmp_path / "out" / "submission.csv").exists()
    if option == "--workdir":
        assert (up.returncode, up.stderr.strip()) == (2, refusal)


def test_synth_replaces_m5_files_only_when_told(tmp_path):
    data = tmp_path / "data"
    assert _m5flow("synth", "--series", "12", "--out", str(data)).returncode == 0
    before = (data / "sales_train_evaluation.csv").read_bytes()

    refused = _m5flow("synth", "--series", "20", "--out", str(data))
    assert refused.returncode == 2
    assert "already holds sales_train_evaluation.csv" in refused.stderr
    assert "--force" in refused.stderr
    assert (data / "sales_train_evaluation.csv").read_bytes() == before

    (data / "sales_test_evaluation.csv").write_text("id,d_1942\n")
    forced = _m5flow("synth", "--series", "20", "--out", str(data), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (data / "sales_train_evaluation.csv").read_bytes() != before
    assert "sales_test_evaluation.csv was left as it was" in forced.stdout


def test_synth_refuses_what_it_cannot_do_with_a_message(tmp_path):
    result = _m5flow("synth", "--series", "0", "--out", str(tmp_path / "data"))
    assert result.returncode == 2
    assert "--series: expected a whole number of at least 1" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "afile").write_text("")
    under_a_file = _m5flow("synth", "--series", "5", "--out", str(tmp_path / "afile" / "data"))
    assert under_a_file.returncode == 2
    assert "cannot make the folder (Not a directory)" in under_a_file.stderr


def test_shard_again_with_other_models_leaves_only_the_manifests_models(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    assert _m5flow("synth", "--series", "12", "--out", str(data)).returncode == 0
    assert _m5flow("shard", str(data), str(out), "--min-lags", "7,28").returncode == 0
    assert _m5flow("shard", str(data), str(out), "--min-lags", "14,28").returncode == 0
    (run,) = (out / "runs").iterdir()
    listed = [m["name"] for m in json.loads((run / "manifest.json").read_text())["models"]]
    # and the recursive model, on by default, and the direct models' backtest twins
    assert listed == ["h14", "h28", "r1", "h14-bt", "h28-bt"]
    assert sorted(p.name for p in (run / "train").iterdir()) == sorted(listed)


def test_shard_names_kaggles_first_stage_file(tmp_path):
    data = tmp_path / "data"
    assert _m5flow("synth", "--series", "12", "--out", str(data)).returncode == 0
    (data / "sales_train_evaluation.csv").rename(data / "sales_train_validation.csv")
    result = _m5flow("shard", str(data), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "missing input(s)" in result.stderr and "stops at d_1913" in result.stderr


def test_a_missing_input_names_the_file_that_looks_like_it(tmp_path):
    data = tmp_path / "data"
    assert _m5flow("synth", "--series", "12", "--out", str(data)).returncode == 0
    calendar = data / "calendar.csv"
    (data / "calendar.csv.gz").write_bytes(gzip.compress(calendar.read_bytes()))
    calendar.unlink()
    (data / "sell_prices.csv").rename(data / "Sell_Prices.CSV")
    result = _m5flow("shard", str(data), str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        f"missing input(s) in {data}: calendar.csv, sell_prices.csv"
        "; rename Sell_Prices.CSV to sell_prices.csv (file names are case-sensitive)"
        "; rename calendar.csv.gz to calendar.csv (gzip is read under that name)"
    )
    (data / "calendar.csv.gz").rename(calendar)
    (data / "Sell_Prices.CSV").rename(data / "sell_prices.csv")
    assert _m5flow("shard", str(data), str(tmp_path / "out")).returncode == 0


def test_score_says_where_it_looked_for_the_history(tmp_path):
    truth = tmp_path / "sales_test_evaluation.csv"
    truth.write_bytes((REAL_M5 / "sales_test_evaluation.csv").read_bytes())
    submission = REAL_M5 / "reference" / "submission_0046_YK.csv"

    result = _m5flow("score", str(truth), str(submission))

    assert result.returncode == 2
    assert f"{tmp_path} has no sales_train_evaluation.csv" in result.stderr
    assert "--data names the folder" in result.stderr
    ok = _m5flow("score", str(truth), str(submission), "--data", str(REAL_M5))
    assert ok.returncode == 0, ok.stderr


def test_score_says_so_when_the_truth_and_the_submission_are_swapped():
    submission = REAL_M5 / "reference" / "submission_0046_YK.csv"
    truth = REAL_M5 / "sales_test_evaluation.csv"

    result = _m5flow("score", str(submission), str(truth), "--data", str(REAL_M5))

    assert result.returncode == 2
    assert "submission_0046_YK.csv is a submission (id,F1..): the truth comes first" in (
        result.stderr
    )


def test_score_explains_a_submission_of_only_validation_rows(tmp_path):
    lines = (REAL_M5 / "reference" / "submission_0046_YK.csv").read_text().splitlines()
    renamed = [lines[0]] + [line.replace("_evaluation,", "_validation,", 1) for line in lines[1:]]
    (tmp_path / "validation_only.csv").write_text("\n".join(renamed) + "\n")

    result = _m5flow(
        "score", str(REAL_M5 / "sales_test_evaluation.csv"), str(tmp_path / "validation_only.csv")
    )

    assert result.returncode == 2
    assert "no row for 290 series" in result.stderr and "*_validation rows" in result.stderr


def test_arguments_that_cannot_work_are_refused_with_a_message_not_a_traceback(tmp_path):
    (tmp_path / "afile").touch()
    (tmp_path / "empty.csv").touch()
    data = tmp_path / "data"
    assert _m5flow("synth", "--series", "3", "--out", str(data)).returncode == 0
    truth = str(REAL_M5 / "sales_test_evaluation.csv")
    cases = [
        (["local", "run", "--data", str(data), "--out", str(tmp_path / "o"),
          "--workdir", str(tmp_path / "afile")], "--workdir", "is a file; expected a folder"),
        (["local", "up", "--workdir", "/proc/no-such"], "--workdir", "cannot make the folder"),
        (["shard", str(data), "/proc/no-such"], "OUT_DIR", "cannot make the folder"),
        (["score", truth, str(tmp_path / "empty.csv")], "empty.csv", "found an empty file"),
        (["synth", "--series", "3", "--out", str(data), "--seed", "-1"], "--seed", "at least 0"),
        (["synth", "--series", "3", "--out", ""], "--out", "empty name"),
        (["local", "run", "--data", str(data), "--out", str(tmp_path / "o"), "--parameter",
          "LogLevel=INFO", "--parameter", "LogLevel=ERROR"], "LogLevel",
         "given twice, 'INFO' and 'ERROR'; give it once"),
        (["local", "run", "--data", str(data), "--out", str(tmp_path / "o"), "--timeout", "0"],
         "--timeout", "above 0"),
        # Past what a thread can wait, it had crashed the run after the upload.
        (["local", "run", "--data", str(data), "--out", str(tmp_path / "o"), "--timeout", "1e10"],
         "--timeout", "at most 31,536,000 (a year)"),
        # A typo for 10,000: it had run the machine out of memory.
        (["synth", "--series", "10000000000", "--out", str(tmp_path / "big" / "data")],
         "--series 10,000,000,000",
         "GiB of memory; this machine has"),
        (["local", "run", "--data", str(tmp_path / "afile"), "--out", str(tmp_path / "o")],
         "afile", "is a file; expected a folder"),
        # Found out before the run, not after it, when the forecast had nowhere to go.
        (["local", "run", "--data", str(data), "--out", "/proc/sys"], "--out /proc/sys",
         "cannot write there"),
        (["synth", "--series", "3", "--out", "/proc/sys"], "--out /proc/sys", "cannot write"),
        (["shard", str(data), "/proc/sys"], "OUT_DIR /proc/sys", "cannot write there"),
        (["score", str(tmp_path / "nope.csv"), str(tmp_path / "empty.csv")],
         f"TRUTH {tmp_path / 'nope.csv'}", "no such file"),
        (["local", "run", "--data", "", "--out", str(tmp_path / "o")], "--data", "empty name"),
        (["shard", "", str(tmp_path / "o")], "DATA_DIR", "empty name"),
        # A bare instance type is no AWS quota: taken, it would have limited nothing.
        (["local", "run", "--data", str(data), "--out", str(tmp_path / "o"), "--quota",
          "ml.m5.xlarge=2"], "--quota",
         "expected '<instance type> for training job usage=N' or '<instance type> for "
         "transform job usage=N'"),
        (["local", "up", "--quota", "ml.m5.xlarge for training job usage=-1"], "--quota",
         "a quota is a whole number of instances"),
        (["local", "run", "--data", str(data), "--out", str(tmp_path / "o"), "--quota",
          "ml.m5.xlarge for training job usage=2", "--quota",
          "ml.m5.xlarge for training job usage=3"], "--quota",
         "ml.m5.xlarge for training job usage: given twice, 2 and 3; give it once"),
    ]  # fmt: skip
    for args, named, reason in cases:
        result = _m5flow(*args)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert named in result.stderr and reason in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert "kept in" not in result.stderr  # nothing started, nothing to keep
    assert not (tmp_path / "o").exists() and not (tmp_path / "big").exists()


def test_an_interrupted_shard_leaves_the_earlier_run_folder_whole(tmp_path, monkeypatch):
    """The run folder is built in a hidden folder and moved in: a Ctrl-C part way once left
    a folder of some shards and no manifest, the earlier one already deleted."""
    from m5flow.stages import shard
    from m5flow_local import cli

    data, out = tmp_path / "data", tmp_path / "out"
    assert _m5flow("synth", "--series", "12", "--out", str(data)).returncode == 0
    assert _m5flow("shard", str(data), str(out), "--min-lags", "28").returncode == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shard, "write_run_shards", interrupted)
    assert cli.main(["shard", str(data), str(out), "--min-lags", "7,28"]) == 130

    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_a_ctrl_c_while_the_command_imports_ends_it_without_a_traceback(monkeypatch, capsys):
    """The installed `m5flow` enters through m5flow_local.entry: pandas and pyarrow take half
    a second to import, and a Ctrl-C then had printed a traceback from inside them."""
    import builtins

    from m5flow_local import entry

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "m5flow_local.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert entry.main() == 130
    assert capsys.readouterr().err == "interrupted\n"
