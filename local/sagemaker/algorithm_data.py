"""Channel checks and data loading of the built-in XGBoost 1.7-1 algorithm, reproduced.

Runs inside a training host's child process.  What is accepted, what fails the
job and the failure wording follow the container (branch 1.7-1 of
aws/sagemaker-xgboost-container: ``algorithm_mode/channel_validation.py``,
``sagemaker_algorithm_toolkit/channel_validation.py``, ``data_utils.py``), because
the pipeline relies on those rules: only ``train``/``validation`` channels, exact
content types, hidden files fatal, every other file in a channel read as data.
CSV goes through XGBoost's own URI loader, as in the container, so malformed
rows behave the same (XGBoost's parser is lenient).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from m5flow_local.sagemaker.exceptions import AlgorithmError, UserError

LOG = logging.getLogger(__name__)

CSV, LIBSVM, PARQUET, RECORDIO_PROTOBUF = "csv", "libsvm", "parquet", "recordio-protobuf"
VALID_CONTENT_TYPES = (
    CSV,
    LIBSVM,
    PARQUET,
    RECORDIO_PROTOBUF,
    "text/csv",
    "text/libsvm",
    "text/x-libsvm",
    "application/x-parquet",
    "application/x-recordio-protobuf",
)
VALID_PIPED_CONTENT_TYPES = (
    CSV,
    PARQUET,
    RECORDIO_PROTOBUF,
    "text/csv",
    "application/x-parquet",
    "application/x-recordio-protobuf",
)
DEFAULT_CONTENT_TYPE = "text/libsvm"
MAX_FOLDER_DEPTH = 3


def _supported_channel_configs() -> dict[str, set[tuple[str, str, str]]]:
    """Each channel's accepted (ContentType, TrainingInputMode, S3DistributionType) triples."""
    data: set[tuple[str, str, str]] = set()
    for dist in ("ShardedByS3Key", "FullyReplicated"):
        data |= {(ct, "File", dist) for ct in VALID_CONTENT_TYPES}
        data |= {(ct, "Pipe", dist) for ct in VALID_PIPED_CONTENT_TYPES}
    return {
        "train": data,
        "validation": set(data),
        "code": {("text/python", "File", "FullyReplicated")},
    }


