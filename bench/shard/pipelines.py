"""The four ways from raw M5 files to XGBoost shards that `run.py` measures.

Each runs in its own process (`python pipelines.py NAME DATA_DIR OUT_DIR`), so that its
peak memory is its own, and prints one JSON line: rows and bytes written. All four compute
or write the same thing: per store x department, training rows d_1..d_<last-28>, validation
rows for the last 28 days (both from each series' first sale on) and inference rows for the
last 28 days again (the backtest) and the 28 days after, with the 33 features of
`m5flow.features.FeatureConfig()`: one model's shards (h28).

- `shard`: the shard step (`m5flow.schema.parse_inputs` + `m5flow.shards.write_shards`).
- `floor`: the I/O floor: read the wide sales CSV with pyarrow and write the very same
  shards, byte for byte, with no feature work: the shard step's blocks were computed
  beforehand (`prepare_floor`) and are loaded into memory before the floor times itself.
  Same encoders, storage and writer threads as the shard step, so the difference is the
  shard step's own reading, checking and feature work.
- `naive`: pandas as in most M5 notebooks: melt, merge calendar and prices, sort,
  group-shift and group-rolling, then per-group `to_csv`.
- `mlforecast`: Nixtla mlforecast's `preprocess` with the same lags and rolling windows on
  the long frame (pandas-merged calendar, SNAP and price columns), then per-group Parquet.
  mlforecast needs pandas < 3: run it with `--mlforecast-python` (see README.md).
"""

from __future__ import annotations

import itertools
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
    from m5flow.shards import ShardConfig, write_shards
    from m5flow.storage import DiskStorage

    data = schema.parse_inputs(
        {name: (data_dir / name).read_bytes() for name in schema.INPUT_FILES}
    )
    # One model (h28, early-stopped: no twin), as the other pipelines: the stack's default
    # writes one such set per horizon week, its twin, and the recursive model's.
    config = ShardConfig(min_lags=(HORIZON,), recursive_passes=0, direct_trees=None)
    manifest = write_shards(data, DiskStorage(out), "bench", "bench", {}, shard_config=config)
    return _totals(manifest)


def blocks_dir(data_dir: Path) -> Path:
    """Where `prepare_floor` keeps the shard step's blocks of `data_dir` (v2: with the
    backtest's inference rows)."""
    return data_dir.with_name(data_dir.name + "-blocks-v2")


def prepare_floor(data_dir: Path, out: Path) -> dict:
    """Compute the shard step's blocks once and keep them as .npy files, so that the floor
    can write the very same shards with no feature work (not timed)."""
    from m5flow import schema
    from m5flow.features import FeatureConfig, build_block, series_facts
    from m5flow.shards import groups

    data = schema.parse_inputs(
        {name: (data_dir / name).read_bytes() for name in schema.INPUT_FILES}
    )
    config, last = FeatureConfig(), data.last_day
    facts = series_facts(data, config)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "ids.npy", data.ids)
    for group, rows in groups(data, ("store", "dept")):
        spans = (("train", 1, last - HORIZON, True), ("validation", last - HORIZON + 1, last, True),
                 ("backtest", last - HORIZON + 1, last, False),
                 ("inference", last + 1, last + HORIZON, False))  # fmt: skip
        for channel, first, final, drop in spans:
            block = build_block(
                data, facts, rows, first, final, config, drop_before_first_sale=drop
            )
            for part in ("features", "label", "series", "day"):
                np.save(out / f"{channel}-{group}-{part}.npy", getattr(block, part))
    return {"rows": 0, "bytes": 0}


