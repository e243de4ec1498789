"""WRMSSE: the official level-1 numbers, the real-slice yardstick, and a textbook reference."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m5flow import schema, scoring
from m5flow.exceptions import ScoringError
from m5flow.hierarchy import LEVELS, Hierarchy
from m5flow.submission import aligned_values, read_table, score_files

REAL = Path(__file__).resolve().parents[3] / "shared" / "m5-real"
REFERENCE = REAL / "reference"
TRUTH = REAL / "sales_test_evaluation.csv"
SUBMISSIONS = {
    "10th": "submission_0010_DenisKokosinskiy_STU.csv",
    "28th": "submission_0028_Daniela_A.csv",
    "46th": "submission_0046_YK.csv",
}
ID_KEYS = ("item", "dept", "cat", "store", "state")


# --- a slow, obviously correct reference: one series at a time, straight from the guide ---


def textbook_wrmsse(history, truth, forecast, ids, weights) -> dict[int, float]:
    """Per level: build each aggregated series by summing its members, one by one."""
    out = {}
    for number, (_, keys) in LEVELS.items():
        groups: dict[tuple, list[int]] = {}
        for row in range(len(history)):
            groups.setdefault(tuple(ids[k][row] for k in keys), []).append(row)
        level = 0.0
        for members in groups.values():
            hist = sum(np.asarray(history[m], np.float64) for m in members)
            y = sum(np.asarray(truth[m], np.float64) for m in members)
            f = sum(np.asarray(forecast[m], np.float64) for m in members)
            w = sum(weights[m] for m in members) / sum(weights)
            if w == 0:
                continue
            first = next(i for i, v in enumerate(hist) if v != 0)
            trimmed = hist[first:]
            scale = sum((trimmed[i] - trimmed[i - 1]) ** 2 for i in range(1, len(trimmed)))
            scale /= len(trimmed) - 1
            level += w * np.sqrt(np.mean((y - f) ** 2) / scale)
        out[number] = level
    return out


def hierarchy_of(ids: dict[str, list[str]]) -> Hierarchy:
    return Hierarchy.from_ids(**{f"{k}_ids": np.array(v) for k, v in ids.items()})


# --- a tiny case, computed by hand ---

TINY_IDS = {
    "item": ["I1", "I2", "I1"],
    "dept": ["D1", "D1", "D1"],
    "cat": ["C1", "C1", "C1"],
    "store": ["S1", "S1", "S2"],
    "state": ["X", "X", "Y"],
}
TINY_HISTORY = np.array([[0, 2, 4, 2, 2], [1, 1, 3, 1, 1], [0, 0, 0, 3, 1]], dtype=float)
TINY_TRUTH = np.array([[2, 2], [1, 3], [1, 1]], dtype=float)
TINY_FORECAST = np.array([[2, 4], [1, 1], [2, 1]], dtype=float)
TINY_WEIGHTS = np.array([4.0, 2.0, 2.0])


def test_tiny_case_by_hand() -> None:
    score = scoring.wrmsse(
        TINY_HISTORY, TINY_TRUTH, TINY_FORECAST, hierarchy_of(TINY_IDS), TINY_WEIGHTS
    )
    # Scales after the first sale: A (2,4,2,2) 8/3; B (1,1,3,1,1) 8/4; C (3,1) 4/1.
    # MSEs: A (0,-2) 2; B (0,2) 2; C (-1,0) 0.5. Weights 4/8, 2/8, 2/8.
    level12 = 0.5 * np.sqrt(2 / (8 / 3)) + 0.25 * np.sqrt(2 / 2) + 0.25 * np.sqrt(0.5 / 4)
    # Total (1,3,7,6,4): diffs 2,4,-1,-2 -> 25/4; errors (-1, 0) -> MSE 0.5.
    level1 = np.sqrt(0.5 / 6.25)
    assert score.levels[12] == pytest.approx(level12, rel=1e-12)
    assert score.levels[1] == pytest.approx(level1, rel=1e-12)
    sizes = [1, 2, 2, 1, 1, 2, 2, 2, 2, 2, 3, 3]  # (I1,X) (I2,X) (I1,Y) at 11 and 12
    assert list(score.series.values()) == sizes
    reference = textbook_wrmsse(TINY_HISTORY, TINY_TRUTH, TINY_FORECAST, TINY_IDS, TINY_WEIGHTS)
    assert score.levels == pytest.approx(reference, rel=1e-12)
    assert score.wrmsse == pytest.approx(np.mean(list(reference.values())), rel=1e-12)


@pytest.mark.parametrize(("dtype", "rtol"), [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_matches_textbook_on_random_hierarchy(dtype, rtol) -> None:
    rng = np.random.default_rng(42)
    stores = {"CA": ["CA_1", "CA_2"], "TX": ["TX_1"], "WI": ["WI_1", "WI_2"]}
    items = [(f"{c}_{d}_{i:03d}", f"{c}_{d}", c) for c in "AB" for d in (1, 2) for i in (1, 2, 3)]
    pairs = [(it, st, s) for it in items for st, ss in stores.items() for s in ss]
    pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), 40, replace=False))]
    rng.shuffle(pairs)  # rows in no particular order: groups are not contiguous
    ids = {
        "item": [p[0][0] for p in pairs],
        "dept": [p[0][1] for p in pairs],
        "cat": [p[0][2] for p in pairs],
        "store": [p[2] for p in pairs],
        "state": [p[1] for p in pairs],
    }
    n, days = len(pairs), 60
    history = rng.poisson(rng.uniform(0.2, 3, (n, 1)), (n, days)).astype(dtype)
    starts = rng.integers(0, days - 10, n)
    history[np.arange(days) < starts[:, None]] = 0  # series start selling on different days
    history[np.arange(n), starts] = 1
    truth = rng.poisson(1.0, (n, 7)).astype(dtype)
    forecast = rng.uniform(0, 3, (n, 7)).astype(dtype)
    weights = rng.uniform(0, 10, n)
    weights[:3] = 0  # unweighted series are left out of every level
    score = scoring.wrmsse(history, truth, forecast, hierarchy_of(ids), weights)
    reference = textbook_wrmsse(history, truth, forecast, ids, weights)
    assert score.levels == pytest.approx(reference, rel=rtol)
    # The order of the rows does not matter.
    order = rng.permutation(n)
    shuffled = {k: [v[i] for i in order] for k, v in ids.items()}
    again = scoring.wrmsse(
        history[order], truth[order], forecast[order], hierarchy_of(shuffled), weights[order]
    )
    assert again.wrmsse == pytest.approx(score.wrmsse, rel=rtol)


def test_levels_are_summed_from_the_finer_levels_that_nest_them() -> None:
    ids = {
        k: [f"{k}{i % m}" for i in range(12)]
        for k, m in zip(ID_KEYS, (12, 2, 1, 4, 2), strict=True)
    }
    ids["state"] = [f"state{int(s[-1]) % 2}" for s in ids["store"]]
    hierarchy = hierarchy_of(ids)
    assert hierarchy.levels[12].source == 0
    assert hierarchy.levels[1].source != 0
    values = np.arange(36, dtype=float).reshape(12, 3)
    for number, sums in hierarchy.aggregate(values).items():
        level = hierarchy.levels[number]
        expected = [values[level.codes == g].sum(axis=0) for g in range(level.size)]
        np.testing.assert_array_equal(sums, expected)


# --- the official level 1 on the full M5 ---


def test_official_level1_rmsse() -> None:
    total = pd.read_csv(REFERENCE / "level1_total_d1_d1969.csv")["sales_total"].to_numpy(float)
    history, truth = total[:1941], total[1941:]
    assert len(truth) == 28
    naive = np.repeat(history[-1], 28)
    seasonal = np.tile(history[-7:], 4)
    # The total as the one series of a hierarchy: every level is that series, so each
    # level's score is its RMSSE, through the same code that scores every run.
    one = hierarchy_of({k: ["x"] for k in ("item", "dept", "cat", "store", "state")})

    def level1(forecast: np.ndarray) -> float:
        score = scoring.wrmsse(history[None], truth[None], forecast[None], one, np.ones(1))
        return score.levels[1]

    assert level1(naive) == pytest.approx(1.966796, abs=1e-5)
    assert level1(seasonal) == pytest.approx(0.560047, abs=1e-5)


# --- the yardstick on the real 290-series slice (README table) ---


@pytest.fixture(scope="module")
def real() -> tuple[schema.M5Data, Hierarchy, np.ndarray, np.ndarray]:
    data = schema.parse_inputs({n: (REAL / n).read_bytes() for n in schema.INPUT_FILES})
    truth = pd.read_csv(TRUTH).set_index("id").loc[data.ids].to_numpy(float)
    return data, Hierarchy.from_data(data), scoring.dollar_sales(data.sales, data.prices), truth


def _benchmark(name: str, history: np.ndarray) -> np.ndarray:
    history = history.astype(np.float64)
    if name == "naive":
        return np.repeat(history[:, -1:], 28, axis=1)
    if name == "seasonal naive":
        return np.tile(history[:, -7:], 4)
    return np.repeat(history[:, -28:].mean(axis=1, keepdims=True), 28, axis=1)


@pytest.mark.parametrize(
    ("forecast", "expected"),
    [
        ("naive", (1.540, 1.614, 1.583)),
        ("seasonal naive", (0.976, 0.475, 1.405)),
        ("moving average", (0.975, 0.793, 1.185)),
        ("10th", (0.905, 0.760, 1.109)),
        ("28th", (0.984, 0.911, 1.146)),
        ("46th", (0.900, 0.704, 1.134)),
    ],
)
def test_real_slice_yardstick(real, forecast: str, expected: tuple[float, float, float]) -> None:
    data, hierarchy, weights, truth = real
    if forecast in SUBMISSIONS:
        frame = pd.read_csv(REFERENCE / SUBMISSIONS[forecast]).set_index("id")
        values = frame.loc[data.ids].to_numpy(float)
    else:
        values = _benchmark(forecast, data.sales)
    score = scoring.wrmsse(data.sales, truth, values, hierarchy, weights)
    got = (score.wrmsse, score.levels[1], score.levels[12])
    assert tuple(round(v, 3) for v in got) == expected
    assert score.wrmsse == pytest.approx(np.mean(list(score.levels.values())))
    assert score.series[12] == np.count_nonzero(weights) < 290  # unsold lately: no weight


def test_score_files_reads_a_submission_and_ignores_kaggle_validation_rows(tmp_path) -> None:
    submission = pd.read_csv(REFERENCE / SUBMISSIONS["46th"])
    public = submission.assign(id=submission["id"].str.replace("_evaluation", "_validation"))
    path = tmp_path / "kaggle.csv"
    pd.concat([public, submission.iloc[::-1]]).to_csv(path, index=False)
    score = score_files(REAL, TRUTH, path)
    assert round(score.wrmsse, 3) == 0.900
    text = scoring.format_score(score)
    assert text.splitlines()[0] == "WRMSSE  0.9003"
    assert "12  item x store" in text and len(text.splitlines()) == 15 + 2 + scoring.COSTLIEST
    # One item that stopped selling in the window's last two weeks costs every forecast most.
    assert text.splitlines()[17].startswith("  FOODS_3_702 (10 series, forecast ")
    assert score.as_dict()["levels"]["1"] == score.levels[1]
    assert score.as_dict()["costliest_items"][0]["item"] == "FOODS_3_702"


def _without(data: schema.M5Data, truth: np.ndarray, values: np.ndarray, item: str) -> float:
    """The WRMSSE of the slice as if `item` had never been uploaded: its rows dropped."""
    keep = data.item_ids != item
    hierarchy = Hierarchy.from_ids(**{f"{k}_ids": data.ids_of(k)[keep] for k in schema.ID_KINDS})
    weights = scoring.dollar_sales(data.sales[keep], data.prices[keep])
    return scoring.wrmsse(data.sales[keep], truth[keep], values[keep], hierarchy, weights).wrmsse


def _every_item_left_out(data: schema.M5Data, truth: np.ndarray, values: np.ndarray) -> list:
    """(WRMSSE without the item, item) of every item that lowers the score, the lowest first:
    the brute force, one rebuilt slice per item."""
    score = scoring.wrmsse(data.sales, truth, values, Hierarchy.from_data(data),
                           scoring.dollar_sales(data.sales, data.prices)).wrmsse  # fmt: skip
    found = []
    for item in pd.unique(data.item_ids):
        try:
            without = _without(data, truth, values, item)
        except ScoringError:  # nothing left on some level
            continue
        if without < score:
            found.append((without, item))
    return sorted(found)


@pytest.mark.parametrize("forecast", ["10th", "seasonal naive", "float32 moving average"])
def test_the_costliest_items_are_every_item_s_score_without_it(real, forecast) -> None:
    data, hierarchy, weights, truth = real
    if forecast in SUBMISSIONS:
        frame = pd.read_csv(REFERENCE / SUBMISSIONS[forecast]).set_index("id")
        values = frame.loc[data.ids].to_numpy(float)
    else:
        values = _benchmark(forecast.removeprefix("float32 "), data.sales)
    if forecast.startswith("float32"):
        values, truth = values.astype(np.float32), truth.astype(np.float32)
    arrays = [a.copy() for a in (data.sales, truth, values, weights)]
    every = scoring.wrmsse(data.sales, truth, values, hierarchy, weights, costliest=1_000)
    assert [a.tobytes() for a in arrays] == [a.tobytes() for a in
                                             (data.sales, truth, values, weights)]  # fmt: skip
    assert every.wrmsse == scoring.wrmsse(data.sales, truth, values, hierarchy, weights).wrmsse
    brute = _every_item_left_out(data, truth, values)
    assert [cost.item for cost in every.costliest] == [item for _, item in brute]
    assert [c.wrmsse_without for c in every.costliest] == pytest.approx([w for w, _ in brute])
    assert every.costliest[0].item == "FOODS_3_702"  # it sold out in the window's last weeks
    three = scoring.wrmsse(data.sales, truth, values, hierarchy, weights, costliest=3)
    assert three.costliest == every.costliest[:3]
    for cost in three.costliest:
        rows = list(cost.rows)
        assert set(data.item_ids[rows]) == {cost.item} and len(rows) == 10
        assert cost.forecast_over_truth == pytest.approx(values[rows].sum() / truth[rows].sum())


@pytest.mark.parametrize("change", ["no dollar sales", "first sold on the last day"])
def test_an_item_without_a_weight_or_a_scale_is_tried_too(real, change) -> None:
    """Its own series leave the item levels, yet its errors weigh on every sum it is in:
    an item nothing sold of lately (no weight) or launched on the last day (no scale)."""
    data, hierarchy, weights, truth = real
    values = _benchmark("seasonal naive", data.sales)
    item = "FOODS_1_046"
    rows = data.item_ids == item
    sales, prices, truth = data.sales.copy(), data.prices.copy(), truth.copy()
    if change == "no dollar sales":
        prices[rows] = np.nan  # unpriced: no dollar sales, as a price file without the item
    else:
        sales[rows] = 0
        sales[rows, -1] = 5
    truth[rows] = 400  # and then it sells far more than forecast
    changed = replace(data, sales=sales)
    weights = scoring.dollar_sales(sales, prices)
    score = scoring.wrmsse(sales, truth, values, hierarchy, weights, costliest=1)
    (cost,) = score.costliest
    assert cost.item == item and cost.wrmsse_without < score.wrmsse - 0.1
    keep = ~rows
    ids = {f"{k}_ids": changed.ids_of(k)[keep] for k in schema.ID_KINDS}
    without = scoring.wrmsse(sales[keep], truth[keep], values[keep], Hierarchy.from_ids(**ids),
                             weights[keep])  # fmt: skip
    assert cost.wrmsse_without == pytest.approx(without.wrmsse)


def test_an_item_whose_forecast_helps_is_not_named_costly() -> None:
    """I2 alone was forecast exactly: the score without it is worse, so it costs nothing."""
    exact = TINY_FORECAST.copy()
    exact[1] = TINY_TRUTH[1]
    score = _tiny(forecast=exact, costliest=2)
    # Without I1 only the exact I2 is left: a perfect score. I1 sold 6 and was forecast 9.
    assert score.costliest == (scoring.ItemCost("I1", (0, 2), 0.0, forecast=9.0, sold=6.0),)
    assert _tiny(forecast=exact).costliest == ()  # not asked for: scored once
    # As given, each item's errors offset the other's in the sums: neither costs the score.
    assert _tiny(costliest=2).costliest == ()


def test_a_single_item_has_no_score_without_it() -> None:
    """Left out, nothing is left to weigh: no item is named, and the score stands."""
    first = {k: v[:1] for k, v in TINY_IDS.items()}
    arrays = {"history": TINY_HISTORY, "truth": TINY_TRUTH, "forecast": TINY_FORECAST}
    alone = {name: values[:1] for name, values in arrays.items()}
    score = _tiny(
        **alone, hierarchy=hierarchy_of(first), dollar_sales=TINY_WEIGHTS[:1], costliest=3
    )
    assert score.costliest == () and score.wrmsse > 0


# --- refusals ---


@pytest.fixture
def files(small_m5: Path, tmp_path: Path):
    """The 30-series generated set, with a truth and a submission matching it."""
    ids = pd.read_csv(small_m5 / schema.SALES_FILE, usecols=["id"])["id"]
    truth = pd.DataFrame({"id": ids} | {f"d_{1941 + k}": 1 for k in range(1, 29)})
    submission = pd.DataFrame({"id": ids} | {f"F{k}": 1.5 for k in range(1, 29)})
    return small_m5, truth, submission, tmp_path


def _write(tmp_path: Path, truth: pd.DataFrame, submission: pd.DataFrame) -> tuple[Path, Path]:
    truth.to_csv(tmp_path / "truth.csv", index=False)
    submission.to_csv(tmp_path / "submission.csv", index=False)
    return tmp_path / "truth.csv", tmp_path / "submission.csv"


def test_score_files_accepts_matching_files(files) -> None:
    data_dir, truth, submission, tmp = files
    score = score_files(data_dir, *_write(tmp, truth, submission))
    assert set(score.levels) == set(range(1, 13)) and score.wrmsse > 0


def test_score_files_names_missing_and_unknown_ids(files) -> None:
    data_dir, truth, submission, tmp = files
    dropped = submission["id"][3]
    submission = submission.drop(index=3)
    submission.loc[99] = ["NOT_AN_ITEM_CA_1_evaluation", *[1.0] * 28]
    with pytest.raises(ScoringError) as caught:
        score_files(data_dir, *_write(tmp, truth, submission))
    message = str(caught.value)
    assert f"submission.csv: no row for 1 series: {dropped}" in message
    assert "1 id(s) not in the history: NOT_AN_ITEM_CA_1_evaluation" in message


def test_rows_of_series_outside_the_history_are_ignored(files) -> None:
    """A whole Kaggle submission scored on a slice of its series."""
    data_dir, truth, submission, tmp = files
    expected = score_files(data_dir, *_write(tmp, truth, submission)).wrmsse
    more = submission.assign(id="OTHER" + submission["id"], F3="x")
    score = score_files(data_dir, *_write(tmp, truth, pd.concat([more, submission])))
    assert score.wrmsse == expected


def test_score_files_names_duplicates_and_empty_cells(files) -> None:
    data_dir, truth, submission, tmp = files
    submission = pd.concat([submission, submission.iloc[[0]]])
    submission.loc[:, "F7"] = np.nan
    with pytest.raises(ScoringError) as caught:
        score_files(data_dir, *_write(tmp, truth, submission))
    assert f"duplicate id(s) {submission['id'].iloc[0]}" in str(caught.value)
    assert "column(s) F7 hold empty or non-numeric values, e.g. " in str(caught.value)
    assert f"{submission['id'].iloc[0]} F7: ''; expected a number" in str(caught.value)


def test_ids_are_read_as_written_not_guessed() -> None:
    """pandas' guesses made 0001 the number 1 and NA a missing value: rows that then
    matched no series of the run."""
    frame = read_table("truth.csv", b"id,d_1,d_2\n0001,1,\nNA,2,3\n")
    ids = np.array(["0001", "NA"])
    with pytest.raises(ScoringError, match=r"column\(s\) d_2 hold empty or non-numeric") as caught:
        aligned_values("truth.csv", frame, ids, ["d_1", "d_2"])
    assert "no row for" not in str(caught.value)
    frame.loc[0, "d_2"] = "4"
    assert aligned_values("truth.csv", frame, ids, ["d_1", "d_2"]).tolist() == [[1, 4], [2, 3]]


def test_score_files_refuses_truth_days_that_do_not_follow_the_history(files) -> None:
    data_dir, truth, submission, tmp = files
    truth = truth.rename(columns={f"d_{1941 + k}": f"d_{1913 + k}" for k in range(1, 29)})
    with pytest.raises(ScoringError, match=r"expected d_1942\.\.d_1969, the days after the hist"):
        score_files(data_dir, *_write(tmp, truth, submission))


def test_a_truth_holding_the_history_too_is_told_which_days_to_keep(files) -> None:
    """Kaggle's full file (d_1..d_1969) had been told to hold d_1942..d_3910."""
    data_dir, truth, submission, tmp = files
    history = pd.DataFrame({f"d_{d}": 0 for d in range(1, 1942)}, index=truth.index)
    whole = pd.concat([truth[["id"]], history, truth.drop(columns="id")], axis=1)
    with pytest.raises(ScoringError) as caught:
        score_files(data_dir, *_write(tmp, whole, submission))
    assert str(caught.value).endswith(
        "; expected d_1942..d_1969, the days after the history's last day d_1941 (it holds "
        "history days too: keep only the days after it)"
    )


