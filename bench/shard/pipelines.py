"""The four ways from raw M5 files to XGBoost shards that `run.py` measures.

Each runs in its own process (`python pipelines.py NAME DATA_DIR OUT_DIR`), so that its
peak memory is its own, and prints one JSON line: rows and bytes written. All four compute
or write the same thing: per store x department, training rows d_1..d_<last-28>, validation
rows for the last 28 days (both from each series' first sale on) and inference rows for the
28 days after, with the 33 features of `m5flow.features.FeatureConfig()`.

- `shard`: the shard step (`m5flow.schema.parse_inputs` + `m5flow.shards.write_shards`).
- `floor`: the I/O floor: read the wide sales CSV with pyarrow and write shards of the same
  groups, rows, columns, format and encoder, each column a plain shifted copy of the sales:
  no feature work at all. Same writer threads and storage as the shard step.
- `naive`: pandas as in most M5 notebooks: melt, merge calendar and prices, sort,
  group-shift and group-rolling, then per-group `to_csv`.
- `mlforecast`: Nixtla mlforecast's `preprocess` with the same lags and rolling windows on
  the long frame (pandas-merged calendar, SNAP and price columns), then per-group Parquet.
  mlforecast needs pandas < 3: run it with `--mlforecast-python` (see README.md).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SALES, CALENDAR, PRICES = "sales_train_evaluation.csv", "calendar.csv", "sell_prices.csv"
IDS = ["id", "item_id", "dept_id", "cat_id", "store_id", "state_id"]
LAGS = [28, 35, 42, 49, 56, 364]
WINDOWS = [7, 28, 56, 112]
MIN_LAG, HORIZON = 28, 28
EVENT_TYPES = ["Cultural", "National", "Religious", "Sporting"]
CODES = ["item_id", "dept_id", "cat_id", "store_id", "state_id"]
WORKERS = len(os.sched_getaffinity(0))


def shard(data_dir: Path, out: Path) -> dict:
    from m5flow import schema
    from m5flow.shards import write_shards
    from m5flow.storage import DiskStorage

    data = schema.parse_inputs(
        {name: (data_dir / name).read_bytes() for name in schema.INPUT_FILES}
    )
    manifest = write_shards(data, DiskStorage(out), "bench", "bench", {})
    return _totals(manifest)


def floor(data_dir: Path, out: Path) -> dict:
    """Read the wide CSV with pyarrow; write the same shards with no feature work."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.csv as pacsv

    from m5flow.features import Block, FeatureConfig, feature_names
    from m5flow.shards import ModelShards, ShardInfo, encode_inference, encode_training
    from m5flow.storage import DiskStorage

    table = pacsv.read_csv(data_dir / SALES)
    days = [c for c in table.column_names if c.startswith("d_")]
    sales = np.empty((table.num_rows, len(days)), dtype=np.float32)
    for j, day in enumerate(days):
        sales[:, j] = table.column(day).to_numpy()
    ids = {c: table.column(c).to_numpy(zero_copy_only=False).astype(str) for c in IDS}
    del table
    last, names = len(days), feature_names(FeatureConfig())
    sold = sales > 0
    first_sale = np.where(sold.any(axis=1), sold.argmax(axis=1), last)  # 0-based day
    padded = np.concatenate([np.zeros((len(sales), 64), np.float32), sales], axis=1)
    keys = np.char.add(np.char.add(ids["store_id"], "_"), ids["dept_id"])
    storage, model = DiskStorage(out), ModelShards("h28", MIN_LAG, (1, HORIZON), names)

    def block(rows: np.ndarray, first: int, final: int, drop: bool, ahead: int = 0) -> Block:
        """Days first..final-1 (0-based) of series `rows`, written as if `ahead` days later:
        the label and the columns are the sales shifted by 0, 1, ..., 33 days."""
        skip = np.clip(first_sale[rows] - first, 0, final - first) if drop else 0 * rows
        starts, group = skip.tolist(), padded[rows]  # one gather per block, as the shard step

        def copy(shift: int) -> np.ndarray:
            view = group[:, 64 + first - shift : 64 + final - shift]
            return np.concatenate([row[k:] for row, k in zip(view, starts, strict=True)])

        counts = final - first - skip
        day = np.concatenate([np.arange(first + k, final) for k in starts]) + 1 + ahead
        features = np.stack([copy(1 + j) for j in range(len(names))])
        return Block(features, copy(0), np.repeat(rows, counts), day.astype(np.int32))

    def write(key: str) -> dict[str, ShardInfo]:
        rows = np.flatnonzero(keys == key)
        written = {}
        for channel, first, final in (
            ("train", 0, last - HORIZON),
            ("validation", last - HORIZON, last),
        ):
            body = encode_training(b := block(rows, first, final, True), names, "parquet")
            storage.write(f"{channel}/{key}.parquet", body)
            written[channel] = ShardInfo(key, len(b), len(body))
        b = block(rows, last - HORIZON, last, False, ahead=HORIZON)
        body = encode_inference(b, ids["id"], names)
        storage.write(f"inference/{key}.csv", body)
        written["inference"] = ShardInfo(key, len(b), len(body))
        return written

    with ThreadPoolExecutor(WORKERS) as pool:
        for written in pool.map(write, np.unique(keys)):
            for channel, info in written.items():
                getattr(model, channel).append(info)
    return _totals_of([model])


