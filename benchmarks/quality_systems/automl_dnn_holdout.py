"""automl-dnn with `fit --folds 1` (holdout): one validation split for everything, as before k-fold bagging, measured beside the default.

The same protocol as ``automl_dnn_cli.py`` (the whole CLI command is timed, start-up included); one row,
``automl-dnn-holdout``.
"""

from __future__ import annotations

import _common as c
from automl_dnn_cli import fit_and_predict, to_frame

ROW = "automl-dnn-holdout"


def main() -> None:
    args = c.parse_args()
    _, fit_s, predict_s, pred, info = fit_and_predict(args, "--folds", "1", "--cv-folds", "1")
    c.write_result(args.out, {ROW: {"fit_s": fit_s, "predict_s": predict_s, "info": info}},
                   {ROW: to_frame(args.task, pred)}, ("automl-dnn", "torch", "xgboost", "optuna"))


if __name__ == "__main__":
    main()
