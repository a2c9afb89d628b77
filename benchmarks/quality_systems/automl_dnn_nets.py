"""automl-dnn's nets alone: ``automl-dnn fit ... --no-gbt`` within the budget, then ``automl-dnn predict``.

The same protocol as ``automl_dnn_cli.py`` (the whole CLI command is timed, start-up and reading the file
included), but without the XGBoost member: the search gets all the cores and the whole budget. One row,
``automl-dnn-nets``; ``info`` has the trials by state, search seconds, the rest and the members.
"""

from __future__ import annotations

import _common as c
from automl_dnn_cli import fit_and_predict, to_frame


def main() -> None:
    args = c.parse_args()
    _, fit_s, predict_s, pred, info = fit_and_predict(args, "--no-gbt")
    c.write_result(args.out, {"automl-dnn-nets": {"fit_s": fit_s, "predict_s": predict_s, "info": info}},
                   {"automl-dnn-nets": to_frame(args.task, pred)}, ("automl-dnn", "torch", "optuna"))


if __name__ == "__main__":
    main()
