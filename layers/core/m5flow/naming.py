"""Deterministic names, so a re-delivered event can never start a second run or job.

A run is identified by its bucket, its dataset and the ETags of its inputs: the same upload
maps to the same run, training job, model and transform job, and a changed input to a new run.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from m5flow.storage import ObjectHead, Storage

SALES_FILE = "sales_train_evaluation.csv"
CALENDAR_FILE = "calendar.csv"
PRICES_FILE = "sell_prices.csv"
INPUT_FILES = (SALES_FILE, CALENDAR_FILE, PRICES_FILE)
OVERRIDES_FILE = "m5flow.json"  # the dataset's settings (m5flow.overrides)
TRUTH_FILE = "sales_test_evaluation.csv"  # optional: the days after the history, to score on
# What every run ends with, under runs/<run>/forecast/ (`forecast_prefix`).
SUBMISSION_FILE = "submission.csv"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
FORECAST_FILES = (SUBMISSION_FILE, METRICS_FILE, REPORT_FILE)
KAGGLE_FIRST_STAGE_SALES = "sales_train_validation.csv"  # right layout, 28 days short
KAGGLE_ARCHIVE = "m5-forecasting-accuracy.zip"  # what Kaggle's download button gives
_COMPRESSED = (".gz", ".gzip", ".zip", ".bz2", ".xz", ".zst", ".7z")
RAW_PREFIX = "raw/"
RUNS_PREFIX = "runs/"
JOB_PREFIX = "m5flow-"
# SageMaker's rule for job and model names: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
_MAX_NAME = 63
_RUN_HASH_CHARS = 12
_RUN_ID = re.compile(rf"(?P<dataset>.+)-[0-9a-f]{{{_RUN_HASH_CHARS}}}")
# A later pass of the recursive model (`pass_name`): <model>-p2, -p3, ...
_PASS = re.compile(r"(?P<model>.+)-p(?P<number>[2-9]|[1-9][0-9]+)")
# SageMaker's rule for tag values: ([\p{L}\p{Z}\p{N}_.:/=+\-@]*), at most 256 characters
_TAG_SYMBOLS = frozenset("_.:/=+-@")
_MAX_TAG_VALUE = 256


def sanitize(text: str) -> str:
    """Map `text` onto SageMaker's name alphabet: letters, digits, single inner dashes."""
    cleaned = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")
    return cleaned or "x"


def tag_value(text: str) -> str:
    """Fit `text` into a SageMaker tag value: each character SageMaker refuses becomes `_`,
    and the value is cut at 256 characters.

    A dataset is named by its S3 folder, which may hold any character; SageMaker refuses a
    job whose tags hold `(` or `,`, so the run would fail at training for its name alone.

    Example
    -------
    >>> tag_value("M5 (2016), west")
    'M5 _2016__ west'
    """
    kept = (  # composed first: a name from macOS's file system has its accents apart
        char if unicodedata.category(char)[0] in "LZN" or char in _TAG_SYMBOLS else "_"
        for char in unicodedata.normalize("NFC", text)
    )
    return "".join(kept)[:_MAX_TAG_VALUE]


def dataset_of(key: str) -> str | None:
    """Return the dataset of a raw object key `raw/<dataset>/<file>`, else None."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != RAW_PREFIX.rstrip("/") or not parts[1] or not parts[2]:
        return None
    return parts[1]


def raw_prefix(dataset: str) -> str:
    """raw/<dataset>/: where a dataset's inputs, truth and settings are uploaded."""
    return f"{RAW_PREFIX}{dataset}/"


def is_input(key: str) -> bool:
    """Whether `key` is one of the three inputs of a dataset, raw/<dataset>/<input>."""
    return dataset_of(key) is not None and key.rsplit("/", 1)[-1] in INPUT_FILES


def stands_for(name: str) -> str | None:
    """The input a file name stands in for, or None: the input itself, its name in other
    letters, compressed (`calendar.csv.gz`, `calendar.zip`), Kaggle's first-stage sales
    file, or Kaggle's archive of the whole competition (for the sales file).

    Example
    -------
    >>> [stands_for(n) for n in ("Calendar.CSV", "sell_prices.csv.gz", "notes.txt")]
    ['calendar.csv', 'sell_prices.csv', None]
    """
    lower = name.lower()
    if lower in (KAGGLE_FIRST_STAGE_SALES, KAGGLE_ARCHIVE):
        return SALES_FILE
    stem = lower.removesuffix(lower[lower.rfind(".") :]) if _is_compressed(lower) else lower
    for candidate in (stem, f"{stem}.csv"):
        if candidate in INPUT_FILES:
            return candidate
    return None