def validate_channels(user_channels: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Check the job's channels as the container does (``inputdataconfig.json`` entries).

    Raises
    ------
    UserError
        ``Missing required channel: train``, ``Extraneous channel found: <name>`` or
        ``Channel configuration for '<name>' channel is not supported: {...}``.  The
        content type must match one of the accepted strings exactly, so
        ``text/csv;label_size=1`` is refused here even though the content-type
        parser would accept it.
    """
    supported = _supported_channel_configs()
    if "train" not in user_channels:
        raise UserError("Missing required channel: train")
    validated: dict[str, dict[str, Any]] = {}
    for name, value in user_channels.items():
        if name not in supported:
            raise UserError(f"Extraneous channel found: {name}")
        if "ContentType" not in value:
            value = {**value, "ContentType": DEFAULT_CONTENT_TYPE}
        key = (value["ContentType"], value["TrainingInputMode"], value["S3DistributionType"])
        if key not in supported[name]:
            raise UserError(f"Channel configuration for '{name}' channel is not supported: {value}")
        validated[name] = value
    return validated


def _parse_header(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type/subtype; k=v`` into the type and its parameters (``cgi.parse_header``)."""
    parts = [p.strip() for p in value.split(";")]
    params: dict[str, str] = {}
    for part in parts[1:]:
        if "=" in part:
            k, v = part.split("=", 1)
            params[k.strip()] = v.strip().strip('"')
    return parts[0], params


def get_content_type(value: str | None) -> str:
    """Map a channel ContentType to ``csv``/``libsvm``/``parquet``/``recordio-protobuf``.

    Raises
    ------
    UserError
        For an unknown type, or a CSV ``label_size`` other than 1.
    """
    if value is None:
        return LIBSVM
    content_type, params = _parse_header(value.lower())
    if content_type in (CSV, "text/csv"):
        if "label_size" in params and params["label_size"] != "1":
            raise UserError(
                f"{value} is not an accepted csv ContentType. "
                "Optional parameter label_size must be equal to 1"
            )
        return CSV
    if content_type in (LIBSVM, "text/libsvm", "text/x-libsvm"):
        return LIBSVM
    if content_type in (PARQUET, "application/x-parquet"):
        return PARQUET
    if content_type in (RECORDIO_PROTOBUF, "application/x-recordio-protobuf"):
        return RECORDIO_PROTOBUF
    raise UserError(
        f"{value} is not an accepted ContentType: " + ", ".join(VALID_CONTENT_TYPES) + "."
    )


def get_size(data_path: str | None) -> int:
    """Total bytes under a channel directory; a hidden file anywhere fails the job."""
    if data_path is None or not os.path.exists(data_path):
        return 0
    if os.path.isfile(data_path):
        return os.path.getsize(data_path)
    total = 0
    for root, _dirs, files in os.walk(data_path):
        for name in files:
            if name.startswith("."):
                raise UserError("Hidden file found in the data path! Remove that before training.")
            total += os.path.getsize(os.path.join(root, name))
    return total


def _is_data_file(directory: str, name: str) -> bool:
    if not os.path.isfile(os.path.join(directory, name)):
        return False
    if name.startswith((".", "_")):
        return False
    return not (".cache" in name and ("dtrain" in name or "dval" in name))


def _sniff_delimiter(line: str) -> str:
    try:
        delimiter = csv.Sniffer().sniff(line).delimiter
    except csv.Error as exc:
        raise UserError(f"Could not determine delimiter on line {line[:50]}:\n{exc}") from exc
    LOG.info("Determined delimiter of CSV input is '%s'", delimiter)
    return delimiter


def _libsvm_feature_count(line: str) -> int:
    """Number of well-formed ``index:value`` pairs, or -1 when the line is not LIBSVM."""
    parts = line.split(" ")
    label = parts[0].split(":")
    if len(label) > 2:
        return -1
    for piece in label:
        try:
            float(piece)
        except ValueError:
            return -1
    count = 0
    for item in parts[1:]:
        if ":" not in item or len(parts[1].split(":")) != 2:
            return -1
        count += 1
    return count


def validate_data_file_path(data_path: str, content_type: str) -> None:
    """First-line format check of the files in the channel's first leaf directory."""
    parsed = get_content_type(content_type)
    if not os.path.exists(data_path):
        raise UserError(f"{data_path} is not a valid path!")
    if os.path.isfile(data_path):
        files = [data_path]
    else:
        leaf = data_path
        for root, dirs, _files in os.walk(data_path):
            if not dirs:
                leaf = root
                break
        files = [os.path.join(leaf, n) for n in sorted(os.listdir(leaf)) if _is_data_file(leaf, n)]
    for path in files:
        with open(path, errors="ignore") as handle:
            if parsed == CSV:
                _sniff_delimiter(handle.readline())
            elif parsed == LIBSVM:
                for line in handle:
                    count = _libsvm_feature_count(line)
                    if count > 1:
                        break
                    if count < 0:
                        raise UserError(
                            f"First line '{line[:50]}...' of file '{Path(path).name}' is not "
                            "'LIBSVM' format. Please ensure the file is in 'LIBSVM' format."
                        )


def _link_inputs(data_path: str, work_dir: Path) -> str:
    """Flatten a channel into one directory of symlinks, as the container does for XGBoost.

    Files deeper than three folder levels are ignored, with a warning.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    counter = 0

    def link(src: str, name: str) -> None:
        nonlocal counter
        counter += 1
        os.symlink(src, work_dir / f"{name}-{counter}")

    def walk(path: str, depth: int) -> None:
        if depth > MAX_FOLDER_DEPTH:
            LOG.warning(
                "The depth of folder %s exceed the limit %s. Files in deeper sub dirs "
                "won't be loaded.",
                data_path,
                MAX_FOLDER_DEPTH,
            )
            return
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.is_file():
                link(entry.path, entry.name)
            elif entry.is_dir():
                walk(entry.path, depth + 1)

    if os.path.isfile(data_path):
        link(data_path, os.path.basename(data_path))
    else:
        walk(data_path, 1)
    return str(work_dir)


def _parquet_matrix(files_path: str) -> Any:
    """The matrix the container loads Parquet into (``pq.read_table(path).to_pandas()
    .to_numpy()``): the same values, rows and column-major layout, so the same model, with
    less memory at the peak.

    The container holds the whole Arrow table and pandas' copy of it at once. Here the
    files are read one at a time, in the order `read_table` reads them, into the matrix.
    It matters locally, where a run's training jobs share one machine's memory instead of
    having an instance each. Plain float columns alike in every file only (as m5flow's
    shards are); a file written by pandas, whose schema carries its index and column types,
    other column types or files that differ take pandas' conversion, as in the container.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    dataset = pq.ParquetDataset(files_path)
    schema = dataset.schema
    footers = [pq.read_metadata(path) for path in dataset.files]
    plain_floats = (
        len(schema) > 0
        and schema.pandas_metadata is None  # pandas' index and extension types
        and all(pa.types.is_floating(column.type) for column in schema)
        and all(footer.schema.to_arrow_schema().equals(schema) for footer in footers)
    )
    if not plain_floats:
        return pq.read_table(files_path).to_pandas().to_numpy()
    rows = [footer.num_rows for footer in footers]
    dtype = np.result_type(*(column.type.to_pandas_dtype() for column in schema))
    matrix = np.empty((sum(rows), len(schema)), dtype=dtype, order="F")
    start = 0
    for path, count in zip(dataset.files, rows, strict=True):
        table = pq.read_table(path)
        for index, column in enumerate(table.columns):
            matrix[start : start + count, index] = column.to_numpy()
        start += count
        del table, column
        pa.default_memory_pool().release_unused()
    return matrix


def quantile_bins(hyperparameters: Mapping[str, Any], host_count: int) -> int | None:
    """The bins of a QuantileDMatrix for the training data (`get_dmatrix`), or None for the
    container's DMatrix.

    Only where the two grow the same model, as tried over 80 hyperparameter sets: one host
    growing trees with `hist`'s own updater. Several hosts sketch their bins together while
    training, through a collective that does not exist yet when the data loads; `gblinear`,
    an `updater` and `process_type` update need the DMatrix's values (with a QuantileDMatrix
    they fail); a `max_bin` under 2 must fail as the container fails it, at training. Takes
    hyperparameters as given or as validated.
    """
    single_hist = hyperparameters.get("tree_method") == "hist" and host_count == 1
    own_grower = (
        not hyperparameters.get("updater")
        and hyperparameters.get("process_type", "default") == "default"
        and hyperparameters.get("booster", "gbtree") in ("gbtree", "dart")
    )
    bins = str(hyperparameters.get("max_bin", 256))
    if single_hist and own_grower and bins.isdigit() and int(bins) >= 2:
        return int(bins)
    return None


def get_dmatrix(
    data_path: str,
    content_type: str,
    work_dir: Path,
    csv_weights: int = 0,
    quantile_bins: int | None = None,
) -> Any:
    """Load a channel into an ``xgboost.DMatrix`` (label in column 0) like the container.

    With `quantile_bins`, Parquet becomes an ``xgboost.QuantileDMatrix`` of that many bins
    instead: it keeps each cell's histogram bin index rather than the cell and its column
    index (8 bytes), and `hist` trees grown from it on one host are the DMatrix's, split for
    split (`tests/local/test_algorithm_data.py`). `quantile_bins()` says when that holds.

    Raises
    ------
    UserError
        ``Failed to load <type> data with exception: ...`` or data without labels.
    """
    import xgboost as xgb

    files_path = _link_inputs(data_path, work_dir)
    if content_type == CSV:
        names = sorted(n for n in os.listdir(files_path) if os.path.isfile(Path(files_path, n)))
        with open(Path(files_path, names[0])) as handle:
            delimiter = _sniff_delimiter(handle.readline())
        uri = f"{files_path}?format=csv&label_column=0&delimiter={delimiter}"
        if csv_weights == 1:
            uri += "&weight_column=1"
        try:
            dmatrix = xgb.DMatrix(uri)
        except Exception as exc:
            raise UserError(f"Failed to load csv data with exception:\n{exc}") from exc
    elif content_type == LIBSVM:
        try:
            dmatrix = xgb.DMatrix(files_path)
        except Exception as exc:
            raise UserError(f"Failed to load libsvm data with exception:\n{exc}") from exc
    elif content_type == PARQUET:
        try:
            data = _parquet_matrix(files_path)
            if quantile_bins is None:
                dmatrix = xgb.DMatrix(data[:, 1:], label=data[:, 0])
            else:
                dmatrix = xgb.QuantileDMatrix(data[:, 1:], label=data[:, 0], max_bin=quantile_bins)
            del data
        except Exception as exc:
            raise UserError(f"Failed to load parquet data with exception:\n{exc}") from exc
    else:
        raise AlgorithmError(f"The local SageMaker cannot read {content_type} data.")
    if dmatrix.get_label().size == 0:
        raise UserError(
            "Got input data without labels. Please check the input data set. If training job is "
            "running on multiple instances, please switch to using single instance if number of "
            "records in the data set is less than number of workers (16 * number of instance) in "
            "the cluster."
        )
    return dmatrix
