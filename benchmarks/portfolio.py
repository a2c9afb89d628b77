"""Chooses the default space's first trials (its portfolio) from runs inside the benchmark's training parts.

Like TabRepo's zero-shot portfolios: a few diverse strong configurations, tried first, ordered by how
they rank across datasets. Every candidate trains on the training part of `quality.py`'s fixed outer
split of each dataset, with its own inner validation split (20 %); the test parts the quality table is
judged on are never read. Each candidate gets the epochs a trial of a `--time-budget B` search gets
(the search caps a trial's epochs to about B/8 from its probed epoch time), with no pruner, so all of
them train to their planned end.

    .venv/bin/python benchmarks/portfolio.py --budget 160

prints each candidate's inner validation score per dataset, its rank and its mean rank.

A candidate's score per trial ignores its cost: on 2 cores a TabM k = 8 trial costs about eight plain
trials. ``--orders`` therefore scores whole portfolios by what they lead to: for each order of first
trials, one nets-only ``fit --time-budget B`` (pruner, TPE and all) on 80 % of the training part,
scored with the table's primary metric on the other 20 % (seeded, stratified for classification):

    .venv/bin/python benchmarks/portfolio.py --orders --budget 60
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import manifest, split  # noqa: E402  (the benchmark's own outer split)

from automl_dnn import api  # noqa: E402
from automl_dnn.run_folder import RunDir  # noqa: E402
from automl_dnn.space import load_space  # noqa: E402
from automl_dnn.study import open_study  # noqa: E402

DATASETS = ("adult", "california_housing", "phoneme", "vehicle")
COMMON = {"target_transform": "none", "first_layer_mult": 1.0, "dropout_placement": "all", "penalty": "none",
          "use_max_norm": False, "clip": "none", "class_weight": False}
CANDIDATES: dict[str, dict[str, Any]] = {
    "practical default (ELU, Nadam, 1cycle)": {
        **COMMON, "scaling": "standard", "num_embedding": "none", "k_ensemble": 1, "n_layers": 2, "d_hidden": 256,
        "activation": "elu", "elu_alpha": 1.0, "init_policy": "matched", "init_he": "he_normal", "batchnorm": "none",
        "dropout": 0.0, "schedule": "onecycle", "optimizer": "nadam", "lr_adaptive": 0.003, "beta2": 0.999,
        "weight_averaging": "none", "label_smoothing": 0.0, "batch_size": 256},
    "self-normalizing (SELU)": {
        **COMMON, "scaling": "standard", "num_embedding": "none", "k_ensemble": 1, "n_layers": 3, "d_hidden": 256,
        "activation": "selu", "dropout": 0.1, "schedule": "onecycle", "optimizer": "nadam", "lr_adaptive": 0.001,
        "beta2": 0.999, "weight_averaging": "none", "label_smoothing": 0.0, "batch_size": 256},
    "RealMLP-like (robust scaling, PLR, flat-cosine AdamW)": {
        **COMMON, "scaling": "robust", "num_embedding": "plr", "d_embedding": 16, "plr_sigma": 0.1, "k_ensemble": 1,
        "n_layers": 3, "d_hidden": 256, "activation": "mish", "init_policy": "matched", "init_he": "he_normal",
        "batchnorm": "none", "dropout": 0.15, "schedule": "flat_cosine", "flat_fraction": 0.5,
        "fc_optimizer": "adamw", "fc_lr": 0.002, "fc_beta2": 0.99, "fc_weight_decay": 1e-5,
        "weight_averaging": "none", "label_smoothing": 0.1, "batch_size": 256},
    "TabM-like (k=8, PLE, AdamW)": {
        **COMMON, "scaling": "quantile", "num_embedding": "ple", "d_embedding": 16, "ple_bins": 48, "k_ensemble": 8,
        "n_layers": 3, "d_hidden": 256, "activation": "relu", "init_policy": "matched", "init_he": "he_uniform",
        "batchnorm": "none", "dropout": 0.1, "schedule": "none", "optimizer": "adamw", "lr_adaptive": 0.002,
        "beta2": 0.999, "weight_decay": 3e-4, "weight_averaging": "none", "label_smoothing": 0.0,
        "batch_size": 256},
    "TabM-mini-like (k=4, PLR, flat-cosine)": {
        **COMMON, "scaling": "quantile", "num_embedding": "plr", "d_embedding": 16, "plr_sigma": 0.05,
        "k_ensemble": 4, "n_layers": 2, "d_hidden": 256, "activation": "relu", "init_policy": "matched",
        "init_he": "he_uniform", "batchnorm": "none", "dropout": 0.1, "schedule": "flat_cosine",
        "flat_fraction": 0.5, "fc_optimizer": "adamw", "fc_lr": 0.002, "fc_beta2": 0.999,
        "fc_weight_decay": 1e-4, "weight_averaging": "none", "label_smoothing": 0.0, "batch_size": 256},
    "MLP-PLR (quantile, PLR, EMA)": {
        **COMMON, "scaling": "quantile", "num_embedding": "plr", "d_embedding": 16, "plr_sigma": 0.05, "k_ensemble": 1,
        "n_layers": 2, "d_hidden": 256, "activation": "relu", "init_policy": "matched", "init_he": "he_uniform",
        "batchnorm": "none", "dropout": 0.1, "schedule": "flat_cosine", "flat_fraction": 0.5,
        "fc_optimizer": "adamw", "fc_lr": 0.001, "fc_beta2": 0.999, "fc_weight_decay": 1e-5,
        "weight_averaging": "ema", "ema_decay": 0.999, "label_smoothing": 0.0, "batch_size": 256},
    "quantile + BatchNorm (4 layers)": {
        **COMMON, "scaling": "quantile", "num_embedding": "none", "k_ensemble": 1, "n_layers": 4, "d_hidden": 256,
        "activation": "elu", "elu_alpha": 1.0, "init_policy": "matched", "init_he": "he_normal",
        "batchnorm": "before", "bn_momentum": 0.99, "dropout": 0.2, "schedule": "onecycle", "optimizer": "nadam",
        "lr_adaptive": 0.003, "beta2": 0.999, "weight_averaging": "none", "label_smoothing": 0.0,
        "batch_size": 512},
}


def _plr(**changes: Any) -> dict[str, Any]:
    return {**CANDIDATES["MLP-PLR (quantile, PLR, EMA)"], **changes}


#: ``--candidates plr``: the MLP-PLR trial with its periodic embedding's frequency scale and width varied
#: (Gorishniy et al. 2022 tune sigma over [0.01, 100]; the portfolio's 0.05 was never compared with others)
PLR_VARIANTS: dict[str, dict[str, Any]] = {
    "MLP-PLR sigma 0.05 (the portfolio's)": _plr(),
    "sigma 0.01": _plr(plr_sigma=0.01),
    "sigma 0.2": _plr(plr_sigma=0.2),
    "sigma 1": _plr(plr_sigma=1.0),
    "sigma 5": _plr(plr_sigma=5.0),
    "sigma 1, d_embedding 32": _plr(plr_sigma=1.0, d_embedding=32),
    "sigma 1, standard scaling": _plr(plr_sigma=1.0, scaling="standard"),
    "sigma 1, robust scaling": _plr(plr_sigma=1.0, scaling="robust"),
}
#: ``--candidates plr-spread``: PLR's frequencies initialised at several scales at once (``plr_sigma_max``)
PLR_SPREAD: dict[str, dict[str, Any]] = {
    "MLP-PLR sigma 0.05 (session 3's portfolio)": _plr(),
    "sigmas 0.05 to 5": _plr(plr_sigma=0.05, plr_sigma_max=5.0),
    "sigmas 0.01 to 10": _plr(plr_sigma=0.01, plr_sigma_max=10.0),
    "sigmas 0.1 to 3": _plr(plr_sigma=0.1, plr_sigma_max=3.0),
}
CANDIDATE_SETS = {"portfolio": CANDIDATES, "plr": PLR_VARIANTS, "plr-spread": PLR_SPREAD}


def candidate_space(folder: Path, candidates: dict[str, dict[str, Any]] = CANDIDATES) -> Path:
    """The default space with the candidates as its enqueued trials (validated like any space)."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "search_spaces" / "default.yaml").read_text())
    raw["enqueue"] = list(candidates.values())
    for key in {k for c in candidates.values() for k in c} - set(raw["params"]):  # a knob the space lacks
        raw["params"][key] = {"choices": sorted({c.get(key, 0.0) for c in candidates.values()} | {0.0})}
    for key, param in raw["params"].items():  # a value the space's choices lack (plr_sigma_max 3 or 5)
        if isinstance(param, dict) and "choices" in param:
            extra = [c[key] for c in candidates.values() if key in c and c[key] not in param["choices"]]
            param["choices"] = list(param["choices"]) + sorted(set(extra))
    path = folder / "portfolio.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_space(str(path))
    return path


