"""`m5flow`: generate M5 data, shard it on disk, score a forecast, or run the whole flow on
this machine (`m5flow local run`)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from m5flow import naming, schema
from m5flow.exceptions import InputRejectedError
from m5flow.hyperparameters import stack_hyperparameters
from m5flow.shards import ShardConfig, parse_direct_trees, parse_min_lags, parse_passes
from m5flow.storage import DiskStorage
from m5flow_local.console import discard_stdout, print_line
from m5flow_local.stopping import stop_on_signals, unless_stopped, until_stopped


def _made_folder(option: str, path: Path) -> bool:
    """Make the folder an option names, or say why not; True when it is there."""
    if path.exists() and not path.is_dir():
        print(f"{option} {path} is a file; expected a folder", file=sys.stderr)
        return False
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"{option} {path}: cannot make the folder ({exc.strerror})", file=sys.stderr)
        return False
    return True


def _missing_folders(path: Path) -> list[Path]:
    """The folders `_made_folder` would make for `path`, deepest first."""
    path = Path(os.path.abspath(path))  # "a/../b" as b: what mkdir makes, without the ".."
    return [folder for folder in (path, *path.parents) if not folder.exists()]


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a command made (deepest first) that are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # something was put there: it and those above it stay
            return


_LOCK_FILE = ".m5flow-run.lock"
_Parsed = TypeVar("_Parsed")  # what a shard setting reads as


def _claimed(option: str, path: Path, claims: contextlib.ExitStack) -> bool:
    """Hold folder `path` for this run until `claims` closes, or say who holds it: two runs
    into one --out had both said "forecast ready" while one forecast was lost, and two in
    one --workdir failed each other's jobs (the same files name the same jobs)."""
    lock = claims.enter_context((path / _LOCK_FILE).open("a+"))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        print(f"{option} {path} is in use by another m5flow local run ({holder}); wait for "
              f"it to end, or choose another {option}", file=sys.stderr)  # fmt: skip
        return False
    except OSError as exc:  # a filesystem without locks (NFS without lockd, some FUSE)
        print(f"note: {option} {path} cannot be locked ({exc.strerror or exc}): nothing "
              "keeps another run from using it at the same time")  # fmt: skip
        return True
    lock.truncate(0)
    lock.write(f"process {os.getpid()}")
    lock.flush()
    claims.callback(lock.truncate, 0)  # at the end, while still held: no stale holder is named
    return True


def _writable(option: str, path: Path) -> bool:
    """Whether a file can be written in folder `path`, or say why not: found out before a
    run, not after it, when its outputs would have nowhere to go."""
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".m5flow-probe-"):
            pass
    except OSError as exc:
        print(f"{option} {path}: cannot write there ({exc.strerror or exc})", file=sys.stderr)
        return False
    return True


def _synth(args: argparse.Namespace) -> int:
    from m5flow_local.synth import write_synthetic_m5

    out = Path(args.out)
    made = _missing_folders(out)
    if not _made_folder("--out", out) or not _writable("--out", out):
        return 2
    existing = [name for name in schema.INPUT_FILES if (out / name).exists()]
    if existing and not args.force:
        print(
            f"--out {out} already holds {', '.join(existing)}: choose another folder, "
            "or pass --force to replace them",
            file=sys.stderr,
        )
        return 2
    # Files it replaces count as taken: the new ones are written beside them first.
    if not _room_for(args):
        _remove_empty(made)
        return 2
    started = time.perf_counter()
    for path in write_synthetic_m5(out, args.series, seed=args.seed).values():
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    for name in (naming.TRUTH_FILE, naming.OVERRIDES_FILE) if existing else ():
        if (out / name).exists():
            print(f"note: {out / name} was left as it was; it belongs to the replaced data")
    print(f"{args.series} series in {time.perf_counter() - started:.1f} s")
    return 0


