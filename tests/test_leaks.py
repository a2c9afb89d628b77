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
