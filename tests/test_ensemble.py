"""ensemble.py on synthetic saved predictions: no model is trained."""

from __future__ import annotations

import numpy as np
import pytest

from automl_dnn.ensemble import (
    EnsembleResult,
    blend,
    build_ensemble,
    ensemble_loss,
    nelder_mead_weights,
    overfit_warning,
    select_bag,
)
from automl_dnn.errors import AutoDNNError

N = 2000


def _probs(logit: np.ndarray) -> np.ndarray:
    p1 = 1.0 / (1.0 + np.exp(-logit))
    return np.column_stack([1.0 - p1, p1])


@pytest.fixture(scope="module")
def binary_preds() -> dict[str, np.ndarray]:
    """Two decent models with independent errors, an exact duplicate, and a useless random one."""
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0.0, 2.0, N)
    y = (rng.random(N) < 1.0 / (1.0 + np.exp(-true_logit))).astype(np.int64)
    # Shrunk logits keep the two models roughly calibrated: mixing in an uninformative 50/50-ish
    # prediction would otherwise earn real weight by tempering overconfidence.
    a = _probs(0.7 * (true_logit + rng.normal(0.0, 1.0, N)))
    b = _probs(0.7 * (true_logit + rng.normal(0.0, 1.2, N)))
    noise = _probs(rng.normal(0.0, 2.0, N))
    return {"y": y, "a": a, "b": b, "noise": noise}


@pytest.fixture(scope="module")
def regression_preds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    y = 50.0 + 10.0 * rng.normal(size=20000)
    return {"y": y, "a": y + rng.normal(0.0, 1.0, y.size), "b": y + rng.normal(0.0, 1.5, y.size)}


def test_blend_normalizes() -> None:
    rng = np.random.default_rng(2)
    p = [rng.dirichlet(np.ones(4), size=10) for _ in range(3)]
    out = blend(p, [2.0, 1.0, 1.0])
    np.testing.assert_allclose(out, 0.5 * p[0] + 0.25 * p[1] + 0.25 * p[2])
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(blend([np.array([1.0, 2.0]), np.array([3.0, 6.0])], [1, 3]), [2.5, 5.0])
    with pytest.raises(ValueError, match=r"\[1.0, -1.0, 1.0\]"):
        blend(p, [1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="2 weights for 3"):
        blend(p, [1.0, 1.0])
    with pytest.raises(ValueError, match="one shape"):
        blend([p[0], p[1][:5]], [1.0, 1.0])


def test_ensemble_loss_is_proper() -> None:
    y = np.array([0, 1])
    assert ensemble_loss("binary", y, np.array([[0.5, 0.5], [0.5, 0.5]])) == pytest.approx(np.log(2))
    assert ensemble_loss("regression", np.array([0.0, 0.0]), np.array([3.0, -3.0])) == pytest.approx(3.0)
    assert ensemble_loss("regression", np.array([0.0]), np.array([np.nan])) == np.inf


def test_nelder_mead_weights_on_simplex_and_beat_equal(binary_preds: dict[str, np.ndarray]) -> None:
    y, preds = binary_preds["y"], [binary_preds["a"], binary_preds["b"], binary_preds["noise"]]
    w = nelder_mead_weights("binary", y, preds)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert ensemble_loss("binary", y, blend(preds, w)) <= ensemble_loss("binary", y, blend(preds, np.ones(3)))
    assert w[2] < 1e-3  # the random candidate gets ~0 weight
    assert w[0] > w[1]  # the less noisy model weighs more
    np.testing.assert_array_equal(w, nelder_mead_weights("binary", y, preds))  # deterministic


def test_nelder_mead_recovers_inverse_variance_weights(regression_preds: dict[str, np.ndarray]) -> None:
    w = nelder_mead_weights("regression", regression_preds["y"], [regression_preds["a"], regression_preds["b"]])
    optimum = (1 / 1.0**2) / (1 / 1.0**2 + 1 / 1.5**2)  # 0.692
    assert w[0] == pytest.approx(optimum, abs=0.03)


def test_nelder_mead_falls_back_to_equal_weights() -> None:
    y = np.array([0, 1, 1, 0])
    p = np.array([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8], [0.6, 0.4]])
    np.testing.assert_array_equal(nelder_mead_weights("binary", y, [p, p.copy()]), [0.5, 0.5])  # nothing to gain
    np.testing.assert_array_equal(nelder_mead_weights("binary", y, [p]), [1.0])


