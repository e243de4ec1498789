"""Direct-forecast features, computed column-wise on the wide sales matrix.

Every M5 series shares one calendar, so a feature of day t for a block of series is a slice
of the (series x days) matrix: a lag is a shifted column range and a rolling statistic is a
difference of cumulative sums. Nothing is melted into a long frame and group-shifted, which
is what keeps the shard step inside one Lambda at full M5 scale.

No feature of day t uses a sale after day t - min_lag, so one model predicts all the days of
the horizon from a single inference pass (direct, non-recursive forecasting).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from m5flow.schema import M5Data

_EVENT_TYPES = ("Cultural", "National", "Religious", "Sporting")


@dataclass(frozen=True)
class FeatureConfig:
    """Which features to build. Column names are generated from it (see `feature_names`)."""

    min_lag: int = 28
    lags: tuple[int, ...] = (28, 35, 42, 49, 56, 364)
    rolling_windows: tuple[int, ...] = (7, 28, 56)
    # Rolling statistics are taken over the series shifted by min_lag days.
    categorical: tuple[str, ...] = field(default=("item", "dept", "cat", "store", "state"))

    def __post_init__(self) -> None:
        if any(lag < self.min_lag for lag in self.lags):
            raise ValueError(f"every lag must be >= min_lag={self.min_lag}: {self.lags}")

    @classmethod
    def for_min_lag(cls, min_lag: int) -> FeatureConfig:
        """The default feature set of a model that may use sales up to `min_lag` days old.

        Five weekly lags from `min_lag` on keep the weekday pattern; lag 364 adds last year.
        """
        lags = tuple(sorted({min_lag + 7 * k for k in range(5)} | {364}))
        return cls(min_lag=min_lag, lags=lags)


def feature_names(config: FeatureConfig) -> list[str]:
    """Return the feature column names, in shard column order."""
    names = [f"lag{lag}" for lag in config.lags]
    for window in config.rolling_windows:
        names += [
            f"rolling_mean_lag{config.min_lag}_window_size{window}",
            f"rolling_std_lag{config.min_lag}_window_size{window}",
        ]
    names += [
        "wday",
        "month",
        "year",
        "mday",
        "event",
        *(f"event_{t.lower()}" for t in _EVENT_TYPES),
    ]
    names += ["snap", "sell_price", "price_relative", "price_change_week"]
    names += [f"{c}_code" for c in config.categorical]
    names += ["age"]
    return names


@dataclass(frozen=True)
class SeriesFacts:
    """Per-series constants the features need, computed once for all blocks."""

    first_sale_day: np.ndarray  # int32, 1-based day of the first non-zero sale (n+1: never)
    codes: dict[str, np.ndarray]  # categorical name -> int32 code per series
    mean_price: np.ndarray  # float32, mean known price of the series
    state_column: np.ndarray  # int: index into snap columns (CA, TX, WI)
    cumsum: np.ndarray  # float64 (n, last_day + 1): cumulative sales, cumsum[:, 0] = 0
    cumsum_sq: np.ndarray  # float64, the same of squared sales
    calendar: dict[str, np.ndarray]  # feature name -> float32 value per day (d_1 first)
    snap: np.ndarray  # float32 (days, 3): SNAP days of CA, TX, WI


def series_facts(data: M5Data, config: FeatureConfig) -> SeriesFacts:
    """Compute the per-series constants (first sale, codes, cumulative sums) once."""
    n, last_day = data.sales.shape
    sold = data.sales > 0
    first = np.where(sold.any(axis=1), sold.argmax(axis=1) + 1, last_day + 1).astype(np.int32)
    columns = {
        "item": data.item_ids, "dept": data.dept_ids, "cat": data.cat_ids,
        "store": data.store_ids, "state": data.state_ids,
    }  # fmt: skip
    codes = {
        name: np.unique(columns[name], return_inverse=True)[1].astype(np.int32)
        for name in config.categorical
    }
    with np.errstate(invalid="ignore"):
        mean_price = np.nanmean(np.where(np.isnan(data.prices), np.nan, data.prices), axis=1)
    states = np.array(["CA", "TX", "WI"])
    state_column = np.searchsorted(states, data.state_ids).clip(0, len(states) - 1)
    cumsum = np.zeros((n, last_day + 1), dtype=np.float64)
    np.cumsum(data.sales, axis=1, dtype=np.float64, out=cumsum[:, 1:])
    cumsum_sq = np.zeros_like(cumsum)
    np.cumsum(np.square(data.sales, dtype=np.float64), axis=1, out=cumsum_sq[:, 1:])
    return SeriesFacts(
        first,
        codes,
        np.nan_to_num(mean_price, nan=1.0).astype(np.float32),
        state_column,
        cumsum,
        cumsum_sq,
        _calendar_columns(data),
        data.calendar[["snap_CA", "snap_TX", "snap_WI"]].to_numpy(np.float32),
    )


def _calendar_columns(data: M5Data) -> dict[str, np.ndarray]:
    calendar = data.calendar
    event_type = calendar["event_type_1"].fillna("").astype(str).to_numpy()
    event_type_2 = calendar["event_type_2"].fillna("").astype(str).to_numpy()
    columns = {
        "wday": calendar["wday"].to_numpy(np.float32),
        "month": calendar["month"].to_numpy(np.float32),
        "year": calendar["year"].to_numpy(np.float32),
        "mday": pd.to_datetime(calendar["date"]).dt.day.to_numpy(np.float32),
        "event": (event_type != "").astype(np.float32),
    }
    for kind in _EVENT_TYPES:
        columns[f"event_{kind.lower()}"] = ((event_type == kind) | (event_type_2 == kind)).astype(
            np.float32
        )
    return columns


def build_block(
    data: M5Data,
    facts: SeriesFacts,
    rows: np.ndarray,
    first_day: int,
    last_day: int,
    config: FeatureConfig,
    *,
    drop_before_first_sale: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Build the feature matrix of series `rows` on days first_day..last_day (1-based).

    Returns
    -------
    features : float32 (n_rows, n_features), rows ordered series-major then by day
    label : float32 (n_rows,), NaN for days after the last sales day
    series : int (n_rows,), index of each row's series in `data`
    day : int32 (n_rows,), the day number of each row
    """
    days = np.arange(first_day, last_day + 1, dtype=np.int64)
    n_rows, n_days = len(rows), len(days)
    sales = data.sales[rows]
    have = data.last_day
    blocks: list[np.ndarray] = []

    def shifted(offset: int) -> np.ndarray:
        """sales of day (t - offset) for each t in days; NaN before d_1 and after the last day."""
        source = days - offset  # 1-based day numbers
        valid = (source >= 1) & (source <= have)
        out = np.full((n_rows, n_days), np.nan, dtype=np.float32)
        out[:, valid] = sales[:, source[valid] - 1]
        return out

    for lag in config.lags:
        blocks.append(shifted(lag))
    cum, cum_sq = facts.cumsum[rows], facts.cumsum_sq[rows]
    end = days - config.min_lag  # window ends at day t - min_lag, inclusive
    for window in config.rolling_windows:
        start = end - window
        valid = (start >= 0) & (end <= have)
        total = np.full((n_rows, n_days), np.nan)
        total_sq = np.full((n_rows, n_days), np.nan)
        total[:, valid] = cum[:, end[valid]] - cum[:, start[valid]]
        total_sq[:, valid] = cum_sq[:, end[valid]] - cum_sq[:, start[valid]]
        mean = total / window
        variance = np.maximum(total_sq / window - mean**2, 0.0)
        blocks += [mean.astype(np.float32), np.sqrt(variance).astype(np.float32)]

    for column in facts.calendar.values():
        blocks.append(np.broadcast_to(column[days - 1], (n_rows, n_days)))
    blocks.append(facts.snap[days - 1][:, facts.state_column[rows]].T)
    prices = data.prices[rows][:, days - 1]
    blocks.append(prices)
    blocks.append(prices / facts.mean_price[rows, None])
    week_before = np.clip(days - 8, 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        blocks.append(prices / data.prices[rows][:, week_before] - 1.0)
    for name in config.categorical:
        blocks.append(np.broadcast_to(facts.codes[name][rows, None], (n_rows, n_days)))
    first_sale = facts.first_sale_day[rows]
    blocks.append((days[None, :] - first_sale[:, None]).astype(np.float32))

    label = np.full((n_rows, n_days), np.nan, dtype=np.float32)
    observed = days <= have
    label[:, observed] = sales[:, days[observed] - 1]
    keep = (
        days[None, :] >= first_sale[:, None]
        if drop_before_first_sale
        else np.ones((n_rows, n_days), dtype=bool)
    )
    features = np.empty((int(keep.sum()), len(blocks)), dtype=np.float32)
    for j, block in enumerate(blocks):
        features[:, j] = block[keep]
    series = np.broadcast_to(rows[:, None], (n_rows, n_days))[keep]
    day = np.broadcast_to(days[None, :], (n_rows, n_days))[keep].astype(np.int32)
    return features, label[keep], series, day
