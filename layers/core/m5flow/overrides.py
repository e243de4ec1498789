"""Per-dataset settings: `raw/<dataset>/m5flow.json`, read when a run of the dataset starts.

The stack's parameters hold for every dataset in the bucket; this file lets a data scientist
try other models or hyperparameters on one dataset without redeploying. Its ETag joins the
run id, so changed settings make a new run instead of a duplicate of the last one.

    {"min_lags": [28], "direct_trees": 0, "hyperparameters": {"eta": 0.05, "max_depth": null}}

`min_lags` replaces the stack's `ModelMinLags`, `recursive_passes` its `RecursivePasses`
(0 to 28; 0: no recursive model, m5flow.recursive), `direct_trees` its `DirectTrees` (0:
early-stopped direct models); each hyperparameter replaces the stack's value (null
removes it). A file that cannot be applied rejects the upload with a reason per
problem, like a malformed CSV, before anything of the run is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from m5flow.exceptions import InputRejectedError
from m5flow.hyperparameters import hyperparameter_strings, shown, strict_json
from m5flow.naming import OVERRIDES_FILE
from m5flow.shards import ShardConfig, parse_direct_trees, parse_passes

SETTINGS = ("min_lags", "recursive_passes", "direct_trees", "hyperparameters")


@dataclass(frozen=True)
class DatasetOverrides:
    """What a dataset's m5flow.json changes; empty when the file is absent."""

    min_lags: tuple[int, ...] | None = None
    recursive_passes: int | None = None
    direct_trees: int | None = None  # 0: early-stopped direct models
    # Hyperparameter name -> SageMaker's string value, or None to drop the stack's value.
    hyperparameters: dict[str, str | None] = field(default_factory=dict)

    def shard_config(self, stack: ShardConfig | None) -> ShardConfig:
        """The stack's shard settings with this dataset's models."""
        base = stack or ShardConfig()
        if self.min_lags is not None:
            base = replace(base, min_lags=self.min_lags)
        if self.recursive_passes is not None:
            base = replace(base, recursive_passes=self.recursive_passes)
        if self.direct_trees is not None:
            base = replace(base, direct_trees=self.direct_trees)
        return base


def _min_lags(value: object, reasons: list[str]) -> tuple[int, ...] | None:
    # JSON has one kind of number: 28.0 is the whole number 28, as for hyperparameters
    if not isinstance(value, list) or not all(
        not isinstance(lag, bool)
        and (isinstance(lag, int) or (isinstance(lag, float) and lag.is_integer()))
        for lag in value
    ):
        reasons.append(
            f"{OVERRIDES_FILE}: min_lags must be a list of whole numbers such as [7, 14, 21, 28], "
            f"found {shown(value)}"
        )
        return None
    lags = tuple(int(lag) for lag in value)
    try:
        ShardConfig(min_lags=lags)
    except ValueError as exc:
        reasons.append(f"{OVERRIDES_FILE}: {exc}")
        return None
    return lags


def _whole(name: str, value: object, parse: Callable[[str], int], reasons: list[str]) -> int | None:
    """A setting that is one whole number, read with the stack parameter's `parse`."""
    try:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not value.is_integer())
        ):
            raise ValueError(f"{name} must be a whole number, found {shown(value)}")
        return parse(str(int(value)))
    except ValueError as exc:
        reasons.append(f"{OVERRIDES_FILE}: {exc}")
        return None


def _hyperparameters(value: object, reasons: list[str]) -> dict[str, str | None]:
    if not isinstance(value, dict):
        reasons.append(
            f"{OVERRIDES_FILE}: hyperparameters must be an object of name: value, "
            f"found {shown(value)}"
        )
        return {}
    strings, problems = hyperparameter_strings(value, OVERRIDES_FILE)
    reasons += problems
    return strings


def parse_overrides(payload: bytes | None) -> DatasetOverrides:
    """Read an m5flow.json payload (None: no file) into the settings it overrides.

    Raises
    ------
    InputRejectedError
        With one reason per problem: not UTF-8 JSON (NaN, Infinity and a repeated key
        included), not an object, an unknown setting, or a setting of the wrong shape.
    """
    if payload is None:
        return DatasetOverrides()
    try:
        raw = strict_json(payload)
    except ValueError as exc:  # also UnicodeDecodeError and json.JSONDecodeError
        raise InputRejectedError([f"{OVERRIDES_FILE}: not valid UTF-8 JSON ({exc})"]) from None
    if not isinstance(raw, Mapping):
        found = shown(raw)
        raise InputRejectedError(
            [f'{OVERRIDES_FILE}: expected an object such as {{"min_lags": [28]}}, found {found}']
        )
    reasons = [
        f"{OVERRIDES_FILE}: unknown setting {name!r}; expected {' or '.join(SETTINGS)}"
        for name in raw
        if name not in SETTINGS
    ]
    min_lags = _min_lags(raw["min_lags"], reasons) if "min_lags" in raw else None
    passes = (
        _whole("recursive_passes", raw["recursive_passes"], parse_passes, reasons)
        if "recursive_passes" in raw
        else None
    )
    trees = (
        _whole("direct_trees", raw["direct_trees"], parse_direct_trees, reasons)
        if "direct_trees" in raw
        else None
    )
    hyperparameters = _hyperparameters(raw.get("hyperparameters", {}), reasons)
    if reasons:
        raise InputRejectedError(reasons)
    return DatasetOverrides(
        min_lags=min_lags, recursive_passes=passes, direct_trees=trees,
        hyperparameters=hyperparameters,
    )  # fmt: skip
