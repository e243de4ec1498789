"""The three M5 input files: reading them into arrays, and refusing them precisely.

Every problem found is reported as one line naming the file, the row or column, what was
found and what was expected, and all problems are collected before anything is refused, so a
user fixes an upload in one round trip instead of one error at a time.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

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
HORIZON = 28
MAX_INPUT_BYTES = 2 * 1024**3
_DAY_COLUMN = re.compile(r"^d_(\d+)$")
_MAX_REASONS = 20
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class M5Data:
    """The inputs as arrays: one row per series, one column per day d_1..d_<last_day>.

    `prices` spans the training days and the forecast horizon, weekly prices spread over
    days and carried forward where weeks are missing (NaN before an item's first price).
    """

    ids: np.ndarray  # str, one per series, exactly as uploaded
    item_ids: np.ndarray
    dept_ids: np.ndarray
    cat_ids: np.ndarray
    store_ids: np.ndarray
    state_ids: np.ndarray
    sales: np.ndarray  # float32 (n_series, last_day)
    calendar: pd.DataFrame  # one row per day d_1..d_<last_day + horizon>, in day order
    prices: np.ndarray  # float32 (n_series, last_day + horizon)
    missing_price_weeks: int  # price weeks carried forward from an earlier week

    @property
    def last_day(self) -> int:
        return self.sales.shape[1]


def _read_csv(name: str, payload: bytes) -> pa.Table:
    if not payload.strip():
        raise InputRejectedError([f"{name}: the file is empty; expected a CSV with a header row"])
    if payload[:2] == b"\x1f\x8b":
        raise InputRejectedError(
            [f"{name}: the file is gzip-compressed; upload the plain CSV (uncompressed)"]
        )
    if len(payload) > MAX_INPUT_BYTES:
        raise InputRejectedError(
            [f"{name}: {len(payload)} bytes; at most {MAX_INPUT_BYTES} bytes are accepted"]
        )
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputRejectedError(
            [f"{name}: byte {exc.start} is not UTF-8; save the file as UTF-8 CSV"]
        ) from None
    try:
        return pacsv.read_csv(
            io.BytesIO(payload),
            read_options=pacsv.ReadOptions(block_size=64 << 20),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        raise InputRejectedError([f"{name}: not a readable CSV: {exc}"]) from None


def _missing_columns(name: str, table: pa.Table, expected: tuple[str, ...]) -> list[str]:
    missing = [c for c in expected if c not in table.column_names]
    if not missing:
        return []
    return [
        f"{name}: missing column(s) {', '.join(missing)}; expected {', '.join(expected)}"
        f" (found {', '.join(table.column_names[:8])}{'...' if table.num_columns > 8 else ''})"
    ]


def _day_columns(name: str, columns: list[str]) -> tuple[list[str], list[str]]:
    days = [c for c in columns if c not in SALES_ID_COLUMNS]
    reasons = []
    numbers = []
    for column in days:
        match = _DAY_COLUMN.match(column)
        if match is None:
            reasons.append(f"{name}: column {column!r} is neither an id column nor d_<day>")
        else:
            numbers.append(int(match.group(1)))
    if not numbers:
        reasons.append(f"{name}: no d_<day> columns; expected d_1..d_<last day>")
    elif numbers != list(range(1, len(numbers) + 1)):
        gap = next(i + 1 for i, n in enumerate(numbers) if n != i + 1)
        reasons.append(
            f"{name}: day columns must run d_1, d_2, ... without gaps; "
            f"column {len(SALES_ID_COLUMNS) + gap} is d_{numbers[gap - 1]}, expected d_{gap}"
        )
    return days, reasons


def _sales_matrix(name: str, table: pa.Table, days: list[str]) -> tuple[np.ndarray, list[str]]:
    sales = np.empty((table.num_rows, len(days)), dtype=np.float32)
    reasons: list[str] = []
    for j, column in enumerate(days):
        values = table.column(column)
        if not pa.types.is_integer(values.type) and not pa.types.is_floating(values.type):
            reasons.append(
                f"{name}: column {column} holds non-numeric values; expected unit sales "
                "(non-negative integers)"
            )
            continue
        array = values.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(array) | (array < 0) | (array != np.round(array)))
        if bad.size:
            reasons.append(
                f"{name}: row {bad[0] + 2}, column {column}: found {array[bad[0]]!r}; "
                f"expected a non-negative integer ({bad.size} such cell(s) in this column)"
            )
        sales[:, j] = array
        if len(reasons) >= _MAX_REASONS:
            break
    return sales, reasons


def _id_reasons(name: str, ids: dict[str, np.ndarray]) -> list[str]:
    reasons = []
    unique, counts = np.unique(ids["id"], return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1]
        reasons.append(f"{name}: duplicate id(s) {', '.join(dup[:5])}; every id must be unique")
    expected = np.char.add(np.char.add(np.char.add(ids["item_id"], "_"), ids["store_id"]), "_")
    consistent = np.char.startswith(ids["id"].astype(str), expected.astype(str))
    if not consistent.all():
        row = int(np.flatnonzero(~consistent)[0])
        reasons.append(
            f"{name}: row {row + 2}: id {ids['id'][row]!r} does not start with "
            f"item_id_store_id {expected[row]!r}"
        )
    unsafe = ~np.array([_SAFE_ID.match(value) is not None for value in ids["id"]], dtype=bool)
    if unsafe.any():
        row = int(np.flatnonzero(unsafe)[0])
        reasons.append(
            f"{name}: row {row + 2}: id {ids['id'][row]!r} has characters other than letters, "
            "digits, '_', '-' and '.'"
        )
    first_char = np.array([value[:1] for value in ids["id"]])
    formula = np.isin(first_char, ["=", "+", "-", "@"])
    if formula.any():
        row = int(np.flatnonzero(formula)[0])
        reasons.append(
            f"{name}: row {row + 2}: id {ids['id'][row]!r} starts like a spreadsheet formula"
        )
    return reasons


def _calendar(name: str, table: pa.Table, last_day: int) -> tuple[pd.DataFrame, list[str]]:
    reasons = _missing_columns(name, table, CALENDAR_COLUMNS)
    if reasons:
        return pd.DataFrame(), reasons
    calendar = table.select(list(CALENDAR_COLUMNS)).to_pandas()
    day_numbers = pd.to_numeric(calendar["d"].str.removeprefix("d_"), errors="coerce")
    needed = last_day + HORIZON
    if day_numbers.isna().any():
        row = int(np.flatnonzero(day_numbers.isna())[0])
        reasons.append(f"{name}: row {row + 2}: d is {calendar['d'][row]!r}; expected d_<day>")
        return calendar, reasons
    calendar = calendar.assign(day=day_numbers.astype(int)).sort_values("day")
    have = set(calendar["day"])
    absent = [d for d in range(1, needed + 1) if d not in have]
    if absent:
        reasons.append(
            f"{name}: {len(absent)} day(s) missing, first d_{absent[0]}; expected every day "
            f"d_1..d_{needed} (the {last_day} sales days and the {HORIZON} forecast days)"
        )
        return calendar, reasons
    calendar = calendar[calendar["day"] <= needed].reset_index(drop=True)
    return calendar, reasons


def _prices(
    name: str, table: pa.Table, data_ids: dict[str, np.ndarray], calendar: pd.DataFrame
) -> tuple[np.ndarray, int, list[str]]:
    reasons = _missing_columns(name, table, PRICES_COLUMNS)
    n_series, n_days = len(data_ids["id"]), len(calendar)
    if reasons:
        return np.empty((n_series, n_days), np.float32), 0, reasons
    frame = table.select(list(PRICES_COLUMNS)).to_pandas()
    price = pd.to_numeric(frame["sell_price"], errors="coerce")
    if price.isna().any() or (price <= 0).any():
        row = int(np.flatnonzero(price.isna() | (price <= 0))[0])
        reasons.append(
            f"{name}: row {row + 2}: sell_price {frame['sell_price'][row]!r}; "
            "expected a positive number"
        )
        return np.empty((n_series, n_days), np.float32), 0, reasons
    weeks = np.sort(calendar["wm_yr_wk"].unique())
    series_of = pd.Series(
        np.arange(n_series),
        index=pd.MultiIndex.from_arrays([data_ids["store_id"], data_ids["item_id"]]),
    )
    rows = series_of.reindex(pd.MultiIndex.from_arrays([frame["store_id"], frame["item_id"]]))
    cols = np.searchsorted(weeks, frame["wm_yr_wk"].to_numpy())
    known = rows.notna().to_numpy() & (cols < len(weeks))
    known[known] &= weeks[cols[known]] == frame["wm_yr_wk"].to_numpy()[known]
    weekly = np.full((n_series, len(weeks)), np.nan, dtype=np.float32)
    weekly[rows.to_numpy()[known].astype(int), cols[known]] = price.to_numpy()[known]
    observed = ~np.isnan(weekly)
    # Carry the last known price forward: index of the latest observed week per cell.
    last_seen = np.where(observed, np.arange(len(weeks)), -1)
    np.maximum.accumulate(last_seen, axis=1, out=last_seen)
    started = last_seen >= 0
    filled = np.where(started, weekly[np.arange(n_series)[:, None], last_seen.clip(0)], np.nan)
    missing_weeks = int((started & ~observed).sum())
    unpriced = ~started.any(axis=1)
    if unpriced.any():
        reasons.append(
            f"{name}: no price for {int(unpriced.sum())} series, e.g. store_id "
            f"{data_ids['store_id'][unpriced][0]} item_id {data_ids['item_id'][unpriced][0]}; "
            "expected at least one week per item and store"
        )
    day_week = np.searchsorted(weeks, calendar["wm_yr_wk"].to_numpy())
    return filled[:, day_week].astype(np.float32), missing_weeks, reasons


def parse_inputs(files: dict[str, bytes]) -> M5Data:
    """Parse and validate the three M5 files (file name -> raw bytes).

    Raises
    ------
    InputRejectedError
        With one readable reason per problem, when any file is malformed.
    """
    reasons: list[str] = []
    tables: dict[str, pa.Table] = {}
    for name in INPUT_FILES:
        try:
            tables[name] = _read_csv(name, files[name])
        except InputRejectedError as exc:
            reasons.extend(exc.reasons)
    if reasons:
        raise InputRejectedError(reasons)

    sales_table = tables[SALES_FILE]
    reasons += _missing_columns(SALES_FILE, sales_table, SALES_ID_COLUMNS)
    days, day_reasons = _day_columns(SALES_FILE, sales_table.column_names)
    reasons += day_reasons
    if sales_table.num_rows == 0:
        reasons.append(f"{SALES_FILE}: header only; expected one row per series")
    if reasons:
        raise InputRejectedError(reasons)
    ids = {
        c: pc.cast(sales_table.column(c), pa.string()).to_numpy(zero_copy_only=False).astype(str)
        for c in SALES_ID_COLUMNS
    }
    reasons += _id_reasons(SALES_FILE, ids)
    sales, sales_reasons = _sales_matrix(SALES_FILE, sales_table, days)
    reasons += sales_reasons
    calendar, calendar_reasons = _calendar(CALENDAR_FILE, tables[CALENDAR_FILE], len(days))
    reasons += calendar_reasons
    if reasons:
        raise InputRejectedError(reasons)
    prices, missing_weeks, price_reasons = _prices(PRICES_FILE, tables[PRICES_FILE], ids, calendar)
    if price_reasons:
        raise InputRejectedError(price_reasons)
    return M5Data(
        ids=ids["id"],
        item_ids=ids["item_id"],
        dept_ids=ids["dept_id"],
        cat_ids=ids["cat_id"],
        store_ids=ids["store_id"],
        state_ids=ids["state_id"],
        sales=sales,
        calendar=calendar,
        prices=prices,
        missing_price_weeks=missing_weeks,
    )
