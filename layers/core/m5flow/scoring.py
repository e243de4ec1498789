"""WRMSSE, the M5 accuracy measure, over the 12 aggregation levels of the M5 hierarchy.

Each level groups the bottom series (item x store) and sums them; every aggregated series is
scored by its RMSSE: the root of the mean squared error over the horizon divided by the mean
squared one-step naive error of its history after its first non-zero sale. A level's score is
the RMSSE weighted by the series' dollar sales over the last 28 history days (the weights of a
level sum to 1); the WRMSSE is the mean of the 12 level scores. Only the series given are
aggregated, so a slice of M5 is scored on its own hierarchy.

Levels are summed from the finest level already summed that nests them (item x state from
the bottom, item from item x state, ...), so at full M5 scale only two passes touch all
30,490 rows, and no dense aggregation matrix is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from m5flow import schema
from m5flow.exceptions import ScoringError

WEIGHT_DAYS = 28
# Level number -> (name, the id columns it groups by); level 12 is M5's bottom (item x store).
LEVELS: dict[int, tuple[str, tuple[str, ...]]] = {
    1: ("total", ()), 2: ("state", ("state",)), 3: ("store", ("store",)),
    4: ("category", ("cat",)), 5: ("department", ("dept",)),
    6: ("state x category", ("state", "cat")), 7: ("state x department", ("state", "dept")),
    8: ("store x category", ("store", "cat")), 9: ("store x department", ("store", "dept")),
    10: ("item", ("item",)), 11: ("item x state", ("item", "state")),
    12: ("item x store", ("item", "store")),
}  # fmt: skip
ID_COLUMNS = ("item", "dept", "cat", "store", "state")  # Hierarchy.from_ids: <column>_ids
_CHUNK_ROWS = 512  # rows scaled at a time: bounds the float64 copies at full scale
_NARROW = 256  # columns up to which rows are summed by one bincount, not group by group
_SHOWN = 5  # ids named in an error message


@dataclass(frozen=True, eq=False)
class Level:
    """One aggregation level: which group each bottom series falls in, and how to sum it."""

    number: int
    name: str
    codes: np.ndarray  # int, group of each bottom series, numbered by first appearance
    labels: np.ndarray  # str, one per group: the id values joined by " / " ("Total" at 1)
    source: int  # the level summed to get this one (0: the bottom series themselves)
    parents: np.ndarray  # int, group in this level of each group of `source`

    @property
    def size(self) -> int:
        return len(self.labels)


def _sum_groups(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the rows of `values` by group code into float64, one row per group."""
    if n_groups == len(codes) and np.array_equal(codes, np.arange(n_groups)):
        return values  # every row its own group, already in group order
    width = int(np.prod(values.shape[1:], dtype=np.int64))
    if width <= _NARROW:  # errors, weights: one bincount over (group, column) cells
        cells = (codes[:, None] * width + np.arange(width)).ravel()
        flat = np.bincount(cells, values.reshape(-1), minlength=n_groups * width)
        return flat.reshape((n_groups, *values.shape[1:]))
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_groups + 1))
    out = np.empty((n_groups, *values.shape[1:]), dtype=np.float64)
    for group in range(n_groups):
        rows = order[bounds[group] : bounds[group + 1]]
        # Contiguous members are summed in place: no gathered copy of a large block.
        block = values[rows[0] : rows[-1] + 1] if rows[-1] - rows[0] == len(rows) - 1 else None
        out[group] = (values[rows] if block is None else block).sum(axis=0, dtype=np.float64)
    return out


def _finest_first(levels: Mapping[int, Level]) -> Callable[[int], tuple[int, int]]:
    """Sort key putting levels with more groups first: each level's source precedes it."""
    return lambda number: (-levels[number].size, -number)


