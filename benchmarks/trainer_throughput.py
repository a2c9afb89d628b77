"""Epochs per second of the project's `train` vs a minimal hand-written torch loop.

Same net (3x256 ReLU MLP, same initial weights), same data (UCI adult, one-hot + standardized,
float32), batch 512, Adam lr 1e-3, CPU, no schedule, no early stop. Both loops draw a seeded
permutation per epoch and evaluate the validation loss once per epoch (the project's loop also
turns the outputs into probabilities and keeps the best weights). Runs alternate so that machine
noise hits both sides alike; the median over repeats is reported.

    PYTHONPATH=. .venv/bin/python benchmarks/trainer_throughput.py --epochs 5 --repeats 5 --threads 1

On a shared machine pass --threads 1: with several intra-op threads, other processes on the same
cores stall the thread barriers and the timings swing by 10x or more on both sides.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from automl_dnn.model import NetConfig, build_mlp
from automl_dnn.train import TrainConfig, TrainData, train

DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
BATCH_SIZE = 512
LR = 1e-3


def load_adult(valid_fraction: float = 0.2, seed: int = 0) -> TrainData:
    """One-hot + standardize, deliberately simple (independent of automl_dnn.data)."""
    df = pd.read_csv(DATASETS / "adult.csv.gz")
    y = (df.pop("income").astype(str).str.strip().str.rstrip(".") == ">50K").to_numpy(np.int64)
    X = pd.get_dummies(df, dtype=np.float32).astype(np.float32)
    X = X.fillna(X.mean())
    perm = np.random.default_rng(seed).permutation(len(X))
    n_valid = int(len(X) * valid_fraction)
    valid, tr = perm[:n_valid], perm[n_valid:]
    values = X.to_numpy(np.float32)
    mean, std = values[tr].mean(axis=0), values[tr].std(axis=0) + 1e-6
    values = ((values - mean) / std).astype(np.float32)
    return TrainData(values[tr], y[tr], values[valid], y[valid])


def make_net(d_in: int) -> nn.Module:
    torch.manual_seed(0)
    return build_mlp(NetConfig(n_layers=3, d_hidden=256, activation="relu", init="he_uniform"), d_in=d_in, d_out=1)


def run_project(net: nn.Module, data: TrainData, epochs: int) -> float:
    # patience larger than any run: no early stop, so both loops run the same number of epochs
    config = TrainConfig(
        optimizer="adam", lr=LR, schedule="none", batch_size=BATCH_SIZE, max_epochs=epochs, patience=10**9
    )
    start = time.perf_counter()
    result = train(net, data, config, task="binary", device="cpu")
    seconds = time.perf_counter() - start
    assert result.epochs_run == epochs, result.status
    return epochs / seconds


def run_handwritten(net: nn.Module, data: TrainData, epochs: int) -> float:
    """The textbook loop: randperm, index, forward, BCE, backward, step; valid loss per epoch."""
    start = time.perf_counter()
    torch.manual_seed(0)
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train).float()
    X_valid, y_valid = torch.from_numpy(data.X_valid), torch.from_numpy(data.y_valid).float()
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(X), generator=generator)
        for i in range(0, len(X), BATCH_SIZE):
            idx = perm[i : i + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(net(X[idx]).squeeze(1), y[idx])
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            valid_loss = loss_fn(net(X_valid).squeeze(1), y_valid).item()
        assert np.isfinite(valid_loss)
    return epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_adult()
    base = make_net(data.X_train.shape[1])
    threads = torch.get_num_threads()
    print(f"adult: train {data.X_train.shape}, valid {data.X_valid.shape}; torch {torch.__version__}, {threads} threads")
    print(f"3x256 ReLU MLP, batch {BATCH_SIZE}, Adam; {args.epochs} epochs x {args.repeats} repeats, alternating")
    run_project(copy.deepcopy(base), data, 1)  # warm-up (allocator, kernels)
    run_handwritten(copy.deepcopy(base), data, 1)

    project, hand = [], []
    for r in range(args.repeats):
        project.append(run_project(copy.deepcopy(base), data, args.epochs))
        hand.append(run_handwritten(copy.deepcopy(base), data, args.epochs))
        print(f"  repeat {r}: project {project[-1]:.2f} epochs/s, hand-written {hand[-1]:.2f} epochs/s")
    for label, pick in (("median", statistics.median), ("best", max)):
        p, h = pick(project), pick(hand)
        print(f"{label}: project {p:.2f} epochs/s, hand-written {h:.2f} epochs/s, ratio {p / h:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
