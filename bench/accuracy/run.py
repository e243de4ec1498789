"""Forecast accuracy on real M5 data, measured through the whole local flow.

For each 28-day backtest window ending at or before d_1941, and for the final window
d_1942..d_1969, it writes the M5 files as they were known at the window's origin (plus the
window's truth as `sales_test_evaluation.csv`), runs `m5flow local run` once per
configuration, and reads the WRMSSE the pipeline itself reports in metrics.json. Seasonal
naive, the 28-day moving average and, on the final window, the real competition
submissions in ../shared/m5-real/reference are scored beside them.

    .venv/bin/python bench/accuracy/run.py [--windows 6] [--configs original,default] [--reuse]

Settings are chosen on the backtest windows only; the final window is reported, never used
to choose.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats  # installed with xgboost

from m5flow import naming, schema, scoring, submission
from m5flow.hierarchy import Hierarchy

REAL = Path(__file__).resolve().parents[3] / "shared" / "m5-real"
WORK = Path(__file__).resolve().parent / ".cache"
ORIGINAL_HYPERPARAMETERS = {
    "num_round": "3000", "early_stopping_rounds": "20", "eta": "0.1",
    "objective": "reg:tweedie", "tweedie_variance_power": "1.5", "max_depth": "5",
    "min_child_weight": "7", "subsample": "0.7", "colsample_bytree": "0.7",
    "eval_metric": "rmse", "tree_method": "auto",
}  # fmt: skip
CONFIGS: dict[str, dict[str, str]] = {
    # The blog's single lag-28 model with its hyperparameters.
    "original": {
        "ModelMinLags": "28",
        "RecursivePasses": "0",
        "DirectTrees": "0",  # early stopping, as the blog's
        "Hyperparameters": json.dumps(ORIGINAL_HYPERPARAMETERS),
    },
    # The stack's defaults, exactly as `sam deploy` ships them.
    "default": {},
    # The four direct models alone, early-stopped, without the recursive model (the
    # default until session 18).
    "direct": {"RecursivePasses": "0", "DirectTrees": "0"},
}
REFERENCES = sorted((REAL / "reference").glob("submission_*.csv"))


def write_window(data_dir: Path, origin: int) -> None:
    """The real files as known at the end of `origin`, and the next 28 days as truth."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sales = pd.read_csv(REAL / schema.SALES_FILE)
    keep = list(schema.SALES_ID_COLUMNS) + [f"d_{d}" for d in range(1, origin + 1)]
    sales[keep].to_csv(data_dir / schema.SALES_FILE, index=False)
    if origin == 1941:
        truth = pd.read_csv(REAL / naming.TRUTH_FILE)
    else:
        days = [f"d_{d}" for d in range(origin + 1, origin + 29)]
        truth = sales[["id", *days]]
    truth.to_csv(data_dir / naming.TRUTH_FILE, index=False)
    for name in (schema.CALENDAR_FILE, schema.PRICES_FILE):
        (data_dir / name).write_bytes((REAL / name).read_bytes())


