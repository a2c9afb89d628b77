"""Honest validation (issue 11): k-fold bagging against one validation split, over several outer seeds.

One split of a small table is noise; so each (dataset, seed) runs ``automl-dnn fit --seed S --test-size 0.2``
once per variant, and the ensemble's scores come from its own ``RUN/ensemble.json``: the inner score the
weights were fitted on (out-of-fold after bagging, validation for the holdout) and the score on the test
split (the same rows for every variant of a seed). Reported per dataset as mean ± sd over the seeds:

- the ensemble's test log-loss (classification) or RMSE (regression): what the weights minimize;
- the gap between its inner and its test loss, |inner - test| / test, per seed and averaged; and the gap
  of the means over the seeds, |mean inner - mean test| / mean test: the estimate's bias, without the
  per-seed noise of a test split of a few dozen rows;
- the equal-weight average's test loss (the weighted ensemble should be no worse);
- the primary metric on test (ROC-AUC, accuracy, RMSE).

``--autogluon`` also runs AutoGluon (its benchmark venv, as ``quality.py`` makes it) on exactly the same
training and test rows of each seed, for the binary datasets.

    .venv/bin/python benchmarks/honest.py --datasets german_credit,vehicle,builtin:breast_cancer \\
        --seeds 0,1,2 --budget 60 --autogluon
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import quality  # noqa: E402  (the harness's datasets, environments and scoring)

# bag: the default (cross-validated trials below 2,000 rows, k-fold bagging); bag-holdout-search: bagging,
# but trials valued on the validation split; holdout: one validation split for everything.
VARIANTS = {"bag": [], "bag-holdout-search": ["--cv-folds", "1"], "holdout": ["--folds", "1", "--cv-folds", "1"]}
PRIMARY = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}


def dataset(name: str) -> dict[str, Any]:
    """A manifest entry, or a built-in dataset (``builtin:NAME``) described the same way."""
    if name.startswith("builtin:"):
        from automl_dnn.data.builtins import builtin_info

        info = builtin_info(name)
        return {"name": name.split(":", 1)[1], "source": name, "target": info.target, "task": info.task}
    entry = next((d for d in quality.manifest() if d["name"] == name), None)
    if entry is None:
        raise SystemExit(f"unknown dataset {name!r}")
    return dict(entry, source=str(quality.MANIFEST.parent / entry["file"]))


def run_fit(ds: dict[str, Any], seed: int, variant: str, budget: float, work: Path) -> dict[str, Any]:
    """One fit; returns (cached) the ensemble's summary rows, metric and fit seconds."""
    folder = work / ds["name"] / f"seed{seed}" / variant
    result = folder / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [str(ROOT / ".venv" / "bin" / "automl-dnn"), "fit", ds["source"], "--target", ds["target"],
           "--model", str(folder / "model"), "--out", str(folder / "run"), "--time-budget", f"{budget:g}",
           "--seed", str(seed), "--test-size", "0.2", "--no-report", "--quiet", *VARIANTS[variant]]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(quality.os.environ, **quality.RUN_ENV))
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    report = json.loads((folder / "run" / "ensemble.json").read_text())
    best, equal, weighted = report["summary"]  # ensemble_step._summary_rows' order
    rows = {"best single": best, "equal weights": equal, "weighted ensemble": weighted}
    out = {"rows": rows, "metric": report["metric"], "folds": report["folds"], "fit_s": seconds,
           "n_members": sum(m["weight"] > 0 for m in report["members"]),
           "scores": test_scores(ds, folder / "run", folder / "model")}
    result.write_text(json.dumps(out, indent=1))
    return out


