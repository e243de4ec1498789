"""The container-defined evaluation metrics of the built-in XGBoost 1.7-1 algorithm.

The container computes some ``eval_metric`` names itself (``rmse``, ``mae``,
``mse``, ``r2``, accuracy/precision/recall/F1 families) through XGBoost's
``feval`` hook instead of letting XGBoost compute them.  Two consequences are
reproduced on purpose because they change results:

* ``feval`` receives *raw margins* (XGBoost >= 1.2), so for log-link objectives
  such as ``reg:tweedie`` the container's ``rmse`` compares labels with
  ``log(prediction)``, and early stopping on it follows that number;
* in distributed training each host computes the metric on its own shard and
  XGBoost averages the hosts' values, which is not the global metric.

Reference: ``metrics/custom_metrics.py`` and ``algorithm_mode/train_utils.py`` of
aws/sagemaker-xgboost-container (1.7-1).  scikit-learn's definitions are
reimplemented with numpy, since the local environment has no scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MULTI_CLASS_BINARY_ERROR = (
    "Target is multiclass but average='binary'. Please choose another average setting, one of "
    "[None, 'micro', 'macro', 'weighted']."
)


def _class_labels(preds: np.ndarray) -> np.ndarray:
    """Margins to class labels: argmax for multi-class output, ``margin > 0`` for binary."""
    if preds.ndim > 1:
        return np.argmax(preds, axis=-1)
    return (preds > 0.0).astype(int)


def _per_class(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    classes = np.union1d(np.unique(y), np.unique(p))
    tp = np.array([np.sum((p == c) & (y == c)) for c in classes], dtype=float)
    pred_pos = np.array([np.sum(p == c) for c in classes], dtype=float)
    true_pos = np.array([np.sum(y == c) for c in classes], dtype=float)
    return tp, pred_pos, true_pos


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def _binary_counts(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    if len(np.union1d(np.unique(y), np.unique(p))) > 2:
        raise ValueError(MULTI_CLASS_BINARY_ERROR)
    tp = float(np.sum((p == 1) & (y == 1)))
    return tp, float(np.sum(p == 1)), float(np.sum(y == 1))


def _precision(y: np.ndarray, p: np.ndarray, average: str) -> float:
    if average == "binary":
        hits, predicted, _ = _binary_counts(y, p)
        return hits / predicted if predicted else 0.0
    tp, pred_pos, _ = _per_class(y, p)
    if average == "micro":
        return float(tp.sum() / pred_pos.sum()) if pred_pos.sum() else 0.0
    return float(np.mean(_safe_div(tp, pred_pos)))


def _recall(y: np.ndarray, p: np.ndarray, average: str) -> float:
    if average == "binary":
        hits, _, actual = _binary_counts(y, p)
        return hits / actual if actual else 0.0
    tp, _, true_pos = _per_class(y, p)
    if average == "micro":
        return float(tp.sum() / true_pos.sum()) if true_pos.sum() else 0.0
    return float(np.mean(_safe_div(tp, true_pos)))


def _f1(y: np.ndarray, p: np.ndarray, average: str) -> float:
    if average == "binary":
        hits, predicted, actual = _binary_counts(y, p)
        return 2 * hits / (predicted + actual) if (predicted + actual) else 0.0
    tp, pred_pos, true_pos = _per_class(y, p)
    return float(np.mean(_safe_div(2 * tp, pred_pos + true_pos)))


def _balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    classes = np.unique(y)
    return float(np.mean([np.mean(p[y == c] == c) for c in classes]))


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    ss_res = float(np.sum((y - p) ** 2))
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def _classification(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., float]:
    def metric(preds: np.ndarray, labels: np.ndarray) -> float:
        if preds.size == 0:
            return 0.0
        return fn(labels, _class_labels(preds))

    return metric


_REGRESSION: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mse": lambda p, y: float(np.mean((y - p) ** 2)),
    "rmse": lambda p, y: float(np.sqrt(np.mean((y - p) ** 2))),
    "mae": lambda p, y: float(np.mean(np.abs(y - p))),
    "r2": lambda p, y: _r2(y, p),
}
_CLASSIFICATION: dict[str, Callable[..., float]] = {
    "accuracy": _classification(lambda y, p: float(np.mean(y == p))),
    "balanced_accuracy": _classification(_balanced_accuracy),
    "f1": _classification(lambda y, p: _f1(y, p, "macro")),
    "f1_binary": _classification(lambda y, p: _f1(y, p, "binary")),
    "f1_macro": _classification(lambda y, p: _f1(y, p, "macro")),
    "precision": _classification(lambda y, p: _precision(y, p, "binary")),
    "precision_macro": _classification(lambda y, p: _precision(y, p, "macro")),
    "precision_micro": _classification(lambda y, p: _precision(y, p, "micro")),
    "recall": _classification(lambda y, p: _recall(y, p, "binary")),
    "recall_macro": _classification(lambda y, p: _recall(y, p, "macro")),
    "recall_micro": _classification(lambda y, p: _recall(y, p, "micro")),
}
CUSTOM_METRICS = {**_REGRESSION, **_CLASSIFICATION}


def configure_feval(names: Sequence[str]) -> Callable[[np.ndarray, Any], list[tuple[str, float]]]:
    """Build the ``feval`` computing the given container-defined metrics, in order."""

    def feval(preds: np.ndarray, dmatrix: Any) -> list[tuple[str, float]]:
        labels = dmatrix.get_label()
        preds = np.asarray(preds)
        return [(name, CUSTOM_METRICS[name](preds, labels)) for name in names]

    return feval


def eval_metrics_and_feval(
    tuning_metric: str | None, eval_metric: list[str] | None
) -> tuple[list[str] | None, Callable[..., Any] | None, list[str] | None]:
    """Split the requested metrics into XGBoost's own and the container-defined ones.

    Returns
    -------
    tuple
        (metrics left for XGBoost's ``eval_metric`` or None, the ``feval`` or None,
        the tuning objective metric names or None).
    """
    tuning = tuning_metric.split(":")[1].split(",") if tuning_metric else None
    if tuning is None and eval_metric is None:
        return None, None, None
    if tuning is None:
        union = list(eval_metric or [])
    elif eval_metric is None:
        union = tuning
    else:
        union = sorted(set(tuning) | set(eval_metric))
    custom = [m for m in union if m in CUSTOM_METRICS]
    if not custom:
        return union, None, tuning
    builtin = sorted(set(union) - set(custom))
    return builtin, configure_feval(custom), tuning