def test_score_files_refuses_a_short_submission(files) -> None:
    data_dir, truth, submission, tmp = files
    with pytest.raises(ScoringError, match=r"missing column\(s\) F28; expected id,F1\.\.F28"):
        score_files(data_dir, *_write(tmp, truth, submission.drop(columns="F28")))


def test_files_of_another_dataset_than_the_history_name_the_truth(files) -> None:
    """Truth and submission both of other series: the history (--data) is the odd one out,
    and the truth, not the submission, is what says so."""
    data_dir, truth, submission, tmp = files
    truth, submission = (
        truth.assign(id="OTHER" + truth["id"]),
        submission.assign(id="OTHER" + submission["id"]),
    )
    with pytest.raises(ScoringError) as caught:
        score_files(data_dir, *_write(tmp, truth, submission))
    assert str(caught.value).startswith("truth.csv: no row for ")
    assert "id(s) not in the history: OTHER" in str(caught.value)


def test_a_truth_id_past_the_limit_is_refused_before_it_widens_every_id(files) -> None:
    data_dir, truth, submission, tmp = files
    truth = pd.concat([truth, truth.iloc[[0]].assign(id="x" * 5000)])
    with pytest.raises(ScoringError) as caught:
        score_files(data_dir, *_write(tmp, truth, submission))
    assert str(caught.value) == (
        f"truth.csv: row {len(truth) + 1}: id '{'x' * 60}'... (5,000 chars); expected an id of "
        "at most 100 characters"
    )


