"""Choose forecasting settings on backtests, in-process (the local flow is the final check).

Each configuration is trained and scored on 28-day windows that end at or before d_1941,
using the same core feature code and the same XGBoost training the local SageMaker runs;
the final window d_1942..d_1969 is printed for reporting only and never used to choose.

    python bench/accuracy/explore.py [--windows 6] [--configs original,h28,groups]

EXPLORE_WORKERS sets the worker processes (default 2); EXPLORE_SAVE=dir saves every window's
forecast and backtest (`<config>_<origin>.npz`) for post-processing without retraining.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import xgboost as xgb

from m5flow import naming, schema
from m5flow.features import FeatureConfig, build_block, feature_names, series_facts
from m5flow.forecast import closed_days
from m5flow.hierarchy import Hierarchy
from m5flow.schema import M5Data
from m5flow.scoring import dollar_sales, naive_scale, wrmsse

ROUNDS: list[int] = []  # trees each model kept, in this process
BACKTESTS: list[tuple] = []  # (series, column, prediction) of the last model's backtest rows
SAVE = Path(os.environ["EXPLORE_SAVE"]) if os.environ.get("EXPLORE_SAVE") else None
REAL = Path(__file__).resolve().parents[3] / "shared" / "m5-real"
ORIGINAL = {
    "objective": "reg:tweedie", "tweedie_variance_power": 1.5, "eta": 0.1, "max_depth": 5,
    "min_child_weight": 7, "subsample": 0.7, "colsample_bytree": 0.7, "eval_metric": "rmse",
}  # fmt: skip
TUNED = {
    "objective": "reg:tweedie", "tweedie_variance_power": 1.2, "eta": 0.05, "max_depth": 8,
    "min_child_weight": 10, "subsample": 0.8, "colsample_bytree": 0.7, "tree_method": "hist",
    "eval_metric": "poisson-nloglik",
}  # fmt: skip
CONFIGS: dict[str, dict] = {
    "original": {"min_lags": (28,), "params": ORIGINAL, "num_round": 3000, "history": None},
    "h28": {"min_lags": (28,), "params": TUNED, "num_round": 1500, "history": None},
    "groups": {"min_lags": (7, 14, 21, 28), "params": TUNED, "num_round": 1500, "history": None},
    "groups_orig": {
        "min_lags": (7, 14, 21, 28),
        "params": {**ORIGINAL, "tree_method": "hist", "eval_metric": "poisson-nloglik"},
        "num_round": 3000,
        "history": None,
    },
}
_TW11 = {**ORIGINAL, "tree_method": "hist", "eval_metric": "poisson-nloglik",
         "tweedie_variance_power": 1.1}  # fmt: skip
CONFIGS["groups_poisson"] = {
    **CONFIGS["groups_orig"],
    "params": {k: v for k, v in _TW11.items() if k != "tweedie_variance_power"}
    | {"objective": "count:poisson"},
}
CONFIGS["groups_tw11_deep"] = {
    **CONFIGS["groups_orig"],
    "params": {**_TW11, "max_depth": 7, "min_child_weight": 20, "eta": 0.05},
}
CONFIGS["groups_recent"] = {**CONFIGS["groups_orig"], "history": 730}
CONFIGS["groups_tw11"] = {
    **CONFIGS["groups_orig"],
    "params": {**CONFIGS["groups_orig"]["params"], "tweedie_variance_power": 1.1},
}


for _rounds in (100, 150, 300):
    CONFIGS[f"all_{_rounds}"] = {**CONFIGS["groups_tw11"], "train_all": True, "num_round": _rounds}

CONFIGS["w_dollar"] = {**CONFIGS["groups_tw11"], "weights": "dollar"}

CONFIGS["patience100"] = {**CONFIGS["groups_tw11"], "patience": 100}
CONFIGS["eta03_p100"] = {
    **CONFIGS["groups_tw11"], "patience": 100,
    "params": {**CONFIGS["groups_tw11"]["params"], "eta": 0.03},
}  # fmt: skip

CONFIGS["npt4_p50"] = {
    **CONFIGS["groups_tw11"], "patience": 50,
    "params": {**CONFIGS["groups_tw11"]["params"], "num_parallel_tree": 4},
}  # fmt: skip
CONFIGS["no_year"] = {**CONFIGS["groups_tw11"], "drop": ("year",)}
CONFIGS["relative"] = {**CONFIGS["groups_tw11"], "relative": True}
CONFIGS["seeds5"] = {**CONFIGS["groups_tw11"], "seeds": 5}
# Session 14: three seeds of each side, to score each draw (EXPLORE_SAVE keeps them) and
# see how much of the year's gain is the luck of one draw.
CONFIGS["seeds3"] = {**CONFIGS["groups_tw11"], "seeds": 3}
CONFIGS["original_seeds3"] = {**CONFIGS["original"], "seeds": 3}
CONFIGS["daily7"] = {**CONFIGS["groups_tw11"], "min_lags": (1, 2, 3, 4, 5, 6, 7, 14, 21, 28)}
CONFIGS["offset28"] = {**CONFIGS["groups_tw11"], "offset": (28, 0.1)}
for _cap in (50, 100):
    CONFIGS[f"cap{_cap}"] = {**CONFIGS["groups_tw11"], "num_round": _cap}
CONFIGS["w_rmsse"] = {**CONFIGS["groups_tw11"], "weights": "rmsse"}
CONFIGS["patience5"] = {**CONFIGS["groups_tw11"], "patience": 5}
CONFIGS["stack"] = {**CONFIGS["groups_tw11"], "stack": True}
CONFIGS["original_masked"] = {**CONFIGS["original"], "mask_prices": True}
CONFIGS["groups_tw11_masked"] = {**CONFIGS["groups_tw11"], "mask_prices": True}
CONFIGS["valid56"] = {**CONFIGS["groups_tw11"], "valid_days": 56}
CONFIGS["no_season"] = {**CONFIGS["groups_tw11"], "drop": ("month", "mday")}
CONFIGS["original_no_season"] = {**CONFIGS["original"], "drop": ("month", "mday")}
CONFIGS["holidays_only"] = {**CONFIGS["no_season"], "holidays": True}
CONFIGS["original_holidays_only"] = {**CONFIGS["original_no_season"], "holidays": True}
CONFIGS["half_life_365"] = {**CONFIGS["groups_tw11"], "half_life": 365}
CONFIGS["half_life_730"] = {**CONFIGS["groups_tw11"], "half_life": 730}
CONFIGS["refit"] = {**CONFIGS["groups_tw11"], "refit": True}
CONFIGS["no_mday"] = {**CONFIGS["groups_tw11"], "drop": ("mday",)}
CONFIGS["holidays_mday"] = {**CONFIGS["groups_tw11"], "drop": ("month",), "holidays": True}
# Session 10: the squared error WRMSSE itself scores (forecasts clipped at 0, as the
# pipeline's are), and leaf-wise trees instead of depth-wise ones.
_NO_POWER = {k: v for k, v in _TW11.items() if k != "tweedie_variance_power"}
CONFIGS["squared_error"] = {
    **CONFIGS["groups_tw11"],
    "params": _NO_POWER | {"objective": "reg:squarederror", "eval_metric": "rmse"},
}
CONFIGS["leafwise"] = {
    **CONFIGS["groups_tw11"],
    "params": {**_TW11, "grow_policy": "lossguide", "max_depth": 0, "max_leaves": 31},
}

# Session 11: fewer identity codes (a tree can memorise an item by its code), a yearly
# rolling level, the same weekday's mean of the five weekly lags, and tweedie powers between.
CONFIGS["no_item"] = {**CONFIGS["groups_tw11"], "drop": ("item_code",)}
CONFIGS["no_item_dept"] = {**CONFIGS["groups_tw11"], "drop": ("item_code", "dept_code")}
CONFIGS["roll364"] = {
    **CONFIGS["groups_tw11"],
    "features": lambda m: replace(
        FeatureConfig.for_min_lag(m), rolling_windows=(7, 28, 56, 112, 364)
    ),
}
CONFIGS["wday_mean"] = {**CONFIGS["groups_tw11"], "wday_mean": True}
for _power in (1.2, 1.3):
    CONFIGS[f"tw{int(_power * 10)}"] = {
        **CONFIGS["groups_tw11"],
        "params": {**_TW11, "tweedie_variance_power": _power},
    }

# Regularisation the default has none of (session 11, second batch).
for _name, _change in {
    "lambda10": {"lambda": 10},
    "mcw50": {"min_child_weight": 50},
    "sample05": {"subsample": 0.5, "colsample_bytree": 0.5},
    "depth4": {"max_depth": 4},
    "depth6": {"max_depth": 6},
}.items():
    CONFIGS[_name] = {**CONFIGS["groups_tw11"], "params": {**_TW11, **_change}}

# Session 15: the length of the current run of days without a sale, as of the model's
# freshest day (an item that stopped selling, or one out of stock).
CONFIGS["zero_run"] = {**CONFIGS["groups_tw11"], "zero_run": True}
CONFIGS["original_zero_run"] = {**CONFIGS["original"], "zero_run": True}


# Session 18: the recursive family (lag 1, forecasts fed back), alone and beside the default.
CONFIGS["recursive"] = {**CONFIGS["groups_tw11"], "recursive": 1}
CONFIGS["recursive_orig"] = {**CONFIGS["original"], "recursive": 1}
CONFIGS["recursive7"] = {**CONFIGS["groups_tw11"], "recursive": 7}
CONFIGS["recursive14"] = {**CONFIGS["groups_tw11"], "recursive": 14}
CONFIGS["recursive_daily"] = {
    **CONFIGS["recursive"],
    "features": lambda m: replace(
        FeatureConfig.for_min_lag(m), lags=(*range(1, 8), 14, 21, 28, 35, 364)
    ),
}
# The recursion in a few passes instead of 28 steps: the lag-1 model reads the direct
# models' forecast as the future's sales, then its own forecast, pass after pass (day k is
# exact after pass k); the forecast is the mean of the direct and the last pass.
for _passes in (1, 2, 3):
    CONFIGS[f"refine{_passes}"] = {**CONFIGS["groups_tw11"], "refine": _passes}
for _passes in (3, 5, 8):
    CONFIGS[f"naive_refine{_passes}"] = {**CONFIGS[f"refine{min(_passes, 3)}"], "refine": _passes,
                                         "feed": "naive"}  # fmt: skip

# Session 19: the recursive model's own variance and settings (it keeps 80-120 trees).
CONFIGS["recursive_seeds5"] = {**CONFIGS["recursive"], "seeds": 5}
CONFIGS["recursive_eta03"] = {**CONFIGS["recursive"], "patience": 60, "params": {
    **CONFIGS["recursive"]["params"], "eta": 0.03}}  # fmt: skip
CONFIGS["recursive_deep"] = {**CONFIGS["recursive"], "params": {
    **CONFIGS["recursive"]["params"], "max_depth": 8, "min_child_weight": 20}}  # fmt: skip
CONFIGS["recursive_p100"] = {**CONFIGS["recursive"], "patience": 100}
CONFIGS["recursive_refit"] = {**CONFIGS["recursive"], "refit": True}
# Yesterday's sales of the series' groups, fresh only for a lag-1 model: the total, its store
# (a store's traffic) and its item in every store (a promotion).
CONFIGS["recursive_agg"] = {**CONFIGS["recursive"], "aggregates": ("all", "store_ids", "item_ids")}
CONFIGS["recursive_agg_store"] = {**CONFIGS["recursive"], "aggregates": ("all", "store_ids")}
CONFIGS["recursive_agg_item"] = {**CONFIGS["recursive"], "aggregates": ("item_ids",)}
# for_min_lag(1)'s weekly lags are 1, 8, 15, ... (yesterday's weekday); these are today's.
CONFIGS["recursive_weekday"] = {
    **CONFIGS["recursive"],
    "features": lambda m: replace(FeatureConfig.for_min_lag(m), lags=(1, 7, 14, 21, 28, 364)),
}
CONFIGS["recursive_gap"] = {**CONFIGS["recursive"], "gap": True}
for _rounds in (100, 150):
    CONFIGS[f"recursive_fixed{_rounds}"] = {**CONFIGS["recursive"], "fixed_rounds": _rounds}
CONFIGS["recursive_npt4"] = {**CONFIGS["recursive"], "params": {
    **CONFIGS["recursive"]["params"], "num_parallel_tree": 4}}  # fmt: skip


def load_real() -> M5Data:
    return schema.parse_inputs({n: (REAL / n).read_bytes() for n in schema.INPUT_FILES})


def with_truth(data: M5Data) -> tuple[M5Data, np.ndarray | None]:
    """The real data extended with the final window's truth, for scoring only."""
    import pandas as pd

    truth = pd.read_csv(REAL / naming.TRUTH_FILE).set_index("id").loc[data.ids].to_numpy(np.float32)
    return data, truth


