"""Epochs per second of a Mish net with PyTorch's CPU Mish against the project's vectorized one (``model.CpuMish``).

The net is the RealMLP-like first trial's (3 x 256 Mish, dropout 0.15, PLR embeddings of the numeric columns,
the scaling layer), trained by the project's ``train`` as ``step_kernels.py`` trains its nets (AdamW, batch 256),
with bf16 autocast where the CPU has native bf16, as a search trains it; the two variants start from the same
weights and alternate, so that machine noise hits them alike, and the median over repeats is reported. Also one
256 x 256 activation's forward and backward alone, in float32 and bf16.

    PYTHONPATH=. .venv/bin/python benchmarks/mish_kernel.py --epochs 3 --repeats 5 --threads 1
"""

from __future__ import annotations

import statistics
import time
from unittest import mock

import torch
from torch import nn

from automl_dnn import model
from automl_dnn.model import NetConfig, build_mlp
from automl_dnn.train import TrainData, native_bf16
from net_cost import load_adult, timing_arguments
from step_kernels import epochs_per_second

REALMLP_LIKE = dict(n_layers=3, d_hidden=256, activation="mish", init="he_normal", dropout=0.15, num_embedding="plr",
                    d_embedding=16, plr_sigma=0.1, front_scale=True)


def build(data: TrainData, numeric: list[int]) -> nn.Module:
    torch.manual_seed(0)
    return build_mlp(NetConfig(**REALMLP_LIKE, embedded_columns=numeric), d_in=data.X_train.shape[1], d_out=1)


def activation_microseconds(activation: nn.Module, dtype: torch.dtype, calls: int = 200) -> float:
    """One forward and backward of a 256 x 256 batch through ``activation``, in microseconds."""
    x = torch.randn(256, 256, dtype=dtype).mul_(3).requires_grad_()
    grad = torch.randn_like(x)
    for _ in range(10):
        torch.autograd.grad(activation(x), x, grad)
    start = time.perf_counter()
    for _ in range(calls):
        torch.autograd.grad(activation(x), x, grad)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    args = timing_arguments(__doc__.splitlines()[0])
    data, numeric = load_adult()
    amp = native_bf16(torch.device("cpu"))
    print(f"adult: train {data.X_train.shape}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"bf16 autocast: {amp}")
    for dtype in (torch.float32, torch.bfloat16):
        theirs, ours = (statistics.median(activation_microseconds(act, dtype) for _ in range(args.repeats))
                        for act in (nn.Mish(), model.CpuMish()))
        print(f"one 256 x 256 forward + backward, {dtype}: PyTorch {theirs:.0f} us, vectorized {ours:.0f} us "
              f"({theirs / ours:.2f}x)")
    ours = build(data, numeric)
    with mock.patch.object(model, "CpuMish", nn.Mish):
        theirs = build(data, numeric)
    assert type(theirs.hidden0.act) is nn.Mish and type(ours.hidden0.act) is model.CpuMish
    epochs_per_second(ours, data, 1, amp=amp)  # warm-up
    runs: dict[str, list[float]] = {"PyTorch's Mish": [], "vectorized Mish": []}
    for _ in range(args.repeats):
        runs["PyTorch's Mish"].append(epochs_per_second(theirs, data, args.epochs, amp=amp))
        runs["vectorized Mish"].append(epochs_per_second(ours, data, args.epochs, amp=amp))
    base = statistics.median(runs["PyTorch's Mish"])
    print("RealMLP-like net (epochs/s): " + ", ".join(
        f"{name} {statistics.median(r):.2f} ({statistics.median(r) / base:.2f}x)" for name, r in runs.items()))


if __name__ == "__main__":
    main()
