"""The three M5 input files: reading them into arrays, and refusing them precisely.

Every problem is one line naming the file, the row or column, what was found and what was
expected ("row N" is line N of the file, the header being row 1; each kind of bad cell is
named once, with its first example and how many there are). All the problems of an upload
are collected before it is refused, so a user fixes it in one round trip, and the refusal
comes before the shard step writes anything.

Reading is the largest cost of the shard step at full M5 scale, so the sales file, in its
canonical layout, goes through a vectorised reader (`csvinput.parse_wide_integers`) several
times faster than a general CSV reader. Anything else (quoted cells, reordered columns, "3.0"
for 3, bad cells) goes through pyarrow as text, slower, but able to name every bad cell.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from m5flow.calendar_prices import read_calendar, read_prices, read_typed_prices, sold_before_priced
from m5flow.csvinput import (
    RowLines,
    decoded,
    first_of,
    header_of,
    missing_columns,
    parse_wide_integers,
    problem,
    quoted,
    read_table,
)
from m5flow.exceptions import InputRejectedError
from m5flow.naming import CALENDAR_FILE, INPUT_FILES, PRICES_FILE, SALES_FILE

SALES_ID_COLUMNS = ("id", "item_id", "dept_id", "cat_id", "store_id", "state_id")
# The M5 hierarchy's id kinds: the sales file's <kind>_id column, M5Data.ids_of(kind).
ID_KINDS = ("item", "dept", "cat", "store", "state")
HORIZON = 28
# Per file, after decompression: 4x the full M5 sales file, 2.5x its prices. The shard
# step peaks near 0.3 GB + the input + 2x the sales + 0.8x the prices (1.1 GB on the full
# M5), so the largest upload accepted stays under 3 GB, inside the shard Lambda's 4 GB
# (bench/shard/README.md).
MAX_INPUT_BYTES = 512 << 20
MAX_UNITS = 1 << 24  # unit sales are held as float32, exact for integers up to 2**24
MIN_DAYS = 2 * HORIZON  # 28 days to validate on, and 28 before them for the first lag
# Ids are held as fixed-width text, as wide as the longest: one 1 MB cell made every id cell
# 1 MB and asked for 6.5 GiB. M5's longest id has 31 characters.
MAX_ID_CHARS = 100
UNITS = "a non-negative integer (unit sales)"
# \Z, not "$", which also matches before a final "\n" (a quoted cell may hold one)
_DAY_COLUMN = re.compile(r"d_([1-9][0-9]*)\Z")
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]+\Z")


@dataclass(frozen=True)
class M5Data:
    """The inputs as arrays: one row per series, one column per day d_1..d_<last_day>.

    Prices are kept weekly (`weekly_prices`: carried forward where weeks are missing, NaN
    before a series' first price) with `day_week` mapping each day to its week, because the
    daily matrix is 240 MB at full M5 scale and each shard group needs only its own rows.
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
    day_week: np.ndarray  # int (last_day + horizon,): the weekly_prices column of each day
    missing_price_weeks: int  # series-weeks whose price was carried forward
    notices: tuple[str, ...] = ()  # what was repaired rather than refused, one line each

    @property
    def last_day(self) -> int:
        return self.sales.shape[1]

    @functools.cached_property
    def never_sold(self) -> np.ndarray:
        """bool per series: no sale on any day of the history (forecast 0, see `forecast`)."""
        return self.sales.max(axis=1) == 0

    def ids_of(self, kind: str) -> np.ndarray:
        """The `kind` id (one of ID_KINDS) of every series."""
        if kind not in ID_KINDS:
            raise ValueError(f"{kind!r} is not one of {', '.join(ID_KINDS)}")
        return getattr(self, f"{kind}_ids")

    @functools.cached_property
    def prices(self) -> np.ndarray:
        """float32 (n_series, last_day + horizon): every series' price on every day."""
        return self.weekly_prices[:, self.day_week]


def first_nonzero(rows: np.ndarray) -> np.ndarray:
    """The column of each row's first non-zero value (its first sale); the number of columns
    where there is none.

    Example
    -------
    >>> first_nonzero(np.array([[0, 3, 0], [0, 0, 0]])).tolist()
    [1, 3]
    """
    sold = rows != 0
    return np.where(sold.any(axis=1), sold.argmax(axis=1), rows.shape[1])


def day_number(column: str) -> int | None:
    """The day a `d_<day>` column holds (d_1 is 1), None for any other column name.

    Example
    -------
    >>> day_number("d_1942"), day_number("d_01"), day_number("id")
    (1942, None, None)
    """
    match = _DAY_COLUMN.match(column)
    return int(match[1]) if match else None


def _day_columns(name: str, header: list[str]) -> tuple[list[str], list[str]]:
    days = [c for c in header if c not in SALES_ID_COLUMNS]
    id_or_day = f"an id column ({', '.join(SALES_ID_COLUMNS)}) or d_<day>"
    odd = [
        (position, column)
        for position, column in enumerate(header, start=1)
        if column not in SALES_ID_COLUMNS and day_number(column) is None
    ]
    if odd:  # the first, and how many: a header of dates made one reason per day (1,941)
        (position, column), count = odd[0], len(odd)
        return days, [problem(name, f"column {position}", quoted(column), id_or_day, count)]
    positions = [p for p, c in enumerate(header, start=1) if c not in SALES_ID_COLUMNS]
    for k, (position, column) in enumerate(zip(positions, days, strict=True), start=1):
        if column != f"d_{k}":
            where = f"column {position}"
            expected = f"d_{k} (d_1, d_2, ... without gaps)"
            if k == 1:  # a history cut at the start, as people do to save space
                expected = (
                    "d_1, the calendar's first day: the history starts there (to upload "
                    "less, number the days from d_1 in both the sales and calendar.csv)"
                )
            return days, [problem(name, where, column, expected)]
    if len(days) < MIN_DAYS:
        found = f"{len(days)} day columns"
        return days, [problem(name, "header", found, f"at least {MIN_DAYS}, d_1..d_{MIN_DAYS}")]
    return days, []


def _unit_cells(array: pa.ChunkedArray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A text column of unit sales as float64, with a mask per kind of bad cell."""
    try:
        values = pc.cast(array, pa.float64()).to_numpy()
        empty = non_numeric = np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Python strings, not fixed-width text as wide as the longest cell (a stray quote can
        # make one cell of the rest of the file)
        text = pd.Series(array.to_numpy(zero_copy_only=False), dtype=object).str.strip()
        empty = (text == "").to_numpy()
        values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
        non_numeric = np.isnan(values) & ~empty & (text.str.lower() != "nan").to_numpy()
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        wrong = ~finite | (values < 0) | (values != np.floor(values))
    return values, {
        "a value, " + UNITS: empty,
        UNITS: non_numeric | (wrong & ~empty),
        f"at most {MAX_UNITS:,} units a day": finite & (values > MAX_UNITS),
    }


def _general_sales(
    name: str, payload: bytes, header: list[str], days: list[str], line: RowLines
) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Read the sales through pyarrow, as text, so that every bad cell can be named."""
    table, reasons = read_table(name, payload, header, {c: pa.string() for c in header}, line)
    if reasons:
        return {}, np.empty((0, len(days)), np.float32), reasons
    cells = {c: table.column(c).to_numpy(zero_copy_only=False) for c in SALES_ID_COLUMNS}
    ids, reasons = _id_columns(name, cells, line)
    if reasons:
        return {}, np.empty((0, len(days)), np.float32), reasons
    sales = np.empty((table.num_rows, len(days)), dtype=np.float32)
    found: dict[str, list] = {}  # expected -> [where, first value, expected, count]
    for j, column in enumerate(days):
        values, kinds = _unit_cells(table.column(column))
        for expected, bad in kinds.items():
            if bad.any():
                row = first_of(bad)
                cell = quoted(table.column(column)[row].as_py())
                where = f"row {line(row)}, column {column}"
                found.setdefault(expected, [where, cell, expected, 0])[3] += int(bad.sum())
        sales[:, j] = values
    reasons += [problem(name, *entry) for entry in found.values()]
    return ids, sales, reasons


def _sales(
    name: str, payload: bytes, line: RowLines
) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    header = header_of(payload)
    reasons = missing_columns(name, header, SALES_ID_COLUMNS)
    days, day_reasons = _day_columns(name, header)
    reasons += day_reasons if len(header) > 1 else []  # one column: the header says it all
    if reasons:
        return {}, np.empty((0, len(days)), np.float32), reasons
    if tuple(header[: len(SALES_ID_COLUMNS)]) == SALES_ID_COLUMNS:
        parsed = parse_wide_integers(payload, len(SALES_ID_COLUMNS))
        if parsed is not None:
            text, sales = parsed
            if not text:
                reasons.append(problem(name, "content", "a header only", "one row per series"))
            cells = {c: [row[k] for row in text] for k, c in enumerate(SALES_ID_COLUMNS)}
            ids, long = _id_columns(name, cells, line)
            if long:
                return {}, np.empty((0, len(days)), np.float32), long
            return ids, sales, reasons
    return _general_sales(name, payload, header, days, line)


def _id_columns(
    name: str, cells: Mapping[str, Sequence[str]], line: RowLines
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The id columns (Python strings, by column) as fixed-width text; none, and the reason,
    when a cell is past MAX_ID_CHARS: fixed-width text is as wide as its longest cell."""
    long = np.column_stack([
        np.fromiter(map(len, cells[c]), dtype=np.int64, count=len(cells[c])) > MAX_ID_CHARS
        for c in SALES_ID_COLUMNS
    ])  # fmt: skip
    if long.any():
        row, k = (int(i[0]) for i in np.nonzero(long))
        column = SALES_ID_COLUMNS[k]
        found = f"{quoted(cells[column][row])}, {int(long.sum()):,} such cell(s)"
        where = f"row {line(row)}, column {column}"
        return {}, [problem(name, where, found, f"an id of at most {MAX_ID_CHARS} characters")]
    return {c: np.asarray(cells[c], dtype=str) for c in SALES_ID_COLUMNS}, []


def _id_reasons(name: str, ids: dict[str, np.ndarray], line: RowLines) -> list[str]:
    """Ids filled in, unique, made of item_id and store_id, and safe in an unquoted CSV
    cell; one row per item and store; one dept and category per item, one category per
    department, one state per store (the M5 hierarchy the scores aggregate over)."""
    reasons = []

    def report(column: str, bad: np.ndarray, found: str, expected: str) -> None:
        if bad.any():
            where = f"row {line(first_of(bad))}, column {column}"
            reasons.append(problem(name, where, found, expected, int(bad.sum())))

    for column in SALES_ID_COLUMNS:
        report(column, ids[column] == "", "an empty cell", "a value")
    frame = pd.DataFrame(ids)
    for keys, column, expected in ((["id"], "id", "a unique id"),
                                   (["item_id", "store_id"], "store_id",
                                    "one row per item_id and store_id")):  # fmt: skip
        repeated = frame.duplicated(keys).to_numpy()
        if repeated.any():
            row = first_of(repeated)
            earlier = first_of((frame[keys] == frame[keys].iloc[row]).all(axis=1).to_numpy())
            found = f"{quoted(ids[column][row])} as in row {line(earlier)}"
            report(column, repeated, found, f"{expected} ({', '.join(keys)} repeat)")
    prefix = np.strings.add(np.strings.add(ids["item_id"], "_"), ids["store_id"])
    ok = (ids["id"] == prefix) | np.strings.startswith(ids["id"], np.strings.add(prefix, "_"))
    if not ok.all():
        row = first_of(~ok)
        report("id", ~ok, quoted(ids["id"][row]), f"item_id_store_id[_suffix], {prefix[row]}...")
    for child, parent in (("item_id", "dept_id"), ("item_id", "cat_id"),
                          ("dept_id", "cat_id"), ("store_id", "state_id")):  # fmt: skip
        # The rows that disagree with most of their child's rows are the ones named, not
        # every row that differs from the first one. A tie goes to the value the child's
        # id starts with, as M5's ids do (CA_1 is in CA, FOODS_3_002 in FOODS_3), else to
        # the value seen first. Empty cells are named above and count for nothing here.
        filled = frame[frame[parent] != ""]
        counts = filled.groupby([child, parent], sort=False).size()
        named_by = [c.startswith(f"{p}_") for c, p in counts.index]
        majority = (counts + 0.5 * np.array(named_by)).groupby(level=0, sort=False).idxmax()
        usual = frame[child].map(pd.Series([p for _, p in majority], index=majority.index))
        usual_parent = usual.fillna("").to_numpy(dtype=str)
        clash = (ids[parent] != usual_parent) & (ids[parent] != "") & (usual_parent != "")
        if clash.any():
            row = first_of(clash)
            agreeing = first_of(
                (ids[child] == ids[child][row]) & (ids[parent] == usual_parent[row])
            )
            found = f"{quoted(ids[parent][row])} for {child} {quoted(ids[child][row])}"
            expected = (f"{quoted(usual_parent[row])} as in row {line(agreeing)} "
                        f"(one {parent} per {child})")  # fmt: skip
            report(parent, clash, found, expected)
    # Ids go unquoted into the inference CSV that Batch Transform splits on commas, and into
    # submission files that people open in spreadsheets.
    safe = np.array([_SAFE_ID.match(value) is not None for value in ids["id"]], dtype=bool)
    unsafe = ~safe & (ids["id"] != "")
    if unsafe.any():
        report(
            "id",
            unsafe,
            quoted(ids["id"][first_of(unsafe)]),
            "only ASCII letters, digits, '_', '-', '.'",
        )
    formula = np.isin(np.strings.slice(ids["id"], 0, 1), ["=", "+", "-", "@"])
    if formula.any():
        found = quoted(ids["id"][first_of(formula)])
        report("id", formula, found, "an id that does not start like a spreadsheet formula")
    return reasons


def parse_inputs(files: dict[str, bytes], *, max_bytes: int = MAX_INPUT_BYTES) -> M5Data:
    """Parse and validate the three M5 files.

    Parameters
    ----------
    files
        File name (`SALES_FILE`, `CALENDAR_FILE`, `PRICES_FILE`) -> the object's bytes, plain
        or gzip-compressed.
    max_bytes
        The largest file accepted, before or after decompression.

    Returns
    -------
    M5Data
        Its `notices` say what was repaired or let through: price weeks carried forward,
        series never sold and never priced, sales before a series' first price.

    Raises
    ------
    InputRejectedError
        With one reason per problem. The calendar is checked against the sales' days, and
        the prices against both, so a file is checked once the files it depends on passed.

    Example
    -------
    >>> data = parse_inputs({n: (folder / n).read_bytes() for n in INPUT_FILES})
    >>> data.sales.shape, data.last_day
    ((30, 1941), 1941)
    """
    reasons: list[str] = []
    payloads: dict[str, bytes] = {}
    for name in INPUT_FILES:
        if name not in files:
            expected = "all of " + ", ".join(INPUT_FILES)
            reasons.append(problem(name, "upload", "no such file", expected))
            continue
        try:
            payloads[name] = decoded(name, files[name], max_bytes)
        except InputRejectedError as exc:
            reasons += exc.reasons
    if SALES_FILE not in payloads:
        raise InputRejectedError(reasons)
    typed_prices = read_typed_prices(payloads[PRICES_FILE]) if PRICES_FILE in payloads else None
    sales_payload = payloads.pop(SALES_FILE)
    line = RowLines(sales_payload)  # the sales' rows by their line, should a reason need one
    ids, sales, sales_reasons = _sales(SALES_FILE, sales_payload, line)
    if ids:
        sales_reasons += _id_reasons(SALES_FILE, ids, line)
    reasons += sales_reasons
    del sales_payload, line  # the largest input: not held while the others are read
    if reasons:
        raise InputRejectedError(reasons)
    states = sorted(set(ids["state_id"].tolist()))
    calendar, weeks, reasons = read_calendar(
        CALENDAR_FILE, payloads.pop(CALENDAR_FILE), sales.shape[1], HORIZON, states
    )
    if reasons:
        raise InputRejectedError(reasons)
    first_sale = first_nonzero(sales)  # 0-based
    priced, reasons = read_prices(
        PRICES_FILE,
        payloads.pop(PRICES_FILE),
        ids,
        calendar,
        weeks,
        first_sale < sales.shape[1],
        typed_prices,
    )
    if priced is None:
        raise InputRejectedError(reasons)
    return M5Data(
        ids=ids["id"],
        item_ids=ids["item_id"],
        dept_ids=ids["dept_id"],
        cat_ids=ids["cat_id"],
        store_ids=ids["store_id"],
        state_ids=ids["state_id"],
        sales=sales,
        calendar=calendar,
        weekly_prices=priced.weekly,
        day_week=priced.day_week,
        missing_price_weeks=priced.missing_weeks,
        notices=priced.notices + sold_before_priced(PRICES_FILE, ids, sales, priced, first_sale),
    )
