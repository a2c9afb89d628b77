"""The cost curve of large tables (issue 13): what each stage costs at 10k, 100k and 1M rows x 100 columns.

    .venv/bin/python benchmarks/scale.py --work /tmp/scale                                 # 10k, 100k, 1M
    .venv/bin/python benchmarks/scale.py --rows 10000,100000 --work /tmp/scale             # a quicker curve
    .venv/bin/python benchmarks/scale.py --fit 1000000 --budget 600 --work /tmp/scale      # + fit and predict 1M

The tables are ``benchmarks/make_table.py``'s (binary, 100 feature columns, seed 0), written once into
``--work``. Each size is measured in a fresh process, the stages one after another:

- **read**: ``read_table`` of the Parquet file; **preprocess**: the rest of ``prepare_run`` (split, the
  preprocessing fitted for every scaling of the default space, the encoded matrices saved);
- **epoch**: seconds per epoch on every training row of the default space's first trial (TabM-like,
  k = 8, PLE) and of its plain MLP (the practical default), from 20 timed optimizer steps
  (``train.estimate_epoch_seconds``), one torch thread as in ``fit`` on 2 cores; and the sample of the
  training rows a 600 s search would train on (``search_rows``, from the same probe ``fit`` runs);
- **XGBoost**: building its ``QuantileDMatrix`` of the training rows and seconds per boosting round of its
  first trial's parameters (20 rounds, one thread);
- **predict**: rows per second of one exported model (an MLP-PLR net + XGBoost, fitted once on the 10k
  table) predicting every row of the table, chunked (``Predictor.predict_proba``);
- **memory**: the process's peak resident memory in each stage above its memory after the imports
  (sampled every 0.05 s from /proc).

``--fit N,...`` also runs ``automl-dnn fit TABLE --target y --time-budget B`` and ``automl-dnn predict`` on
those sizes as child processes, with the peak resident memory of their process tree (sampled from /proc every
0.2 s) above that of a fit of a 1,000-row table of the same columns (the baseline, ``--baseline-budget``),
the fit's trials, and the time it took beyond its own reading of the file (the read stage above).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / ".venv" / "bin" / "automl-dnn"
COLUMNS = 100
PREDICT_SPACE = """\
name: scale-predict
params:
  scaling: quantile
  num_embedding: plr
  d_embedding: 16
  plr_sigma: 0.05
  n_layers: 2
  d_hidden: 256
  optimizer: adamw
  lr: 0.001
  schedule: none
  batch_size: 256
  max_epochs: 2
  patience: 2
"""


# --- memory ---------------------------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(children.get(p, []))
    return total


class PeakRSS:
    """The peak resident memory of a process tree, sampled in a thread; ``take()`` returns it and starts anew."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid, self.interval, self.peak, self._stop = pid, interval, 0, threading.Event()
        self.samples: list[tuple[float, int]] = []  # (seconds since the start, resident bytes)
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            rss = tree_rss(self.pid)
            self.peak = max(self.peak, rss)
            self.samples.append((time.perf_counter() - self._started, rss))
            self._stop.wait(self.interval)

    def take(self) -> int:
        peak, self.peak = max(self.peak, tree_rss(self.pid)), 0
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def mb(n: float) -> float:
    return round(n / 2**20, 1)


# --- one size, in its own process ---------------------------------------------------------------