def run_dataset(ds: dict[str, Any], space: Path, budget: float, folder: Path, n_trials: int = len(CANDIDATES)
                ) -> list[float]:
    train_file, _, _ = split(ds)  # the training part only
    frame = pd.read_parquet(train_file)
    out = folder / ds["name"]
    api.search(frame, out=out, target=ds["target"], task=ds["task"], space=str(space), n_trials=n_trials,
               time_budget=budget, pruner="none", valid_size=0.2, test_size=0.0, seed=0, quiet=True,
               progress=False)
    spec = RunDir(out).read_spec()
    trials = sorted(open_study(spec, create=False).trials, key=lambda t: t.number)
    sign = 1.0 if spec["direction"] == "minimize" else -1.0
    return [sign * t.value if t.value is not None else float("inf") for t in trials[:n_trials]]


TABM = "TabM-like (k=8, PLE, AdamW)"
PLR = "MLP-PLR (quantile, PLR, EMA)"
PRACTICAL = "practical default (ELU, Nadam, 1cycle)"
REALMLP = "RealMLP-like (robust scaling, PLR, flat-cosine AdamW)"
TABM_MINI = "TabM-mini-like (k=4, PLR, flat-cosine)"
ORDERS: dict[str, list[str]] = {
    "TabM first (session 3)": [TABM, PLR, PRACTICAL, REALMLP],
    "TabM last": [PLR, PRACTICAL, REALMLP, TABM],
    "no TabM": [PLR, PRACTICAL, REALMLP],
    "TabM-mini last": [PLR, PRACTICAL, REALMLP, TABM_MINI],
}


