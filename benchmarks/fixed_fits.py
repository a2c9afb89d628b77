"""Compares two versions of the code on nets-only fits that no clock decides: fixed trials, fixed epochs, one worker.

A 60 s fit's cell moves by about 1 % between two runs of the same code on this shared machine, because its epoch
caps and trial count follow measured times. These fits take no time budget: the default space's first ``--trials``
trials, each for at most ``--max-epochs`` epochs (patience a third of that), one worker, then the ensemble step
(``--folds``, ``--top-k``), on 80 % of the training part of ``quality.py``'s outer split, scored on the other 20 %
(``search_knobs.inner_split``; the test parts are never read). The same code gives the same cell to the digit, so
two versions differ only by what their code does. The code is the ``automl_dnn`` that Python imports: put another
checkout first on ``PYTHONPATH`` to run it. Each fit appends a line to ``--results``; ``--table`` prints the cells
of every label found there, side by side.

    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/fixed_fits.py --label new --seeds 0,1 \
        --datasets adult,california_housing,diamonds,phoneme --folds 1 --top-k 5
    .venv/bin/python benchmarks/fixed_fits.py --label old --seeds 0,1 --datasets adult,... --folds 1 --top-k 5
    .venv/bin/python benchmarks/fixed_fits.py --table
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import manifest, split  # noqa: E402
from search_knobs import inner_split, run_variant  # noqa: E402

RESULTS = Path(__file__).resolve().parent / ".cache" / "fixed_fits.jsonl"


def fixed_fit(ds: dict, seed: int, args: argparse.Namespace) -> float:
    variant = {"params": {"max_epochs": args.max_epochs, "patience": max(3, args.max_epochs // 3)},
               "fit": {"n_trials": args.trials, "jobs": 1, "folds": args.folds, "top_k": args.top_k}}
    inner, holdout = inner_split(pd.read_parquet(split(ds)[0]), ds, seed)
    with tempfile.TemporaryDirectory() as tmp:
        return run_variant(variant, ds, inner, holdout, None, seed, Path(tmp), None, 1)


def table(results: Path) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    cells = {(r["label"], r["dataset"], r["seed"], r["setting"]): r["value"] for r in rows}
    keys = sorted({(r["dataset"], r["seed"], r["setting"]) for r in rows})
    print("| dataset | seed | setting | " + " | ".join(labels) + " |")
    print("|---|---|---|" + "---|" * len(labels))
    for dataset, seed, setting in keys:
        values = [cells.get((label, dataset, seed, setting)) for label in labels]
        shown = ["-" if v is None else (f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}") for v in values]
        print(f"| {dataset} | {seed} | {setting} | " + " | ".join(shown) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", help="the name of this code version in the results")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--datasets", default="adult,california_housing,diamonds,phoneme")
    parser.add_argument("--trials", type=int, default=7, help="the space's first trials (7: its portfolio)")
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--folds", type=int, default=1, help="the ensemble step's bagging folds (1: none)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="print the results file's cells, and run nothing")
    args = parser.parse_args()
    if args.table:
        table(args.results)
        return
    if not args.label:
        parser.error("--label names the code version")
    setting = f"{args.trials} trials x {args.max_epochs} epochs, folds {args.folds}, top-k {args.top_k}"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for ds in [d for d in manifest() if d["name"] in args.datasets.split(",")]:
        for seed in (int(s) for s in args.seeds.split(",")):
            value = fixed_fit(ds, seed, args)
            record = {"label": args.label, "dataset": ds["name"], "seed": seed, "setting": setting, "value": value}
            print(record, flush=True)
            with args.results.open("a") as out:
                out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
