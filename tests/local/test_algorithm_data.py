"""The local algorithm's Parquet loading gives the container's matrix, with less memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m5flow_local.sagemaker.algorithm_data import (
    PARQUET,
    _parquet_matrix,
    get_dmatrix,
    quantile_bins,
)


def _container_matrix(path: Path) -> np.ndarray:
    """sagemaker-xgboost-container 1.7-1, data_utils._get_parquet_dmatrix_file_mode."""
    return pq.read_table(path).to_pandas().to_numpy()


@pytest.mark.parametrize(
    "columns",
    [
        {
            "label": pa.array([1.0, 0.0, None], pa.float32()),
            "x": pa.array([0.5, None, 2.0], pa.float32()),
        },
        {
            "label": pa.array([1.0, 0.0, 3.0], pa.float64()),
            "x": pa.array([0.5, 1.5, 2.0], pa.float32()),
        },
        {"label": pa.array([1, 0, None], pa.int64()), "x": pa.array([0.5, 1.5, 2.0], pa.float32())},
        {"label": pa.array([True, False, True]), "x": pa.array([1, 2, 3], pa.int32())},
    ],
    ids=["float32 with nulls", "float64 and float32", "int64 with a null", "bool and int"],
)
def test_parquet_matrix_equals_the_containers(tmp_path: Path, columns: dict[str, pa.Array]) -> None:
    """Same dtype, values (NaN where null) and column-major layout, in several row groups
    and files, so XGBoost builds the same DMatrix and trains the same model."""
    folder = tmp_path / "train"
    folder.mkdir()
    table = pa.table(columns)
    pq.write_table(table, folder / "a.parquet", row_group_size=2)
    pq.write_table(table, folder / "b.parquet", row_group_size=2)
    expected = _container_matrix(folder)
    got = _parquet_matrix(str(folder))
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape == (6, 2)
    np.testing.assert_array_equal(got, expected)  # NaN equals NaN here
    assert got.flags.f_contiguous == expected.flags.f_contiguous


def test_a_file_written_by_pandas_is_read_as_pandas_reads_it(tmp_path: Path) -> None:
    """pandas stores its index and column types in the schema; the container's to_pandas()
    honours them, so a float index is not a feature and a nullable Float64 stays object."""
    import pandas as pd

    frame = pd.DataFrame({"label": [1.0, 2.0, 3.0], "x": [0.5, 1.5, 2.5]}, index=[0.1, 0.2, 0.3])
    frame.to_parquet(tmp_path / "indexed.parquet")
    expected = _container_matrix(tmp_path / "indexed.parquet")
    got = _parquet_matrix(str(tmp_path / "indexed.parquet"))
    assert got.shape == expected.shape == (3, 2)
    np.testing.assert_array_equal(got, expected)
    nullable = pd.DataFrame({"label": pd.array([1.0, None], dtype="Float64"), "x": [1.0, 2.0]})
    nullable.to_parquet(tmp_path / "nullable.parquet")
    assert _parquet_matrix(str(tmp_path / "nullable.parquet")).dtype == object


def test_files_that_differ_take_the_containers_conversion(tmp_path: Path) -> None:
    """read_table unifies columns by name; copying files by position would not."""
    folder = tmp_path / "train"
    folder.mkdir()
    pq.write_table(
        pa.table({"label": pa.array([1.0], pa.float32()), "x": pa.array([2.0], pa.float32())}),
        folder / "a.parquet",
    )
    pq.write_table(
        pa.table({"x": pa.array([4.0], pa.float32()), "label": pa.array([3.0], pa.float32())}),
        folder / "b.parquet",
    )
    np.testing.assert_array_equal(_parquet_matrix(str(folder)), _container_matrix(folder))


def test_quantile_bins_grow_the_dmatrixs_trees_split_for_split(tmp_path: Path) -> None:
    """One host, `hist` trees: the QuantileDMatrix (a byte a cell) trains the very model the
    container's DMatrix (8 bytes a cell) does, early stopping, subsampling and NaNs included;
    and on any number of threads (the hosts training at a time share the cores: `capacity`)."""
    import xgboost as xgb

    rng = np.random.default_rng(5)
    features = rng.gamma(2.0, 3.0, size=(4000, 6)).astype(np.float32)
    features[rng.random(features.shape) < 0.1] = np.nan
    label = rng.poisson(np.nan_to_num(features[:, 0]) / 3).astype(np.float32)
    for name, rows in (("train", slice(0, 3000)), ("validation", slice(3000, None))):
        (tmp_path / name).mkdir()
        columns = {"label": label[rows], **{f"f{i}": features[rows, i] for i in range(6)}}
        pq.write_table(pa.table(columns), tmp_path / name / "part-0.parquet", row_group_size=700)
    validation = get_dmatrix(str(tmp_path / "validation"), PARQUET, tmp_path / "tmp-v")
    params = {"objective": "reg:tweedie", "tweedie_variance_power": 1.1, "tree_method": "hist",
              "max_bin": 64, "subsample": 0.7, "colsample_bytree": 0.7, "max_depth": 4,
              "eval_metric": "poisson-nloglik"}  # fmt: skip
    models = []
    for bins, threads in ((None, 1), (64, 1), (None, 3), (64, 2)):
        work = tmp_path / f"tmp-{bins}-{threads}"
        train = get_dmatrix(str(tmp_path / "train"), PARQUET, work, quantile_bins=bins)
        assert isinstance(train, xgb.QuantileDMatrix) == (bins is not None)
        evals = [(train, "train"), (validation, "validation")]
        booster = xgb.train(
            {**params, "nthread": threads},
            train,
            500,
            evals=evals,
            early_stopping_rounds=10,
            verbose_eval=False,
        )
        models.append(booster.save_raw("json"))
    assert 10 < booster.num_boosted_rounds() < 500
    assert all(model == models[0] for model in models[1:])


@pytest.mark.parametrize(
    ("hyperparameters", "hosts", "bins"),
    [
        ({"tree_method": "hist"}, 1, 256),
        ({"tree_method": "hist", "max_bin": "64"}, 1, 64),  # as CreateTrainingJob gives it
        ({"tree_method": "hist", "max_bin": 64}, 1, 64),  # as validation types it
        ({"tree_method": "hist"}, 2, None),  # hosts sketch together while training
        ({"tree_method": "approx"}, 1, None),
        ({}, 1, None),
        ({"tree_method": "hist", "max_bin": "many"}, 1, None),  # validation refuses it
        ({"tree_method": "hist", "max_bin": "0"}, 1, None),  # fails at training, as there
        ({"tree_method": "hist", "booster": "dart"}, 1, 256),
        ({"tree_method": "hist", "booster": "gblinear"}, 1, None),
        ({"tree_method": "hist", "updater": "grow_colmaker,prune"}, 1, None),
        ({"tree_method": "hist", "process_type": "update"}, 1, None),
    ],
)
def test_quantile_bins_only_for_one_host_growing_hist_trees(
    hyperparameters: dict[str, object], hosts: int, bins: int | None
) -> None:
    assert quantile_bins(hyperparameters, hosts) == bins
