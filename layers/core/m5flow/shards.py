"""Training, validation and inference shards, and the manifest that announces them.

Shards are written one group (by default one store x department) at a time by a few worker
threads, so memory stays bounded by the largest groups in flight rather than the dataset,
and both the feature arithmetic (numpy) and the encoding (pyarrow) run on every core: both
release the GIL. The manifest is written last, by the caller, and only if nothing before it
failed: its arrival is what starts training, so a partial shard set can never start a job.

Parquet shards are written without dictionary encoding and without statistics: of the
encoder's options these cost the most CPU (dictionary encoding triples the time) and buy
only size, and the files stay readable by the pyarrow 1.0 inside SageMaker's XGBoost 1.7-1
container (snappy, data page v1, plain float32 columns).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from m5flow import naming
from m5flow.features import Block, FeatureConfig, build_block, feature_names, series_facts
from m5flow.schema import HORIZON, M5Data
from m5flow.storage import Storage

PARQUET = "application/x-parquet"
CSV = "text/csv"
CONTENT_TYPES = {"parquet": PARQUET, "csv": CSV}
GROUP_COLUMNS = {"store": "store_ids", "dept": "dept_ids", "cat": "cat_ids", "state": "state_ids"}
MANIFEST_VERSION = 1
PARQUET_OPTIONS = {"compression": "snappy", "use_dictionary": False, "write_statistics": False}


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
    # Groups built and written at once (None: one per CPU this process may use). Each one
    # in flight holds its block: about 220 MB for the largest M5 store x department.
    workers: int | None = None

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
        if self.validation_days < 1 or (self.history_days is not None and self.history_days < 1):
            raise ValueError("validation_days and history_days must be at least 1")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1: {self.workers}")


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


def groups(data: M5Data, group_by: tuple[str, ...]) -> Iterator[tuple[str, np.ndarray]]:
    """(shard name, series indices) of each group, in name order."""
    columns = [getattr(data, GROUP_COLUMNS[g]) for g in group_by]
    keys = np.array(["_".join(parts) for parts in zip(*columns, strict=True)])
    for key in np.unique(keys):
        yield re.sub(r"[^A-Za-z0-9_-]+", "-", key), np.flatnonzero(keys == key)


def _float_table(columns: list[np.ndarray], names: list[str]) -> pa.Table:
    """Zero-copy float32 columns, declared non-null (NaN is a value, XGBoost's missing)."""
    schema = pa.schema([pa.field(name, pa.float32(), nullable=False) for name in names])
    return pa.Table.from_arrays([pa.array(column) for column in columns], schema=schema)


def encode_training(block: Block, names: list[str], fmt: str) -> bytes:
    """Label first, then the features, no header: what SageMaker's XGBoost trains on."""
    table = _float_table([block.label, *block.features], ["label", *names])
    sink = pa.BufferOutputStream()
    if fmt == "parquet":
        pq.write_table(table, sink, **PARQUET_OPTIONS)
    else:
        # Unquoted: SageMaker's CSV filters split on commas.
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue().to_pybytes()


def encode_inference(block: Block, ids: np.ndarray, names: list[str]) -> bytes:
    """id, day, features, no header: Batch Transform's input filter $[2:] keeps the features."""
    features = _float_table(list(block.features), names)
    table = pa.Table.from_arrays(
        [pa.array(ids[block.series]), pa.array(block.day), *features.columns],
        names=["id", "day", *names],
    )
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue()


def _group_writer(
    data: M5Data,
    storage: Storage,
    run: str,
    model: ModelShards,
    config: ShardConfig,
    feature_config: FeatureConfig,
) -> Callable[[str, np.ndarray], dict[str, ShardInfo]]:
    """The task that builds and writes one group's train, validation and inference shards."""
    facts = series_facts(data, feature_config)
    last = data.last_day
    validation_start = last - config.validation_days + 1
    train_start = 1 if config.history_days is None else validation_start - config.history_days
    ext = "parquet" if config.train_format == "parquet" else "csv"
    first_horizon, last_horizon = model.horizon_days

    def write(group: str, rows: np.ndarray) -> dict[str, ShardInfo]:
        written = {}
        for channel, first, final in (
            ("train", max(1, train_start), validation_start - 1),
            ("validation", max(1, validation_start), last),
        ):
            block = build_block(data, facts, rows, first, final, feature_config)
            if len(block) == 0:
                continue
            body = encode_training(block, model.feature_names, config.train_format)
            key = f"{channel_prefix(run, channel, model.name)}{group}.{ext}"
            storage.write(key, body)
            written[channel] = ShardInfo(key, len(block), len(body))
            del block, body  # before the next block: bounds memory
        block = build_block(
            data, facts, rows, last + first_horizon, last + last_horizon, feature_config,
            drop_before_first_sale=False,
        )  # fmt: skip
        body = encode_inference(block, data.ids, model.feature_names)
        key = f"{channel_prefix(run, 'inference', model.name)}{group}.csv"
        storage.write(key, body)
        written["inference"] = ShardInfo(key, len(block), len(body))
        return written

    return write


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
    every series for the horizon days each model forecasts. Shards are listed in group
    order whatever order the workers finish in.

    Example
    -------
    >>> manifest = write_shards(data, DiskStorage(out), "run-1", "demo", {})  # doctest: +SKIP
    """
    config = shard_config or ShardConfig()
    workers = config.workers or len(os.sched_getaffinity(0))
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
        write = _group_writer(data, storage, run, model, config, feature_config)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="shard")
        try:
            futures = [pool.submit(write, *group) for group in groups(data, config.group_by)]
            for future in futures:
                for channel, info in future.result().items():
                    getattr(model, channel).append(info)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
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
