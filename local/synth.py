"""Synthetic data in the exact M5 file layout, for tests, demos and benchmarks at any scale.

The real M5 (30,490 item-store series) cannot ship with the project; this generator writes
the three input files with the real headers, id scheme, value formats and calendar rules, and
with demand a forecaster can learn from: intermittent counts, weekly and yearly seasonality, a
persistent weekly level, price elasticity, SNAP and event effects, and series that start
selling on different days. The series x days matrix is drawn with numpy in row chunks and
written by a numpy CSV encoder, so the full scale takes seconds and little memory.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from m5flow import calendar_prices, schema

START_DATE = dt.date(2011, 1, 29)  # d_1, a Saturday: Walmart weeks run Saturday..Friday
N_TRAIN_DAYS = 1941  # d_1..d_1941 in sales_train_evaluation.csv
N_CALENDAR_DAYS = 1969  # the calendar and prices also cover the 28-day evaluation window
N_WEEKS = -(-N_CALENDAR_DAYS // 7)  # 282 weeks, 11101..11621
STORES_PER_STATE = {"CA": 4, "TX": 3, "WI": 3}
STORES = tuple(f"{s}_{i}" for s, n in STORES_PER_STATE.items() for i in range(1, n + 1))
# Departments in the real file's row order, with their item counts in the real M5 (3,049):
# the counts set the department mix of every sample size.
DEPARTMENTS = {
    "HOBBIES_1": 416, "HOBBIES_2": 149, "HOUSEHOLD_1": 532, "HOUSEHOLD_2": 515,
    "FOODS_1": 216, "FOODS_2": 398, "FOODS_3": 823,
}  # fmt: skip
CATEGORIES = ("HOBBIES", "HOUSEHOLD", "FOODS")
# Per category (in CATEGORIES order): median daily units of an item in a store, median price
# in dollars, SNAP lift (benefits buy food only), and demand by wday (1 = Saturday).
CATEGORY_RATE = (0.35, 0.5, 1.1)
CATEGORY_PRICE = (4.5, 5.0, 2.5)
CATEGORY_SNAP = (0.0, 0.0, 0.3)
WEEKLY_PROFILE = ((1.3, 1.3, 1.0, 0.9, 0.85, 0.85, 1.0), (1.35, 1.3, 1.0, 0.9, 0.85, 0.85, 1.0),
                  (1.3, 1.35, 1.05, 0.9, 0.85, 0.85, 1.0))  # fmt: skip
# Days of the month on which each state pays SNAP benefits: the real calendar's pattern.
SNAP_DAYS = {"CA": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10), "TX": (1, 3, 5, 6, 7, 9, 11, 12, 13, 15),
             "WI": (2, 3, 5, 6, 8, 9, 11, 12, 14, 15)}  # fmt: skip
# Demand multiplier on an event day, by event type and category; stores close on Christmas.
EVENT_EFFECT = {"Sporting": (1.0, 1.0, 1.2), "Cultural": (1.15, 1.1, 1.05),
                "National": (0.9, 0.9, 0.9), "Religious": (1.0, 1.0, 1.1)}  # fmt: skip
CLOSED_EVENTS = {"Christmas": 0.002}
LAST_START_DAY = N_TRAIN_DAYS - 56  # every series keeps at least 8 weeks of history
# Rows simulated and written at a time: bounds memory at any scale. The random draws follow
# the chunks, so changing it changes the data a seed gives.
CHUNK_SERIES = 1024
# What generating takes, a little above what 3,049, 30,490 and 120,000 series took
# (2026-11-28: peak RSS 0.24, 0.41 and 1.29 GB; files 33, 326 and 1,296 MB): a mistyped
# --series (100,000,000 for 10,000) is refused for its size, not found out by the machine
# running out of memory.
BASE_MEMORY_BYTES = 250 * 2**20
MEMORY_BYTES_PER_SERIES = 10 * 2**10
FILE_BYTES_PER_SERIES = 11 * 10**3
SAT, SUN, MON, THU = 5, 6, 0, 3  # date.weekday() numbers


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The n-th given weekday of a month (n = -1: the last), as US holidays are defined."""
    if n < 0:
        last = dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(1)
        return last - dt.timedelta((last.weekday() - weekday) % 7)
    first = dt.date(year, month, 1)
    return first + dt.timedelta((weekday - first.weekday()) % 7 + 7 * (n - 1))