def measure(table: Path, work: Path, model: Path) -> dict[str, Any]:
    """Every stage of the module docstring on one table; seconds and MB above the memory after the imports."""
    import torch
    import xgboost as xgb

    from automl_dnn import api, gbt, objective
    from automl_dnn.budget import plan_fit, plan_search_rows
    from automl_dnn.data import read_table, release_table_memory
    from automl_dnn.model import build_mlp
    from automl_dnn.run_folder import RunDir, SearchOptions, prepare_run
    from automl_dnn.search_rows import trial_data
    from automl_dnn.space import load_space, settings_from_values, suggest
    from automl_dnn.train import TrainData, estimate_epoch_seconds
    import optuna

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    memory = PeakRSS(os.getpid(), 0.05)
    base = memory.take()
    out: dict[str, Any] = {"base_mb": mb(base)}

    def stage(name: str, work_fn: Callable[[], Any]) -> Any:
        memory.take()
        started = time.perf_counter()
        value = work_fn()
        out[f"{name}_s"] = round(time.perf_counter() - started, 3)
        out[f"{name}_peak_mb"] = mb(memory.take() - base)
        return value

    frame = stage("read", lambda: read_table(table))
    out["rows"], out["columns"] = len(frame), frame.shape[1] - 1
    del frame
    release_table_memory()
    run_dir = work / f"run-{table.stem}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    spec, dataset = stage("prepare", lambda: prepare_run(SearchOptions(source=table, out=run_dir, target="y")))
    out["preprocess_s"] = round(out["prepare_s"] - out["read_s"], 3)
    run = RunDir(run_dir)
    inputs = stage("gbt_frames", lambda table=dataset: gbt.gbt_inputs(run, table))
    dataset = None  # the table goes, as in fit once XGBoost's frames are made
    release_table_memory()

    space = load_space("default")
    first = space.first_trials("binary")  # the table's task
    for label, params in (("first_trial", first[0]), ("plain_mlp", first[2])):
        settings = settings_from_values(suggest(optuna.trial.FixedTrial(params), space), seed=0)

        def epoch(settings: Any = settings) -> float:
            data = trial_data(run, settings.scaling)
            settings, bins = objective.embedding_inputs(settings, objective.FeaturePreprocessor.from_dict(
                json.loads(run.preprocess_path(settings.scaling).read_text())), data["X_train"], data["y_train"])
            net = build_mlp(settings.net, d_in=data["X_train"].shape[1], d_out=1, bins=bins)
            train = TrainData(data["X_train"], data["y_train"], data["X_valid"], data["y_valid"])
            return estimate_epoch_seconds(net, train, settings.train, task="binary", probe_steps=20)

        out[f"{label}_epoch_s"] = round(stage(f"{label}_probe", epoch), 2)
    row_seconds = objective.probe_row_seconds(run, spec, space, device="cpu", threads=1)
    split = {p: len(inputs.frames[p]) for p in ("train", "valid", "test")}
    search = plan_fit(600.0).search  # a fit --time-budget 600's search share, less what reading and preprocessing took
    plan = plan_search_rows(split["train"], split["valid"], split["test"], row_seconds=row_seconds,
                            seconds=search - out["prepare_s"], budget=search)
    out["row_us"], out["search_rows_600s"] = round(row_seconds * 1e6, 1), plan.train

    params = {**gbt._base_params("binary", 2, 0, 1), **gbt.DEFAULT_PARAMS}
    frame, labels = inputs.frames["train"], inputs.y_train
    dtrain = stage("xgb_matrix", lambda: xgb.QuantileDMatrix(frame, labels, enable_categorical=True, nthread=1))
    rounds = 20
    stage("xgb_rounds", lambda matrix=dtrain: xgb.train(params, matrix, num_boost_round=rounds))
    out["xgb_round_s"] = round(out["xgb_rounds_s"] / rounds, 3)
    dtrain = inputs = frame = None

    predictor = api.load(model)
    frame = read_table(table).drop(columns=["y"])
    proba = stage("predict", lambda: predictor.predict_proba(frame))
    out["predict_rows_per_s"] = round(len(proba) / out["predict_s"])
    memory.stop()
    return out


# --- fit and predict, as a user runs them ------------------------------------------------------


