"""WRMSSE, the M5 accuracy measure, over the 12 aggregation levels of the M5 hierarchy.

Every aggregated series (`m5flow.hierarchy`) is scored by its RMSSE: the root of the mean
squared error over the horizon divided by the mean squared one-step naive error of its
history after its first non-zero sale. A level's score is the RMSSE weighted by the series'
dollar sales over the last 28 history days (the weights of a level sum to 1); the WRMSSE is
the mean of the 12 level scores.

A series its history cannot scale (sold for the first time on the last history day, or
the same amount every day since) has no RMSSE. M5 had none; a real upload may (a new item),
so such a series leaves its level's score, the level's other weights are renormalised to
sum to 1, and it is named in `Score.unscored`: the rest of the forecast is still scored
rather than the whole run failing.

One item can carry a score: on a slice of a few hundred series, an item that stops selling
in the horizon after weeks of record sales weighs on every level it is summed into. So a
score can name its costliest items (`Score.costliest`): the WRMSSE the forecast would have
without each, which no level's number shows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from m5flow.exceptions import ScoringError
from m5flow.hierarchy import LEVELS, Hierarchy, Level
from m5flow.schema import first_nonzero
from m5flow.wording import LISTED, listed

WEIGHT_DAYS = 28
COSTLIEST = 3  # items a run's score names as costing it most
_CHUNK_ROWS = 512  # rows scaled at a time: bounds the float64 copies at full scale
_ITEM_LEVEL = 10  # an item summed over its stores: what a buyer orders


@dataclass(frozen=True)
class ItemCost:
    """What one item's forecast cost a score: the score as if the item had not been uploaded
    (not as if it had been forecast exactly, which also keeps its weight and history)."""

    item: str
    rows: tuple[int, ...]  # its bottom series, as rows of the scored arrays
    wrmsse_without: float  # the score of the other items' series
    forecast: float  # units over the horizon, all its series
    sold: float  # units the truth holds, all its series

    @property
    def forecast_over_truth(self) -> float | None:
        return self.forecast / self.sold if self.sold > 0 else None

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form, for metrics.json."""
        return {
            "item": self.item,
            "series": len(self.rows),
            "wrmsse_without": self.wrmsse_without,
            "forecast_units": self.forecast,
            "sold_units": self.sold,
            "forecast_over_truth": self.forecast_over_truth,
        }

    def forecast_said(self) -> str:
        """ "2.82 x what sold", or "1,200 units, none sold"."""
        ratio = self.forecast_over_truth
        return (
            f"{self.forecast:,.0f} units, none sold"
            if ratio is None
            else f"{ratio:.2f} x what sold"
        )

    def described(self) -> str:
        """One line: "FOODS_3_702 (10 series, forecast 2.82 x what sold): 0.6503 without"."""
        return (
            f"{self.item} ({len(self.rows)} series, forecast {self.forecast_said()}): "
            f"{self.wrmsse_without:.4f} without"
        )


@dataclass(frozen=True)
class Score:
    """A WRMSSE and its parts, per aggregation level."""

    wrmsse: float
    levels: dict[int, float]  # level number -> that level's weighted RMSSE; wrmsse = mean
    series: dict[int, int]  # level number -> aggregated series scored (with a weight and a scale)
    unscored: tuple[str, ...] = ()  # "<level name> <label>" of series their history cannot scale
    costliest: tuple[ItemCost, ...] = ()  # costliest first; when asked for (`wrmsse(costliest=)`)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form: {"wrmsse": ..., "levels": {"1": ...}, "series": {"1": ...}}."""
        return {
            "wrmsse": self.wrmsse,
            "levels": {str(k): v for k, v in self.levels.items()},
            "series": {str(k): v for k, v in self.series.items()},
            "unscored_series": len(self.unscored),
            "unscored_examples": list(self.unscored[:LISTED]),
            "costliest_items": [cost.as_dict() for cost in self.costliest],
        }

    def unscored_shown(self, shown: int = LISTED) -> str:
        """The first `shown` series left out, and how many more there are."""
        return listed(self.unscored, shown)