def test_selection_ignores_duplicate_and_noise(binary_preds: dict[str, np.ndarray]) -> None:
    a, b, noise = binary_preds["a"], binary_preds["b"], binary_preds["noise"]
    candidates = [a, a.copy(), b, noise]
    assert list(select_bag("binary", binary_preds["y"], candidates, max_members=4)) == [0, 2]
    assert list(select_bag("binary", binary_preds["y"], candidates, max_members=1)) == [0]
    assert list(select_bag("binary", binary_preds["y"], [noise, b, a], max_members=3)) == [2, 1]  # starts from the best


def test_selection_skips_diverged_candidates(binary_preds: dict[str, np.ndarray]) -> None:
    broken = np.full_like(binary_preds["a"], np.nan)
    assert list(select_bag("binary", binary_preds["y"], [broken, binary_preds["a"]], max_members=2)) == [1]
    with pytest.raises(AutoDNNError, match="finite"):
        list(select_bag("binary", binary_preds["y"], [broken], max_members=2))
    with pytest.raises(ValueError, match="max_members=0"):
        list(select_bag("binary", binary_preds["y"], [binary_preds["a"]], max_members=0))


def test_build_ensemble_classification(binary_preds: dict[str, np.ndarray]) -> None:
    candidates = [binary_preds["a"], binary_preds["a"].copy(), binary_preds["b"], binary_preds["noise"]]
    r = build_ensemble("binary", binary_preds["y"], candidates, names=["net0", "net0_dup", "xgb", "rand"],
                       max_members=4)
    assert isinstance(r, EnsembleResult)
    assert r.members == [0, 2] and r.names == ["net0", "xgb"]
    assert sum(r.weights) == pytest.approx(1.0) and min(r.weights) >= 0
    assert r.best_single == 0
    assert r.ensemble_loss <= r.equal_weight_loss < r.best_single_loss
    assert r.valid_gain == pytest.approx(r.best_single_loss - r.ensemble_loss)
    assert r.to_dict()["names"] == ["net0", "xgb"]


def test_build_ensemble_single_candidate(binary_preds: dict[str, np.ndarray]) -> None:
    r = build_ensemble("binary", binary_preds["y"], [binary_preds["a"]], max_members=3)
    assert r.members == [0] and r.weights == [1.0] and r.names == ["candidate_0"]
    assert r.best_single_loss == r.equal_weight_loss == r.ensemble_loss
    assert r.valid_gain == 0.0


def test_build_ensemble_regression(regression_preds: dict[str, np.ndarray]) -> None:
    y, a, b = regression_preds["y"], regression_preds["a"], regression_preds["b"]
    r = build_ensemble("regression", y, [a, b], names=["net", "xgb"], max_members=5)
    assert r.members == [0, 1]
    assert r.weights[0] == pytest.approx(0.692, abs=0.03)
    assert r.ensemble_loss < r.equal_weight_loss < r.best_single_loss
    assert r.best_single_loss == pytest.approx(1.0, abs=0.03)  # RMSE of the noise-1 model


def test_build_ensemble_multiclass() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 600)
    onehot = np.eye(3)[y]
    a = 0.5 * onehot + 0.5 * rng.dirichlet(np.ones(3), 600)
    b = 0.5 * onehot + 0.5 * rng.dirichlet(np.ones(3), 600)
    r = build_ensemble("multiclass", y, [a, b], max_members=2)
    assert len(r.members) == 2 and r.ensemble_loss < r.best_single_loss
    np.testing.assert_allclose(blend([a, b], r.weights).sum(axis=1), 1.0)


@pytest.mark.parametrize(
    ("valid_gain", "test_gain", "warns"),
    [
        (0.05, 0.04, False),  # carried over
        (0.05, 0.06, False),
        (0.05, 0.0, True),  # gone on test
        (0.05, -0.01, True),  # worse on test
        (0.05, 0.005, True),  # much smaller
        (0.0, -0.1, False),  # no validation gain to carry over
        (0.05, float("nan"), False),  # no test split
        (2e-17, -5e-17, False),  # rounding noise is no gain
    ],
)
def test_overfit_warning(valid_gain: float, test_gain: float, warns: bool) -> None:
    message = overfit_warning(valid_gain, test_gain)
    assert (message is not None) == warns
    if message is not None:
        assert "\n" not in message and "overfit the validation predictions" in message
        bagged = overfit_warning(valid_gain, test_gain, inner="out-of-fold")
        assert bagged is not None and "in out-of-fold loss" in bagged and "overfit the out-of-fold" in bagged


