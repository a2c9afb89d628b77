"""Prediction quality of automl-dnn against other tabular systems, on the shared datasets, per time budget.

Per dataset of ``../shared/datasets/manifest.json``: one fixed outer split (scikit-learn
``train_test_split(test_size=0.2, random_state=0)``, stratified for classification; training rows capped
at 50,000, sampled with seed 0), written once as parquet to ``benchmarks/.cache/splits/``. Every system
runs in its own process with its own Python environment (``benchmarks/.venvs/NAME``, created here on first
use), gets the training part and the budget, and predicts the test part; this script scores the
predictions: ROC-AUC (binary), accuracy (multiclass), RMSE (regression) first, then log-loss / R2, fit and
predict time, and the peak memory of the runner's process tree.

Results are cached per (system, dataset, budget) in ``benchmarks/.cache/results/`` under a key made of the
split, the runner scripts, the environment's requirements and, for automl-dnn, the hash of its source
(``automl_dnn/**/*.py`` + ``search_spaces/*.yaml``): a rerun runs only what changed. Run the systems one at a
time (this script never runs two at once); the table goes to stdout and ``benchmarks/results.md``.

    .venv/bin/python benchmarks/quality.py                      # everything, 60 s budget
    .venv/bin/python benchmarks/quality.py --systems xgboost-default,flaml --datasets adult --budget 30
    .venv/bin/python benchmarks/quality.py --table-only          # just the table from the cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MANIFEST = ROOT / ".." / "shared" / "datasets" / "manifest.json"
CACHE = HERE / ".cache"
VENVS = HERE / ".venvs"
RUNNERS = HERE / "quality_systems"
RESULTS_MD = HERE / "results.md"
HARNESS_VERSION = "1"  # bump when scoring or the split changes
MAX_TRAIN_ROWS = 50_000
#: Set for every runner. Without it, OpenMP threads (XGBoost, LightGBM, torch) spin-wait for each other,
#: and on a 2-core machine with any other load that makes a 2-thread fit 20x slower than 1 thread.
RUN_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
TORCH = "torch==2.13.0"  # the CPU build lying on this machine's disk; never let pip pick another torch


@dataclass(frozen=True)
class Env:
    """A virtual environment: pip install steps, in order (each a list of requirements), with fallbacks."""

    steps: tuple[tuple[str, ...], ...] = ()
    fallback: tuple[tuple[str, ...], ...] = ()  # tried instead of the last step if it fails
    main: bool = False  # the project's own .venv (not created here)

    def spec(self) -> str:
        return json.dumps([self.steps, self.fallback, self.main])


ENVS = {
    "main": Env(main=True),
    "gbdt": Env(steps=(("xgboost==3.2.0", "lightgbm==4.7.0", "optuna==5.0.0", "scikit-learn==1.9.1",
                        "pandas==3.1.1", "pyarrow==26.0.1"),)),
    "flaml": Env(steps=(("flaml[automl]==2.7.0", "pyarrow==26.0.1"),)),
    "autogluon": Env(steps=((TORCH,), ("autogluon.tabular[all]==1.6.3",)),
                     fallback=(("autogluon.tabular[lightgbm,xgboost,catboost]==1.6.3",),)),
    # RealMLP and TabM need only pytabkit's base requirements (torch, pytorch-lightning, scikit-learn, pandas)
    "pytabkit": Env(steps=((TORCH,), ("pytabkit==1.8.0", "pyarrow==26.0.1"))),
}


@dataclass(frozen=True)
class System:
    env: str
    runner: str
    rows: tuple[str, ...]  # the result rows the runner writes (automl-dnn writes two)
    tracks_package: bool = False  # its cache key includes the automl-dnn source hash
    seeded: bool = False  # its runner uses --seed, so it runs every seed of --seeds (automl-dnn's always do)
    deps: tuple[str, ...] = ()  # more files of quality_systems/ the runner imports (part of its cache key)
    # where the runner is killed; None: 3x the budget + 10 min. TabM-D takes no time limit (it trains to its own
    # early stop: 20 minutes on california_housing), so its cells are marked as overruns instead of lost
    hard_limit_s: float | None = None


SYSTEMS = {
    "automl-dnn": System("main", "automl_dnn_cli.py", ("automl-dnn", "automl-dnn-best-net"), tracks_package=True),
    "automl-dnn-nets": System("main", "automl_dnn_nets.py", ("automl-dnn-nets",), tracks_package=True,
                              deps=("automl_dnn_cli.py",)),
    "automl-dnn-holdout": System("main", "automl_dnn_holdout.py", ("automl-dnn-holdout",), tracks_package=True,
                                 deps=("automl_dnn_cli.py",)),
    "automl-dnn-refit": System("main", "automl_dnn_refit.py", ("automl-dnn-refit",), tracks_package=True,
                               deps=("automl_dnn_cli.py",)),
    "xgboost-default": System("gbdt", "xgboost_default.py", ("xgboost-default",)),
    "lightgbm-default": System("gbdt", "lightgbm_default.py", ("lightgbm-default",)),
    "xgboost-optuna": System("gbdt", "xgboost_optuna.py", ("xgboost-optuna",), seeded=True),
    "flaml": System("flaml", "flaml_automl.py", ("flaml",)),
    "autogluon": System("autogluon", "autogluon_tabular.py", ("autogluon",)),
    "realmlp": System("pytabkit", "pytabkit_realmlp.py", ("realmlp",), deps=("_pytabkit.py",)),
    "tabm": System("pytabkit", "pytabkit_tabm.py", ("tabm",), deps=("_pytabkit.py",), hard_limit_s=3 * 3600),
}
PRIMARY = {"binary": ("roc_auc", "max"), "multiclass": ("accuracy", "max"), "regression": ("rmse", "min")}
SECONDARY = {"binary": "logloss", "multiclass": "logloss", "regression": "r2"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def files_hash(paths: list[Path]) -> str:
    return sha(*[f"{p.relative_to(ROOT)}".encode() + p.read_bytes() for p in sorted(paths)])


def package_hash() -> str:
    return files_hash(list((ROOT / "automl_dnn").rglob("*.py")) + list((ROOT / "search_spaces").glob("*.yaml")))


# --- data ---------------------------------------------------------------------------------------


def manifest() -> list[dict[str, Any]]:
    return json.loads(MANIFEST.read_text())


def content_hash(*frames: pd.DataFrame) -> str:
    """Of the rows and columns as CSV text: the same split gives the same hash whatever wrote the parquet."""
    return sha(*[f.to_csv(index=False) for f in frames])


def split(ds: dict[str, Any]) -> tuple[Path, Path, str]:
    """The dataset's fixed outer split as (train.parquet, test.parquet, hash), written once."""
    from sklearn.model_selection import train_test_split

    folder = CACHE / "splits" / ds["name"]
    train_file, test_file, meta_file = folder / "train.parquet", folder / "test.parquet", folder / "split.json"
    if not meta_file.exists():
        df = pd.read_csv(MANIFEST.parent / ds["file"])
        df = df[df[ds["target"]].notna()].reset_index(drop=True)
        y = df[ds["target"]]
        train, test = train_test_split(df, test_size=0.2, random_state=0,
                                       stratify=y if ds["task"] != "regression" else None)
        if len(train) > MAX_TRAIN_ROWS:
            train = train.sample(n=MAX_TRAIN_ROWS, random_state=0)
        folder.mkdir(parents=True, exist_ok=True)
        train.reset_index(drop=True).to_parquet(train_file)
        test.reset_index(drop=True).to_parquet(test_file)
        meta = {"train_rows": len(train), "test_rows": len(test), "hash": content_hash(train, test)}
        meta_file.write_text(json.dumps(meta))
    return train_file, test_file, json.loads(meta_file.read_text())["hash"]


