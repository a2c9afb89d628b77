"""Scores one of the default space's first trials alone, at a fixed epoch count, with changes to its entry: a
clock-free check of a first trial's settings before a whole fit measures them.

Each run is a one-trial search whose space enqueues only that entry (``--entry``: its index in ``default.yaml``'s raw
``enqueue`` list, as ``first_trial_pairs.py`` takes it: 5 is the RealMLP-like trial for regression), with the
space's ``max_epochs`` set to ``--epochs`` (patience ``--patience``, by default a third of it), no time budget, one worker, ``--folds 1`` and
``--top-k 1``, on 80 % of the training part of ``quality.py``'s outer split, scored with the table's primary metric on
the other 20 % (``search_knobs.inner_split``; the test parts are never read). No clock decides anything, so the same
code gives the same cell; the epochs stand in for a trial's share of a short budget.

    .venv/bin/python benchmarks/first_trial_alone.py --dataset diamonds --entry 5 --epochs 12 --seeds 0,1,2,3 \\
        --set '{"plr_sigma": 0.1}' --set '{}'
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import primary  # noqa: E402
from first_trial_pairs import space_of  # noqa: E402
from quality import manifest, split  # noqa: E402
from search_knobs import inner_split  # noqa: E402

from automl_dnn import api  # noqa: E402


def score(ds: dict[str, Any], seed: int, entry: int, changes: dict[str, Any], epochs: int,
          patience: int | None = None) -> float:
    inner, holdout = inner_split(pd.read_parquet(split(ds)[0]), ds, seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        space = space_of([entry], changes, folder, {"max_epochs": epochs,
                                                        "patience": patience or max(3, epochs // 3)})
        api.fit(inner, target=ds["target"], task=ds["task"], model_dir=folder / "model", out=folder / "run",
                time_budget=None, test_size=0.0, seed=seed, quiet=True, progress=False, report_page=False,
                space=str(space), n_trials=1, jobs=1, folds=1, top_k=1, gbt=False)
        model = api.load(folder / "model")
        return primary(ds["task"], holdout[ds["target"]], model, holdout.drop(columns=[ds["target"]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--entry", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=None, help="early stopping's patience (default: epochs // 3)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--set", action="append", default=None, help="JSON changes to the entry (repeatable)")
    args = parser.parse_args()
    ds = next(d for d in manifest() if d["name"] == args.dataset)
    for text in args.set or ["{}"]:
        changes = json.loads(text)
        for seed in (int(s) for s in args.seeds.split(",")):
            start = time.perf_counter()
            value = score(ds, seed, args.entry, changes, args.epochs, args.patience)
            print(f"{args.dataset} entry {args.entry} seed {seed} epochs {args.epochs} patience {args.patience} {changes}: {value:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
