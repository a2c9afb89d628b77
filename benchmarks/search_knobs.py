"""Chooses the search's budget knobs (a trial's share of a short budget, the slow-trial guard, the
workers of a nets-only fit) from nets-only fits inside the benchmark's training parts, over several seeds.

Each variant patches module constants (of ``automl_dnn.objective``, or any named in ``patch``; in this
process: a ``jobs > 1`` variant's workers do not see them) and/or passes ``api.fit`` options, and runs one
nets-only ``fit --time-budget B`` per dataset and seed on 80 % of the training part of ``quality.py``'s
outer split (the inner split's ``random_state`` is the seed), scored with the table's primary metric on the
other 20 %; the test parts the quality table is judged on are never read. Variants are interleaved per
dataset and seed, so machine load hits them alike. Prints each cell as the mean over seeds, and the mean rank.

    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment share
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1,2,3 --experiment xgboost-cores \
        --datasets letter,german_credit      # whole fits with XGBoost (a variant's "fit": {"gbt": True})
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment jobs
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment short-share
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment sample \
        --datasets adult,california_housing,diamonds,letter
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment defer \
        --datasets adult,california_housing,diamonds,phoneme
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment plr-sigma \
        --datasets adult,california_housing,diamonds,phoneme
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment cut-members \
        --datasets bank_marketing,german_credit,phoneme,wine_quality_white
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment tail \
        --datasets adult,california_housing,diamonds,phoneme
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment plr-flat \
        --datasets adult,california_housing,diamonds,phoneme
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment cut-order \
        --datasets adult,phoneme,wine_quality_white,vehicle
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1,2,3 --experiment refit \
        --datasets california_housing,diamonds
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment copy-schedule \
        --datasets adult,california_housing,diamonds,phoneme
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment mae-loss --metric mae \
        --datasets california_housing,diamonds,wine_quality_white
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment patience-anneal --jobs 1 \
        --datasets adult,california_housing,diamonds,phoneme
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1,2,3 --experiment refit-until \
        --datasets california_housing,diamonds
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment target-log \
        --datasets california_housing,diamonds
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment tabm-ema \
        --datasets adult,california_housing,diamonds,phoneme
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment overfit-stop \
        --datasets adult,bank_marketing,california_housing,phoneme
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment plr-regularized \
        --datasets adult,bank_marketing,german_credit,phoneme,vehicle
    .venv/bin/python benchmarks/search_knobs.py --budget 60 --seeds 0,1 --experiment tabm-dropout \
        --datasets california_housing,diamonds,wine_quality_white

Fits run with ``--jobs auto`` (the CLI's default) unless a variant or ``--jobs`` says otherwise; before session 17
they ran one worker (``api.fit``'s default), so an earlier section's table reruns with ``--jobs 1``. Run them
under ``OMP_WAIT_POLICY=PASSIVE``, as the quality runs are.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import primary  # noqa: E402
from quality import manifest, split  # noqa: E402
from step_kernels import per_tensor_loop, torch_dropout  # noqa: E402

from automl_dnn import api  # noqa: E402
from automl_dnn.ensemble_step import refit_deadline  # noqa: E402  (the original, which a variant patches)

DATASETS = ("adult", "california_housing", "phoneme", "vehicle")


def _one_epoch_before_the_end(self: Any, trial: Any, epoch: float) -> None:
    """Session 12's start rule: a trial starts if one epoch fits before the search's end without the bagging's
    reserve (a TabM trial started 7 s before the end of adult's 60 s search trained 1 epoch)."""
    import time

    import optuna

    left = None if self.ctx.deadline is None else self.ctx.deadline - time.time()
    if left is not None and epoch > left:
        raise optuna.TrialPruned(f"not started: an epoch takes about {epoch:.0f}s")


def _as_searched(run: Any, encoder: Any, candidates: list[Any], **kwargs: Any) -> list[Any]:
    """The unbagged nets exported as their trials trained them, with no refit on every row."""
    kwargs["notes"].append("nets exported as searched (the refit switched off by search_knobs)")
    return candidates


def _schedule_ends_with_the_copy(best_epoch: int, max_epochs: int, n_search_train: int, n_train: int) -> tuple[int, int]:
    """A fold copy or refit whose schedule runs its whole course in the epochs it trains (it anneals)."""
    from automl_dnn.folds import scaled_epochs

    _, epochs = scaled_epochs(best_epoch, max_epochs, n_search_train, n_train)
    return epochs, epochs


def _refit_a_quarter_early(deadline: float | None, bagging_until: float | None,
                           now: float | None = None) -> float | None:
    """Session 14's refit deadline: REFIT_EXPORT_SHARE of the ensemble step's time before its end, as when
    no search end is given."""
    return refit_deadline(deadline, None, now)


def _plan_for_8_trials(*args: Any, budget: float | None = None, **kwargs: Any) -> Any:
    """Session 5's sample: sized so that 8 trials fit in the time left, whatever a trial's share."""
    from automl_dnn.budget import plan_search_rows

    return plan_search_rows(*args, **kwargs)


# experiment -> variant -> {"objective": {module attribute: value}, "fit": {api.fit option: value},
# "patch": {"package.module.ATTRIBUTE": value}, "enqueue": {index: {param: value}}: the default space with
# these values in its enqueued first trials, "first": n: the default space with only its first n enqueued trials};
# a slow-trial factor of inf disables that guard.
EXPERIMENTS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "share": {
        "share budget/8, no guard (session 5)": {"patch": {"automl_dnn.budget.SHORT_BUDGET_TRIALS": 8},
                                                 "objective": {"SLOW_TRIAL_FACTOR": float("inf")}},
        "share budget/8 + slow guard": {"patch": {"automl_dnn.budget.SHORT_BUDGET_TRIALS": 8},
                                        "objective": {"SLOW_TRIAL_FACTOR": 2.0}},
        "short-budget share (<= budget/4, 30 s) + slow guard": {"patch": {"automl_dnn.budget.SHORT_BUDGET_TRIALS": 4},
                                                                "objective": {"SLOW_TRIAL_FACTOR": 2.0}},
    },
    "portfolio": {
        "portfolio pruned like any trial (session 5)": {"objective": {"PRUNE_PORTFOLIO": True}},
        "portfolio never pruned": {"objective": {"PRUNE_PORTFOLIO": False}},
    },
    # fewer, longer trials on a short budget: the first (TabM-like) net trained alone for 72 s beat the
    # search's best on california_housing by 10 %
    "short-share": {
        "share <= budget/4 (session 6)": {"patch": {"automl_dnn.budget.SHORT_BUDGET_TRIALS": 4}},
        "share <= budget/2": {"patch": {"automl_dnn.budget.SHORT_BUDGET_TRIALS": 2}},
    },
    # a search on a sample of the training rows (sized for 8 trials of 5 epochs) or on every row: at 60 s the
    # refit on every row that a sample asks for does not fit, and the nets were exported as trained on the sample
    "sample": {
        "sampled search (session 5)": {"patch": {"automl_dnn.search_rows.plan_search_rows": _plan_for_8_trials}},
        "sample sized to a trial's share (session 10)": {},
        "every row": {"patch": {"automl_dnn.search_rows.MIN_SEARCH_ROWS": 10**9}},
    },
    # an enqueued first trial whose 5 epochs exceed its share (the TabM-like k = 8 on 2 cores) run first, as
    # enqueued, or behind the other first trials
    "defer": {
        "portfolio in its order (session 3)": {"objective": {"DEFER_SLOW_PORTFOLIO": False}},
        "slow first trials deferred": {"objective": {"DEFER_SLOW_PORTFOLIO": True}},
    },
    # the portfolio's MLP-PLR trial (its second) with one frequency scale, or scales spread from 0.01 to 10: the
    # best single scale differs by 100x between tables (docs/benchmarks.md, "PLR's frequency scale")
    "plr-sigma": {
        "MLP-PLR σ 0.05 (session 3)": {"enqueue": {1: {"plr_sigma": 0.05, "plr_sigma_max": 0.0}}},
        "MLP-PLR σ 0.01 to 10 (session 10)": {},
    },
    # a bagging cut to fit the time left (at 60 s on bank_marketing and phoneme: 3 folds of the best net alone)
    # or, below 2 members, the ensemble of the search's nets on the validation split
    "cut-members": {
        "a cut keeps 1 member or more (session 7)": {"patch": {"automl_dnn.budget.MIN_CUT_MEMBERS": 1}},
        "a cut keeps 2 members or more": {"patch": {"automl_dnn.budget.MIN_CUT_MEMBERS": 2}},
    },
    # the same search with cheaper steps (docs/benchmarks.md, "Cheaper training steps on the CPU"): more epochs
    # in each trial's share of the budget
    "kernels": {
        "PyTorch's CPU dropout and optimizer loop (session 10)": {
            "patch": {"automl_dnn.model._dropout": torch_dropout, "automl_dnn.optim._fastest": per_tensor_loop}},
        "byte-mask dropout, fused optimizer steps": {},
    },
    # the portfolio's three one-net first trials (MLP-PLR, ELU 1cycle, RealMLP-like) on batches of 256 or 512 rows:
    # on 2 cores a step's fixed cost is a large part of a 2x256 net's, and at 60 s diamonds' nets are all still
    # improving when their share ends
    "batch": {
        "batch 256 (session 3)": {},
        "batch 512": {"enqueue": {1: {"batch_size": 512}, 2: {"batch_size": 512}, 3: {"batch_size": 512}}},
    },
    # bf16 autocast in the training steps on a CPU with native bf16 dot products (AVX512-BF16): TabM's steps 1.4x
    "bf16": {
        "float32 (session 11)": {"fit": {"amp": False}},
        "bf16 autocast": {"fit": {"amp": True}},
    },
    # the portfolio's TabM-like first trial (k = 8) 3x256 or 3x128: alone in its 15 s share on california_housing
    # a 3x128 net trains 35 epochs to 45,182 validation RMSE, the 3x256 one 12 to 47,289
    "tabm-width": {
        "TabM-like 3x256 (session 3)": {},
        "TabM-like 3x128": {"enqueue": {0: {"d_hidden": 128}}},
    },
    # then its members: k = 8 or 4 (3x128). Alone in its share a k = 4 net trains twice the epochs: letter 0.139 ->
    # 0.092 validation log-loss, california_housing 45,182 -> 44,999, diamonds 667 -> 645, adult level
    "tabm-k": {
        "TabM-like k = 8 (session 3)": {},
        "TabM-like k = 4": {"enqueue": {0: {"k_ensemble": 4}}},
    },
    # the portfolio's MLP-PLR trial (its second) flat for half its epochs or a quarter: in 60 s fits it was best
    # at epoch 3 of 43 (adult), 11 of 44 (diamonds), 13 of 62 (california_housing), so patience, which waits
    # for the annealing, let it train 60-70 % of its time past its best
    "plr-flat": {
        "MLP-PLR flat half (session 3)": {},
        "MLP-PLR flat a quarter": {"enqueue": {1: {"flat_fraction": 0.25}}},
    },
    # a bagging cut to fit the time left: of the plans that fit, the most folds (at 60 s on vehicle 5 folds of
    # the best net alone) or the most nets (3 folds of 2 nets, if they fit)
    "cut-order": {
        "folds before members (session 7)": {"patch": {"automl_dnn.budget.MEMBERS_BEFORE_FOLDS": False}},
        "members before folds": {"patch": {"automl_dnn.budget.MEMBERS_BEFORE_FOLDS": True}},
    },
    # when the nets are not bagged: the best refit on every development row as time allows (issue 13), or
    # every net exported as its trial trained it (its checkpoint chosen on the validation split)
    "refit": {
        "refit the unbagged nets (issue 13)": {},
        "export them as searched": {"patch": {"automl_dnn.ensemble_step._refit_unbagged": _as_searched}},
    },
    # a fold copy (or refit) keeps its trial's schedule and stops where the trial was best (a flat_cosine net
    # best in its flat phase stops at full learning rate), or its schedule ends where it stops
    "copy-schedule": {
        "copies stop mid-schedule (session 4)": {},
        "copies anneal by their last epoch": {"patch": {"automl_dnn.bagging.scaled_epochs": _schedule_ends_with_the_copy}},
    },
    # an MAE study (--metric mae): the portfolio's nets trained with Huber (the default space), L1 or MSE
    "mae-loss": {
        "Huber portfolio": {},
        "L1 portfolio": {"enqueue": {i: {"regression_loss": "l1"} for i in range(4)}},
        "MSE portfolio (before session 14)": {"enqueue": {i: {"regression_loss": "mse"} for i in range(4)}},
    },
    # the search's last trial: started if one epoch fits before the search's end (the bagging's reserve
    # aside), or only if MIN_EPOCHS fit before the end the bagging moves (the rest goes to the bagging)
    "tail": {
        "one epoch before the end (session 12)": {
            "patch": {"automl_dnn.objective.Objective._start_if_it_can_learn": _one_epoch_before_the_end,
                      "automl_dnn.workers.too_late_for_a_trial": lambda study, seconds_left: False}},
        "MIN_EPOCHS before the bagging": {},
    },
    # the TabM-like first trial's PLE bins: quantiles of the training rows, or a tree's splits against the target
    "ple-tree": {
        "quantile bins (session 3)": {"enqueue": {0: {"ple_binning": "quantile"}}},
        "tree bins": {"enqueue": {0: {"ple_binning": "tree"}}},
    },
    # TabRepo's zero-shot portfolio, longer: the default space's seven first trials (session 15: session 3's three
    # other candidates after the four), or only its first four, after which TPE draws (and a small table's 60 s
    # search prunes most of them)
    "portfolio-7": {
        "4 first trials (session 3)": {"first": 4},
        "7 first trials": {},
    },
    # the nets alone on 2 cores: one worker with 2 torch threads, or 2 workers with one thread each (what the
    # CLI's --jobs auto runs there since session 16)
    "jobs": {
        "1 worker x 2 threads": {"fit": {"jobs": 1}},
        "2 workers x 1 thread": {"fit": {"jobs": 2, "threads": 1}},
    },
    # where patience starts counting in an annealing schedule: at the annealing's start, or half way through it
    # (a module constant: run with --jobs 1, so that the trials train in this process)
    "patience-anneal": {
        "patience from the annealing's start (session 6)": {"patch": {"automl_dnn.optim.PATIENCE_ANNEAL_SHARE": 0.0}},
        "patience from half way through it": {"patch": {"automl_dnn.optim.PATIENCE_ANNEAL_SHARE": 0.5}},
    },
    # the TabM-like first trial's schedule: a constant lr (the TabM paper's), or flat then cosine like the others
    "tabm-schedule": {
        "TabM-like at a constant lr (session 3)": {},
        "TabM-like flat half, then cosine": {"enqueue": {0: {
            "schedule": "flat_cosine", "flat_fraction": 0.5, "fc_optimizer": "adamw", "fc_lr": 0.002, "fc_beta2": 0.999,
            "fc_weight_decay": 0.0003, "optimizer": None, "lr_adaptive": None, "beta2": None, "weight_decay": None}}},
    },
    # the TabM-like first trial at its constant lr, its weights as trained or averaged (EMA) over its last half: on
    # california_housing its validation RMSE swung 45,000-48,000 between epochs over its last ten
    "tabm-ema": {
        "TabM-like as trained (session 3)": {},
        "TabM-like with EMA 0.999": {"enqueue": {0: {"weight_averaging": "ema", "ema_decay": 0.999}}},
    },
    # the refits of unbagged nets: until the search's planned end (the time its reserve kept for them), or, as
    # before session 17, until REFIT_EXPORT_SHARE of the ensemble step's time before its end
    "refit-until": {
        "refits end a quarter of the step early (session 14)": {
            "patch": {"automl_dnn.ensemble_step.refit_deadline": _refit_a_quarter_early}},
        "refits may take the search's reserve": {},
    },
    # fit with XGBoost (the one experiment that is not nets-only): its half of the cores for the whole search,
    # or back to the nets' search once it is done with them, tuning no longer than it keeps up (session 19)
    "xgboost-cores": {
        "XGBoost keeps half the cores (session 18)": {"fit": {"gbt": True},
                                                      "patch": {"automl_dnn.api.CORES_BACK_FROM_XGBOOST": False}},
        "its cores back to the nets": {"fit": {"gbt": True}},
    },
    # a regression net's target: as it is (standardized), or log1p (standardized) in every first trial
    "target-log": {
        "target as it is (session 3)": {},
        "log1p target": {"enqueue": {i: {"target_transform": "log1p"} for i in range(7)}},
    },
    # the overfit stop: trials train on while their validation loss runs away, until patience (which waits for half
    # the annealing) or their epochs end, or stop after 10 epochs over 10 % above their best while their training
    # loss is below it (a space's fixed parameter, so spawned workers see it)
    "overfit-stop": {
        "patience only (session 17)": {"params": {"overfit_margin": 0.0}},
        "overfit stop (10 epochs, 10 %)": {"params": {"overfit_margin": 0.1}},
    },
    # The MLP-PLR first trial (enqueued 1) peaks at epoch 3-5 on adult: more dropout and weight decay lowered its own
    # validation log-loss at 3 of 3 inner seeds there (0.0024-0.0050), and cost diamonds 30 % of RMSE (binary tables
    # only: session 21 ran it with an enqueued entry per task, commit 003e3e5)
    "plr-regularized": {
        "MLP-PLR dropout 0.1, weight decay 1e-5 (session 10)": {},
        "MLP-PLR dropout 0.4, weight decay 0.01": {"enqueue": {1: {"dropout": 0.4, "fc_weight_decay": 0.01}}},
    },
    # The TabM-like first trial without dropout: its own validation RMSE on diamonds 636 -> 565 and
    # 594 -> 537 (inner seeds 0, 1), california_housing 45,004 -> 44,563 and 46,512 -> 46,914; phoneme's log-loss
    # 0.278 -> 0.290 and 0.293 -> 0.300, so for regression only: since session 21 regression takes default.yaml's
    # enqueued entry 1, without dropout, and the first variant puts its 0.1 back (session 21 ran the experiment on
    # the source before, as entry 0's dropout set to 0)
    "tabm-dropout": {
        "TabM-like dropout 0.1 (session 3)": {"enqueue": {1: {"dropout": 0.1}}},
        "TabM-like dropout 0": {},
    },
}