def _room_for(args: argparse.Namespace) -> bool:
    """Whether this machine has the memory, and --out's disk the room, to generate
    `--series` series; if not, say so and how many there is room for."""
    from m5flow_local import synth
    from m5flow_local.sagemaker.capacity import available_memory

    for what, where, free, base, per_series in (
        ("memory", "this machine", available_memory(),
         synth.BASE_MEMORY_BYTES, synth.MEMORY_BYTES_PER_SERIES),
        ("disk", f"--out {args.out}", shutil.disk_usage(args.out).free,
         0, synth.FILE_BYTES_PER_SERIES),
    ):  # fmt: skip
        needed = base + args.series * per_series
        if needed > free:
            print(f"--series {args.series:,} needs about {needed / 2**30:,.1f} GiB of {what}; "
                  f"{where} has {free / 2**30:,.1f} GiB free: room for about "
                  f"{max(0, free - base) // per_series:,} series (the M5 data has 30,490)",
                  file=sys.stderr)  # fmt: skip
            return False
    return True


def _shard(args: argparse.Namespace) -> int:
    # Here, not at the top: the step's Powertools logger takes its service name on import,
    # which must be after a local run has set the functions' environment.
    from m5flow.stages.shard import input_records, read_inputs, write_run_shards

    data_dir, out = Path(args.data_dir), Path(args.out_dir)
    if out.exists() and not out.is_dir():
        print(f"OUT_DIR {out} is a file; expected a folder", file=sys.stderr)
        return 2
    if _inside_inputs(("OUT_DIR", out), ("DATA_DIR", data_dir)):
        return 2
    source = DiskStorage(data_dir)
    dataset = naming.sanitize(data_dir.resolve().name)
    run, present, absent = naming.dataset_run(source, "", dataset)
    if run is None:
        print(_missing_inputs(data_dir, absent), file=sys.stderr)
        return 2
    started = time.perf_counter()
    config = ShardConfig(train_format=args.format)
    try:
        data, overrides = read_inputs(source, "", present, config)
    except InputRejectedError as exc:
        print("input rejected:", *exc.reasons, sep="\n  ", file=sys.stderr)
        return 1
    if not _made_folder("OUT_DIR", out) or not _writable("OUT_DIR", out):
        return 2  # made only once the inputs are known good
    print(
        f"read and checked {len(data.ids):,} series x {data.last_day:,} days "
        f"({time.perf_counter() - started:.1f} s)"
    )
    for notice in data.notices:
        print(f"note: {notice}")
    inputs = input_records("", present)
    if args.min_lags:  # given on the command line: over m5flow.json's
        overrides = replace(overrides, min_lags=args.min_lags)
    if args.recursive_passes is not None:
        overrides = replace(overrides, recursive_passes=args.recursive_passes)
    if args.direct_trees is not None:
        overrides = replace(overrides, direct_trees=args.direct_trees)
    # Written in a hidden folder and moved in whole: an interrupted call leaves the earlier
    # run folder as it was, and a finished one replaces it (whose other --min-lags would
    # otherwise leave shards of models this manifest does not list).
    with tempfile.TemporaryDirectory(
        prefix=".m5flow-shard-", dir=out, ignore_cleanup_errors=True
    ) as folder:
        staging = Path(folder)
        target = DiskStorage(staging)
        manifest = write_run_shards(target, run, dataset, inputs, data, overrides, config)
        target.write(naming.manifest_key(run), manifest.to_json())
        final = out / naming.run_prefix(run)
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging / naming.run_prefix(run), final)
    for model in manifest.models:
        for channel in ("train", "validation", "inference"):
            shards = getattr(model, channel)
            plural = "s" if len(shards) != 1 else " "
            print(
                f"{model.name} {channel:10s} {len(shards):4d} shard{plural} "
                f"{sum(s.rows for s in shards):>12,} rows {sum(s.bytes for s in shards):>14,} bytes"
            )
    print(f"manifest {out / naming.manifest_key(run)} ({time.perf_counter() - started:.1f} s)")
    return 0


