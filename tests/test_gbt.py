"""gbt.py on small synthetic frames with a categorical column and missing values."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.datasets import make_classification, make_regression

from automl_dnn import metrics
from automl_dnn.gbt import DEFAULT_PARAMS, GBTResult, _Deadline, align_categories, fit_gbt, predict_gbt, xgb_names

N_TRAIN = 400
CATS = ["red", "green", "blue", "unused"]  # fixed categories, one never seen (as the preprocessor does)


def _frame(X: np.ndarray, signal: np.ndarray, seed: int) -> pd.DataFrame:
    """Numeric columns with ~10% NaNs plus a categorical column that carries part of the signal."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    df = df.mask(rng.random(df.shape) < 0.1)
    noisy = np.where(rng.random(len(df)) < 0.1, rng.integers(0, 3, len(df)), signal)
    df["color"] = pd.Categorical(np.array(CATS)[noisy], categories=CATS)
    return df


def _split(df: pd.DataFrame, y: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    return df.iloc[:N_TRAIN], y[:N_TRAIN], df.iloc[N_TRAIN:].reset_index(drop=True), y[N_TRAIN:]


@pytest.fixture(scope="module")
def binary_data() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    X, y = make_classification(600, 6, n_informative=4, random_state=0)
    return _split(_frame(X, y, 0), y)


@pytest.fixture(scope="module")
def multiclass_data() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    X, y = make_classification(600, 6, n_informative=4, n_classes=3, random_state=1)
    return _split(_frame(X, y, 1), y)


@pytest.fixture(scope="module")
def regression_data() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    X, y = make_regression(600, 6, n_informative=4, noise=5.0, random_state=2)
    group = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))  # the category tracks the target's tercile
    return _split(_frame(X, group, 2), 100.0 + y)  # original scale, not centred


@pytest.fixture(scope="module")
def binary_result(binary_data) -> GBTResult:
    X_tr, y_tr, X_va, y_va = binary_data
    return fit_gbt(X_tr, y_tr, X_va, y_va, task="binary", n_classes=2, n_trials=3, seed=0, threads=2)


def test_binary_beats_prior_and_search_records_trials(binary_data, binary_result: GBTResult) -> None:
    _, y_tr, X_va, y_va = binary_data
    pred = predict_gbt(binary_result.booster, X_va, task="binary")
    assert pred.shape == (len(y_va), 2)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0)
    prior = np.tile(np.bincount(y_tr, minlength=2) / len(y_tr), (len(y_va), 1))
    assert metrics.score("logloss", y_va, pred) < 0.6 * metrics.score("logloss", y_va, prior)
    assert metrics.score("accuracy", y_va, pred) > 0.85
    # the search ran 3 trials, the first with the defaults, and kept the best one
    r = binary_result
    assert r.n_trials_run == len(r.trials) == 3
    assert r.trials[0]["params"] == DEFAULT_PARAMS
    assert r.trials[1]["params"] != DEFAULT_PARAMS
    assert r.valid_loss == min(t["valid_loss"] for t in r.trials)
    assert r.valid_loss == pytest.approx(metrics.score("logloss", y_va, pred))
    assert r.booster.num_boosted_rounds() == r.best_iteration + 1
    assert r.params["objective"] == "binary:logistic" and r.params["tree_method"] == "hist"
    assert r.seconds > 0
    assert "color" in r.booster.get_score(importance_type="gain")  # the categorical column is used natively
    json.dumps(r.to_dict())  # the summary is JSON-able


def test_multiclass(multiclass_data) -> None:
    X_tr, y_tr, X_va, y_va = multiclass_data
    r = fit_gbt(X_tr, y_tr, X_va, y_va, task="multiclass", n_classes=3, n_trials=1, threads=2)
    pred = predict_gbt(r.booster, X_va, task="multiclass")
    assert pred.shape == (len(y_va), 3)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-6)
    assert metrics.score("logloss", y_va, pred) < 0.6 * math.log(3)
    assert metrics.score("accuracy", y_va, pred) > 0.75


def test_regression_on_original_scale(regression_data) -> None:
    X_tr, y_tr, X_va, y_va = regression_data
    r = fit_gbt(X_tr, y_tr, X_va, y_va, task="regression", n_classes=0, n_trials=1, threads=2)
    pred = predict_gbt(r.booster, X_va, task="regression")
    assert pred.shape == (len(y_va),)
    baseline = metrics.score("rmse", y_va, np.full(len(y_va), y_tr.mean()))
    assert metrics.score("rmse", y_va, pred) < 0.6 * baseline
    assert r.params["objective"] == "reg:squarederror"
    again = fit_gbt(X_tr, y_tr, X_va, y_va, task="regression", n_classes=0, n_trials=1, threads=2)
    np.testing.assert_array_equal(predict_gbt(again.booster, X_va, task="regression"), pred)  # seeded