def window_truth(data: M5Data, final_truth: np.ndarray, origin: int) -> np.ndarray:
    """The 28 days after `origin`: from the sales, or the final window's truth file."""
    return final_truth if origin == data.last_day else data.sales[:, origin : origin + 28]


def truncate(data: M5Data, origin: int) -> M5Data:
    """The data as it was known at the end of day `origin`."""
    return replace(
        data,
        sales=data.sales[:, :origin],
        calendar=data.calendar.iloc[: origin + schema.HORIZON].reset_index(drop=True),
        day_week=data.day_week[: origin + schema.HORIZON],
    )


def mask_prices(data: M5Data, origin: int) -> M5Data:
    """As in the final window: prices carried forward after the week of day origin - 23.

    In ../shared/m5-real the 28 items' prices stop with the week ending d_1918 (23 days
    before the final origin d_1941), so the final window's price features are flat; a
    backtest that sees the real future prices is an easier problem than the final window.
    """
    last_week = data.day_week[origin - 23 - 1]
    weekly = data.weekly_prices.copy()
    weekly[:, last_week + 1 :] = weekly[:, [last_week]]
    return replace(data, weekly_prices=weekly)


def _weights(data: M5Data, kind: str | None) -> np.ndarray:
    """Per-series training weights, mean 1: none, or dollar sales of the last 28 training days."""
    if kind is None:
        return np.ones(len(data.ids), dtype=np.float32)
    dollars = dollar_sales(data.sales[:, :-28], data.prices[:, : data.last_day - 28])
    weight = np.nan_to_num(dollars) + 1e-3 * np.nanmean(dollars)
    if kind == "rmsse":  # as level 12 of the WRMSSE weighs a series' error: dollars / its scale
        scale = naive_scale(data.sales[:, :-28])
        weight = weight / np.sqrt(np.where(np.isfinite(scale) & (scale > 0), scale, np.nan))
        weight = np.nan_to_num(weight, nan=float(np.nanmin(weight)))
    return (weight / weight.mean()).astype(np.float32)


