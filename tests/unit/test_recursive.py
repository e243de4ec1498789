"""The recursive model's inference rows: its own forecasts stand in for the days ahead."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m5flow import naming, recursive
from m5flow.features import build_block, feature_names, series_facts
from m5flow.schema import HORIZON, INPUT_FILES, M5Data, parse_inputs
from m5flow.shards import ShardConfig, parse_passes, write_shards
from m5flow.storage import DiskStorage
from tests.conftest import REAL_M5


@pytest.fixture(scope="module")
def data() -> M5Data:
    return parse_inputs({name: (REAL_M5 / name).read_bytes() for name in INPUT_FILES})


def test_a_pass_is_named_after_its_model() -> None:
    assert naming.pass_name("r1", 0) == "r1"
    assert naming.pass_name("r1", 1) == "r1-p2"  # its second pass, as a person counts
    assert naming.pass_of(naming.pass_name("r1", 3)) == ("r1", 3)
    assert naming.pass_of(naming.pass_name("r1", 27)) == ("r1", 27)
    assert naming.pass_of("h28") == ("h28", 0)
    assert naming.pass_of("r1-p1") == ("r1-p1", 0)  # the first pass has the model's name


def test_the_first_guess_is_the_last_week_repeated() -> None:
    history = np.arange(20, dtype=np.float32).reshape(2, 10)
    guess = recursive.first_guess(history)
    assert guess.shape == (2, HORIZON)
    assert guess[0, :7].tolist() == [3, 4, 5, 6, 7, 8, 9]
    assert (guess[:, 7:] == guess[:, :-7]).all()


def test_each_day_reads_the_guess_for_the_days_before_it(data: M5Data) -> None:
    """Day origin + 1's yesterday is the last real sale; day origin + k's is guess day k - 1,
    and a rolling mean mixes the two."""
    config = recursive.feature_config()
    names = feature_names(config)
    origin = data.last_day - HORIZON
    guess = np.full((len(data.ids), HORIZON), 1000.0, dtype=np.float32)
    guess[:, 0] = 2000.0
    rows = np.array([4, 0, 2])  # any series, in any order
    facts = series_facts(data, config)
    (block,) = recursive.pass_blocks(data, facts, rows, [(origin, guess)], config)
    frame = pd.DataFrame(block.features.T, columns=names).assign(series=block.series, day=block.day)
    first = frame[frame["day"] == origin + 1]
    assert first["lag1"].tolist() == data.sales[rows, origin - 1].tolist()  # real: day origin
    assert (frame[frame["day"] == origin + 2]["lag1"] == 2000).all()
    assert (frame[frame["day"] == origin + HORIZON]["lag1"] == 1000).all()
    week = frame[frame["day"] == origin + 3]["rolling_mean_lag1_window_size7"].to_numpy()
    real = data.sales[rows, origin - 5 : origin].sum(axis=1)  # days origin - 4 .. origin
    np.testing.assert_allclose(week, (real + 2000 + 1000) / 7, rtol=1e-6)
    # The real sales after the origin are not read: the backtest knows only the days before.
    assert sorted(frame["day"].unique()) == list(range(origin + 1, origin + HORIZON + 1))


def test_a_group_s_rows_are_those_of_every_series_built_at_once(data: M5Data) -> None:
    """The stand-in sales are made a group at a time: every feature (codes, prices, SNAP,
    age) and every row's series must be what one build over all series gives."""
    config = recursive.feature_config()
    facts = series_facts(data, config)
    origin = data.last_day
    guess = np.arange(len(data.ids) * HORIZON, dtype=np.float32).reshape(-1, HORIZON) % 7
    rows = np.array([200, 3, 150, 77])
    (block,) = recursive.pass_blocks(data, facts, rows, [(origin, guess)], config)
    whole = dataclasses.replace(data, sales=np.concatenate([data.sales, guess[:, :-1]], axis=1))
    expected = build_block(whole, facts, rows, origin + 1, origin + HORIZON, config,
                           drop_before_first_sale=False)  # fmt: skip
    np.testing.assert_array_equal(block.series, expected.series)
    np.testing.assert_array_equal(block.day, expected.day)
    np.testing.assert_array_equal(block.features, expected.features)


def test_the_shard_step_writes_pass_0_of_the_recursive_model(data: M5Data, tmp_path: Path) -> None:
    config = ShardConfig(min_lags=(28,), min_series=1, recursive_passes=3, direct_trees=None)
    manifest = write_shards(data, DiskStorage(tmp_path), "run-1", "demo", {}, shard_config=config)
    direct, model = manifest.models
    assert (model.name, model.min_lag, model.horizon_days, model.passes) == ("r1", 1, (1, 28), 3)
    assert (direct.passes, direct.trees, model.trees) == (0, None, recursive.TREES)
    # Every day trains the recursive model, the direct model's validation days too, and it
    # forecasts no backtest: it has no held-out days.
    assert not model.validation and direct.validation
    assert sum(s.rows for s in model.train) == sum(s.rows for s in direct.train + direct.validation)
    frame = pd.concat(pd.read_csv(tmp_path / s.key, header=None) for s in model.inference)
    assert sum(s.rows for s in model.inference) == len(frame) == manifest.series * HORIZON
    assert frame[1].min() == data.last_day + 1
    frame.columns = ["id", "day", *model.feature_names]
    row = {series: k for k, series in enumerate(data.ids)}
    ahead = frame[frame["day"] == data.last_day + 8]  # yesterday: guess day 7, the last sale
    last = data.sales[[row[i] for i in ahead["id"]], data.last_day - 1]
    assert ahead["lag1"].tolist() == last.tolist()