def floor(data_dir: Path, out: Path) -> dict:
    """Read the wide CSV with pyarrow, then write the very same shards as the shard step,
    byte for byte (same blocks, cuts, encoders, storage and writer threads), with no
    feature work. The blocks, from `prepare_floor`, are loaded into memory first, and only
    what follows is timed (`seconds`): reading them is no part of any floor."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.csv as pacsv

    from m5flow.features import Block, FeatureConfig, feature_names
    from m5flow.manifest import ModelShards, ShardInfo
    from m5flow.shards import encode_inference, encode_training
    from m5flow.storage import DiskStorage

    saved, names = blocks_dir(data_dir), feature_names(FeatureConfig())
    ids = np.load(saved / "ids.npy")
    parts = ("features", "label", "series", "day")
    loaded = {
        path.name.removesuffix("-series.npy"): Block(*(np.load(
            path.with_name(path.name.replace("-series.npy", f"-{p}.npy"))) for p in parts))
        for path in saved.glob("*-series.npy")
    }  # fmt: skip
    started, cpu = time.perf_counter(), time.process_time()
    table = pacsv.read_csv(data_dir / SALES)
    sales = np.empty((table.num_rows, table.num_columns - len(IDS)), dtype=np.float32)
    for j, day in enumerate(table.column_names[len(IDS) :]):
        sales[:, j] = table.column(day).to_numpy()
    stores, depts = (table.column(c).to_numpy(zero_copy_only=False).astype(str)
                     for c in ("store_id", "dept_id"))  # fmt: skip
    groups = np.unique(np.char.add(np.char.add(stores, "_"), depts))
    del table
    storage, model = DiskStorage(out), ModelShards("h28", MIN_LAG, (1, HORIZON), names)

    def blocks(channel: str, group: str) -> list[Block]:
        """The saved block, cut where the shard step cuts it: 256 of the group's series (all
        of them are in its inference block) a piece."""
        whole = loaded[f"{channel}-{group}"]
        series = np.unique(loaded[f"inference-{group}"].series)
        pieces = np.array_split(series, -(-len(series) // 256))
        edges = [*(np.searchsorted(whole.series, piece[0]) for piece in pieces), len(whole)]
        return [Block(whole.features[:, a:b], whole.label[a:b], whole.series[a:b], whole.day[a:b])
                for a, b in itertools.pairwise(edges) if b > a]  # fmt: skip

    def write(group: str) -> dict[str, ShardInfo]:
        written = {}
        for channel in ("train", "validation"):
            body = encode_training(pieces := blocks(channel, group), names, "parquet")
            storage.write(f"{channel}/{group}.parquet", body)
            written[channel] = ShardInfo(group, sum(map(len, pieces)), len(body))
        pieces = blocks("backtest", group) + blocks("inference", group)
        body = encode_inference(pieces, ids, names)
        storage.write(f"inference/{group}.csv", body)
        written["inference"] = ShardInfo(group, sum(map(len, pieces)), len(body))
        return written

    with ThreadPoolExecutor(WORKERS) as pool:
        for written in pool.map(write, groups):
            for channel, info in written.items():
                getattr(model, channel).append(info)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {**_totals_of([model]), "seconds": seconds, "cpu_seconds": cpu}


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
            # the backtest (the last HORIZON sales days) and the horizon
            "inference": group[group.day > last - HORIZON][["id", "day", *names]],
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


def _lean_long_frame(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The long frame as a careful pandas user builds it to fit in memory at full scale:
    integer series ids, small dtypes, calendar and price columns prepared on the small
    tables before the merges. Returns it, the per-series table, and the last sales day."""
    sales = pd.read_csv(data_dir / SALES, engine="pyarrow")
    calendar = pd.read_csv(data_dir / CALENDAR, engine="pyarrow")
    prices = pd.read_csv(data_dir / PRICES, engine="pyarrow")
    series = sales[IDS].copy()
    series["sid"] = np.arange(len(series), dtype=np.int32)
    for column in CODES:
        series[column.replace("_id", "_code")] = series[column].astype("category").cat.codes
    values = sales.iloc[:, len(IDS) :].to_numpy(np.float64)  # float32: std off by 1e-4
    last = values.shape[1]
    values = np.concatenate([values, np.full((len(values), HORIZON), np.nan)], axis=1)
    del sales
    n, width = values.shape
    long = pd.DataFrame({"sid": np.repeat(series["sid"].to_numpy(), width),
                         "day": np.tile(np.arange(1, width + 1, dtype=np.int32), n),
                         "sales": values.ravel()})  # fmt: skip
    del values
    days = calendar.iloc[:width].copy()
    days["day"] = np.arange(1, width + 1, dtype=np.int32)
    days["ds"] = pd.to_datetime(days["date"])
    days["mday"] = days["ds"].dt.day
    types = days[["event_type_1", "event_type_2"]].fillna("")
    days["event"] = (types != "").any(axis=1).astype(np.float32)
    for kind in EVENT_TYPES:
        days[f"event_{kind.lower()}"] = (types == kind).any(axis=1).astype(np.float32)
    events = [f"event_{k.lower()}" for k in EVENT_TYPES]
    snaps = ["snap_CA", "snap_TX", "snap_WI"]
    keep = ["day", "ds", "wm_yr_wk", "wday", "month", "year", "mday", "event", *events, *snaps]
    long = long.merge(days[keep], on="day", how="left")
    state = series["state_id"].to_numpy()[long["sid"].to_numpy()]
    snap = np.select([state == s[-2:] for s in snaps], [long[s] for s in snaps])
    long["snap"] = snap.astype(np.float32)
    long = long.drop(columns=snaps)
    prices = prices.merge(series[["store_id", "item_id", "sid"]], on=["store_id", "item_id"])
    prices = prices[["sid", "wm_yr_wk", "sell_price"]].astype({"sell_price": np.float32})
    long = long.merge(prices, on=["sid", "wm_yr_wk"], how="left")
    long = long.sort_values(["sid", "day"], ignore_index=True)
    by_series = long.groupby("sid", sort=False)
    long["sell_price"] = by_series["sell_price"].ffill()
    long["price_relative"] = long.sell_price / by_series["sell_price"].transform("mean")
    long["price_change_week"] = long.sell_price / by_series["sell_price"].shift(7) - 1
    first_sale = long[long.sales > 0].groupby("sid")["day"].min()
    long["first_sale"] = long["sid"].map(first_sale).fillna(width + 1)
    long["age"] = (long.day - long.first_sale).where(long.day - MIN_LAG >= long.first_sale)
    codes = [c.replace("_id", "_code") for c in CODES]
    long = long.merge(series[["sid", *codes]], on="sid", how="left")
    return long, series, last


