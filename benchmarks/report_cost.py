"""What the report page costs: permutation importance on 10,000 rows x 20 columns, and the page's size.

Fits a small model on a synthetic binary table (15 numeric and 5 categorical columns, the label decided by
four of them; space "quick", bounded by trial counts; ``--folds 5`` bags the nets), then times
``Predictor.feature_importance`` with 3 repeats on the default 2,000-row sample and on all 10,000 rows,
and writes the report page, reporting its seconds and its size beyond the inlined plotly.js.

    .venv/bin/python benchmarks/report_cost.py --n-trials 4 --work /tmp/report_cost
    .venv/bin/python benchmarks/report_cost.py --n-trials 8 --folds 5 --work /tmp/report_cost5
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic(rows: int, seed: int = 0) -> pd.DataFrame:
    """15 numeric + 5 categorical columns; the label depends on num_0, num_1, num_2 and cat_0."""
    rng = np.random.default_rng(seed)
    data = {f"num_{i}": rng.normal(size=rows) for i in range(15)}
    data |= {f"cat_{i}": rng.choice(list("abcdefgh"), rows) for i in range(5)}
    frame = pd.DataFrame(data)
    logit = 1.5 * frame.num_0 - frame.num_1 + 0.5 * frame.num_2 ** 2 + (frame.cat_0 == "a") - 0.5
    frame["y"] = np.where(logit + rng.normal(scale=0.5, size=rows) > 0, "yes", "no")
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--n-trials", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folds", type=int, default=1, help="k-fold bagging (5: every net exports 5 fold models)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()

    from automl_dnn import api

    work = args.work or Path(tempfile.mkdtemp(prefix="report_cost-"))
    frame = synthetic(args.rows)
    data = work / "data.csv"
    work.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data, index=False)
    started = time.perf_counter()
    api.fit(str(data), target="y", model_dir=work / "model", out=work / "run", space="quick", n_trials=args.n_trials,
            pruner="none", gbt_trials=3, threads=args.threads, folds=args.folds, cv_folds=1, quiet=True, progress=False)
    print(f"fit: {time.perf_counter() - started:.1f} s")
    model = api.load(work / "model")
    print(f"model: {model!r}")
    for max_rows in (2000, args.rows):
        table = model.feature_importance(frame, target="y", repeats=3, max_rows=max_rows, seed=0)
        top = ", ".join(table.feature.head(4))
        print(f"importance on {table.attrs['rows']:,} rows x {len(table)} columns, 3 repeats: "
              f"{table.attrs['seconds']:.2f} s (top 4: {top})")
    started = time.perf_counter()
    page = api.write_report(work / "run")
    text = page.read_text(encoding="utf-8")
    rest = re.sub(r"<script type='text/javascript' id='plotly-js'>.*?</script>", "", text, count=1, flags=re.S)
    print(f"report page: {time.perf_counter() - started:.1f} s, {len(text.encode()) / 1e6:.2f} MB, "
          f"{len(rest.encode()) / 1e6:.3f} MB beyond plotly.js")


if __name__ == "__main__":
    main()