@pytest.mark.parametrize("which", ["truth", "submission"])
def test_a_semicolon_export_is_named_as_such(files, which) -> None:
    data_dir, truth, submission, tmp = files
    truth_csv, submission_csv = _write(tmp, truth, submission)
    frame, path = (truth, truth_csv) if which == "truth" else (submission, submission_csv)
    path.write_text(frame.to_csv(sep=";", index=False))
    with pytest.raises(ScoringError) as caught:
        score_files(data_dir, truth_csv, submission_csv)
    assert str(caught.value).startswith(
        f"{path.name}: header: found columns separated by semicolons ('id;"
    )


def test_a_short_truth_is_named_as_where_the_days_come_from(files) -> None:
    data_dir, truth, submission, tmp = files
    with pytest.raises(ScoringError) as caught:
        score_files(data_dir, *_write(tmp, truth.iloc[:, :15], submission))
    assert str(caught.value) == (
        "submission.csv: unexpected column(s) F15, F16, F17, F18, F19 and 9 more; expected "
        "id,F1..F14 (the days come from truth.csv, which holds 14: d_1942..d_1955; "
        "submission.csv has 28 F columns)"
    )
    no_days = truth[["id"]].assign(F1=1)  # the two files given the wrong way round
    with pytest.raises(ScoringError, match=r"truth.csv is a submission \(id,F1\.\.\): the truth"):
        score_files(data_dir, *_write(tmp, no_days, submission))
    no_days = truth[["id"]].assign(F2=1)  # no day columns, nor a submission's
    with pytest.raises(ScoringError, match=r"\(none\); expected d_1942\.\.d_1969, the days"):
        score_files(data_dir, *_write(tmp, no_days, submission))