@dataclass(frozen=True, eq=False)
class Hierarchy:
    """The 12 M5 levels of a set of bottom series, built from their id columns.

    Example
    -------
    >>> h = Hierarchy.from_ids(item_ids=np.array(["A_1_001", "A_1_001"]),
    ...     dept_ids=np.array(["A_1"] * 2), cat_ids=np.array(["A"] * 2),
    ...     store_ids=np.array(["CA_1", "TX_1"]), state_ids=np.array(["CA", "TX"]))
    >>> h.levels[2].labels.tolist(), h.aggregate(np.ones((2, 3)), [1])[1].tolist()
    (['CA', 'TX'], [[2.0, 2.0, 2.0]])
    """

    n_series: int
    levels: Mapping[int, Level]

    @classmethod
    def from_ids(
        cls,
        *,
        item_ids: np.ndarray,
        dept_ids: np.ndarray,
        cat_ids: np.ndarray,
        store_ids: np.ndarray,
        state_ids: np.ndarray,
    ) -> Hierarchy:
        """Build the levels from one id value per bottom series and column."""
        columns = dict(
            zip(ID_COLUMNS, (item_ids, dept_ids, cat_ids, store_ids, state_ids), strict=True)
        )
        n = len(item_ids)
        if any(len(v) != n for v in columns.values()):
            lengths = ", ".join(f"{k}: {len(v)}" for k, v in columns.items())
            raise ScoringError(f"id columns differ in length ({lengths}); one value per series")
        keyed: dict[int, tuple[str, np.ndarray, np.ndarray]] = {}
        for number, (name, keys) in LEVELS.items():
            if keys:
                frame = pd.DataFrame({k: np.asarray(columns[k]).astype(str) for k in keys})
                codes = frame.groupby(list(keys), sort=False, observed=True).ngroup().to_numpy()
                heads = frame.iloc[np.unique(codes, return_index=True)[1]]  # 1st row per group
                joined = heads[keys[0]]
                for key in keys[1:]:
                    joined = joined + " / " + heads[key]
                labels = joined.to_numpy().astype(str)
            else:
                codes, labels = np.zeros(n, dtype=np.int64), np.array(["Total"])
            keyed[number] = (name, codes.astype(np.int64), labels)
        # Finest levels first; each is summed from the smallest finer level that nests it.
        levels: dict[int, Level] = {}
        sizes = {k: len(v[2]) for k, v in keyed.items()}
        for number in sorted(keyed, key=lambda k: (-sizes[k], -k)):
            name, codes, labels = keyed[number]
            source, parents = 0, codes
            for finer in sorted(levels.values(), key=lambda lv: lv.size):
                first = np.unique(finer.codes, return_index=True)[1]
                if np.array_equal(codes[first][finer.codes], codes):
                    source, parents = finer.number, codes[first]
                    break
            levels[number] = Level(number, name, codes, labels, source, parents)
        return cls(n, dict(sorted(levels.items())))

    @classmethod
    def from_data(cls, data: schema.M5Data) -> Hierarchy:
        """The hierarchy of parsed M5 inputs."""
        return cls.from_ids(**{f"{c}_ids": getattr(data, f"{c}_ids") for c in ID_COLUMNS})

    def aggregate(
        self, values: np.ndarray, levels: list[int] | None = None
    ) -> dict[int, np.ndarray]:
        """Sum the rows of `values` (one per bottom series) up to each requested level.

        Parameters
        ----------
        values
            Shape (n_series, ...): history, errors or weights of the bottom series.
        levels
            Level numbers wanted (default: all 12).

        Returns
        -------
        dict[int, np.ndarray]
            Level number -> one row per group (in `Level.labels` order), float64 except
            where a level's groups are exactly the bottom rows (then `values` itself).
        """
        wanted = set(self.levels if levels is None else levels)
        needed = set()
        for number in wanted:
            while number and number not in needed:
                needed.add(number)
                number = self.levels[number].source
        sums: dict[int, np.ndarray] = {0: values}
        for number in sorted(needed, key=_finest_first(self.levels)):  # sources first
            level = self.levels[number]
            sums[number] = _sum_groups(sums[level.source], level.parents, level.size)
        return {k: sums[k] for k in sorted(wanted)}


