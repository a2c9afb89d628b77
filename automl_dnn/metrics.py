"""Metrics, their directions, and the lower-is-better loss each one becomes.

Predictions follow the project convention (docs/architecture.md): classification -> probabilities
``(n, K)`` (binary too, ``K = 2``) with int labels ``0..K-1``; regression -> values ``(n,)`` on the
original scale. Every metric is computed from those, so the trainer, the search, the ensemble and the
report all score the same way.

Robustness rules, so that one bad split or one diverged net never crashes a search:

- a split that lacks some classes is fine: ``K`` comes from the prediction's width, not from the labels;
- ``roc_auc`` on a split with a single class is ``nan`` (undefined), not an exception;
- non-finite predictions score the worst possible value, so ``as_loss`` turns them into ``inf``;
- ``as_loss`` also maps ``nan`` to ``inf``: a value that cannot be judged is never an improvement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import r2_score, roc_auc_score

from automl_dnn import tasks
from automl_dnn.errors import AutoDNNError
from automl_dnn.tasks import TASKS

EPS = 1e-15  # probability clip for logloss, as in scikit-learn's historical default

ScoreFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: whether bigger is better, which tasks it applies to, and how to compute it."""

    name: str
    direction: str  # "minimize" | "maximize"
    tasks: frozenset[str]
    fn: ScoreFn

    @property
    def worst(self) -> float:
        """The value a non-finite prediction gets: the worst one possible."""
        return math.inf if self.direction == "minimize" else -math.inf


# --- classification ---------------------------------------------------------------------------


def _clipped_probs(pred: np.ndarray) -> np.ndarray:
    """Clip to [eps, 1 - eps] and renormalize rows, so a confident wrong net costs ~34.5 nats, not inf."""
    p = np.clip(pred.astype(np.float64), EPS, 1.0 - EPS)
    return p / p.sum(axis=1, keepdims=True)


def _logloss(y: np.ndarray, pred: np.ndarray) -> float:
    p = _clipped_probs(pred)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


#: Metrics of the predicted labels alone: the only ones a binary decision threshold can change.
LABEL_METRICS = ("accuracy", "balanced_accuracy")


def with_threshold(pred: np.ndarray, threshold: float | None) -> np.ndarray:
    """Binary probabilities whose argmax is the label at ``threshold`` (what ``predict`` writes).

    Only for scoring label metrics: the rows become one-hot, so a probability metric would be wrong.
    """
    if threshold is None or pred.ndim != 2 or pred.shape[1] != 2:
        return pred
    positive = (pred[:, 1] >= threshold).astype(np.float64)
    return np.stack([1.0 - positive, positive], axis=1)


def _accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(pred.argmax(axis=1) == y))


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (scikit-learn's definition)."""
    hits = pred.argmax(axis=1) == y
    return float(np.mean([hits[y == k].mean() for k in np.unique(y)]))


def _binary_auc(is_pos: np.ndarray, score: np.ndarray) -> float:
    if is_pos.all() or not is_pos.any():
        return math.nan  # AUC is undefined with one class; a split can legitimately lack one
    return float(roc_auc_score(is_pos, score))


def _roc_auc(y: np.ndarray, pred: np.ndarray) -> float:
    """Binary: AUC of P(class 1). Multiclass: one-vs-rest macro average over the classes present in ``y``.

    Averaging over the present classes (not all K) keeps a split that lacks a rare class usable; with
    every class present it equals scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``.
    """
    if pred.shape[1] == 2:
        return _binary_auc(y == 1, pred[:, 1])
    present = np.unique(y)
    if len(present) < 2:
        return math.nan
    return float(np.mean([_binary_auc(y == k, pred[:, k]) for k in present]))


# --- regression -------------------------------------------------------------------------------


def _rmse(y: np.ndarray, pred: np.ndarray) -> float:
    with np.errstate(over="ignore"):  # a diverged net's huge (finite) values score inf, without a warning
        return float(np.sqrt(np.mean((y - pred) ** 2)))


def _mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y - pred)))


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(r2_score(y, pred))