def test_score_files_names_absent_files(tmp_path) -> None:
    with pytest.raises(ScoringError, match=r"file\(s\) not found: sales_train_evaluation.csv"):
        score_files(tmp_path, tmp_path / "t.csv", tmp_path / "s.csv")


def _tiny(**changes):
    args = {
        "history": TINY_HISTORY,
        "truth": TINY_TRUTH,
        "forecast": TINY_FORECAST,
        "hierarchy": hierarchy_of(TINY_IDS),
        "dollar_sales": TINY_WEIGHTS,
    }
    return scoring.wrmsse(**(args | changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"forecast": TINY_FORECAST[:, :1]}, r"forecast has shape \(3, 1\); expected \(3, 2\)"),
        ({"history": TINY_HISTORY[:2]}, r"history has shape \(2, 5\); expected \(3, days >= 2\)"),
        ({"forecast": np.where(np.eye(3, 2) > 0, np.nan, 1)}, r"forecast is not finite in row"),
        ({"dollar_sales": np.zeros(3)}, "no dollar sales in the weighting window"),
        ({"dollar_sales": np.ones(2)}, r"dollar_sales has shape \(2,\); expected \(3,\)"),
        (  # squares past float64 would score inf, or a scale of inf would score 0
            {"forecast": np.where(np.eye(3, 2) > 0, 1e300, 1)},
            r"level 12 \(item x store\): squared errors overflow .* forecast 1e\+300",
        ),
        (
            {"history": np.where(np.eye(3, 5) > 0, 1e200, TINY_HISTORY)},
            r"squared errors overflow float64, .* history 1e\+200, truth 3, forecast 4",
        ),
        (
            {"history": np.array([[0, 0, 0, 0, 2], [0, 0, 0, 0, 1], [0, 0, 0, 0, 3]])},
            r"level 12 \(item x store\): no series with dollar sales can be scaled",
        ),
    ],
)
def test_wrmsse_refuses_bad_arrays(changes, message) -> None:
    with pytest.raises(ScoringError, match=message):
        _tiny(**changes)