# --- environments -------------------------------------------------------------------------------


def python_of(env_name: str) -> Path:
    env = ENVS[env_name]
    if env.main:
        return ROOT / ".venv" / "bin" / "python"
    return VENVS / env_name / "bin" / "python"


def ensure_env(env_name: str) -> Path:
    """Create the environment on first use; raises RuntimeError (cached in .failed) if it cannot be."""
    env = ENVS[env_name]
    python = python_of(env_name)
    if env.main:
        if not python.exists():
            raise RuntimeError(f"{python} is missing: create the project's .venv first (make install)")
        return python
    folder = VENVS / env_name
    ready, failed = folder / ".ready", folder / ".failed"
    if ready.exists() and ready.read_text() == env.spec():
        return python
    if failed.exists() and failed.read_text().startswith(env.spec()):
        raise RuntimeError(f"environment {env_name} failed to install before (see {failed}; --retry-failed)")
    if folder.exists():
        shutil.rmtree(folder)
    logfile = CACHE / "logs" / f"venv-{env_name}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    log(f"creating environment {env_name} (log: {logfile})")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    constraints = folder / "constraints.txt"
    constraints.write_text(TORCH + "\n")  # on top of the machine's own constraints: never another torch
    pip = [str(python), "-m", "pip", "install", "--no-input", "-c", str(constraints)]

    def install(reqs: tuple[str, ...]) -> bool:
        with open(logfile, "a") as out:
            out.write(f"\n$ pip install {' '.join(reqs)}\n")
            out.flush()
            return subprocess.run(pip + list(reqs), stdout=out, stderr=subprocess.STDOUT).returncode == 0

    ok = all(install(step) for step in env.steps[:-1]) and (
        install(env.steps[-1]) or (bool(env.fallback) and all(install(step) for step in env.fallback)))
    if not ok:
        tail = logfile.read_text()[-3000:]
        failed.write_text(env.spec() + "\n" + tail)
        raise RuntimeError(f"could not install environment {env_name}; last lines of {logfile}:\n{tail[-800:]}")
    with open(logfile, "a") as out:
        subprocess.run([str(python), "-m", "pip", "freeze"], stdout=out, stderr=subprocess.STDOUT)
    ready.write_text(env.spec())
    return python


