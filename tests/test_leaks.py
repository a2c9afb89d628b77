"""A feature that gives the target away is named in a note; ordinary features, ids and small tables are not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from automl_dnn.data import load_dataset
from automl_dnn.data.leaks import leak_notes


def _table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "color": rng.choice(["red", "blue", "green"], size=n),
                         "id": np.arange(n), "y": np.where(x + rng.normal(size=n) > 0, "yes", "no")})


def _leaky(df: pd.DataFrame) -> list[str]:
    return [note.split("'")[1] for note in load_dataset(df, target="y").notes if "a leak?" in note]


def test_a_relabelled_copy_of_the_class_is_named() -> None:
    df = _table()
    df["outcome_code"] = df["y"].map({"yes": "Y", "no": "N"})
    notes = [n for n in load_dataset(df, target="y").notes if "a leak?" in n]
    assert _leaky(df) == ["outcome_code"]
    assert "names the class exactly" in notes[0]


def test_a_score_that_sorts_the_two_classes_apart_is_named() -> None:
    df = _table()
    df["score"] = np.where(df["y"] == "yes", 50.0, 0.0) + np.random.default_rng(1).uniform(0, 40, len(df))
    assert _leaky(df) == ["score"]


def test_a_linear_function_of_a_regression_target_is_named() -> None:
    df = _table()
    df["y"] = df["x"] * 3 + np.random.default_rng(2).normal(size=len(df))
    df["price_in_cents"] = df["y"] * 100 + 7
    assert _leaky(df) == ["price_in_cents"]


def test_ordinary_features_ids_and_missing_values_are_not_named() -> None:
    df = _table()
    df.loc[::3, "x"] = np.nan
    assert _leaky(df) == []
    multiclass = _table()
    multiclass["y"] = multiclass["color"].where(np.random.default_rng(3).uniform(size=len(df)) > 0.1, "red")
    assert _leaky(multiclass) == []  # color names the class but for a tenth of its rows


def test_a_small_table_proves_nothing() -> None:
    """Twenty rows: a column can name a class by chance (the check needs 30; a threshold 100)."""
    y = np.array([0, 1] * 10)
    features = pd.DataFrame({"copy": y})
    assert leak_notes(features, y, "binary", np.arange(20)) == []
    y = np.array([0, 1] * 30)
    separable = pd.DataFrame({"score": y * 10.0 + np.arange(60) / 100})
    assert leak_notes(separable, y, "binary", np.arange(60)) == []
    assert len(leak_notes(separable.assign(copy=y), y, "binary", np.arange(60))) == 1


def test_values_near_the_float64_limit_are_no_leak_and_no_warning() -> None:
    """Their squares overflow: the correlation is NaN, not a leak, and numpy's overflow warnings stay silent."""
    import warnings

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"huge": rng.normal(size=400) * 1e307, "y": rng.normal(size=400)})
    df.loc[0, "huge"] = 1.7e308
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert _leaky(df) == []


def test_test_rows_that_copy_training_rows_are_noted_and_a_few_are_not() -> None:
    from automl_dnn.data.leaks import copied_rows_note

    rng = np.random.default_rng(0)
    features = pd.DataFrame({"x": rng.normal(size=200), "c": pd.Categorical(rng.choice(["a", "b"], 200))})
    train, test = np.arange(150), np.arange(150, 200)
    assert copied_rows_note(features, train, test) == []
    features.iloc[150:160] = features.iloc[0:10].to_numpy()  # 10 of the 50 test rows are copies
    notes = copied_rows_note(features, train, test)
    assert len(notes) == 1 and notes[0].startswith("10 of the 50 test rows (20.0%) equal a training row")
    features.iloc[150:160, 0] += 1.0  # one feature differs: no longer copies
    assert copied_rows_note(features, train, test) == []


def test_a_table_stacked_onto_itself_says_its_test_score_is_flattered() -> None:
    from automl_dnn.data import load_dataset

    rng = np.random.default_rng(1)
    half = pd.DataFrame({"x": rng.normal(size=300), "z": rng.normal(size=300)})
    half["y"] = (half["x"] > 0).astype(int)
    notes = load_dataset(pd.concat([half, half], ignore_index=True), target="y").notes
    assert any("equal a training row in every feature" in n for n in notes)
    assert not any("equal a training row" in n for n in load_dataset(half, target="y").notes)