def test_selection_near_duplicate_adds_nothing(binary_preds: dict[str, np.ndarray]) -> None:
    a = binary_preds["a"]
    near = _probs(np.log(a[:, 1] / a[:, 0]) + np.random.default_rng(4).normal(0.0, 0.01, N))  # another seed
    assert list(select_bag("binary", binary_preds["y"], [a, near], max_members=2)) == [0]


def test_light_members_dropped_only_if_still_better_than_equal(regression_preds: dict[str, np.ndarray]) -> None:
    y, a, b = regression_preds["y"], regression_preds["a"], regression_preds["b"]
    # b's weight (~0.31) is under min_weight, but a alone (RMSE 1.0) loses to the equal average (~0.90)
    r = build_ensemble("regression", y, [a, b], max_members=2, min_weight=0.35)
    assert r.members == [0, 1]


def test_small_validation_pulls_weights_toward_equal(regression_preds: dict[str, np.ndarray]) -> None:
    from automl_dnn.ensemble import SHRINK_ROWS

    y, a, b = regression_preds["y"], regression_preds["a"], regression_preds["b"]
    large = build_ensemble("regression", y, [a, b], always=[1], shrink_rows=SHRINK_ROWS)
    small = build_ensemble("regression", y[:100], [a[:100], b[:100]], always=[1], shrink_rows=SHRINK_ROWS)
    fitted = nelder_mead_weights("regression", y[:100], [a[:100], b[:100]])
    assert abs(large.weights[0] - 1.5**2 / (1 + 1.5**2)) < 0.03  # barely moved on 20,000 rows
    assert small.weights == pytest.approx(0.5 * np.asarray(fitted) + 0.25)  # halfway at 100 rows


def test_always_keeps_the_tree_member_greedy_would_drop(binary_preds: dict[str, np.ndarray]) -> None:
    y, a, noise = binary_preds["y"], binary_preds["a"], binary_preds["noise"]
    assert build_ensemble("binary", y, [a, noise]).members == [0]
    kept = build_ensemble("binary", y, [a, noise], always=[1])
    assert kept.members == [0, 1] and sum(kept.weights) == pytest.approx(1.0)


def test_a_member_that_helps_only_at_a_small_weight_joins() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=20000)
    strong, weak = y + rng.normal(0.0, 1.0, y.size), y + rng.normal(0.0, 2.0, y.size)
    # At equal weights the weak model hurts (error variance (1 + 4) / 4 > 1); at weight ~0.2 it helps.
    assert ensemble_loss("regression", y, (strong + weak) / 2) > ensemble_loss("regression", y, strong)
    bag = select_bag("regression", y, [strong, weak], max_members=2)
    assert set(bag) == {0, 1} and bag[0] > bag[1]
    result = build_ensemble("regression", y, [strong, weak], max_members=2)
    assert result.weights[1] == pytest.approx(0.2, abs=0.03)


def test_an_mae_study_weights_its_members_by_mae() -> None:
    """RMSE is minimized by the mean, MAE by the median: with a few extreme targets the two pick other
    members. A model shifted toward the outliers wins on RMSE and loses on MAE."""
    rng = np.random.default_rng(4)
    y = rng.normal(size=2000)
    y[:10] = 1e4  # 0.5 % extreme targets
    median_like = np.where(np.arange(y.size) < 10, 0.0, y + rng.normal(0.0, 0.3, y.size))
    shifted = median_like + 50.0  # the mean's pull: 0.5 % of 1e4
    assert ensemble_loss("regression", y, shifted) < ensemble_loss("regression", y, median_like)
    assert ensemble_loss("regression", y, median_like, "mae") < ensemble_loss("regression", y, shifted, "mae")
    assert build_ensemble("regression", y, [shifted, median_like]).members == [0]
    mae = build_ensemble("regression", y, [shifted, median_like], metric="mae")
    assert mae.members == [1] and mae.ensemble_loss == pytest.approx(ensemble_loss("regression", y, median_like, "mae"))
    assert ensemble_loss("binary", np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]]), "mae") == pytest.approx(
        np.log(2))  # classification keeps log-loss whatever the study's metric