# --- running one system -------------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    """Resident memory (bytes) of ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, todo, page = 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(children.get(p, []))
    return total


def run_runner(python: Path, runner: str, args: list[str], hard_limit: float, logfile: Path) -> dict[str, Any]:
    """Run a runner in a fresh process; returns its wall time, exit code and peak memory."""
    env = dict(os.environ, PYTHONPATH=str(RUNNERS), PYTHONUNBUFFERED="1", **RUN_ENV)
    env.pop("VIRTUAL_ENV", None)
    load_before = os.getloadavg()[0]  # other work on the machine slows every budgeted system down
    start = time.perf_counter()
    with open(logfile, "w") as out:
        proc = subprocess.Popen([str(python), str(RUNNERS / runner), *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=str(ROOT), start_new_session=True)
        peak = [0]
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(proc.pid))
                done.wait(0.5)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        killed, deadline = False, start + hard_limit
        while True:  # wait4: the child's own rusage (its peak RSS, with its reaped descendants')
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                returncode = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() > deadline and not killed:
                killed = True
                os.killpg(proc.pid, 9)  # the runner's own session: it and whatever it started
            time.sleep(0.2)
        proc.returncode = returncode
        try:
            os.killpg(proc.pid, 9)  # anything the runner left behind in its session
        except ProcessLookupError:
            pass
        done.set()
        poller.join()
    max_single = usage.ru_maxrss * 1024  # KiB: the largest single process, a floor for the tree's peak
    return {"wall_s": time.perf_counter() - start, "returncode": returncode, "killed": killed,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "load_before": load_before,
            "load_after": os.getloadavg()[0], "peak_rss_mb": round(max(peak[0], 0) / 2**20, 1), "max_child_rss_mb": round(max_single / 2**20, 1)}


