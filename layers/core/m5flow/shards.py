"""Training, validation and inference shards, and the manifest (`m5flow.manifest`) listing them.

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

import hashlib
import io
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from m5flow import naming, recursive
from m5flow.csvinput import problem
from m5flow.features import Block, FeatureConfig, build_block, feature_names, series_facts
from m5flow.manifest import CSV, PARQUET, Manifest, ModelShards, ShardInfo
from m5flow.schema import HORIZON, ID_KINDS, M5Data
from m5flow.storage import Storage
from m5flow.wording import cut

CONTENT_TYPES = {"parquet": PARQUET, "csv": CSV}
# Over 26 backtest windows the direct models trained on every day with 150 trees (at eta
# 0.1) beat them early-stopped on the last 28 days by 6.4% (in-process), and through the
# flow the forecast gained 1.3%: 11.0% better than the original (bench/accuracy/README.md,
# session 20).
DIRECT_TREES = 150
MOST_DIRECT_TREES = 99_999  # the template's pattern: m5flow.json is held to the same
_SERIES_PER_BLOCK = 256  # series built and encoded at once: about 70 MB of training block
PARQUET_OPTIONS = {
    "compression": "snappy",
    "use_dictionary": False,
    "write_statistics": False,
    "write_batch_size": 1 << 16,  # rows handed to the encoder at once: 1,024 costs 20% more
}


@dataclass(frozen=True)
class ShardConfig:
    """How the shard step splits and formats its output."""

    group_by: tuple[str, ...] = ("store", "dept")
    # Smaller groups are merged into one shard (see `groups`); full M5 groups hold ~435.
    min_series: int = 100
    # One model per entry: the model `h<L>` uses sales at least L days old and forecasts
    # horizon days (previous L, L]. (28,) is one model for the whole horizon; (7, 14, 21, 28)
    # lets the first weeks use more recent sales.
    min_lags: tuple[int, ...] = (7, 14, 21, 28)
    train_format: str = "parquet"  # "parquet" or "csv" (headerless, label first)
    validation_days: int = HORIZON
    # Training starts this many days before the validation window (None: from d_1).
    history_days: int | None = None
    # Groups built and written at once (None: one per CPU this process may use). Each one
    # in flight holds a block of 256 series (70 MB) and its shard's encoded bytes.
    workers: int | None = None
    # Passes of the recursive model (m5flow.recursive) beside the direct ones; 0: none.
    # Five score as the full recursion on the backtests (bench/accuracy/README.md).
    recursive_passes: int = 5
    # Trees of each direct model trained on every day (at eta 0.1, `jobs.fixed_trees`),
    # each with a backtest twin (`ModelShards.backtest`); None: each direct model early-stops
    # on the last `validation_days` and forecasts the backtest itself. 0, as the stack and
    # m5flow.json spell early stopping, is kept as None.
    direct_trees: int | None = DIRECT_TREES

    def __post_init__(self) -> None:
        unknown = [g for g in self.group_by if g not in ID_KINDS]
        if unknown or not self.group_by:
            raise ValueError(f"group_by must use {ID_KINDS}, got {self.group_by}")
        if not self.min_lags:
            raise ValueError(f"min_lags must name at least one model, ending at {HORIZON}")
        if list(self.min_lags) != sorted(set(self.min_lags)):
            raise ValueError(f"min_lags must be increasing: {self.min_lags}")
        if self.min_lags[0] < 1:
            raise ValueError(f"min_lags must be at least 1 (a day old): {self.min_lags}")
        if self.min_lags[-1] != HORIZON:
            raise ValueError(f"min_lags must end at the horizon, {HORIZON}: {self.min_lags}")
        if self.train_format not in CONTENT_TYPES:
            raise ValueError(f"train_format must be one of {sorted(CONTENT_TYPES)}")
        if self.validation_days < HORIZON:
            # else the backtest's days (the last HORIZON) would be training days too
            raise ValueError(f"validation_days must be at least the horizon, {HORIZON}")
        if self.history_days is not None and self.history_days < 1:
            raise ValueError("history_days must be at least 1")
        if self.min_series < 1:
            raise ValueError(f"min_series must be at least 1: {self.min_series}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1: {self.workers}")
        if self.direct_trees == 0:
            object.__setattr__(self, "direct_trees", None)  # frozen: set once, here
        if self.direct_trees is not None and not 1 <= self.direct_trees <= MOST_DIRECT_TREES:
            raise ValueError(
                f"direct_trees must be 0 (early stopping) to {MOST_DIRECT_TREES:,}: "
                f"{cut(str(self.direct_trees), 40)}"
            )
        if not 0 <= self.recursive_passes <= HORIZON:
            # after HORIZON passes every day is the full recursion's: more change nothing
            raise ValueError(f"recursive_passes must be 0 to {HORIZON}: {self.recursive_passes}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ShardConfig:
        """The stack's settings, as the template passes them to the shard function."""
        return cls(
            train_format=env["SHARD_FORMAT"],
            min_lags=parse_min_lags(env["MODEL_MIN_LAGS"]),
            recursive_passes=parse_passes(env["RECURSIVE_PASSES"]),
            direct_trees=parse_direct_trees(env["DIRECT_TREES"]),
        )


