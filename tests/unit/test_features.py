"""Features against a slow, obviously correct reference, and a test that none looks ahead.

The reference builds one long pandas frame per series (day, sales, calendar, price) and
computes every feature with shift, rolling and merge, the way one would by hand; the block
builder computes them column-wise on the wide matrix. Every feature name is compared.
"""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np
import pandas as pd
import pytest

from m5flow import features
from m5flow.calendar_prices import EVENT_TYPES
from m5flow.features import (
    FeatureConfig,
    build_block,
    feature_names,
    series_facts,
)
from m5flow.schema import CALENDAR_FILE, INPUT_FILES, PRICES_FILE, M5Data, parse_inputs
from tests.conftest import REAL_M5
from tests.unit.test_schema import tiny_files

DEFAULT_NAMES = [
    "lag28", "lag35", "lag42", "lag49", "lag56", "lag364",
    "rolling_mean_lag28_window_size7", "rolling_std_lag28_window_size7",
    "rolling_mean_lag28_window_size28", "rolling_std_lag28_window_size28",
    "rolling_mean_lag28_window_size56", "rolling_std_lag28_window_size56",
    "rolling_mean_lag28_window_size112", "rolling_std_lag28_window_size112",
    "wday", "month", "year", "mday", "event",
    "event_cultural", "event_national", "event_religious", "event_sporting",
    "snap", "sell_price", "price_relative", "price_change_week",
    "item_code", "dept_code", "cat_code", "store_code", "state_code", "age",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny() -> tuple[M5Data, dict[str, bytes]]:
    files = tiny_files(n_days=420, seed=3)  # long enough for lag 364 and the 112-day window
    return parse_inputs(files), files


@pytest.fixture(scope="module")
def real() -> tuple[M5Data, dict[str, bytes]]:
    files = {name: (REAL_M5 / name).read_bytes() for name in INPUT_FILES}
    return parse_inputs(files), files


def test_feature_names_are_pinned() -> None:
    assert feature_names(FeatureConfig()) == DEFAULT_NAMES
    short = feature_names(FeatureConfig.for_min_lag(7))
    assert short[:6] == ["lag7", "lag14", "lag21", "lag28", "lag35", "lag364"]
    assert short[6:8] == ["rolling_mean_lag7_window_size7", "rolling_std_lag7_window_size7"]
    assert short[14:] == DEFAULT_NAMES[14:]


@pytest.mark.parametrize(
    ("kwargs", "refusal"),
    [({"min_lag": 28, "lags": (7, 28)}, "every lag must be >= min_lag=28 >= 1: (7, 28)"),
     ({"min_lag": 0}, "every lag must be >= min_lag=0 >= 1: (28, 35, 42, 49, 56, 364)"),
     ({"rolling_windows": (1, 7)}, "rolling windows need 2 days or more: (1, 7)"),
     ({"categorical": ("aisle",)},
      "categorical must be among ('item', 'dept', 'cat', 'store', 'state'): {'aisle'}")],
)  # fmt: skip
def test_config_refuses_features_that_would_look_ahead_or_make_no_sense(
    kwargs: dict, refusal: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(refusal)):
        FeatureConfig(**kwargs)


def reference(
    data: M5Data, files: dict[str, bytes], series: int, config: FeatureConfig
) -> pd.DataFrame:
    """Every feature of one series on every day d_1..d_<last + 28>, by hand with pandas."""
    last, horizon = data.last_day, len(data.calendar) - data.last_day
    calendar = pd.read_csv(io.BytesIO(files[CALENDAR_FILE])).iloc[: last + horizon]
    prices = pd.read_csv(io.BytesIO(files[PRICES_FILE]))
    frame = calendar.assign(day=np.arange(1, last + horizon + 1))
    frame["y"] = (
        pd.Series(data.sales[series], index=np.arange(1, last + 1)).reindex(frame.day).to_numpy()
    )
    own = prices[
        (prices.store_id == data.store_ids[series]) & (prices.item_id == data.item_ids[series])
    ]
    frame = frame.merge(own[["wm_yr_wk", "sell_price"]], on="wm_yr_wk", how="left")
    frame["sell_price"] = frame["sell_price"].ffill()  # missing weeks: the week before's
    out = pd.DataFrame({"day": frame.day, "label": frame.y})
    lag = config.min_lag
    for k in config.lags:
        out[f"lag{k}"] = frame.y.shift(k)
    for w in config.rolling_windows:
        out[f"rolling_mean_lag{lag}_window_size{w}"] = frame.y.shift(lag).rolling(w).mean()
        out[f"rolling_std_lag{lag}_window_size{w}"] = frame.y.shift(lag).rolling(w).std()
    dates = pd.to_datetime(frame.date)
    out["wday"], out["month"], out["year"], out["mday"] = (
        frame.wday,
        dates.dt.month,
        dates.dt.year,
        dates.dt.day,
    )
    types = frame[["event_type_1", "event_type_2"]].fillna("")
    out["event"] = (types != "").any(axis=1).astype(float)
    for kind in EVENT_TYPES:
        out[f"event_{kind.lower()}"] = (types == kind).any(axis=1).astype(float)
    out["snap"] = frame[f"snap_{data.state_ids[series]}"]
    out["sell_price"] = frame.sell_price
    out["price_relative"] = frame.sell_price / frame.sell_price.mean()
    out["price_change_week"] = frame.sell_price / frame.sell_price.shift(7) - 1
    for name, values in (("item", data.item_ids), ("dept", data.dept_ids), ("cat", data.cat_ids),
                         ("store", data.store_ids), ("state", data.state_ids)):  # fmt: skip
        out[f"{name}_code"] = sorted(set(values)).index(values[series])
    first_sale = frame.day[frame.y > 0].min()
    known = frame.day - lag >= first_sale  # the first sale is at least min_lag days old
    out["age"] = (frame.day - first_sale).where(known)
    out["first_sale"] = first_sale
    return out


def assert_block_matches_reference(
    data: M5Data, files: dict[str, bytes], rows: np.ndarray, first: int, last: int,
    config: FeatureConfig, drop: bool,
) -> int:  # fmt: skip
    block = build_block(data, series_facts(data, config), rows, first, last, config,
                        drop_before_first_sale=drop)  # fmt: skip
    assert block.features.dtype == np.float32 and block.features.flags.c_contiguous
    checked = 0
    for series in rows:
        expected = reference(data, files, series, config)
        expected = expected[(expected.day >= first) & (expected.day <= last)]
        if drop:
            expected = expected[expected.day >= expected.first_sale]
        mine = block.series == series
        np.testing.assert_array_equal(block.day[mine], expected.day)
        np.testing.assert_array_equal(block.label[mine], expected.label.astype(np.float32))
        for j, name in enumerate(feature_names(config)):
            np.testing.assert_allclose(
                block.features[j, mine], expected[name].to_numpy(np.float64), rtol=2e-6,
                atol=1e-6, err_msg=f"series {series} feature {name}",
            )  # fmt: skip
        checked += int(mine.sum())
    assert checked == len(block)
    return checked


@pytest.mark.parametrize("min_lag", [28, 7])
def test_features_match_the_reference_on_every_day(tiny, min_lag: int) -> None:
    data, files = tiny
    config = FeatureConfig.for_min_lag(min_lag)
    rows = np.arange(len(data.ids))
    last = data.last_day
    assert_block_matches_reference(data, files, rows, 1, last - 28, config, True)
    assert_block_matches_reference(data, files, rows, last - 27, last, config, True)
    inferred = assert_block_matches_reference(
        data, files, rows, last + 1, last + min_lag, config, False
    )
    assert inferred == len(rows) * min_lag


def test_rolling_statistics_match_when_worked_out_one_series_at_a_time(tiny, monkeypatch) -> None:
    """The rolling statistics go a few series at a time (to stay in the CPU cache); the tiny
    data fits one chunk, so a chunk boundary that dropped a series went unseen. A cache of
    one cell makes every series a chunk of its own."""
    data, files = tiny
    monkeypatch.setattr(features, "_CACHE_CELLS", 1)
    config = FeatureConfig.for_min_lag(7)
    rows = np.arange(len(data.ids))
    assert_block_matches_reference(data, files, rows, 1, data.last_day - 28, config, True)


def test_days_before_the_first_sale_are_dropped(tiny) -> None:
    data, _ = tiny
    config = FeatureConfig()
    block = build_block(data, series_facts(data, config), np.arange(4), 1, 100, config)
    first_days = {s: block.day[block.series == s].min() for s in range(4)}
    assert first_days == {0: 10, 1: 1, 2: 1, 3: 40}
    assert len(block) == 100 - 9 + 100 + 100 + 100 - 39


def test_features_match_the_reference_on_real_series(real) -> None:
    data, files = real
    # a series whose prices stop 8 weeks early, and others from every department
    rows = np.array([list(data.ids).index("HOBBIES_1_115_CA_1_evaluation"), 3, 150, 289])
    config = FeatureConfig()
    for first, last, drop in ((1, 1913, True), (1914, 1941, True), (1942, 1969, False)):
        assert_block_matches_reference(data, files, np.sort(rows), first, last, config, drop)


@pytest.mark.parametrize("min_lag", [7, 14, 28])
def test_no_feature_looks_ahead(tiny, min_lag: int) -> None:
    """Change every sale after day t - min_lag: no feature of day t may change."""
    data, _ = tiny
    config = FeatureConfig.for_min_lag(min_lag)
    rows = np.arange(len(data.ids))
    rng = np.random.default_rng(min_lag)
    for t in (60, 200, data.last_day - 3, data.last_day + 3):  # training and inference days
        before = build_block(data, series_facts(data, config), rows, t, t, config,
                             drop_before_first_sale=False)  # fmt: skip
        changed = data.sales.copy()
        cut = t - min_lag  # sales of days cut + 1 .. last_day are redrawn
        changed[:, cut:] = rng.poisson(5.0, changed[:, cut:].shape)
        changed[:, cut:][data.sales[:, cut:] > 0] += 1  # and never equal by chance
        altered = dataclasses.replace(data, sales=changed)
        assert not np.array_equal(altered.sales, data.sales)
        after = build_block(altered, series_facts(altered, config), rows, t, t, config,
                            drop_before_first_sale=False)  # fmt: skip
        np.testing.assert_array_equal(after.features, before.features, err_msg=f"day {t}")


def test_look_ahead_test_would_catch_a_feature_using_day_t(tiny) -> None:
    """The same perturbation does change a lag shorter than min_lag: the test has teeth."""
    data, _ = tiny
    config = FeatureConfig(min_lag=7, lags=(7,), rolling_windows=(7,))
    t, rows = 200, np.arange(4)
    before = build_block(data, series_facts(data, config), rows, t, t, config)
    changed = data.sales.copy()
    changed[:, t - 7 - 1] += 1  # day t - 7: allowed to matter for min_lag 7
    altered = dataclasses.replace(data, sales=changed)
    after = build_block(altered, series_facts(altered, config), rows, t, t, config)
    assert not np.array_equal(after.features[0], before.features[0])


def test_inference_keeps_series_that_never_sold(tiny) -> None:
    data, _ = tiny
    silent = data.sales.copy()
    silent[2] = 0
    altered = dataclasses.replace(data, sales=silent)
    config = FeatureConfig()
    facts = series_facts(altered, config)
    train = build_block(altered, facts, np.arange(4), 1, altered.last_day, config)
    assert 2 not in set(train.series)
    future = build_block(altered, facts, np.arange(4), altered.last_day + 1,
                         altered.last_day + 28, config, drop_before_first_sale=False)  # fmt: skip
    assert (future.series == 2).sum() == 28
    assert np.isnan(future.features[-1, future.series == 2]).all()  # no age without a sale


def test_block_beyond_the_sales_is_refused(tiny) -> None:
    data, _ = tiny
    config = FeatureConfig.for_min_lag(7)
    with pytest.raises(ValueError, match="needs sales after the last day"):
        build_block(data, series_facts(data, config), np.arange(4), data.last_day + 1,
                    data.last_day + 8, config, drop_before_first_sale=False)  # fmt: skip