def score(task: str, y_true: pd.Series, pred: pd.DataFrame, classes: list[Any]) -> dict[str, float]:
    from sklearn import metrics as m

    if task == "regression":
        p = pred["prediction"].to_numpy(np.float64)
        y = y_true.to_numpy(np.float64)
        return {"rmse": float(np.sqrt(m.mean_squared_error(y, p))), "r2": float(m.r2_score(y, p))}
    cols = [str(c) for c in classes]
    missing = [c for c in cols if c not in pred.columns]
    if missing:
        raise ValueError(f"predictions lack classes {missing}; got columns {list(pred.columns)[:10]}")
    p = pred[cols].to_numpy(np.float64)
    p = np.clip(p, 0, None)
    p = p / np.where(p.sum(axis=1, keepdims=True) > 0, p.sum(axis=1, keepdims=True), 1)
    y = y_true.astype(str).map({c: i for i, c in enumerate(cols)}).to_numpy()
    out = {"accuracy": float(np.mean(p.argmax(axis=1) == y)),
           "logloss": float(m.log_loss(y, np.clip(p, 1e-15, 1), labels=list(range(len(cols)))))}
    if task == "binary":
        out["roc_auc"] = float(m.roc_auc_score(y == 1, p[:, 1]))
    return out


def cache_file(row: str, dataset: str, budget: float, seed: int = 0) -> Path:
    return CACHE / "results" / f"{row}__{dataset}__{budget:g}{f'__s{seed}' if seed else ''}.json"


def cache_key(name: str, split_hash: str, budget: float, with_package: bool = True, seed: int = 0) -> str:
    system = SYSTEMS[name]
    runner_hash = files_hash([RUNNERS / f for f in (system.runner, "_common.py", *system.deps)])
    parts = [HARNESS_VERSION, name, split_hash, f"{budget:g}", runner_hash, ENVS[system.env].spec(),
             json.dumps(RUN_ENV)] + ([f"seed {seed}"] if seed else [])
    if system.tracks_package and with_package:
        parts.append(package_hash())
    return sha(*parts)


def overrun_limit(budget: float) -> float:
    return budget * 1.25 + 10


def run_system(name: str, ds: dict[str, Any], budget: float, seed: int = 0) -> None:
    """Run one system on one dataset (with its own ``seed``) and cache one JSON per result row (errors too)."""
    system = SYSTEMS[name]
    train_file, test_file, split_hash = split(ds)
    key = cache_key(name, split_hash, budget, seed=seed)  # computed now: the package may have changed since the start
    base = {"system": name, "dataset": ds["name"], "task": ds["task"], "budget": budget, "key": key, "seed": seed,
            "key_base": cache_key(name, split_hash, budget, with_package=False, seed=seed),
            "package_hash": package_hash() if system.tracks_package else None,
            "when": time.strftime("%Y-%m-%d %H:%M:%S")}

    def save_all(records: dict[str, dict[str, Any]]) -> None:
        for row in system.rows:
            path = cache_file(row, ds["name"], budget, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(dict(base, row=row, **records[row]), indent=1, default=str))

    try:
        python = ensure_env(system.env)
    except RuntimeError as exc:
        save_all({row: {"status": "error", "error": str(exc)[-1500:]} for row in system.rows})
        log(f"{name} on {ds['name']}: {str(exc).splitlines()[0]}")
        return
    work = CACHE / "work" / name / f"{ds['name']}-{budget:g}{f'-s{seed}' if seed else ''}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    logfile = CACHE / "logs" / f"{name}__{ds['name']}__{budget:g}{f'__s{seed}' if seed else ''}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    args = ["--train", str(train_file), "--test", str(test_file), "--task", ds["task"], "--target", ds["target"],
            "--budget", f"{budget:g}", "--out", str(work), "--seed", str(seed)]
    hard_limit = system.hard_limit_s or budget * 3 + 600
    log(f"{name} on {ds['name']} (budget {budget:g} s{f', seed {seed}' if seed else ''}) ...")
    proc = run_runner(python, system.runner, args, hard_limit, logfile)
    result_file = work / "result.json"
    if proc["returncode"] != 0 or not result_file.exists():
        why = "killed after {:.0f} s".format(hard_limit) if proc["killed"] else f"exit {proc['returncode']}"
        tail = logfile.read_text()[-1500:]
        save_all({row: {"status": "error", "error": f"runner {why}: {tail}", "process": proc} for row in system.rows})
        log(f"{name} on {ds['name']}: failed ({why}); see {logfile}")
        return
    result = json.loads(result_file.read_text())
    test = pd.read_parquet(test_file)
    train_y = pd.read_parquet(train_file, columns=[ds["target"]])[ds["target"]]
    classes = sorted(pd.unique(train_y.dropna()).tolist()) if ds["task"] != "regression" else []
    records = {}
    for row in system.rows:
        r = result["rows"].get(row)
        if r is None:
            records[row] = {"status": "error", "error": "runner wrote no such row", "process": proc}
            continue
        try:
            metrics = score(ds["task"], test[ds["target"]], pd.read_parquet(work / r["predictions"]), classes)
            status = "ok"
            error = None
        except Exception as exc:  # a broken prediction file is that system's failure, not the harness's
            metrics, status, error = {}, "error", f"scoring failed: {type(exc).__name__}: {exc}"
        records[row] = {"status": status, "error": error, "metrics": metrics, "fit_s": r["fit_s"],
                        "predict_s": r["predict_s"], "overrun": r["fit_s"] > overrun_limit(budget),
                        "info": r.get("info", {}), "versions": result.get("versions", {}), "process": proc}
    save_all(records)
    for row in system.rows:
        rec = records[row]
        log(f"  {row}: {rec.get('metrics') or rec.get('error')} fit {rec.get('fit_s', float('nan')):.1f} s, "
            f"peak {proc['peak_rss_mb']:.0f} MB")
    if not system.tracks_package:  # keep automl-dnn's run folders for a look; the others can be large
        shutil.rmtree(work, ignore_errors=True)