def _relative(features: np.ndarray, names: list[str], min_lag: int) -> np.ndarray:
    """Lags and rolling statistics divided by the series' 56-day mean (which stays as is)."""
    kept = names.index(f"rolling_mean_lag{min_lag}_window_size56")
    out = features.copy()
    for j, name in enumerate(names):
        if name.startswith(("lag", "rolling_")) and j != kept:
            out[j] = features[j] / (features[kept] + 0.1)
    return out


def _level(features: np.ndarray, names: list[str], min_lag: int, offset: tuple) -> np.ndarray:
    """Each row's recent level: the rolling mean over `window` days ending min_lag days back."""
    window, floor = offset
    level = features[names.index(f"rolling_mean_lag{min_lag}_window_size{window}")]
    return (np.nan_to_num(level) + floor).astype(np.float32)


def _holiday_season(data: M5Data, days: np.ndarray) -> np.ndarray:
    """1..38 from Dec 1 to Jan 7, else 0: the one yearly pattern without the rest of the year."""
    import pandas as pd

    dates = pd.to_datetime(data.calendar["date"].to_numpy()[days - 1])
    december = np.where(dates.month == 12, dates.day, 0)
    january = np.where((dates.month == 1) & (dates.day <= 7), 31 + dates.day, 0)
    return (december + january).astype(np.float32)


