"""raw/<dataset>/m5flow.json: what it may change, and how a wrong one is refused."""

from __future__ import annotations

import pytest

from m5flow.exceptions import InputRejectedError
from m5flow.hyperparameters import (
    DEFAULT_HYPERPARAMETERS,
    merge_hyperparameters,
    stack_hyperparameters,
)
from m5flow.overrides import DatasetOverrides, parse_overrides
from m5flow.shards import ShardConfig


def test_absent_file_changes_nothing() -> None:
    overrides = parse_overrides(None)
    assert overrides == DatasetOverrides()
    stack = ShardConfig(min_lags=(28,), train_format="csv")
    assert overrides.shard_config(stack) is stack


def test_settings_are_read_as_sagemaker_strings() -> None:
    overrides = parse_overrides(
        b'{"min_lags": [28], "hyperparameters": {"eta": 0.05, "num_round": 300, '
        b'"objective": "count:poisson", "early_stopping_rounds": null}}'
    )
    assert overrides.shard_config(ShardConfig(train_format="csv")) == ShardConfig(
        min_lags=(28,), train_format="csv"
    )
    assert overrides.hyperparameters == {
        "eta": "0.05", "num_round": "300", "objective": "count:poisson",
        "early_stopping_rounds": None,
    }  # fmt: skip
    merged = merge_hyperparameters(DEFAULT_HYPERPARAMETERS, overrides.hyperparameters)
    assert merged["eta"] == "0.05" and merged["objective"] == "count:poisson"
    # The container refuses a tweedie power with another objective, and null drops a value.
    assert "tweedie_variance_power" not in merged and "early_stopping_rounds" not in merged
    assert merged["max_depth"] == DEFAULT_HYPERPARAMETERS["max_depth"]


def test_a_dataset_back_on_tweedie_gets_m5flows_power_over_a_poisson_stack() -> None:
    stack = merge_hyperparameters(DEFAULT_HYPERPARAMETERS, {"objective": "count:poisson"})
    assert "tweedie_variance_power" not in stack
    dataset = merge_hyperparameters(stack, {"objective": "reg:tweedie"})
    assert dataset["tweedie_variance_power"] == DEFAULT_HYPERPARAMETERS["tweedie_variance_power"]
    dropped = {"objective": "reg:tweedie", "tweedie_variance_power": None}
    assert "tweedie_variance_power" not in merge_hyperparameters(stack, dropped)
    # A stack on tweedie that dropped the power keeps it dropped when a dataset restates it.
    powerless = merge_hyperparameters(DEFAULT_HYPERPARAMETERS, {"tweedie_variance_power": None})
    restated = merge_hyperparameters(powerless, {"objective": "reg:tweedie"})
    assert "tweedie_variance_power" not in restated


def test_a_tweedie_power_given_with_the_objective_is_kept() -> None:
    merged = merge_hyperparameters(
        DEFAULT_HYPERPARAMETERS, {"objective": "reg:tweedie", "tweedie_variance_power": "1.5"}
    )
    assert merged["tweedie_variance_power"] == "1.5"


