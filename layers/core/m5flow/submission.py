"""M5 submission and truth files: read, checked against the history's ids, and scored.

A submission is `id,F1..F<h>` and a truth file `id,d_<T+1>..d_<T+h>`, in any row order; both
are aligned to the history's series, and every mismatch is named in one error so a user can
fix a file in one go.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from m5flow import schema
from m5flow.csvinput import decoded, first_of, missing_columns, quoted
from m5flow.exceptions import InputRejectedError, ScoringError
from m5flow.hierarchy import Hierarchy
from m5flow.schema import M5Data
from m5flow.scoring import COSTLIEST, Score, dollar_sales, wrmsse
from m5flow.wording import listed


def aligned_values(
    name: str,
    frame: pd.DataFrame,
    ids: np.ndarray,
    columns: list[str],
    *,
    units: bool = False,
) -> np.ndarray:
    """Rows of `frame` in the order of `ids`, or a ScoringError naming every mismatch.

    Rows of other series are ignored: Kaggle's files cover all 30,490 series (a
    submission both halves, *_validation too), a run perhaps a slice. They are named only
    when a series has no row, where a misspelt id would be among them. `units`: the values
    are units sold (a truth), 0 to the sales file's bound; a forecast need only be finite.
    """
    problems = []
    # Fixed-width text, not object arrays: np.isin compares objects one Python call at a
    # time, which took minutes for the 60,980 rows of a Kaggle submission.
    ids = np.asarray(ids, dtype=str)
    absent = [c for c in ["id", *columns] if c not in frame.columns]
    if absent and len(frame.columns) == 1:  # say that alone (a separator: `read_table`)
        raise ScoringError(
            f"{name}: one column ({quoted(frame.columns[0])}); expected id,"
            f"{columns[0]}..{columns[-1]}, separated by commas"
        )
    if absent:
        problems.append(
            f"{name}: missing column(s) {listed(absent)}; expected id,"
            f"{columns[0]}..{columns[-1]} (found {listed(frame.columns, 8)})"
        )
        raise ScoringError("; ".join(problems))
    long = (frame["id"].str.len() > schema.MAX_ID_CHARS).to_numpy()
    if long.any():  # as fixed-width text every id would be as long (4 MB: 4.5 GiB)
        row = first_of(long)
        raise ScoringError(
            f"{name}: row {row + 2}: id {quoted(frame['id'].iat[row])}; expected an id of at "
            f"most {schema.MAX_ID_CHARS} characters"
        )
    row_ids = frame["id"].to_numpy(dtype=str)
    ours = np.isin(row_ids, ids)
    others, frame = row_ids[~ours], frame[ours]
    extra = [c for c in frame.columns if c not in ("id", *columns, *schema.SALES_ID_COLUMNS)]
    if extra:
        problems.append(
            f"{name}: unexpected column(s) {listed(extra)}; expected id,{columns[0]}..{columns[-1]}"
        )
    file_ids = row_ids[ours]
    counts = pd.Series(file_ids).value_counts()
    if (counts > 1).any():
        problems.append(f"{name}: duplicate id(s) {listed(counts.index[counts > 1].to_numpy())}")
    missing = ids[~np.isin(ids, file_ids)]
    if missing.size:
        problem = f"{name}: no row for {missing.size} series: {listed(missing)}"
        # A Kaggle submission also holds the public-leaderboard half (*_validation).
        suffix = "_evaluation"
        twins = np.array(
            [f"{i.removesuffix(suffix)}_validation" for i in ids if i.endswith(suffix)],
            dtype=str,
        )
        if np.isin(twins, others).any():
            problem += (
                " (it has *_validation rows, Kaggle's forecast of d_1914..d_1941; the days "
                "after the history are the *_evaluation rows)"
            )
        unknown = others[~np.isin(others, twins)]
        if unknown.size:
            problem += f" (its {unknown.size} id(s) not in the history: {listed(unknown)})"
        problems.append(problem)
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=0)
    if bad.any():
        row = first_of(values[bad.index[bad][0]].isna().to_numpy())
        first = bad.index[bad][0]
        problems.append(
            f"{name}: column(s) {listed(bad.index[bad].to_numpy())} hold empty or non-numeric "
            f"values, e.g. {file_ids[row]} {first}: {frame[first].iloc[row]!r}; expected a "
            "number in every cell"
        )
    numbers = values.to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        wrong = ~np.isfinite(numbers) & ~values.isna().to_numpy()
        if units:
            wrong |= (numbers < 0) | (numbers > schema.MAX_UNITS)
    if wrong.any():
        row, column = (int(i[0]) for i in np.nonzero(wrong))
        expected = f"units sold, 0 to {schema.MAX_UNITS:,}" if units else "finite numbers"
        problems.append(
            f"{name}: {int(wrong.sum())} value(s) are not {expected}, e.g. "
            f"{file_ids[row]} {columns[column]}: {frame[columns[column]].iloc[row]}"
        )
    if problems:
        raise ScoringError("; ".join(problems))
    rows = pd.Index(file_ids).get_indexer(ids)
    return numbers[rows]


def read_table(name: str, source: Path | bytes) -> pd.DataFrame:
    """A submission or truth file as text cells, or a ScoringError saying why it is not a
    CSV table.

    Nothing is guessed: an id such as 0001 or NA stays itself (a guessed number or missing
    value would match no series), and `aligned_values` reads the numbers, naming any cell
    that is not one. The bytes are taken as the inputs' are (`csvinput.decoded`): gzip under
    the `.csv` name, a byte-order mark and CR line ends are read, so a truth file uploaded
    the way its sales file was is scored too. A semicolon or tab export is named as such.
    """
    payload = source if isinstance(source, bytes) else source.read_bytes()
    try:
        text = decoded(name, payload, schema.MAX_INPUT_BYTES)
        frame = pd.read_csv(io.BytesIO(text), dtype=str, keep_default_na=False)
    except InputRejectedError as exc:
        raise ScoringError(str(exc)) from None  # it names the file and what is wrong
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' EmptyDataError, ParserError
        raise ScoringError(f"{name}: not a CSV table ({exc})") from None
    separated = missing_columns(name, list(frame.columns), ()) if frame.shape[1] == 1 else []
    if separated:
        raise ScoringError("; ".join(separated))
    return frame


def score_against_truth(
    data: M5Data,
    truth_name: str,
    truth_frame: pd.DataFrame,
    forecast: np.ndarray,
    hierarchy: Hierarchy | None = None,
) -> tuple[np.ndarray, Score]:
    """The truth aligned to the history's series, and the forecast's WRMSSE against it.

    The truth's day columns must be the forecast's: d_<T+1>..d_<T+h> for h = its columns.
    Weights are the dollar sales of the history's last 28 days, as the M5 scored them.
    """
    days = [f"d_{data.last_day + k}" for k in range(1, forecast.shape[1] + 1)]
    truth = aligned_values(truth_name, truth_frame, data.ids, days, units=True)
    return truth, _scored(data, truth, forecast, hierarchy)


def _scored(
    data: M5Data, truth: np.ndarray, forecast: np.ndarray, hierarchy: Hierarchy | None = None
) -> Score:
    """WRMSSE weighted by the dollar sales of the history's last 28 days, as the M5 scored,
    with the items that cost it most."""
    weights = dollar_sales(data.sales, data.prices)
    hierarchy = hierarchy or Hierarchy.from_data(data)
    return wrmsse(data.sales, truth, forecast, hierarchy, weights, costliest=COSTLIEST)


def score_files(data_dir: Path, truth_csv: Path, submission_csv: Path) -> Score:
    """Score an M5 submission file against a truth file, on the history in `data_dir`.

    Parameters
    ----------
    data_dir
        Holds sales_train_evaluation.csv (the history d_1..d_T), calendar.csv and
        sell_prices.csv (weights: dollar sales of d_T-27..d_T, prices carried forward).
    truth_csv
        `id,d_<T+1>..d_<T+h>` (sales_test_evaluation.csv; item_id etc. may be present).
    submission_csv
        `id,F1..F<h>`; rows of other series (Kaggle's `*_validation` twins, series not in
        the history: a whole Kaggle submission scored on a slice) are ignored.

    Raises
    ------
    ScoringError
        Naming the ids or days that do not match between the three.
    InputRejectedError
        When the input files in `data_dir` are malformed.

    Example
    -------
    >>> print(format_score(score_files(m5_dir, truth, submission)))  # a perfect forecast
    WRMSSE  0.0000
    ...
    """
    absent = [n for n in (*schema.INPUT_FILES,) if not (Path(data_dir) / n).is_file()]
    absent += [str(p) for p in (truth_csv, submission_csv) if not Path(p).is_file()]
    if absent:
        raise ScoringError(f"file(s) not found: {', '.join(absent)} (data directory {data_dir})")
    data = schema.parse_inputs(
        {name: (Path(data_dir) / name).read_bytes() for name in schema.INPUT_FILES}
    )
    truth_name, submission_name = Path(truth_csv).name, Path(submission_csv).name
    truth_frame = read_table(truth_name, Path(truth_csv))
    submission_frame = read_table(submission_name, Path(submission_csv))
    if len(truth_frame.columns) == 1:  # say that, not "no days" (a separator: `read_table`)
        raise ScoringError(f"{truth_name}: one column; expected id,d_<day>..., comma-separated")
    days = [c for c in truth_frame.columns if c.startswith("d_")]
    if not days and "F1" in truth_frame.columns:
        raise ScoringError(
            f"{truth_name} is a submission (id,F1..): the truth comes first, then the "
            f"submission ({truth_name} second)"
        )
    horizon = len(days)
    expected = [f"d_{data.last_day + k}" for k in range(1, horizon + 1)]
    if not days or days != expected:
        numbers = [n for n in map(schema.day_number, days) if n is not None]
        after = [n for n in numbers if n > data.last_day]
        # The range the file's own days after the history suggest (a whole-history truth
        # such as Kaggle's d_1..d_1969 means d_1942..d_1969), else the M5 horizon.
        last = max(after) if after else data.last_day + schema.HORIZON
        history = " (it holds history days too: keep only the days after it)" if (
            after and min(numbers) <= data.last_day
        ) else ""  # fmt: skip
        raise ScoringError(
            f"{truth_name}: day columns {listed(days or ['(none)'])}; expected "
            f"d_{data.last_day + 1}..d_{last}, the days after the history's last day "
            f"d_{data.last_day}{history}"
        )
    # The truth first: when it lacks the history's series too, the history is another
    # dataset's, which blaming the submission would hide.
    truth = aligned_values(truth_name, truth_frame, data.ids, days, units=True)
    steps = [f"F{k}" for k in range(1, horizon + 1)]
    try:
        forecast = aligned_values(submission_name, submission_frame, data.ids, steps)
    except ScoringError as exc:
        forecast_days = sum(bool(re.fullmatch(r"F\d+", str(c))) for c in submission_frame)
        if forecast_days in (0, horizon):
            raise
        # Which file is short is not for this check to say: name where the days come from.
        raise ScoringError(
            f"{exc} (the days come from {truth_name}, which holds {horizon}: "
            f"{days[0]}..{days[-1]}; {submission_name} has {forecast_days} F columns)"
        ) from None
    return _scored(data, truth, forecast)
