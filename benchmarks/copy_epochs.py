"""Paired check of the epoch a net's copies train to: one fixed search, ensembled twice (copies at the trial's best
epoch, and at ``train.copy_epoch``, the best of its curve averaged over neighbouring epochs).

Each (dataset, seed) runs the default space's first ``--trials`` trials for at most ``--max-epochs`` epochs (patience a
third of that), one worker, no time budget, on 80 % of the training part of ``quality.py``'s outer split
(``search_knobs.inner_split``; the test parts are never read). The one search is then ensembled, nets alone, as the
refits beside the nets (``--folds 1 --top-k 5``) and as a 4-fold bag of the best two (``--folds 4 --top-k 2``), once
per rule, and each export is scored on the other 20 %. The search is the same for both rules, so the cells differ only
by the copies' epochs; no clock decides anything, so the same code gives the same cells.

    .venv/bin/python benchmarks/copy_epochs.py --datasets diamonds,california_housing --seeds 0,1
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
from search_knobs import _space_with, inner_split, patched  # noqa: E402

from automl_dnn import api, ensemble_step  # noqa: E402

RESULTS = Path(__file__).resolve().parent / ".cache" / "copy_epochs.jsonl"
ENSEMBLES = ((1, 5), (4, 2))  # (folds, top-k)


def best_epoch(trial: Any) -> int | None:
    value = trial.user_attrs.get("best_epoch")
    return None if value is None else int(value)


RULES = {"best epoch": best_epoch, "averaged curve": ensemble_step.epochs_to_copy}


def paired_cells(ds: dict[str, Any], seed: int, trials: int, max_epochs: int) -> dict[str, Any]:
    inner, holdout = inner_split(pd.read_parquet(split(ds)[0]), ds, seed)
    X, y = holdout.drop(columns=[ds["target"]]), holdout[ds["target"]]
    record: dict[str, Any] = {"dataset": ds["name"], "seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        space = _space_with({}, folder, None, {"max_epochs": max_epochs, "patience": max(3, max_epochs // 3)})
        api.search(inner, target=ds["target"], task=ds["task"], out=folder / "run", n_trials=trials, jobs=1,
                   space=str(space), test_size=0.0, seed=seed, quiet=True, progress=False)
        for folds, top_k in ENSEMBLES:
            for rule, epochs_to_copy in RULES.items():
                model = folder / f"model-{folds}-{rule.replace(' ', '-')}"
                with patched({"automl_dnn.ensemble_step.epochs_to_copy": epochs_to_copy}):
                    api.ensemble(folder / "run", model_dir=model, top_k=top_k, gbt=False, folds=folds)
                record[f"folds {folds}, top-k {top_k}, {rule}"] = primary(ds["task"], y, api.load(model), X)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="diamonds,california_housing,wine_quality_white,phoneme")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--trials", type=int, default=7, help="the space's first trials (7: its portfolio)")
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for ds in [d for d in manifest() if d["name"] in args.datasets.split(",")]:
        for seed in (int(s) for s in args.seeds.split(",")):
            record = paired_cells(ds, seed, args.trials, args.max_epochs)
            print(json.dumps(record), flush=True)
            with args.results.open("a") as out:
                out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