def _long_frame(data_dir: Path, engine: str | None = None) -> tuple[pd.DataFrame, int]:
    """The naive start: melt the wide sales (plus 28 empty days), merge calendar and prices."""
    sales = pd.read_csv(data_dir / SALES, engine=engine)
    calendar = pd.read_csv(data_dir / CALENDAR, engine=engine)
    prices = pd.read_csv(data_dir / PRICES, engine=engine)
    last = sales.shape[1] - len(IDS)
    future = pd.DataFrame(
        np.nan, index=sales.index, columns=[f"d_{d}" for d in range(last + 1, last + HORIZON + 1)]
    )
    sales = pd.concat([sales, future], axis=1)
    long = sales.melt(id_vars=IDS, var_name="d", value_name="sales")
    long = long.merge(calendar, on="d", how="left")
    long = long.merge(prices, on=["store_id", "item_id", "wm_yr_wk"], how="left")
    long["day"] = long["d"].str[2:].astype(int)
    return long.sort_values(["id", "day"], ignore_index=True), last


def _common_features(long: pd.DataFrame) -> pd.DataFrame:
    """Calendar, SNAP, price, code and age features, the pandas way."""
    by_series = long.groupby("id", sort=False)
    long["sell_price"] = by_series["sell_price"].ffill()
    dates = pd.to_datetime(long["date"])
    long["mday"] = dates.dt.day
    types = long[["event_type_1", "event_type_2"]].fillna("")
    long["event"] = (types != "").any(axis=1).astype(float)
    for kind in EVENT_TYPES:
        long[f"event_{kind.lower()}"] = (types == kind).any(axis=1).astype(float)
    long["snap"] = np.select([long.state_id == s for s in ("CA", "TX", "WI")],
                             [long.snap_CA, long.snap_TX, long.snap_WI])  # fmt: skip
    long["price_relative"] = long.sell_price / by_series["sell_price"].transform("mean")
    long["price_change_week"] = long.sell_price / by_series["sell_price"].shift(7) - 1
    for column in CODES:
        long[column.replace("_id", "_code")] = long[column].astype("category").cat.codes
    first_sale = long[long.sales > 0].groupby("id")["day"].min()
    long["first_sale"] = long["id"].map(first_sale).fillna(long.day.max() + 1)
    long["age"] = (long.day - long.first_sale).where(long.day - MIN_LAG >= long.first_sale)
    return long