def _zero_runs(sales: np.ndarray) -> np.ndarray:
    """How many days in a row each series had sold nothing, ending on each day (float32)."""
    runs = np.zeros(sales.shape, dtype=np.float32)
    current = np.zeros(sales.shape[0], dtype=np.float32)
    for day in range(sales.shape[1]):
        current = np.where(sales[:, day] > 0, 0, current + 1)
        runs[:, day] = current
    return runs


def _aggregate_rows(data: M5Data, block, kinds: tuple[str, ...], lag: int) -> np.ndarray:
    """Per row: its group's sales `lag` days before, and their 7- and 28-day means ending
    there, for each kind of group ("all", "store_ids", "item_ids", ...)."""
    rows = []
    column = block.day - lag - 1  # 0-based column of the freshest day the row may read
    for kind in kinds:
        codes = (
            np.zeros(len(data.ids), int) if kind == "all" else pd.factorize(getattr(data, kind))[0]
        )
        totals = np.zeros((codes.max() + 1, data.sales.shape[1]))
        np.add.at(totals, codes, data.sales)
        cum = np.concatenate([np.zeros((len(totals), 1)), totals.cumsum(axis=1)], axis=1)
        group = codes[block.series]
        ok = column >= 0
        col = np.where(ok, column, 0)
        rows.append(np.where(ok, totals[group, col], np.nan))
        for window in (7, 28):
            start = np.maximum(col + 1 - window, 0)
            mean = (cum[group, col + 1] - cum[group, start]) / (col + 1 - start)
            rows.append(np.where(col + 1 >= window, mean, np.nan))
    return np.asarray(rows, dtype=np.float32)


