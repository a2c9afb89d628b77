"""Proves a refactor kept behaviour: a digest of seeded searches, ensembles and predictions to compare.

Runs a seeded search (``--n-trials``, one worker, CPU, one thread: no wall clock decides anything),
the ensemble step and the exported model's predictions on a few datasets, and writes one JSON digest:
per trial its number, state, parameters and value (``repr`` of the float, so every bit counts), the
ensemble's members and weights, and the sha256 of the predicted probabilities' bytes.

    .venv/bin/python benchmarks/same_behaviour.py --out before.json      # on the old commit
    .venv/bin/python benchmarks/same_behaviour.py --out after.json       # on the new one
    .venv/bin/python benchmarks/same_behaviour.py --compare before.json after.json

Identical digests mean identical trials and bit-identical predictions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
CASES = [
    {"name": "breast_cancer", "source": "builtin:breast_cancer", "target": None},
    {"name": "german_credit", "source": str(SHARED / "german_credit.csv"), "target": "credit_risk"},
    {"name": "diabetes", "source": "builtin:diabetes", "target": None},
]
N_TRIALS = 16  # more than TPE's 10 start-up trials, so the model-based sampler is covered


def digest_case(case: dict, workdir: Path, n_trials: int) -> dict:
    import optuna
    import pandas as pd

    import automl_dnn
    from automl_dnn import api
    from automl_dnn.data import read_table

    run, model = workdir / case["name"], workdir / f"{case['name']}-model"
    api.search(case["source"], out=run, target=case["target"], n_trials=n_trials, seed=0, jobs=1, threads=1,
               device="cpu", quiet=True, progress=False)
    storage = f"sqlite:///{run.resolve() / 'study.db'}"
    study = optuna.load_study(study_name=run.resolve().name, storage=storage)
    trials = [{"number": t.number, "state": t.state.name, "params": t.params,
               "value": repr(t.value) if t.value is not None else None} for t in study.trials]
    report = api.ensemble(run, model_dir=model, seed=0, threads=1)
    members = [{"name": m.name, "weight": repr(m.weight), "valid": repr(m.valid)} for m in report.members]
    predictor = automl_dnn.load(model)
    frame = read_table(case["source"])
    target = case["target"] or "target"
    frame = frame.drop(columns=[target])
    if predictor.task == "regression":
        pred = np.ascontiguousarray(predictor.predict(frame), dtype=np.float64)
    else:
        pred = np.ascontiguousarray(predictor.predict_proba(frame), dtype=np.float64)
    del pd
    return {"trials": trials, "members": members, "threshold": repr(report.threshold),
            "predictions_sha256": hashlib.sha256(pred.tobytes()).hexdigest(), "n_rows": len(pred)}


def compare(before: dict, after: dict) -> list[str]:
    problems = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None or b is None:
            problems.append(f"{name}: present in one digest only")
            continue
        for key in ("trials", "members", "threshold", "predictions_sha256"):
            if a[key] != b[key]:
                problems.append(f"{name}: {key} differ")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--n-trials", type=int, default=N_TRIALS)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        problems = compare(before, after)
        for line in problems:
            print(line)
        n = sum(len(v["trials"]) for v in before.values())
        print("different" if problems else f"identical: {len(before)} datasets, {n} trials, predictions bit-identical")
        return 1 if problems else 0
    if args.out is None:
        parser.error("give --out FILE or --compare BEFORE AFTER")
    with tempfile.TemporaryDirectory() as tmp:
        digest = {case["name"]: digest_case(case, Path(tmp), args.n_trials) for case in CASES}
    args.out.write_text(json.dumps(digest, indent=1, sort_keys=True))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