def _write_groups(
    long: pd.DataFrame, last: int, out: Path, names: list[str], parquet: bool
) -> dict:
    rows = bytes_ = 0
    for (store, dept), group in long.groupby(["store_id", "dept_id"], sort=True):
        kept = group[group.day >= group.first_sale]
        parts = {
            "train": kept[kept.day <= last - HORIZON][["sales", *names]],
            "validation": kept[(kept.day > last - HORIZON) & (kept.day <= last)][["sales", *names]],
            "inference": group[group.day > last][["id", "day", *names]],
        }
        for channel, part in parts.items():
            path = (
                out
                / channel
                / f"{store}_{dept}.{'parquet' if parquet and channel != 'inference' else 'csv'}"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".parquet":
                part.to_parquet(path, index=False)
            else:
                part.to_csv(path, header=False, index=False)
            rows, bytes_ = rows + len(part), bytes_ + path.stat().st_size
    return {"rows": rows, "bytes": bytes_}


def naive(data_dir: Path, out: Path) -> dict:
    long, last = _long_frame(data_dir)
    by_series = long.groupby("id", sort=False)["sales"]
    for lag in LAGS:
        long[f"lag{lag}"] = by_series.shift(lag)
    for window in WINDOWS:
        long[f"rolling_mean_lag28_window_size{window}"] = by_series.transform(
            lambda s, w=window: s.shift(MIN_LAG).rolling(w).mean()
        )
        long[f"rolling_std_lag28_window_size{window}"] = by_series.transform(
            lambda s, w=window: s.shift(MIN_LAG).rolling(w).std()
        )
    long = _common_features(long)
    return _write_groups(long, last, out, _names(), parquet=False)


def mlforecast(data_dir: Path, out: Path) -> dict:
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean, RollingStd
    from sklearn.linear_model import LinearRegression

    long, last = _long_frame(data_dir, engine="pyarrow")
    long = _common_features(long)
    long["ds"] = pd.to_datetime(long["date"])
    transforms = [t(w) for w in WINDOWS for t in (RollingMean, RollingStd)]
    forecast = MLForecast(
        models=[LinearRegression()], freq="D", lags=LAGS, lag_transforms={MIN_LAG: transforms},
        num_threads=WORKERS,
    )  # fmt: skip
    exogenous = [n for n in _names() if not n.startswith(("lag", "rolling_")) and n not in
                 {c.replace("_id", "_code") for c in CODES}]  # fmt: skip
    codes = [c.replace("_id", "_code") for c in CODES]
    frame = long[
        ["id", "ds", "sales", "day", "first_sale", "store_id", "dept_id", *exogenous, *codes]
    ]
    del long
    # mlforecast refuses missing targets: the 28 future days get 0, which no feature of
    # theirs can see (every lag and window ends 28 days back or more), and NaN again after.
    future = frame["day"] > last
    frame.loc[future, "sales"] = 0.0
    statics = ["store_id", "dept_id", *codes]
    features = forecast.preprocess(
        frame, id_col="id", time_col="ds", target_col="sales", static_features=statics, dropna=False
    )
    features.loc[features["day"] > last, "sales"] = np.nan
    return _write_groups(features, last, out, _names(), parquet=True)


def _names() -> list[str]:
    names = [f"lag{lag}" for lag in LAGS]
    for window in WINDOWS:
        names += [
            f"rolling_mean_lag28_window_size{window}",
            f"rolling_std_lag28_window_size{window}",
        ]
    names += [
        "wday",
        "month",
        "year",
        "mday",
        "event",
        *(f"event_{k.lower()}" for k in EVENT_TYPES),
    ]
    names += ["snap", "sell_price", "price_relative", "price_change_week"]
    return names + [c.replace("_id", "_code") for c in CODES] + ["age"]


def _totals(manifest) -> dict:
    return _totals_of(manifest.models)


def _totals_of(models) -> dict:
    shards = [
        s for m in models for c in ("train", "validation", "inference") for s in getattr(m, c)
    ]
    return {"rows": sum(s.rows for s in shards), "bytes": sum(s.bytes for s in shards)}


if __name__ == "__main__":
    name, data_dir, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    result = {"naive": naive, "mlforecast": mlforecast, "shard": shard, "floor": floor}[name](
        data_dir, out
    )
    print(json.dumps(result))