def _score(args: argparse.Namespace) -> int:
    from m5flow.exceptions import ScoringError
    from m5flow.scoring import format_score
    from m5flow.submission import score_files

    truth = Path(args.truth)
    for name, path in (("TRUTH", truth), ("SUBMISSION", Path(args.submission))):
        if not path.is_file():
            print(f"cannot score: {name} {path}: no such file", file=sys.stderr)
            return 2
    data_dir = Path(args.data) if args.data else truth.parent
    history = [name for name in schema.INPUT_FILES if not (data_dir / name).is_file()]
    if history:
        print(
            f"cannot score: {data_dir} has no {', '.join(history)}; the score is scaled and "
            "weighted by the history in them (--data names the folder that has them)",
            file=sys.stderr,
        )
        return 2
    try:
        print(format_score(score_files(data_dir, truth, Path(args.submission))))
    except (ScoringError, InputRejectedError) as exc:
        print(f"cannot score: {exc}", file=sys.stderr)
        return 2
    return 0


def _inside_inputs(out: tuple[str, Path], data: tuple[str, Path]) -> bool:
    """Whether the output folder is the input folder or inside it (said, if so): m5flow
    never writes where the user's inputs are (README)."""
    (out_flag, out_dir), (data_flag, data_dir) = out, data
    if not out_dir.resolve().is_relative_to(data_dir.resolve()):
        return False
    print(f"{out_flag} {out_dir} is inside {data_flag} {data_dir}, the input folder, which "
          "m5flow never writes to; choose a folder outside it", file=sys.stderr)  # fmt: skip
    return True


def _missing_inputs(data_dir: Path, absent: list[str]) -> str:
    """Why a folder is not a dataset: no folder, or which inputs are absent, and what in
    the folder looks like them (Kaggle's first-stage file has the right layout but 28 days
    fewer; `calendar.csv.gz` is read once it is named `calendar.csv`)."""
    if data_dir.exists() and not data_dir.is_dir():
        return f"{data_dir} is a file; expected a folder with the three M5 files"
    if not data_dir.is_dir():
        return f"{data_dir}: no such folder"
    message = f"missing input(s) in {data_dir}: {', '.join(absent)}"
    if schema.SALES_FILE in absent and (data_dir / naming.KAGGLE_FIRST_STAGE_SALES).exists():
        message += naming.first_stage_hint()
    for path in sorted(data_dir.iterdir()):
        target, kind = naming.stands_for(path.name), naming.stand_in_kind(path.name)
        if target in absent and kind in _REMEDY:
            remedy = _REMEDY[kind].format(name=path.name, target=target)
            reason = naming.STAND_IN_REASONS.get(kind)
            message += f"; {remedy}" + (f" ({reason})" if reason else "")
    return message


# What to do with a file in the data folder that stands for an absent input, by
# `naming.stand_in_kind` (Kaggle's first-stage file has its own hint above).
_REMEDY = {
    "competition archive": "{name} is the competition's zip archive: unzip it in this folder",
    "gzip": "rename {name} to {target}",
    "archive": "extract {name} as {target}",
    "letters": "rename {name} to {target}",
}


def _stack_parameters(args: argparse.Namespace) -> dict[str, str] | None:
    """The local stack's parameters, `--parameter` over local defaults; None (and each
    problem printed) when CloudFormation or the functions would refuse them."""
    from m5flow_local.router.template import parameter_problems, template_parameters

    # The console tells a run by its events and job progress; the functions' INFO logs
    # (CloudWatch's, on AWS) would bury them. `--parameter LogLevel=INFO` brings them back.
    # Here every "instance" is a process on this one machine, so more of them per job add
    # no memory, only need more: one host keeps its data as a QuantileDMatrix, which hosts
    # that sketch their bins together cannot (local/sagemaker/algorithm_data.py).
    given: dict[str, str] = {}
    repeated = []
    for name, value in args.parameter:  # the last would win in silence
        if given.get(name, value) != value:
            repeated.append(f"{name}: given twice, {given[name]!r} and {value!r}; give it once")
        given[name] = value
    parameters = {"LogLevel": "WARNING", "TrainingInstanceCount": "1"} | given
    problems = repeated + parameter_problems(template_parameters(), parameters)
    if not problems:  # past CloudFormation's pattern, the functions read them and may fail
        try:
            stack_hyperparameters(parameters.get("Hyperparameters", "{}"))
        except ValueError as exc:
            problems.append(str(exc))
        if "ModelMinLags" in parameters:  # the pattern lets 14,7,28 through
            try:
                parse_min_lags(parameters["ModelMinLags"])
            except ValueError as exc:
                problems.append(f"ModelMinLags={parameters['ModelMinLags']}: {exc}")
    if problems:
        print("refused --parameter:", *problems, sep="\n  ", file=sys.stderr)
        return None
    return parameters