def test_a_series_that_cannot_be_scaled_leaves_the_score() -> None:
    """A new item (first sale on the last history day) must not fail the whole score."""
    new_item = np.array([[0, 0, 0, 0, 5], *TINY_HISTORY[1:]])
    score = _tiny(history=new_item)
    # Alone in its store and its state; its item's sum with I1 / S2 still scales.
    assert score.unscored == ("item x store I1 / S1", "item x state I1 / X")
    # Level 12 is the other two series' RMSSE, renormalised over their weights (2 and 2).
    others = _tiny(history=new_item[1:], truth=TINY_TRUTH[1:], forecast=TINY_FORECAST[1:],
                   hierarchy=hierarchy_of({k: v[1:] for k, v in TINY_IDS.items()}),
                   dollar_sales=TINY_WEIGHTS[1:])  # fmt: skip
    assert score.levels[12] == pytest.approx(others.levels[12])
    assert score.as_dict()["unscored_series"] == 2


def test_naive_scale_edges() -> None:
    rows = np.array([[0, 0, 0, 0], [0, 0, 0, 5], [5, 5, 5, 5], [0, 1, 0, 1]], dtype=np.float32)
    np.testing.assert_array_equal(scoring.naive_scale(rows)[2:], [0.0, 1.0])
    assert np.isnan(scoring.naive_scale(rows)[:2]).all()
    huge = np.array([[0, 1e200, 0], [1e200, 1e200, 1e200]])  # overflows, then inf - inf
    np.testing.assert_array_equal(scoring.naive_scale(huge), [np.inf, 0.0])
    assert float(scoring.naive_scale(np.array([3.0, 1.0]))) == 4.0


