"""Compares choices of the ensemble step on the same searches: each variant replays the step on one finished fit.

``search_knobs.py`` runs a whole fit per variant, so a cell also moves with its search: which trials finished,
which net the bagging took. On the small tables that moves a cell as much as the choice measured (session 18: a
choice that won 11 of the 18 cells it decided there won 13 of 28 comparisons here).

Here one nets-only ``fit --time-budget B`` runs per dataset and seed, on 80 % of the training part of
``quality.py``'s outer split (``search_knobs.py``'s inner split). The ensemble step then runs again on that run
folder once per variant and bagging plan, with the plan fixed (``k`` folds of the best ``n`` nets, whatever the
time), and each exported model is scored with the table's primary metric on the other 20 %. Fold models are kept
in the run folder, so every variant bags the same copies. The test parts the quality table is judged on are
never read.

A variant is ``LABEL:package.module.ATTRIBUTE=JSON`` (repeat ``--variant``; ``LABEL:`` alone is the source as it is),
set for its replays and restored after:

    .venv/bin/python benchmarks/replay_ensemble.py --plans 4x1,4x2 --seeds 0,1 \\
        --datasets phoneme,german_credit,wine_quality_white,vehicle,bank_marketing \\
        --variant 'bagged alone:automl_dnn.ensemble_step.MIX_UNBAGGED=false' \\
        --variant 'mixed:automl_dnn.ensemble_step.MIX_UNBAGGED=true'  # with git checkout 9bb13a8 -- automl_dnn
    .venv/bin/python benchmarks/replay_ensemble.py --plans 4x1,4x2,4x3 --seeds 0,1 --variant 'as it is:'

Run it under ``OMP_WAIT_POLICY=PASSIVE``, as the quality runs are.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import primary  # noqa: E402
from quality import manifest, split  # noqa: E402
from search_knobs import _owner, inner_split, patched  # noqa: E402

from automl_dnn import api, budget  # noqa: E402
from automl_dnn import ensemble_step  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    label, _, patch = text.partition(":")
    if not patch:
        return label, {}
    path, _, value = patch.partition("=")
    return label, {path: json.loads(value)}


def fixed_plan(k: int, n_nets: int) -> Any:
    """``plan_bagging`` as the ensemble step calls it, always answering k folds of the best ``n_nets`` nets."""
    def plan(costs: list[float], trees: list[float], **_: Any) -> budget.BagPlan:
        return budget.BagPlan(k, 1, min(n_nets, len(costs)), len(trees), f"fixed plan: {k} folds of {n_nets} nets")
    return plan


def replay(run: Path, model: Path, patch: dict[str, Any], k: int, n_nets: int, seed: int) -> Any:
    with patched({"automl_dnn.ensemble_step.plan_bagging": fixed_plan(k, n_nets), **patch}):
        ensemble_step.ensemble_run(run, model_dir=model, gbt=False, folds=k, top_k=5, seed=seed)
    return api.load(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--datasets", default="phoneme,german_credit,wine_quality_white,vehicle,bank_marketing")
    parser.add_argument("--plans", default="4x1,4x2", help="bagging plans FOLDSxNETS, comma-separated")
    parser.add_argument("--variant", action="append", required=True, help="LABEL:package.module.ATTRIBUTE=JSON")
    args = parser.parse_args()
    variants = dict(parse_variant(v) for v in args.variant)
    for path in [path for patch in variants.values() for path in patch]:  # before minutes of fits, not after
        owner, name = path.rsplit(".", 1)
        if not hasattr(_owner(owner), name):
            raise SystemExit(f"{path} does not exist in this source (a variant of another commit?)")
    plans = [tuple(int(x) for x in p.split("x")) for p in args.plans.split(",")]
    datasets = [ds for ds in manifest() if ds["name"] in args.datasets.split(",")]
    wins: dict[str, int] = {label: 0 for label in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for ds in datasets:
            frame = pd.read_parquet(split(ds)[0])  # the training part only
            for seed in [int(s) for s in args.seeds.split(",")]:
                inner, holdout = inner_split(frame, ds, seed)
                folder = Path(tmp) / f"{ds['name']}-{seed}"
                api.fit(inner, target=ds["target"], task=ds["task"], model_dir=folder / "model", out=folder / "run",
                        time_budget=args.budget, gbt=False, test_size=0.0, seed=seed, quiet=True, progress=False,
                        report_page=False, jobs="auto")
                X, y = holdout.drop(columns=[ds["target"]]), holdout[ds["target"]]
                for k, n_nets in plans:
                    scores = {label: primary(ds["task"], y, replay(folder / "run", folder / f"m{i}-{k}x{n_nets}",
                                                                   patch, k, n_nets, seed), X)
                              for i, (label, patch) in enumerate(variants.items())}
                    best = (min if ds["task"] == "regression" else max)(scores.values())
                    for label, value in scores.items():
                        wins[label] += value == best and len(set(scores.values())) > 1
                    cells = " | ".join(f"{label}: {value:.4f}" for label, value in scores.items())
                    print(f"{ds['name']} seed {seed} plan {k}x{n_nets} | {cells}", flush=True)
    print("comparisons won (ties not counted): " + ", ".join(f"{label} {n}" for label, n in wins.items()))


if __name__ == "__main__":
    main()
