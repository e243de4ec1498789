"""The calendar and the prices of an M5 upload, checked against the sales they go with.

The calendar must hold every sales day and the forecast days, in order, with consistent
dates, months, years and weeks; the prices are spread over the calendar's weeks per series,
carried forward where a week is missing (a notice, not a refusal). Reasons follow
`csvinput.problem`, like every input check of the shard step.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from m5flow.csvinput import (
    RowLines,
    first_of,
    header_of,
    missing_columns,
    problem,
    quoted,
    read_table,
    typed_csv,
)

CALENDAR_COLUMNS = (
    "date", "wm_yr_wk", "weekday", "wday", "month", "year", "d",
    "event_name_1", "event_type_1", "event_name_2", "event_type_2",
    "snap_CA", "snap_TX", "snap_WI",
)  # fmt: skip
PRICES_COLUMNS = ("store_id", "item_id", "wm_yr_wk", "sell_price")
EVENT_TYPES = ("Cultural", "National", "Religious", "Sporting")
_MAX_PRICE = 1e6  # per unit; far above any retail price, far below float32 overflow
_CALENDAR_INTEGERS = {  # column -> (lowest, highest, what is expected)
    "wm_yr_wk": (1, 10**9, "a week number (a positive integer)"),
    "wday": (1, 7, "an integer 1..7"),
    "month": (1, 12, "an integer 1..12"),
    "year": (1, 9999, "a year (a positive integer)"),
}


def read_calendar(
    name: str, payload: bytes, sales_days: int, horizon: int, states: list[str]
) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """The calendar of the sales days and the forecast's in day order, and every week of the
    file."""
    n_days = sales_days + horizon
    header = header_of(payload)
    snaps = tuple(f"snap_{state}" for state in states)
    needed = tuple(c for c in CALENDAR_COLUMNS if not c.startswith("snap_")) + snaps
    nothing = pd.DataFrame(), np.empty(0, np.int64)
    reasons = missing_columns(name, header, needed)
    if reasons:
        return *nothing, reasons
    line = RowLines(payload)
    table, reasons = read_table(name, payload, header, {c: pa.string() for c in needed}, line)
    if reasons:
        return *nothing, reasons
    frame = table.to_pandas()

    def report(column: str, bad: np.ndarray, expected: str) -> None:
        if bad.any():
            row = first_of(bad)
            found, where = quoted(frame[column].iat[row]), f"row {line(row)}, column {column}"
            reasons.append(problem(name, where, found, expected, int(bad.sum())))

    numbers = {}
    limits = {**_CALENDAR_INTEGERS, **{s: (0, 1, "0 or 1") for s in snaps}}
    for column, (low, high, expected) in limits.items():
        values = pd.to_numeric(frame[column].str.strip(), errors="coerce").to_numpy(np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values != np.floor(values))
            bad |= (values < low) | (values > high)
        report(column, bad, expected)
        numbers[column] = np.where(bad, 0, values).astype(np.int64)
    day_names = frame["d"].str.fullmatch(r"d_[1-9][0-9]*").to_numpy(bool)
    report("d", ~day_names, "d_<day>")
    too_long = day_names & (frame["d"].str.len().to_numpy() > 11)  # past int64 and any calendar
    report("d", too_long, "d_<day> with a day number of at most 9 digits")
    day_names = day_names & ~too_long
    for column in ("event_type_1", "event_type_2"):
        expected = f"one of {', '.join(EVENT_TYPES)}, or empty"
        report(column, ~frame[column].isin(("", *EVENT_TYPES)).to_numpy(), expected)
    dates = pd.to_datetime(frame["date"], format="%Y-%m-%d", errors="coerce")
    report("date", dates.isna().to_numpy(), "a date as YYYY-MM-DD")
    # Which days the file holds needs only the d column: said with any bad cell above, so
    # one upload hears of every problem it can.
    day = frame["d"].where(day_names, "d_0").str.slice(2).astype(np.int64).to_numpy()
    report("d", frame["d"].duplicated().to_numpy() & day_names, "each day once")
    have = np.zeros(n_days + 1, dtype=bool)
    have[day[day <= n_days]] = True
    absent = np.flatnonzero(~have[1:]) + 1
    if absent.size:
        found = f"{absent.size:,} day(s) missing, first d_{absent[0]}"
        expected = (f"every day d_1..d_{n_days} (the {sales_days} sales days and "
                    f"the {horizon} forecast days)")  # fmt: skip
        reasons.append(problem(name, "column d", found, expected))
    if reasons:
        return *nothing, reasons
    rows = np.argsort(day, kind="stable")[:n_days]  # the file's row of each day, in day order

    def report_day(column: str, bad: np.ndarray, expected: Callable[[int], str]) -> None:
        if bad.any():
            k = first_of(bad)
            where = f"row {line(rows[k])}, column {column}"
            found = quoted(frame[column].iat[rows[k]])
            reasons.append(problem(name, where, found, expected(k), int(bad.sum())))

    start = dates.iat[rows[0]]
    expected_dates = start + pd.to_timedelta(np.arange(n_days), "D")
    report_day("date", dates.iloc[rows].to_numpy() != expected_dates.to_numpy(),
               lambda k: f"{expected_dates[k]:%Y-%m-%d}, the day after d_{k}")  # fmt: skip
    derived = {
        "month": expected_dates.month.to_numpy(),
        "year": expected_dates.year.to_numpy(),
        "wday": (expected_dates.day_of_week.to_numpy() + 2) % 7 + 1,  # M5: Saturday 1 .. Friday 7
    }
    for part, values in derived.items():

        def as_in_date(k: int, values: np.ndarray = values) -> str:
            return f"{values[k]}, as in the date"

        report_day(part, numbers[part][rows] != values, as_in_date)
    back = np.concatenate(([False], np.diff(numbers["wm_yr_wk"][rows]) < 0))
    week_before = numbers["wm_yr_wk"][rows]
    report_day("wm_yr_wk", back, lambda k: f"at least {week_before[k - 1]} (weeks never go back)")
    if reasons:
        return *nothing, reasons
    calendar = frame.iloc[rows].reset_index(drop=True)
    for column in numbers:
        calendar[column] = numbers[column][rows]
    calendar["day"] = np.arange(1, n_days + 1)
    return calendar, np.unique(numbers["wm_yr_wk"]), []


@dataclass(frozen=True)
class Prices:
    """Weekly prices per series (carried forward), each day's week, what was repaired."""

    weekly: np.ndarray
    day_week: np.ndarray
    missing_weeks: int
    notices: tuple[str, ...]