# --- the table ----------------------------------------------------------------------------------


def system_seeds(name: str, seeds: tuple[int, ...]) -> tuple[int, ...]:
    """The seeds a system runs: automl-dnn's and the other seeded systems' all of ``seeds``, the rest seed 0
    only (their runners take no seed: a rerun would repeat seed 0)."""
    return seeds if SYSTEMS[name].tracks_package or SYSTEMS[name].seeded else (0,)


def load_results(datasets: list[dict[str, Any]], systems: list[str], budget: float, seeds: tuple[int, ...] = (0,)
                 ) -> dict[tuple[str, str], dict[str, Any]]:
    """Cached records with the current keys: (row, dataset) -> record. automl-dnn's records made with an
    older source of the package are kept too (``stale``: marked in the table) until they are rerun. The
    rows of several ``seeds`` are averaged (``merge_seeds``); systems that take no seed run seed 0."""
    out = {}
    for ds in datasets:
        _, _, split_hash = split(ds)
        for name in systems:
            found: dict[str, list[dict[str, Any]]] = {}
            for seed in system_seeds(name, seeds):
                key = cache_key(name, split_hash, budget, seed=seed)
                key_base = cache_key(name, split_hash, budget, False, seed=seed)
                for row in SYSTEMS[name].rows:
                    path = cache_file(row, ds["name"], budget, seed)
                    if path.exists():
                        rec = json.loads(path.read_text())
                        if rec.get("key") == key:
                            found.setdefault(row, []).append(rec)
                        elif SYSTEMS[name].tracks_package and rec.get("key_base") == key_base:
                            found.setdefault(row, []).append(dict(rec, stale=True))
            for row, recs in found.items():
                out[(row, ds["name"])] = merge_seeds(recs)
    return out