@pytest.mark.parametrize("suffix", ["json", "ubj"])
def test_save_load_round_trip_predicts_identically(
    binary_data, binary_result: GBTResult, tmp_path: Path, suffix: str
) -> None:
    X_va = binary_data[2]
    path = tmp_path / f"gbt.{suffix}"
    binary_result.booster.save_model(path)
    loaded = xgb.Booster()
    loaded.load_model(path)
    np.testing.assert_array_equal(
        predict_gbt(loaded, X_va, task="binary"), predict_gbt(binary_result.booster, X_va, task="binary")
    )
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing else (no pickle) written
    if suffix == "json":
        assert json.loads(path.read_text())["learner"]["objective"]["name"] == "binary:logistic"


def test_reordered_categories_are_realigned(binary_data, binary_result: GBTResult) -> None:
    X_va = binary_data[2]
    shuffled = X_va.copy()
    shuffled["color"] = shuffled["color"].cat.reorder_categories(CATS[::-1])
    expected = predict_gbt(binary_result.booster, X_va, task="binary")
    got = predict_gbt(binary_result.booster, shuffled, task="binary", categories=binary_result.categories)
    np.testing.assert_array_equal(got, expected)
    assert binary_result.categories == {"color": CATS}
    unseen = align_categories(pd.DataFrame({"color": ["red", "purple"]}), {"color": CATS})
    assert unseen["color"].isna().tolist() == [False, True]  # unseen values become missing


@pytest.mark.parametrize(("n_trials", "time_budget"), [(0, None), (1, None), (5, 0.0)])
def test_only_the_default_trial(binary_data, n_trials: int, time_budget: float | None) -> None:
    X_tr, y_tr, X_va, y_va = binary_data
    r = fit_gbt(
        X_tr, y_tr, X_va, y_va, task="binary", n_classes=2, n_trials=n_trials, time_budget=time_budget, threads=2
    )
    assert r.n_trials_run == 1  # a zero budget still yields the default model, boosted MIN_FIRST_ROUNDS
    assert {k: r.params[k] for k in DEFAULT_PARAMS} == DEFAULT_PARAMS
    assert r.best_iteration > 10


def test_budget_left_lets_later_trials_run(binary_data) -> None:
    X_tr, y_tr, X_va, y_va = binary_data
    r = fit_gbt(X_tr, y_tr, X_va, y_va, task="binary", n_classes=2, n_trials=2, time_budget=600.0, threads=2)
    assert r.n_trials_run == 2


def test_deadline_stops_boosting_once_passed() -> None:
    assert _Deadline(time.monotonic() - 1.0).after_iteration(None, 0, {}) is True  # type: ignore[arg-type]
    assert _Deadline(time.monotonic() + 600.0).after_iteration(None, 0, {}) is False  # type: ignore[arg-type]
    past_but_young = _Deadline(time.monotonic() - 1.0, min_rounds=20)
    assert past_but_young.after_iteration(None, 18, {}) is False  # type: ignore[arg-type]
    assert past_but_young.after_iteration(None, 19, {}) is True  # type: ignore[arg-type]


def test_bad_arguments_show_the_value(binary_data) -> None:
    X_tr, y_tr, X_va, y_va = binary_data
    with pytest.raises(ValueError, match="n_classes=3"):
        fit_gbt(X_tr, y_tr, X_va, y_va, task="binary", n_classes=3)
    with pytest.raises(ValueError, match="DataFrame"):
        fit_gbt(X_tr.to_numpy(), y_tr, X_va, y_va, task="binary", n_classes=2)
    with pytest.raises(ValueError, match="n_trials=-1"):
        fit_gbt(X_tr, y_tr, X_va, y_va, task="binary", n_classes=2, n_trials=-1)
    with pytest.raises(ValueError, match="'color'"):
        fit_gbt(X_tr.assign(color=X_tr["color"].astype(str)), y_tr, X_va, y_va, task="binary", n_classes=2)


def test_refit_exports_the_best_trial_refit_on_train_and_valid(binary_data) -> None:
    X_train, y_train, X_valid, y_valid = binary_data
    result = fit_gbt(X_train, y_train, X_valid, y_valid, task="binary", n_classes=2, n_trials=1, seed=0, refit=True)
    assert result.final_rows == len(X_train) + len(X_valid)
    grow = (len(X_train) + len(X_valid)) / len(X_train)
    assert result.final_booster.num_boosted_rounds() == round((result.best_iteration + 1) * grow)
    # The early-stopped booster is untouched: it still predicts the validation rows as unseen data.
    assert result.booster.num_boosted_rounds() == result.best_iteration + 1
    seen = predict_gbt(result.final_booster, X_valid, task="binary", categories=result.categories)
    unseen = predict_gbt(result.booster, X_valid, task="binary", categories=result.categories)
    assert metrics.score("logloss", y_valid, seen) < metrics.score("logloss", y_valid, unseen)
    assert fit_gbt(X_train, y_train, X_valid, y_valid, task="binary", n_classes=2, n_trials=1).final_booster is None


