"""XGBoost hyperparameters: m5flow's defaults, the stack's and a dataset's overrides read
strictly, and how they merge.

Kept apart from the request bodies (`jobs`): the stack's `Hyperparameters` parameter, a
dataset's `m5flow.json` (`overrides`) and `m5flow local run` all read settings here, before
any job exists, so that a bad value is refused where the user wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from math import isfinite
from typing import Any

from m5flow.wording import cut

# Chosen on 28-day backtests of the real M5 slice ending by d_1941 (bench/accuracy/README.md):
# the original blog settings with a tweedie power near Poisson, histogram trees, and early
# stopping on a metric the container computes on predictions.
DEFAULT_HYPERPARAMETERS: dict[str, str] = {
    "objective": "reg:tweedie",
    "tweedie_variance_power": "1.1",
    "num_round": "2000",
    "eta": "0.1",
    "max_depth": "5",
    "min_child_weight": "7",
    "subsample": "0.7",
    "colsample_bytree": "0.7",
    "tree_method": "hist",
    "early_stopping_rounds": "20",
    # Not "rmse": the 1.7-1 container computes it in Python on the raw margin, which for
    # reg:tweedie is log(prediction); and "tweedie-nloglik" cannot be given a rho there.
    "eval_metric": "poisson-nloglik",
}


# SageMaker's limits on a job's HyperParameters (its API model): longer is refused there.
MAX_NAME_CHARS, MAX_VALUE_CHARS = 256, 2500
_SHOWN_CHARS = 80  # of a wrong value quoted in a reason


def shown(value: object) -> str:
    """A JSON value as a reason quotes it: as JSON, its first characters if it is long (a
    whole 300 KB value once made one reason of 450 KB)."""
    return cut(json.dumps(value), _SHOWN_CHARS)


def overrides_said(overrides: Mapping[str, object]) -> str:
    """A dataset's m5flow.json hyperparameters as the events say them: "eta=0.05,
    max_depth=unset" (None drops the stack's value), each value cut to 40 characters."""
    return ", ".join(
        f"{name}={'unset' if value is None else cut(str(value), 40)}"
        for name, value in overrides.items()
    )


def strict_json(text: str | bytes) -> Any:
    """Parse JSON as RFC 8259 has it, from text or UTF-8 bytes (a byte-order mark allowed).

    Python's parser also takes NaN and Infinity, which no JSON tool writes and XGBoost then
    trains on, and lets a repeated key's last value win in silence; a settings file with
    either is refused up front rather than failing a run at training or at assembly.

    Raises
    ------
    ValueError
        Not UTF-8, not JSON, NaN or Infinity, or a key repeated within one object.
    """

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(f"key(s) {', '.join(map(repr, repeated))} given more than once")
        return dict(pairs)

    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        return json.loads(
            text.removeprefix("\ufeff"), parse_constant=no_constant, object_pairs_hook=unique_keys
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None


def hyperparameter_strings(
    values: Mapping[str, object], source: str
) -> tuple[dict[str, str | None], list[str]]:
    """Hyperparameters as SageMaker takes them (strings; None drops a value), and a reason
    for each that is not a string, a finite number or null (1e400 parses as infinity), or
    holds a lone surrogate, which no request can carry. `source` names where they came from.

    A whole number written as 6.0 goes on as "6": JSON has one kind of number, and the
    container refuses "6.0" for an integer hyperparameter such as max_depth.
    """
    strings: dict[str, str | None] = {}
    reasons: list[str] = []
    for name, value in values.items():
        if not _encodable(name) or (isinstance(value, str) and not _encodable(value)):
            # JSON's "\ud800" escapes decode to a lone surrogate, which no request can carry.
            reasons.append(
                f"{source}: hyperparameter {shown(name)} holds a character UTF-8 cannot encode "
                "(a lone surrogate, written as a \\uD800-\\uDFFF escape)"
            )
            continue
        if len(name) > MAX_NAME_CHARS:
            reasons.append(
                f"{source}: hyperparameter name {shown(name)} is longer than SageMaker takes "
                f"({MAX_NAME_CHARS} characters)"
            )
        elif value is None or isinstance(value, str):
            strings[name] = value
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not isfinite(value))  # an int is always finite
        ):
            reasons.append(
                f"{source}: hyperparameter {name!r} must be a string or a finite number "
                f"(or null to drop the stack's value), found {shown(value)}"
            )
        elif isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            strings[name] = str(int(value))
        else:
            strings[name] = str(value)
        if len(strings.get(name) or "") > MAX_VALUE_CHARS:
            del strings[name]
            reasons.append(
                f"{source}: hyperparameter {name!r} is longer than SageMaker takes "
                f"({MAX_VALUE_CHARS} characters), found {shown(value)}"
            )
    return strings, reasons


def stack_hyperparameters(text: str) -> dict[str, str | None]:
    """The stack's `Hyperparameters` parameter (HYPERPARAMETERS), which must be a JSON object
    of strings, numbers and nulls.

    Raises
    ------
    ValueError
        Naming the parameter and what is wrong with it.
    """
    try:
        overrides = strict_json(text)
    except ValueError as exc:
        raise ValueError(f"the Hyperparameters parameter is not JSON ({exc}): {text!r}") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"the Hyperparameters parameter must be a JSON object, got {text!r}")
    strings, reasons = hyperparameter_strings(overrides, "the Hyperparameters parameter")
    if reasons:
        raise ValueError("; ".join(reasons))
    return strings


def merge_hyperparameters(
    base: Mapping[str, str], overrides: Mapping[str, str | None]
) -> dict[str, str]:
    """`base` with `overrides` applied: a value replaces, None removes.

    Another objective than reg:tweedie drops the tweedie power unless the overrides set it,
    since the container refuses `tweedie_variance_power` with any other objective; going
    back to reg:tweedie over a base without a power (a stack set to another objective)
    brings back m5flow's default power, not the container's, unless null drops it.

    Example
    -------
    >>> merge_hyperparameters({"objective": "reg:tweedie", "tweedie_variance_power": "1.1",
    ...     "eta": "0.1"}, {"objective": "count:poisson", "eta": None})
    {'objective': 'count:poisson'}
    """
    merged = dict(base)
    for name, value in overrides.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    power = "tweedie_variance_power"
    if merged.get("objective") != "reg:tweedie" and power not in overrides:
        merged.pop(power, None)
    elif (
        overrides.get("objective") == "reg:tweedie"
        and base.get("objective") != "reg:tweedie"
        and power not in {*merged, *overrides}
    ):
        merged[power] = DEFAULT_HYPERPARAMETERS[power]
    return merged


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
