"""automl-dnn as a scikit-learn estimator: a Pipeline, cross-validation, save and load.

Budgets here are trial counts so the example finishes quickly; use ``time_budget`` for real work.

    .venv/bin/python examples/sklearn_estimator.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sklearn.datasets import load_wine
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from automl_dnn import AutoDNNClassifier


def main() -> None:
    X, y = load_wine(return_X_y=True, as_frame=True)
    settings = dict(time_budget=None, n_trials=4, space="quick", gbt_trials=3)

    scores = cross_val_score(make_pipeline(StandardScaler(), AutoDNNClassifier(**settings)), X, y, cv=3)
    print(f"3-fold accuracy: {scores.mean():.3f} +- {scores.std():.3f}")

    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    clf = AutoDNNClassifier(**settings).fit(X_train, y_train)
    print(f"held-out accuracy: {clf.score(X_test, y_test):.3f}; classes {clf.classes_.tolist()}")
    with tempfile.TemporaryDirectory() as tmp:
        clf.save(Path(tmp) / "wine-model")  # model.json + safetensors + XGBoost UBJ, every file hashed
        again = AutoDNNClassifier.load(Path(tmp) / "wine-model")
        assert (again.predict(X_test) == clf.predict(X_test)).all()
        print("saved and reloaded: identical predictions")


if __name__ == "__main__":
    main()