_FUNCTIONS: dict[str, ScoreFn] = {
    "logloss": _logloss,
    "accuracy": _accuracy,
    "roc_auc": _roc_auc,
    "balanced_accuracy": _balanced_accuracy,
    "rmse": _rmse,
    "mae": _mae,
    "r2": _r2,
}
METRICS: dict[str, MetricSpec] = {
    name: MetricSpec(name, direction, applies_to, _FUNCTIONS[name])
    for name, (direction, applies_to) in tasks.METRICS.items()
}


# --- public API -------------------------------------------------------------------------------


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def metrics_for(task: str) -> list[str]:
    """The metric names that apply to ``task``, in a stable order (for option choices and messages)."""
    _check_task(task)
    return [name for name, spec in METRICS.items() if task in spec.tasks]


def default_metric(task: str) -> str:
    """A proper loss: logloss for classification, rmse for regression."""
    _check_task(task)
    return "rmse" if task == "regression" else "logloss"


def proper_loss(task: str, metric: str | None = None) -> str:
    """The loss that ensemble weights (and XGBoost's tuning) minimize for a study on ``metric``: the task's
    default, but MAE for an MAE study. RMSE is minimized by the conditional mean and MAE by the median; a
    study scored on MAE asks for the median, and a few extreme targets move a mean without bound (a 0.3 %
    sentinel of 1e9 in california_housing: RMSE-fitted weights chose a member 3.6 M off on clean rows)."""
    return "mae" if task == "regression" and metric == "mae" else default_metric(task)


def check_metric(metric: str, task: str) -> None:
    """Refuse a metric the user asked for that does not exist or does not apply to the task."""
    valid = metrics_for(task)
    if metric not in valid:
        what = "unknown metric" if metric not in METRICS else f"metric does not apply to a {task} task"
        raise AutoDNNError(f"{what}: {metric!r}; choose one of {', '.join(valid)}")


def _spec(metric: str) -> MetricSpec:
    try:
        return METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}") from None


def direction(metric: str) -> str:
    """``"minimize"`` or ``"maximize"`` (what an Optuna study on this metric uses)."""
    return _spec(metric).direction


def as_loss(metric: str, value: float) -> float:
    """The lower-is-better version of ``value``; ``nan`` becomes ``inf`` so it never counts as better."""
    if math.isnan(value):
        return math.inf
    return float(value) if direction(metric) == "minimize" else -float(value)


def _check_shapes(y_true: np.ndarray, pred: np.ndarray, classification: bool) -> None:
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y_true.shape}")
    if classification:
        if pred.ndim != 2 or pred.shape[1] < 2:
            raise ValueError(f"classification predictions must be probabilities (n, K>=2), got shape {pred.shape}")
    elif pred.ndim != 1:
        raise ValueError(f"regression predictions must be 1-D (n,), got shape {pred.shape}")
    if len(pred) != len(y_true):
        raise ValueError(f"{len(pred)} predictions for {len(y_true)} labels")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty split")


def _as_labels(y_true: np.ndarray, n_classes: int) -> np.ndarray:
    y = np.asarray(y_true)
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"classification labels must be class indices, got dtype {y.dtype}")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got range {y.min()}..{y.max()}")
    return y


def score(metric: str, y_true: np.ndarray, pred: np.ndarray, threshold: float | None = None) -> float:
    """``metric`` of ``pred`` against ``y_true``; the worst value if ``pred`` has a non-finite entry.

    ``threshold`` (binary): label metrics score the labels cut at it, as the exported model predicts them.
    """
    spec = _spec(metric)
    y_true, pred = np.asarray(y_true), np.asarray(pred)
    if metric in LABEL_METRICS and np.all(np.isfinite(pred)):
        pred = with_threshold(pred, threshold)
    classification = "regression" not in spec.tasks
    _check_shapes(y_true, pred, classification)
    if not np.all(np.isfinite(pred)):
        return spec.worst
    if classification:
        y_true = _as_labels(y_true, pred.shape[1])
    else:
        y_true = y_true.astype(np.float64)
        pred = pred.astype(np.float64)
    return spec.fn(y_true, pred)


def all_scores(task: str, y_true: np.ndarray, pred: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """Every metric of ``task``, for reports (label metrics at ``threshold``, as ``score``)."""
    return {name: score(name, y_true, pred, threshold) for name in metrics_for(task)}
