"""Fit, inspect and predict with the Python API on a bundled dataset (about a minute on a laptop CPU).

    .venv/bin/python examples/python_api.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import automl_dnn
from automl_dnn import api
from automl_dnn.data import read_table


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        summary, report = api.fit("builtin:breast_cancer", model_dir=model_dir, time_budget=60, space="quick",
                                  quiet=True)
        print(f"{summary.n_complete} nets trained, {summary.n_pruned} pruned; ensemble by {report.metric}:")
        for row in report.rows:  # report.inner: "oof" (out-of-fold, after k-fold bagging) or "valid"
            weight = "" if row["weight"] is None else f"  weight {row['weight']:.2f}"
            print(f"  {row['model']:<34} {report.inner} {row['valid']:.4f}  test {row['test']:.4f}{weight}")

        model = automl_dnn.load(model_dir)  # verifies every file's sha256; no pickle involved
        rows = read_table("builtin:breast_cancer").drop(columns=["target"]).head(5)
        print(model.predict_frame(rows, mc_samples=20))  # MC dropout: mean and std per class


if __name__ == "__main__":
    main()