@pytest.mark.parametrize("text", ["-1", "29", "five", ""])
def test_passes_out_of_range_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="0 to 28"):
        parse_passes(text)


def test_a_failed_model_stops_every_pass_of_the_recursive_model() -> None:
    """A failed run stops its siblings' jobs; the recursive model's later passes are
    transforms of their own names, and would otherwise run on."""
    from m5flow.manifest import Manifest, ModelShards
    from m5flow.stages.failure import other_models_jobs

    models = [ModelShards("h28", 28, (1, 28)), ModelShards("r1", 1, (1, 28), passes=3)]
    manifest = Manifest("run-1", "demo", {}, 1941, 28, 10, "text/csv", models)
    training, transform = other_models_jobs(manifest, "h28")
    assert training == ["m5flow-run-1-r1"]
    assert transform == ["m5flow-run-1-r1", "m5flow-run-1-r1-p2", "m5flow-run-1-r1-p3"]
    assert other_models_jobs(manifest, "r1") == (["m5flow-run-1-h28"], ["m5flow-run-1-h28"])


@pytest.mark.parametrize(
    ("direct_trees", "backtest_days"),
    [(None, {"h28": 28, "r1": 0}), (40, {"h28": 0, "r1": 0, "h28-bt": 28})],
)
def test_backtest_rows_do_not_know_a_first_sale_after_their_origin(
    data: M5Data, tmp_path: Path, direct_trees: int | None, backtest_days: dict[str, int]
) -> None:
    """A series launched after the backtest's origin (d_1913): its backtest rows must be
    the same whenever it launched (`age` had told when); its forecast rows know. The
    backtest rows are the early-stopped model's, or its twin's (which forecasts nothing
    else); the recursive model and a model trained on every day have none."""
    rows = {}
    for launch in (1931, 1936):
        launched = dataclasses.replace(data, sales=data.sales.copy())
        launched.sales[0, : launch - 1] = 0
        launched.sales[0, launch - 1] = 3
        config = ShardConfig(
            min_lags=(28,), min_series=1, recursive_passes=1, direct_trees=direct_trees
        )
        root = tmp_path / str(launch)
        storage = DiskStorage(root)
        manifest = write_shards(launched, storage, "run-1", "demo", {}, shard_config=config)
        for model in manifest.models:
            frame = pd.concat(pd.read_csv(root / s.key, header=None) for s in model.inference)
            frame.columns = ["id", "day", *model.feature_names]
            rows[launch, model.name] = frame[frame["id"] == data.ids[0]].reset_index(drop=True)
    assert {name for _, name in rows} == set(backtest_days)
    for model, days in backtest_days.items():
        early, late = rows[1931, model], rows[1936, model]
        past = early["day"] <= data.last_day
        assert past.sum() == days
        pd.testing.assert_frame_equal(early[past], late[past])
        if not model.endswith("-bt"):  # a twin forecasts nothing after the last sales day
            assert not early[~past]["age"].equals(late[~past]["age"]), model
        else:
            assert past.all()


def test_the_report_counts_one_pass_as_one() -> None:
    from m5flow.manifest import ModelShards
    from m5flow.stages.assemble import _described, _waiting_for

    once = ModelShards("r1", 1, (1, 28), passes=1)
    assert _described(once) == "r1 (days 1-28, recursive: 1 pass)"
    assert _described(ModelShards("h28", 28, (1, 28))) == "h28 (days 1-28)"
    assert _waiting_for(ModelShards("r1", 1, (1, 28), passes=5)) == (
        "r1 (recursive: its pass 5 of 5)"
    )


def test_only_a_run_with_a_model_trained_on_every_day_names_its_backtests_models() -> None:
    """A run of direct models (RecursivePasses 0), or one sharded before the recursive
    model trained on every day, says its backtest as it always did."""
    from m5flow.manifest import Manifest, ModelShards
    from m5flow.stages.assemble import _backtest_by, _backtest_models

    direct = [ModelShards("h14", 14, (1, 14)), ModelShards("h28", 28, (15, 28))]
    for models in (direct, [*direct, ModelShards("r1", 1, (1, 28), passes=5)]):
        manifest = Manifest("run-1", "demo", {}, 1941, 28, 10, "text/csv", models)
        assert _backtest_models(manifest) is None and _backtest_by(manifest) is None
    every_day = ModelShards("r1", 1, (1, 28), passes=5, trees=150)
    manifest = Manifest("run-1", "demo", {}, 1941, 28, 10, "text/csv", [*direct, every_day])
    assert _backtest_models(manifest) == ["h14", "h28"]
    assert _backtest_by(manifest) == "the direct models alone (h14, h28; r1 trained on those days)"
