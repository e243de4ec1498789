"""The synthetic generator writes files a real-M5 reader cannot tell apart by layout."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m5flow_local import synth
from m5flow_local.synth import write_synthetic_m5

REAL = Path(__file__).parents[3] / "shared" / "m5-real"
FILES = ("sales_train_evaluation.csv", "calendar.csv", "sell_prices.csv")
N_SERIES = 1100  # more than CHUNK_SERIES: the chunked writes meet at a seam


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_m5(out, N_SERIES, seed=0)
    return out


@pytest.fixture(scope="module")
def sales(synth_dir: Path) -> pd.DataFrame:
    return pd.read_csv(synth_dir / "sales_train_evaluation.csv")


@pytest.fixture(scope="module")
def matrix(sales: pd.DataFrame) -> np.ndarray:
    return sales.filter(like="d_").to_numpy()


@pytest.fixture(scope="module")
def calendar(synth_dir: Path) -> pd.DataFrame:
    return pd.read_csv(synth_dir / "calendar.csv")


@pytest.fixture(scope="module")
def prices(synth_dir: Path) -> pd.DataFrame:
    return pd.read_csv(synth_dir / "sell_prices.csv")


def _first_line(path: Path) -> str:
    with path.open(newline="") as f:
        return f.readline()


def test_returns_the_three_paths(tmp_path: Path) -> None:
    paths = write_synthetic_m5(tmp_path / "new", 3)
    assert sorted(paths) == sorted(FILES)
    assert all(p == tmp_path / "new" / name and p.is_file() for name, p in paths.items())


@pytest.mark.parametrize("name", FILES)
def test_headers_match_real_m5(synth_dir: Path, name: str) -> None:
    assert _first_line(synth_dir / name) == _first_line(REAL / name)


def test_plain_text_format(synth_dir: Path) -> None:
    for name in FILES:
        text = (synth_dir / name).read_text()
        assert "\r" not in text and '"' not in text and text.endswith("\n")
    sales_body = (synth_dir / "sales_train_evaluation.csv").read_text().split("\n", 1)[1]
    assert re.fullmatch(r"([A-Za-z0-9_]+(,[A-Z0-9_]+){5}(,\d+){1941}\n)+", sales_body)
    # Like the real file: "2.0", "0.5", "10.98"; never "2.00" or "2".
    price_text = (synth_dir / "sell_prices.csv").read_text().splitlines()[1:]
    assert all(re.fullmatch(r"\d+\.(\d|\d[1-9])", line.rsplit(",", 1)[1]) for line in price_text)


def test_ids_are_consistent(sales: pd.DataFrame) -> None:
    assert sales["id"].is_unique
    assert (sales["id"] == sales["item_id"] + "_" + sales["store_id"] + "_evaluation").all()
    assert (sales["item_id"].str.rsplit("_", n=1).str[0] == sales["dept_id"]).all()
    assert (sales["dept_id"].str.rsplit("_", n=1).str[0] == sales["cat_id"]).all()
    assert (sales["store_id"].str.split("_").str[0] == sales["state_id"]).all()
    assert sales["item_id"].str.fullmatch(r"[A-Z]+_\d_\d{3}").all()


def test_store_state_and_department_structure(sales: pd.DataFrame) -> None:
    stores = sales.groupby("state_id")["store_id"].unique().map(sorted).to_dict()
    assert stores == {
        "CA": ["CA_1", "CA_2", "CA_3", "CA_4"],
        "TX": ["TX_1", "TX_2", "TX_3"],
        "WI": ["WI_1", "WI_2", "WI_3"],
    }
    assert sorted(sales["dept_id"].unique()) == [
        "FOODS_1", "FOODS_2", "FOODS_3", "HOBBIES_1", "HOBBIES_2", "HOUSEHOLD_1", "HOUSEHOLD_2",
    ]  # fmt: skip
    assert (sales.groupby("item_id").size() == 10).all()  # 29 items, each in all 10 stores
    assert sales["dept_id"].value_counts().idxmax() == "FOODS_3"  # the real mix
    assert list(sales["store_id"]) == sorted(sales["store_id"])  # store-major, as in M5


@pytest.mark.parametrize(
    ("n_series", "n_items", "last_item_stores"), [(1, 1, 1), (7, 1, 7), (30, 3, 10), (291, 30, 1)]
)
def test_small_sizes_fill_items_store_by_store(
    tmp_path: Path, n_series: int, n_items: int, last_item_stores: int
) -> None:
    write_synthetic_m5(tmp_path, n_series, seed=1)
    sales = pd.read_csv(tmp_path / "sales_train_evaluation.csv")
    per_item = sales.groupby("item_id").size()
    assert len(sales) == n_series and sales["id"].is_unique
    assert len(per_item) == n_items and sorted(per_item)[0] == last_item_stores
    assert (sales.filter(like="d_").to_numpy().sum(axis=1) > 0).all()


def test_rejects_empty_sample(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_series"):
        write_synthetic_m5(tmp_path, 0)


def test_calendar_follows_the_real_rules(calendar: pd.DataFrame) -> None:
    real = pd.read_csv(REAL / "calendar.csv")
    assert len(calendar) == 1969 and list(calendar["d"]) == [f"d_{t}" for t in range(1, 1970)]
    rules = ["date", "wm_yr_wk", "weekday", "wday", "month", "year", "d"]
    rules += ["snap_CA", "snap_TX", "snap_WI"]
    pd.testing.assert_frame_equal(calendar[rules], real[rules])
    events = calendar.dropna(subset="event_name_1")
    assert set(events["event_type_1"]) == {"Sporting", "Cultural", "National", "Religious"}
    assert set(calendar["event_name_1"].dropna()) <= set(real["event_name_1"].dropna())
    christmas = events.loc[events["event_name_1"] == "Christmas", "date"]
    assert list(christmas) == [f"{y}-12-25" for y in range(2011, 2016)]
    easter = calendar.loc[calendar["date"].isin(["2014-04-20"])]
    assert set(easter[["event_name_1", "event_name_2"]].iloc[0]) == {"Easter", "OrthodoxEaster"}


def test_sales_are_intermittent_with_some_high_volume(matrix: np.ndarray) -> None:
    first = (matrix > 0).argmax(axis=1)
    selling = np.arange(matrix.shape[1]) >= first[:, None]
    zero_share = (matrix[selling] == 0).mean()
    assert 0.35 < zero_share < 0.75
    assert (matrix[:, :28] == 0).mean() > zero_share  # leading zeros of later starters
    means = matrix.mean(axis=1)
    assert np.median(means) < 2 and means.max() > 5 * np.median(means)  # a heavy tail


def test_first_sales_fall_on_varied_days(matrix: np.ndarray) -> None:
    first = (matrix > 0).argmax(axis=1)
    assert 0.2 < (first == 0).mean() < 0.8
    assert len(np.unique(first[first > 0])) > 50
    assert first.max() > 1000


def test_prices_cover_every_week_from_the_first_sale(
    matrix: np.ndarray, sales: pd.DataFrame, calendar: pd.DataFrame, prices: pd.DataFrame
) -> None:
    weeks = calendar["wm_yr_wk"].to_numpy()
    first_week = weeks[(matrix > 0).argmax(axis=1)]
    all_weeks = np.unique(weeks)
    by_series = prices.groupby(["store_id", "item_id"])["wm_yr_wk"].apply(list)
    assert len(by_series) == len(sales)
    for store, item, week in zip(sales["store_id"], sales["item_id"], first_week, strict=True):
        assert by_series[(store, item)] == list(all_weeks[all_weeks >= week])
    assert (prices["sell_price"] > 0).all()


def test_demand_responds_to_weekday_price_and_snap(
    sales: pd.DataFrame, matrix: np.ndarray, calendar: pd.DataFrame, prices: pd.DataFrame
) -> None:
    """A learnable signal, not noise: weekends, promotions and SNAP days sell more."""
    days = calendar.iloc[: matrix.shape[1]]
    rel = matrix / np.maximum(matrix.mean(axis=1, keepdims=True), 1e-9)
    weekend = days["wday"].isin([1, 2]).to_numpy()
    assert rel[:, weekend].mean() > 1.2 * rel[:, ~weekend].mean()
    foods_ca = ((sales["cat_id"] == "FOODS") & (sales["state_id"] == "CA")).to_numpy()
    snap = days["snap_CA"].to_numpy() == 1
    assert rel[foods_ca][:, snap].mean() > 1.1 * rel[foods_ca][:, ~snap].mean()
    # Promotion weeks: cheaper than both neighbours; compare weekly sales with the neighbours'.
    keys = ["store_id", "item_id"]
    wide = prices.pivot_table(index=keys, columns="wm_yr_wk", values="sell_price")
    wide = wide.reindex(pd.MultiIndex.from_frame(sales[keys]))
    weekly = matrix[:, : 277 * 7].reshape(len(sales), 277, 7).sum(axis=2)
    price = wide.to_numpy()[:, :277]
    promo = (price[:, 1:-1] < price[:, :-2]) & (price[:, 1:-1] < price[:, 2:])
    neighbours = (weekly[:, :-2] + weekly[:, 2:]) / 2
    assert weekly[:, 1:-1][promo].sum() > 1.3 * neighbours[promo].sum()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a, b, c = (write_synthetic_m5(tmp_path / d, 25, s) for d, s in (("a", 7), ("b", 7), ("c", 8)))
    for name in FILES:
        assert a[name].read_bytes() == b[name].read_bytes()
    for name in ("sales_train_evaluation.csv", "sell_prices.csv"):
        assert a[name].read_bytes() != c[name].read_bytes()


def test_docstring_examples_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the example writes its files here
    assert doctest.testmod(synth, optionflags=doctest.ELLIPSIS).failed == 0


def test_a_write_cut_short_leaves_the_earlier_files_whole(tmp_path, monkeypatch) -> None:
    """Files are moved into place together at the end: an interrupted `m5flow synth --force`
    once left a cut-off sales file beside the earlier prices, which passed every check."""
    before = {p.name: p.read_bytes() for p in write_synthetic_m5(tmp_path, 5).values()}

    def interrupted(*_args) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_write_prices", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_m5(tmp_path, 40, seed=1)

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