@dataclass(frozen=True)
class Score:
    """A WRMSSE and its parts, per aggregation level."""

    wrmsse: float
    levels: dict[int, float]  # level number -> that level's weighted RMSSE; wrmsse = mean
    series: dict[int, int]  # level number -> number of aggregated series scored

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form: {"wrmsse": ..., "levels": {"1": ...}, "series": {"1": ...}}."""
        return {
            "wrmsse": self.wrmsse,
            "levels": {str(k): v for k, v in self.levels.items()},
            "series": {str(k): v for k, v in self.series.items()},
        }


def naive_scale(history: np.ndarray) -> np.ndarray:
    """Mean squared one-step naive error of each row after its first non-zero value.

    Returns float64, one per row of `history` (n, days) or a 0-d array for one series
    (days,); NaN where fewer than two days remain after the first sale (or none at all).

    Example
    -------
    >>> float(naive_scale(np.array([0.0, 0.0, 2.0, 4.0, 1.0])))  # diffs 2, -3
    6.5
    """
    rows = np.atleast_2d(history)
    n, days = rows.shape
    scale = np.empty(n, dtype=np.float64)
    for start in range(0, n, _CHUNK_ROWS):
        block = rows[start : start + _CHUNK_ROWS].astype(np.float64)
        sold = block != 0
        first = np.where(sold.any(axis=1), sold.argmax(axis=1), days)
        diffs = np.diff(block, axis=1)
        squares = np.einsum("ij,ij->i", diffs, diffs)
        # Before the first sale every value is 0, so the only non-zero difference not
        # counted is the step onto the first sale itself: subtract it (no mask needed).
        step = np.take_along_axis(block, np.minimum(first, days - 1)[:, None], axis=1)[:, 0]
        squares -= np.where((first > 0) & (first < days), step**2, 0.0)
        count = np.maximum(days - 1 - first, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale[start : start + _CHUNK_ROWS] = np.where(count > 0, squares / count, np.nan)
    return scale.reshape(np.shape(history)[:-1])


def rmsse(history: np.ndarray, truth: np.ndarray, forecast: np.ndarray) -> float:
    """RMSSE of one series: sqrt(mean squared forecast error / naive_scale(history)).

    Example
    -------
    >>> rmsse(np.array([0.0, 1.0, 3.0]), np.array([3.0, 3.0]), np.array([1.0, 1.0]))
    1.0
    """
    mse = float(np.mean((np.asarray(truth, np.float64) - np.asarray(forecast, np.float64)) ** 2))
    return float(np.sqrt(mse / float(naive_scale(np.asarray(history)))))


def dollar_sales(sales: np.ndarray, prices: np.ndarray, days: int = WEIGHT_DAYS) -> np.ndarray:
    """Units x sell price of each series over the last `days` columns of `sales`.

    `prices[:, d]` is the price on the day of `sales[:, d]` (extra columns after the last
    sales day, such as the horizon in `M5Data.prices`, are ignored); a NaN price (before an
    item's first price) counts as no dollar sales.
    """
    end = sales.shape[1]
    if prices.shape[0] != sales.shape[0] or prices.shape[1] < end:
        raise ScoringError(
            f"prices have shape {prices.shape}; expected ({sales.shape[0]}, >= {end}), "
            "one row per series and a price for every sales day"
        )
    units = sales[:, end - days : end].astype(np.float64)
    return np.nansum(units * prices[:, end - days : end], axis=1)


def _check_shapes(history: np.ndarray, truth: np.ndarray, forecast: np.ndarray, n: int) -> None:
    problems = []
    if history.ndim != 2 or history.shape[0] != n or history.shape[1] < 2:
        problems.append(f"history has shape {history.shape}; expected ({n}, days >= 2)")
    if truth.ndim != 2 or truth.shape[0] != n or truth.shape[1] < 1:
        problems.append(f"truth has shape {truth.shape}; expected ({n}, horizon)")
    if forecast.shape != truth.shape:
        problems.append(f"forecast has shape {forecast.shape}; expected {truth.shape} (truth)")
    for name, values in (("history", history), ("truth", truth), ("forecast", forecast)):
        if not problems and not np.isfinite(values).all():
            rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
            problems.append(f"{name} is not finite in row(s) {rows[:_SHOWN].tolist()}")
    if problems:
        raise ScoringError("; ".join(problems))


def wrmsse(
    history: np.ndarray,
    truth: np.ndarray,
    forecast: np.ndarray,
    hierarchy: Hierarchy,
    dollar_sales: np.ndarray,
) -> Score:
    """Score a forecast of the bottom series with the M5 WRMSSE.

    Parameters
    ----------
    history
        Units sold, (n_series, days): everything before the forecast origin.
    truth, forecast
        (n_series, horizon): what sold after the origin, and what was forecast.
    hierarchy
        The levels of the bottom series (`Hierarchy.from_ids`).
    dollar_sales
        (n_series,): the unnormalised weights, usually `dollar_sales(history, prices)`.

    Returns
    -------
    Score
        The WRMSSE, and each level's weighted RMSSE.

    Raises
    ------
    ScoringError
        On mismatched shapes, non-finite values, no dollar sales, or a weighted series its
        history cannot scale (under two days since its first sale, or constant since).

    Example
    -------
    >>> h = Hierarchy.from_ids(**{f"{c}_ids": np.array(["X"]) for c in ID_COLUMNS})
    >>> score = wrmsse(np.array([[0, 1, 3]]), [[3, 3]], [[1, 1]], h, np.ones(1))
    >>> score.wrmsse, score.levels[12]
    (1.0, 1.0)
    """
    history, truth, forecast = np.asarray(history), np.asarray(truth), np.asarray(forecast)
    _check_shapes(history, truth, forecast, hierarchy.n_series)
    weights = np.asarray(dollar_sales, dtype=np.float64)
    if weights.shape != (hierarchy.n_series,) or not (np.isfinite(weights) & (weights >= 0)).all():
        raise ScoringError(
            f"dollar_sales has shape {weights.shape}; expected ({hierarchy.n_series},), "
            "finite and non-negative"
        )
    total = weights.sum()
    if total <= 0:
        raise ScoringError("no dollar sales in the weighting window: every weight would be 0")
    histories = hierarchy.aggregate(history)
    errors = hierarchy.aggregate(truth.astype(np.float64) - forecast)  # sums are linear
    level_weights = hierarchy.aggregate(weights)
    scores: dict[int, float] = {}
    for number, level in sorted(
        hierarchy.levels.items(), reverse=True
    ):  # bottom first: name the series
        share = level_weights[number] / total
        scale = naive_scale(histories[number])
        mse = np.mean(errors[number] ** 2, axis=1)
        weighted = share > 0
        unscalable = weighted & ~(scale > 0)
        if unscalable.any():
            names = ", ".join(level.labels[unscalable][:_SHOWN])
            raise ScoringError(
                f"level {number} ({level.name}): {int(unscalable.sum())} series with dollar "
                f"sales cannot be scaled (fewer than two days since the first sale, or "
                f"constant since): {names}"
            )
        rmsse_ = np.sqrt(mse[weighted] / scale[weighted])
        scores[number] = float(np.sum(share[weighted] * rmsse_))
    sizes = {k: lv.size for k, lv in hierarchy.levels.items()}
    scores = dict(sorted(scores.items()))
    return Score(wrmsse=float(np.mean(list(scores.values()))), levels=scores, series=sizes)


def _named(ids: np.ndarray) -> str:
    more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
    return ", ".join(map(str, ids[:_SHOWN])) + more


def aligned_values(
    name: str, frame: pd.DataFrame, ids: np.ndarray, columns: list[str]
) -> np.ndarray:
    """Rows of `frame` in the order of `ids`, or a ScoringError naming every mismatch."""
    problems = []
    absent = [c for c in ["id", *columns] if c not in frame.columns]
    if absent:
        shown = ", ".join(map(str, frame.columns[:8]))
        problems.append(
            f"{name}: missing column(s) {_named(np.array(absent))}; expected id,"
            f"{columns[0]}..{columns[-1]} (found {shown}{'...' if frame.shape[1] > 8 else ''})"
        )
        raise ScoringError("; ".join(problems))
    extra = [c for c in frame.columns if c not in ("id", *columns, *schema.SALES_ID_COLUMNS)]
    if extra:
        problems.append(
            f"{name}: unexpected column(s) {_named(np.array(extra))}; "
            f"expected id,{columns[0]}..{columns[-1]}"
        )
    file_ids = frame["id"].astype(str).to_numpy()
    counts = pd.Series(file_ids).value_counts()
    if (counts > 1).any():
        problems.append(f"{name}: duplicate id(s) {_named(counts.index[counts > 1].to_numpy())}")
    missing = ids[~np.isin(ids, file_ids)]
    if missing.size:
        problems.append(f"{name}: no row for {missing.size} series: {_named(missing)}")
    # A Kaggle submission also holds the public-leaderboard half (*_validation): not an error.
    twins = [
        f"{i.removesuffix('_evaluation')}_validation" for i in ids if i.endswith("_evaluation")
    ]
    unknown = file_ids[~np.isin(file_ids, ids) & ~np.isin(file_ids, twins)]
    if unknown.size:
        problems.append(f"{name}: {unknown.size} id(s) not in the history: {_named(unknown)}")
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=0)
    if bad.any():
        problems.append(
            f"{name}: column(s) {_named(bad.index[bad].to_numpy())} hold empty or non-numeric "
            "values; expected a number in every cell"
        )
    if problems:
        raise ScoringError("; ".join(problems))
    rows = pd.Index(file_ids).get_indexer(ids)
    return values.to_numpy(dtype=np.float64)[rows]


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
        `id,F1..F<h>`; `*_validation` twins of the series (Kaggle's) are ignored.

    Raises
    ------
    ScoringError
        Naming the ids or days that do not match between the three.
    InputRejectedError
        When the input files in `data_dir` are malformed.

    Example
    -------
    >>> print(format_score(score_files(m5_dir, truth, submission)))  # doctest: +SKIP
    """
    absent = [n for n in (*schema.INPUT_FILES,) if not (Path(data_dir) / n).is_file()]
    absent += [str(p) for p in (truth_csv, submission_csv) if not Path(p).is_file()]
    if absent:
        raise ScoringError(f"file(s) not found: {', '.join(absent)} (data directory {data_dir})")
    data = schema.parse_inputs(
        {name: (Path(data_dir) / name).read_bytes() for name in schema.INPUT_FILES}
    )
    truth_frame = pd.read_csv(truth_csv)
    days = [c for c in truth_frame.columns if c.startswith("d_")]
    horizon = len(days)
    expected = [f"d_{data.last_day + k}" for k in range(1, horizon + 1)]
    if not days or days != expected:
        raise ScoringError(
            f"{Path(truth_csv).name}: day columns {_named(np.array(days or ['(none)']))}; "
            f"expected d_{data.last_day + 1}..d_{data.last_day + max(horizon, 1)}, "
            f"the days after the history's last day d_{data.last_day}"
        )
    truth = aligned_values(Path(truth_csv).name, truth_frame, data.ids, days)
    steps = [f"F{k}" for k in range(1, horizon + 1)]
    forecast = aligned_values(
        Path(submission_csv).name, pd.read_csv(submission_csv), data.ids, steps
    )
    weights = dollar_sales(data.sales, data.prices)
    return wrmsse(data.sales, truth, forecast, Hierarchy.from_data(data), weights)


def format_score(score: Score) -> str:
    """A small text table: the WRMSSE, then each level's weighted RMSSE.

    Example
    -------
    >>> print(format_score(Score(0.5, {1: 0.5}, {1: 1})))
    WRMSSE  0.5000
    <BLANKLINE>
    level  aggregation           series  RMSSE
        1  total                      1  0.5000
    """
    lines = [f"WRMSSE  {score.wrmsse:.4f}", "", "level  aggregation           series  RMSSE"]
    for number, value in score.levels.items():
        name = LEVELS[number][0] if number in LEVELS else "?"
        lines.append(f"{number:>5}  {name:<20} {score.series.get(number, 0):>7}  {value:.4f}")
    return "\n".join(lines)
