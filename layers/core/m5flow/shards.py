"""Training, validation and inference shards, and the manifest that announces them.

Shards are written one group (by default one store x department) at a time, so memory stays
bounded by the largest group rather than the dataset. The manifest is written last, and only
if nothing before it failed: its arrival is what starts training, so a partial shard set can
never start a job.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from m5flow import naming
from m5flow.features import FeatureConfig, build_block, feature_names, series_facts
from m5flow.schema import HORIZON, M5Data
from m5flow.storage import Storage

PARQUET = "application/x-parquet"
CSV = "text/csv"
CONTENT_TYPES = {"parquet": PARQUET, "csv": CSV}
GROUP_COLUMNS = {"store": "store_ids", "dept": "dept_ids", "cat": "cat_ids", "state": "state_ids"}
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ShardConfig:
    """How the shard step splits and formats its output."""

    group_by: tuple[str, ...] = ("store", "dept")
    # One model per entry: the model `h<L>` uses sales at least L days old and forecasts
    # horizon days (previous L, L]. (28,) is one model for the whole horizon; (7, 14, 21, 28)
    # lets the first weeks use more recent sales.
    min_lags: tuple[int, ...] = (28,)
    train_format: str = "parquet"  # "parquet" or "csv" (headerless, label first)
    validation_days: int = HORIZON
    # Training starts this many days before the validation window (None: from d_1).
    history_days: int | None = None

    def __post_init__(self) -> None:
        unknown = [g for g in self.group_by if g not in GROUP_COLUMNS]
        if unknown or not self.group_by:
            raise ValueError(f"group_by must use {sorted(GROUP_COLUMNS)}, got {self.group_by}")
        if not self.min_lags or list(self.min_lags) != sorted(set(self.min_lags)):
            raise ValueError(f"min_lags must be increasing: {self.min_lags}")
        if self.min_lags[-1] != HORIZON or self.min_lags[0] < 1:
            raise ValueError(f"min_lags must end at the horizon, {HORIZON}: {self.min_lags}")
        if self.train_format not in CONTENT_TYPES:
            raise ValueError(f"train_format must be one of {sorted(CONTENT_TYPES)}")


@dataclass(frozen=True)
class ShardInfo:
    key: str
    rows: int
    bytes: int


@dataclass
class ModelShards:
    """One model to train: its feature set and the shards of its three channels."""

    name: str
    min_lag: int
    horizon_days: tuple[int, int]  # first and last horizon day this model forecasts
    feature_names: list[str] = field(default_factory=list)
    train: list[ShardInfo] = field(default_factory=list)
    validation: list[ShardInfo] = field(default_factory=list)
    inference: list[ShardInfo] = field(default_factory=list)


@dataclass
class Manifest:
    run_id: str
    dataset: str
    inputs: dict[str, dict[str, str]]  # file name -> {"key", "etag"}
    last_day: int
    horizon: int
    series: int
    content_type: str
    models: list[ModelShards]
    missing_price_weeks: int = 0
    version: int = MANIFEST_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Manifest:
        raw = json.loads(body)
        models = [
            ModelShards(
                name=m["name"],
                min_lag=m["min_lag"],
                horizon_days=tuple(m["horizon_days"]),
                feature_names=m["feature_names"],
                **{c: [ShardInfo(**s) for s in m[c]] for c in ("train", "validation", "inference")},
            )
            for m in raw.pop("models")
        ]
        return cls(models=models, **raw)

    def model(self, name: str) -> ModelShards:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(f"manifest of run {self.run_id} lists no model {name!r}")


def channel_prefix(run: str, channel: str, model: str) -> str:
    """runs/<run>/<channel>/<model>/: one pure prefix per SageMaker channel."""
    return f"{naming.run_prefix(run)}{channel}/{model}/"


def _groups(data: M5Data, config: ShardConfig) -> Iterator[tuple[str, np.ndarray]]:
    keys = np.array(
        [
            "_".join(parts)
            for parts in zip(
                *(getattr(data, GROUP_COLUMNS[g]) for g in config.group_by), strict=True
            )
        ]
    )
    for key in np.unique(keys):
        yield re.sub(r"[^A-Za-z0-9_-]+", "-", key), np.flatnonzero(keys == key)


def _training_table(label: np.ndarray, features: np.ndarray, names: list[str]) -> pa.Table:
    columns = [pa.array(label)] + [pa.array(features[:, j]) for j in range(features.shape[1])]
    return pa.Table.from_arrays(columns, names=["label", *names])


def _encode(table: pa.Table, fmt: str) -> bytes:
    sink = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, sink, compression="snappy")
    else:
        # Unquoted: SageMaker's CSV filters split on commas (ids are validated comma-free).
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue()


def _write_model(
    data: M5Data,
    storage: Storage,
    run: str,
    model: ModelShards,
    config: ShardConfig,
    feature_config: FeatureConfig,
) -> None:
    """Write one model's train, validation and inference shards, one group at a time."""
    facts = series_facts(data, feature_config)
    last = data.last_day
    validation_start = last - config.validation_days + 1
    train_start = (
        1 if config.history_days is None else max(1, validation_start - config.history_days)
    )
    ext = "parquet" if config.train_format == "parquet" else "csv"
    first_horizon, last_horizon = model.horizon_days
    for group, rows in _groups(data, config):
        for channel, first, final in (
            ("train", train_start, validation_start - 1),
            ("validation", validation_start, last),
        ):
            x, y, _, _ = build_block(data, facts, rows, first, final, feature_config)
            if len(y) == 0:
                continue
            body = _encode(_training_table(y, x, model.feature_names), config.train_format)
            key = f"{channel_prefix(run, channel, model.name)}{group}.{ext}"
            storage.write(key, body)
            getattr(model, channel).append(ShardInfo(key, len(y), len(body)))
        x, _, series, day = build_block(
            data,
            facts,
            rows,
            last + first_horizon,
            last + last_horizon,
            feature_config,
            drop_before_first_sale=False,
        )
        columns = [pa.array(data.ids[series]), pa.array(day)]
        table = pa.Table.from_arrays(
            columns + [pa.array(x[:, j]) for j in range(x.shape[1])],
            names=["id", "day", *model.feature_names],
        )
        body = _encode(table, "csv")
        key = f"{channel_prefix(run, 'inference', model.name)}{group}.csv"
        storage.write(key, body)
        model.inference.append(ShardInfo(key, len(day), len(body)))


def write_shards(
    data: M5Data,
    storage: Storage,
    run: str,
    dataset: str,
    inputs: dict[str, dict[str, str]],
    *,
    shard_config: ShardConfig | None = None,
) -> Manifest:
    """Write every shard of `run` to `storage` and return the manifest describing them.

    The caller writes the manifest, last and only once (see `stages.shard`). Rows before a
    series' first sale are left out of training and validation; the inference shards hold
    every series for the horizon days each model forecasts.
    """
    config = shard_config or ShardConfig()
    models = []
    previous = 0
    for min_lag in config.min_lags:
        feature_config = FeatureConfig.for_min_lag(min_lag)
        model = ModelShards(
            name=f"h{min_lag}",
            min_lag=min_lag,
            horizon_days=(previous + 1, min_lag),
            feature_names=feature_names(feature_config),
        )
        _write_model(data, storage, run, model, config, feature_config)
        models.append(model)
        previous = min_lag
    return Manifest(
        run_id=run,
        dataset=dataset,
        inputs=inputs,
        last_day=data.last_day,
        horizon=HORIZON,
        series=len(data.ids),
        content_type=CONTENT_TYPES[config.train_format],
        models=models,
        missing_price_weeks=data.missing_price_weeks,
    )
