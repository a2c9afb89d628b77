"""Search overhead (storage, artifacts, pruning, reporting, leases) as a fraction of trial time.

Runs one worker on `adult` (../shared/datasets) for a fixed number of trials and compares the worker's
wall time with the time spent inside the training epochs themselves (forward, backward, validation),
which each trial records as ``epoch_seconds``. Both come from the same run, so the ratio is robust to
the machine's load. Target: overhead < 5%.

    .venv/bin/python benchmarks/search_overhead.py --n-trials 12
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from optuna.trial import TrialState

from automl_dnn.objective import WorkerContext
from automl_dnn.run_folder import SearchOptions, prepare_run
from automl_dnn.space import load_space
from automl_dnn.study import enqueue_defaults, make_pruner, open_study
from automl_dnn.workers import StopFlag, run_worker

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "adult.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=12)
    parser.add_argument("--space", default="default")
    parser.add_argument("--pruner", default="halving")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        options = SearchOptions(source=str(DATA), target="income", out=Path(tmp) / "run", space=args.space,
                                n_trials=args.n_trials, pruner=args.pruner, quiet=True)
        t0 = time.perf_counter()
        space = load_space(args.space)
        spec, _ = prepare_run(options, space)
        setup = time.perf_counter() - t0
        study = open_study(spec, seed=0, pruner=make_pruner(args.pruner))
        enqueue_defaults(study, space, spec["task"])
        ctx = WorkerContext(run_dir=str(options.out), spec=spec, space=space, deadline=None, n_trials=args.n_trials,
                            seed=0, pruner=args.pruner, device="cpu", threads=None, several_workers=False)
        t0 = time.perf_counter()
        run_worker(ctx, stop=StopFlag(None), study=study)
        wall = time.perf_counter() - t0
        trials = study.get_trials(deepcopy=False)
        epochs = sum(t.user_attrs.get("epoch_seconds", 0.0) for t in trials)
        n_epochs = sum(len(t.intermediate_values) for t in trials)
        states = [t.state for t in trials]
        print(f"adult, space {args.space}, pruner {args.pruner}: {len(trials)} trials "
              f"({states.count(TrialState.COMPLETE)} complete, {states.count(TrialState.PRUNED)} pruned), "
              f"{n_epochs} epochs")
        print(f"setup (read, split, preprocess): {setup:.1f} s")
        print(f"worker wall time {wall:.1f} s, inside training epochs {epochs:.1f} s")
        print(f"search overhead: {(wall - epochs) / wall:.1%} of the worker's time "
              f"({(wall - epochs) / max(len(trials), 1):.2f} s per trial)")


if __name__ == "__main__":
    main()
