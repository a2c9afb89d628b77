"""metrics.py against scikit-learn on hand examples, plus the robustness rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from automl_dnn import metrics
from automl_dnn.errors import AutoDNNError

Y_BIN = np.array([0, 1, 1, 0, 1, 0])
P_BIN = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.8, 0.2], [0.1, 0.9], [0.45, 0.55]])
Y_MC = np.array([0, 1, 2, 2, 1, 0, 2])
P_MC = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.1, 0.6, 0.3],
        [0.2, 0.2, 0.6],
        [0.3, 0.4, 0.3],
        [0.5, 0.3, 0.2],
        [0.6, 0.3, 0.1],
        [0.1, 0.1, 0.8],
    ]
)
Y_REG = np.array([3.0, -0.5, 2.0, 7.0])
P_REG = np.array([2.5, 0.0, 2.0, 8.0])


@pytest.mark.parametrize(
    ("metric", "y", "p", "expected"),
    [
        ("logloss", Y_BIN, P_BIN, skm.log_loss(Y_BIN, P_BIN)),
        ("accuracy", Y_BIN, P_BIN, skm.accuracy_score(Y_BIN, P_BIN.argmax(1))),
        ("roc_auc", Y_BIN, P_BIN, skm.roc_auc_score(Y_BIN, P_BIN[:, 1])),
        ("balanced_accuracy", Y_BIN, P_BIN, skm.balanced_accuracy_score(Y_BIN, P_BIN.argmax(1))),
        ("logloss", Y_MC, P_MC, skm.log_loss(Y_MC, P_MC)),
        ("accuracy", Y_MC, P_MC, skm.accuracy_score(Y_MC, P_MC.argmax(1))),
        ("roc_auc", Y_MC, P_MC, skm.roc_auc_score(Y_MC, P_MC, multi_class="ovr", average="macro")),
        ("balanced_accuracy", Y_MC, P_MC, skm.balanced_accuracy_score(Y_MC, P_MC.argmax(1))),
        ("rmse", Y_REG, P_REG, math.sqrt(skm.mean_squared_error(Y_REG, P_REG))),
        ("mae", Y_REG, P_REG, skm.mean_absolute_error(Y_REG, P_REG)),
        ("r2", Y_REG, P_REG, skm.r2_score(Y_REG, P_REG)),
    ],
)
def test_score_matches_sklearn(metric: str, y: np.ndarray, p: np.ndarray, expected: float) -> None:
    assert metrics.score(metric, y, p) == pytest.approx(expected, rel=1e-12)


def test_directions_and_as_loss_sign() -> None:
    assert {m: metrics.direction(m) for m in metrics.METRICS} == {
        "logloss": "minimize",
        "accuracy": "maximize",
        "roc_auc": "maximize",
        "balanced_accuracy": "maximize",
        "rmse": "minimize",
        "mae": "minimize",
        "r2": "maximize",
    }
    assert metrics.as_loss("logloss", 0.3) == 0.3
    assert metrics.as_loss("accuracy", 0.9) == -0.9
    assert metrics.as_loss("accuracy", 0.9) < metrics.as_loss("accuracy", 0.8)  # better -> lower loss
    assert metrics.as_loss("roc_auc", math.nan) == math.inf


def test_defaults_and_metrics_for() -> None:
    assert metrics.default_metric("binary") == "logloss"
    assert metrics.default_metric("multiclass") == "logloss"
    assert metrics.default_metric("regression") == "rmse"
    assert metrics.metrics_for("regression") == ["rmse", "mae", "r2"]
    assert "roc_auc" in metrics.metrics_for("multiclass")
    with pytest.raises(ValueError, match="'ranking'"):
        metrics.default_metric("ranking")


def test_check_metric() -> None:
    metrics.check_metric("roc_auc", "binary")  # no error
    with pytest.raises(AutoDNNError, match="does not apply.*rmse, mae, r2") as err:
        metrics.check_metric("accuracy", "regression")
    assert "\n" not in str(err.value)
    with pytest.raises(AutoDNNError, match="unknown metric: 'f1'.*logloss"):
        metrics.check_metric("f1", "binary")


def test_split_missing_a_class() -> None:
    y = np.array([0, 0, 2, 2])  # class 1 absent from this split
    p = np.array([[0.8, 0.1, 0.1], [0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])
    assert metrics.score("logloss", y, p) == pytest.approx(skm.log_loss(y, p, labels=[0, 1, 2]))
    assert metrics.score("balanced_accuracy", y, p) == pytest.approx(0.75)
    # AUC averaged over the classes present, each one-vs-rest
    expected = np.mean([skm.roc_auc_score(y == k, p[:, k]) for k in (0, 2)])
    assert metrics.score("roc_auc", y, p) == pytest.approx(expected)
    assert set(metrics.all_scores("multiclass", y, p)) == {"logloss", "accuracy", "roc_auc", "balanced_accuracy"}


def test_roc_auc_one_class_is_nan() -> None:
    assert math.isnan(metrics.score("roc_auc", np.array([1, 1, 1]), P_BIN[:3]))
    assert math.isnan(metrics.score("roc_auc", np.array([2, 2]), P_MC[:2]))


def test_logloss_clips_and_renormalizes() -> None:
    y = np.array([0, 1])
    p = np.array([[1.0, 0.0], [1.0, 0.0]])  # a confident wrong answer costs ~34.5 nats, not inf
    value = metrics.score("logloss", y, p)
    assert math.isfinite(value)
    assert value == pytest.approx(-np.log(1e-15) / 2, rel=1e-6)


@pytest.mark.parametrize("metric", ["logloss", "accuracy", "roc_auc", "rmse", "r2"])
def test_non_finite_predictions_are_infinite_loss(metric: str) -> None:
    if metric in ("rmse", "r2"):
        y, p = Y_REG, P_REG.copy()
        p[1] = np.nan
    else:
        y, p = Y_BIN, P_BIN.copy()
        p[0, 0] = np.inf
    assert metrics.as_loss(metric, metrics.score(metric, y, p)) == math.inf


def test_all_scores_regression() -> None:
    scores = metrics.all_scores("regression", Y_REG, P_REG)
    assert list(scores) == ["rmse", "mae", "r2"]
    assert scores["mae"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("metric", "y", "p", "match"),
    [
        ("logloss", Y_BIN, P_BIN[:, 1], r"\(n, K>=2\).*\(6,\)"),
        ("rmse", Y_REG, P_REG[:, None], r"1-D.*\(4, 1\)"),
        ("accuracy", Y_BIN[:5], P_BIN, "6 predictions for 5 labels"),
        ("accuracy", Y_BIN + 1, P_BIN, r"0\.\.1"),
        ("nope", Y_BIN, P_BIN, "unknown metric 'nope'"),
    ],
)
def test_programming_errors_show_the_value(metric: str, y: np.ndarray, p: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        metrics.score(metric, y, p)
