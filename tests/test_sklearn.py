"""AutoDNNClassifier / AutoDNNRegressor as scikit-learn estimators (tiny budgets bounded by trial counts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import automl_dnn
from automl_dnn import AutoDNNClassifier, AutoDNNRegressor
from automl_dnn.errors import AutoDNNError, DataError
from tests.conftest import no_trial_completes

TINY = dict(time_budget=None, n_trials=2, space="quick", gbt_trials=1, threads=1)


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return X, np.where(y == 1, "benign", "malignant")


@pytest.fixture(scope="module")
def classifier(cancer: tuple[np.ndarray, np.ndarray]) -> AutoDNNClassifier:
    X, y = cancer
    return AutoDNNClassifier(**TINY).fit(X[:400], y[:400])


@pytest.fixture(scope="module")
def regressor() -> tuple[AutoDNNRegressor, pd.DataFrame, pd.Series]:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return AutoDNNRegressor(**TINY).fit(X, y), X, y


def test_init_only_stores_parameters() -> None:
    est = AutoDNNClassifier(n_trials=3, space="quick")
    assert est.get_params()["n_trials"] == 3 and est.get_params()["test_size"] == 0.0
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est.predict(np.zeros((2, 3)))


def test_classifier_fit_predict_score(classifier: AutoDNNClassifier, cancer: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = cancer
    assert list(classifier.classes_) == ["benign", "malignant"] and classifier.n_features_in_ == 30
    pred = classifier.predict(X[400:])
    assert pred.shape == (len(X) - 400,) and set(pred) <= {"benign", "malignant"}
    proba = classifier.predict_proba(X[400:])
    assert proba.shape == (len(X) - 400, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert classifier.score(X[400:], y[400:]) > 0.8
    assert not hasattr(classifier, "feature_names_in_")
    assert classifier.ensemble_report_.members and classifier.search_summary_.n_complete >= 1


def test_a_regressor_whose_budget_ends_before_any_net_trial_is_xgboost_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    no_trial_completes(monkeypatch)  # no net trial completes; XGBoost's thread has its model
    X, y = load_diabetes(return_X_y=True)
    est = AutoDNNRegressor(**{**TINY, "time_budget": 600, "n_trials": None, "folds": 1}).fit(X, y)
    assert est.search_summary_.n_complete == 0
    assert [row.kind for row in est.ensemble_report_.members] == ["xgboost"]
    assert est.predict(X[:7]).shape == (7,) and est.score(X, y) > 0.2


def test_classifier_refuses_a_wrong_width(classifier: AutoDNNClassifier) -> None:
    with pytest.raises(DataError, match="X has 3 features.*fitted with 30"):
        classifier.predict(np.zeros((2, 3)))


def test_save_and_load(classifier: AutoDNNClassifier, cancer: tuple[np.ndarray, np.ndarray],
                       tmp_path: Path) -> None:
    X, _ = cancer
    classifier.save(tmp_path / "model")
    loaded = AutoDNNClassifier.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(X[400:]), classifier.predict_proba(X[400:]))
    assert list(loaded.classes_) == list(classifier.classes_)
    predictor = automl_dnn.load(tmp_path / "model")
    assert predictor.task == "binary" and predictor.predict(X[400:410]).shape == (10,)
    with pytest.raises(AutoDNNError, match="does binary.*AutoDNNClassifier"):
        AutoDNNRegressor.load(tmp_path / "model")


def test_a_loaded_estimator_has_the_parameters_it_was_fitted_with(
        classifier: AutoDNNClassifier, regressor: tuple[AutoDNNRegressor, pd.DataFrame, pd.Series],
        tmp_path: Path) -> None:
    """load gave the defaults (time_budget=60, n_trials=None, ...), so a clone of it searched another way."""
    classifier.save(tmp_path / "clf")
    for folder in (tmp_path / "clf", str(tmp_path / "clf")):
        loaded = AutoDNNClassifier.load(folder)
        assert loaded.get_params() == classifier.get_params() and loaded.get_params()["n_trials"] == 2
    copy = clone(loaded)
    assert copy.get_params() == classifier.get_params() and not hasattr(copy, "classes_")
    model = regressor[0]
    model.save(tmp_path / "reg")
    assert AutoDNNRegressor.load(tmp_path / "reg").get_params() == model.get_params()
    assert clone(AutoDNNRegressor.load(tmp_path / "reg")).get_params()["space"] == "quick"


def test_feature_names_in_are_the_last_fits_and_a_loaded_estimators(
        classifier: AutoDNNClassifier, regressor: tuple[AutoDNNRegressor, pd.DataFrame, pd.Series],
        tmp_path: Path) -> None:
    """A refit on an array kept the names of an earlier fit on a frame (10 names beside n_features_in_ 2), and a
    loaded estimator had no feature_names_in_ at all."""
    model, X, y = regressor
    model.save(tmp_path / "reg")
    assert list(AutoDNNRegressor.load(tmp_path / "reg").feature_names_in_) == list(X.columns)
    classifier.save(tmp_path / "clf")
    assert not hasattr(AutoDNNClassifier.load(tmp_path / "clf"), "feature_names_in_")
    est = AutoDNNRegressor(**{**TINY, "n_trials": 1, "gbt": False}, folds=1).fit(X.iloc[:120, :3], y[:120])
    assert list(est.feature_names_in_) == list(X.columns[:3])
    est.fit(X.iloc[:120, :2].to_numpy(), y[:120])
    assert not hasattr(est, "feature_names_in_") and est.n_features_in_ == 2


def test_regressor_with_a_dataframe(regressor: tuple[AutoDNNRegressor, pd.DataFrame, pd.Series],
                                    tmp_path: Path) -> None:
    model, X, y = regressor
    assert list(model.feature_names_in_) == list(X.columns) and model.n_features_in_ == 10
    assert model.predict(X).shape == (len(X),)
    assert model.score(X, y) > 0.2
    model.save(tmp_path / "reg")
    np.testing.assert_array_equal(AutoDNNRegressor.load(tmp_path / "reg").predict(X), model.predict(X))


def test_work_dir_is_kept(tmp_path: Path) -> None:
    X, y = load_diabetes(return_X_y=True)
    AutoDNNRegressor(**{**TINY, "n_trials": 1, "gbt": False}, work_dir=tmp_path).fit(X[:120], y[:120])
    (fit_dir,) = tmp_path.iterdir()
    assert (fit_dir / "run" / "source.parquet").is_file() and (fit_dir / "model" / "model.json").is_file()
    # a folder that api.fit (or the CLI) wrote records no estimator: loaded with the defaults
    assert AutoDNNRegressor.load(fit_dir / "model").get_params() == AutoDNNRegressor().get_params()


def test_cross_val_score_with_a_pipeline(cancer: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = cancer
    pipe = Pipeline([("scale", StandardScaler()), ("model", AutoDNNClassifier(**TINY))])
    scores = cross_val_score(pipe, X, y, cv=2)
    assert scores.shape == (2,) and np.all(scores > 0.8)


@pytest.mark.parametrize("params, needle", [
    ({"time_budget": "abc"}, "time_budget must be > 0 seconds or None, got 'abc'"),
    ({"n_trials": "3"}, "n_trials must be >= 1 or None, got '3'"),
    ({"top_k": 0}, "top_k must be >= 1, got 0"),
    ({"folds": 0.5}, "folds must be >= 1 or None"),
    ({"gbt": "no"}, "gbt must be True or False, got 'no'"),
    ({"seed": -1}, "seed must be a whole number from 0"),
    ({"threads": 0}, "threads must be a whole number >= 1, got 0"),
    ({"device": "gpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    ({"metric": "rmse"}, "metric does not apply to a binary task: 'rmse'"),
    ({"space": "nosuch"}, "unknown search space 'nosuch'"),
    ({"work_dir": __file__}, "work_dir .* is a file"),
])
def test_bad_parameters_are_a_value_error_naming_them(params: dict, needle: str) -> None:
    """Those from seed on were AutoDNNErrors that are no ValueError, and a work_dir that is a file FileExistsError's
    traceback (they stay AutoDNNErrors too)."""
    X, y = load_breast_cancer(return_X_y=True)
    with pytest.raises(ValueError, match=needle):
        AutoDNNClassifier(**{"n_trials": 1, **params}).fit(X[:60], y[:60])


def test_a_bad_parameter_api_fit_refuses_stays_its_autodnn_error() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    with pytest.raises(AutoDNNError, match="seed must be"):
        AutoDNNClassifier(n_trials=1, seed=-1).fit(X[:60], y[:60])


def test_a_classifier_given_continuous_targets_names_the_regressor() -> None:
    X, y = load_diabetes(return_X_y=True)
    with pytest.raises(DataError, match="too many to be classes; use AutoDNNRegressor"):
        AutoDNNClassifier(**TINY).fit(X[:80], y[:80].astype(float) + 0.5)


def test_sparse_input_is_read_as_dense(classifier: AutoDNNClassifier, cancer: tuple[np.ndarray, np.ndarray]) -> None:
    """OneHotEncoder (and a ColumnTransformer of mostly one-hot columns) hands on a scipy sparse matrix:
    np.asarray wrapped it in a 0-d object array ("X must be 2-D ..., got shape ()")."""
    from scipy import sparse

    X, y = cancer
    np.testing.assert_array_equal(classifier.predict_proba(sparse.csr_matrix(X[400:])), classifier.predict_proba(X[400:]))
    fitted = AutoDNNClassifier(**TINY, folds=1).fit(sparse.csr_matrix(X[:150, :5]), y[:150])
    assert fitted.n_features_in_ == 5 and fitted.predict(sparse.csr_matrix(X[400:405, :5])).shape == (5,)


def test_a_frame_for_a_model_fitted_on_an_array_is_read_by_position(
        classifier: AutoDNNClassifier, cancer: tuple[np.ndarray, np.ndarray]) -> None:
    """As scikit-learn: a warning that the model was fitted without feature names, then the columns by position."""
    X, _ = cancer
    frame = pd.DataFrame(X[400:], columns=load_breast_cancer().feature_names)
    with pytest.warns(UserWarning, match="fitted without feature names"):
        proba = classifier.predict_proba(frame)
    np.testing.assert_array_equal(proba, classifier.predict_proba(X[400:]))


def test_bad_input_is_also_a_value_error(classifier: AutoDNNClassifier) -> None:
    """scikit-learn's convention (and code written for it) catches ValueError; DataError stays catchable."""
    with pytest.raises(ValueError, match="X has 3 features, but AutoDNNClassifier is expecting 30 features"):
        classifier.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="missing column"):
        classifier.predict(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(DataError, match="1 distinct class"):
        AutoDNNClassifier(**TINY).fit(np.zeros((20, 2)), np.ones(20))
    with pytest.raises(ValueError, match="1 distinct class"):
        AutoDNNClassifier(**TINY).fit(np.zeros((20, 2)), np.ones(20))


def test_the_tags_say_what_the_estimators_read() -> None:
    """Missing values, sparse matrices, text and categorical columns: scikit-learn's meta-estimators read the tags."""
    from sklearn.utils import get_tags

    for estimator in (AutoDNNClassifier(), AutoDNNRegressor()):
        inputs = get_tags(estimator).input_tags
        assert inputs.allow_nan and inputs.sparse and inputs.string and inputs.categorical
    assert get_tags(AutoDNNClassifier()).estimator_type == "classifier"
    assert get_tags(AutoDNNRegressor()).estimator_type == "regressor"


def test_feature_names_in_only_for_text_column_names(classifier: AutoDNNClassifier,
                                                     cancer: tuple[np.ndarray, np.ndarray]) -> None:
    """As scikit-learn: a frame made from an array (columns 0, 1, ...) gives no ``feature_names_in_``, and still
    predicts from such a frame."""
    X, y = cancer
    fitted = AutoDNNClassifier(**TINY, folds=1).fit(pd.DataFrame(X[:150, :4]), y[:150])
    assert not hasattr(fitted, "feature_names_in_") and fitted.n_features_in_ == 4
    assert fitted.predict(pd.DataFrame(X[400:403, :4])).shape == (3,)


def test_no_rows_or_no_target_values_are_said_in_the_estimators_terms() -> None:
    """Not the CLI's "target 'target' has no values ...; choose another column with --target"."""
    with pytest.raises(ValueError, match="y has no values: X has 0 rows"):
        AutoDNNRegressor(**TINY).fit(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(ValueError, match=r"X has 0 feature\(s\) \(shape=\(20, 0\)\) while a minimum of 1"):
        AutoDNNRegressor(**TINY).fit(np.zeros((20, 0)), np.arange(20.0))  # was "... besides the target 'target'"
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        AutoDNNRegressor(**TINY).fit(np.zeros((20, 2)), None)  # was "y must be 1-D ..., got shape ()"


def test_complex_numbers_are_refused_not_cut_to_their_real_parts(classifier: AutoDNNClassifier) -> None:
    """numpy's cast dropped the imaginary parts with only a ComplexWarning: the model fitted on noise."""
    X = np.random.default_rng(0).normal(size=(40, 2)) + 1j
    for data in (X, pd.DataFrame({"a": X[:, 0], "b": X[:, 1].real})):
        with pytest.raises(ValueError, match="complex numbers"):
            AutoDNNRegressor(**TINY).fit(data, np.arange(40.0))
    with pytest.raises(ValueError, match="complex numbers"):
        classifier.predict(np.zeros((2, 30), dtype=complex))
    with pytest.raises(ValueError, match="y has no values: every one is missing"):
        AutoDNNRegressor(**TINY).fit(np.zeros((20, 3)), np.full(20, np.nan))


# scikit-learn's own checks of how an estimator refuses bad input (sklearn.utils.estimator_checks): each looks for
# scikit-learn's words in the ValueError, or its DataConversionWarning; all but the last two refuse before a fit
_INPUT_CHECKS = ["check_complex_data", "check_estimators_empty_data_messages", "check_fit2d_1sample",
                 "check_classifiers_regression_target", "check_fit2d_predict1d", "check_supervised_y_2d"]


@pytest.mark.parametrize("check", _INPUT_CHECKS)
@pytest.mark.parametrize("cls", [AutoDNNClassifier, AutoDNNRegressor])
def test_scikit_learns_input_checks_pass(cls: type, check: str) -> None:
    """They failed on the words alone: "X holds complex numbers" (not "Complex data not supported"), "... is
    required" (no end), a 1-row fit's "1 distinct class" (the regressor's named a 'target' column), "too many to be
    classes" (not "continuous"), "X must be 2-D" (not "Reshape your data"), and a column-vector y read silently."""
    from sklearn.utils import estimator_checks

    if check == "check_classifiers_regression_target" and cls is AutoDNNRegressor:
        pytest.skip("a classifier's check")
    if check in ("check_fit2d_predict1d", "check_supervised_y_2d") and cls is not AutoDNNClassifier:
        pytest.skip("the estimators share this code: one of them fits, to keep the suite short")
    getattr(estimator_checks, check)(cls.__name__, cls(**TINY, folds=1))


def test_a_constant_y_is_refused_in_the_regressors_words() -> None:
    with pytest.raises(ValueError, match="y has a single value 3.0; a regressor needs at least two"):
        AutoDNNRegressor(**TINY).fit(np.zeros((20, 2)), np.full(20, 3.0))  # was "target 'target' has ..."