def _is_compressed(name: str) -> bool:
    return name.endswith(_COMPRESSED)


def stand_in_kind(name: str) -> str | None:
    """How a file standing in for an input (`stands_for`) differs from it, which decides
    what to tell its owner: "competition archive" (Kaggle's zip of everything), "first
    stage" (Kaggle's first-stage sales file), "gzip", "archive" (other compression), or
    "letters" (the name in other letters); None for an input's own name or no input.

    Example
    -------
    >>> [stand_in_kind(n) for n in ("calendar.csv.gz", "Calendar.CSV", "calendar.csv")]
    ['gzip', 'letters', None]
    """
    lower = name.lower()
    target = stands_for(name)
    if target is None or name == target:
        return None
    if lower == KAGGLE_ARCHIVE:
        return "competition archive"
    if lower == KAGGLE_FIRST_STAGE_SALES:
        return "first stage"
    if _is_compressed(lower):
        return "gzip" if lower.endswith((".gz", ".gzip")) else "archive"
    return "letters"


# Why a file that stands in for an input (`stand_in_kind`) is not read as one: the S3 step
# and the local command line say it, each with its own remedy (upload, rename, extract).
STAND_IN_REASONS = {
    "gzip": "gzip is read under that name",
    "archive": "archives are not read",
    "letters": "file names are case-sensitive",
}


def misplaced_input(key: str) -> str | None:
    """Why the raw object `key` can never be part of a dataset, or None if it can (or it is
    no CSV and stands in for no input, so it says nothing about one).

    Example
    -------
    >>> misplaced_input("raw/2016/june/calendar.csv")
    'raw/2016/june/calendar.csv: an input goes one folder under raw/, raw/<dataset>/calendar.csv'
    >>> misplaced_input("raw/june/sales_test_evaluation.csv") is None
    True
    >>> misplaced_input("raw/may/calendar.csv.gz")
    'raw/may/calendar.csv.gz: upload it as raw/may/calendar.csv (gzip is read under that name)'
    """
    name = key.rsplit("/", 1)[-1]
    target, kind = stands_for(name), stand_in_kind(name)
    dataset = dataset_of(key)
    if dataset is None:
        if target is None and not name.lower().endswith(".csv"):
            return None
        if kind == "competition archive":
            return (
                f"{key}: the competition's zip archive; unzip it and upload "
                f"{', '.join(INPUT_FILES)} to {RAW_PREFIX}<dataset>/"
            )
        if target is None:  # no input by any name: only where datasets go can be said
            return (
                f"{key}: not an m5flow input; a dataset is one folder under {RAW_PREFIX} "
                f"holding {', '.join(INPUT_FILES)}"
            )
        return f"{key}: an input goes one folder under {RAW_PREFIX}, {RAW_PREFIX}<dataset>/{target}"
    if name in (*INPUT_FILES, TRUTH_FILE, OVERRIDES_FILE):
        return None
    where = raw_prefix(dataset)
    if kind == "competition archive":
        return (
            f"{key}: the competition's zip archive; unzip it and upload "
            f"{', '.join(INPUT_FILES)} to {where}"
        )
    if kind == "gzip":
        return f"{key}: upload it as {where}{target} ({STAND_IN_REASONS[kind]})"
    if kind == "archive":
        return f"{key}: {STAND_IN_REASONS[kind]}; extract it and upload {where}{target}"
    if kind == "letters":
        return f"{key}: {STAND_IN_REASONS[kind]}; an input is named {target}"
    return f"{key}: not an m5flow input; a dataset is {', '.join(INPUT_FILES)}" + (
        first_stage_hint() if kind == "first stage" else ""
    )


def first_stage_hint() -> str:
    """What to say to a user who brought Kaggle's first-stage sales file."""
    return (
        f" ({KAGGLE_FIRST_STAGE_SALES} is Kaggle's first-stage file, which stops at d_1913; "
        f"m5flow needs {SALES_FILE})"
    )