@pytest.mark.parametrize(
    ("payload", "phrases"),
    [
        (b"[28]", ["expected an object", "found [28]"]),
        (b"null", ["expected an object", "found null"]),
        (b'{"min_lags": [28.5]}', ["min_lags must be a list of whole numbers", "found [28.5]"]),
        # A long wrong value is quoted by its head, not whole
        (b'{"hyperparameters": [' + b"1," * 50_000 + b"1]}", ["found [1, 1, ", "(150,003 chars)"]),
        (
            b'{"hyperparameters": {"eta": "' + b"1" * 2501 + b'"}}',
            ["'eta' is longer than SageMaker takes (2500 characters)"],
        ),
        (
            b'{"hyperparameters": {"' + b"k" * 257 + b'": "1"}}',
            ["is longer than SageMaker takes (256 characters)"],
        ),
        (
            b'{"hyperparameters": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            ["not valid UTF-8 JSON (nested too deeply)"],
        ),
        (b"\xff{}", ["not valid UTF-8 JSON"]),
        (b'{"min_lags": "28"}', ["min_lags must be a list of whole numbers", 'found "28"']),
        (b'{"min_lags": [true]}', ["min_lags must be a list of whole numbers"]),
        (b'{"min_lags": [28, 7]}', ["min_lags must be increasing"]),
        (b'{"min_lags": [0, 28]}', ["min_lags must be at least 1"]),
        (b'{"direct_trees": -1}', ["direct_trees must be 0 (early stopping) to 99,999: -1"]),
        # past float's range the training step's scaling of the trees would overflow
        (b'{"direct_trees": 1' + b"0" * 400 + b"}", ["to 99,999: 1000", "(401 chars)"]),
        (b'{"direct_trees": 1.5}', ["direct_trees must be a whole number, found 1.5"]),
        (b'{"direct_trees": "150"}', ['direct_trees must be a whole number, found "150"']),
        (b'{"hyperparameters": "eta=0.1"}', ["hyperparameters must be an object"]),
        (b'{"hyperparameters": {"eta": true}}', ["'eta' must be a string or a finite number"]),
        # Python's json takes these; XGBoost then trains on eta=nan and every forecast is NaN
        (b'{"hyperparameters": {"eta": NaN}}', ["not valid UTF-8 JSON", "NaN is not a JSON"]),
        (b'{"hyperparameters": {"eta": -Infinity}}', ["-Infinity is not a JSON number"]),
        (b'{"hyperparameters": {"eta": 1e400}}', ["'eta' must be a string or a finite number"]),
        (b'{"min_lags": [28], "min_lags": [7, 28]}', ["'min_lags' given more than once"]),
        # A lone surrogate decodes from JSON but no request can carry it (found by fuzzing)
        (b'{"hyperparameters": {"objective": "\\ud800"}}', ["UTF-8 cannot encode"]),
    ],
)
def test_a_wrong_file_is_refused_with_its_reason(payload: bytes, phrases: list[str]) -> None:
    with pytest.raises(InputRejectedError) as caught:
        parse_overrides(payload)
    (reason,) = caught.value.reasons
    assert reason.startswith("m5flow.json: ") and len(reason) < 300
    for phrase in phrases:
        assert phrase in reason


@pytest.mark.parametrize(
    ("payload", "trees"),
    [
        (b'{"direct_trees": 60}', 60),
        (b'{"direct_trees": 0}', None),
        (b'{"direct_trees": 60.0}', 60),
        (b"{}", 150),
    ],
)
def test_direct_trees_set_the_direct_models_trees_or_early_stopping(
    payload: bytes, trees: int | None
) -> None:
    """0 is early stopping (no twins), not the stack's value: the file sets it."""
    stack = ShardConfig(train_format="csv")
    assert parse_overrides(payload).shard_config(stack).direct_trees == trees


def test_a_long_whole_number_goes_on_as_written() -> None:
    """Past float's range an int is still finite (isfinite raised OverflowError on it)."""
    overrides = parse_overrides(b'{"hyperparameters": {"num_round": 1' + b"0" * 309 + b"}}")
    assert overrides.hyperparameters == {"num_round": "1" + "0" * 309}


def test_every_problem_of_a_file_is_named_at_once() -> None:
    with pytest.raises(InputRejectedError) as caught:
        parse_overrides(b'{"minlags": [28], "model": "x", "min_lags": [1, 2]}')
    reasons = caught.value.reasons
    assert len(reasons) == 3
    assert "unknown setting 'minlags'" in reasons[0] and "unknown setting 'model'" in reasons[1]
    assert "must end at the horizon" in reasons[2]


def test_a_byte_order_mark_is_allowed_and_whole_numbers_go_on_as_integers() -> None:
    """As the CSVs: Notepad saves a BOM. The container refuses "6.0" for max_depth."""
    overrides = parse_overrides(b'\xef\xbb\xbf{"hyperparameters": {"max_depth": 6.0, "eta": 0.5}}')
    assert overrides.hyperparameters == {"max_depth": "6", "eta": "0.5"}
    assert parse_overrides(b'{"min_lags": [14.0, 28]}').min_lags == (14, 28)


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ('{"eta": NaN}', "NaN is not a JSON number"),
        ('{"eta": [0.1]}', "hyperparameter 'eta' must be a string or a finite number"),
        ('{"eta": 0.1, "eta": 0.2}', "'eta' given more than once"),
    ],
)
def test_the_stacks_hyperparameters_are_held_to_the_same_rules(text: str, phrase: str) -> None:
    with pytest.raises(ValueError, match="the Hyperparameters parameter") as caught:
        stack_hyperparameters(text)
    assert phrase in str(caught.value)
    assert stack_hyperparameters('{"max_depth": 6.0, "x": null}') == {"max_depth": "6", "x": None}