def parse_min_lags(text: str) -> tuple[int, ...]:
    """Min lags written `7,14,21,28` (the stack's ModelMinLags, the CLI's --min-lags),
    checked as the shard step checks them, so a bad value is named before any reading.

    Raises
    ------
    ValueError
        Naming what is wrong with `text`.
    """
    try:
        lags = tuple(int(lag) for lag in text.split(","))
    except ValueError:
        raise ValueError("min_lags must be whole numbers separated by commas") from None
    ShardConfig(min_lags=lags)
    return lags


def parse_passes(text: str) -> int:
    """The stack's RecursivePasses (the CLI's --parameter), checked as the shard step
    checks it.

    Raises
    ------
    ValueError
        Naming what is wrong with `text`.
    """
    try:
        passes = int(text)
    except ValueError:
        raise ValueError(f"recursive passes must be a whole number 0 to {HORIZON}") from None
    ShardConfig(recursive_passes=passes)
    return passes


def parse_direct_trees(text: str) -> int:
    """The stack's DirectTrees (m5flow.json's direct_trees): a whole number of trees, 0
    for early-stopped direct models, checked as the shard step checks it.

    Raises
    ------
    ValueError
        Naming what is wrong with `text`.
    """
    try:
        trees = int(text)
    except ValueError:
        raise ValueError("direct_trees must be a whole number (0: early stopping)") from None
    ShardConfig(direct_trees=trees)
    return trees


def nothing_to_train(data: M5Data, config: ShardConfig) -> list[str]:
    """A reason when no series sells before the days some model holds out, else none.

    Training rows start at each series' first sale, so such data would start a run whose
    backtest twins (or early-stopped models) have empty training channels, and SageMaker
    would fail it with a reason about S3.
    """
    early_stopped = config.direct_trees is None
    held_out = config.validation_days if early_stopped else HORIZON
    first_held = data.last_day - held_out + 1
    if data.sales[:, : first_held - 1].any():  # sales are >= 0; no full-size temporary
        return []
    where = f"days d_1..d_{first_held - 1}"
    held_by = "validate the direct models" if early_stopped else "are the backtest's"
    expected = (
        f"some sales before d_{first_held} (the last {held_out} days {held_by}; those "
        "models train on the days before them)"
    )
    return [problem(naming.SALES_FILE, where, "no sale in any series", expected)]


def groups(
    data: M5Data, group_by: tuple[str, ...], min_series: int = 1
) -> Iterator[tuple[str, np.ndarray]]:
    """(shard name, series indices) of each group, in name order; a group's series in id order.

    Groups smaller than `min_series` are merged with the next ones (the shard is named
    `<first>__<last>`): on a small upload, one object per store and department would mean
    hundreds of tiny objects, each an S3 request and an event, for a few series each.

    Ordering by id makes the shards, and so the forecast, the same whatever the order of
    the sales file's rows: the training job's row subsampling draws by position.
    """
    columns = [data.ids_of(g) for g in group_by]
    keys = np.array(["_".join(parts) for parts in zip(*columns, strict=True)])
    by_id = np.argsort(data.ids, kind="stable")
    names: list[str] = []
    members: list[np.ndarray] = []
    for key in np.unique(keys):
        names.append(_object_name(key))
        members.append(by_id[keys[by_id] == key])
        if sum(len(m) for m in members) >= min_series:
            yield _merged(names, members)
            names, members = [], []
    if members:
        yield _merged(names, members)


def _object_name(key: str) -> str:
    """`key` as a safe S3 object name; a key that had to change gets a hash of the original.

    Only the series `id` is limited to safe characters, so two departments such as
    `HOBBIES.1` and `HOBBIES-1` would otherwise share a shard name and one would be lost.
    """
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", key)
    if safe == key:
        return key
    return f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _merged(names: list[str], members: list[np.ndarray]) -> tuple[str, np.ndarray]:
    name = names[0] if len(names) == 1 else f"{names[0]}__{names[-1]}"
    return name, np.concatenate(members)  # groups in name order, each in id order


