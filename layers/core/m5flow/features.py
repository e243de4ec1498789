"""Direct-forecast features, computed column-wise on the wide sales matrix.

Every M5 series shares one calendar, so a feature of day t for a block of series is a slice
of the (series x days) matrix: a lag is a shifted column range, a rolling statistic is a
difference of cumulative sums, a calendar feature is one value per day broadcast over the
series. Nothing is melted into a long frame and group-shifted, which is what keeps the shard
step inside one Lambda at full M5 scale (bench/shard/README.md).

Each block is built feature by feature into one contiguous row per feature, (features x
rows), so that a Parquet or CSV encoder takes the columns without another copy.

No feature of day t uses a sale after day t - min_lag, so one model predicts all the days
of its horizon from a single inference pass (direct, non-recursive forecasting). That holds
for the age of a series too: it is counted from the first sale only once that sale is at
least min_lag days old, else it is missing. Prices and the calendar are known in advance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from m5flow.schema import EVENT_TYPES, M5Data

CALENDAR_FEATURES = (
    "wday",
    "month",
    "year",
    "mday",
    "event",
    *(f"event_{kind.lower()}" for kind in EVENT_TYPES),
)
PRICE_FEATURES = ("sell_price", "price_relative", "price_change_week")
GROUP_COLUMNS = {
    "item": "item_ids",
    "dept": "dept_ids",
    "cat": "cat_ids",
    "store": "store_ids",
    "state": "state_ids",
}


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
    categorical: tuple[str, ...] = field(default=("item", "dept", "cat", "store", "state"))

    def __post_init__(self) -> None:
        if self.min_lag < 1 or any(lag < self.min_lag for lag in self.lags):
            raise ValueError(f"every lag must be >= min_lag={self.min_lag} >= 1: {self.lags}")
        if any(window < 2 for window in self.rolling_windows):
            raise ValueError(f"rolling windows need 2 days or more: {self.rolling_windows}")
        unknown = set(self.categorical) - set(GROUP_COLUMNS)
        if unknown:
            raise ValueError(f"categorical must be among {sorted(GROUP_COLUMNS)}: {unknown}")

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


def series_facts(data: M5Data, config: FeatureConfig) -> SeriesFacts:
    """Compute the constants every block shares (first sales, codes, mean prices...)."""
    sold = data.sales > 0
    first = np.where(sold.any(axis=1), sold.argmax(axis=1) + 1, data.last_day + 1)
    codes = {
        name: np.unique(getattr(data, GROUP_COLUMNS[name]), return_inverse=True)[1]
        for name in config.categorical
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


def build_block(
    data: M5Data,
    facts: SeriesFacts,
    rows: np.ndarray,
    first_day: int,
    last_day: int,
    config: FeatureConfig,
    *,
    drop_before_first_sale: bool = True,
) -> Block:
    """Build the features of series `rows` on days first_day..last_day (1-based).

    Each feature is computed on the (series x days) rectangle from slices of the sales
    matrix, then the days before each series' first sale are dropped with one boolean mask.

    Example
    -------
    >>> facts = series_facts(data, config)  # doctest: +SKIP
    >>> block = build_block(data, facts, np.arange(10), 1, 1913, config)  # doctest: +SKIP
    """
    days = np.arange(first_day, last_day + 1)
    have, lag, n = data.last_day, config.min_lag, len(rows)
    first_sale = facts.first_sale_day[rows]
    if drop_before_first_sale:
        keep = days[None, :] >= first_sale[:, None]
    else:
        keep = np.ones((n, len(days)), dtype=bool)
    counts = keep.sum(axis=1)
    names = feature_names(config)
    features = np.empty((len(names), int(counts.sum())), dtype=np.float32)
    column = iter(range(len(names)))

    def put(values: np.ndarray) -> None:
        features[next(column)] = values[keep] if values.ndim == 2 else values

    # Sales padded with NaN so that every shifted slice is in bounds: day d is column left+d-1.
    reach = max(max(config.lags), lag + max(config.rolling_windows, default=0)) + 1
    left, right = max(0, reach - first_day), max(0, last_day - have)
    padded = np.full((n, left + have + right), np.nan, dtype=np.float32)
    padded[:, left : left + have] = data.sales[rows]

    def sales_before(offset: int) -> np.ndarray:
        """(n, days): the sales of day t - offset, for each day t of the block."""
        start = left + first_day - offset - 1
        return padded[:, start : start + len(days)]

    for shift in config.lags:
        put(sales_before(shift))
    if config.rolling_windows:
        _put_rolling(put, padded, left, first_day, days, have, config)
    for name in CALENDAR_FEATURES:
        put(np.broadcast_to(facts.calendar[name][days - 1], (n, len(days))))
    put(facts.snap[facts.state_row[rows]][:, days - 1])
    weekly = data.weekly_prices[rows]
    price = weekly[:, data.day_week[days - 1]]
    put(price)
    put(price / facts.mean_price[rows, None])
    week_before = np.full((n, len(days)), np.nan, dtype=np.float32)
    later = days > 7
    week_before[:, later] = weekly[:, data.day_week[days[later] - 8]]
    with np.errstate(invalid="ignore", divide="ignore"):
        put(price / week_before - 1)
    for name in config.categorical:
        put(np.repeat(facts.codes[name][rows].astype(np.float32), counts))
    age = (days[None, :] - first_sale[:, None]).astype(np.float32)
    put(np.where(days[None, :] - lag >= first_sale[:, None], age, np.float32(np.nan)))
    return Block(
        features=features,
        label=sales_before(0)[keep],
        series=np.repeat(rows, counts),
        day=np.broadcast_to(days.astype(np.int32), keep.shape)[keep],
    )


def _put_rolling(
    put: Callable[[np.ndarray], None],
    padded: np.ndarray,
    left: int,
    first_day: int,
    days: np.ndarray,
    have: int,
    config: FeatureConfig,
) -> None:
    """Rolling mean and sample std of the sales in the window of `w` days ending on day
    t - min_lag, from cumulative sums (exact in float64 for integer sales); missing where
    the window starts before d_1 or ends after the last sales day, as pandas' rolling."""
    lag = config.min_lag
    filled = np.nan_to_num(padded, nan=0.0).astype(np.float64)
    total = np.zeros((len(padded), padded.shape[1] + 1))
    squares = np.zeros_like(total)
    np.cumsum(filled, axis=1, out=total[:, 1:])
    np.cumsum(np.square(filled), axis=1, out=squares[:, 1:])
    end = left + first_day - lag  # column of `total` summing up to day first_day - min_lag
    for window in config.rolling_windows:
        span = slice(end, end + len(days))
        before = slice(end - window, end - window + len(days))
        s = total[:, span] - total[:, before]
        q = squares[:, span] - squares[:, before]
        mean = s / window
        variance = np.maximum(q - s * mean, 0.0) / (window - 1)
        missing = (days - lag - window < 0) | (days - lag > have)
        mean[:, missing] = np.nan
        variance[:, missing] = np.nan
        put(mean.astype(np.float32))
        put(np.sqrt(variance).astype(np.float32))