def _easter(year: int) -> dt.date:
    """Western Easter Sunday (the anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    h = (19 * a + b - b // 4 - (b - (b + 8) // 25 + 1) // 3 + 15) % 30
    ell = (32 + 2 * (b % 4) + 2 * (c // 4) - h - c % 4) % 7
    month, day = divmod(h + ell - 7 * ((a + 11 * h + 22 * ell) // 451) + 114, 31)
    return dt.date(year, month, day + 1)


def _orthodox_easter(year: int) -> dt.date:
    """Orthodox Easter Sunday (Meeus' Julian algorithm, +13 days to Gregorian until 2099)."""
    d = (19 * (year % 19) + 15) % 30
    e = (2 * (year % 4) + 4 * (year % 7) - d + 34) % 7
    return dt.date(year, (d + e + 114) // 31, (d + e + 114) % 31 + 1) + dt.timedelta(13)


def _lunar(year: int, offset: int) -> dt.date:
    """A day of the Islamic year: Ramadan began 2011-08-01 and moves back ~11 days a year."""
    return dt.date(2011, 8, 1) + dt.timedelta(round((year - 2011) * 354.367) + offset)


# (name, type, date in a year). Order decides event_name_1 vs event_name_2 on shared days.
EVENTS: tuple[tuple[str, str, Callable[[int], dt.date]], ...] = (
    ("SuperBowl", "Sporting", lambda y: _nth_weekday(y, 2, SUN, 1)),
    ("ValentinesDay", "Cultural", lambda y: dt.date(y, 2, 14)),
    ("PresidentsDay", "National", lambda y: _nth_weekday(y, 2, MON, 3)),
    ("LentStart", "Religious", lambda y: _easter(y) - dt.timedelta(46)),
    ("LentWeek2", "Religious", lambda y: _easter(y) - dt.timedelta(39)),
    ("StPatricksDay", "Cultural", lambda y: dt.date(y, 3, 17)),
    ("Easter", "Cultural", _easter),
    ("OrthodoxEaster", "Religious", _orthodox_easter),
    ("Cinco De Mayo", "Cultural", lambda y: dt.date(y, 5, 5)),
    ("Mother's day", "Cultural", lambda y: _nth_weekday(y, 5, SUN, 2)),
    ("MemorialDay", "National", lambda y: _nth_weekday(y, 5, MON, -1)),
    ("NBAFinalsStart", "Sporting", lambda y: _nth_weekday(y, 6, THU, 1)),
    ("NBAFinalsEnd", "Sporting", lambda y: _nth_weekday(y, 6, THU, 1) + dt.timedelta(10)),
    ("Father's day", "Cultural", lambda y: _nth_weekday(y, 6, SUN, 3)),
    ("IndependenceDay", "National", lambda y: dt.date(y, 7, 4)),
    ("Ramadan starts", "Religious", lambda y: _lunar(y, 0)),
    ("Eid al-Fitr", "Religious", lambda y: _lunar(y, 30)),
    ("LaborDay", "National", lambda y: _nth_weekday(y, 9, MON, 1)),
    ("ColumbusDay", "National", lambda y: _nth_weekday(y, 10, MON, 2)),
    ("EidAlAdha", "Religious", lambda y: _lunar(y, 98)),
    ("Halloween", "Cultural", lambda y: dt.date(y, 10, 31)),
    ("VeteransDay", "National", lambda y: dt.date(y, 11, 11)),
    ("Thanksgiving", "National", lambda y: _nth_weekday(y, 11, THU, 4)),
    ("Christmas", "National", lambda y: dt.date(y, 12, 25)),
    ("NewYear", "National", lambda y: dt.date(y, 1, 1)),
    ("OrthodoxChristmas", "Religious", lambda y: dt.date(y, 1, 7)),
    ("MartinLutherKingDay", "National", lambda y: _nth_weekday(y, 1, MON, 3)),
)


def _wm_yr_wk(day: dt.date) -> int:
    """Walmart week id (11101 = fiscal 2011, week 1); a fiscal year starts on the Saturday
    between Jan 26 and Feb 1, so fiscal 2013 has 53 weeks, as in the real calendar."""

    def start(year: int) -> dt.date:
        jan26 = dt.date(year, 1, 26)
        return jan26 + dt.timedelta((SAT - jan26.weekday()) % 7)

    year = day.year if day >= start(day.year) else day.year - 1
    return 10000 + year % 100 * 100 + (day - start(year)).days // 7 + 1


@dataclass(frozen=True)
class _Calendar:
    """What demand needs from the calendar, per day d_1..d_1969."""

    wday: np.ndarray  # 0 = Saturday .. 6 = Friday
    snap: np.ndarray  # bool (states, days)
    event_effect: np.ndarray  # float32 (categories, days)


def _write_calendar(path: Path) -> _Calendar:
    """Write calendar.csv (events on fixed yearly rules, at most two a day) and return the
    arrays demand is drawn from, so the sales obey the very calendar that was written."""
    days = [START_DATE + dt.timedelta(t) for t in range(N_CALENDAR_DAYS)]
    events: dict[dt.date, list[tuple[str, str]]] = {}
    for year in range(days[0].year, days[-1].year + 1):
        for name, kind, rule in EVENTS:
            events.setdefault(rule(year), []).append((name, kind))
    snap = np.array([[d.day in SNAP_DAYS[s] for d in days] for s in STORES_PER_STATE])
    effect = np.ones((len(CATEGORIES), N_CALENDAR_DAYS), np.float32)
    lines = [",".join(calendar_prices.CALENDAR_COLUMNS)]
    for t, d in enumerate(days):
        todays = events.get(d, [])[:2]
        for name, kind in todays:
            effect[:, t] *= np.array(EVENT_EFFECT[kind]) * CLOSED_EVENTS.get(name, 1.0)
        cells = [f"{name},{kind}" for name, kind in todays] + [","] * (2 - len(todays))
        wday = (d.weekday() - SAT) % 7 + 1
        flags = ",".join(str(int(f)) for f in snap[:, t])
        lines.append(
            f"{d},{_wm_yr_wk(d)},{d:%A},{wday},{d.month},{d.year},d_{t + 1},"
            f"{','.join(cells)},{flags}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    wday0 = (np.arange(N_CALENDAR_DAYS) + START_DATE.weekday() - SAT) % 7
    return _Calendar(wday=wday0, snap=snap, event_effect=effect)


def _department_counts(n_items: int) -> np.ndarray:
    """Items per department in the real mix (largest remainder), every department present
    as soon as there are at least seven items."""
    share = np.array(list(DEPARTMENTS.values()), float) / sum(DEPARTMENTS.values())
    counts = np.full(len(share), 1 if n_items >= len(share) else 0)
    quota = (n_items - counts.sum()) * share
    counts += np.floor(quota).astype(int)
    by_remainder = np.argsort(-(quota - np.floor(quota)), kind="stable")
    counts[by_remainder[: n_items - counts.sum()]] += 1
    return counts


@dataclass(frozen=True)
class _Series:
    """The item x store rows, in output order (store, then department, then item)."""

    item_ids: list[str]  # per item
    item_dept: np.ndarray  # per item
    item_cat: np.ndarray  # per item
    item: np.ndarray  # per row: index into the item arrays
    store: np.ndarray  # per row: index into STORES

    @classmethod
    def layout(cls, n_series: int) -> _Series:
        """Pick ceil(n/10) items, each in all ten stores; the last item fills the first
        n % 10 stores. Items are chosen first so that small samples still span stores."""
        counts = _department_counts(math.ceil(n_series / len(STORES)))
        depts = list(DEPARTMENTS)
        item_dept = np.repeat(np.arange(len(depts)), counts)
        dept_cat = np.array([CATEGORIES.index(d.rsplit("_", 1)[0]) for d in depts])
        item_ids = [f"{depts[d]}_{n:03d}" for d, c in enumerate(counts) for n in range(1, c + 1)]
        item, store = np.divmod(np.arange(n_series), len(STORES))
        order = np.lexsort((item, store))
        return cls(item_ids, item_dept, dept_cat[item_dept], item[order], store[order])

    @property
    def cat(self) -> np.ndarray:
        return self.item_cat[self.item]

    @property
    def state(self) -> np.ndarray:
        states = list(STORES_PER_STATE)
        return np.array([states.index(s.split("_")[0]) for s in STORES])[self.store]

    def line_prefixes(self, rows: slice) -> list[bytes]:
        """`id,item_id,dept_id,cat_id,store_id,state_id,` of each row, as bytes."""
        depts = list(DEPARTMENTS)
        out = []
        for k, st in zip(self.item[rows], self.store[rows], strict=True):
            item_id, store_id = self.item_ids[k], STORES[st]
            dept = depts[self.item_dept[k]]
            cat, state = CATEGORIES[self.item_cat[k]], store_id.split("_")[0]
            out.append(f"{item_id}_{store_id}_evaluation,{item_id},{dept},{cat},{store_id},"
                       f"{state},".encode())  # fmt: skip
        return out


@dataclass(frozen=True)
class _Demand:
    """Per-row demand traits and the weekly price grid."""

    volume: np.ndarray  # median daily units once established
    start: np.ndarray  # day index of the first sale (and of the first price week)
    dispersion: np.ndarray  # gamma shape of the daily noise: smaller = lumpier
    amplitude: np.ndarray  # yearly seasonality, in log units
    phase: np.ndarray
    trend: np.ndarray  # log change over the training period
    cents: np.ndarray  # int64 (rows, weeks): shelf price in cents
    price_effect: np.ndarray  # (rows, weeks): (price / launch price) ** elasticity

    @classmethod
    def draw(cls, rng: np.random.Generator, series: _Series) -> _Demand:
        """Item traits are shared by its stores (an item sells well everywhere or nowhere),
        then stores and store-items vary around them."""
        n_items, n_rows, item = len(series.item_ids), len(series.item), series.item
        rate = np.array(CATEGORY_RATE)[series.item_cat] * rng.lognormal(0.0, 1.0, n_items)
        base = np.array(CATEGORY_PRICE)[series.item_cat] * rng.lognormal(0.0, 0.5, n_items)
        elasticity = np.clip(rng.normal(-2.0, 0.6, n_items), -4.0, -0.5)
        seasonal = rng.random(n_items) < 0.15  # a few strongly seasonal items, most mildly
        strong, mild = rng.uniform(0.3, 0.8, n_items), rng.uniform(0.0, 0.15, n_items)
        amplitude = np.where(seasonal, strong, mild)
        phase, trend = rng.uniform(0, 2 * np.pi, n_items), rng.normal(0.1, 0.3, n_items)
        launch = np.where(rng.random(n_items) < 0.6, 0, rng.integers(0, LAST_START_DAY, n_items))
        # Rare permanent price changes (mostly up) and chain-wide promotion weeks.
        grid = (n_items, N_WEEKS)
        change = np.where(rng.random(grid) < 1 / 80, rng.normal(0.04, 0.08, grid), 0.0)
        regular = base[:, None] * np.exp(np.cumsum(change, axis=1))
        discount = np.where(rng.random(grid) < 0.04, rng.uniform(0.1, 0.35, grid), 0.0)

        store_size = rng.lognormal(0.0, 0.25, len(STORES))
        volume = rate[item] * store_size[series.store] * rng.lognormal(0.0, 0.5, n_rows)
        delay = np.where(rng.random(n_rows) < 0.2, rng.integers(0, 300, n_rows), 0)
        dispersion = np.exp(rng.uniform(np.log(0.8), np.log(4.0), n_rows))
        local = np.where(rng.random(n_rows) < 0.3, rng.uniform(0.92, 1.08, n_rows), 1.0)
        # Shelf prices end in 8 cents, like most of the real ones; promotions cut them.
        shelf = np.maximum(np.round(regular[item] * local[:, None] * 10), 1) * 10 - 2
        cents = np.round(shelf * (1 - discount[item])).astype(np.int64)
        f32 = np.float32
        return cls(
            volume=volume.astype(f32),
            start=np.minimum(launch[item] + delay, LAST_START_DAY),
            dispersion=dispersion.astype(f32),
            amplitude=amplitude[item].astype(f32),
            phase=phase[item].astype(f32),
            trend=trend[item].astype(f32),
            cents=cents,
            price_effect=((cents / (100 * base[item, None])) ** elasticity[item, None]).astype(f32),
        )


def _draw_sales(
    rng: np.random.Generator, rows: slice, series: _Series, demand: _Demand, cal: _Calendar
) -> np.ndarray:
    """Daily units (rows, d_1..d_1941): Poisson-gamma counts around a multiplicative mean.

    The mean is built in place in float32: at full scale a chunk is 2M cells, and float64
    temporaries of every factor would double the time of the whole generator.
    """
    n, f32 = rows.stop - rows.start, np.float32
    day = np.arange(N_TRAIN_DAYS)
    t = day.astype(f32)
    # A persistent weekly level, AR(1) in logs: the signal that lag features can pick up.
    shocks = f32(0.12) * rng.standard_normal((n, N_WEEKS), f32)
    level = np.empty_like(shocks)
    level[:, 0] = 2 * shocks[:, 0]
    for w in range(1, N_WEEKS):
        level[:, w] = f32(0.9) * level[:, w - 1] + shocks[:, w]
    cat, state = series.cat[rows], series.state[rows]
    # Series selling on d_1 were launched before the data begins: no ramp for them.
    start = demand.start[rows]
    age = t - np.where(start > 0, start, -365)[:, None].astype(f32)
    mean = np.cos(t * f32(2 * np.pi / 365.25) - demand.phase[rows, None])  # yearly season
    mean *= demand.amplitude[rows, None]
    mean += demand.trend[rows, None] * (t / f32(N_TRAIN_DAYS))
    np.exp(mean, out=mean)
    mean *= (np.exp(level) * demand.price_effect[rows])[:, day // 7]
    mean *= np.array(WEEKLY_PROFILE, f32)[cat][:, cal.wday[:N_TRAIN_DAYS]]
    mean *= 1 + np.array(CATEGORY_SNAP, f32)[cat, None] * cal.snap[state, :N_TRAIN_DAYS]
    mean *= cal.event_effect[cat, :N_TRAIN_DAYS]
    # Nothing before the start day, then a month-long ramp up to the established volume.
    mean *= np.where(age < 0, 0, 1 - f32(0.5) * np.exp(np.minimum(-age, 0) / f32(28)))
    mean *= demand.volume[rows, None]
    shape = demand.dispersion[rows, None]
    mean *= rng.standard_gamma(shape, (n, N_TRAIN_DAYS), f32) / shape
    sales = np.minimum(rng.poisson(mean), 99_999)
    first = (np.arange(n), start)
    sales[first] = np.maximum(sales[first], 1)  # the first sale is on the start day
    return sales


def _write_prices(path: Path, series: _Series, demand: _Demand) -> None:
    """Write sell_prices.csv: every week from the first sale's week to the last calendar
    week (11621), in row order, prices formatted like the real file ("2.0", "10.98").

    Written `CHUNK_SERIES` series at a time: one table of every series' weeks would pass
    2 GiB of item ids, more than one pyarrow string array holds, near a million series."""
    first_week = demand.start // 7
    week_ids = np.array([_wm_yr_wk(START_DATE + dt.timedelta(7 * w)) for w in range(N_WEEKS)])
    price_strings = pa.array([repr(c / 100) for c in range(int(demand.cents.max()) + 1)])
    stores, item_ids = pa.array(STORES), pa.array(series.item_ids)
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with path.open("wb") as f:
        # Our own header line: pyarrow quotes column names unless told otherwise, and the
        # option for that (quoting_header) is newer than the pyarrow the layer allows.
        f.write((",".join(calendar_prices.PRICES_COLUMNS) + "\n").encode())
        for a in range(0, len(series.item), CHUNK_SERIES):
            chunk = np.arange(a, min(a + CHUNK_SERIES, len(series.item)))
            n_weeks = N_WEEKS - first_week[chunk]
            row = np.repeat(chunk, n_weeks)
            week = np.arange(len(row)) - np.repeat(np.cumsum(n_weeks) - n_weeks, n_weeks)
            week += first_week[row]
            table = pa.table(
                {
                    "store_id": stores.take(pa.array(series.store[row])),
                    "item_id": item_ids.take(pa.array(series.item[row])),
                    "wm_yr_wk": pa.array(week_ids.astype(np.int32)[week]),
                    "sell_price": price_strings.take(pa.array(demand.cents[row, week])),
                }
            )
            pacsv.write_csv(table, f, options)


def _encode_rows(prefixes: list[bytes], values: np.ndarray) -> bytes:
    """CSV lines `<prefix>v1,...,vn` for a matrix of integers in 0..99,999.

    Why not pandas or pyarrow: the wide file holds ~60M small ints, and laying the digits
    out with a few numpy passes (offsets by cumsum, one scatter per digit place) is much
    faster than either, and writes plain integers by construction.
    """
    cols = values.shape[1]
    v = values.astype(np.int32).ravel()
    n_digits = 1 + sum((v >= 10**k).astype(np.int64) for k in range(1, 5))
    ends = np.cumsum(n_digits + 1)  # each value, then its separator
    buf = np.full(int(ends[-1]), ord(","), np.uint8)
    last_digit = ends - 2
    for k in range(int(n_digits.max())):
        m = n_digits > k
        buf[last_digit[m] - k] = ord("0") + v[m] // 10**k % 10
    row_ends = ends[cols - 1 :: cols]
    buf[row_ends - 1] = ord("\n")
    body = buf.tobytes()
    row_starts = np.concatenate(([0], row_ends[:-1]))
    return b"".join(p + body[a:b] for p, a, b in zip(prefixes, row_starts, row_ends, strict=True))


def write_synthetic_m5(out_dir: Path, n_series: int, seed: int = 0) -> dict[str, Path]:
    """Write sales_train_evaluation.csv, calendar.csv and sell_prices.csv in the M5 layout.

    Series are items x stores: ``ceil(n_series / 10)`` items spread over the seven
    departments in the real proportions, each in all ten stores, the last item in the first
    ``n_series % 10`` stores. Rows follow the real file's order (store, department, item).

    Parameters
    ----------
    out_dir : Path
        Directory to write into (created if missing); the three files are replaced.
    n_series : int
        Number of item-store series; 30,490 is the real M5 scale.
    seed : int
        Seed of the only random generator: the same seed gives byte-identical files.

    Returns
    -------
    dict[str, Path]
        File name -> path of each written file.

    Raises
    ------
    ValueError
        If ``n_series`` is below 1.

    Example
    -------
    >>> paths = write_synthetic_m5(Path("data/synth"), n_series=290, seed=1)
    >>> sorted(paths)
    ['calendar.csv', 'sales_train_evaluation.csv', 'sell_prices.csv']
    """
    if n_series < 1:
        raise ValueError(f"n_series must be at least 1, got {n_series}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in schema.INPUT_FILES}
    # Written under hidden names and moved into place together at the end: an interrupted
    # call leaves the folder as it was, never a cut-off sales file that passes every check.
    partial = {name: out_dir / f".{name}.partial" for name in schema.INPUT_FILES}
    try:
        cal = _write_calendar(partial[schema.CALENDAR_FILE])
        rng = np.random.default_rng(seed)
        series = _Series.layout(n_series)
        demand = _Demand.draw(rng, series)
        header = [*schema.SALES_ID_COLUMNS, *(f"d_{t}" for t in range(1, N_TRAIN_DAYS + 1))]
        with partial[schema.SALES_FILE].open("wb") as f:
            f.write((",".join(header) + "\n").encode())
            for a in range(0, n_series, CHUNK_SERIES):
                rows = slice(a, min(a + CHUNK_SERIES, n_series))
                sales = _draw_sales(rng, rows, series, demand, cal)
                f.write(_encode_rows(series.line_prefixes(rows), sales))
        _write_prices(partial[schema.PRICES_FILE], series, demand)
        for name, path in partial.items():
            os.replace(path, paths[name])
    finally:
        for path in partial.values():
            path.unlink(missing_ok=True)
    return paths