def test_column_names_xgboost_refuses_are_renamed_for_it_alone(binary_data) -> None:
    """'x[0]', 'a<b' and ']' are fine column names that XGBoost refuses ("feature_names ... may not contain [, ]
    or <"): fit killed with an internal error. They reach XGBoost renamed (uniquely: 'x(0)' is taken already)."""
    X_train, y_train, X_valid, y_valid = binary_data
    odd = {"x0": "x[0]", "x1": "x(0)", "x2": "a<b", "color": "c]"}
    X_tr, X_va = X_train.rename(columns=odd), X_valid.rename(columns=odd)
    result = fit_gbt(X_tr, y_train, X_va, y_valid, task="binary", n_classes=2, n_trials=1, seed=0, refit=True)
    assert list(X_tr.columns)[:3] == ["x[0]", "x(0)", "a<b"]  # the caller's frame is left as it was
    assert result.categories == {"c]": CATS}
    plain = fit_gbt(X_train, y_train, X_valid, y_valid, task="binary", n_classes=2, n_trials=1, seed=0, refit=True)
    for booster, same in ((result.booster, plain.booster), (result.final_booster, plain.final_booster)):
        np.testing.assert_array_equal(predict_gbt(booster, X_va, task="binary", categories=result.categories),
                                      predict_gbt(same, X_valid, task="binary", categories=plain.categories))
    assert xgb_names(["x[0]", "x(0)", "a<b", "y"]) == ["x(0)_1", "x(0)", "altb", "y"]


def test_a_stop_event_ends_the_search_after_its_first_round_and_skips_the_refit(binary_data) -> None:
    import threading

    X_train, y_train, X_valid, y_valid = binary_data
    stop = threading.Event()
    stop.set()
    result = fit_gbt(X_train, y_train, X_valid, y_valid, task="binary", n_classes=2, n_trials=5, seed=0, stop=stop,
                     refit=True)
    assert result.n_trials_run == 1 and result.booster.num_boosted_rounds() == 1
    assert result.final_booster is None


def test_trial_deadline_keeps_time_for_the_refit_until_it_no_longer_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    from automl_dnn import gbt

    monkeypatch.setattr(gbt.time, "monotonic", lambda: 100.0)
    assert gbt._trial_deadline(None, 5.0) is None
    assert gbt._trial_deadline(160.0, None) == 160.0  # before the first trial: nothing to keep yet
    assert gbt._trial_deadline(160.0, 10.0) == 160.0 - gbt.REFIT_MARGIN * 10.0
    assert gbt._trial_deadline(160.0, 70.0) == 160.0  # a 70 s refit cannot fit in 60 s: search to the end



def test_holdout_fit_keeps_the_extra_rows_unseen_and_refits_with_them_for_export(binary_data) -> None:
    from automl_dnn.gbt import fit_gbt_holdout

    X_train, y_train, X_valid, y_valid = binary_data
    result = fit_gbt_holdout(X_train, y_train, task="binary", n_classes=2, n_trials=1, seed=0,
                             more=(X_valid, y_valid))
    tuned_rounds = result.trials[0]["best_iteration"] + 1
    assert result.booster.num_boosted_rounds() == round(tuned_rounds / 0.85) == result.best_iteration + 1
    grow = (len(X_train) + len(X_valid)) / len(X_train)
    assert result.final_booster.num_boosted_rounds() == round(result.booster.num_boosted_rounds() * grow)
    assert result.final_rows == len(X_train) + len(X_valid)
    seen = predict_gbt(result.final_booster, X_valid, task="binary", categories=result.categories)
    unseen = predict_gbt(result.booster, X_valid, task="binary", categories=result.categories)
    assert metrics.score("logloss", y_valid, seen) < metrics.score("logloss", y_valid, unseen)


def test_a_spilled_training_frame_refits_the_same_booster_and_its_file_goes(binary_data, tmp_path: Path) -> None:
    """Issue 13: the frame waits on disk (float32, categories with an unused level) while XGBoost boosts."""
    X_train, y_train, X_valid, y_valid = binary_data
    X_train = X_train.astype({c: np.float32 for c in X_train.columns if c != "color"}).set_axis(
        np.arange(len(X_train)) + 7)  # not a plain index: written without it
    common = dict(task="binary", n_classes=2, n_trials=2, seed=0, threads=1, refit=True)
    kept = fit_gbt(X_train, y_train, X_valid, y_valid, **common)
    spill = tmp_path / "train.feather"
    spilled = fit_gbt(X_train.copy(), y_train, X_valid, y_valid, spill=spill, **common)
    assert not spill.exists()
    assert spilled.final_rows == kept.final_rows == len(X_train) + len(X_valid)
    for booster in ("booster", "final_booster"):
        np.testing.assert_array_equal(
            predict_gbt(getattr(spilled, booster), X_valid, task="binary", categories=spilled.categories),
            predict_gbt(getattr(kept, booster), X_valid, task="binary", categories=kept.categories))


