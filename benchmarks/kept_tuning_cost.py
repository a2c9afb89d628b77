"""What keeping XGBoost's tuning in the run folder costs: the same seeded tuning with and without its kept state.

Each completed trial rewrites ``trials.json`` (atomically) and each new best writes a UBJ booster, so a tuning of many
short trials (a small table) is where the cost would show. ``fit_gbt`` tunes ``--n-trials`` trials on
breast_cancer (400 training, 169 validation rows), on one thread, alternately without and with a kept state, and
prints the seconds of each (compare them as ratios within one run) and their best validation losses, which must
be equal.

    .venv/bin/python benchmarks/kept_tuning_cost.py --n-trials 150 --repeats 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sklearn.datasets import load_breast_cancer

from automl_dnn.gbt import fit_gbt
from automl_dnn.gbt_state import KeptTuning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-trials", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    parts = X.iloc[:400], y.iloc[:400].to_numpy(), X.iloc[400:], y.iloc[400:].to_numpy()
    for _ in range(args.repeats):
        for kept in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                result = fit_gbt(*parts, task="binary", n_classes=2, n_trials=args.n_trials, seed=0, threads=1,
                                 kept=KeptTuning(Path(tmp) / "kept", "benchmark") if kept else None)
                print(f"{'kept' if kept else 'none':5} {time.perf_counter() - start:6.2f} s  "
                      f"{result.n_trials_run} trials  best log-loss {result.valid_loss:.5f}")


if __name__ == "__main__":
    main()
