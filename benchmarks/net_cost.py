"""Epochs per second of the tabular-DL variants of the net, as ratios to the plain MLP of the same run.

The variants the search can choose: numeric embeddings (PLR, PLE) on the continuous columns, and TabM
with k = 4 and 8 members, alone and with PLR. Same data (UCI adult: the 6 numeric columns
standardized, the categories one-hot), the same 3x256 ReLU backbone, batch 256, AdamW, CPU, a fixed
number of epochs. The variants run interleaved, so machine load hits all alike; the median over the
repeats is reported, and each variant's ratio to the plain MLP is what to compare.

    .venv/bin/python benchmarks/net_cost.py --epochs 2 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from automl_dnn.config import NetConfig, TrainConfig
from automl_dnn.model import build_mlp, count_parameters, quantile_bins
from automl_dnn.train import TrainData, train

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
VARIANTS: dict[str, dict[str, object]] = {
    "plain MLP": {},
    "PLR": {"num_embedding": "plr"},
    "PLE": {"num_embedding": "ple"},
    "TabM k=4": {"k_ensemble": 4},
    "TabM k=8": {"k_ensemble": 8},
    "TabM k=8 + PLR": {"k_ensemble": 8, "num_embedding": "plr"},
}


def load_adult(seed: int = 0) -> tuple[TrainData, list[int]]:
    """Standardized numbers first, then one-hot categories; returns the data and the numeric columns."""
    df = pd.read_csv(DATASETS / "adult.csv.gz")
    y = (df.pop("income").astype(str).str.strip().str.rstrip(".") == ">50K").to_numpy(np.int64)
    numeric = df.select_dtypes("number")
    numeric = ((numeric - numeric.mean()) / numeric.std()).fillna(0.0)
    onehot = pd.get_dummies(df.select_dtypes(exclude="number"), dtype=np.float32)
    X = np.hstack([numeric.to_numpy(np.float32), onehot.to_numpy(np.float32)])
    perm = np.random.default_rng(seed).permutation(len(X))
    valid, tr = perm[: len(X) // 5], perm[len(X) // 5:]
    return TrainData(X[tr], y[tr], X[valid], y[valid]), list(range(numeric.shape[1]))


def make_net(extra: dict[str, object], data: TrainData, continuous: list[int]) -> torch.nn.Module:
    torch.manual_seed(0)
    config = NetConfig(**{"n_layers": 3, "d_hidden": 256, "activation": "relu", **extra})  # type: ignore[arg-type]
    bins = None
    if config.num_embedding != "none":
        config.embedded_columns = continuous
    if config.num_embedding == "ple":
        bins = quantile_bins(torch.as_tensor(data.X_train[:, continuous]), config.ple_bins)
        config.bin_counts = [len(b) - 1 for b in bins]
    return build_mlp(config, d_in=data.X_train.shape[1], d_out=1, bins=bins)


def epochs_per_second(net: torch.nn.Module, data: TrainData, epochs: int) -> float:
    config = TrainConfig(optimizer="adamw", lr=1e-3, schedule="none", batch_size=256, max_epochs=epochs,
                         patience=10**9)
    start = time.perf_counter()
    train(net, data, config, task="binary", device="cpu")
    return epochs / (time.perf_counter() - start)


def timing_arguments(description: str) -> argparse.Namespace:
    """--epochs, --repeats and --threads of a timing script, with torch set to those threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def main() -> None:
    args = timing_arguments(__doc__.splitlines()[0])
    data, continuous = load_adult()
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    params = {}
    for _ in range(args.repeats):
        for name, extra in VARIANTS.items():
            net = make_net(extra, data, continuous)
            params[name] = count_parameters(net)
            samples[name].append(epochs_per_second(net, data, args.epochs))
    plain = statistics.median(samples["plain MLP"])
    print(f"adult: {len(data.X_train)} training rows, {data.X_train.shape[1]} columns "
          f"({len(continuous)} numeric); {args.threads} thread(s), {args.epochs} epochs x {args.repeats} repeats")
    print("| variant | parameters | epochs/s (median) | ratio to the plain MLP |")
    print("|---|---|---|---|")
    for name in VARIANTS:
        rate = statistics.median(samples[name])
        print(f"| {name} | {params[name]:,} | {rate:.2f} | {rate / plain:.2f} |")


if __name__ == "__main__":
    main()