def _usable_price(price: np.ndarray) -> np.ndarray:
    """Above 0, and small enough that price x units stays finite in float32 (the shards')."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(price) & (price > 0) & (price < _MAX_PRICE)


def _whole_weeks(week: np.ndarray) -> np.ndarray:
    """Which week numbers are whole (finite) numbers: the rule for every week, in the
    calendar's range or not."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(week) & (week == np.floor(week))


def _price_cell_reasons(
    name: str, table: pa.Table, weeks: np.ndarray, line: Callable[[int], int]
) -> list[str]:
    """Name the bad cells of a prices table read as text.

    Only the two number columns become Python strings, and no column fixed-width text: that
    is as wide as the longest cell, and a stray quote can make one cell of the rest of the
    file (70 GiB for the real prices). The names are compared by their dictionary codes.
    """
    reasons = []

    def number(column: str) -> np.ndarray:
        """As the typed read takes it: spaces around it, but no line break (pandas would)."""
        cells = pd.Series(table.column(column).to_numpy(zero_copy_only=False), dtype=object)
        values = pd.to_numeric(cells, errors="coerce").to_numpy(np.float64)
        return np.where(cells.str.contains("[\r\n]").to_numpy(bool), np.nan, values)

    def codes(column: str) -> np.ndarray:
        return pc.dictionary_encode(table.column(column)).combine_chunks().indices.to_numpy()

    def empty(column: str) -> np.ndarray:
        return pc.equal(table.column(column), "").to_numpy(zero_copy_only=False)

    week, price = number("wm_yr_wk"), number("sell_price")
    with np.errstate(invalid="ignore"):
        # Weeks before or after the calendar are ignored (`_typed_weekly`), if whole numbers.
        outside = (week < weeks[0]) | (week > weeks[-1])
        whole = _whole_weeks(week)
        checks: tuple[tuple[str, np.ndarray, str], ...] = (
            ("store_id", empty("store_id"), "a value"),
            ("item_id", empty("item_id"), "a value"),
            (
                "wm_yr_wk",
                (~np.isin(week, weeks) & ~outside) | ~whole,
                "a week of calendar.csv (a wm_yr_wk)",
            ),
            ("sell_price", ~_usable_price(price), f"a positive price below {_MAX_PRICE:,.0f}"),
        )
    # By the week's number, as the typed read compares them: 11608 and 11608.0 are one week
    # (an unreadable week, NaN, is named above and repeats nothing).
    keys = pd.DataFrame({"store": codes("store_id"), "item": codes("item_id"), "week": week})
    repeated = keys.duplicated().to_numpy() & ~np.isnan(week)
    checks += (("wm_yr_wk", repeated, "one price per store_id, item_id and week"),)
    for column, bad, expected in checks:
        if bad.any():
            row = first_of(bad)
            where = f"row {line(row)}, column {column}"
            found = quoted(table.column(column)[row].as_py())
            reasons.append(problem(name, where, found, expected, int(bad.sum())))
    return reasons


