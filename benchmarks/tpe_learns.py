"""Whether TPE learns after the portfolio: one ``search --n-trials N`` (no time budget: every trial trains
to its own end or its pruning) on the training part of ``quality.py``'s outer split, with an inner 20 %
validation split; the test parts are never read.

Prints the best validation value after each checkpoint (the portfolio's last trial, then every 10
trials), how many trials after the portfolio beat the portfolio's best, and the mean value of the
completed trials per block of 10, which falls when TPE moves towards good regions.

    .venv/bin/python benchmarks/tpe_learns.py --dataset phoneme --n-trials 60
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import manifest, split  # noqa: E402

from automl_dnn import api  # noqa: E402
from automl_dnn.run_folder import RunDir  # noqa: E402
from automl_dnn.space import load_space  # noqa: E402
from automl_dnn.study import open_study  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="phoneme")
    parser.add_argument("--n-trials", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ds = next(d for d in manifest() if d["name"] == args.dataset)
    train_file, _, _ = split(ds)  # the training part only
    n_portfolio = len(load_space("default").first_trials(ds["task"]))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        api.search(pd.read_parquet(train_file), out=out, target=ds["target"], task=ds["task"], n_trials=args.n_trials,
                   valid_size=0.2, test_size=0.0, seed=args.seed, quiet=True, progress=False)
        spec = RunDir(out).read_spec()
        trials = sorted(open_study(spec, create=False).trials, key=lambda t: t.number)
    sign = 1.0 if spec["direction"] == "minimize" else -1.0
    values = [sign * t.value if t.state == TrialState.COMPLETE else None for t in trials]
    print("command: " + " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/tpe_learns.py", *sys.argv[1:]]))
    print(f"{args.dataset}: {len(trials)} trials ({sum(v is not None for v in values)} complete), "
          f"metric {spec['metric']} ({spec['direction']}), portfolio = trials 0-{n_portfolio - 1}")
    print("| after trial | best so far | complete trials in the block | their mean |")
    print("|---|---|---|---|")
    checkpoints = [n_portfolio] + list(range(10, len(trials) + 1, 10))
    start = 0
    for end in sorted(set(checkpoints)):
        done = [v for v in values[:end] if v is not None]
        block = [v for v in values[start:end] if v is not None]
        best = sign * min(done) if done else float("nan")
        mean = sign * statistics.mean(block) if block else float("nan")
        print(f"| {end} | {best:.4f} | {len(block)} | {mean:.4f} |")
        start = end
    portfolio = [v for v in values[:n_portfolio] if v is not None]
    later = [v for v in values[n_portfolio:] if v is not None]
    if portfolio:
        beat = sum(v < min(portfolio) for v in later)
        print(f"trials after the portfolio that beat its best ({sign * min(portfolio):.4f}): {beat} of {len(later)} "
              "complete")


if __name__ == "__main__":
    main()
