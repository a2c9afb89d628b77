"""Member selection, Nelder-Mead weights and the decision threshold, from saved validation predictions only.

Nothing is trained here (as in rtdl's ensemble scripts): every candidate is a prediction array in the
project's convention (probabilities ``(n, K)`` or regression values ``(n,)``), so the ensemble can be
rebuilt at any time from a run's artifacts.

Losses are proper scoring rules whatever metric the search optimized: log-loss for classification,
RMSE for regression. Selection is Caruana-style greedy forward selection *with replacement* (a member
picked again gains weight) over a fixed number of steps, keeping the best bag seen; a bag only counts
as better when it lowers the loss by a relative ``min_rel_gain``. An exact copy of a member is never
picked as a new member (in an average it would only re-weight its twin, which is Nelder-Mead's job),
so diversity (a net plus XGBoost) is what gets in (techniques.md §10). The selected members
then get Nelder-Mead weights on the simplex, kept only when they beat the selection's own weights,
and are pulled toward equal weights on small validation splits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from automl_dnn import metrics
from automl_dnn.errors import AutoDNNError

#: Validation rows at which fitted weights and equal weights count alike (see build_ensemble).
SHRINK_ROWS = 100.0
THRESHOLD_GRID = np.round(np.arange(0.02, 0.985, 0.01), 2)
MIN_THRESHOLD_GAIN = 0.005  # what a threshold must add to the label metric must add over 0.5 on validation to be used


def ensemble_loss(task: str, y: np.ndarray, pred: np.ndarray, metric: str | None = None) -> float:
    """Log-loss for classification, RMSE for regression (MAE for a study on ``metric`` MAE:
    ``metrics.proper_loss``); ``inf`` for non-finite predictions."""
    return metrics.score(metrics.proper_loss(task, metric), y, pred)


def _normalized(weights: Any, n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != n:
        raise ValueError(f"{len(w)} weights for {n} predictions")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w / w.sum()


def blend(preds: Sequence[np.ndarray], weights: Any) -> np.ndarray:
    """Weighted average of predictions; weights are normalized, probability rows stay summing to 1."""
    if len(preds) == 0:
        raise ValueError("blend needs at least one prediction")
    w = _normalized(weights, len(preds))
    shapes = {np.shape(p) for p in preds}
    if len(shapes) != 1:
        raise ValueError(f"predictions must share one shape, got {sorted(shapes)}")
    out = np.tensordot(w, np.stack([np.asarray(p, dtype=np.float64) for p in preds]), axes=1)
    if out.ndim == 2:  # probabilities: undo float drift from members that were not exactly normalized
        out = out / out.sum(axis=1, keepdims=True)
    return out


def _equal(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def _same(a: np.ndarray, b: np.ndarray, rtol: float = 1e-6) -> bool:
    """Whether two predictions are copies (up to float noise) of each other."""
    scale = max(1.0, float(np.max(np.abs(b))))
    return a.shape == b.shape and float(np.max(np.abs(a - b))) <= rtol * scale


def select_bag(
    task: str,
    y_valid: np.ndarray,
    candidates: Sequence[np.ndarray],
    *,
    max_members: int,
    min_rel_gain: float = 1e-3,
    steps: int = 25,
    metric: str | None = None,
) -> dict[int, int]:
    """Caruana-style forward selection *with replacement*: candidate index -> times picked.

    Starts from the best single candidate (ties go to the earlier one: the caller orders candidates best
    first); each step adds to the bag the candidate (new, or already in it) whose addition gives the
    lowest validation loss of the bag's average, even when that is not lower: picking a member again
    shifts weight, so a model that helps only at a small weight (a net beside a stronger tree model)
    can join a few steps later. Returns the best bag seen, where a bag only counts as better when it
    lowers the loss by more than ``min_rel_gain`` (relative). At most ``max_members`` distinct members;
    candidates with a non-finite loss, and exact copies of a member, are never picked. ``metric``: the
    study's, which picks the loss (``ensemble_loss``).
    """
    if max_members < 1:
        raise ValueError(f"max_members must be >= 1, got {max_members=}")
    if min_rel_gain < 0:
        raise ValueError(f"min_rel_gain must be >= 0, got {min_rel_gain=}")
    if len(candidates) == 0:
        raise ValueError("select_bag needs at least one candidate")
    preds = [np.asarray(p, dtype=np.float64) for p in candidates]
    singles = [ensemble_loss(task, y_valid, p, metric) for p in preds]
    usable = [i for i, loss in enumerate(singles) if math.isfinite(loss)]
    if not usable:
        raise AutoDNNError(
            "no ensemble candidate has a finite validation loss: every model diverged; try a smaller learning rate"
        )
    first = min(usable, key=lambda i: (singles[i], i))
    bag, total = {first: 1}, preds[first].copy()
    best_bag, best_loss = dict(bag), singles[first]
    for size in range(2, steps + 1):
        options = [i for i in usable if i in bag or (
            len(bag) < max_members and not any(_same(preds[i], preds[j]) for j in bag))]
        loss, pick = min((ensemble_loss(task, y_valid, (total + preds[i]) / size, metric), i) for i in options)
        bag[pick] = bag.get(pick, 0) + 1
        total += preds[pick]
        if loss < best_loss - min_rel_gain * abs(best_loss):
            best_bag, best_loss = dict(bag), loss
    return best_bag


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _weights_of(x: np.ndarray) -> np.ndarray:
    """Unconstrained point -> weights >= 0 summing to 1: softmax of (0, x), the first logit pinned at 0."""
    return _softmax(np.concatenate([[0.0], x]))


def nelder_mead_weights(
    task: str,
    y_valid: np.ndarray,
    preds: Sequence[np.ndarray],
    *,
    seed: int = 0,
    restarts: int = 2,
    step: float = 1.0,
    rel_tol: float = 1e-9,
    metric: str | None = None,
) -> np.ndarray:
    """Weights (>= 0, sum 1) minimizing the blend's validation loss, by SciPy's Nelder-Mead.

    Optimizes the logits of a softmax (the first pinned at 0, so no redundant direction), starting from
    equal weights with a simplex of ``step`` along each axis. Nelder-Mead can stall on a collapsed
    simplex, so it then restarts ``restarts`` times from its best point with a fresh simplex whose
    directions' signs are drawn from ``seed``. Returns equal weights unless it beats them by more than
    ``rel_tol`` (relative), so float noise never passes for a gain.
    """
    m = len(preds)
    if m == 0:
        raise ValueError("nelder_mead_weights needs at least one prediction")
    if m == 1:
        return np.ones(1)

    def loss(x: np.ndarray) -> float:
        return ensemble_loss(task, y_valid, blend(preds, _weights_of(x)), metric)

    rng = np.random.default_rng(seed)
    x = np.zeros(m - 1)
    best_x, best_loss = x, loss(x)
    equal_loss = best_loss
    for attempt in range(restarts + 1):
        signs = np.ones(m - 1) if attempt == 0 else rng.choice([-1.0, 1.0], size=m - 1)
        simplex = np.vstack([best_x, best_x + step * np.diag(signs)])
        res = minimize(
            loss,
            best_x,
            method="Nelder-Mead",
            options={"initial_simplex": simplex, "xatol": 1e-4, "fatol": 1e-8, "maxiter": 400 * m, "adaptive": m > 3},
        )
        if res.fun < best_loss:
            best_x, best_loss = np.asarray(res.x), float(res.fun)
    return _weights_of(best_x) if best_loss < equal_loss - rel_tol * abs(equal_loss) else _equal(m)


@dataclass
class EnsembleResult:
    """The chosen members (indices into the candidates), their weights, and validation losses to compare."""

    members: list[int]
    names: list[str]
    weights: list[float]
    best_single: int  # index of the best single candidate
    best_single_loss: float
    equal_weight_loss: float  # equal-weight average of the selected members
    ensemble_loss: float  # weighted ensemble

    @property
    def valid_gain(self) -> float:
        """How much lower the ensemble's validation loss is than the best single model's (>= 0)."""
        return self.best_single_loss - self.ensemble_loss

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for the run report and the exported model."""
        return {
            "members": self.members,
            "names": self.names,
            "weights": self.weights,
            "best_single": self.best_single,
            "best_single_loss": self.best_single_loss,
            "equal_weight_loss": self.equal_weight_loss,
            "ensemble_loss": self.ensemble_loss,
        }


