"""The recursive model: a lag-1 model whose own forecasts stand in for the days ahead.

The direct models (`features`) read sales at least `min_lag` days old, so one inference
pass forecasts their horizon. A model of yesterday's sales knows the level best, but day
t + 2 needs the forecast of day t + 1 as its yesterday: the recursion. A Batch Transform
predicts rows it is given and cannot feed its outputs back, and 28 transforms in a row would
take hours on SageMaker (each starts its own instance). So the recursion runs as a few
passes over the whole horizon instead: pass 0 reads the last week repeated as the days
ahead, and each later pass reads the pass before. Day k is exactly the recursive forecast
after pass k - 1, and later days change little after the first few passes
(bench/accuracy/README.md: five passes score as the full recursion).

The forecast is then the mean of the direct models' and the recursive model's: the two
err differently (bench/accuracy/README.md), and no setting of either alone came close.

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


def feature_config() -> FeatureConfig:
    return FeatureConfig.for_min_lag(MIN_LAG)


def first_guess(history: np.ndarray) -> np.ndarray:
    """(series, HORIZON): the last week of `history` repeated, pass 0's days ahead."""
    return np.tile(history[:, -7:], HORIZON // 7 + 1)[:, :HORIZON].astype(np.float32)


def origins(data: M5Data) -> tuple[int, int]:
    """The backtest's origin and the forecast's: the inference shards forecast the
    HORIZON days after each (the backtest's rows first), as the direct models' do."""
    return data.last_day - HORIZON, data.last_day


def stand_in(data: M5Data, origin: int, guess: np.ndarray) -> M5Data:
    """The data as of `origin`, with `guess` (all series x HORIZON) standing in for the
    sales after it: only its first HORIZON - 1 days, as the last day's features end the
    day before it. Built once per origin and pass, for every series."""
    ahead = guess[:, : HORIZON - MIN_LAG].astype(np.float32)
    return replace(data, sales=np.concatenate([data.sales[:, :origin], ahead], axis=1))


def first_stand_ins(data: M5Data) -> list[tuple[int, M5Data]]:
    """Pass 0's (origin, data): the last week before each origin repeated."""
    return [
        (origin, stand_in(data, origin, first_guess(data.sales[:, :origin])))
        for origin in origins(data)
    ]


def pass_blocks(
    stand_ins: Sequence[tuple[int, M5Data]],
    facts: SeriesFacts,
    rows: np.ndarray,
    config: FeatureConfig,
) -> Iterator[Block]:
    """The inference rows of series `rows` for the HORIZON days after each (origin, data)
    of `stand_ins` (from `stand_in`). `facts` come from the real sales, so a first sale is
    never a guessed one."""
    for origin, known in stand_ins:
        block = build_block(
            known, facts, rows, origin + 1, origin + HORIZON, config, drop_before_first_sale=False
        )
        if len(block):
            yield block
