"""The 12 aggregation levels of the M5 hierarchy, and sums of bottom series up to them.

M5 scores a forecast not only per item and store but on every aggregate a planner looks at:
the total, each state, store, category, department, their crossings and each item. A level
groups the bottom series (item x store) by some of their id columns; only the series given
are grouped, so a slice of M5 has a hierarchy of its own.

Levels are summed from the finest level already summed that nests them (item x state from
the bottom, item from item x state, ...), so at full M5 scale only two passes touch all
30,490 rows, and no dense aggregation matrix is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from m5flow import schema
from m5flow.exceptions import ScoringError

# Level number -> (name, the id columns it groups by); level 12 is M5's bottom (item x store).
LEVELS: dict[int, tuple[str, tuple[str, ...]]] = {
    1: ("total", ()), 2: ("state", ("state",)), 3: ("store", ("store",)),
    4: ("category", ("cat",)), 5: ("department", ("dept",)),
    6: ("state x category", ("state", "cat")), 7: ("state x department", ("state", "dept")),
    8: ("store x category", ("store", "cat")), 9: ("store x department", ("store", "dept")),
    10: ("item", ("item",)), 11: ("item x state", ("item", "state")),
    12: ("item x store", ("item", "store")),
}  # fmt: skip
_NARROW = 256  # columns up to which rows are summed by one bincount, not group by group


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
    """Sum the rows of `values` by group code, one row per group: float64, or `values`
    itself when every row is its own group, in order."""
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
            zip(schema.ID_KINDS, (item_ids, dept_ids, cat_ids, store_ids, state_ids), strict=True)
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
        return cls.from_ids(**{f"{kind}_ids": data.ids_of(kind) for kind in schema.ID_KINDS})

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