def test_dollar_sales_uses_the_last_days_and_skips_unpriced_days() -> None:
    sales = np.array([[1, 2, 3], [4, 0, 1]], dtype=np.float32)
    prices = np.array([[9, 2, 1, 7], [np.nan, np.nan, 0.5, 7]], dtype=np.float32)
    np.testing.assert_allclose(scoring.dollar_sales(sales, prices, days=2), [7.0, 0.5])
    with pytest.raises(ScoringError, match="a price for every sales day"):
        scoring.dollar_sales(sales, prices[:, :2], days=2)


def test_hierarchy_refuses_id_columns_of_different_lengths() -> None:
    ids = dict(TINY_IDS, state=["X", "X"])
    with pytest.raises(ScoringError, match="state: 2"):
        hierarchy_of(ids)


def test_level_labels_name_the_groups() -> None:
    hierarchy = hierarchy_of(TINY_IDS)
    assert hierarchy.levels[1].labels.tolist() == ["Total"]
    assert hierarchy.levels[11].labels.tolist() == ["I1 / X", "I2 / X", "I1 / Y"]
    assert list(itertools.islice(hierarchy.levels, 3)) == [1, 2, 3]


# --- survivors of a mutation test (session 15) ---


def test_negative_dollar_weights_are_refused() -> None:
    hierarchy = hierarchy_of(TINY_IDS)
    weights = np.array(TINY_WEIGHTS, dtype=float)
    weights[0] = -1.0
    with pytest.raises(ScoringError, match="finite and non-negative"):
        scoring.wrmsse(TINY_HISTORY, TINY_TRUTH, TINY_FORECAST, hierarchy, weights)


@pytest.mark.parametrize("cell", ["-1", "-0.5"])
def test_a_truth_of_negative_units_is_refused(files, cell) -> None:
    data_dir, truth, submission, tmp = files
    truth = truth.astype({"d_1942": object})
    truth.loc[truth.index[0], "d_1942"] = cell
    with pytest.raises(ScoringError, match="not units sold, 0 to 16,777,216"):
        score_files(data_dir, *_write(tmp, truth, submission))