def mlforecast(data_dir: Path, out: Path) -> dict:
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean, RollingStd
    from sklearn.linear_model import LinearRegression

    long, series, last = _lean_long_frame(data_dir)
    transforms = [t(w) for w in WINDOWS for t in (RollingMean, RollingStd)]
    forecast = MLForecast(
        models=[LinearRegression()], freq="D", lags=LAGS, lag_transforms={MIN_LAG: transforms},
        num_threads=WORKERS,
    )  # fmt: skip
    # mlforecast refuses missing targets: the 28 future days get 0, which no feature of
    # theirs can see (every lag and window ends 28 days back or more), and NaN again after.
    future = long["day"].to_numpy() > last
    long.loc[future, "sales"] = 0.0
    long = long.drop(columns=["wm_yr_wk"])
    statics = [c.replace("_id", "_code") for c in CODES]
    features = forecast.preprocess(
        long, id_col="sid", time_col="ds", target_col="sales", static_features=statics,
        dropna=False,
    )  # fmt: skip
    del long
    features.loc[features["day"].to_numpy() > last, "sales"] = np.nan
    for column in ("id", "store_id", "dept_id"):
        features[column] = series[column].to_numpy()[features["sid"].to_numpy()]
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
    pipelines = {"naive": naive, "mlforecast": mlforecast, "shard": shard, "floor": floor,
                 "prepare_floor": prepare_floor}  # fmt: skip
    print(json.dumps(pipelines[name](data_dir, out)))