def run_pipeline(data_dir: Path, out: Path, parameters: dict[str, str]) -> dict:
    command = [sys.executable, "-m", "m5flow_local.cli", "local", "run"]
    command += ["--data", str(data_dir), "--out", str(out), "--dataset", "m5-real"]
    for name, value in parameters.items():
        command += ["--parameter", f"{name}={value}"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"local run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"seconds": time.perf_counter() - started, **metrics["wrmsse"]}


@dataclass(frozen=True)
class Window:
    """One window's inputs as the pipeline scores them."""

    data: schema.M5Data
    truth: np.ndarray  # (series, 28), aligned to data.ids
    hierarchy: Hierarchy
    weights: np.ndarray  # dollar sales of the last 28 history days

    @classmethod
    def read(cls, data_dir: Path) -> Window:
        data = schema.parse_inputs({n: (data_dir / n).read_bytes() for n in schema.INPUT_FILES})
        truth_frame = pd.read_csv(data_dir / naming.TRUTH_FILE)
        days = [c for c in truth_frame.columns if c.startswith("d_")]
        truth = submission.aligned_values(naming.TRUTH_FILE, truth_frame, data.ids, days)
        weights = scoring.dollar_sales(data.sales, data.prices)
        return cls(data, truth, Hierarchy.from_data(data), weights)

    def score(self, forecast: np.ndarray, costliest: int = 0) -> scoring.Score:
        """As the pipeline's metrics.json scores a forecast of this window."""
        return scoring.wrmsse(self.data.sales, self.truth, forecast, self.hierarchy,
                              self.weights, costliest)  # fmt: skip

    def baselines(self) -> dict[str, np.ndarray]:
        """Seasonal naive and the 28-day moving average, from the window's history."""
        sales = self.data.sales
        return {
            "seasonal naive": np.tile(sales[:, -7:], 4),
            "28-day moving average": np.repeat(sales[:, -28:].mean(axis=1, keepdims=True), 28, 1),
        }

    def read_forecast(self, path: Path) -> np.ndarray:
        """A submission file's rows of these series (Kaggle's `_validation` rows ignored)."""
        steps = [f"F{k}" for k in range(1, self.truth.shape[1] + 1)]
        frame = submission.read_table(path.name, path)
        return submission.aligned_values(path.name, frame, self.data.ids, steps)

    def without(self, item: str, forecasts: dict[str, np.ndarray]) -> dict[str, float]:
        """Each forecast's WRMSSE as if `item` had not been in the slice: its series dropped,
        the hierarchy and the weights rebuilt without them."""
        keep = self.data.item_ids != item
        ids = {f"{kind}_ids": self.data.ids_of(kind)[keep] for kind in schema.ID_KINDS}
        hierarchy = Hierarchy.from_ids(**ids)
        sales = self.data.sales[keep]
        weights = scoring.dollar_sales(sales, self.data.prices[keep])
        return {
            name: scoring.wrmsse(sales, self.truth[keep], f[keep], hierarchy, weights).wrmsse
            for name, f in forecasts.items()
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument(
        "--reuse", action="store_true",
        help="keep the results of earlier runs in .cache (only if neither the code nor the "
        "configuration changed since)",
    )  # fmt: skip
    args = parser.parse_args()
    origins = [1941 - 28 * k for k in range(args.windows, 0, -1)] + [1941]
    rows = []
    final: tuple[Window, dict[str, np.ndarray]] | None = None  # for `_without_costliest`
    for origin in origins:
        data_dir = WORK / f"origin_{origin}"
        write_window(data_dir, origin)
        window = "final" if origin == 1941 else "backtest"
        inputs = Window.read(data_dir)
        forecasts: dict[str, np.ndarray | Path] = dict(inputs.baselines())
        for name, forecast in forecasts.items():
            score = inputs.score(forecast)
            rows.append({"window": window, "origin": origin, "method": name, "wrmsse": score.wrmsse,
                         "L1": score.levels[1], "L12": score.levels[12]})  # fmt: skip
        for config in args.configs.split(","):
            out = WORK / "out" / config / str(origin)
            saved = out / "row.json"
            forecasts[config] = out / naming.SUBMISSION_FILE  # read below, on the final window
            if args.reuse and saved.exists():
                rows.append(json.loads(saved.read_text()))
                continue
            result = run_pipeline(data_dir, out, CONFIGS[config])
            rows.append({"window": window, "origin": origin, "method": config,
                         "wrmsse": result["wrmsse"], "L1": result["levels"]["1"],
                         "L12": result["levels"]["12"], "seconds": result["seconds"]})  # fmt: skip
            saved.write_text(json.dumps(rows[-1]))
            print(json.dumps(rows[-1]), flush=True)
        if origin == 1941:
            for path in REFERENCES:  # read once: scored here, and again without an item below
                forecasts[path.stem] = reference = inputs.read_forecast(path)
                score = inputs.score(reference)
                rows.append({"window": window, "origin": origin, "method": path.stem,
                             "wrmsse": score.wrmsse, "L1": score.levels[1],
                             "L12": score.levels[12]})  # fmt: skip
            final = (
                inputs,
                {
                    name: inputs.read_forecast(f) if isinstance(f, Path) else f
                    for name, f in forecasts.items()
                },
            )
    table = pd.DataFrame(rows)
    backtest = table[table["window"] == "backtest"].pivot_table(
        index="method", columns="origin", values="wrmsse"
    )
    backtest["mean"] = backtest.mean(axis=1)
    scores = table[table["window"] == "final"].set_index("method")[["wrmsse", "L1", "L12"]]
    pd.set_option("display.width", 200)
    print("\nBacktest WRMSSE by forecast origin (windows of 28 days after it):")
    print(backtest.round(3).to_string())
    print("\nFinal window d_1942..d_1969 (reported, never used to choose):")
    print(scores.round(3).to_string())
    assert final is not None  # the last origin is the final window's
    print(_without_costliest(*final, args.configs.split(",")))
    if {"original", "default"} <= set(backtest.index):
        print("\n" + _gain(backtest.drop(columns="mean")))
    if "default" in scores.index:
        print(f"default, final window WRMSSE: {scores.loc['default', 'wrmsse']:.3f} (target 0.94)")
    return 0


def _without_costliest(inputs: Window, forecasts: dict[str, np.ndarray], configs: list[str]) -> str:
    """Every method's final-window WRMSSE without the item that cost the default (or the
    first configuration) most. On 290 series one item's surprise can outweigh every
    difference between methods: FOODS_3_702 sold out in the window's last two weeks."""
    judged = "default" if "default" in configs else configs[0]
    costs = inputs.score(forecasts[judged], costliest=1).costliest
    if not costs:
        return f"\nNo item's forecast cost {judged}'s final-window score."
    cost = costs[0]
    without = pd.Series(inputs.without(cost.item, forecasts), name=f"without {cost.item}")
    return (
        f"\nThe item whose forecast cost {judged} most on the final window: "
        f"{cost.described()}.\nEach method's final-window WRMSSE without its "
        f"{len(cost.rows)} series:\n{without.round(3).to_string()}"
    )


def _gain(backtest: pd.DataFrame) -> str:
    """The default's gain over the original on the mean backtest WRMSSE, over the windows
    both scored, with a 95% interval: one window's score moves by 0.05-0.1 with a setting,
    so the mean alone says little.

    The gain is a ratio of means, 1 - mean(default) / mean(original); its standard error
    comes from the residuals (original - default) - gain * original (the delta method, t
    with n - 1 degrees of freedom). Neighbouring windows share history and season, so the
    interval is, if anything, too narrow.
    """
    paired = backtest.loc[["original", "default"]].dropna(axis=1)
    original, default = paired.loc["original"], paired.loc["default"]
    n = len(original)
    if n == 0:
        return "default vs original: no window that both scored"
    gain = 1 - default.mean() / original.mean()
    line = f"default vs original, mean backtest WRMSSE: {gain:+.1%} better (target +10%)"
    if n < 2:
        return f"{line} on 1 window"
    residuals = (original - default) - gain * original
    half = stats.t.ppf(0.975, n - 1) * residuals.std(ddof=1) / (n**0.5 * original.mean())
    return f"{line}, 95% interval {gain - half:+.1%} to {gain + half:+.1%} over {n} windows"


if __name__ == "__main__":
    sys.exit(main())
