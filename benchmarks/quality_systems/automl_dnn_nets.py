"""automl-dnn's nets alone: ``automl-dnn fit ... --no-gbt`` within the budget, then ``automl-dnn predict``.

The same protocol as ``automl_dnn_cli.py`` (the whole CLI command is timed, start-up and reading the file
included), but without the XGBoost member: the search gets all the cores and the whole budget. One row,
``automl-dnn-nets``; ``info`` has the trials by state, search seconds, the rest and the members.
"""

from __future__ import annotations

import datetime as dt
import json

import _common as c
import pandas as pd
from automl_dnn_cli import BIN, members, predict, run, study_info, to_frame


def main() -> None:
    args = c.parse_args()
    test = pd.read_parquet(args.test).drop(columns=[args.target])
    test_file = args.out / "test_features.parquet"
    test.to_parquet(test_file)
    model, run_dir = args.out / "model", args.out / "run"

    fit_start = dt.datetime.now()
    fit_s = run([str(BIN), "fit", str(args.train), "--target", args.target, "--task", args.task,
                 "--model", str(model), "--out", str(run_dir), "--time-budget", str(args.budget),
                 "--test-size", "0", "--seed", "0", "--no-gbt", "--quiet"], args.out / "fit.log")
    fit_end = dt.datetime.now()
    predict_s, pred = predict(model, test_file, args.out / "pred.csv", args.out / "predict.log")
    notes = json.loads((model / "model.json").read_text()).get("notes", [])
    info = study_info(run_dir, fit_start, fit_end, notes)
    info["members"] = members(model)
    info["notes"] = notes
    info["fit_output"] = (args.out / "fit.log").read_text()[-1500:]
    c.write_result(args.out, {"automl-dnn-nets": {"fit_s": fit_s, "predict_s": predict_s, "info": info}},
                   {"automl-dnn-nets": to_frame(args.task, pred)}, ("automl-dnn", "torch", "optuna"))


if __name__ == "__main__":
    main()