def _drop_light(weights: np.ndarray, min_weight: float) -> tuple[list[int], np.ndarray]:
    """Drop members below ``min_weight`` (they only cost predict time) and renormalize the rest."""
    keep = [i for i, w in enumerate(weights) if w >= min_weight]
    if not keep:
        return list(range(len(weights))), weights
    return keep, weights[keep] / weights[keep].sum()


def build_ensemble(
    task: str,
    y_valid: np.ndarray,
    candidate_preds_valid: Sequence[np.ndarray],
    *,
    names: Sequence[str] | None = None,
    max_members: int = 5,
    min_rel_gain: float = 1e-3,
    min_weight: float = 0.01,
    seed: int = 0,
    always: Sequence[int] = (),
    shrink_rows: float = SHRINK_ROWS,
    metric: str | None = None,
) -> EnsembleResult:
    """Select members greedily, weight them by Nelder-Mead, and report the validation losses.

    ``always`` lists candidates kept whatever the greedy step says (the tree model: a net plus trees is
    the classic strong, diverse pair). The Nelder-Mead weights are then pulled toward equal weights by
    ``shrink_rows / (shrink_rows + n_valid)``: on a small validation split the best-looking member is
    partly luck (the winner's curse), and fitted weights overfit it; on a large one this barely moves
    them. Members whose weight ends below ``min_weight`` are dropped (and the rest renormalized) when
    that still beats the equal-weight average, so the exported model does not run near-useless members.
    Every loss is ``ensemble_loss``'s for the study's ``metric``.
    """
    n = len(candidate_preds_valid)
    names = [f"candidate_{i}" for i in range(n)] if names is None else list(names)
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} candidates")
    bag = select_bag(task, y_valid, candidate_preds_valid, max_members=max_members, min_rel_gain=min_rel_gain,
                     metric=metric)

    def loss(pred: np.ndarray) -> float:
        return ensemble_loss(task, y_valid, pred, metric)

    selected = list(bag)
    best_single = selected[0]
    selected += [i for i in always if i not in selected and math.isfinite(loss(candidate_preds_valid[i]))]
    preds = [candidate_preds_valid[i] for i in selected]
    equal_loss = loss(blend(preds, _equal(len(preds))))
    weights = nelder_mead_weights(task, y_valid, preds, seed=seed, metric=metric)
    counts = np.array([bag.get(i, 0) for i in selected], dtype=np.float64) / sum(bag.values())
    if loss(blend(preds, counts)) < loss(blend(preds, weights)):
        weights = counts  # Nelder-Mead stopped short of the selection's own weights
    shrink = shrink_rows / (shrink_rows + len(y_valid))
    weights = (1.0 - shrink) * np.asarray(weights) + shrink * _equal(len(preds))
    final_loss = loss(blend(preds, weights))

    keep, kept_w = _drop_light(weights, min_weight)
    if len(keep) < len(selected):
        kept_loss = loss(blend([preds[i] for i in keep], kept_w))
        if kept_loss <= equal_loss:
            selected, weights, final_loss = [selected[i] for i in keep], kept_w, kept_loss

    return EnsembleResult(
        members=selected,
        names=[names[i] for i in selected],
        weights=[float(w) for w in weights],
        best_single=best_single,
        best_single_loss=loss(candidate_preds_valid[best_single]),
        equal_weight_loss=equal_loss,
        ensemble_loss=final_loss,
    )


