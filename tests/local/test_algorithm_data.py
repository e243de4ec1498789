"""The local algorithm's Parquet loading gives the container's matrix, with less memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m5flow_local.sagemaker.algorithm_data import _parquet_matrix


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
