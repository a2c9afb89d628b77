"""Epochs per second of the project's nets with its step kernels against PyTorch's CPU defaults.

Four variants of each net: PyTorch's defaults (``nn.Dropout``, the optimizer's per-tensor Python loop),
the project's ``ByteMaskDropout`` alone, it with the fused optimizer step (``optim._fastest``), and that
with bf16 autocast in the steps (``TrainConfig.amp``; only where the CPU's bf16 is native, else it runs in
float32: the first line says which). Same data (UCI adult, one-hot + standardized, as
``trainer_throughput.py``), same initial weights, the project's ``train`` with AdamW, batch 256, no early
stop; the variants alternate so that machine noise hits them alike, and the median over repeats is
reported. Nets: 2x256 and 3x256 ReLU MLPs and a 3x256 TabM with k = 8 (the portfolio's shapes until
session 12), dropout 0.1 after every hidden layer.

    PYTHONPATH=. .venv/bin/python benchmarks/step_kernels.py --epochs 3 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from unittest import mock

import torch
from torch import nn

from automl_dnn import model, optim
from automl_dnn.model import NetConfig, build_mlp
from automl_dnn.train import TrainConfig, TrainData, native_bf16, train
from trainer_throughput import load_adult

NETS = {
    "2x256 MLP": dict(n_layers=2, d_hidden=256),
    "3x256 MLP": dict(n_layers=3, d_hidden=256),
    "3x256 TabM k=8": dict(n_layers=3, d_hidden=256, k_ensemble=8),
}


def torch_dropout(config: NetConfig) -> nn.Module:
    """Session 10's dropout modules (``model._dropout``): PyTorch's own, one 32-bit draw per element on the CPU."""
    return nn.AlphaDropout(config.dropout) if config.dropout_kind == "alpha" else nn.Dropout(config.dropout)


def per_tensor_loop(optimizer: type, params: list, **hparams: object) -> torch.optim.Optimizer:
    """Session 10's optimizer steps (``optim._fastest``): PyTorch's CPU default, a Python loop over the tensors."""
    return optimizer(params, foreach=False, **hparams)


def build(shape: dict, d_in: int) -> nn.Module:
    torch.manual_seed(0)
    return build_mlp(NetConfig(activation="relu", init="he_uniform", dropout=0.1, **shape), d_in=d_in, d_out=1)


def epochs_per_second(net: nn.Module, data: TrainData, epochs: int, *, fused: bool = True, amp: bool = False) -> float:
    if not fused:
        with mock.patch.object(optim, "_fastest", per_tensor_loop):
            return epochs_per_second(net, data, epochs, amp=amp)
    config = TrainConfig(optimizer="adamw", lr=1e-3, schedule="none", batch_size=256, max_epochs=epochs,
                         patience=10**9, amp=amp)
    torch.manual_seed(0)
    start = time.perf_counter()
    result = train(copy.deepcopy(net), data, config, task="binary", device="cpu")
    assert result.epochs_run == epochs, result.status
    return epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = load_adult()
    print(f"adult: train {data.X_train.shape}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"native bf16: {native_bf16(torch.device('cpu'))}")
    for label, shape in NETS.items():
        ours = build(shape, data.X_train.shape[1])
        with mock.patch.object(model, "_dropout", torch_dropout):  # the same weights: dropout has none
            theirs = build(shape, data.X_train.shape[1])
        epochs_per_second(ours, data, 1)  # warm-up
        runs: dict[str, list[float]] = {"pytorch": [], "byte mask": [], "byte mask + fused": [], "+ bf16": []}
        for _ in range(args.repeats):
            runs["pytorch"].append(epochs_per_second(theirs, data, args.epochs, fused=False))
            runs["byte mask"].append(epochs_per_second(ours, data, args.epochs, fused=False))
            runs["byte mask + fused"].append(epochs_per_second(ours, data, args.epochs))
            runs["+ bf16"].append(epochs_per_second(ours, data, args.epochs, amp=True))
        base = statistics.median(runs["pytorch"])
        cells = ", ".join(f"{name} {statistics.median(r):.2f} ({statistics.median(r) / base:.2f}x)" for name, r in runs.items())
        print(f"{label} (epochs/s): {cells}")


if __name__ == "__main__":
    main()