class _BadCell(Exception):
    """Raised by the typed read at a cell it cannot take; the text read then names it."""


def _series_lookup(ids: dict[str, np.ndarray]) -> tuple[dict[str, int], dict[str, int], np.ndarray]:
    """Store and item codes, and the series of each (store, item) pair (-1: none)."""
    stores, store_code = np.unique(ids["store_id"], return_inverse=True)
    items, item_code = np.unique(ids["item_id"], return_inverse=True)
    series_at = np.full((len(stores) + 1, len(items) + 1), -1, dtype=np.int64)
    series_at[store_code, item_code] = np.arange(len(store_code))
    return ({s: k for k, s in enumerate(stores.tolist())},
            {s: k for k, s in enumerate(items.tolist())}, series_at)  # fmt: skip


def _codes(labels: pa.DictionaryArray, code_of: dict[str, int]) -> np.ndarray:
    """The code of each cell of a dictionary column (-1: unknown); an empty cell raises."""
    values = labels.dictionary.to_pylist()
    codes = np.array([code_of.get(v, -1) for v in values] + [-1], dtype=np.int64)
    indices = labels.indices.to_numpy()
    if "" in values and (indices == values.index("")).any():
        raise _BadCell
    return codes[indices]


def _typed_table(payload: bytes) -> pa.Table:
    """The prices as typed columns (about 160 MB at full M5 scale, on all cores).

    Raises
    ------
    _BadCell, pyarrow.ArrowInvalid
        At a row of the wrong width, or a cell that is not of its column's type.
    """
    label = pa.dictionary(pa.int32(), pa.string())
    types = {"store_id": label, "item_id": label, "wm_yr_wk": pa.float64(),
             "sell_price": pa.float64()}  # fmt: skip
    table, ragged = typed_csv(payload, types)
    if ragged:
        raise _BadCell
    return table


