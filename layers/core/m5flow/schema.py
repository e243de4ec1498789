"""The three M5 input files: reading them into arrays, and refusing them precisely.

Every problem is reported as one line naming the file, the row or column, what was found and
what was expected ("row N" is line N of the file, the header being row 1). All the problems
of an upload are collected before it is refused, so a user fixes it in one round trip. A
rejection happens here, before the shard step writes anything.

Reading is the largest cost of the shard step at full M5 scale, so the sales file, in its
canonical layout, is parsed by a vectorised reader (`m5flow.widecsv`) several times faster
than a general CSV reader; anything else (quoted cells, reordered columns, "3.0" for 3, bad
cells) goes through pyarrow, which also produces the precise reasons.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from m5flow import widecsv
from m5flow.exceptions import InputRejectedError

SALES_FILE = "sales_train_evaluation.csv"
CALENDAR_FILE = "calendar.csv"
PRICES_FILE = "sell_prices.csv"
TRUTH_FILE = "sales_test_evaluation.csv"
INPUT_FILES = (SALES_FILE, CALENDAR_FILE, PRICES_FILE)

SALES_ID_COLUMNS = ("id", "item_id", "dept_id", "cat_id", "store_id", "state_id")
CALENDAR_COLUMNS = (
    "date", "wm_yr_wk", "weekday", "wday", "month", "year", "d",
    "event_name_1", "event_type_1", "event_name_2", "event_type_2",
    "snap_CA", "snap_TX", "snap_WI",
)  # fmt: skip
PRICES_COLUMNS = ("store_id", "item_id", "wm_yr_wk", "sell_price")
EVENT_TYPES = ("Cultural", "National", "Religious", "Sporting")
HORIZON = 28
# Per file, after decompression. The full M5 files are 122 MB and 204 MB; the shard step's
# memory grows with the input (about 4x the sales file's bytes plus 2x the prices'), so this
# bound keeps anything accepted inside the shard Lambda (see bench/shard/README.md).
MAX_INPUT_BYTES = 1 << 30
# Unit sales are held as float32, exact for integers up to 2**24.
MAX_UNITS = 1 << 24
# 28 days to validate on, and 28 before them for the first lag.
MIN_DAYS = 2 * HORIZON
_DAY_COLUMN = re.compile(r"^d_([1-9][0-9]*)$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_ARCHIVES = {b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_ROWS_QUOTED = 3  # ragged rows quoted per file before "and N more"


@dataclass(frozen=True)
class M5Data:
    """The inputs as arrays: one row per series, one column per day d_1..d_<last_day>.

    Prices are kept weekly (`weekly_prices`, carried forward where weeks are missing, NaN
    before an item's first price) with `day_week` mapping each day to its week: the daily
    matrix would be 240 MB at full M5 scale, and each shard group expands only its rows.
    """

    ids: np.ndarray  # str, one per series, exactly as uploaded
    item_ids: np.ndarray
    dept_ids: np.ndarray
    cat_ids: np.ndarray
    store_ids: np.ndarray
    state_ids: np.ndarray
    sales: np.ndarray  # float32 (n_series, last_day), non-negative integers
    calendar: pd.DataFrame  # one row per day d_1..d_<last_day + horizon>, in day order
    weekly_prices: np.ndarray  # float32 (n_series, n_weeks)
    day_week: np.ndarray  # int (last_day + horizon,): column of weekly_prices of each day
    missing_price_weeks: int  # price weeks carried forward from an earlier week
    notices: tuple[str, ...] = ()  # what was repaired rather than refused, one line each

    @property
    def last_day(self) -> int:
        return self.sales.shape[1]

    @functools.cached_property
    def prices(self) -> np.ndarray:
        """float32 (n_series, last_day + horizon): the daily price of every series."""
        return self.weekly_prices[:, self.day_week]


def _problem(name: str, where: str, found: str, expected: str, count: int = 1) -> str:
    more = f" ({count:,} such cells)" if count > 1 else ""
    return f"{name}: {where}: found {found}; expected {expected}{more}"


def _decoded(name: str, payload: bytes | None, max_bytes: int) -> bytes:
    """The CSV text of one upload: size-checked, gunzipped, without a byte-order mark.

    A `.csv` object whose bytes are gzip is accepted and decompressed, because `aws s3 cp`
    of a gzipped file (or an upload with Content-Encoding: gzip) keeps the name; the limit
    applies to the decompressed size, so a gzip bomb is refused before it is inflated.
    """
    if payload is None:
        raise InputRejectedError([f"{name}: not found; expected all of {', '.join(INPUT_FILES)}"])
    if len(payload) > max_bytes:
        raise InputRejectedError(
            [f"{name}: {len(payload):,} bytes; expected at most {max_bytes:,} bytes"]
        )
    if payload[:2] == b"\x1f\x8b":
        payload = _gunzip(name, payload, max_bytes)
    for magic, kind in _ARCHIVES.items():
        if payload.startswith(magic):
            raise InputRejectedError(
                [f"{name}: found a {kind} archive; expected a CSV file (plain or gzip)"]
            )
    payload = payload.removeprefix(b"\xef\xbb\xbf")
    if not payload.strip():
        raise InputRejectedError([f"{name}: the file is empty; expected a header and rows"])
    if not payload.isascii():
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            row = payload.count(b"\n", 0, exc.start) + 1
            raise InputRejectedError(
                [f"{name}: row {row}: found byte {payload[exc.start]:#04x}; expected UTF-8 text"]
            ) from None
    return payload


def _gunzip(name: str, payload: bytes, max_bytes: int) -> bytes:
    import zlib

    out: list[bytes] = []
    size = 0
    rest = payload
    try:
        while rest:  # gzip files may hold several members, one after another
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out.append(inflater.decompress(rest, max_bytes + 1 - size))
            size += len(out[-1])
            if size > max_bytes or inflater.unconsumed_tail:
                raise InputRejectedError(
                    [f"{name}: decompresses to more than {max_bytes:,} bytes; "
                     f"expected at most {max_bytes:,} bytes"]
                )  # fmt: skip
            if not inflater.eof:
                raise zlib.error("the stream ends early")
            rest = inflater.unused_data
    except zlib.error as exc:
        raise InputRejectedError(
            [f"{name}: gzip data is corrupt or truncated ({exc}); "
             "expected a complete gzip file or a plain CSV"]
        ) from None  # fmt: skip
    return b"".join(out)


def _header(payload: bytes) -> list[str]:
    line = payload[: payload.find(b"\n")] if b"\n" in payload else payload
    return next(csv.reader([line.decode("utf-8").rstrip("\r")]), [])


def _read_table(
    name: str, payload: bytes, header: list[str], types: dict[str, pa.DataType]
) -> tuple[pa.Table, list[str]]:
    """Read with pyarrow; rows with the wrong number of fields become reasons."""
    ragged: list[pacsv.InvalidRow] = []

    def skip(row: pacsv.InvalidRow) -> str:
        ragged.append(row)
        return "skip"

    def read(threads: bool) -> pa.Table:
        return pacsv.read_csv(
            io.BytesIO(payload),
            read_options=pacsv.ReadOptions(use_threads=threads, block_size=4 << 20),
            parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(types), strings_can_be_null=False
            ),
        )

    try:
        table = read(threads=True)
        if ragged:  # only a single-threaded read knows the row numbers
            ragged.clear()
            table = read(threads=False)
    except pa.ArrowInvalid as exc:
        raise InputRejectedError([f"{name}: not a readable CSV ({exc})"]) from None
    reasons = [
        _problem(name, f"row {row.number}", f"{row.actual_columns} fields",
                 f"{row.expected_columns}, as in the header")
        for row in ragged[:_ROWS_QUOTED]
    ]  # fmt: skip
    if len(ragged) > _ROWS_QUOTED:
        reasons.append(f"{name}: {len(ragged) - _ROWS_QUOTED:,} more rows with the wrong number "
                       f"of fields; expected {len(header)} in every row")  # fmt: skip
    if table.num_rows == 0 and not ragged:
        reasons.append(f"{name}: header only; expected rows after the header")
    return table, reasons


def _missing_columns(name: str, header: list[str], expected: tuple[str, ...]) -> list[str]:
    reasons = [
        f"{name}: column {column!r} appears {header.count(column)} times; expected it once"
        for column in dict.fromkeys(header) if header.count(column) > 1
    ]  # fmt: skip
    missing = [c for c in expected if c not in header]
    if missing:
        shown = ", ".join(header[:8]) + (", ..." if len(header) > 8 else "")
        reasons.append(f"{name}: missing column(s) {', '.join(missing)}; expected "
                       f"{', '.join(expected)} (found {shown})")  # fmt: skip
    return reasons


def _day_columns(name: str, header: list[str]) -> tuple[list[str], list[str]]:
    days = [c for c in header if c not in SALES_ID_COLUMNS]
    reasons = []
    for position, column in enumerate(header, start=1):
        if column not in SALES_ID_COLUMNS and not _DAY_COLUMN.match(column):
            reasons.append(_problem(name, f"column {position}", repr(column),
                                    f"an id column ({', '.join(SALES_ID_COLUMNS)}) or d_<day>"))  # fmt: skip
    if reasons:
        return days, reasons
    for k, column in enumerate(days, start=1):
        if column != f"d_{k}":
            return days, [_problem(name, f"column {header.index(column) + 1}", column,
                                   f"d_{k} (day columns run d_1, d_2, ... without gaps)")]  # fmt: skip
    if len(days) < MIN_DAYS:
        reasons.append(_problem(name, "header", f"{len(days)} day columns",
                                f"at least {MIN_DAYS} (d_1..d_{MIN_DAYS})"))  # fmt: skip
    return days, reasons


def _cell_problems(
    name: str, column: str, rows: np.ndarray, values: list[str], kinds: dict[str, np.ndarray]
) -> list[str]:
    """One reason per kind of bad cell in a column: the first example and the count."""
    reasons = []
    for expected, bad in kinds.items():
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            reasons.append(_problem(name, f"row {rows[first] + 2}, column {column}",
                                    repr(values[first]), expected, int(bad.sum())))  # fmt: skip
    return reasons


def _number_column(array: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A text column as float64, with masks of empty and non-numeric cells (both NaN)."""
    text = array.to_numpy(zero_copy_only=False).astype(str)
    stripped = np.strings.strip(text)
    empty = stripped == ""
    values = pd.to_numeric(pd.Series(stripped), errors="coerce").to_numpy(np.float64)
    lowered = np.strings.lower(stripped)
    literal_nan = np.isin(lowered, ["nan", "+nan", "-nan"])
    return values, empty, np.isnan(values) & ~empty & ~literal_nan


def _general_sales(
    name: str, payload: bytes, header: list[str], days: list[str]
) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Read the sales through pyarrow, as text, so that every bad cell can be named."""
    table, reasons = _read_table(name, payload, header, {c: pa.string() for c in header})
    if reasons:
        return {}, np.empty((0, 0), np.float32), reasons
    ids = {c: table.column(c).to_numpy(zero_copy_only=False).astype(str) for c in SALES_ID_COLUMNS}
    sales = np.empty((table.num_rows, len(days)), dtype=np.float32)
    found: dict[str, tuple[str, int]] = {}  # expected -> (first reason, count)
    expectation = "a non-negative integer (unit sales)"
    for j, column in enumerate(days):
        array = table.column(column)
        try:
            values = pc.cast(array, pa.float64()).to_numpy()
            empty = non_numeric = np.zeros(len(values), dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values, empty, non_numeric = _number_column(array)
        number = ~empty & ~non_numeric
        kinds = {
            "a value (" + expectation + ")": empty,
            expectation: non_numeric | (number & ~np.isfinite(values))
            | (number & np.isfinite(values) & ((values < 0) | (values != np.round(values)))),
            f"at most {MAX_UNITS:,} units a day": number & np.isfinite(values) & (values > MAX_UNITS),
        }  # fmt: skip
        if any(bad.any() for bad in kinds.values()):
            rows = np.arange(len(values))
            text = array.to_numpy(zero_copy_only=False).astype(str)
            for expected, bad in kinds.items():
                if bad.any():
                    line = _cell_problems(name, column, rows, list(text[bad][:1]), {expected: bad[bad]})
                    first = int(np.flatnonzero(bad)[0])
                    line = _problem(name, f"row {first + 2}, column {column}", repr(text[first]), expected)
                    reason, count = found.get(expected, (line, 0))
                    found[expected] = (reason, count + int(bad.sum()))
        sales[:, j] = values
    for reason, count in found.values():
        reasons.append(reason + (f" ({count:,} such cells)" if count > 1 else ""))
    return ids, sales, reasons