def _float_table(columns: list[np.ndarray], names: list[str]) -> pa.Table:
    """Zero-copy float32 columns, declared non-null (NaN is a value, XGBoost's missing)."""
    schema = pa.schema([pa.field(name, pa.float32(), nullable=False) for name in names])
    return pa.Table.from_arrays([pa.array(column) for column in columns], schema=schema)


def encode_training(blocks: Iterable[Block], names: list[str], fmt: str) -> bytes:
    """Label first, then the features, no header: what SageMaker's XGBoost trains on.

    The blocks (of one shard) are encoded as they come: a Parquet row group, or more CSV
    lines, each, so that only one block at a time need be in memory.
    """
    sink = pa.BufferOutputStream()
    writer = None
    for part in blocks:
        table = _float_table([part.label, *part.features], ["label", *names])
        if fmt != "parquet":  # unquoted: SageMaker's CSV filters split on commas
            pacsv.write_csv(
                table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none")
            )
            continue
        writer = writer or pq.ParquetWriter(sink, table.schema, **PARQUET_OPTIONS)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    return sink.getvalue().to_pybytes()


def encode_inference(blocks: Iterable[Block], ids: np.ndarray, names: list[str]) -> bytes:
    """id, day, features, no header: Batch Transform's input filter $[2:] keeps the features.

    Columns of whole numbers (lags, calendar, codes...) are written as integers: the same
    text ("3" for 3.0), formatted several times faster than floats.
    """
    sink = io.BytesIO()
    for part in blocks:
        columns = [_csv_column(values) for values in part.features]
        table = pa.Table.from_arrays(
            [pa.array(ids[part.series]), pa.array(part.day), *columns],
            names=["id", "day", *names],
        )
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue()


def _csv_column(values: np.ndarray) -> pa.Array:
    with np.errstate(invalid="ignore"):  # NaN has no integer; the test below then fails
        whole = values.astype(np.int32)
    if np.array_equal(whole, values) and not np.signbit(values).any():
        return pa.array(whole)  # false for NaN, and for -0.0, written "-0"
    return pa.array(values)


class _Scratch(threading.local):
    """Each writer thread's block memory, grown to the largest block and then reused."""

    buffer: np.ndarray = np.empty(0, dtype=np.float32)

    def __call__(self, cells: int) -> np.ndarray:
        if self.buffer.size < cells:
            self.buffer = np.empty(cells, dtype=np.float32)
        return self.buffer


