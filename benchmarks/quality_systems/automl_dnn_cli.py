"""automl-dnn through its CLI: ``fit`` within the budget, then ``predict``; plus its best single net.

Rows:
- ``automl-dnn``: ``automl-dnn fit TRAIN --task TASK --test-size 0 --time-budget B`` (the whole command is
  timed, start-up and reading the file included), then ``automl-dnn predict`` on the test features.
- ``automl-dnn-best-net``: the study's best net alone (what the ensemble adds). After the timed fit,
  ``automl-dnn ensemble RUN --model MODEL2 --top-k 1 --no-gbt --folds 1 --refit`` (outside the budget: greedy
  selection with one member keeps the best net on validation; one net, not bagged) and ``automl-dnn predict`` with that model. Its
  ``fit_s`` is the same fit's.

``info`` has the trials by state, where the time went (search = fit start to the last trial's end, from
the study; XGBoost = the model's note; the rest = weights + export + start-up), and the members.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as c
import pandas as pd

BIN = Path(sys.executable).with_name("automl-dnn")


def run(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"{' '.join(map(str, cmd[:2]))} failed with exit {proc.returncode}:\n{tail}")
    return seconds


def predict(model: Path, test_file: Path, out_csv: Path, log: Path) -> tuple[float, pd.DataFrame]:
    seconds = run([str(BIN), "predict", str(model), str(test_file), "--out", str(out_csv)], log)
    pred = pd.read_csv(out_csv)
    return seconds, pred


def to_frame(task: str, pred: pd.DataFrame) -> pd.DataFrame:
    if task == "regression":
        return c.prediction_frame(task, pred["prediction"].to_numpy())
    cols = [col for col in pred.columns if col.startswith("proba_") and not col.endswith("_std")]
    return pd.DataFrame({col[len("proba_"):]: pred[col].astype(float) for col in cols})


def members(model: Path) -> list[dict[str, Any]]:
    spec = json.loads((model / "model.json").read_text())
    return [{"name": m["name"], "weight": round(m["weight"], 4), "trial": m.get("trial")} for m in spec["members"]]


def study_info(run_dir: Path, fit_start: dt.datetime, fit_end: dt.datetime, notes: list[str]) -> dict[str, Any]:
    import optuna

    spec = json.loads((run_dir / "run.json").read_text())
    from automl_dnn.storage import open_storage  # a journal file's "journal:///" URL is automl-dnn's own

    study = optuna.load_study(study_name=spec["study_name"], storage=open_storage(spec["storage"]))
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    info: dict[str, Any] = {"trials": states, "fit_total_s": (fit_end - fit_start).total_seconds()}
    try:
        best = study.best_trial
        info["best_trial"] = {"number": best.number, "value": best.value}
    except ValueError:
        pass
    if ends:
        search_end = max(ends)
        info["search_s"] = (search_end - fit_start).total_seconds()
        after = (fit_end - search_end).total_seconds()
        gbt = next((float(m.group(2)) for n in notes
                    if (m := re.search(r"XGBoost: (\d+) trials? in ([\d.]+)s", n))), None)
        if gbt is not None:
            info["gbt_s"] = gbt
            info["gbt_trials"] = int(next(re.search(r"XGBoost: (\d+)", n).group(1) for n in notes
                                          if re.search(r"XGBoost: (\d+)", n)))
            info["ensemble_export_s"] = after - gbt
        else:
            info["after_search_s"] = after
    return info


def fit_and_predict(args: Any, *flags: str) -> tuple[Path, float, float, pd.DataFrame, dict[str, Any]]:
    """The timed ``automl-dnn fit`` (with ``flags``) and ``automl-dnn predict`` of the test features.

    Returns the test features' file, fit and predict seconds, the predictions and the study's info.
    """
    test = pd.read_parquet(args.test).drop(columns=[args.target])
    test_file = args.out / "test_features.parquet"
    test.to_parquet(test_file)
    model, run_dir = args.out / "model", args.out / "run"
    fit_start = dt.datetime.now()
    fit_s = run([str(BIN), "fit", str(args.train), "--target", args.target, "--task", args.task,
                 "--model", str(model), "--out", str(run_dir), "--time-budget", str(args.budget),
                 "--test-size", "0", "--seed", str(args.seed), *flags, "--quiet"], args.out / "fit.log")
    fit_end = dt.datetime.now()
    predict_s, pred = predict(model, test_file, args.out / "pred.csv", args.out / "predict.log")
    notes = json.loads((model / "model.json").read_text()).get("notes", [])
    info = study_info(run_dir, fit_start, fit_end, notes)
    info["members"] = members(model)
    info["fit_output"] = (args.out / "fit.log").read_text()[-1500:]
    return test_file, fit_s, predict_s, pred, info


def main() -> None:
    args = c.parse_args()
    run_dir, model_best = args.out / "run", args.out / "model-best-net"
    test_file, fit_s, predict_s, pred, info = fit_and_predict(args)
    info["predict_s"] = predict_s
    rows = {"automl-dnn": {"fit_s": fit_s, "predict_s": predict_s, "info": info}}
    frames = {"automl-dnn": to_frame(args.task, pred)}

    best_s = run([str(BIN), "ensemble", str(run_dir), "--model", str(model_best), "--top-k", "1", "--no-gbt",
                  "--folds", "1", "--refit", "--quiet"], args.out / "ensemble-best-net.log")
    predict_best_s, pred_best = predict(model_best, test_file, args.out / "pred-best.csv",
                                        args.out / "predict-best.log")
    rows["automl-dnn-best-net"] = {"fit_s": fit_s, "predict_s": predict_best_s,
                                   "info": {"members": members(model_best), "export_s": best_s}}
    frames["automl-dnn-best-net"] = to_frame(args.task, pred_best)
    c.write_result(args.out, rows, frames, ("automl-dnn", "torch", "xgboost", "optuna"))


if __name__ == "__main__":
    main()