def _cloud_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The local cloud's `parameters` and `quotas` from the command line; None (and each
    problem printed) when either is refused."""
    parameters = _stack_parameters(args)
    if parameters is None:
        return None
    quotas = _quotas(args, parameters)
    return None if quotas is None else {"parameters": parameters, "quotas": quotas}


def _local_run(args: argparse.Namespace) -> int:
    data_dir, out = Path(args.data), Path(args.out)
    optional = (naming.TRUTH_FILE, naming.OVERRIDES_FILE)
    files = [name for name in (*schema.INPUT_FILES, *optional) if (data_dir / name).is_file()]
    missing = [name for name in schema.INPUT_FILES if name not in files]
    if missing:
        print(_missing_inputs(data_dir, missing), file=sys.stderr)
        return 2
    if _inside_inputs(("--out", out), ("--data", data_dir)) or (
        args.workdir and _inside_inputs(("--workdir", Path(args.workdir)), ("--data", data_dir))
    ):
        return 2
    options = _cloud_options(args)
    if options is None:
        return 2
    if args.workdir and not _made_folder("--workdir", Path(args.workdir)):
        return 2
    made = _missing_folders(out)
    if not _made_folder("--out", out) or not _writable("--out", out):
        return 2
    with contextlib.ExitStack() as claims:
        workdir = Path(args.workdir) if args.workdir else None
        if not _claimed("--out", out, claims) or (
            workdir
            and workdir.resolve() != out.resolve()
            and not _claimed("--workdir", workdir, claims)
        ):
            return 2
        code = 1  # unless the run says otherwise: a crash too removes the folder
        try:
            code = _claimed_run(args, data_dir, out, files, options)
        finally:
            if code != 0 and made:  # folders this run made and put nothing in go again
                (out / _LOCK_FILE).unlink(missing_ok=True)
                _remove_empty(made)
        return code


def _claimed_run(
    args: argparse.Namespace,
    data_dir: Path,
    out: Path,
    files: list[str],
    options: dict[str, Any],
) -> int:
    """`local run` once its folders are held: run the flow, then keep or remove the local
    cloud's files and say how it ended, last."""
    earlier = [name for name in naming.FORECAST_FILES if (out / name).exists()]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="m5flow-local-"))
    stop_on_signals()
    code, outcome = 1, None
    try:
        code, outcome = _run_flow(args, data_dir, out, files, workdir, options)
    except KeyboardInterrupt:
        code, outcome = 130, "interrupted: the local cloud and its jobs are stopped"
    finally:
        # Stopped before any job wrote a file (a refused input): there is nothing to keep.
        empty = not args.workdir and not any(p.is_file() for p in workdir.rglob("*"))
        if empty or (code == 0 and not args.workdir):
            shutil.rmtree(workdir, ignore_errors=True)
            if not empty:
                print(f"removed {workdir}, the local cloud's job files and logs "
                      "(--workdir keeps them)")  # fmt: skip
        elif code != 0:
            print(f"the local cloud's job files and logs are kept in {workdir}", file=sys.stderr)
        if code != 0 and earlier:
            print(
                f"note: {', '.join(earlier)} in {out} are an earlier run's, not this one's",
                file=sys.stderr,
            )
        elif code == 0 and earlier:
            print(f"note: this run's files replaced an earlier run's in {out}")
        if outcome is not None:  # last, where `tail` finds it
            print(outcome, file=sys.stdout if code == 0 else sys.stderr)
    return code


