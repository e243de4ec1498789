"""The run manifest: every model to train and the shards of its channels.

Kept apart from the shard writer (`shards`) for the two steps that read it only to start
jobs, start training and publish a model: it is plain JSON, read with the standard library,
so their functions ship without pandas and pyarrow, and start in a fraction of the time and
memory. Nothing those two steps import may need a dataframe library (tests/template checks
the built functions import without it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

PARQUET = "application/x-parquet"
CSV = "text/csv"
# Raised only for a change an older reader would misread; a new field is usually not one
# (older readers drop fields they do not know). 2: a model's `passes`, without which an
# older reader took the recursive model for a direct one of days 1-28.
# 3: a model's `trees`, without which an older reader trained the recursive model (no
# validation channel) with the early-stopping cap of trees.
# 4: a model's `backtest`, without which an older reader took a direct model's backtest
# twin for a forecasting model and said the backtest was early-stopped.
MANIFEST_VERSION = 4
# Version 1 is a run without a recursive model; in version 2 it was early-stopped; in
# version 3 the direct models were.
READABLE_VERSIONS = (1, 2, 3, 4)


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
    # The recursive model's passes (m5flow.recursive); 0 for a direct model. Pass k >= 1
    # has shards of the same names under its own prefix, written by the step before it.
    passes: int = 0
    # A fixed number of trees, trained without a validation channel on every day (or, for a
    # `backtest` twin, every day before the backtest's); None: early stopping on the
    # validation channel.
    trees: int | None = None
    # A direct model's twin trained up to the backtest's origin (HORIZON days before the
    # last sales day), with the same fixed trees, that forecasts the backtest's days only:
    # its direct model trains on those days too, so cannot score itself on them.
    backtest: bool = False

    @property
    def last_pass(self) -> int:
        """The number of the model's last transform: a direct model has one, pass 0."""
        return max(self.passes - 1, 0)


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
    notices: list[str] = field(default_factory=list)  # what the inputs' reading repaired
    # The dataset's m5flow.json hyperparameters, over the stack's (None: drop the stack's).
    hyperparameters: dict[str, str | None] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Manifest:
        raw = json.loads(body)
        if raw.get("version") not in READABLE_VERSIONS:
            # A stack updated while a run was in flight: say so rather than misread it.
            raise ValueError(
                f"manifest version {raw.get('version')!r}: this m5flow reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}; upload the dataset again under a "
                "new name to rerun it"
            )
        models = [
            ModelShards(
                name=m["name"],
                min_lag=m["min_lag"],
                horizon_days=tuple(m["horizon_days"]),
                feature_names=m["feature_names"],
                passes=m.get("passes", 0),
                trees=m.get("trees"),
                backtest=m.get("backtest", False),
                **{c: [ShardInfo(**s) for s in m[c]] for c in ("train", "validation", "inference")},
            )
            for m in raw.pop("models")
        ]
        known = {f.name for f in fields(cls)}
        return cls(models=models, **{k: v for k, v in raw.items() if k in known})

    def model(self, name: str) -> ModelShards:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(f"manifest of run {self.run_id} lists no model {name!r}")
