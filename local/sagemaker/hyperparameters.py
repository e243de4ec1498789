"""Hyperparameter validation of the built-in XGBoost 1.7-1 algorithm, reproduced.

The container validates the (all-string) ``HyperParameters`` of a training job
before it reads any data, and a failure there fails the job.  The pipeline
depends on exactly which settings pass, so this module mirrors the container's
table (names, kinds, ranges, dependencies, aliases) and its four-step order:
required/defaults, parsing, ranges, then cross-parameter dependencies.  Messages
are worded as the container words them because they become ``FailureReason``.

Reference (behaviour, not code): aws/sagemaker-xgboost-container, branch 1.7-1,
``algorithm_mode/hyperparameter_validation.py`` and
``sagemaker_algorithm_toolkit/hyperparameter_validation.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from m5flow_local.sagemaker.exceptions import AlgorithmError, UserError

# Metric names the container accepts in ``eval_metric`` (xgb_constants.py).
MAXIMIZE_METRICS = (
    "accuracy",
    "auc",
    "aucpr",
    "balanced_accuracy",
    "f1",
    "f1_binary",
    "f1_macro",
    "map",
    "ndcg",
    "precision",
    "r2",
    "recall",
    "precision_macro",
    "precision_micro",
    "recall_macro",
    "recall_micro",
)
MINIMIZE_METRICS = (
    "aft-nloglik",
    "cox-nloglik",
    "error",
    "gamma-deviance",
    "gamma-nloglik",
    "interval-regression-accuracy",
    "logloss",
    "mae",
    "mape",
    "merror",
    "mlogloss",
    "mphe",
    "mse",
    "poisson-nloglik",
    "rmse",
    "rmsle",
    "tweedie-nloglik",
)
# The metric definitions the platform scrapes from the logs: ``validation:<metric>``.
TUNING_METRICS = tuple(f"validation:{m}" for m in MAXIMIZE_METRICS + MINIMIZE_METRICS)

OBJECTIVES = (
    "aft_loss_distribution",
    "binary:logistic",
    "binary:logitraw",
    "binary:hinge",
    "count:poisson",
    "multi:softmax",
    "multi:softprob",
    "rank:pairwise",
    "rank:ndcg",
    "rank:map",
    "reg:linear",
    "reg:squarederror",
    "reg:logistic",
    "reg:gamma",
    "reg:pseudohubererror",
    "reg:squaredlogerror",
    "reg:absoluteerror",
    "reg:tweedie",
    "survival:aft",
    "survival:cox",
)
_UPDATERS = (
    "grow_colmaker",
    "distcol",
    "grow_histmaker",
    "grow_skmaker",
    "sync",
    "refresh",
    "prune",
    "grow_colmaker",
    "distcol",
    "grow_histmaker",
    "grow_colmaker",
    "shotgun",
    "coord_descent",
    "refresh",
    "prune",
)
ALIASES = {
    "learning_rate": "eta",
    "min_split_loss": "gamma",
    "reg_lambda": "lambda",
    "reg_alpha": "alpha",
}


@dataclass(frozen=True)
class Interval:
    """A numeric range with open or closed ends, printed as the toolkit prints it."""

    min_open: float | None = None
    min_closed: float | None = None
    max_open: float | None = None
    max_closed: float | None = None

    def __contains__(self, value: object) -> bool:
        v: Any = value
        return not (
            (self.min_open is not None and v <= self.min_open)
            or (self.min_closed is not None and v < self.min_closed)
            or (self.max_open is not None and v >= self.max_open)
            or (self.max_closed is not None and v > self.max_closed)
        )

    def __str__(self) -> str:
        if self.min_open is not None:
            low = f"({self.min_open}, "
        elif self.min_closed is not None:
            low = f"[{self.min_closed}, "
        else:
            low = "(-inf, "
        if self.max_open is not None:
            high = f"{self.max_open})"
        elif self.max_closed is not None:
            high = f"{self.max_closed}]"
        else:
            high = "+inf)"
        return low + high


class _Choices:
    """A categorical range whose membership test may raise (the toolkit's ``range_validator``)."""

    def __init__(self, values: Iterable[str], check: Callable[[str], bool] | None = None) -> None:
        self.values = list(values)
        self._check = check

    def __contains__(self, value: object) -> bool:
        if self._check is not None:
            return self._check(str(value))
        return value in self.values

    def __str__(self) -> str:
        return str(self.values)


@dataclass
class _Spec:
    """One hyperparameter: how to parse it, its range, and the ones it depends on."""

    name: str
    kind: str  # int | float | cat | csv | tuple | nested
    range: Any = None
    required: bool = False
    depends_on: tuple[str, ...] = ()
    check_deps: Callable[[Any, dict[str, Any]], None] | None = None
    default: Any = None

    def parse(self, raw: Any) -> Any:
        if self.kind == "int":
            return int(raw)
        if self.kind == "float":
            return float(raw)
        if self.kind == "csv":
            return str(raw).split(",")
        if self.kind in ("tuple", "nested"):
            # A SyntaxError escapes the container's `except ValueError` (its parse is
            # eval / ast.literal_eval) and fails the job raw, not as "could not parse value".
            return ast.literal_eval(raw) if isinstance(raw, str) else raw
        return raw

    def check_range(self, value: Any) -> None:
        if self.kind == "csv" or self.kind == "tuple":
            if any(v not in self.range for v in value):
                raise UserError(
                    f"Hyperparameter {self.name}: value {value} not in range {self.range}"
                )
        elif self.kind == "nested":
            if any(v not in self.range for outer in value for v in outer):
                raise UserError(
                    f"Hyperparameter {self.name}: value {value} not in range {self.range}"
                )
        elif self.range is not None and value not in self.range:
            raise UserError(f"Hyperparameter {self.name}: {value} is not in {self.range}")


def _eval_metric_in_range(metric: str) -> bool:
    if "<function" in metric:
        raise UserError(f"User defined evaluation metric {metric} is not supported yet.")
    if "@" in metric:
        name, threshold = (part.strip() for part in metric.split("@")[:2])
        if name not in ("error", "ndcg", "map"):
            raise UserError(
                f"Metric '{metric}' is not supported. Parameter 'eval_metric' with customized "
                "threshold should be one of these options: 'error', 'ndcg', 'map'."
            )
        try:
            float(threshold)
        except ValueError as exc:
            raise UserError(f"Threshold value 't' in '{name}@t' expects float input.") from exc
        return True
    return metric in MAXIMIZE_METRICS + MINIMIZE_METRICS


def _check_updater(value: list[str], deps: dict[str, Any]) -> None:
    tree_plugins = {
        "grow_colmaker",
        "distcol",
        "grow_histmaker",
        "grow_skmaker",
        "sync",
        "refresh",
        "prune",
        "grow_quantile_histmaker",
    }
    tree_build = {"grow_colmaker", "distcol", "grow_histmaker", "grow_quantile_histmaker"}
    if deps.get("booster") == "gblinear":
        if not (len(value) == 1 and value[0] in ("shotgun", "coord_descent")):
            raise UserError(
                "Linear updater should be one of these options: 'shotgun', 'coord_descent'."
            )
    elif deps.get("process_type") == "update":
        if not all(v in ("refresh", "prune") for v in value):
            raise UserError(
                "process_type 'update' can only be used with updater 'refresh' and 'prune'"
            )
    else:
        if not all(v in tree_plugins for v in value):
            raise UserError(
                "Tree updater should be selected from these options: 'grow_colmaker', 'distcol', "
                "'grow_histmaker', 'grow_skmaker', 'grow_quantile_histmaker', 'sync', 'refresh', "
                "'prune', 'shortgun', 'coord_descent'."
            )
        if sum(1 for v in value if v in tree_build) > 1:
            raise UserError(
                "Only one tree grow plugin can be selected. Choose one from thefollowing: "
                "'grow_colmaker', 'distcol', 'grow_histmaker', 'grow_skmaker'"
            )


def _check_objective(value: str, deps: dict[str, Any]) -> None:
    if value in ("multi:softmax", "multi:softprob") and deps.get("num_class") is None:
        raise UserError("Require input for parameter 'num_class' for multi-classification")


def _check_eval_metric(value: list[str], deps: dict[str, Any]) -> None:
    # The container indexes ``objective`` directly: eval_metric without an objective
    # fails with a KeyError, which ends up in the FailureReason as a framework error.
    objective = deps["objective"]
    if "auc" in value and not objective.startswith(("binary:", "rank:")):
        raise UserError("Metric 'auc' can only be applied for classification and ranking problems.")
    if "aft-nloglik" in value and objective != "survival:aft":
        raise UserError("Metric 'aft-nloglik' can only be applied for 'survival:aft' objective.")


def _check_monotone(value: Any, deps: dict[str, Any]) -> None:
    if value is not None and deps.get("tree_method") not in ("exact", "hist"):
        raise UserError(
            "monotone_constraints can be used only when the tree_method parameter is set to "
            "either 'exact' or 'hist'."
        )


def _check_interaction(value: Any, deps: dict[str, Any]) -> None:
    if value is not None and deps.get("tree_method") not in ("exact", "hist", "approx"):
        raise UserError(
            "interaction_constraints can be used only when the tree_method parameter is set to "
            "either 'exact', 'hist' or 'approx'."
        )


def _specs() -> list[_Spec]:
    iv = Interval
    unit = iv(min_closed=0, max_closed=1)
    frac = iv(min_open=0, max_closed=1)
    nonneg = iv(min_closed=0)
    return [
        _Spec("num_round", "int", iv(min_closed=1), required=True),
        _Spec("csv_weights", "int", unit),
        _Spec("early_stopping_rounds", "int", iv(min_closed=1)),
        _Spec("booster", "cat", _Choices(["gbtree", "gblinear", "dart"])),
        _Spec("verbosity", "int", iv(min_closed=0, max_closed=3)),
        _Spec("nthread", "int", iv(min_closed=1)),
        _Spec("eta", "float", unit),
        _Spec("gamma", "float", nonneg),
        _Spec("max_depth", "int", nonneg),
        _Spec("min_child_weight", "float", nonneg),
        _Spec("max_delta_step", "float", nonneg),
        _Spec("subsample", "float", frac),
        _Spec("colsample_bytree", "float", frac),
        _Spec("colsample_bylevel", "float", frac),
        _Spec("colsample_bynode", "float", frac),
        _Spec("lambda", "float", nonneg),
        _Spec("alpha", "float", nonneg),
        _Spec("tree_method", "cat", _Choices(["auto", "exact", "approx", "hist", "gpu_hist"])),
        _Spec("sketch_eps", "float", iv(min_open=0, max_open=1)),
        _Spec("scale_pos_weight", "float", iv(min_open=0)),
        _Spec(
            "updater",
            "csv",
            _Choices(_UPDATERS),
            depends_on=("booster", "process_type"),
            check_deps=_check_updater,
        ),
        _Spec("dsplit", "cat", _Choices(["row", "col"])),
        _Spec("refresh_leaf", "int", unit),
        _Spec("process_type", "cat", _Choices(["default", "update"])),
        _Spec("grow_policy", "cat", _Choices(["depthwise", "lossguide"])),
        _Spec("max_leaves", "int", nonneg),
        _Spec("max_bin", "int", nonneg),
        _Spec("predictor", "cat", _Choices(["auto", "cpu_predictor", "gpu_predictor"])),
        _Spec(
            "monotone_constraints",
            "tuple",
            [-1, 0, 1],
            depends_on=("tree_method",),
            check_deps=_check_monotone,
        ),
        _Spec(
            "interaction_constraints",
            "nested",
            iv(min_closed=1),
            depends_on=("tree_method",),
            check_deps=_check_interaction,
        ),
        _Spec("sample_type", "cat", _Choices(["uniform", "weighted"])),
        _Spec("normalize_type", "cat", _Choices(["tree", "forest"])),
        _Spec("rate_drop", "float", unit),
        _Spec("one_drop", "int", unit),
        _Spec("skip_drop", "float", unit),
        _Spec("lambda_bias", "float", unit),
        _Spec("tweedie_variance_power", "float", iv(min_open=1, max_open=2)),
        _Spec(
            "objective",
            "cat",
            _Choices(OBJECTIVES),
            depends_on=("num_class",),
            check_deps=_check_objective,
        ),
        _Spec("num_class", "int", iv(min_closed=2)),
        _Spec("base_score", "float", nonneg),
        _Spec("_kfold", "int", iv(min_closed=2)),
        _Spec("_num_cv_round", "int", iv(min_closed=1)),
        _Spec("_tuning_objective_metric", "cat", _Choices(TUNING_METRICS)),
        _Spec(
            "eval_metric",
            "csv",
            _Choices(MAXIMIZE_METRICS + MINIMIZE_METRICS, check=_eval_metric_in_range),
            depends_on=("objective",),
            check_deps=_check_eval_metric,
        ),
        _Spec("seed", "int", iv(min_open=-(2**31), max_open=2**31 - 1)),
        _Spec("num_parallel_tree", "int", iv(min_closed=1)),
        _Spec("save_model_on_termination", "cat", _Choices(["true", "false"])),
        _Spec("aft_loss_distribution", "cat", _Choices(["normal", "logistic", "extreme"])),
        _Spec("aft_loss_distribution_scale", "float", nonneg),
        _Spec("deterministic_histogram", "cat", _Choices(["true", "false"])),
        _Spec("sampling_method", "cat", _Choices(["uniform", "gradient_based"])),
        _Spec("prob_buffer_row", "int", iv(min_open=1.0)),
        _Spec("use_dask_gpu_training", "cat", _Choices(["true", "false"])),
    ]


SPECS: dict[str, _Spec] = {spec.name: spec for spec in _specs()}


def _dependency_order(names: Iterable[str]) -> list[str]:
    """Order names so that every hyperparameter comes after those it depends on."""
    present = list(names)
    seen: set[str] = set()
    order: list[str] = []

    def visit(name: str) -> None:
        seen.add(name)
        for dep in SPECS[name].depends_on:
            if dep in present and dep not in seen:
                visit(dep)
        order.append(name)

    for name in present:
        if name not in seen:
            visit(name)
    return order


def validate(user: dict[str, str]) -> dict[str, Any]:
    """Validate and convert a training job's hyperparameters like the 1.7-1 container.

    Parameters
    ----------
    user
        ``HyperParameters`` exactly as given to CreateTrainingJob (strings).

    Returns
    -------
    dict
        Converted values (ints, floats, lists...) keyed by canonical name, aliases
        (``learning_rate``, ``reg_lambda``...) replaced.

    Raises
    ------
    UserError
        With the container's message: missing ``num_round``, an unknown key, a value
        that does not parse or is out of range, or inconsistent settings.
    AlgorithmError
        When a range check itself breaks.
    KeyError
        ``eval_metric`` given without ``objective`` (the container crashes the same way).

    Example
    -------
    >>> validate({"num_round": "10", "eta": "0.1"})["eta"]
    0.1
    """
    given = {ALIASES.get(k, k): v for k, v in user.items()}
    for name, spec in SPECS.items():
        if name not in given:
            if spec.required:
                raise UserError(f"Missing required hyperparameter: {name}")
            if spec.default is not None:
                given[name] = spec.default
    converted: dict[str, Any] = {}
    for name, raw in given.items():
        if name not in SPECS:
            raise UserError(f"Extraneous hyperparameter found: {name}")
        try:
            converted[name] = SPECS[name].parse(raw)
        except ValueError as exc:
            raise UserError(f"Hyperparameter {name}: could not parse value", caused_by=exc) from exc
    for name, value in converted.items():
        try:
            SPECS[name].check_range(value)
        except UserError:
            raise
        except Exception as exc:
            raise AlgorithmError(
                f"Hyperparameter {name}: unexpected failure when validating {value}", caused_by=exc
            ) from exc
    validated: dict[str, Any] = {}
    for name in _dependency_order(converted):
        spec = SPECS[name]
        if spec.check_deps is not None:
            deps = {d: validated[d] for d in spec.depends_on if d in validated}
            spec.check_deps(converted[name], deps)
        validated[name] = converted[name]
    return validated