def overfit_warning(valid_gain: float, test_gain: float, *, min_ratio: float = 0.25,
                    min_gain: float = 1e-9, inner: str = "validation") -> str | None:
    """A one-line warning when the ensemble's validation gain over the best single model does not carry to test.

    Gains are loss reductions (positive = the ensemble is better); ``inner`` names the predictions the
    weights were fitted on ("validation", or "out-of-fold" after bagging). Warns when the ensemble gained on
    validation but gains nothing on test, or less than ``min_ratio`` of its validation gain; None when
    there is nothing to compare (no validation gain, or a non-finite gain such as an empty test split).
    """
    if not (math.isfinite(valid_gain) and math.isfinite(test_gain)) or valid_gain <= min_gain:
        return None  # no gain, or rounding noise
    if test_gain >= min_ratio * valid_gain:
        return None
    on_test = f"only by {test_gain:.4g} on test" if test_gain > 0 else f"not at all on test (gain {test_gain:.4g})"
    return (
        f"the ensemble beat the best single model by {valid_gain:.4g} in {inner} loss but {on_test}: "
        f"its members and weights overfit the {inner} predictions"
    )


def choose_threshold(y: np.ndarray, p1: np.ndarray, metric: str) -> tuple[float | None, str]:
    """The P(class 1) cut that maximizes the study's metric, or None (0.5) where a cut cannot help it.

    Only a label metric (accuracy, balanced accuracy) moves the cut: log-loss and ROC-AUC score the
    probabilities, which a cut leaves alone. Ties go to the cut closest to 0.5; a cut must beat 0.5 by
    ``MIN_THRESHOLD_GAIN`` so that noise on a small validation split does not move it.
    """
    if metric not in metrics.LABEL_METRICS:
        return None, f"decision threshold 0.5 ({metric} scores probabilities, which a threshold does not change)"
    proba = np.stack([1.0 - p1, p1], axis=1)

    def scored(threshold: float) -> float:
        return metrics.score(metric, y, proba, threshold)

    base = scored(0.5)
    best, _, cut = max((scored(float(t)), -abs(float(t) - 0.5), float(t)) for t in THRESHOLD_GRID)
    name = metric.replace("_", " ")
    if best < base + MIN_THRESHOLD_GAIN or len(np.unique(y)) < 2:
        return None, f"decision threshold 0.5 ({name} {base:.4f}; no cut does clearly better)"
    return cut, f"decision threshold {cut:.2f}: {name} {best:.4f} (vs {base:.4f} at 0.5)"