def naive_scale(history: np.ndarray) -> np.ndarray:
    """Mean squared one-step naive error of each row after its first non-zero value.

    Returns float64, one per row of `history` (n, days) or a 0-d array for one series
    (days,); NaN where fewer than two days remain after the first sale (or none at all),
    inf where the squares overflow float64.

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
        first = first_nonzero(block)
        with np.errstate(over="ignore", invalid="ignore"):
            diffs = np.diff(block, axis=1)
            squares = np.einsum("ij,ij->i", diffs, diffs)
            # Before the first sale every value is 0, so the only non-zero difference not
            # counted is the step onto the first sale itself: subtract it (no mask needed).
            step = np.take_along_axis(block, np.minimum(first, days - 1)[:, None], axis=1)[:, 0]
            squares -= np.where((first > 0) & (first < days), step**2, 0.0)
        # Squares past float64 (inf - inf is NaN) make an infinite scale, not a missing one.
        squares[np.isnan(squares) & np.isfinite(block).all(axis=1)] = np.inf
        count = np.maximum(days - 1 - first, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale[start : start + _CHUNK_ROWS] = np.where(count > 0, squares / count, np.nan)
    return scale.reshape(np.shape(history)[:-1])


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
            problems.append(f"{name} is not finite in row(s) {listed(rows)}")
    if problems:
        raise ScoringError("; ".join(problems))


def wrmsse(
    history: np.ndarray,
    truth: np.ndarray,
    forecast: np.ndarray,
    hierarchy: Hierarchy,
    dollar_sales: np.ndarray,
    costliest: int = 0,
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
    costliest
        Name up to this many items whose forecast cost the score most (`Score.costliest`:
        the score without each); 0, the default, scores once.

    Returns
    -------
    Score
        The WRMSSE, each level's weighted RMSSE and, if asked for, the costliest items.

    Raises
    ------
    ScoringError
        On mismatched shapes, non-finite values, no dollar sales, or a level none of whose
        weighted series can be scaled.

    Example
    -------
    >>> from m5flow.schema import ID_KINDS
    >>> h = Hierarchy.from_ids(**{f"{kind}_ids": np.array(["X"]) for kind in ID_KINDS})
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
    score, parts = _score(history, truth, forecast, hierarchy, weights)
    if costliest <= 0:
        return score
    costs = _costliest(truth, forecast, hierarchy, parts, score.wrmsse, costliest)
    return replace(score, costliest=costs)


@dataclass(frozen=True)
class _Level:
    """One level's sums and terms, kept to tell the score without each item."""

    history: np.ndarray  # (groups, days) summed history
    error: np.ndarray  # (groups, horizon) summed truth - forecast
    weight: np.ndarray  # (groups,) summed dollar sales, not normalised
    rmsse: np.ndarray  # (groups,) NaN where not weighted
    weighted: np.ndarray  # bool (groups,): with a weight and a scale: in the level's score


def _score(
    history: np.ndarray,
    truth: np.ndarray,
    forecast: np.ndarray,
    hierarchy: Hierarchy,
    weights: np.ndarray,
) -> tuple[Score, dict[int, _Level]]:
    """The score of checked inputs, and each level's sums and terms."""
    total = weights.sum()
    if total <= 0:
        raise ScoringError("no dollar sales in the weighting window: every weight would be 0")
    histories = hierarchy.aggregate(history)
    with np.errstate(over="ignore"):  # reported below, as a reason
        errors = hierarchy.aggregate(truth.astype(np.float64) - forecast)  # sums are linear
    level_weights = hierarchy.aggregate(weights)
    scores: dict[int, float] = {}
    scored: dict[int, int] = {}
    unscored: list[str] = []
    parts: dict[int, _Level] = {}
    for number, level in sorted(
        hierarchy.levels.items(), reverse=True
    ):  # bottom first: name the series
        share = level_weights[number] / total
        scale = naive_scale(histories[number])  # inf where its squares overflow
        with np.errstate(over="ignore"):  # reported below, as a reason
            mse = np.mean(errors[number] ** 2, axis=1)
        unscalable = (share > 0) & ~(scale > 0)
        weighted = (share > 0) & ~unscalable
        if not weighted.any():
            raise ScoringError(
                f"level {number} ({level.name}): no series with dollar sales can be scaled "
                "(each sold first on the last history day, or the same every day since)"
            )
        unscored += [f"{level.name} {label}" for label in level.labels[unscalable]]
        if not (np.isfinite(mse[weighted]).all() and np.isfinite(scale[weighted]).all()):
            raise ScoringError(_overflow_reason(number, level.name, history, truth, forecast))
        rmsse_ = np.full(level.size, np.nan)
        rmsse_[weighted] = np.sqrt(mse[weighted] / scale[weighted])
        scores[number] = float(np.sum(share[weighted] * rmsse_[weighted]) / share[weighted].sum())
        scored[number] = int(weighted.sum())
        parts[number] = _Level(
            histories[number], errors[number], level_weights[number], rmsse_, weighted
        )
    scores = dict(sorted(scores.items()))
    series = dict(sorted(scored.items()))
    return Score(float(np.mean(list(scores.values()))), scores, series, tuple(unscored)), parts


