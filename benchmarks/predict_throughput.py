"""Prediction throughput of an exported ensemble against its XGBoost member alone, on `adult`.

Fits a small model (space "quick", a few trials, bounded by trial counts), loads the exported folder,
and times, side by side in one process on the same 10,000 rows (CPU):

- the ensemble: ``Predictor.predict_proba`` on the raw frame (input checks, preprocessing for every
  scaling its nets use, every net, the XGBoost frame and booster, the blend);
- XGBoost alone: the exported booster on the same rows, including its frame conversion
  (``FeaturePreprocessor.transform_for_gbt`` + ``gbt.predict_gbt``).

A short search often ends with XGBoost alone outweighing every net, so a third model is timed too: the
top ``--nets`` nets of the same run plus the same booster, equal weights, exported with ``save_model``
(what a typical 5-6 member ensemble costs). Each is timed ``--repeats`` times after a warm-up and the
median reported, the models interleaved so that the machine's load hits them alike; a per-stage
breakdown of the largest ensemble follows.

    .venv/bin/python benchmarks/predict_throughput.py --n-trials 4 --repeats 7 --work /tmp/throughput
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "adult.csv.gz"
TARGET = "income"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=4, help="search trials (space quick)")
    parser.add_argument("--gbt-trials", type=int, default=2)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--nets", type=int, default=5, help="nets in the timed 'nets + XGBoost' model")
    parser.add_argument("--work", type=Path, help="keep the run and model here; an existing model is reused")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="predict-throughput-") as tmp:
        work = args.work or Path(tmp)
        run(work, args)


def run(work: Path, args: argparse.Namespace) -> None:
    import numpy as np

    from automl_dnn import api
    from automl_dnn.data import read_table
    from automl_dnn.predictor import load_model

    model_dir, run_dir = work / "model", work / "run"
    if not (model_dir / "model.json").is_file():
        started = time.perf_counter()
        api.fit(str(DATA), target=TARGET, model_dir=model_dir, out=run_dir, space="quick", n_trials=args.n_trials,
                gbt_trials=args.gbt_trials, time_budget=None, quiet=True, seed=0)
        print(f"fit: {time.perf_counter() - started:.1f}s ({args.n_trials} trials, {args.gbt_trials} XGBoost trials)")
    exported = load_model(model_dir)
    if exported._gbt is None:
        sys.exit("the ensemble did not select XGBoost, so there is no exported booster to compare with; "
                 "rerun with another --n-trials")
    full = load_model(_nets_plus_xgboost(run_dir, model_dir, work / "model-full", args.nets))
    batch = read_table(str(DATA)).drop(columns=[TARGET]).iloc[: args.rows].reset_index(drop=True)
    fns = {
        "exported ensemble": lambda: exported.predict_proba(batch),
        f"{len(full._nets)} nets + XGBoost": lambda: full.predict_proba(batch),
        "XGBoost alone": lambda: _xgboost_alone(exported, batch),
    }
    for fn in fns.values():  # warm-up
        assert np.isfinite(fn()).all()
    times = _alternate(fns, args.repeats)
    stages = _stages(full, batch, args.repeats)

    n = len(batch)
    print(f"data: {DATA.name}, {n} rows x {batch.shape[1]} columns; torch threads {_torch_threads()}, "
          f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print("exported ensemble: " + ", ".join(f"{m['name']} {m['weight']:.2f}" for m in exported.members))
    base = times["XGBoost alone"]
    for name, seconds in times.items():
        print(f"{name:>18}: {n / seconds:>10,.0f} rows/s  {seconds * 1000:8.1f} ms per {n} rows  "
              f"throughput {base / seconds:.2f}x XGBoost alone's")
    print(f"stages of '{len(full._nets)} nets + XGBoost' (median ms): "
          + ", ".join(f"{k} {v * 1000:.1f}" for k, v in stages.items()))
    print("command: " + " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/predict_throughput.py",
                                                           *sys.argv[1:]]))


def _nets_plus_xgboost(run_dir: Path, model_dir: Path, out: Path, k: int) -> Path:
    """A model of the run's best ``k`` nets (its saved weights) and the exported booster, equal weights."""
    import json

    from automl_dnn.ensemble_step import _completed_trials
    from automl_dnn.files import read_json
    from automl_dnn.model_folder import GBTMember, NetMember, save_model
    from automl_dnn.run_folder import RunDir, load_trial, trial_folder

    run = RunDir(run_dir)
    spec = run.read_spec()
    model = json.loads((model_dir / "model.json").read_text())
    nets = []
    for trial in _completed_trials(spec)[:k]:
        saved = load_trial(trial_folder(run.root / "artifacts", trial.number))
        config = saved.config
        nets.append(NetMember(trial=trial.number, settings=config["settings"], d_in=config["d_in"],
                              d_out=config["d_out"], state=saved.weights(), weight=1.0))
    import xgboost as xgb

    member = next(m for m in model["members"] if m["kind"] == "xgboost")
    booster = xgb.Booster()
    booster.load_model(str(model_dir / member["file"]))
    gbt = GBTMember(booster=booster, params=member["params"], best_iteration=member["best_iteration"],
                    categories=member["categories"], preprocess=member["preprocess"], weight=1.0)
    scalings = {n.settings.get("scaling", "standard") for n in nets} | {gbt.preprocess}
    return save_model(out, task=model["task"], target=model["target"], metric=model["metric"],
                      target_encoder=model["target_encoder"],
                      preprocessors={s: read_json(run.preprocess_path(s)) for s in sorted(scalings)},
                      nets=nets, gbt=gbt, threshold=model["threshold"])


def _xgboost_alone(predictor: Any, batch: Any) -> Any:
    from automl_dnn.gbt import predict_gbt

    gbt = predictor._gbt
    X = predictor._pre[gbt.preprocess].transform_for_gbt(batch)
    return predict_gbt(gbt.booster, X, task=predictor.task, categories=gbt.categories)


def _alternate(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per call, the functions interleaved so that load changes hit both alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _stages(predictor: Any, batch: Any, repeats: int) -> dict[str, float]:
    """Where the ensemble's time goes: input checks, each preprocessing, each net, XGBoost."""
    from automl_dnn.train import predict

    notes: list[str] = []
    fns: dict[str, Callable[[], Any]] = {"checks": lambda: predictor._checked_frame(batch, notes)}
    frame = predictor._checked_frame(batch, notes)
    matrices = {}
    for net in predictor._nets:
        if net.scaling not in matrices:
            pre = predictor._pre[net.scaling]
            fns[f"transform[{net.scaling}]"] = lambda pre=pre: pre.transform(frame)
            matrices[net.scaling] = pre.transform(frame)
    for net in predictor._nets:
        X = matrices[net.scaling]
        fns[net.name] = lambda net=net, X=X: predict(net.fast, X, task=predictor.task)
    fns["xgboost (frame + predict)"] = lambda: predictor._gbt_output(frame, notes)
    return _alternate(fns, repeats)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
