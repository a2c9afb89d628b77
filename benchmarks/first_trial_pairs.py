"""Scores the default space's first trials alone or in pairs: what one of them, or two side by side, give the
nets' ensemble on the inner split of the benchmark's training parts (the test parts are never read).

Each run is a nets-only ``fit --time-budget B --n-trials K --folds 1`` (two one-thread workers, as ``--jobs auto``
runs on 2 cores) whose space enqueues only the chosen entries of ``default.yaml``'s raw ``enqueue`` list (0: the
TabM-like trial for classification, 1: for regression, 2: MLP-PLR, 3: the practical default, 4: RealMLP-like, ...).
An entry named twice trains twice with two seeds (the copy's label smoothing, which a regression ignores, differs,
so that Optuna does not drop it as a repeat). Prints each net's validation score and the ensemble's summary rows.

    .venv/bin/python benchmarks/first_trial_pairs.py --datasets diamonds --seeds 0 --entries 4,4 4,3 3,3
    .venv/bin/python benchmarks/first_trial_pairs.py --datasets california_housing,diamonds --seeds 0,1 \\
        --entries 2 --changes '{"dropout": 0.0}'
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import manifest, split  # noqa: E402
from search_knobs import inner_split  # noqa: E402

from automl_dnn import api  # noqa: E402


def space_of(entries: list[int], changes: dict[str, Any], folder: Path, params: dict[str, Any] | None = None) -> Path:
    """The default space with only ``entries`` enqueued (each updated with ``changes``; a None value drops the
    parameter, one a changed condition no longer allows) and its ``params`` updated, as a file in ``folder``."""
    raw = yaml.safe_load((resources.files("automl_dnn.search_spaces") / "default.yaml").read_text())
    enqueue = [dict(raw["enqueue"][i]) for i in entries]
    for k, entry in enumerate(enqueue):
        entry.pop("tasks", None)
        entry.update(changes)
        for name in [name for name, value in changes.items() if value is None]:
            del entry[name]
        if entries[:k].count(entries[k]):
            entry["label_smoothing"] = 0.05
    raw["enqueue"] = enqueue
    raw["params"].update(params or {})
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run(ds: dict[str, Any], seed: int, entries: list[int], changes: dict[str, Any], budget: float) -> dict[str, Any]:
    inner, _ = inner_split(pd.read_parquet(split(ds)[0]), ds, seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        api.fit(inner, target=ds["target"], task=ds["task"], model_dir=folder / "model", out=folder / "run",
                time_budget=budget, test_size=0.0, seed=seed, quiet=True, progress=False, report_page=False,
                jobs=2, threads=1, gbt=False, folds=1, n_trials=len(entries),
                space=str(space_of(entries, changes, folder)))
        report = json.loads((folder / "run" / "ensemble.json").read_text())
    return {"nets": {m["name"]: round(m["valid"], 4) for m in report["members"]},
            "summary": {s["name"]: round(s["valid"], 4) for s in report["summary"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="diamonds")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--entries", nargs="+", default=["4,4", "4,3"], help="raw enqueue indices, comma-separated")
    parser.add_argument("--changes", default="{}", help="JSON parameter values set on every chosen entry")
    parser.add_argument("--budget", type=float, default=60.0)
    args = parser.parse_args()
    changes = json.loads(args.changes)
    for ds in [d for d in manifest() if d["name"] in args.datasets.split(",")]:
        for seed in map(int, args.seeds.split(",")):
            for group in args.entries:
                entries = [int(i) for i in group.split(",")]
                print(ds["name"], seed, entries, run(ds, seed, entries, changes, args.budget), flush=True)


if __name__ == "__main__":
    main()