def merge_seeds(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for the runs of several seeds: each metric's mean (``sd``: their standard deviations), the
    longest fit, the first seed's details; an error if any seed failed."""
    if len(recs) == 1:
        return recs[0]
    failed = [r for r in recs if r["status"] != "ok"]
    if failed:
        return failed[0]
    metrics = {m: float(np.mean([r["metrics"][m] for r in recs])) for m in recs[0]["metrics"]}
    sd = {m: float(np.std([r["metrics"][m] for r in recs], ddof=1)) for m in recs[0]["metrics"]}
    return dict(recs[0], metrics=metrics, sd=sd, seeds=[r.get("seed", 0) for r in recs],
                fit_s=max(r["fit_s"] for r in recs), predict_s=float(np.mean([r["predict_s"] for r in recs])),
                overrun=any(r.get("overrun") for r in recs), stale=any(r.get("stale") for r in recs))


def average_ranks(datasets: list[dict[str, Any]], rows: list[str], results: dict) -> dict[str, tuple[float, int]]:
    """Rank per dataset by the primary metric among the rows with a result there (1 = best, ties share the
    mean rank; an error ranks last), averaged over the datasets each row has."""
    ranks: dict[str, list[float]] = {r: [] for r in rows}
    for ds in datasets:
        metric, direction = PRIMARY[ds["task"]]
        present = [r for r in rows if (r, ds["name"]) in results]
        if len(present) < 2:
            continue
        worst = -np.inf if direction == "max" else np.inf
        values = []
        for r in present:
            rec = results[(r, ds["name"])]
            v = rec.get("metrics", {}).get(metric) if rec["status"] == "ok" else None
            values.append(worst if v is None or not np.isfinite(v) else v)
        series = pd.Series(values, index=present)
        ranked = series.rank(ascending=(direction == "min"), method="average")
        for r in present:
            ranks[r].append(float(ranked[r]))
    return {r: (float(np.mean(v)) if v else float("nan"), len(v)) for r, v in ranks.items()}


def fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def table(datasets: list[dict[str, Any]], systems: list[str], budget: float, results: dict) -> str:
    rows = [r for name in systems for r in SYSTEMS[name].rows]
    rows = [r for r in rows if any((r, ds["name"]) in results for ds in datasets)]
    if not rows:
        return "(no results yet)\n"
    lines = [f"Budget {budget:g} s per system and dataset. Primary metric per dataset: ROC-AUC (binary, higher "
             "is better), accuracy (multiclass, higher), RMSE (regression, lower). Best per dataset in bold; "
             f"`†` = fit took longer than budget x 1.25 + 10 s ({overrun_limit(budget):g} s); `‡` = made with an "
             "older automl-dnn source than the current one; `error` = no prediction (see the cache JSON).", ""]
    hashes = sorted({rec["package_hash"] for rec in results.values() if rec.get("package_hash")})
    if hashes:
        lines[0] += f" automl-dnn source hash(es): {', '.join(hashes)} (current {package_hash()})."
    lines.append("| dataset | task | metric | " + " | ".join(rows) + " |")
    lines.append("|---|---|---|" + "---|" * len(rows))
    for ds in datasets:
        metric, direction = PRIMARY[ds["task"]]
        vals = {}
        for r in rows:
            rec = results.get((r, ds["name"]))
            if rec and rec["status"] == "ok":
                vals[r] = rec["metrics"].get(metric)
        best = (max if direction == "max" else min)(vals.values()) if vals else None
        cells = []
        for r in rows:
            rec = results.get((r, ds["name"]))
            if rec is None:
                cells.append("")
            elif rec["status"] != "ok":
                cells.append("error")
            else:
                text = fmt(vals[r])
                if vals[r] == best:
                    text = f"**{text}**"
                if "sd" in rec:
                    text += f" ± {fmt(rec['sd'].get(metric))} ({len(rec['seeds'])} seeds)"
                cells.append(text + (" †" if rec.get("overrun") else "") + (" ‡" if rec.get("stale") else ""))
        lines.append(f"| {ds['name']} | {ds['task']} | {metric} | " + " | ".join(cells) + " |")
    ranks = average_ranks(datasets, rows, results)
    lines.append("| **average rank** | | | " + " | ".join(
        f"{fmt(ranks[r][0], 2)} ({ranks[r][1]})" for r in rows) + " |")
    lines += ["", "Average rank: rank per dataset by the primary metric among the systems with a result there "
              "(1 = best, errors last), averaged; in brackets the number of datasets ranked.", ""]

    # secondary metrics and costs
    lines.append("Secondary metric (log-loss for classification, lower is better; R2 for regression, higher), "
                 "fit time / predict time (s) and peak memory of the process tree (MB):")
    lines.append("")
    lines.append("| dataset | " + " | ".join(rows) + " |")
    lines.append("|---|" + "---|" * len(rows))
    for ds in datasets:
        cells = []
        for r in rows:
            rec = results.get((r, ds["name"]))
            if rec is None or rec["status"] != "ok":
                cells.append("" if rec is None else "error")
                continue
            sec = rec["metrics"].get(SECONDARY[ds["task"]])
            proc = rec.get("process", {})
            cells.append(f"{fmt(sec)} · {rec['fit_s']:.0f}/{rec['predict_s']:.1f} s · "
                         f"{proc.get('peak_rss_mb', float('nan')):.0f} MB")
        lines.append(f"| {ds['name']} ({SECONDARY[ds['task']]}) | " + " | ".join(cells) + " |")
    lines.append("")

    loads = [rec["process"]["load_before"] for rec in results.values() if "load_before" in rec.get("process", {})]
    if loads:
        lines += [f"Machine load (1-min load average on {os.cpu_count()} cores) when the runs started: median "
                  f"{np.median(loads):.1f}, range {min(loads):.1f}-{max(loads):.1f}; above ~1, other work was "
                  "taking CPU time from the budgeted systems.", ""]

    # automl-dnn details
    if "automl-dnn" in rows:
        lines.append("automl-dnn: trials of the study (complete / pruned / failed), where the fit's time went "
                     "(search = fit start to the last trial's end; XGBoost as noted in model.json: it trains in a thread "
                     "beside the search, so its seconds overlap the search's; rest = fit - search: the wait for "
                     "XGBoost's last refit, ensemble weights, export and start-up), and the ensemble's members:")
        lines.append("")
        lines.append("| dataset | trials C/P/F | fit s | search s | XGBoost s (trials) | rest s | predict s | "
                     "members (weight) | best net alone |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for ds in datasets:
            rec = results.get(("automl-dnn", ds["name"]))
            if rec is None:
                continue
            if rec["status"] != "ok":
                lines.append(f"| {ds['name']} | error: {rec.get('error', '')[:120].splitlines()[0]} |||||||| ")
                continue
            info = rec.get("info", {})
            t = info.get("trials", {})
            members = ", ".join(f"{m['name']} ({m['weight']:.2f})" for m in info.get("members", []))
            best = results.get(("automl-dnn-best-net", ds["name"]))
            best_text = fmt(best["metrics"].get(PRIMARY[ds["task"]][0])) if best and best["status"] == "ok" else "–"
            rest = rec["fit_s"] - info["search_s"] if "search_s" in info else None
            lines.append(
                f"| {ds['name']} | {t.get('COMPLETE', 0)}/{t.get('PRUNED', 0)}/{t.get('FAIL', 0)} | "
                f"{rec['fit_s']:.0f} | {fmt(info.get('search_s'), 0)} | {fmt(info.get('gbt_s'), 0)} "
                f"({info.get('gbt_trials', '–')}) | {fmt(rest, 0)} | {rec['predict_s']:.1f} | {members} | "
                f"{best_text} |")
        lines.append("")
    if "automl-dnn-nets" in rows:
        lines.append("automl-dnn-nets (`fit --no-gbt`: nets only, all cores and the whole budget): trials of the "
                     "study (complete / pruned / failed), search s (fit start to the last trial's end), rest s "
                     "(fit - search: ensemble weights, export and start-up), and the ensemble's members:")
        lines.append("")
        lines.append("| dataset | trials C/P/F | fit s | search s | rest s | predict s | members (weight) |")
        lines.append("|---|---|---|---|---|---|---|")
        for ds in datasets:
            rec = results.get(("automl-dnn-nets", ds["name"]))
            if rec is None:
                continue
            if rec["status"] != "ok":
                first = (rec.get("error") or "").strip().splitlines() or [""]
                lines.append(f"| {ds['name']} | error: {first[0][:120]} |||||| ")
                continue
            info = rec.get("info", {})
            t = info.get("trials", {})
            members = ", ".join(f"{m['name']} ({m['weight']:.2f})" for m in info.get("members", []))
            rest = rec["fit_s"] - info["search_s"] if "search_s" in info else None
            lines.append(
                f"| {ds['name']} | {t.get('COMPLETE', 0)}/{t.get('PRUNED', 0)}/{t.get('FAIL', 0)} | "
                f"{rec['fit_s']:.0f} | {fmt(info.get('search_s'), 0)} | {fmt(rest, 0)} | {rec['predict_s']:.1f} | "
                f"{members} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", help=f"comma-separated, from: {', '.join(SYSTEMS)} (default: all)")
    parser.add_argument("--datasets", help="comma-separated manifest names (default: all)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per system and dataset (default 60)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the automl-dnn systems and of "
                        "xgboost-optuna (their rows: the mean; the split and the other systems stay at seed 0)")
    parser.add_argument("--table-only", action="store_true", help="run nothing; print the table from the cache")
    parser.add_argument("--force", action="store_true", help="rerun the selected pairs even if cached")
    parser.add_argument("--retry-failed", action="store_true", help="rerun pairs cached as errors, retry "
                        "environments that failed to install")
    parser.add_argument("--setup-only", action="store_true", help="only create the selected systems' "
                        "environments")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS_MD.name}")
    args = parser.parse_args()

    datasets = manifest()
    if args.datasets:
        wanted = args.datasets.split(",")
        unknown = set(wanted) - {d["name"] for d in datasets}
        if unknown:
            parser.error(f"unknown datasets {sorted(unknown)}")
        datasets = [d for d in datasets if d["name"] in wanted]
    systems = list(SYSTEMS)
    if args.systems:
        systems = args.systems.split(",")
        unknown = set(systems) - set(SYSTEMS)
        if unknown:
            parser.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
    if args.retry_failed:
        for name in {SYSTEMS[s].env for s in systems}:
            (VENVS / name / ".failed").unlink(missing_ok=True)

    if args.setup_only:
        for env_name in dict.fromkeys(SYSTEMS[s].env for s in systems):
            try:
                log(f"environment {env_name}: {ensure_env(env_name)}")
            except RuntimeError as exc:
                log(str(exc))
        return

    seeds = tuple(int(s) for s in args.seeds.split(","))
    if not args.table_only:
        for name in systems:  # one system at a time, dataset after dataset
            for seed in system_seeds(name, seeds):
                for ds in datasets:
                    key = cache_key(name, split(ds)[2], args.budget, seed=seed)
                    recs = [cache_file(r, ds["name"], args.budget, seed) for r in SYSTEMS[name].rows]
                    cached = [json.loads(p.read_text()) for p in recs if p.exists()]
                    fresh = len(cached) == len(recs) and all(c.get("key") == key for c in cached)
                    failed = any(c.get("status") != "ok" for c in cached)
                    if fresh and not args.force and not (failed and args.retry_failed):
                        continue
                    run_system(name, ds, args.budget, seed)

    results = load_results(datasets, systems, args.budget, seeds)
    text = table(datasets, systems, args.budget, results)
    print(text)
    if not args.no_write:
        shown = [a for a in sys.argv[1:] if a not in ("--table-only", "--force", "--retry-failed")]
        command = ".venv/bin/python benchmarks/quality.py " + " ".join(shlex.quote(a) for a in shown)
        RESULTS_MD.write_text(
            "# Quality benchmark results\n\n"
            f"Command: `{command.strip()}` (from the repository root; it runs what is not cached yet, then "
            "prints this table), "
            f"on {time.strftime('%Y-%m-%d')}; machine: {os.cpu_count()} CPU cores, no GPU.\n"
            "Outer split per dataset: `train_test_split(test_size=0.2, random_state=0)`, stratified for "
            "classification; every system runs alone in its own process and environment.\n\n" + text)


if __name__ == "__main__":
    main()
