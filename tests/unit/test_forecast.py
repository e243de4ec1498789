"""Batch Transform output into a submission: every mistake of the jobs is a readable reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from m5flow.exceptions import RunFailedError
from m5flow.forecast import read_predictions, submission

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
