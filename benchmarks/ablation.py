"""Leave-one-out ablation of the nets' recipe: the nets alone (`fit --no-gbt`), the full default space
against the same space with one technique taken out, on the quality benchmark's split.

Each row is one `fit` of the nets only, at the budget given, on the training part of `quality.py`'s
fixed outer split, scored on its test part with the table's primary metric (ROC-AUC, accuracy, RMSE).
``--seeds`` runs each cell at those seeds of the search (the split stays the same) and gives their mean: at one
seed, differences of a few thousandths are within the run-to-run noise.

    .venv/bin/python benchmarks/ablation.py --budget 60
    .venv/bin/python benchmarks/ablation.py --budget 60 --datasets vehicle,letter --metric accuracy \
        --variants "full recipe,- label smoothing"
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml
from sklearn import metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import manifest, split  # noqa: E402

from automl_dnn import api  # noqa: E402

DATASETS = ("adult", "california_housing", "phoneme", "vehicle")
DEFAULT = Path(__file__).resolve().parents[1] / "search_spaces" / "default.yaml"


def _fix(space: dict[str, Any], name: str, value: Any, drop: tuple[str, ...] = ()) -> None:
    """Fix a parameter to one value, drop the entries that depended on it, and keep the first trials valid."""
    space["params"][name] = {"value": value}
    for key in drop:
        space["params"].pop(key, None)
    for trial in space.get("enqueue", []):
        trial[name] = value
        for key in drop:
            trial.pop(key, None)


def no_embeddings(space: dict[str, Any]) -> None:
    _fix(space, "num_embedding", "none", ("d_embedding", "plr_sigma", "plr_sigma_max", "ple_bins", "ple_binning"))


def no_tabm(space: dict[str, Any]) -> None:
    _fix(space, "k_ensemble", 1)


def no_weight_averaging(space: dict[str, Any]) -> None:
    _fix(space, "weight_averaging", "none", ("ema_decay",))


def no_label_smoothing(space: dict[str, Any]) -> None:
    _fix(space, "label_smoothing", 0.0)


def no_portfolio(space: dict[str, Any]) -> None:
    space["enqueue"] = [next(t for t in space["enqueue"] if t.get("activation") == "elu")]  # the old practical default


VARIANTS: dict[str, Callable[[dict[str, Any]], None] | None] = {
    "full recipe": None,
    "- numeric embeddings": no_embeddings,
    "- TabM (k = 1)": no_tabm,
    "- weight averaging": no_weight_averaging,
    "- portfolio (old first trial)": no_portfolio,
    # label smoothing serves only accuracy-like metrics: run this row with --metric accuracy
    "- label smoothing": no_label_smoothing,
}


def primary(task: str, y: pd.Series, model: Any, X: pd.DataFrame) -> float:
    if task == "regression":
        return float(np.sqrt(metrics.mean_squared_error(y.to_numpy(float), model.predict(X))))
    if task == "binary":
        proba = model.predict_proba(X)[:, 1]
        return float(metrics.roc_auc_score(y.astype(str) == str(model.classes_[1]), proba))
    return float(np.mean(model.predict(X).astype(str) == y.astype(str).to_numpy()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated row names")
    parser.add_argument("--metric", default=None, help="the search's metric (default: the task's own)")
    parser.add_argument("--seeds", default="0", help="comma-separated search seeds; a cell is their mean")
    args = parser.parse_args()
    wanted = args.datasets.split(",")
    chosen = {v: VARIANTS[v] for v in args.variants.split(",")}
    results: dict[str, dict[str, float]] = {v: {} for v in chosen}
    with tempfile.TemporaryDirectory() as tmp:
        for ds in [d for d in manifest() if d["name"] in wanted]:
            train_file, test_file, _ = split(ds)
            train, test = pd.read_parquet(train_file), pd.read_parquet(test_file)
            for variant, change in chosen.items():
                space = copy.deepcopy(yaml.safe_load(DEFAULT.read_text()))
                if change is not None:
                    change(space)
                path = Path(tmp) / f"{ds['name']}-{len(results[variant])}-{abs(hash(variant))}.yaml"
                path.write_text(yaml.safe_dump(space, sort_keys=False))
                values = []
                for seed in (int(s) for s in args.seeds.split(",")):
                    out = Path(tmp) / f"{path.stem}-{seed}"
                    api.fit(train, target=ds["target"], task=ds["task"], model_dir=out / "model", out=out / "run",
                            space=str(path), time_budget=args.budget, gbt=False, test_size=0.0, seed=seed,
                            quiet=True, progress=False, metric=args.metric)
                    model = api.load(out / "model")
                    values.append(primary(ds["task"], test[ds["target"]], model, test.drop(columns=[ds["target"]])))
                    print(f"{ds['name']} | {variant} | seed {seed}: {values[-1]:.4f}", flush=True)
                results[variant][ds["name"]] = float(np.mean(values))
    names = list(next(iter(results.values())))
    print("command: " + " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/ablation.py", *sys.argv[1:]]))
    print("| nets alone (`--no-gbt`) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for variant, row in results.items():
        print(f"| {variant} | " + " | ".join(f"{row[n]:.4f}" for n in names) + " |")


if __name__ == "__main__":
    main()