def _costliest(
    truth: np.ndarray,
    forecast: np.ndarray,
    hierarchy: Hierarchy,
    parts: dict[int, _Level],
    wrmsse_: float,
    shown: int,
) -> tuple[ItemCost, ...]:
    """Up to `shown` items whose series, left out, lower the score most; costliest first.

    Every item is tried, exactly, from the level sums the score already has: leaving an
    item out takes its own series out of the item levels (10-12), and takes its part out of
    each group of the other levels that holds it, whose weight, error and naive scale are
    then the group's less the item's (the item's part of a store is its item-store series,
    of a state its item-state series, of a category its item series). A group left with
    no weight or no scale leaves its level's score, as in `wrmsse`. At full M5 scale that is
    about 130,000 such groups, a few seconds.
    """
    items = hierarchy.levels[_ITEM_LEVEL]
    total = float(parts[1].weight.sum())
    change_sum = np.zeros((len(parts), items.size))  # of each level's sum of weight x RMSSE
    change_weight = np.zeros((len(parts), items.size))  # of each level's sum of weights
    for index, number in enumerate(sorted(parts)):
        level = parts[number]
        if number >= _ITEM_LEVEL:  # groups of one item each: they leave the level
            item_of = items.codes[_first_rows(hierarchy.levels[number])]
            term = np.where(level.weighted, level.weight * level.rmsse, 0.0)
            change_sum[index] = -np.bincount(item_of, term, minlength=items.size)
            kept = np.where(level.weighted, level.weight, 0.0)
            change_weight[index] = -np.bincount(item_of, kept, minlength=items.size)
            continue
        keys = LEVELS[number][1]
        own = 12 if "store" in keys else 11 if "state" in keys else _ITEM_LEVEL
        pair = parts[own]  # the item's part of each group: one row per (item, group)
        first = _first_rows(hierarchy.levels[own])
        item_of, group = items.codes[first], hierarchy.levels[number].codes[first]
        weight = level.weight[group] - pair.weight
        with np.errstate(over="ignore", invalid="ignore"):
            mse = np.mean((level.error[group] - pair.error) ** 2, axis=1)
            scale = _scale_of_differences(level.history, group, pair.history)
            rmsse_ = np.sqrt(mse / scale)
        weighted = (weight > total * 1e-12) & (scale > 0)  # a float residue is no weight
        before = np.where(level.weighted[group], level.weight[group], 0.0)
        after = np.where(weighted, weight, 0.0)
        change_weight[index] = np.bincount(item_of, after - before, minlength=items.size)
        terms = np.where(weighted, weight * rmsse_, 0.0)
        old = np.where(level.weighted[group], level.weight[group] * level.rmsse[group], 0.0)
        change_sum[index] = np.bincount(item_of, terms - old, minlength=items.size)
    sums = np.array([np.sum(p.weight[p.weighted] * p.rmsse[p.weighted]) for _, p in
                     sorted(parts.items())])[:, None]  # fmt: skip
    weights = np.array([np.sum(p.weight[p.weighted]) for _, p in sorted(parts.items())])[:, None]
    left = weights + change_weight
    with np.errstate(invalid="ignore", divide="ignore"):
        levels = np.where(left > total * 1e-12, (sums + change_sum) / left, np.nan)
    without = levels.mean(axis=0)  # NaN: some level would have nothing left to score
    order = [g for g in np.argsort(without, kind="stable") if without[g] < wrmsse_][:shown]
    costs = []
    for group in order:
        rows = np.flatnonzero(items.codes == group)
        units = float(forecast[rows].sum(dtype=np.float64))
        sold = float(truth[rows].sum(dtype=np.float64))
        costs.append(ItemCost(str(items.labels[group]), tuple(rows.tolist()),
                              float(without[group]), units, sold))  # fmt: skip
    return tuple(costs)


def _first_rows(level: Level) -> np.ndarray:
    """The first bottom row of each of the level's groups, in group order."""
    return np.unique(level.codes, return_index=True)[1]


def _scale_of_differences(histories: np.ndarray, rows: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """`naive_scale(histories[rows] - parts)`, a block of rows at a time: at full M5 scale
    the differences whole would be 470 MB."""
    scale = np.empty(len(rows))
    for start in range(0, len(rows), _CHUNK_ROWS):
        block = slice(start, start + _CHUNK_ROWS)
        scale[block] = naive_scale(histories[rows[block]] - parts[block])
    return scale


def _overflow_reason(
    number: int, name: str, history: np.ndarray, truth: np.ndarray, forecast: np.ndarray
) -> str:
    """Why a level's squared errors left float64: the largest value of each input, so the
    reader sees which file holds the absurd number (a forecast of 1e300 is no sales)."""
    peaks = ", ".join(
        f"{label} {float(np.max(np.abs(values))):.3g}"
        for label, values in (("history", history), ("truth", truth), ("forecast", forecast))
    )
    return (
        f"level {number} ({name}): squared errors overflow float64, so no score is "
        f"meaningful; the largest values are: {peaks}"
    )


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
    if score.unscored:
        shown = score.unscored_shown()
        lines += ["", f"left out, their history cannot scale them: {len(score.unscored)} ({shown})"]
    if score.costliest:
        lines += ["", "costliest items (the WRMSSE without each item's series)"]
        lines += [f"  {cost.described()}" for cost in score.costliest]
    return "\n".join(lines)