def inner_split(frame: pd.DataFrame, ds: dict[str, Any], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    stratify = frame[ds["target"]] if ds["task"] != "regression" else None
    return train_test_split(frame, test_size=0.2, random_state=seed, stratify=stratify)


def run_variant(variant: dict[str, dict[str, Any]], ds: dict[str, Any], inner: pd.DataFrame, holdout: pd.DataFrame,
                budget: float, seed: int, folder: Path, metric: str | None = None, jobs: int | str = 1) -> float:
    knobs = {f"automl_dnn.objective.{name}": value for name, value in variant.get("objective", {}).items()}
    with patched({**knobs, **variant.get("patch", {})}):
        options = dict({"jobs": jobs, "gbt": False}, **variant.get("fit", {}), **({"metric": metric} if metric else {}))
        if "enqueue" in variant or "first" in variant or "params" in variant:
            options["space"] = str(_space_with(variant.get("enqueue", {}), folder, variant.get("first"),
                                               variant.get("params")))
        api.fit(inner, target=ds["target"], task=ds["task"], model_dir=folder / "model", out=folder / "run",
                time_budget=budget, test_size=0.0, seed=seed, quiet=True, progress=False,
                report_page=False, **options)
    model, X, y = api.load(folder / "model"), holdout.drop(columns=[ds["target"]]), holdout[ds["target"]]
    if metric == "mae":
        return float(np.mean(np.abs(y.to_numpy(float) - model.predict(X))))
    return primary(ds["task"], y, model, X)


@contextmanager
def patched(values: dict[str, Any]) -> Iterator[None]:
    """Each ``"package.module.ATTRIBUTE"`` (or a class's) set to its value in this process, and restored after."""
    targets = {path: (_owner(path.rsplit(".", 1)[0]), path.rsplit(".", 1)[1]) for path in values}
    saved = {path: getattr(owner, name) for path, (owner, name) in targets.items()}
    try:
        for path, (owner, name) in targets.items():
            setattr(owner, name, values[path])
        yield
    finally:
        for path, (owner, name) in targets.items():
            setattr(owner, name, saved[path])


def _owner(path: str) -> Any:
    """The module or class a patched attribute lives in: "automl_dnn.objective" or "automl_dnn.objective.Objective"."""
    module, _, attribute = path.rpartition(".")
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        return getattr(importlib.import_module(module), attribute)


def _space_with(changes: dict[int, dict[str, Any]], folder: Path, first: int | None = None,
                params: dict[str, Any] | None = None) -> Path:
    """The default space as a file in ``folder``, its enqueued trial ``i`` updated with ``changes[i]``, only
    its ``first`` enqueued trials kept (all when None), and its ``params`` entries updated with ``params``."""
    from importlib import resources

    import yaml

    raw = yaml.safe_load((resources.files("automl_dnn.search_spaces") / "default.yaml").read_text())
    for index, values in changes.items():
        raw["enqueue"][index].update(values)
        for name in [name for name, value in values.items() if value is None]:  # None: the parameter is left out
            del raw["enqueue"][index][name]
    raw["enqueue"] = raw["enqueue"][:first]
    raw["params"].update(params or {})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--experiment", default="share", choices=list(EXPERIMENTS))
    parser.add_argument("--jobs", default="auto", help="api.fit's jobs where a variant does not set them (the CLI's "
                        "default, auto; a variant's patched constants do not reach spawned workers: 1 for those)")
    parser.add_argument("--metric", default=None, choices=["mae"],
                        help="the search's metric, also scored on the holdout (default: the task's own)")
    args = parser.parse_args()
    variants = EXPERIMENTS[args.experiment]
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = [ds for ds in manifest() if ds["name"] in args.datasets.split(",")]
    cells: dict[str, dict[str, list[float]]] = {v: {ds["name"]: [] for ds in datasets} for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for ds in datasets:
            train_file, _, _ = split(ds)  # the training part only
            frame = pd.read_parquet(train_file)
            for seed in seeds:
                inner, holdout = inner_split(frame, ds, seed)
                for i, (name, variant) in enumerate(variants.items()):
                    folder = Path(tmp) / f"{ds['name']}-{seed}-{i}"
                    value = run_variant(variant, ds, inner, holdout, args.budget, seed, folder, args.metric,
                                        int(args.jobs) if args.jobs.isdigit() else args.jobs)
                    cells[name][ds["name"]].append(value)
                    print(f"{ds['name']} seed {seed} | {name}: {value:.4f}", flush=True)
    report(cells, datasets)


def report(cells: dict[str, dict[str, list[float]]], datasets: list[dict[str, Any]]) -> None:
    names = [ds["name"] for ds in datasets]
    means = {v: {d: statistics.mean(vals) for d, vals in per.items()} for v, per in cells.items()}
    ranks: dict[str, list[int]] = {v: [] for v in cells}
    for ds in datasets:
        sign = 1.0 if ds["task"] == "regression" else -1.0  # RMSE down, ROC-AUC / accuracy up
        for rank, v in enumerate(sorted(cells, key=lambda v: sign * means[v][ds["name"]]), start=1):
            ranks[v].append(rank)
    print("command: " + " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/search_knobs.py",
                                                          *sys.argv[1:]]))
    print("| variant | " + " | ".join(names) + " | mean rank |")
    print("|---|" + "---|" * (len(names) + 1))
    for v in sorted(cells, key=lambda v: statistics.mean(ranks[v])):
        row = " | ".join(f"{_fmt(means[v][d])} ({r})" for d, r in zip(names, ranks[v]))
        print(f"| {v} | {row} | {statistics.mean(ranks[v]):.2f} |")


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"


if __name__ == "__main__":
    main()
