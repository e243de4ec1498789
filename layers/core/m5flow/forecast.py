"""Turning Batch Transform output into an M5 submission (`id,F1..F28`)."""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from m5flow.exceptions import RunFailedError
from m5flow.notifications import Stage

# A day whose total sales were under this share of the week before and the week after, in
# every earlier year the history holds its date (at least CLOSED_YEARS), was a closed day.
CLOSED_SHARE = 0.05
CLOSED_YEARS = 2
_WEEK = 7


def read_predictions(outputs: Iterable[tuple[str, bytes, int]]) -> pd.DataFrame:
    """Parse Batch Transform outputs (headerless `id,day,prediction` rows) into one frame.

    Each output comes as (its key, its body, the rows of the inference shard it scored):
    a transform writes one line per input line, so any other count is a broken output,
    named here rather than found later as series without predictions.

    Raises
    ------
    RunFailedError
        When an output is not rows of a name, a whole day number and a number (an empty
        field is not read as missing), or holds a row count other than its shard's.
    """
    options = pacsv.ConvertOptions(
        column_types={"id": pa.string(), "day": pa.int32(), "prediction": pa.float64()},
        null_values=[],
        strings_can_be_null=False,
    )
    names = pacsv.ReadOptions(column_names=["id", "day", "prediction"])
    tables = []
    for key, body, rows in outputs:
        try:
            table = (
                pacsv.read_csv(io.BytesIO(body), read_options=names, convert_options=options)
                if body.strip()
                else pa.table({"id": pa.array([], pa.string())})
            )
        except pa.ArrowInvalid as exc:
            raise RunFailedError(
                Stage.ASSEMBLE_FORECAST,
                f"Batch Transform output {key} is not id,day,prediction rows: {exc}",
            ) from None
        if table.num_rows != rows:
            raise RunFailedError(
                Stage.ASSEMBLE_FORECAST,
                f"Batch Transform output {key} holds {table.num_rows} rows; its inference "
                f"shard has {rows}",
            )
        if rows:
            tables.append(table)
    if not tables:
        return pd.DataFrame({"id": [], "day": [], "prediction": []})
    return pa.concat_tables(tables).to_pandas()


def closed_days(totals: np.ndarray, dates: np.ndarray, first_day: int, horizon: int) -> np.ndarray:
    """Which of the `horizon` days from `first_day` fall on a date the stores closed on.

    `totals`: units sold per day over every series, d_1..d_<first_day - 1>; `dates`: the
    datetime64 of d_1 onwards, through the horizon. A date counts as closed when, in every
    earlier year whose history holds it with a week either side (at least CLOSED_YEARS),
    that day sold under CLOSED_SHARE of those two weeks' daily mean. M5's stores close on
    Christmas Day (1 to 8 units in the real slice, against about 1,400 a day around it);
    the models see the calendar but no closure, and forecast an ordinary day there, which
    cost 0.05 of WRMSSE on a window holding Christmas (bench/accuracy/README.md).

    Example
    -------
    >>> dates = np.arange("2013-12-01", "2016-12-31", dtype="datetime64[D]")
    >>> totals = np.where(np.char.endswith(dates.astype(str), "12-25"), 1.0, 100.0)
    >>> first = int(np.flatnonzero(dates == np.datetime64("2015-12-20"))[0]) + 1
    >>> np.flatnonzero(closed_days(totals[: first - 1], dates, first, 28)) + 1  # horizon days
    array([6])
    """
    history = first_day - 1
    when = pd.DatetimeIndex(dates[: history + horizon])
    month_day = (when.month * 100 + when.day).to_numpy()
    closed = np.zeros(horizon, dtype=bool)
    for h in range(horizon):
        same_date = np.flatnonzero(month_day[:history] == month_day[history + h])
        verdicts = []
        for day in same_date[(same_date >= _WEEK) & (same_date + _WEEK < history)]:
            around = np.r_[totals[day - _WEEK : day], totals[day + 1 : day + 1 + _WEEK]].mean()
            if around > 0:  # a history with nothing sold around the date tells nothing
                verdicts.append(totals[day] < CLOSED_SHARE * around)
        closed[h] = len(verdicts) >= CLOSED_YEARS and all(verdicts)
    return closed


