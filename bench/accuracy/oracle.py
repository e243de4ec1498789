"""How good could a forecast get if it knew each week's true sales? An upper bound.

Reads the forecasts `explore.py` saved (EXPLORE_SAVE) and rescales them, week by week, so
that the total (or each store's, or each item's) weekly sales match the truth exactly, then
scores them. No real forecast knows this; it measures how much of the error is the weekly
level and how much the shape within it, and so how far any level correction could go.

    EXPLORE_SAVE=dir python bench/accuracy/explore.py --configs groups_tw11 --final
    python bench/accuracy/oracle.py dir groups_tw11
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import explore
import numpy as np

WEEK = 7


def weekly_oracle(forecast: np.ndarray, truth: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """`forecast` scaled so each group's sales in each week equal the truth's."""
    out = forecast.copy()
    for group in np.unique(groups):
        rows = groups == group
        for start in range(0, forecast.shape[1], WEEK):
            days = slice(start, start + WEEK)
            predicted = forecast[rows, days].sum()
            if predicted > 0:
                out[rows, days] *= truth[rows, days].sum() / predicted
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("saved", type=Path, help="the EXPLORE_SAVE directory")
    parser.add_argument("config", help="the configuration whose forecasts to read")
    args = parser.parse_args()
    data, final_truth = explore.with_truth(explore.load_real())
    groups = {
        "total": np.zeros(len(data.ids), dtype=int),
        "store": np.unique(data.store_ids, return_inverse=True)[1],
        "item": np.unique(data.item_ids, return_inverse=True)[1],
    }
    rows: dict[int, dict[str, float]] = {}
    for path in sorted(args.saved.glob(f"{args.config}_[0-9]*.npz")):
        origin = int(path.stem.rsplit("_", 1)[-1])
        forecast = np.load(path)["forecast"]
        truth = explore.window_truth(data, final_truth, origin)

        def score(prediction: np.ndarray, origin=origin, truth=truth) -> float:
            return explore.score(data, origin, truth, prediction)["wrmsse"]

        rows[origin] = {"forecast": score(forecast)} | {
            f"true weekly {name}": score(weekly_oracle(forecast, truth, members))
            for name, members in groups.items()
        }
        print(origin, "  ".join(f"{k} {v:.3f}" for k, v in rows[origin].items()), flush=True)
    backtests = [o for o in rows if o != data.last_day]
    if backtests:
        means = {k: np.mean([rows[o][k] for o in backtests]) for k in rows[backtests[0]]}
        print("backtest mean", "  ".join(f"{k} {v:.3f}" for k, v in means.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