def _group_writer(
    data: M5Data,
    storage: Storage,
    run: str,
    model: ModelShards,
    config: ShardConfig,
    feature_config: FeatureConfig,
    guesses: Sequence[tuple[int, np.ndarray]] = (),
) -> Callable[[str, np.ndarray], dict[str, ShardInfo]]:
    """The task that builds and writes one group's train, validation and inference shards.

    The recursive model's inference rows read `guesses` (m5flow.recursive) as the sales
    of the days after each origin; a direct model's read the sales."""
    facts = series_facts(data, feature_config)
    last = data.last_day
    validation_start = last - config.validation_days + 1
    # The backtest forecasts the last HORIZON sales days from the origin before them, each
    # model its own horizon days, so that a run without truth can still report an accuracy.
    backtest = last - HORIZON
    train_start = 1 if config.history_days is None else validation_start - config.history_days
    ext = "parquet" if config.train_format == "parquet" else "csv"
    first_horizon, last_horizon = model.horizon_days
    scratch = _Scratch()

    def blocks(
        rows: np.ndarray, first: int, final: int, tally: list[int], origin: int | None = None
    ) -> Iterator[Block]:
        """The blocks of a group's shard, a few hundred series each (their rows counted in
        `tally`): the memory a writer needs does not grow with the groups' size.

        Inference rows forecast from an `origin`: every series' rows, with the facts as
        known then. Training rows start at each series' first sale."""
        drop = origin is None
        known = facts if origin is None else facts.as_of(origin)
        parts = np.array_split(rows, -(-len(rows) // _SERIES_PER_BLOCK))
        built = (
            build_block(data, known, part, first, final, feature_config,
                        drop_before_first_sale=drop, scratch=scratch)
            for part in parts
        )  # fmt: skip
        return _counted((block for block in built if len(block)), tally)

    origins: tuple[int, ...]
    if model.trees is None:  # early-stopped: it forecasts the backtest and the future
        channels = [("train", max(1, train_start), validation_start - 1),
                    ("validation", max(1, validation_start), last)]  # fmt: skip
        origins = (backtest, last)
    elif model.backtest:  # as its twin, HORIZON days earlier
        channels, origins = [("train", max(1, train_start), backtest)], (backtest,)
    else:  # every day: nothing held out, so no honest backtest
        channels, origins = [("train", max(1, train_start), last)], (last,)

    def write(group: str, rows: np.ndarray) -> dict[str, ShardInfo]:
        written = {}
        for channel, first, final in channels:
            tally = [0]
            body = encode_training(blocks(rows, first, final, tally), model.feature_names, ext)
            if tally[0]:
                key = f"{naming.channel_prefix(run, channel, model.name)}{group}.{ext}"
                storage.write(key, body)
                written[channel] = ShardInfo(key, tally[0], len(body))
        tally = [0]
        if guesses:
            ahead = recursive.pass_blocks(data, facts, rows, guesses, feature_config)
            inference = _counted(ahead, tally)
        else:
            inference = itertools.chain.from_iterable(
                blocks(rows, origin + first_horizon, origin + last_horizon, tally, origin)
                for origin in origins
            )
        body = encode_inference(inference, data.ids, model.feature_names)
        key = f"{naming.channel_prefix(run, 'inference', model.name)}{group}.csv"
        storage.write(key, body)
        written["inference"] = ShardInfo(key, tally[0], len(body))
        return written

    return write


def _write_groups(
    model: ModelShards,
    write: Callable[[str, np.ndarray], dict[str, ShardInfo]],
    by_name: dict[str, np.ndarray],
    workers: int | None,
) -> ModelShards:
    """Write every group's shards of `model` (`write`) on a few threads; list them in it."""
    pool = ThreadPoolExecutor(workers or len(os.sched_getaffinity(0)), thread_name_prefix="shard")
    try:
        # Largest groups first, so that no worker is left with a big one at the end; the
        # manifest still lists them in name order.
        largest_first = sorted(by_name, key=lambda name: -len(by_name[name]))
        futures = {name: pool.submit(write, name, by_name[name]) for name in largest_first}
        for name in by_name:
            for channel, info in futures[name].result().items():
                getattr(model, channel).append(info)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return model


def _counted(blocks: Iterable[Block], tally: list[int]) -> Iterator[Block]:
    for block in blocks:
        tally[0] += len(block)
        yield block


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
    every series for the horizon days each model forecasts. A direct model trained on every
    day (`direct_trees`) forecasts the days after the last sales day, and its backtest twin
    (`h7-bt`), trained on all but the last HORIZON days, the backtest: those days from the
    day before them. An early-stopped direct model (`direct_trees` None) forecasts both,
    the backtest's rows first. The recursive model (m5flow.recursive) trains on every day,
    and its inference rows are its first pass's after the last sales day only.
    Shards are listed in group order whatever order the workers finish in.

    Example
    -------
    >>> manifest = write_shards(data, DiskStorage(out), "run-1", "demo", {})
    >>> [model.name for model in manifest.models]
    ['h7', 'h14', 'h21', 'h28', 'r1', 'h7-bt', 'h14-bt', 'h21-bt', 'h28-bt']
    """
    config = shard_config or ShardConfig()
    by_name = dict(groups(data, config.group_by, config.min_series))
    models: list[ModelShards] = []
    twins: list[ModelShards] = []
    previous = 0
    for min_lag in config.min_lags:
        feature_config = FeatureConfig.for_min_lag(min_lag)
        for backtest in (False, True) if config.direct_trees else (False,):
            model = ModelShards(
                name=naming.backtest_name(f"h{min_lag}") if backtest else f"h{min_lag}",
                min_lag=min_lag,
                horizon_days=(previous + 1, min_lag),
                feature_names=feature_names(feature_config),
                trees=config.direct_trees,
                backtest=backtest,
            )
            write = _group_writer(data, storage, run, model, config, feature_config)
            (twins if backtest else models).append(
                _write_groups(model, write, by_name, config.workers)
            )
        previous = min_lag
    if config.recursive_passes:
        feature_config = recursive.feature_config()
        model = ModelShards(
            name=recursive.MODEL,
            min_lag=recursive.MIN_LAG,
            horizon_days=(1, HORIZON),
            feature_names=feature_names(feature_config),
            passes=config.recursive_passes,
            trees=recursive.TREES,
        )
        guesses = recursive.first_guesses(data)
        write = _group_writer(data, storage, run, model, config, feature_config, guesses)
        models.append(_write_groups(model, write, by_name, config.workers))
    # Last, so that where jobs wait for room (the local cloud's memory) the forecast's go
    # first; on SageMaker each is created at once, and a refused one fails the run.
    models += twins
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
        notices=list(data.notices),
    )