def _with_aggregates(data: M5Data, block, config: dict, lag: int) -> np.ndarray:
    if not config.get("aggregates"):
        return block.features
    return np.vstack([block.features, _aggregate_rows(data, block, config["aggregates"], lag)])


def _lag_model(data: M5Data, config: dict, step: int) -> tuple[xgb.Booster, FeatureConfig, object]:
    """A model whose freshest sales are `step` days old, early-stopped on the last 28 days."""
    rows = np.arange(len(data.ids))
    features = config.get("features", FeatureConfig.for_min_lag)(step)
    facts = series_facts(data, features)  # first sales from the real days, not the forecasts
    last = data.last_day
    params = {**config["params"], "nthread": 1, "seed": config.get("seed", 0)}
    matrix = lambda block: _with_aggregates(data, block, config, step)  # noqa: E731
    if config.get("fixed_rounds"):  # every day, a fixed number of trees, nothing held out
        full = build_block(data, facts, rows, 1, last, features)
        booster = xgb.train(params, xgb.DMatrix(matrix(full).T, label=full.label),
                            config["fixed_rounds"], verbose_eval=False)  # fmt: skip
        ROUNDS.append(config["fixed_rounds"])
        return booster, features, facts
    # "gap": early-stop on the 28 days before the last 28, which it trains on.
    gap = 28 if config.get("gap") else 0
    valid = build_block(data, facts, rows, last - 27 - gap, last - gap, features)
    train = build_block(data, facts, rows, 1, last - 28 - gap, features)
    train_matrix, label = matrix(train), train.label
    if gap:
        recent = build_block(data, facts, rows, last - gap + 1, last, features)
        train_matrix = np.hstack([train_matrix, matrix(recent)])
        label = np.concatenate([label, recent.label])
    booster = xgb.train(
        params, xgb.DMatrix(train_matrix.T, label=label), config["num_round"],
        evals=[(xgb.DMatrix(matrix(valid).T, label=valid.label), "validation")],
        early_stopping_rounds=config.get("patience", 20), verbose_eval=False,
    )  # fmt: skip
    ROUNDS.append(booster.best_iteration + 1)
    if config.get("refit"):  # again on every day up to the origin, with the trees it chose
        full = build_block(data, facts, rows, 1, last, features)
        booster = xgb.train(params, xgb.DMatrix(matrix(full).T, label=full.label),
                            booster.best_iteration + 1, verbose_eval=False)  # fmt: skip
    return booster, features, facts


def _predict_days(
    booster: xgb.Booster, data: M5Data, facts: object, features: FeatureConfig,
    future: np.ndarray, first: int, days: int, config: dict | None = None,
) -> np.ndarray:  # fmt: skip
    """(series, days) forecasts of days first.., reading `future` as the sales after the origin."""
    rows = np.arange(len(data.ids))
    known = replace(data, sales=np.concatenate([data.sales, future], axis=1))
    block = build_block(known, facts, rows, first, first + days - 1, features,
                        drop_before_first_sale=False)  # fmt: skip
    pred = booster.predict(
        xgb.DMatrix(_with_aggregates(known, block, config or {}, features.min_lag).T),
        iteration_range=(0, booster.best_iteration + 1),
    )
    out = np.zeros((len(rows), days), dtype=np.float32)
    out[block.series, block.day - first] = np.maximum(0, pred)
    return out


def _closed_to_zero(data: M5Data, forecast: np.ndarray) -> np.ndarray:
    """As the pipeline's assembly: dates the stores closed on every earlier year are 0."""
    dates = pd.to_datetime(data.calendar["date"]).to_numpy()
    closed = closed_days(data.sales.sum(axis=0), dates, data.last_day + 1, schema.HORIZON)
    return np.where(closed, 0.0, forecast)