def inner_split(frame: pd.DataFrame, ds: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    stratify = frame[ds["target"]] if ds["task"] != "regression" else None
    return train_test_split(frame, test_size=0.2, random_state=0, stratify=stratify)


def run_orders(datasets: list[dict[str, Any]], budget: float) -> None:
    """Score whole portfolios: each order's nets-only fit, on the inner holdout of the training part."""
    from ablation import primary

    results: dict[str, dict[str, float]] = {name: {} for name in ORDERS}
    with tempfile.TemporaryDirectory() as tmp:
        raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "search_spaces" / "default.yaml").read_text())
        for ds in datasets:
            train_file, _, _ = split(ds)  # the training part only
            inner, holdout = inner_split(pd.read_parquet(train_file), ds)
            for name, order in ORDERS.items():  # interleaved per dataset, so machine load hits every order alike
                raw["enqueue"] = [CANDIDATES[c] for c in order]
                out = Path(tmp) / f"{ds['name']}-{len(results[name])}-{list(ORDERS).index(name)}"
                out.mkdir()
                (out / "space.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
                api.fit(inner, target=ds["target"], task=ds["task"], model_dir=out / "model", out=out / "run",
                        space=str(out / "space.yaml"), time_budget=budget, gbt=False, test_size=0.0, seed=0,
                        quiet=True, progress=False)
                model = api.load(out / "model")
                value = primary(ds["task"], holdout[ds["target"]], model, holdout.drop(columns=[ds["target"]]))
                results[name][ds["name"]] = value
                print(f"{ds['name']} | {name}: {value:.4f}", flush=True)
    names = [ds["name"] for ds in datasets]
    ranks: dict[str, list[int]] = {name: [] for name in ORDERS}
    for ds in datasets:
        sign = 1.0 if ds["task"] == "regression" else -1.0  # RMSE down, ROC-AUC / accuracy up
        ordered = sorted(ORDERS, key=lambda n: sign * results[n][ds["name"]])
        for rank, name in enumerate(ordered, start=1):
            ranks[name].append(rank)
    print("command: " + " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/portfolio.py", *sys.argv[1:]]))
    print("| first trials | " + " | ".join(names) + " | mean rank |")
    print("|---|" + "---|" * (len(names) + 1))
    for name in sorted(ORDERS, key=lambda n: statistics.mean(ranks[n])):
        cells = " | ".join(f"{results[name][d]:.4f} ({r})" for d, r in zip(names, ranks[name]))
        print(f"| {name} | {cells} | {statistics.mean(ranks[name]):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=160.0, help="seconds of the search a candidate is a trial of")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--orders", action="store_true", help="score whole portfolios by a nets-only fit each")
    parser.add_argument("--candidates", choices=sorted(CANDIDATE_SETS), default="portfolio",
                        help="which configurations to compare: the portfolio's candidates, or PLR's variants")
    args = parser.parse_args()
    wanted = args.datasets.split(",")
    datasets = [ds for ds in manifest() if ds["name"] in wanted]
    if args.orders:
        run_orders(datasets, args.budget)
        return
    candidates = CANDIDATE_SETS[args.candidates]
    names = list(candidates)
    losses: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        space = candidate_space(Path(tmp), candidates)
        for ds in datasets:
            losses[ds["name"]] = run_dataset(ds, space, args.budget, Path(tmp), len(candidates))
            print(f"{ds['name']}: " + ", ".join(f"{v:.4g}" for v in losses[ds["name"]]), flush=True)
    ranks = {n: [] for n in names}
    for values in losses.values():
        order = sorted(range(len(names)), key=lambda i: values[i])
        for rank, i in enumerate(order, start=1):
            ranks[names[i]].append(rank)
    print("command: " + " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/portfolio.py", *sys.argv[1:]]))
    print("| candidate | " + " | ".join(losses) + " | mean rank |")
    print("|---|" + "---|" * (len(losses) + 1))
    for i, name in sorted(enumerate(names), key=lambda t: statistics.mean(ranks[t[1]])):
        cells = " | ".join(f"{losses[d][i]:.4g} ({ranks[name][j]})" for j, d in enumerate(losses))
        print(f"| {name} | {cells} | {statistics.mean(ranks[name]):.2f} |")


if __name__ == "__main__":
    main()