def submission(
    predictions: pd.DataFrame,
    ids: np.ndarray,
    first_day: int,
    horizon: int,
    never_sold: np.ndarray | None = None,
    closed: np.ndarray | None = None,
) -> pd.DataFrame:
    """Pivot predictions into `id,F1..F<horizon>`, one row per id, in the order of `ids`.

    Series marked `never_sold` (no sale before `first_day`) are forecast 0. The models learn
    only from days after a series' first sale, so for one that never sold they would forecast
    what a product sells once launched (about 0.5 to 1 a day), for items that may never sell.
    Horizon days marked `closed` (`closed_days`) are forecast 0 for every series.

    Raises
    ------
    RunFailedError
        When a series or a day is missing, a series is not one of `ids`, or a prediction is
        not a finite number.
    """
    days = predictions["day"] - first_day + 1
    outside = (days < 1) | (days > horizon)
    if outside.any():
        raise RunFailedError(
            Stage.ASSEMBLE_FORECAST,
            f"prediction for day d_{int(predictions['day'][outside].iloc[0])} is outside "
            f"d_{first_day}..d_{first_day + horizon - 1}",
        )
    # A series not in the run (an output of a stray object) would vanish in the reindex.
    _refuse(
        predictions, ~predictions["id"].isin(ids).to_numpy(), "predictions of series not in the run"
    )
    unreadable = ~np.isfinite(predictions["prediction"].to_numpy(np.float64))
    _refuse(predictions, unreadable, "predictions are not finite numbers")
    # Two models (or shards) forecasting the same day: averaging would hide the mistake.
    _refuse(predictions, predictions.duplicated(["id", "day"]).to_numpy(),
            "(series, day) predicted more than once")  # fmt: skip
    wide = (
        predictions.assign(column="F" + days.astype(str))
        .pivot(index="id", columns="column", values="prediction")
        .reindex(index=ids, columns=[f"F{h}" for h in range(1, horizon + 1)])
    )
    missing = wide.isna().any(axis=1)
    if missing.any():
        raise RunFailedError(
            Stage.ASSEMBLE_FORECAST,
            f"{int(missing.sum())} series have no prediction for some days, e.g. "
            f"{wide.index[missing][0]}",
        )
    values = wide.to_numpy()
    # Unit sales cannot be negative; objectives other than tweedie/poisson can dip below 0.
    wide[:] = np.clip(values, 0.0, None)
    if never_sold is not None:
        wide.iloc[np.flatnonzero(never_sold)] = 0.0
    if closed is not None:
        wide.iloc[:, np.flatnonzero(closed)] = 0.0
    return wide.rename_axis("id").reset_index().rename_axis(None, axis=1)


def mean_of(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The mean of submissions of the same ids, in the first one's order: the forecast of
    the direct and the recursive models together (m5flow.recursive)."""
    if len(frames) == 1:
        return frames[0]
    columns = frames[0].columns.drop("id")
    mean = np.mean([f.set_index("id").loc[frames[0]["id"], columns].to_numpy() for f in frames], 0)
    return frames[0].assign(**{c: mean[:, j] for j, c in enumerate(columns)})


def _refuse(predictions: pd.DataFrame, bad: np.ndarray, what: str) -> None:
    """Raise RunFailedError naming how many rows are `bad` and the first of them."""
    if bad.any():
        row = predictions[bad].iloc[0]
        raise RunFailedError(
            Stage.ASSEMBLE_FORECAST,
            f"{int(bad.sum())} {what}, e.g. {row['id']} d_{int(row['day'])}: {row['prediction']}",
        )


def to_csv(frame: pd.DataFrame) -> bytes:
    """The submission as CSV, its numbers as scored: the container's predictions are
    float32 values, which 9 significant digits give back exactly, so metrics.json's WRMSSE
    is the written file's (5 digits had moved it by 2e-6 on the real data)."""
    return frame.to_csv(index=False, float_format="%.9g").encode()