def _recursive(data: M5Data, config: dict) -> np.ndarray:
    """One model whose freshest sales are `step` days old, its forecasts fed back a step
    at a time: lag 1 and 28 steps is the M5 kernels' recursive family, lag 7 and four steps
    reuses the default's week-1 model for every week.
    """
    step, last = config["recursive"], data.last_day
    booster, features, facts = _lag_model(data, config, step)
    future = np.zeros((len(data.ids), 0), dtype=np.float32)
    for first in range(last + 1, last + schema.HORIZON + 1, step):
        days = _predict_days(booster, data, facts, features, future, first, step, config)
        future = np.concatenate([future, days], axis=1)
    return _closed_to_zero(data, future[:, : schema.HORIZON].astype(np.float64))


def _refined(data: M5Data, config: dict) -> np.ndarray:
    """The mean of the direct forecast and the lag-1 model's, after `refine` passes that
    start from the direct forecast, or (`feed` "naive") from the last week repeated."""
    direct = _direct(data, {k: v for k, v in config.items() if k != "refine"})
    booster, features, facts = _lag_model(data, config, 1)
    future = direct.astype(np.float32)
    if config.get("feed") == "naive":
        future = np.tile(data.sales[:, -7:], 4)
    for _ in range(config["refine"]):
        future = _predict_days(
            booster, data, facts, features, future[:, :-1], data.last_day + 1, schema.HORIZON
        )
    return _closed_to_zero(data, (direct + future) / 2)


def forecast(data: M5Data, config: dict) -> np.ndarray:
    if config.get("recursive"):
        return _recursive(data, config)
    if config.get("refine"):
        return _refined(data, config)
    return _direct(data, config)


def _direct(data: M5Data, config: dict) -> np.ndarray:
    last = data.last_day
    rows = np.arange(len(data.ids))
    previous = 0
    # "stack": every model also predicts the earlier days it may, and the day's forecast is
    # the mean of those predictions.
    total = np.zeros((len(data.ids), schema.HORIZON), dtype=np.float64)
    count = np.zeros_like(total)
    zero_runs = _zero_runs(data.sales) if config.get("zero_run") else None
    for min_lag in config["min_lags"]:
        features = config.get("features", FeatureConfig.for_min_lag)(min_lag)
        facts = series_facts(data, features)
        names = feature_names(features)

        def prep(block, names=names, min_lag=min_lag) -> np.ndarray:
            matrix = block.features
            matrix = _relative(matrix, names, min_lag) if config.get("relative") else matrix
            dropped = [names.index(name) for name in config.get("drop", ())]
            matrix = np.delete(matrix, dropped, axis=0) if dropped else matrix
            if config.get("wday_mean"):  # the same weekday's mean over the last 5 weeks
                weekly = [names.index(f"lag{min_lag + 7 * k}") for k in range(5)]
                matrix = np.vstack([matrix, np.nanmean(block.features[weekly], axis=0)[None]])
            if config.get("holidays"):
                matrix = np.vstack([matrix, _holiday_season(data, block.day)[None]])
            if config.get("zero_run"):  # days without a sale, up to the model's freshest day
                column = block.day - min_lag - 1  # before d_1: unknown, not wrapped around
                run = np.where(column >= 0, zero_runs[block.series, column], np.nan)
                matrix = np.vstack([matrix, run[None]])
            return matrix

        first = 1 if config["history"] is None else last - 28 - config["history"]
        # "train_all": no early stopping; num_round trees on every day up to the origin.
        valid_days = config.get("valid_days", 28)
        train_last = last if config.get("train_all") else last - valid_days
        train = build_block(data, facts, rows, max(1, first), train_last, features)
        valid = build_block(data, facts, rows, last - valid_days + 1, last, features)
        weight = _weights(data, config.get("weights"))[train.series]
        if config.get("half_life"):  # recent days count more: a weight that halves each half-life
            weight = weight * 0.5 ** ((train_last - train.day) / config["half_life"])
        offset = config.get("offset")

        def level_of(block, names=names, min_lag=min_lag, offset=offset) -> np.ndarray:
            """The offset target's divisor: the row's recent level, or 1 without an offset."""
            if not offset:
                return np.ones(block.features.shape[1], dtype=np.float32)
            return _level(block.features, names, min_lag, offset)

        train_level, valid_level = level_of(train), level_of(valid)
        dtrain = xgb.DMatrix(
            prep(train).T, label=train.label / train_level, weight=weight * train_level
        )
        dval = xgb.DMatrix(prep(valid).T, label=valid.label / valid_level, weight=valid_level)
        params = {**config["params"], "nthread": 1, "seed": config.get("seed", 0)}
        booster = xgb.train(
            params, dtrain, config["num_round"], evals=[(dval, "validation")],
            early_stopping_rounds=None if config.get("train_all") else config.get("patience", 20),
            verbose_eval=False,
        )  # fmt: skip
        ROUNDS.append(booster.best_iteration + 1 if not config.get("train_all") else 0)
        backtester = booster
        if config.get("refit"):  # again on every day up to the origin, with the trees it chose
            full = build_block(data, facts, rows, max(1, first), last, features)
            dfull = xgb.DMatrix(
                prep(full).T, label=full.label, weight=_weights(data, None)[full.series]
            )
            booster = xgb.train(params, dfull, booster.best_iteration + 1, verbose_eval=False)
        future = build_block(
            data, facts, rows, last + (0 if config.get("stack") else previous) + 1,
            last + min_lag, features,
            drop_before_first_sale=False,
        )  # fmt: skip
        pred = np.maximum(0, booster.predict(  # sales are never negative (m5flow.forecast)
            xgb.DMatrix(prep(future).T), iteration_range=(0, booster.best_iteration + 1)
        )) * level_of(future)  # fmt: skip
        np.add.at(total, (future.series, future.day - last - 1), pred)
        np.add.at(count, (future.series, future.day - last - 1), 1)
        # As the pipeline's inference shards: the same horizon days, from 28 days earlier.
        past = build_block(
            data, facts, rows, last - 28 + previous + 1, last - 28 + min_lag, features,
            drop_before_first_sale=False,
        )  # fmt: skip
        BACKTESTS.append((past.series, past.day - last + 27, backtester.predict(
            xgb.DMatrix(prep(past).T), iteration_range=(0, backtester.best_iteration + 1)
        ) * level_of(past)))  # fmt: skip
        previous = min_lag
    return _closed_to_zero(data, total / count)