def run_id(dataset: str, etags: Mapping[str, str], where: str) -> str:
    """Return the run id for `dataset` with these input ETags (file name -> ETag) in the
    bucket or folder `where`.

    SageMaker job names are unique per account and region, and an ETag is the content's
    MD5: without `where`, the same files uploaded to two stacks (staging and production)
    would name the same jobs, and the second stack would take the first's as its own. The
    dataset's own name is hashed too: the readable part is sanitised and cut short, so
    `store a`, `store_a` and two long names alike at the start would otherwise share a run,
    and the second would be dropped as a duplicate of the first. The id stays a valid
    SageMaker name once prefixed with `m5flow-` and suffixed with a model tag such as `-h1`.
    """
    files = (f"{n}={etags[n].strip(chr(34))}" for n in sorted(etags))
    text = "\n".join([where, dataset, *files])
    digest = hashlib.sha256(text.encode()).hexdigest()[:_RUN_HASH_CHARS]
    room = _MAX_NAME - len(JOB_PREFIX) - len(digest) - 1 - 8  # 8: room for a model suffix
    return f"{sanitize(dataset)[:room].rstrip('-')}-{digest}"


def dataset_of_run_id(run: str) -> str | None:
    """The sanitised dataset name a run id starts with (`run_id`); None if `run` is not one.

    Example
    -------
    >>> dataset_of_run_id("store-a-3f2a9c1b7e4d"), dataset_of_run_id("store-a")
    ('store-a', None)
    """
    match = _RUN_ID.fullmatch(run)
    return match["dataset"] if match else None


def split_s3_uri(s3_uri: str) -> tuple[str, str]:
    """(bucket, key) of `s3://<bucket>/<key>`."""
    bucket, _, key = s3_uri.removeprefix("s3://").partition("/")
    return bucket, key


def run_of(key: str) -> str | None:
    """Return the run of an object key `runs/<run>/...`, else None."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != RUNS_PREFIX.rstrip("/") or not parts[1]:
        return None
    return parts[1]


def run_and_model_of(s3_uri: str) -> tuple[str, str, str]:
    """Return (bucket, run, model) of an m5flow job path `s3://<bucket>/runs/<run>/<kind>/<model>/`."""
    bucket, key = split_s3_uri(s3_uri)
    parts = key.strip("/").split("/")
    if len(parts) < 4 or run_of(key) is None:
        raise ValueError(
            f"{s3_uri} is not an m5flow run path s3://<bucket>/runs/<run>/<kind>/<model>/"
        )
    return bucket, parts[1], parts[3]


def channel_prefix(run: str, channel: str, model: str) -> str:
    """runs/<run>/<channel>/<model>/: one pure prefix per SageMaker channel or output."""
    return f"{run_prefix(run)}{channel}/{model}/"


def job_name(run: str, model: str) -> str:
    """Return the SageMaker training job, model and transform job name of one model."""
    return f"{JOB_PREFIX}{run}-{sanitize(model)}"[:_MAX_NAME].rstrip("-")


def pass_name(model: str, number: int) -> str:
    """The name of a model's pass `number` (m5flow.recursive). `number` counts from 0, the
    name as people count: pass 0 is `<model>`, pass 1 `<model>-p2` (its second pass)."""
    return model if number == 0 else f"{model}-p{number + 1}"


def transform_job_name(run: str, model: str, number: int) -> str:
    """The transform job of a model's pass `number` (`pass_name`)."""
    return job_name(run, pass_name(model, number))


def backtest_name(model: str) -> str:
    """The name of a direct model's backtest twin (`ModelShards.backtest`): `h7-bt`."""
    return f"{model}-bt"


def pass_of(name: str) -> tuple[str, int]:
    """(model, pass number) of a name from `pass_name`; a direct model's name is pass 0."""
    match = _PASS.fullmatch(name)
    return (match["model"], int(match["number"]) - 1) if match else (name, 0)


def run_prefix(run: str) -> str:
    return f"{RUNS_PREFIX}{run}/"


def forecast_prefix(run: str) -> str:
    return f"{run_prefix(run)}forecast/"


def manifest_key(run: str) -> str:
    return f"{run_prefix(run)}manifest.json"


def dataset_run(
    storage: Storage, prefix: str, dataset: str
) -> tuple[str | None, dict[str, ObjectHead], list[str]]:
    """The run the inputs under `prefix` make (None while one is absent), what a HEAD says
    of each present one (m5flow.json's too, when there: changed settings make a new run),
    and the names of the three inputs still absent.

    The shard step names its run here, and so do the failure reporter (for a crashed shard
    step) and `m5flow shard`: one place, so that all read the same objects and `where`. The
    heads are those versions' ETags, sizes and version ids, so the step asks S3 once.
    """
    heads = {name: storage.head(prefix + name) for name in (*INPUT_FILES, OVERRIDES_FILE)}
    absent = [name for name in INPUT_FILES if heads[name] is None]
    present = {name: head for name, head in heads.items() if head is not None}
    etags = {name: head.etag for name, head in present.items()}
    run = None if absent else run_id(dataset, etags, storage.uri(""))
    return run, present, absent