def outer_frames(ds: dict[str, Any], run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training (train + valid) and test rows of a run's split, as tables with the target."""
    from automl_dnn.data import read_table
    from automl_dnn.files import load_arrays

    frame = read_table(ds["source"])
    frame = frame[frame[ds["target"]].notna()].reset_index(drop=True)
    split = load_arrays(run / "split.safetensors")
    train = frame.iloc[np.concatenate([split["train"], split["valid"]])].reset_index(drop=True)
    return train, frame.iloc[split["test"]].reset_index(drop=True)


def test_scores(ds: dict[str, Any], run: Path, model: Path) -> dict[str, float]:
    """The exported model's scores on the run's test rows, as quality.py scores every system."""
    from automl_dnn import api

    train, test = outer_frames(ds, run)
    predictor = api.load(model)
    features = test.drop(columns=[ds["target"]])
    if ds["task"] == "regression":
        pred = pd.DataFrame({"prediction": np.asarray(predictor.predict(features), dtype=float)})
        return quality.score(ds["task"], test[ds["target"]], pred, [])
    classes = sorted(pd.unique(train[ds["target"]]).tolist())
    proba = np.asarray(predictor.predict_proba(features))
    pred = pd.DataFrame(proba, columns=[str(c) for c in predictor.classes_])
    return quality.score(ds["task"], test[ds["target"]], pred, classes)


def run_autogluon(ds: dict[str, Any], seed: int, budget: float, work: Path) -> dict[str, float]:
    folder = work / ds["name"] / f"seed{seed}" / "autogluon"
    result = folder / "scores.json"
    if result.exists():
        return json.loads(result.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    train, test = outer_frames(ds, work / ds["name"] / f"seed{seed}" / "bag" / "run")
    train.to_parquet(folder / "train.parquet")
    test.to_parquet(folder / "test.parquet")
    python = quality.ensure_env("autogluon")
    args = ["--train", str(folder / "train.parquet"), "--test", str(folder / "test.parquet"), "--task", ds["task"],
            "--target", ds["target"], "--budget", f"{budget:g}", "--out", str(folder)]
    proc = quality.run_runner(python, "autogluon_tabular.py", args, budget * 3 + 600, folder / "log.txt")
    if proc["returncode"] != 0:
        raise SystemExit(f"AutoGluon failed on {ds['name']} seed {seed}; see {folder / 'log.txt'}")
    rows = json.loads((folder / "result.json").read_text())["rows"]
    pred = pd.read_parquet(folder / next(iter(rows.values()))["predictions"])
    classes = sorted(pd.unique(train[ds["target"]]).tolist())
    scores = quality.score(ds["task"], test[ds["target"]], pred, classes)
    result.write_text(json.dumps(scores))
    return scores


def mean_sd(values: list[float], digits: int = 4) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}"


def table(results: dict[tuple[str, str], list[dict[str, Any]]], datasets: list[dict[str, Any]],
          variants: list[str], autogluon: dict[str, list[dict[str, float]]]) -> str:
    lines = ["| dataset | variant | ensemble test loss | inner loss (OOF or valid) | gap | gap of the means "
             "| equal weights, test loss | ensemble test, primary metric |", "|---|---|---|---|---|---|---|---|"]
    for ds in datasets:
        primary = PRIMARY[ds["task"]]
        for variant in variants:
            runs = results[(ds["name"], variant)]
            ens = [r["rows"]["weighted ensemble"] for r in runs]
            equal = [r["rows"]["equal weights"] for r in runs]
            gap = [abs(e["valid_loss"] - e["test_loss"]) / e["test_loss"] for e in ens]
            inner, test = np.mean([e["valid_loss"] for e in ens]), np.mean([e["test_loss"] for e in ens])
            lines.append(f"| {ds['name']} | {variant} | {mean_sd([e['test_loss'] for e in ens])} | "
                         f"{mean_sd([e['valid_loss'] for e in ens])} | {100 * np.mean(gap):.0f} % | "
                         f"{100 * abs(inner - test) / test:.0f} % | "
                         f"{mean_sd([e['test_loss'] for e in equal])} | "
                         f"{primary} {mean_sd([_primary(r, primary) for r in runs])} |")
        if ds["name"] in autogluon:
            scores = autogluon[ds["name"]]
            loss = "logloss" if ds["task"] != "regression" else "rmse"
            lines.append(f"| {ds['name']} | AutoGluon | {mean_sd([s[loss] for s in scores])} | | | | | "
                         f"{primary} {mean_sd([s[primary] for s in scores])} |")
    return "\n".join(lines) + "\n"


def _primary(run: dict[str, Any], primary: str) -> float:
    return run["scores"][primary]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="german_credit,vehicle,wine_quality_white,builtin:breast_cancer,"
                                              "builtin:wine,builtin:diabetes")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--variants", default="bag,holdout")
    parser.add_argument("--autogluon", action="store_true", help="AutoGluon on the binary datasets' same rows")
    parser.add_argument("--work", type=Path, default=HERE / ".cache" / "honest")
    args = parser.parse_args()
    datasets = [dataset(name) for name in args.datasets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    work = args.work / f"budget{args.budget:g}"
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    autogluon: dict[str, list[dict[str, float]]] = {}
    for ds in datasets:
        for seed in seeds:
            for variant in variants:
                print(f"{ds['name']} seed {seed} {variant} ...", file=sys.stderr, flush=True)
                results.setdefault((ds["name"], variant), []).append(run_fit(ds, seed, variant, args.budget, work))
            if args.autogluon and ds["task"] == "binary":
                print(f"{ds['name']} seed {seed} AutoGluon ...", file=sys.stderr, flush=True)
                autogluon.setdefault(ds["name"], []).append(run_autogluon(ds, seed, args.budget, work))
    print(table(results, datasets, variants, autogluon))


if __name__ == "__main__":
    main()
