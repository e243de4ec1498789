"""Batch Transform output into a submission: every mistake of the jobs is a readable reason."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from m5flow.exceptions import RunFailedError
from m5flow.forecast import closed_days, read_predictions, submission, to_csv
from m5flow.schema import INPUT_FILES, parse_inputs
from tests.conftest import REAL_M5

IDS = np.array(["B_1_evaluation", "A_1_evaluation"])


def _predictions(**changes: list) -> pd.DataFrame:
    """Two series, two days after d_10: each prediction is its day minus 10 (1 or 2)."""
    rows = {"id": [i for i in IDS for _ in (11, 12)], "day": [11, 12, 11, 12]}
    rows |= {"prediction": [d - 10.0 for d in rows["day"]]}
    return pd.DataFrame(rows | changes)


def test_rows_follow_the_ids_and_negative_predictions_are_clipped() -> None:
    frame = submission(_predictions(prediction=[1.0, 2.0, -0.5, 2.0]), IDS, 11, 2)
    assert list(frame.columns) == ["id", "F1", "F2"]
    assert list(frame["id"]) == list(IDS)
    assert frame[["F1", "F2"]].to_numpy().tolist() == [[1.0, 2.0], [0.0, 2.0]]


def test_a_series_that_never_sold_is_forecast_zero() -> None:
    never_sold = np.array([False, True])
    frame = submission(_predictions(), IDS, 11, 2, never_sold=never_sold)
    assert frame[["F1", "F2"]].to_numpy().tolist() == [[1.0, 2.0], [0.0, 0.0]]


def test_a_closed_day_is_forecast_zero_for_every_series() -> None:
    frame = submission(_predictions(), IDS, 11, 2, closed=np.array([True, False]))
    assert frame[["F1", "F2"]].to_numpy().tolist() == [[0.0, 2.0], [0.0, 2.0]]


DATES = np.arange("2012-01-01", "2017-02-01", dtype="datetime64[D]")
DEC_25 = np.char.endswith(DATES.astype(str), "12-25")


def _closed_in(totals: np.ndarray, first: str) -> list[str]:
    """The dates `closed_days` finds in the 28 days from `first`, from the totals before."""
    first_day = int(np.flatnonzero(np.datetime64(first) == DATES)[0]) + 1
    found = closed_days(totals[: first_day - 1], DATES, first_day, 28)
    return [str(d) for d in DATES[first_day - 1 : first_day + 27][found]]


@pytest.mark.parametrize(
    ("first", "sales_on_dec_25", "closed"),
    [
        ("2014-12-10", 1.0, ["2014-12-25"]),  # closed in 2012 and 2013
        ("2013-12-10", 1.0, []),  # only 2012 before it: one year is no rule
        ("2015-12-10", 4.0, ["2015-12-25"]),  # under 5% of the 100 a day around it
        ("2015-12-10", 6.0, []),  # 6%: a quiet day, not a closed one
        ("2016-06-01", 1.0, []),  # no closed date in the horizon
    ],
)
def test_a_date_closed_in_every_earlier_year_is_a_closed_day(first, sales_on_dec_25, closed):
    totals = np.where(DEC_25, sales_on_dec_25, 100.0)
    assert _closed_in(totals, first) == closed


def test_one_year_open_on_the_date_keeps_it_open() -> None:
    totals = np.where(DEC_25, 1.0, 100.0)
    totals[np.datetime64("2013-12-25") == DATES] = 90.0
    assert _closed_in(totals, "2015-12-10") == []
    totals[: int(np.flatnonzero(np.datetime64("2014-01-01") == DATES)[0])] = 0.0
    # A year with nothing sold around the date (before the history's first sale) says nothing.
    assert _closed_in(totals, "2016-12-10") == ["2016-12-25"]


def test_on_the_real_slice_christmas_is_the_only_closed_day() -> None:
    data = parse_inputs({n: (REAL_M5 / n).read_bytes() for n in INPUT_FILES})
    dates = pd.to_datetime(data.calendar["date"]).to_numpy()
    totals = data.sales.sum(axis=0)
    found = {}
    for first_day in range(800, 1942, 28):  # every 28-day window from 2013 on
        closed = closed_days(totals[: first_day - 1], dates, first_day, 28)
        found |= {first_day + h: str(dates[first_day - 1 + h])[:10] for h in np.flatnonzero(closed)}
    assert found == {1062: "2013-12-25", 1427: "2014-12-25", 1792: "2015-12-25"}


@pytest.mark.parametrize(
    ("predictions", "reason"),
    [
        (_predictions(day=[11, 13, 11, 12]), r"d_13 is outside d_11..d_12"),
        (_predictions(day=[11, 11, 11, 12]), r"1 \(series, day\) predicted more than once"),
        (_predictions(prediction=[1.0, np.nan, 1.0, 2.0]), r"finite numbers, e.g. B_1_eval.* d_12"),
        (_predictions(prediction=[1.0, np.inf, 1.0, 2.0]), r"not finite"),
        (_predictions().iloc[:3], r"1 series have no prediction for some days, e.g. A_1"),
        (_predictions(id=["B_1_evaluation", "B_1_evaluation", "A_1_evaluation", "C_1"]),
         r"1 predictions of series not in the run, e.g. C_1 d_12"),
    ],
)  # fmt: skip
def test_a_wrong_prediction_set_fails_with_its_reason(predictions, reason) -> None:
    with pytest.raises(RunFailedError, match=reason):
        submission(predictions, IDS, 11, 2)


def test_an_output_that_is_not_prediction_rows_fails_naming_it() -> None:
    outputs = [("p/a.out", b"A_1_evaluation,11,0.5\n", 1), ("p/b.out", b"", 0),
               ("p/c.out", b"B,12,1\n", 1)]  # fmt: skip
    assert len(read_predictions(outputs)) == 2
    with pytest.raises(RunFailedError, match=r"output p/x\.out is not id,day,prediction rows"):
        read_predictions([("p/x.out", b"A_1_evaluation,eleven,0.5\n", 1)])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"A_1_evaluation,,0.5\n", "conversion error to int32: invalid value ''"),
        (b"A_1_evaluation,11,\n", "conversion error to double: invalid value ''"),
        (b"A_1_evaluation,11,0.5\n", r"p/x\.out holds 1 rows; its inference shard has 2"),
        (b"", r"p/x\.out holds 0 rows; its inference shard has 2"),
    ],
)
def test_an_empty_field_or_a_short_output_is_named_not_read_as_missing(body, reason) -> None:
    """A blank day once became a float column and a misleading 'no prediction' reason."""
    with pytest.raises(RunFailedError, match=reason):
        read_predictions([("p/x.out", body, 2)])


def test_the_written_submission_holds_the_numbers_scored() -> None:
    """metrics.json scores the forecast in memory: the file must read back to it exactly
    (5 significant digits had moved the real data's WRMSSE by 2e-6, and written 123456.7 as
    1.2346e+05). The container's predictions are float32 values, which 9 digits keep."""
    rng = np.random.default_rng(0)
    values = rng.gamma(0.5, 4.0, size=(50, 28)).astype(np.float32).astype(np.float64)
    values[0, 0] = np.float32(123456.7)
    frame = pd.DataFrame(values, columns=[f"F{d}" for d in range(1, 29)])
    frame.insert(0, "id", [f"S_{i}_evaluation" for i in range(50)])
    read = pd.read_csv(io.BytesIO(to_csv(frame))).drop(columns="id").to_numpy()
    assert np.array_equal(read.astype(np.float32), values.astype(np.float32))