def run_tree(args: list[str], log: Path) -> dict[str, Any]:
    """Run a command, sampling its process tree's resident memory; wall seconds, exit status, peak MB. The
    memory's timeline goes to LOG.rss.tsv (seconds, MB)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        memory = PeakRSS(proc.pid, 0.2)
        code = proc.wait()
        peak = memory.take()
        memory.stop()
    log.with_suffix(".rss.tsv").write_text("".join(f"{t:.1f}\t{mb(r)}\n" for t, r in memory.samples))
    return {"seconds": round(time.perf_counter() - started, 1), "code": code, "peak_mb": mb(peak)}


def fit_and_predict(table: Path, work: Path, budget: float) -> dict[str, Any]:
    """``automl-dnn fit --time-budget`` then ``automl-dnn predict`` of every row, as child processes."""
    import optuna

    name = table.stem
    model, run = work / f"fit-{name}-model", work / f"fit-{name}-run"
    for path in (model, run, work / f"fit-{name}-model-report.html"):
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
    fit = run_tree([str(CLI), "fit", str(table), "--target", "y", "--model", str(model), "--out", str(run),
                    "--time-budget", str(budget), "--quiet"], work / f"fit-{name}.log")
    preds = work / f"fit-{name}-predictions.parquet"
    predict = run_tree([str(CLI), "predict", str(model), str(table), "--out", str(preds)], work / f"predict-{name}.log")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = json.loads((run / "run.json").read_text())
    from automl_dnn.storage import open_storage  # a journal file's "journal:///" URL is automl-dnn's own

    study = optuna.load_study(study_name=spec["study_name"], storage=open_storage(spec["storage"]))
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    notes = [n for n in spec.get("notes", []) if "search trains its nets" in n or "each epoch" in n]
    return {"fit": fit, "predict": predict, "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"), "note": notes[0] if notes else ""}


# --- the parent ---------------------------------------------------------------------------------


def make_table_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_table", Path(__file__).with_name("make_table.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_table"] = module
    spec.loader.exec_module(module)
    return module


def table_for(rows: int, work: Path) -> Path:
    path = work / f"table-{rows}.parquet"
    if not path.exists():
        info = make_table_module().make_table(path, rows=rows, columns=COLUMNS, task="binary", seed=0)
        print(f"generated {path} in {info.seconds:.1f} s", file=sys.stderr)
    return path


def predict_model(work: Path) -> Path:
    """The model whose predict speed is measured at every size: fitted once on the 10k table."""
    model = work / "predict-model"
    if not (model / "model.json").exists():
        space = work / "predict-space.yaml"
        space.write_text(PREDICT_SPACE)
        result = subprocess.run([str(CLI), "fit", str(table_for(10_000, work)), "--target", "y", "--model", str(model),
                                 "--out", str(work / "predict-run"), "--space", str(space), "--n-trials", "1",
                                 "--gbt-trials", "1", "--folds", "1", "--cv-folds", "1", "--no-report", "--quiet"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"fitting the predict model failed:\n{result.stdout}{result.stderr}")
    return model


def table(rows: list[int], curve: dict[int, dict[str, Any]]) -> str:
    """The cost curve, one column per size."""
    lines = ["| | " + " | ".join(f"{r:,} rows" for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]
    spec = [("read (s)", "read_s"), ("preprocess, 3 scalings (s)", "preprocess_s"),
            ("XGBoost frames (s)", "gbt_frames_s"),
            ("epoch, first trial: TabM-like k=8 PLE (s)", "first_trial_epoch_s"),
            ("epoch, plain MLP (s)", "plain_mlp_epoch_s"), ("probe: us per training row", "row_us"),
            ("search sample at 600 s (rows)", "search_rows_600s"),
            ("XGBoost QuantileDMatrix (s)", "xgb_matrix_s"), ("XGBoost, s per round", "xgb_round_s"),
            ("predict (rows/s)", "predict_rows_per_s"),
            ("peak MB, read", "read_peak_mb"), ("peak MB, read + preprocess", "prepare_peak_mb"),
            ("peak MB, XGBoost frames", "gbt_frames_peak_mb"), ("peak MB, first trial's data + probe",
                                                                 "first_trial_probe_peak_mb"),
            ("peak MB, QuantileDMatrix", "xgb_matrix_peak_mb"), ("peak MB, XGBoost rounds", "xgb_rounds_peak_mb"),
            ("peak MB, predict", "predict_peak_mb")]
    for label, key in spec:
        cells = [curve[r].get(key, "") for r in rows]
        lines.append(f"| {label} | " + " | ".join(f"{c:,}" if isinstance(c, (int, float)) else str(c)
                                                   for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000,1000000", help="comma-separated table sizes")
    parser.add_argument("--work", type=Path, required=True, help="tables, run folders and logs (never the repository)")
    parser.add_argument("--fit", default="", help="comma-separated sizes to also fit and predict as a user would")
    parser.add_argument("--budget", type=float, default=600.0, help="--fit's --time-budget")
    parser.add_argument("--baseline-budget", type=float, default=60.0,
                        help="--time-budget of the baseline fit on 1,000 rows (its memory does not grow with time)")
    parser.add_argument("--reuse-curve", action="store_true",
                        help="take the sizes already in --work's curve.json from it instead of measuring them again")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process: one table
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.work, args.work / "predict-model")))
        return
    rows = [int(r) for r in args.rows.split(",")]
    model = predict_model(args.work)
    saved = args.work / "curve.json"
    curve = ({int(n): v for n, v in json.loads(saved.read_text()).items()}
             if args.reuse_curve and saved.exists() else {})
    for n in rows:
        if n in curve:
            continue
        path = table_for(n, args.work)
        result = subprocess.run([sys.executable, __file__, "--work", str(args.work), "--measure", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"measuring {n:,} rows failed:\n{result.stderr}")
        curve[n] = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{n:,} rows: {curve[n]}", file=sys.stderr, flush=True)
    (args.work / "curve.json").write_text(json.dumps(curve, indent=2))
    print(f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`; model for predict: {model}\n")
    print(table(rows, curve))
    if args.fit:
        baseline = fit_and_predict(table_for(1_000, args.work), args.work, args.baseline_budget)
        print(f"\nbaseline: fit of 1,000 rows x {COLUMNS} columns, --time-budget {args.baseline_budget:g}: {baseline}")
        for n in [int(r) for r in args.fit.split(",")]:
            if n not in curve:
                raise SystemExit(f"--fit {n}: measure that size too (--rows)")
            record = fit_and_predict(table_for(n, args.work), args.work, args.budget)
            fit, read = record["fit"], curve[n]["read_s"]
            above = fit["peak_mb"] - baseline["fit"]["peak_mb"]
            print(f"\n{n:,} rows: fit {fit['seconds']:.0f} s ({fit['seconds'] - read:.0f} s beyond its {read:.0f} s read), "
                  f"exit {fit['code']}, trials {record['complete']} complete / {record['pruned']} pruned / "
                  f"{record['failed']} failed; peak {fit['peak_mb']:,.0f} MB = {above:,.0f} MB above the baseline "
                  f"(bound: 4 x {n * COLUMNS * 4 / 2**20:,.0f} MB = {n * COLUMNS * 16 / 2**20:,.0f} MB); predict of "
                  f"every row {record['predict']['seconds']:.0f} s, peak {record['predict']['peak_mb']:,.0f} MB; "
                  f"{record['note']}")
            (args.work / f"fit-{n}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