def _run_flow(
    args: argparse.Namespace,
    data_dir: Path,
    out: Path,
    files: list[str],
    workdir: Path,
    options: dict[str, Any],
) -> tuple[int, str]:
    """Upload the dataset to a fresh local cloud and wait for its outcome.

    Returns the exit code and the outcome's line (where the forecast is, or why there is
    none), which the caller prints last, after the local cloud's shutdown has said its part.
    """
    from m5flow_local.cloud import LocalCloud, LocalRunFailedError

    dataset = naming.sanitize(args.dataset or data_dir.resolve().name)
    if args.dataset and dataset != args.dataset:
        print(f"note: --dataset {args.dataset!r} is uploaded as raw/{dataset}/ (letters, digits "
              "and single dashes)")  # fmt: skip
    started = time.perf_counter()
    written = False
    try:
        with LocalCloud(workdir, **options) as cloud:
            # The truth and the settings go first: the last input to arrive starts the run.
            ordered = sorted(files, key=lambda name: name in schema.INPUT_FILES)
            cloud.upload_dataset(data_dir, dataset, tuple(ordered))
            try:
                outcome = unless_stopped(partial(cloud.wait_for_outcome, dataset, args.timeout))
            except LocalRunFailedError as exc:
                return 1, f"FAILED: {exc}"
            detail = outcome.get("detail", {})
            if outcome.get("detail-type") != "Forecast Ready":
                return 1, f"FAILED ({outcome.get('detail-type')}): {detail.get('reason')}"
            keys = [
                detail[field].removeprefix(f"s3://{cloud.bucket}/")
                for field in ("submission", "metrics", "report")
                if detail.get(field)
            ]
            try:
                _download(cloud, keys, out)
            except OSError as exc:  # the local S3 goes with this process: keep them elsewhere
                kept = workdir / "forecast"
                _download(cloud, keys, kept)
                return 1, f"FAILED to write the forecast to {out} ({exc}); it is in {kept}"
            written = True
    except KeyboardInterrupt:
        # A stop that came during the shutdown, once the forecast was in --out: it changes
        # nothing, and the run is reported as what it was, a success.
        if not written:
            raise
    beside = [Path(key).name for key in keys if not key.endswith(naming.SUBMISSION_FILE)]
    return 0, (
        f"forecast ready in {time.perf_counter() - started:.0f} s: "
        f"{out / naming.SUBMISSION_FILE}"
        + (f" (and {' and '.join(beside)} beside it)" if beside else "")
        + f"  headline {json.dumps(detail.get('headline', {}))}"
    )


def _download(cloud: Any, keys: list[str], out: Path) -> None:
    """Copy the run's outputs into `out` whole or not at all: each into a hidden folder
    there first, then all moved into place, so that an interrupted copy leaves no mix of
    this run's files and an earlier run's."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=".m5flow-download-", dir=out, ignore_cleanup_errors=True
    ) as folder:
        staging = Path(folder)
        for key in keys:
            cloud.download(key, staging / key.rsplit("/", 1)[-1])
        for path in staging.iterdir():
            os.replace(path, out / path.name)


def _local_up(args: argparse.Namespace) -> int:
    options = _cloud_options(args)
    if options is None:
        return 2
    if args.workdir and not _made_folder("--workdir", Path(args.workdir)):
        return 2
    with contextlib.ExitStack() as claims:
        if args.workdir and not _claimed("--workdir", Path(args.workdir), claims):
            return 2
        return _claimed_up(args, options)


def _claimed_up(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """`local up` once its --workdir (if any) is held: serve until stopped."""
    from m5flow_local.cloud import LocalCloud

    stop_on_signals()  # before the servers start: a Ctrl-C while they do stops them too
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="m5flow-local-"))
    try:
        with LocalCloud(workdir, **options) as cloud:
            print("# to point boto3 and the AWS CLI (v2) at the local cloud, run these:")
            for key, value in cloud.environment.items():
                print(f"export {key}={value}")
            # The line below tells a script it may signal now.
            print(f"upload to s3://{cloud.bucket}/raw/<dataset>/ ; Ctrl-C stops", flush=True)
            until_stopped()
    except KeyboardInterrupt:
        print_line("stopped the local cloud")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"removed {workdir} and its job logs (--workdir keeps them)")
    return 0


def _as_the_shard_step_checks(parse: Callable[[str], _Parsed]) -> Callable[[str], _Parsed]:
    """An argument type that reads a shard setting (`--min-lags 7,14,21,28`...) with the
    shard step's own `parse`, so a bad value is named before any reading."""

    def checked(text: str) -> _Parsed:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    return checked


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise argparse.ArgumentTypeError(
                f"expected a whole number of at least {minimum}: {text!r}"
            )
        return number

    return parse