def test_fit_inputs_spills_only_a_large_frame_and_drops_it(binary_data, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from automl_dnn import gbt
    from automl_dnn.data import TargetEncoder

    X_train, y_train, X_valid, y_valid = binary_data
    encoder = TargetEncoder().fit(pd.Series(np.concatenate([y_train, y_valid])), "binary")

    def inputs() -> gbt.GBTInputs:
        frames = {"train": X_train.copy(), "valid": X_valid, "test": X_valid.iloc[:0]}
        return gbt.GBTInputs(frames=frames, y_train=y_train, y_valid=y_valid, encoder=encoder, preprocess="standard")

    monkeypatch.setattr(gbt, "VALID_TUNING_MIN_ROWS", 10)
    small = gbt.fit_gbt_inputs(inputs(), n_trials=1, seed=0, time_budget=None, threads=1, notes=[],
                               spill=tmp_path / "a.feather")
    assert "train" in small.frames  # under SPILL_BYTES: kept in memory (k-fold bagging may read it)
    monkeypatch.setattr(gbt, "SPILL_BYTES", 0)
    made = inputs()
    large = gbt.fit_gbt_inputs(made, n_trials=1, seed=0, time_budget=None, threads=1, notes=[],
                               spill=tmp_path / "b.feather")
    assert "train" not in made.frames and "train" not in large.frames
    assert large.result.final_booster is not None and not (tmp_path / "b.feather").exists()


def test_prediction_in_chunks_is_the_whole_frames(binary_data, binary_result: GBTResult,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from automl_dnn import gbt

    _, _, X_valid, _ = binary_data
    whole = predict_gbt(binary_result.booster, X_valid, task="binary", categories=binary_result.categories)
    monkeypatch.setattr(gbt, "PREDICT_CHUNK_ROWS", 7)  # chunks of 7 rows, the last one shorter
    chunked = predict_gbt(binary_result.booster, X_valid, task="binary", categories=binary_result.categories)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    assert predict_gbt(binary_result.booster, X_valid.iloc[:0], task="binary").shape == (0, 2)


def test_give_way_ends_the_tuning_after_the_trial_it_says_so_and_skips_the_refit(binary_data) -> None:
    X_train, y_train, X_valid, y_valid = binary_data
    asked: list[np.ndarray] = []

    def after_two(pred: np.ndarray) -> bool:
        asked.append(pred)
        return len(asked) == 2

    result = fit_gbt(X_train, y_train, X_valid, y_valid, task="binary", n_classes=2, n_trials=6, seed=0,
                     refit=True, give_way=after_two)
    assert result.n_trials_run == 2 and result.final_booster is None
    # It is shown the best trial's validation predictions so far.
    best = min(result.trials, key=lambda t: t["valid_loss"])
    assert math.isclose(metrics.score("logloss", y_valid, asked[-1]), best["valid_loss"])


def test_nets_ahead_compares_errors_with_a_margin_in_the_study_s_metric(binary_data) -> None:
    from automl_dnn.gbt import NetsAhead

    _, _, _, y_valid = binary_data
    pred = np.column_stack([np.full(len(y_valid), 0.5), np.full(len(y_valid), 0.5)])  # log-loss ln 2 = 0.693
    nets = {"best": None}
    ahead = NetsAhead("logloss", y_valid, lambda: nets["best"], margin=0.1)
    assert not ahead(pred) and ahead.note(1) is None  # no net has completed yet
    nets["best"] = 0.64  # 0.693 is within 10 % of it
    assert not ahead(pred)
    nets["best"] = 0.62  # 0.693 is 11.8 % above it
    assert ahead(pred) and ahead.verdict == (pytest.approx(math.log(2)), 0.62)
    assert "stopped tuning after 3 trials" in ahead.note(3)
    # A score is compared by its distance from perfect: ROC-AUC 0.5 is an error of 0.5.
    assert NetsAhead("roc_auc", y_valid, lambda: 0.56, margin=0.1)(pred)  # 0.5 > 1.1 x 0.44
    assert not NetsAhead("roc_auc", y_valid, lambda: 0.53, margin=0.1)(pred)  # 0.5 < 1.1 x 0.47


def test_a_slow_trial_gives_way_between_its_rounds_only_on_xgboost_s_own_metric(
        binary_data, monkeypatch: pytest.MonkeyPatch) -> None:
    from automl_dnn import gbt
    from automl_dnn.gbt import NetsAhead

    X_train, y_train, X_valid, y_valid = binary_data
    monkeypatch.setattr(gbt, "GIVE_WAY_SLOW_SHARE", 0.0)  # every trial counts as slow from its first round
    monkeypatch.setattr(gbt, "GIVE_WAY_EVERY", 0.0)
    common = dict(task="binary", n_classes=2, n_trials=4, seed=0, time_budget=600.0)
    # log-loss is XGBoost's own eval metric: the first round is already 10 % behind a log-loss of 0.01
    ahead = NetsAhead("logloss", y_valid, lambda: 0.01, task="binary")
    result = fit_gbt(X_train, y_train, X_valid, y_valid, give_way=ahead, **common)
    assert result.n_trials_run == 1 and result.booster.num_boosted_rounds() == 1
    assert ahead.verdict is not None and ahead.verdict[1] == 0.01
    # ROC-AUC is not: the trial boosts to its early stop, and the tuning ends after it
    ahead = NetsAhead("roc_auc", y_valid, lambda: 0.9999, task="binary")
    result = fit_gbt(X_train, y_train, X_valid, y_valid, give_way=ahead, **common)
    assert result.n_trials_run == 1 and result.booster.num_boosted_rounds() > 1
    # nets that trail never stop it
    ahead = NetsAhead("logloss", y_valid, lambda: 5.0, task="binary")
    assert fit_gbt(X_train, y_train, X_valid, y_valid, give_way=ahead, **common).n_trials_run == 4


def test_the_thread_frees_its_cores_however_it_ends(tmp_path: Path) -> None:
    """``on_done`` (fit's event for the nets' late workers) is called by a thread that failed, too."""
    import threading

    from automl_dnn.errors import AutoDNNError
    from automl_dnn.gbt import BackgroundGBT

    freed = threading.Event()
    background = BackgroundGBT(n_trials=1, give_way=True, on_done=freed.set)
    assert background.done()  # never started
    background.start({"run_dir": str(tmp_path / "no-run"), "metric": "logloss"}, None, deadline=None)
    with pytest.raises(AutoDNNError, match="has no preprocess"):
        background.result()  # no run folder: the thread's error reaches the caller
    assert freed.is_set() and background.done()


def test_an_mae_study_boosts_on_the_absolute_error() -> None:
    """The median, not the mean: a 1e9 sentinel in a few rows shifts every squared-error prediction."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=600), "b": rng.normal(size=600)})
    y = 100.0 + 10.0 * X["a"].to_numpy() + rng.normal(0.0, 1.0, 600)
    y_train = y[:500].copy()
    y_train[:3] = 1e9  # 0.75 % of the rows: a few
    common = dict(task="regression", n_classes=0, n_trials=1, seed=0, threads=1)
    squared = fit_gbt(X.iloc[:400], y_train[:400], X.iloc[400:500], y_train[400:500], **common)
    absolute = fit_gbt(X.iloc[:400], y_train[:400], X.iloc[400:500], y_train[400:500], metric="mae", **common)
    assert absolute.params["objective"] == "reg:absoluteerror" and squared.params["objective"] == "reg:squarederror"
    assert "objective" not in squared.params or squared.trials[0]["params"] == DEFAULT_PARAMS  # RMSE: as ever
    clean = X.iloc[500:]

    def median_error(result: object) -> float:
        return float(np.median(np.abs(predict_gbt(result.booster, clean, task="regression") - y[500:])))

    assert median_error(absolute) < 5.0 < 1000.0 < median_error(squared)
    both = fit_gbt(X.iloc[:400], y_train[:400], X.iloc[400:500], y_train[400:500], metric="mae",
                   **(common | {"n_trials": 2}))  # extreme targets: the absolute error's defaults first
    assert [t["params"]["objective"] for t in both.trials] == ["reg:absoluteerror", "reg:squarederror"]
    assert both.params["objective"] == "reg:absoluteerror" and both.trials[0]["valid_loss"] < both.trials[1]["valid_loss"]
    clean = fit_gbt(X.iloc[:400], y[:400], X.iloc[400:500], y[400:500], metric="mae", **(common | {"n_trials": 2}))
    assert [t["params"]["objective"] for t in clean.trials] == ["reg:squarederror", "reg:absoluteerror"]
    assert absolute.valid_loss == pytest.approx(
        np.mean(np.abs(predict_gbt(absolute.booster, X.iloc[400:500], task="regression") - y_train[400:500])))


# --- the tuning kept in the run folder (gbt_state) ----------------------------------------------


def _counting_trials(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The params of every trial XGBoost boosts from now on."""
    from automl_dnn import gbt

    real, seen = gbt._train_one, []

    def train_one(params: dict, *args, **kwargs):
        seen.append({k: params[k] for k in DEFAULT_PARAMS})
        return real(params, *args, **kwargs)

    monkeypatch.setattr(gbt, "_train_one", train_one)
    return seen


def _kept_state(folder: Path) -> dict:
    return json.loads((folder / "trials.json").read_text())


def test_a_kept_tuning_is_resumed_without_its_trials_run_again(binary_data, binary_result: GBTResult, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from automl_dnn.gbt_state import KeptTuning, load_booster

    X_tr, y_tr, X_va, y_va = binary_data
    common = dict(task="binary", n_classes=2, seed=0, threads=2)
    kept = KeptTuning(tmp_path / "kept", "data")
    first = fit_gbt(X_tr, y_tr, X_va, y_va, n_trials=3, kept=kept, **common)
    # a fresh run behaves exactly as one that keeps nothing (binary_result: the same 3 trials, kept nowhere)
    assert [(t["params"], t["valid_loss"]) for t in first.trials] == [
        (t["params"], t["valid_loss"]) for t in binary_result.trials]
    state = _kept_state(kept.folder)
    assert [t["params"] for t in state["trials"]] == [t["params"] for t in first.trials]
    saved = sorted(p.name for p in kept.folder.iterdir())
    assert saved == [f"best-{state['best']:05d}.ubj", "trials.json"]  # one booster, the best; no pickle
    best = load_booster(kept.folder / saved[0])
    np.testing.assert_array_equal(predict_gbt(best, X_va, task="binary"),
                                  predict_gbt(first.booster, X_va, task="binary"))

    boosted = _counting_trials(monkeypatch)
    second = fit_gbt(X_tr, y_tr, X_va, y_va, n_trials=5, kept=kept, **common)
    assert len(boosted) == 2 and DEFAULT_PARAMS not in boosted  # 2 new trials; trial 0 (the defaults) not again
    assert (second.n_trials_kept, second.n_trials_run, len(second.trials)) == (3, 2, 5)
    assert second.trials[:3] == _kept_state(kept.folder)["trials"][:3] and second.notes == []
    assert len(_kept_state(kept.folder)["trials"]) == 5
    assert second.valid_loss == min(t["valid_loss"] for t in second.trials) <= first.valid_loss

    # n_trials reached already: the kept best booster is the result (loaded, not retrained), refit as before
    boosted.clear()
    third = fit_gbt(X_tr, y_tr, X_va, y_va, n_trials=2, kept=kept, refit=True, **common)
    assert boosted == [] and (third.n_trials_kept, third.n_trials_run) == (5, 0)
    assert third.valid_loss == second.valid_loss and third.params == second.params
    np.testing.assert_array_equal(predict_gbt(third.booster, X_va, task="binary"),
                                  predict_gbt(second.booster, X_va, task="binary"))
    assert third.final_booster is not None and third.final_rows == len(X_tr) + len(X_va)


def test_a_resumed_tuning_is_seeded_too(binary_data, tmp_path: Path) -> None:
    """Two reruns from the same kept trials run the same new trials (TPE learns from the kept ones)."""
    import shutil

    from automl_dnn.gbt_state import KeptTuning

    X_tr, y_tr, X_va, y_va = binary_data
    common = dict(task="binary", n_classes=2, seed=0, threads=1)
    kept = KeptTuning(tmp_path / "a", "data")
    fit_gbt(X_tr, y_tr, X_va, y_va, n_trials=2, kept=kept, **common)
    shutil.copytree(kept.folder, tmp_path / "b")
    runs = [fit_gbt(X_tr, y_tr, X_va, y_va, n_trials=4, kept=KeptTuning(tmp_path / f, "data"), **common)
            for f in ("a", "b")]
    assert [t["params"] for t in runs[0].trials] == [t["params"] for t in runs[1].trials]
    assert runs[0].n_trials_run == 2


def test_a_kept_tuning_of_another_key_is_ignored_with_a_note_and_replaced(binary_data, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from automl_dnn.gbt_state import KeptTuning

    X_tr, y_tr, X_va, y_va = binary_data
    common = dict(task="binary", n_classes=2, n_trials=1, threads=1)
    fit_gbt(X_tr, y_tr, X_va, y_va, seed=0, kept=KeptTuning(tmp_path, "split-a"), **common)
    before = _kept_state(tmp_path)["key"]
    boosted = _counting_trials(monkeypatch)
    for key, seed in (("split-b", 0), ("split-a", 1)):  # another split, preprocessing or data; another seed
        result = fit_gbt(X_tr, y_tr, X_va, y_va, seed=seed, kept=KeptTuning(tmp_path, key), **common)
        assert result.n_trials_kept == 0 and boosted[-1] == DEFAULT_PARAMS  # started over
        assert len(result.notes) == 1 and "ignored" in result.notes[0] and "another split" in result.notes[0]
        assert _kept_state(tmp_path)["key"] != before  # the new tuning replaced it
        before = _kept_state(tmp_path)["key"]
    assert len(_kept_state(tmp_path)["trials"]) == 1


@pytest.mark.parametrize("damage", ["not json", "cut short", "not a list", "no booster", "not a booster",
                                    "an empty booster", "another booster"])
def test_a_damaged_kept_tuning_is_ignored_with_a_note(binary_data, tmp_path: Path, damage: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from automl_dnn.gbt_state import KeptTuning

    X_tr, y_tr, X_va, y_va = binary_data
    common = dict(task="binary", n_classes=2, n_trials=2, seed=0, threads=1)
    kept = KeptTuning(tmp_path, "data")
    fit_gbt(X_tr, y_tr, X_va, y_va, kept=kept, **common)
    state_file = tmp_path / "trials.json"
    booster_file = next(tmp_path.glob("best-*.ubj"))
    if damage == "not json":
        state_file.write_bytes(b"\x00\xff garbage")
    elif damage == "cut short":
        state_file.write_text(state_file.read_text()[:40])
    elif damage == "not a list":
        state_file.write_text(json.dumps({**_kept_state(tmp_path), "trials": 3}))
    elif damage == "no booster":
        booster_file.unlink()
    elif damage == "not a booster":
        booster_file.write_bytes(b"{not ubj")
    elif damage == "an empty booster":  # a power cut after the rename: XGBoost's parser aborted the whole process
        booster_file.write_bytes(b"")
    else:  # a booster of the same shape that is not the best trial's: its loss differs from the one recorded
        other = fit_gbt(X_tr, y_tr, X_va, y_va, task="binary", n_classes=2, n_trials=1, seed=5, threads=1)
        booster_file.write_bytes(bytes(other.booster.save_raw(raw_format="ubj")))
        state = _kept_state(tmp_path)
        state["trials"][state["best"]]["best_iteration"] = other.best_iteration
        state_file.write_text(json.dumps(state))
    boosted = _counting_trials(monkeypatch)
    result = fit_gbt(X_tr, y_tr, X_va, y_va, kept=kept, **common)
    assert result.n_trials_kept == 0 and len(boosted) == 2 and boosted[0] == DEFAULT_PARAMS  # tuned from scratch
    assert len(result.notes) == 1 and "cannot be read" in result.notes[0] and "starts over" in result.notes[0]
    assert len(_kept_state(tmp_path)["trials"]) == 2  # and kept anew


def test_only_trials_that_ran_to_their_end_are_kept(binary_data, tmp_path: Path) -> None:
    """A trial cut short by the deadline or a stop is not kept: a rerun with more time boosts it further."""
    import threading

    from automl_dnn.gbt_state import KeptTuning

    X_tr, y_tr, X_va, y_va = binary_data
    common = dict(task="binary", n_classes=2, n_trials=3, seed=0, threads=1)
    cut = fit_gbt(X_tr, y_tr, X_va, y_va, time_budget=0.0, kept=KeptTuning(tmp_path / "deadline", "d"), **common)
    assert cut.n_trials_run == 1 and not (tmp_path / "deadline" / "trials.json").exists()
    stop = threading.Event()
    stop.set()
    fit_gbt(X_tr, y_tr, X_va, y_va, stop=stop, kept=KeptTuning(tmp_path / "stop", "d"), **common)
    assert not (tmp_path / "stop" / "trials.json").exists()
    again = fit_gbt(X_tr, y_tr, X_va, y_va, kept=KeptTuning(tmp_path / "deadline", "d"), **common)
    assert again.n_trials_kept == 0 and again.trials[0]["params"] == DEFAULT_PARAMS
    assert again.trials[0]["best_iteration"] > cut.trials[0]["best_iteration"]


def test_a_tuning_that_cannot_keep_its_trials_goes_on_with_a_note(binary_data, tmp_path: Path) -> None:
    from automl_dnn.gbt_state import KeptTuning

    X_tr, y_tr, X_va, y_va = binary_data
    (tmp_path / "a-file").write_text("")  # the folder cannot be made
    result = fit_gbt(X_tr, y_tr, X_va, y_va, task="binary", n_classes=2, n_trials=2, seed=0, threads=1,
                     kept=KeptTuning(tmp_path / "a-file", "d"))
    assert result.n_trials_run == 2
    assert len(result.notes) == 1 and "no longer kept" in result.notes[0]


def test_a_kept_booster_that_cannot_predict_the_rows_is_ignored_with_a_note(binary_data, tmp_path: Path) -> None:
    """A kept booster of other columns (a best-*.ubj copied from another run) made XGBoost's feature check fail in
    the recomputed predictions, a crash where a kept tuning that cannot be used is a note."""
    from automl_dnn.gbt_state import KeptTuning

    X_tr, y_tr, X_va, y_va = binary_data
    common = dict(task="binary", n_classes=2, n_trials=1, seed=0, threads=1)
    kept = KeptTuning(tmp_path, "data")
    fit_gbt(X_tr, y_tr, X_va, y_va, kept=kept, **common)
    other = fit_gbt(X_tr.drop(columns="x0"), y_tr, X_va.drop(columns="x0"), y_va, **common)
    next(tmp_path.glob("best-*.ubj")).write_bytes(bytes(other.booster.save_raw(raw_format="ubj")))
    state = _kept_state(tmp_path)
    state["trials"][state["best"]]["best_iteration"] = other.best_iteration
    (tmp_path / "trials.json").write_text(json.dumps(state))
    result = fit_gbt(X_tr, y_tr, X_va, y_va, kept=kept, **common)
    assert result.n_trials_kept == 0 and result.n_trials_run == 1
    assert len(result.notes) == 1 and "cannot be read" in result.notes[0] and "starts over" in result.notes[0]


def test_a_second_tuning_in_a_kept_folder_keeps_nothing_while_the_first_holds_it(binary_data, tmp_path: Path) -> None:
    """Two fits or ensembles of one run at once: the second tunes without keeping (a note) rather than delete the
    first one's boosters; once the first is done, the folder is free again."""
    from automl_dnn.gbt_state import KeptTuning, claimed

    X_tr, y_tr, X_va, y_va = binary_data
    common = dict(task="binary", n_classes=2, n_trials=2, seed=0, threads=1)
    kept = KeptTuning(tmp_path, "data")
    held: list[str] = []
    with claimed(kept, held) as first:
        assert first == kept and held == []
        second = fit_gbt(X_tr, y_tr, X_va, y_va, kept=kept, **common)
        assert second.n_trials_run == 2 and not (tmp_path / "trials.json").exists()
        assert len(second.notes) == 1 and "another fit or ensemble" in second.notes[0]
    third = fit_gbt(X_tr, y_tr, X_va, y_va, kept=kept, **common)
    assert third.notes == [] and len(_kept_state(tmp_path)["trials"]) == 2


def test_an_unnamed_booster_left_by_a_kill_is_removed_on_the_next_tuning(binary_data, tmp_path: Path) -> None:
    from automl_dnn.gbt_state import KeptTuning

    X_tr, y_tr, X_va, y_va = binary_data
    common = dict(task="binary", n_classes=2, n_trials=2, seed=0, threads=1)
    kept = KeptTuning(tmp_path, "data")
    fit_gbt(X_tr, y_tr, X_va, y_va, kept=kept, **common)
    named = f"best-{_kept_state(tmp_path)['best']:05d}.ubj"
    (tmp_path / "best-00099.ubj").write_bytes((tmp_path / named).read_bytes())  # killed before its list was written
    result = fit_gbt(X_tr, y_tr, X_va, y_va, kept=kept, **common)  # resumed: nothing to run, no better booster
    assert result.n_trials_run == 0 and sorted(p.name for p in tmp_path.glob("*.ubj")) == [named]
    (tmp_path / "trials.json").unlink()  # killed before the first list: every booster is unnamed
    fit_gbt(X_tr, y_tr, X_va, y_va, kept=kept, task="binary", n_classes=2, n_trials=1, seed=0, threads=1)
    assert sorted(p.name for p in tmp_path.glob("*.ubj")) == ["best-00000.ubj"]


def test_a_resumed_tuning_asks_whether_the_nets_are_ahead_before_its_first_new_trial(
        binary_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from automl_dnn.gbt import NetsAhead
    from automl_dnn.gbt_state import KeptTuning

    X_tr, y_tr, X_va, y_va = binary_data
    common = dict(task="binary", n_classes=2, seed=0, threads=1)
    kept = KeptTuning(tmp_path, "data")
    fit_gbt(X_tr, y_tr, X_va, y_va, n_trials=1, kept=kept, **common)
    boosted = _counting_trials(monkeypatch)
    ahead = NetsAhead("logloss", np.asarray(y_va), lambda: 1e-6)  # nets all but perfect
    result = fit_gbt(X_tr, y_tr, X_va, y_va, n_trials=4, kept=kept, refit=True, give_way=ahead, **common)
    assert boosted == [] and result.n_trials_run == 0 and result.final_booster is None
    assert ahead.verdict is not None
    behind = NetsAhead("logloss", np.asarray(y_va), lambda: 50.0)
    result = fit_gbt(X_tr, y_tr, X_va, y_va, n_trials=3, kept=kept, give_way=behind, **common)
    assert len(boosted) == 2 and result.n_trials_run == 2
