"""The recursive model: a lag-1 model whose own forecasts stand in for the days ahead.

The direct models (`features`) read sales at least `min_lag` days old, so one inference
pass forecasts their horizon. A model of yesterday's sales knows the level best, but day
t + 2 needs the forecast of day t + 1 as its yesterday: the recursion. A Batch Transform
predicts rows it is given and cannot feed its outputs back, and 28 transforms in a row would
take hours on SageMaker (each starts its own instance). So the recursion runs as a few
passes over the whole horizon instead: the first pass reads the last week repeated as the
days ahead, and each later pass reads the forecast of the pass before. Day k is exactly
the recursive forecast after k passes, and later days change little after the first few
(bench/accuracy/README.md: five passes score as the full recursion).

The forecast is then the mean of the direct models' and the recursive model's: over the
26 backtest windows the mean beat either alone (in-process 0.716, against 0.726 for the
recursive model and 0.740 for the direct ones; bench/accuracy/README.md).

The recursive model trains on every sales day, the last ones included, with a fixed number
of trees (`TREES`) and no validation channel. A lag-1 model learns the level from its
freshest days, and early stopping on one 28-day window was a noisy choice of trees: over the
26 backtest windows this scored 0.701 in the mean with the direct models, against 0.716
held out and early-stopped (in-process; bench/accuracy/README.md, session 19). Without a
held-out window the model has no honest backtest, so it forecasts the days after the last
sales day only, and the run's backtest is the direct models' backtest twins' (or, with
`DirectTrees` 0, the early-stopped direct models'; `stages.assemble`).

The first pass of model `r1` has the model's name, the n-th (n >= 2) `r1-p<n>`
(`naming.pass_name`): the pass's own inference prefix, transform job and predictions
prefix; the SageMaker model is the model's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from m5flow.features import Block, FeatureConfig, SeriesFacts, build_block
from m5flow.schema import HORIZON, M5Data

MIN_LAG = 1
MODEL = f"r{MIN_LAG}"
# At eta 0.1, where early stopping on the last 28 days kept 80-120 trees of the model
# (bench/accuracy/README.md, session 19: 100 and 150 scored alike). Another eta scales
# the count, and num_round caps it (`jobs.fixed_trees`).
TREES = 150


def feature_config() -> FeatureConfig:
    return FeatureConfig.for_min_lag(MIN_LAG)


def first_guess(history: np.ndarray) -> np.ndarray:
    """(series, HORIZON): the last week of `history` repeated, pass 0's days ahead."""
    return np.tile(history[:, -7:], HORIZON // 7 + 1)[:, :HORIZON].astype(np.float32)


def origins(data: M5Data, every_day: bool) -> tuple[int, ...]:
    """The origins a pass forecasts the HORIZON days after: the last sales day, and before
    it the backtest's, HORIZON days earlier, for a model that held those days out (a run
    sharded before the model trained on `every_day`)."""
    return (data.last_day,) if every_day else (data.last_day - HORIZON, data.last_day)


def first_guesses(data: M5Data) -> list[tuple[int, np.ndarray]]:
    """Pass 0's (origin, guess): the days after the last sales day, and the last week
    repeated. The model trains on every day, so it forecasts from no earlier origin."""
    return [(origin, first_guess(data.sales[:, :origin])) for origin in origins(data, True)]


def pass_blocks(
    data: M5Data,
    facts: SeriesFacts,
    rows: np.ndarray,
    guesses: Sequence[tuple[int, np.ndarray]],
    config: FeatureConfig,
) -> Iterator[Block]:
    """The inference rows of series `rows` for the HORIZON days after each (origin, guess)
    of `guesses`, the guess (all series x HORIZON) standing in for the sales after its
    origin: only its first HORIZON - 1 days, as the last day's features end the day before.

    The stand-in sales are made for `rows` alone, a group at a time: for every series they
    would be two more copies of the sales, 2 GB at the largest accepted upload. `facts`
    come from the real sales, as known at each origin, so a first sale is never a guessed
    one.
    """
    own = _facts_of(facts, rows)
    weekly = data.weekly_prices[rows]
    for origin, guess in guesses:
        ahead = guess[rows, : HORIZON - MIN_LAG].astype(np.float32)
        sales = np.concatenate([data.sales[rows, :origin], ahead], axis=1)
        known = replace(data, sales=sales, weekly_prices=weekly)
        block = build_block(
            known, own.as_of(origin), np.arange(len(rows)), origin + 1, origin + HORIZON, config,
            drop_before_first_sale=False,
        )  # fmt: skip
        if len(block):
            yield replace(block, series=rows[block.series])


def _facts_of(facts: SeriesFacts, rows: np.ndarray) -> SeriesFacts:
    """The per-series facts of `rows` alone, in their order (the days' stay whole)."""
    return replace(
        facts,
        first_sale_day=facts.first_sale_day[rows],
        codes={name: codes[rows] for name, codes in facts.codes.items()},
        mean_price=facts.mean_price[rows],
        state_row=facts.state_row[rows],
    )