# --timeout's bound: longer than any run, and far below what a thread can wait for
# (threading.TIMEOUT_MAX, about 292 years; 1e10 s had crashed the run after its upload).
_YEAR_SECONDS = 365 * 24 * 3600


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= _YEAR_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {_YEAR_SECONDS:,} (a year): {text!r}"
        )
    return seconds


def _folder(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, found an empty name")
    return text


def _quota(text: str) -> tuple[str, int]:
    """--quota: a SageMaker service quota by AWS's name, and how many instances it holds."""
    from m5flow_local.sagemaker.models import QUOTA_SUFFIXES

    name, equals, value = text.rpartition("=")
    name = " ".join(name.split())
    example = "e.g. 'ml.m5.xlarge for training job usage=2'"
    if not equals or not name.endswith(QUOTA_SUFFIXES) or name in QUOTA_SUFFIXES:
        raise argparse.ArgumentTypeError(
            "expected '<instance type> for training job usage=N' or '<instance type> for "
            f"transform job usage=N', AWS's quota names, {example}: {text!r}"
        )
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        said = f"a quota is a whole number of instances, {example}: {text!r}"
        raise argparse.ArgumentTypeError(said)
    return name, count


def _quotas(args: argparse.Namespace, parameters: dict[str, str]) -> dict[str, int] | None:
    """The local SageMaker's quotas from `--quota`; None (and why, printed) when one is
    given twice. A quota of a type none of the stack's jobs uses limits nothing: said."""
    from m5flow_local.router.template import parameter_values

    quotas: dict[str, int] = {}
    for name, count in args.quota:
        if quotas.get(name, count) != count:
            print(f"refused --quota: {name}: given twice, {quotas[name]} and {count}; give it "
                  "once", file=sys.stderr)  # fmt: skip
            return None
        quotas[name] = count
    values = parameter_values(parameters)
    for kind in ("training", "transform"):
        parameter = f"{kind.capitalize()}InstanceType"
        used = values[parameter]
        for name in quotas:
            if name.endswith(f" for {kind} job usage") and not name.startswith(f"{used} "):
                print(f"note: --quota '{name}' limits nothing: the {kind} jobs run on {used} "
                      f"({parameter})")  # fmt: skip
    return quotas


def _name_and_value(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not name or not equals:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, e.g. NumRound=100: {text!r}")
    return name, value


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="m5flow", description=__doc__)
    main.add_argument("--version", action="version", version=f"m5flow {version('m5flow')}")
    commands = main.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="generate M5-format files")
    synth.add_argument(
        "--series", type=_whole_number(1), required=True, help="item-store series (M5: 30490)"
    )
    synth.add_argument("--out", type=_folder, required=True, help="folder for the three M5 files")
    synth.add_argument(
        "--seed",
        type=_whole_number(0),
        default=0,
        help="the same seed, the same bytes (default: 0)",
    )
    synth.add_argument("--force", action="store_true", help="replace M5 files already in --out")
    synth.set_defaults(run=_synth)

    shard = commands.add_parser("shard", help="run the shard step on local files, no AWS")
    shard.add_argument(
        "data_dir", type=_folder, metavar="DATA_DIR",
        help="folder with the three M5 files (and m5flow.json)",
    )  # fmt: skip
    shard.add_argument(
        "out_dir",
        type=_folder,
        metavar="OUT_DIR",
        help="where runs/<run>/ and its manifest.json go",
    )
    shard.add_argument(
        "--format",
        choices=["parquet", "csv"],
        default="parquet",
        help="training shards' format (default: parquet)",
    )
    shard.add_argument(
        "--min-lags",
        type=_as_the_shard_step_checks(parse_min_lags),
        help="one direct model per minimum lag, e.g. 28 for a single one (default: min_lags "
        "of DATA_DIR/m5flow.json, else 7,14,21,28)",
    )
    shard.add_argument(
        "--recursive-passes",
        type=_as_the_shard_step_checks(parse_passes),
        help="passes of the recursive model r1, written beside the direct ones; 0: none "
        "(default: recursive_passes of DATA_DIR/m5flow.json, else 5)",
    )
    shard.add_argument(
        "--direct-trees",
        type=_as_the_shard_step_checks(parse_direct_trees),
        help="trees of each direct model trained on every day, each with a backtest twin "
        "(h7-bt...); 0: early-stopped direct models (default: direct_trees of "
        "DATA_DIR/m5flow.json, else 150)",
    )
    shard.set_defaults(run=_shard)

    score = commands.add_parser("score", help="WRMSSE over the 12 M5 levels of a submission")
    score.add_argument("truth", help="sales_test_evaluation.csv: id,d_<origin+1>..")
    score.add_argument("submission", help="id,F1..F28")
    score.add_argument(
        "--data", help="folder with the training files (default: the truth file's folder)"
    )
    score.set_defaults(run=_score)

    local = commands.add_parser("local", help="the local cloud").add_subparsers(
        dest="local", required=True, metavar="{run,up}"
    )
    run = local.add_parser("run", help="run the whole flow locally on a folder of M5 files")
    run.add_argument(
        "--data",
        type=_folder,
        required=True,
        help="folder with the three M5 files (and, optional, sales_test_evaluation.csv "
        "to score on and m5flow.json with the dataset's settings)",
    )
    run.add_argument(
        "--out", type=_folder, required=True, help="where submission.csv and the report go"
    )
    run.add_argument(
        "--dataset",
        help="dataset name: raw/<dataset>/ (default: the data folder's name; either is "
        "made letters, digits and single dashes)",
    )
    run.add_argument(
        "--timeout", type=_seconds, default=3600, help="seconds to wait for the forecast (3600)"
    )
    run.add_argument(
        "--workdir",
        help="keep the local cloud's job files and logs here (default: a temporary "
        "folder, removed after a forecast)",
    )
    up = local.add_parser("up", help="start the local endpoints and keep them up")
    for command in (run, up):
        command.add_argument(
            "--parameter",
            action="append",
            default=[],
            type=_name_and_value,
            metavar="NAME=VALUE",
            help="a template.yaml parameter, e.g. ModelMinLags=7,14,21,28 (repeatable; "
            "LogLevel is WARNING and TrainingInstanceCount 1 unless given)",
        )
        command.add_argument(
            "--quota",
            action="append",
            default=[],
            type=_quota,
            metavar="'QUOTA=N'",
            help="hold the local SageMaker to an account's service quota, by AWS's name, e.g. "
            "'ml.m5.xlarge for training job usage=2' (repeatable; default: none)",
        )
    run.set_defaults(run=_local_run)
    up.add_argument(
        "--workdir", help="keep the local cloud's job files and logs here (default: removed)"
    )
    up.set_defaults(run=_local_up)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:  # `m5flow score ... | head`: the reader stopped reading
        discard_stdout()
        return 141  # what a writer killed by SIGPIPE exits with
    except KeyboardInterrupt:  # synth, shard, score: one line, not a traceback
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
