"""Shards on disk: what the manifest lists is what was written, in every format and split."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m5flow.features import FeatureConfig, build_block, series_facts
from m5flow.manifest import PARQUET, Manifest
from m5flow.schema import INPUT_FILES, M5Data, parse_inputs
from m5flow.shards import ShardConfig, groups, nothing_to_train, write_shards
from m5flow.storage import DiskStorage
from tests.conftest import REAL_M5
from tests.unit.test_schema import tiny_files

INPUTS = {
    name: {"key": f"raw/demo/{name}", "etag": f"etag-{k}"} for k, name in enumerate(INPUT_FILES)
}


@pytest.fixture(scope="module")
def data() -> M5Data:
    return parse_inputs({name: (REAL_M5 / name).read_bytes() for name in INPUT_FILES})


def shard(data: M5Data, root: Path, **config) -> tuple[Manifest, DiskStorage]:
    """Shard with one early-stopped model (h28), one shard per group, unless `config` says
    otherwise."""
    storage = DiskStorage(root)
    config = {"min_lags": (28,), "min_series": 1, "recursive_passes": 0, "direct_trees": None,
              **config}  # fmt: skip
    manifest = write_shards(
        data, storage, "run-1", "demo", INPUTS, shard_config=ShardConfig(**config)
    )
    return manifest, storage


def test_default_is_one_model_per_horizon_week_and_the_recursive_one(
    data: M5Data, tmp_path: Path
) -> None:
    manifest = write_shards(data, DiskStorage(tmp_path), "run-1", "demo", INPUTS)
    described = [(m.name, m.min_lag, m.horizon_days, m.passes, m.trees, m.backtest)
                 for m in manifest.models]  # fmt: skip
    assert described == [
        ("h7", 7, (1, 7), 0, 150, False), ("h14", 14, (8, 14), 0, 150, False),
        ("h21", 21, (15, 21), 0, 150, False), ("h28", 28, (22, 28), 0, 150, False),
        ("r1", 1, (1, 28), 5, 150, False),
        ("h7-bt", 7, (1, 7), 0, 150, True), ("h14-bt", 14, (8, 14), 0, 150, True),
        ("h21-bt", 21, (15, 21), 0, 150, True), ("h28-bt", 28, (22, 28), 0, 150, True),
    ]  # fmt: skip
    for model in manifest.models:
        assert not model.validation  # nothing early-stops
        if model.passes:
            continue
        assert f"lag{model.min_lag}" in model.feature_names
        assert not any(f"lag{lag}" in model.feature_names for lag in range(1, model.min_lag))
        assert sum(s.rows for s in model.inference) == manifest.series * 7  # one origin each


def test_manifest_lists_exactly_what_was_written(data: M5Data, tmp_path: Path) -> None:
    manifest, storage = shard(data, tmp_path)
    (model,) = manifest.models
    listed = [s for channel in (model.train, model.validation, model.inference) for s in channel]
    assert sorted(s.key for s in listed) == storage.list("runs/run-1/")  # and no manifest
    for info in listed:
        assert (tmp_path / info.key).stat().st_size == info.bytes
    assert manifest.inputs == INPUTS and manifest.content_type == PARQUET
    assert (manifest.last_day, manifest.horizon, manifest.series) == (1941, 28, 290)
    assert manifest.missing_price_weeks == 2240
    assert (model.name, model.min_lag, model.horizon_days) == ("h28", 28, (1, 28))
    names = sorted({f"{s}_{d}" for s, d in zip(data.store_ids, data.dept_ids, strict=True)})
    assert [Path(s.key).stem for s in model.train] == names
    assert all(s.key.startswith("runs/run-1/train/h28/") for s in model.train)
    assert sum(s.rows for s in model.inference) == 290 * 28 * 2
    assert Manifest.from_json(manifest.to_json()) == manifest
    newer = json.loads(manifest.to_json()) | {"a_field_of_a_later_m5flow": 1}
    assert Manifest.from_json(json.dumps(newer).encode()) == manifest
    other = json.loads(manifest.to_json()) | {"version": manifest.version + 1}
    with pytest.raises(
        ValueError, match=r"manifest version 5: this m5flow reads versions 1, 2, 3, 4;"
    ):
        Manifest.from_json(json.dumps(other).encode())
    # A run from before the recursive model (version 1, no `passes`): direct models only.
    older = json.loads(manifest.to_json()) | {"version": 1}
    for model in older["models"]:
        del model["passes"]
    assert [m.passes for m in Manifest.from_json(json.dumps(older).encode()).models] == [0]
    # Version 2, before `trees`: every model early-stopped.
    before_trees = json.loads(manifest.to_json()) | {"version": 2}
    for model in before_trees["models"]:
        del model["trees"]
    assert [m.trees for m in Manifest.from_json(json.dumps(before_trees).encode()).models] == [None]
    # Version 3, before `backtest`: no model is a backtest twin.
    before_twins = json.loads(manifest.to_json()) | {"version": 3}
    for model in before_twins["models"]:
        del model["backtest"]
    twins = [m.backtest for m in Manifest.from_json(json.dumps(before_twins).encode()).models]
    assert twins == [False]


@pytest.mark.parametrize(("text", "trees"), [("150", 150), ("0", None), ("7", 7)])
def test_the_stacks_direct_trees_zero_is_early_stopping(text: str, trees: int | None) -> None:
    env = {"SHARD_FORMAT": "csv", "MODEL_MIN_LAGS": "28", "RECURSIVE_PASSES": "0"}
    assert ShardConfig.from_env(env | {"DIRECT_TREES": text}).direct_trees == trees


@pytest.mark.parametrize(
    ("direct_trees", "says"),
    [(150, "the last 28 days are the backtest's; those models train on the days before them"),
     (None, "the last 28 days validate the direct models; those models train on the days")],
)  # fmt: skip
def test_data_without_a_sale_before_the_held_out_days_is_refused(
    data: M5Data, direct_trees: int | None, says: str
) -> None:
    silent = replace(data, sales=data.sales.copy())
    silent.sales[:, : data.last_day - 10] = 0
    (reason,) = nothing_to_train(silent, ShardConfig(direct_trees=direct_trees))
    assert "d_1..d_1913" in reason and "some sales before d_1914" in reason
    assert says in reason


def test_a_direct_model_on_every_day_and_its_backtest_twin(data: M5Data, tmp_path: Path) -> None:
    """The twin trains on exactly the early-stopped model's training rows and forecasts
    exactly its backtest rows; the model itself trains on those and the validation rows,
    and forecasts the days after the last sales day alone."""
    early, _ = shard(data, tmp_path / "early", group_by=("state",))
    twinned, _ = shard(data, tmp_path / "twins", group_by=("state",), direct_trees=40)
    (stopped,) = early.models
    model, twin = twinned.models
    assert (model.name, model.trees, model.backtest) == ("h28", 40, False)
    assert (twin.name, twin.trees, twin.backtest) == ("h28-bt", 40, True)
    assert not model.validation and not twin.validation

    def rows(shards: list, root: str) -> pd.DataFrame:
        return pd.concat(
            pq.read_table(tmp_path / root / s.key).to_pandas() if s.key.endswith(".parquet")
            else pd.read_csv(tmp_path / root / s.key, header=None)
            for s in shards
        ).reset_index(drop=True)  # fmt: skip

    pd.testing.assert_frame_equal(rows(twin.train, "twins"),
                                  rows(stopped.train, "early"))  # fmt: skip
    every_day = rows(model.train, "twins")
    columns = list(every_day.columns)
    pd.testing.assert_frame_equal(  # the same rows, though shards group them otherwise
        every_day.sort_values(columns).reset_index(drop=True),
        rows(stopped.train + stopped.validation, "early").sort_values(columns)
        .reset_index(drop=True),
    )  # fmt: skip
    inference = rows(stopped.inference, "early")
    backtest = inference[inference[1] <= 1941].reset_index(drop=True)
    pd.testing.assert_frame_equal(rows(twin.inference, "twins"), backtest)
    future = rows(model.inference, "twins")
    assert sorted(future[1].unique()) == list(range(1942, 1970))
    assert len(future) == 290 * 28


def test_parquet_shards_hold_the_block_label_first(data: M5Data, tmp_path: Path) -> None:
    manifest, _ = shard(data, tmp_path)
    (model,) = manifest.models
    config = FeatureConfig()
    facts = series_facts(data, config)
    for info, channel, (first, last) in (
        (model.train[3], "train", (1, 1913)),
        (model.validation[3], "validation", (1914, 1941)),
    ):
        table = pq.read_table(tmp_path / info.key)
        assert table.column_names == ["label", *model.feature_names]
        assert all(field.type == pa.float32() for field in table.schema)
        name = Path(info.key).stem
        rows = dict(groups(data, ("store", "dept")))[name]
        block = build_block(data, facts, rows, first, last, config)
        assert table.num_rows == info.rows == len(block), channel
        np.testing.assert_array_equal(table.column("label").to_numpy(), block.label)
        for j, feature in enumerate(model.feature_names):
            np.testing.assert_array_equal(table.column(feature).to_numpy(), block.features[j])


def test_csv_training_shards_are_headerless_numbers_label_first(
    data: M5Data, tmp_path: Path
) -> None:
    manifest, _ = shard(data, tmp_path, train_format="csv", history_days=28)
    (model,) = manifest.models
    assert manifest.content_type == "text/csv"
    info = model.validation[0]
    assert info.key.endswith(".csv")
    frame = pd.read_csv(tmp_path / info.key, header=None)
    assert frame.shape == (info.rows, 1 + len(model.feature_names))
    assert all(dtype.kind == "f" or dtype.kind == "i" for dtype in frame.dtypes)
    parquet, _ = shard(data, tmp_path / "p", history_days=28)
    expected = pq.read_table(tmp_path / "p" / parquet.models[0].validation[0].key).to_pandas()
    np.testing.assert_allclose(frame.to_numpy(), expected.to_numpy(), rtol=1e-6)


def test_inference_shards_hold_every_series_for_the_horizon(data: M5Data, tmp_path: Path) -> None:
    manifest, _ = shard(data, tmp_path)
    (model,) = manifest.models
    frames = [pd.read_csv(tmp_path / s.key, header=None) for s in model.inference]
    frame = pd.concat(frames)
    assert frame.shape[1] == 2 + len(model.feature_names)
    assert sorted(frame[0].unique()) == sorted(data.ids)
    assert sorted(frame[1].unique()) == list(range(1914, 1970))
    assert frame.groupby(0).size().eq(56).all()


def test_backtest_rows_know_only_the_sales_before_the_backtest_origin(
    data: M5Data, tmp_path: Path
) -> None:
    """Sales after d_1913 changed: the backtest rows (d_1914..d_1941) stay the same."""
    changed = replace(data, sales=data.sales.copy())
    changed.sales[:, 1913:] += 5
    features = {}
    for name, source in (("same", data), ("changed", changed)):
        manifest, _ = shard(source, tmp_path / name, min_lags=(7, 28), group_by=("state",))
        for model in manifest.models:
            frame = pd.concat(pd.read_csv(tmp_path / name / s.key, header=None)
                              for s in model.inference)  # fmt: skip
            features[name, model.name] = frame
    for model in ("h7", "h28"):
        same, moved = features["same", model], features["changed", model]
        past = same[1] <= 1941
        assert sorted(same[1][past].unique()) == (
            list(range(1914, 1921)) if model == "h7" else list(range(1921, 1942))
        )
        pd.testing.assert_frame_equal(same[past], moved[past])
        assert not same[~past].equals(moved[~past])


def test_one_model_per_min_lag(data: M5Data, tmp_path: Path) -> None:
    manifest, _ = shard(data, tmp_path, min_lags=(7, 14, 28), group_by=("state",))
    assert [(m.name, m.min_lag, m.horizon_days) for m in manifest.models] == [
        ("h7", 7, (1, 7)), ("h14", 14, (8, 14)), ("h28", 28, (15, 28)),
    ]  # fmt: skip
    for model in manifest.models:
        assert model.feature_names[0] == f"lag{model.min_lag}"
        assert [Path(s.key).stem for s in model.train] == ["CA", "TX", "WI"]
        days = pd.concat(pd.read_csv(tmp_path / s.key, header=None) for s in model.inference)[1]
        first, last = model.horizon_days
        backtest = list(range(1913 + first, 1913 + last + 1))
        assert sorted(days.unique()) == backtest + list(range(1941 + first, 1941 + last + 1))


@pytest.mark.parametrize(("group_by", "count"), [(("store",), 10), (("cat", "state"), 9)])
def test_groups_are_configurable(data: M5Data, tmp_path: Path, group_by, count: int) -> None:
    manifest, _ = shard(data, tmp_path, group_by=group_by)
    (model,) = manifest.models
    assert len(model.train) == len(model.validation) == len(model.inference) == count
    assert sum(s.rows for s in model.inference) == 290 * 28 * 2


def test_history_days_limits_training_rows(data: M5Data, tmp_path: Path) -> None:
    manifest, _ = shard(data, tmp_path, history_days=56)
    # The 56 days before the validation window, d_1858..d_1913, less each series' days
    # before its first sale (rows that are never trained on).
    first_sale = (data.sales > 0).argmax(axis=1) + 1
    expected = int(np.clip(1913 - np.maximum(first_sale, 1858) + 1, 0, 56).sum())
    assert sum(s.rows for s in manifest.models[0].train) == expected


def test_workers_do_not_change_a_byte(data: M5Data, tmp_path: Path) -> None:
    one, _ = shard(data, tmp_path / "one", workers=1)
    two, _ = shard(data, tmp_path / "two", workers=3)
    assert one.to_json() == two.to_json()
    for info in one.models[0].train + one.models[0].validation + one.models[0].inference:
        assert (tmp_path / "one" / info.key).read_bytes() == (
            tmp_path / "two" / info.key
        ).read_bytes()


def test_the_order_of_the_sales_rows_changes_no_byte(data: M5Data, tmp_path: Path) -> None:
    """The training job subsamples rows by position: the same series in another order
    must make the same shards, or a re-sorted file would get another forecast."""
    header, *rows = (REAL_M5 / INPUT_FILES[0]).read_bytes().splitlines(keepends=True)
    files = {name: (REAL_M5 / name).read_bytes() for name in INPUT_FILES}
    files[INPUT_FILES[0]] = header + b"".join(reversed(rows))
    reordered = parse_inputs(files)
    assert list(reordered.ids) == list(reversed(data.ids))
    one, _ = shard(data, tmp_path / "one")
    two, _ = shard(reordered, tmp_path / "two")
    assert one.models == two.models  # the notices name the first series in file order
    for info in one.models[0].train + one.models[0].validation + one.models[0].inference:
        assert (tmp_path / "one" / info.key).read_bytes() == (
            tmp_path / "two" / info.key
        ).read_bytes()


def test_a_failing_write_is_raised_from_its_worker(data: M5Data, tmp_path: Path) -> None:
    class Full(DiskStorage):
        def write(self, key: str, body: bytes, **conditions) -> str:
            if "FOODS_3" in key:
                raise OSError("No space left on device")
            return super().write(key, body, **conditions)

    with pytest.raises(OSError, match="No space left"):
        write_shards(
            data, Full(tmp_path), "run-1", "demo", INPUTS, shard_config=ShardConfig(workers=2)
        )


def test_tiny_upload_shards(tmp_path: Path) -> None:
    data = parse_inputs(tiny_files())
    manifest, _ = shard(data, tmp_path)
    (model,) = manifest.models
    assert [Path(s.key).stem for s in model.train] == ["CA_1_FOODS_3", "CA_1_HOBBIES_1",
                                                     "TX_1_FOODS_3", "TX_1_HOBBIES_1"]  # fmt: skip
    table = pq.read_table(io.BytesIO((tmp_path / model.train[0].key).read_bytes()))
    assert table.column("wday").to_pylist()[:3] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("kwargs", "refusal"),
    [({"group_by": ("aisle",)},
      "group_by must use ('item', 'dept', 'cat', 'store', 'state'), got ('aisle',)"),
     ({"group_by": ()}, "group_by must use ('item', 'dept', 'cat', 'store', 'state'), got ()"),
     ({"min_lags": (7, 14)}, "min_lags must end at the horizon, 28: (7, 14)"),
     ({"min_lags": (14, 7, 28)}, "min_lags must be increasing: (14, 7, 28)"),
     ({"min_lags": (7, 7, 28)}, "min_lags must be increasing: (7, 7, 28)"),
     ({"min_lags": (0, 28)}, "min_lags must be at least 1 (a day old): (0, 28)"),
     ({"min_lags": ()}, "min_lags must name at least one model, ending at 28"),
     ({"train_format": "json"}, "train_format must be one of ['csv', 'parquet']"),
     ({"validation_days": 27}, "validation_days must be at least the horizon, 28"),
     ({"history_days": 0}, "history_days must be at least 1"),
     ({"min_series": 0}, "min_series must be at least 1: 0"),
     ({"workers": 0}, "workers must be at least 1: 0")],
)  # fmt: skip
def test_config_is_checked(kwargs: dict, refusal: str) -> None:
    with pytest.raises(ValueError, match=re.escape(refusal)):
        ShardConfig(**kwargs)


def test_groups_whose_safe_names_meet_stay_apart() -> None:
    files = tiny_files()
    frame = pd.read_csv(io.BytesIO(files["sales_train_evaluation.csv"]))
    hobbies = frame["dept_id"] == "HOBBIES_1"
    frame.loc[hobbies, "dept_id"] = "FOODS.3"  # made safe, it would read FOODS-3
    frame.loc[~hobbies, "dept_id"] = "FOODS-3"
    files["sales_train_evaluation.csv"] = frame.to_csv(index=False).encode()
    named = list(groups(parse_inputs(files), ("dept",)))
    assert len({name for name, _ in named}) == 2
    assert sorted(np.concatenate([rows for _, rows in named])) == list(range(len(frame)))


def test_small_groups_are_merged_up_to_min_series(data: M5Data) -> None:
    merged = list(groups(data, ("store", "dept"), min_series=100))
    sizes = [len(rows) for _, rows in merged]
    assert all(size >= 100 for size in sizes[:-1]) and sum(sizes) == len(data.ids)
    assert np.array_equal(np.sort(np.concatenate([r for _, r in merged])), np.arange(len(data.ids)))
    assert merged[0][0].startswith("CA_1_FOODS_1__")
