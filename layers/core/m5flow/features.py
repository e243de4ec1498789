"""Direct-forecast features, computed column-wise on the wide sales matrix.

Every M5 series shares one calendar, so a feature of day t for a block of series is a slice
of the (series x days) matrix: a lag is a shifted column range, a rolling statistic is a
difference of cumulative sums, a calendar feature is one value per day broadcast over the
series. Nothing is melted into a long frame and group-shifted, which is what keeps the shard
step inside one Lambda at full M5 scale (bench/shard/README.md).

Each block is built feature by feature into one contiguous row per feature, (features x
rows), so that a Parquet or CSV encoder takes the columns without another copy.

No feature of day t uses a sale after day t - min_lag, so one model predicts all the days
of its horizon from a single inference pass (direct, non-recursive forecasting). The
recursive model (m5flow.recursive, min_lag 1) uses the same features over sales whose days
after the origin are its own forecasts. That holds
for the age of a series too: it is counted from the first sale only once that sale is at
least min_lag days old, else it is missing. Prices and the calendar are known in advance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from m5flow.calendar_prices import EVENT_TYPES
from m5flow.schema import ID_KINDS, M5Data, first_nonzero

CALENDAR_FEATURES = (
    "wday",
    "month",
    "year",
    "mday",
    "event",
    *(f"event_{kind.lower()}" for kind in EVENT_TYPES),
)
PRICE_FEATURES = ("sell_price", "price_relative", "price_change_week")
_CACHE_CELLS = 1 << 15  # float64 cells per array worked on at once: 256 KB, in cache
_MASK_WIDTH = 256  # blocks of at most this many days copy their kept cells with a mask


@dataclass(frozen=True)
class FeatureConfig:
    """Which features to build; their column names follow from it (see `feature_names`).

    Rolling statistics are taken over the series shifted by `min_lag` days: the window of
    day t ends on day t - min_lag. Standard deviations are sample ones (ddof=1), as pandas'
    `rolling().std()` and mlforecast's `RollingStd`.
    """

    min_lag: int = 28
    lags: tuple[int, ...] = (28, 35, 42, 49, 56, 364)
    rolling_windows: tuple[int, ...] = (7, 28, 56, 112)
    categorical: tuple[str, ...] = ID_KINDS

    def __post_init__(self) -> None:
        if self.min_lag < 1 or any(lag < self.min_lag for lag in self.lags):
            raise ValueError(f"every lag must be >= min_lag={self.min_lag} >= 1: {self.lags}")
        if any(window < 2 for window in self.rolling_windows):
            raise ValueError(f"rolling windows need 2 days or more: {self.rolling_windows}")
        unknown = set(self.categorical) - set(ID_KINDS)
        if unknown:
            raise ValueError(f"categorical must be among {ID_KINDS}: {unknown}")

    @classmethod
    def for_min_lag(cls, min_lag: int) -> FeatureConfig:
        """The default feature set of a model that may use sales up to `min_lag` days old.

        Five weekly lags from `min_lag` on keep the weekday pattern; lag 364 adds last year.
        """
        lags = tuple(sorted({min_lag + 7 * k for k in range(5)} | {364}))
        return cls(min_lag=min_lag, lags=lags)


def feature_names(config: FeatureConfig) -> list[str]:
    """Return the feature column names, in shard column order (mlforecast's naming).

    Example
    -------
    >>> feature_names(FeatureConfig())[:2], feature_names(FeatureConfig())[6]
    (['lag28', 'lag35'], 'rolling_mean_lag28_window_size7')
    """
    names = [f"lag{lag}" for lag in config.lags]
    for window in config.rolling_windows:
        names += [
            f"rolling_mean_lag{config.min_lag}_window_size{window}",
            f"rolling_std_lag{config.min_lag}_window_size{window}",
        ]
    names += [*CALENDAR_FEATURES, "snap", *PRICE_FEATURES]
    names += [f"{c}_code" for c in config.categorical]
    names += ["age"]
    return names


@dataclass(frozen=True)
class SeriesFacts:
    """Per-series and per-day constants the features need, computed once for all blocks."""

    first_sale_day: np.ndarray  # int64, 1-based day of the first sale (last_day + 1: none)
    codes: dict[str, np.ndarray]  # categorical name -> int code per series (sorted labels)
    mean_price: np.ndarray  # float32, mean daily price of the series (NaN: never priced)
    state_row: np.ndarray  # int, the series' row of `snap`
    calendar: dict[str, np.ndarray]  # calendar feature -> float32 value per day (d_1 first)
    snap: np.ndarray  # float32 (states, days): SNAP days of each state

    def as_of(self, day: int) -> SeriesFacts:
        """The facts as known at the end of `day`: a series whose first sale came after
        it is one that has not sold yet (its first sale the day after, as at the forecast
        origin for a series that never sold).

        A backtest forecasts from an earlier origin; with the first sales of the whole
        history, a series launched after that origin would tell its rows (through `age`)
        when it starts selling. Such a series had not sold by the origin, so its backtest
        forecast is 0 in the end (`forecast.submission`'s never_sold); the rows, and the
        models' inputs, no longer tell.
        """
        first = np.where(self.first_sale_day <= day, self.first_sale_day, day + 1)
        return replace(self, first_sale_day=first)


def series_facts(data: M5Data, config: FeatureConfig) -> SeriesFacts:
    """Compute the constants every block shares (first sales, codes, mean prices...)."""
    first = first_nonzero(data.sales) + 1  # 1-based; last_day + 1 where it never sold
    codes = {
        name: np.unique(data.ids_of(name), return_inverse=True)[1] for name in config.categorical
    }
    days_of_week = np.bincount(data.day_week, minlength=data.weekly_prices.shape[1])
    known = ~np.isnan(data.weekly_prices)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_price = np.where(known, data.weekly_prices, 0) @ days_of_week / (known @ days_of_week)
    states, state_row = np.unique(data.state_ids, return_inverse=True)
    snap = data.calendar[[f"snap_{s}" for s in states]].to_numpy(np.float32).T
    return SeriesFacts(
        first_sale_day=first.astype(np.int64),
        codes=codes,
        mean_price=mean_price.astype(np.float32),
        state_row=state_row,
        calendar=_calendar_columns(data.calendar),
        snap=np.ascontiguousarray(snap),
    )


def _calendar_columns(calendar: pd.DataFrame) -> dict[str, np.ndarray]:
    kinds = [
        calendar[c].fillna("").astype(str).to_numpy() for c in ("event_type_1", "event_type_2")
    ]
    columns = {
        "wday": calendar["wday"].to_numpy(np.float32),
        "month": calendar["month"].to_numpy(np.float32),
        "year": calendar["year"].to_numpy(np.float32),
        "mday": pd.to_datetime(calendar["date"]).dt.day.to_numpy(np.float32),
        "event": ((kinds[0] != "") | (kinds[1] != "")).astype(np.float32),
    }
    for kind in EVENT_TYPES:
        columns[f"event_{kind.lower()}"] = ((kinds[0] == kind) | (kinds[1] == kind)).astype(
            np.float32
        )
    return columns


@dataclass(frozen=True)
class Block:
    """The rows of a block of series over a range of days: series-major, then by day."""

    features: np.ndarray  # float32 (n_features, n_rows): one contiguous row per feature
    label: np.ndarray  # float32 (n_rows,): unit sales, NaN after the last sales day
    series: np.ndarray  # int (n_rows,): index of each row's series in the data
    day: np.ndarray  # int32 (n_rows,): the day of each row (1-based)

    def __len__(self) -> int:
        return len(self.label)


class _Ragged:
    """Copies the kept cells of (series x days) matrices into the rows of a block.

    Series s keeps the days from starts[s] on, a suffix. Whichever copy is cheapest: all
    kept, one copy; short blocks (validation, inference), one boolean mask; long blocks,
    one slice per series concatenated, at memory speed (a mask there costs twice as much).
    """

    def __init__(self, starts: np.ndarray, width: int) -> None:
        self.starts = starts.tolist()
        self.width = width
        self.counts = width - starts
        self.offsets = np.concatenate(([0], np.cumsum(self.counts)))
        self.whole = not starts.any()
        self.mask = None
        if not self.whole and width <= _MASK_WIDTH:
            self.mask = np.arange(width)[None, :] >= starts[:, None]

    def copy(self, matrix: np.ndarray, out: np.ndarray, first: int = 0) -> np.ndarray:
        """Copy series first, first + 1, ... (a row of `matrix` each, or one row for all
        series) into `out`, their rows offsets[first]..; return `out`."""
        n = len(matrix) if matrix.ndim == 2 else len(self.starts)
        starts = self.starts[first : first + n]
        if self.whole:
            np.copyto(out.reshape(n, self.width), matrix)
        elif self.mask is not None:
            out[:] = np.broadcast_to(matrix, (n, self.width))[self.mask[first : first + n]]
        elif matrix.ndim == 1:
            np.concatenate([matrix[k:] for k in starts], out=out)
        else:
            np.concatenate([row[k:] for row, k in zip(matrix, starts, strict=True)], out=out)
        return out


def build_block(
    data: M5Data,
    facts: SeriesFacts,
    rows: np.ndarray,
    first_day: int,
    last_day: int,
    config: FeatureConfig,
    *,
    drop_before_first_sale: bool = True,
    scratch: Callable[[int], np.ndarray] | None = None,
) -> Block:
    """Build the features of series `rows` on days first_day..last_day (1-based).

    Every feature is computed on the (series x days) rectangle, mostly as a slice of a
    matrix, and its kept cells (each series from its first sale on) are copied straight
    into the block's row for that feature.

    `scratch(n)` may supply the float32 memory the block lives in (n cells at least): a
    writer that reuses it from block to block saves the kernel zeroing fresh pages for
    every block (seconds at full M5 scale). The block is then valid until the next call.

    Example
    -------
    >>> facts = series_facts(data, config)
    >>> block = build_block(data, facts, np.arange(10), 1, 1913, config)
    >>> block.features.shape == (len(feature_names(config)), len(block))
    True
    >>> bool(np.all(block.day >= facts.first_sale_day[block.series]))  # no day before a first sale
    True
    """
    days = np.arange(first_day, last_day + 1)
    n, width, lag = len(rows), len(days), config.min_lag
    if last_day > data.last_day + lag:
        raise ValueError(f"day {last_day} needs sales after the last day, {data.last_day}")
    first_sale = facts.first_sale_day[rows]
    skipped = np.clip(first_sale - first_day, 0, width) if drop_before_first_sale else 0
    ragged = _Ragged(np.broadcast_to(skipped, (n,)).astype(np.int64), width)
    counts = ragged.counts
    names = feature_names(config)
    n_rows = int(ragged.offsets[-1])
    cells = (len(names) + 2) * n_rows  # the features, the label, the day
    memory = scratch(cells)[:cells] if scratch else np.empty(cells, dtype=np.float32)
    features = memory[: len(names) * n_rows].reshape(len(names), n_rows)
    label, day = memory[len(names) * n_rows :].reshape(2, n_rows)
    if n_rows == 0:
        empty = np.empty(0, dtype=np.float32)
        return Block(features, empty, np.empty(0, np.int64), np.empty(0, np.int32))
    column = iter(features)

    def put(matrix: np.ndarray) -> None:
        ragged.copy(matrix, next(column))

    # Sales padded with NaN so that every shifted slice is in bounds: day d is column left+d-1.
    left = max(0, max(config.lags) + 1 - first_day)
    right = max(0, last_day - data.last_day)
    sales = data.sales[rows]
    padded = np.full((n, left + data.last_day + right), np.nan, dtype=np.float32)
    padded[:, left : left + data.last_day] = sales

    def sales_before(offset: int) -> np.ndarray:
        """(n, days): the sales of day t - offset, for each day t of the block."""
        start = left + first_day - offset - 1
        return padded[:, start : start + width]

    for shift in config.lags:
        put(sales_before(shift))
    ragged.copy(days.astype(np.float32), day)
    if config.rolling_windows:
        rolling = [next(column) for _ in range(2 * len(config.rolling_windows))]
        _put_rolling(rolling, sales, days, ragged, config)
    for name in CALENDAR_FEATURES:
        put(facts.calendar[name][days - 1])
    put(facts.snap[:, days - 1][facts.state_row[rows]])
    weekly = np.concatenate(
        [data.weekly_prices[rows], np.full((n, 1), np.nan, np.float32)], axis=1
    )  # the last column: no price
    week = data.day_week[days - 1]
    week_before = np.where(days > 7, data.day_week[np.maximum(days - 8, 0)], weekly.shape[1] - 1)
    price = next(column)
    ragged.copy(weekly[:, week], price)
    np.divide(price, np.repeat(facts.mean_price[rows], counts), out=next(column))
    change = next(column)
    ragged.copy(weekly[:, week_before], change)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(price, change, out=change)
    change -= 1
    for name in config.categorical:
        next(column)[:] = np.repeat(facts.codes[name][rows], counts)
    first_sale_row = np.repeat(first_sale.astype(np.float32), counts)
    age = next(column)
    np.subtract(day, first_sale_row, out=age)
    age[age < lag] = np.nan  # the first sale is not yet min_lag days old
    return Block(
        features=features,
        label=ragged.copy(sales_before(0), label),
        series=np.repeat(rows, counts),
        day=day.astype(np.int32),
    )


def _put_rolling(
    outputs: list[np.ndarray],
    sales: np.ndarray,
    days: np.ndarray,
    ragged: _Ragged,
    config: FeatureConfig,
) -> None:
    """Rolling mean and sample std of the sales of the `w` days up to day t - min_lag.

    From cumulative sums of sales and squared sales (exact in float64 for integer sales);
    missing where the window starts before d_1, as pandas' `rolling(w)` leaves it. Worked
    out a few series at a time, so that the ten or so passes of arithmetic per window run
    in the CPU cache: on the whole block they were bound by memory bandwidth.

    `outputs` are the feature rows (mean, std per window), filled through `ragged`.
    """
    lag, widest = config.min_lag, max(config.rolling_windows)
    first_day, width = int(days[0]), len(days)
    # Cumulative sums over only the days some window covers, d_lo..d_<last - lag>, with
    # zeros for the days before d_1 (those windows are missing anyway).
    lo, hi = first_day - lag - widest + 1, int(days[-1]) - lag
    before_d1 = max(0, 1 - lo)
    step = max(1, _CACHE_CELLS // (hi - lo + 2))
    s = np.empty((step, width))
    q = np.empty((step, width))
    stats = np.empty((2, step, width), dtype=np.float32)
    for c0 in range(0, len(sales), step):
        c1 = min(len(sales), c0 + step)
        m = c1 - c0
        total = np.zeros((m, hi - lo + 2))
        squares = np.zeros((m, hi - lo + 2))
        covered = sales[c0:c1, max(lo, 1) - 1 : hi]
        np.cumsum(covered, axis=1, dtype=np.float64, out=total[:, before_d1 + 1 :])
        np.cumsum(np.square(covered, dtype=np.float64), axis=1, out=squares[:, before_d1 + 1 :])
        # total[:, widest + p]: the sales up to day first_day + p - lag, the end of day p's window
        for k, window in enumerate(config.rolling_windows):
            sk, qk, mean, std = s[:m], q[:m], stats[0, :m], stats[1, :m]
            np.subtract(
                total[:, widest : widest + width], total[:, widest - window :][:, :width], out=sk
            )
            np.subtract(
                squares[:, widest : widest + width],
                squares[:, widest - window :][:, :width],
                out=qk,
            )
            np.divide(sk, window, out=mean)
            # window x (window - 1) x the sample variance = window x sum(x^2) - sum(x)^2, an
            # integer: exact in float64 while window^2 x (daily sales)^2 < 2^53
            np.multiply(qk, window, out=qk)
            np.multiply(sk, sk, out=sk)
            np.subtract(qk, sk, out=qk)
            np.multiply(qk, 1 / (window * (window - 1)), out=std)
            np.maximum(std, 0, out=std)
            np.sqrt(std, out=std)
            missing = min(width, max(0, lag + window - first_day))  # days before lag + window
            stats[:, :m, :missing] = np.nan
            rows = slice(ragged.offsets[c0], ragged.offsets[c1])
            ragged.copy(mean, outputs[2 * k][rows], first=c0)
            ragged.copy(std, outputs[2 * k + 1][rows], first=c0)