def score(data: M5Data, origin: int, truth: np.ndarray, prediction: np.ndarray) -> dict:
    known = truncate(data, origin)
    weights = dollar_sales(known.sales, known.prices[:, :origin])
    result = wrmsse(known.sales, truth, prediction, Hierarchy.from_data(data), weights)
    return {"wrmsse": result.wrmsse, "L1": result.levels[1], "L12": result.levels[12]}


def run_one(args: tuple[str, int]) -> dict:
    name, origin = args
    data, final_truth = with_truth(load_real())
    truth = window_truth(data, final_truth, origin)
    started = time.perf_counter()
    BACKTESTS.clear()
    config = CONFIGS[name]
    known = truncate(data, origin)
    if config.get("mask_prices") and origin < data.last_day:
        known = mask_prices(known, origin)
    by_seed = [forecast(known, {**config, "seed": seed})
               for seed in range(config.get("seeds", 1))]  # fmt: skip
    prediction = np.mean(by_seed, axis=0)
    if SAVE and len(by_seed) > 1:
        SAVE.mkdir(parents=True, exist_ok=True)
        np.save(SAVE / f"{name}_{origin}_seeds.npy", np.stack(by_seed))
    if SAVE:
        backtest = np.zeros_like(prediction)
        for series, column, values in BACKTESTS:
            backtest[series, column] = values
        SAVE.mkdir(parents=True, exist_ok=True)
        np.savez(SAVE / f"{name}_{origin}.npz", forecast=prediction, backtest=backtest)
    return {"config": name, "origin": origin, "seconds": time.perf_counter() - started,
            "rounds": ROUNDS[-len(CONFIGS[name]["min_lags"]) - bool(config.get("refine")):]
            if not config.get("recursive") else ROUNDS[-1:],
            **score(data, origin, truth, prediction)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--final", action="store_true", help="also report the final window")
    parser.add_argument("--origins", help="comma-separated origins instead of --windows")
    args = parser.parse_args()
    origins = [1941 - 28 * k for k in range(1, args.windows + 1)]
    if args.origins:
        origins = [int(o) for o in args.origins.split(",")]
    if args.final:
        origins.append(1941)
    jobs = [(c, o) for c in args.configs.split(",") for o in origins]
    with ProcessPoolExecutor(max_workers=int(os.environ.get("EXPLORE_WORKERS", "2"))) as pool:
        for result in pool.map(run_one, jobs):
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