def read_typed_prices(payload: bytes) -> Future[pa.Table]:
    """Start reading the prices in the background, while the sales are read and checked:
    pyarrow releases the GIL, and the prices need the sales only once they are read."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="prices")
    future = pool.submit(_typed_table, payload)
    pool.shutdown(wait=False)
    return future


def _typed_weekly(
    table: pa.Table, ids: dict[str, np.ndarray], weeks: np.ndarray, all_weeks: np.ndarray
) -> tuple[np.ndarray, int]:
    """Spread the prices over a (series, week) matrix (NaN: no price that week), one block
    of rows (one dictionary per block) at a time.

    Raises
    ------
    _BadCell
        At anything the text read must explain: an empty cell, a week inside the calendar's
        range that is not one of its weeks, a week that is not a whole number, a price not
        above 0, a (store, item, week) given twice.

    Weeks before or after the calendar are ignored: a history cut to fewer days keeps its
    prices file whole.
    """
    store_of, item_of, series_at = _series_lookup(ids)
    # Each calendar week's column of `weekly`; -1: in the calendar, after the forecast days.
    # Looked up by position, not in a table spanning the week numbers, which a calendar's
    # far-apart weeks (1 and 10**9) would make gigabytes long.
    column_of = np.full(len(all_weeks), -1, dtype=np.int64)
    column_of[np.searchsorted(all_weeks, weeks)] = np.arange(len(weeks))
    weekly = np.full((len(ids["id"]), len(weeks)), np.nan, dtype=np.float32)
    rows = table.num_rows
    for batch in table.to_batches():
        series = series_at[_codes(batch.column(0), store_of), _codes(batch.column(1), item_of)]
        week = batch.column(2).to_numpy()
        price = batch.column(3).to_numpy()
        if not _whole_weeks(week).all() or not _usable_price(price).all():
            raise _BadCell
        inside = (week >= all_weeks[0]) & (week <= all_weeks[-1])
        at = np.minimum(np.searchsorted(all_weeks, week), len(all_weeks) - 1)
        if (inside & (all_weeks[at] != week)).any():
            raise _BadCell  # inside the calendar's range, but none of its weeks
        column = np.where(inside, column_of[at], -1)
        used = np.flatnonzero((series >= 0) & (column >= 0))
        cell = series[used] * len(weeks) + column[used]
        ordered = np.sort(cell)  # np.unique hashes, and is ten times slower here
        if (ordered[1:] == ordered[:-1]).any() or not np.isnan(weekly.ravel()[cell]).all():
            raise _BadCell  # a (store, item, week) repeats
        weekly.ravel()[cell] = price[used]
    return weekly, rows


def read_prices(
    name: str, payload: bytes, ids: dict[str, np.ndarray], calendar: pd.DataFrame,
    all_weeks: np.ndarray, sold: np.ndarray, typed: Future[pa.Table] | None = None,
) -> tuple[Prices | None, list[str]]:  # fmt: skip
    """Weekly prices of every series over the calendar's weeks, carried forward.

    Prices of items or stores not in the sales are ignored (the real M5 slice has some);
    a week without a price takes the week before's, and is counted and reported as a
    notice. A series with no price at all is refused if it ever sold (`sold`, per series):
    its sales have no dollar value to weigh its errors by; one that never sold is an item
    not yet on the shelf, kept with a notice (it is forecast 0). `typed`: the read started
    by `read_typed_prices`, if any.
    """
    header = header_of(payload)
    reasons = missing_columns(name, header, PRICES_COLUMNS)
    if reasons:
        return None, reasons
    weeks = np.unique(calendar["wm_yr_wk"].to_numpy())
    try:
        table = typed.result() if typed is not None else _typed_table(payload)
        weekly, rows = _typed_weekly(table, ids, weeks, all_weeks)
        del table
    except (pa.ArrowInvalid, _BadCell):
        text = dict.fromkeys(PRICES_COLUMNS, pa.string())
        line = RowLines(payload)
        table, reasons = read_table(name, payload, header, text, line)
        unexplained = problem(name, "content", "a cell that cannot be read", "numbers in "
                              "wm_yr_wk and sell_price, names in store_id and item_id")  # fmt: skip
        if reasons:
            return None, reasons
        return None, _price_cell_reasons(name, table, all_weeks, line) or [unexplained]
    if rows == 0:
        return None, [problem(name, "content", "a header only", "one or more rows after it")]
    n_series = len(ids["id"])
    observed = ~np.isnan(weekly)
    latest = np.where(observed, np.arange(len(weeks), dtype=np.int32), 0)
    np.maximum.accumulate(latest, axis=1, out=latest)
    started = np.logical_or.accumulate(observed, axis=1)
    weekly = np.where(started, np.take_along_axis(weekly, latest, axis=1), np.float32(np.nan))
    unpriced = ~started[:, -1]
    if (unpriced & sold).any():
        row = first_of(unpriced & sold)
        found = (f"no price for {int((unpriced & sold).sum()):,} of {n_series:,} series that "
                 f"sold, the first store_id {ids['store_id'][row]} item_id "
                 f"{ids['item_id'][row]}")  # fmt: skip
        expected = "a price for every item in every store where it sold"
        return None, [problem(name, "rows", found, expected)]
    notices: tuple[str, ...] = ()
    if unpriced.any():
        row = first_of(unpriced)
        have = "has" if unpriced.sum() == 1 else "have"
        notices = (f"{name}: {int(unpriced.sum()):,} series never sold and {have} no price "
                   f"(the first: store_id {ids['store_id'][row]} item_id "
                   f"{ids['item_id'][row]}); they are forecast 0",)  # fmt: skip
    carried = started & ~observed
    if carried.any():
        first = first_of(carried.any(axis=1))
        notices += (f"{name}: {int(carried.sum()):,} missing week(s) of "
                   f"{int(carried.any(axis=1).sum()):,} series took the week before's price "
                   f"(first: store_id {ids['store_id'][first]} item_id {ids['item_id'][first]}"
                   f" week {weeks[first_of(carried[first])]})",)  # fmt: skip
    day_week = np.searchsorted(weeks, calendar["wm_yr_wk"].to_numpy())
    return Prices(weekly.astype(np.float32), day_week, int(carried.sum()), notices), []


def sold_before_priced(
    name: str,
    ids: dict[str, np.ndarray],
    sales: np.ndarray,
    prices: Prices,
    first_sale: np.ndarray,
) -> tuple[str, ...]:
    """A notice for series that sold before their first price, or none. `first_sale`: the
    0-based day of each series' first sale (the number of days if it never sold).

    M5 prices an item from its launch week on, so units sold earlier point at a prices file
    that starts too late (cut, or exported from a later date). The run goes on, since the
    last 28 days' prices are all the weights need, but those days train without a price.
    """
    priced = ~np.isnan(prices.weekly)
    first_priced_day = np.searchsorted(prices.day_week, priced.argmax(axis=1))
    early = (first_sale < first_priced_day) & priced.any(axis=1)
    if not early.any():
        return ()
    units = sum(float(sales[s, : first_priced_day[s]].sum()) for s in np.flatnonzero(early))
    row = first_of(early)
    first = f"store_id {ids['store_id'][row]} item_id {ids['item_id'][row]}"
    return (
        f"{name}: {int(early.sum()):,} series sold {units:,.0f} unit(s) before their first "
        f"price (the first: {first}, priced from d_{first_priced_day[row] + 1}); those days "
        "train without a price, so check that the prices file starts early enough",
    )
