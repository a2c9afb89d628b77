"""TabM's BatchEnsemble layer as the ``tabm`` package computes it, against the same layer with its adapters folded
into one weight per member, in the project's training steps and predictions.

``tabm.LinearBatchEnsemble`` computes ((x * r) W^T) * s + b: two elementwise passes over every row of the batch
(B x k x d each), which a profile of the TabM-like first trial on the CPU puts beside the matmuls in cost. The
folded variant computes the same function as x (diag(r) W^T diag(s)) + b, with one (k, d_in, d_out) weight per
member and a batched matmul: its elementwise passes run over the weights instead of the rows. Same data (UCI
adult, one-hot + standardized, as ``trainer_throughput.py``), the portfolio's TabM-like net (k = 4, 3x128, PLE
on the numeric columns) and a 3x256 k = 8 one, the same initial weights, the project's ``train`` (AdamW, batch
256, bf16 autocast where the CPU has it natively) and ``predict``; the variants alternate, and the median over
repeats is reported.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/batch_ensemble_fold.py --epochs 2 --repeats 3
"""

from __future__ import annotations

import statistics
import time
from unittest import mock

import tabm
import torch

from automl_dnn.train import TrainConfig, native_bf16, predict, train
from net_cost import load_adult, make_net, timing_arguments

NETS = {
    "TabM-like (k=4, 3x128, PLE)": {"k_ensemble": 4, "d_hidden": 128, "num_embedding": "ple"},
    "3x256 TabM k=8": {"k_ensemble": 8},
}


def folded_forward(self: tabm.LinearBatchEnsemble, x: torch.Tensor) -> torch.Tensor:
    """The layer's function with r and s folded into a (k, d_in, d_out) weight; x is (B, k, d_in)."""
    weight = self.r.unsqueeze(-1) * self.weight.T.unsqueeze(0) * self.s.unsqueeze(1)
    members = x.transpose(0, 1)  # (k, B, d_in): a view
    if members.stride(0) == 0:  # right after EnsembleView every member sees the same rows
        out = torch.matmul(members[0], weight)
    else:
        out = torch.bmm(members, weight)
    out = out.transpose(0, 1)
    return out if self.bias is None else out + self.bias


def timed(net: torch.nn.Module, data: object, epochs: int) -> tuple[float, float]:
    """Epochs per second of training, and rows per second of predicting the validation rows."""
    config = TrainConfig(optimizer="adamw", lr=1e-3, schedule="none", batch_size=256, max_epochs=epochs,
                         patience=10**9, amp=native_bf16(torch.device("cpu")))
    start = time.perf_counter()
    train(net, data, config, task="binary", device="cpu")
    trained = time.perf_counter() - start
    start = time.perf_counter()
    predict(net, data.X_valid, task="binary", device="cpu")
    return epochs / trained, len(data.X_valid) / (time.perf_counter() - start)


def main() -> None:
    args = timing_arguments(__doc__.splitlines()[0])
    data, continuous = load_adult()
    variants = {"tabm's layer": tabm.LinearBatchEnsemble.forward, "adapters folded": folded_forward}
    samples = {(net, v): [] for net in NETS for v in variants}
    for _ in range(args.repeats):
        for net_name, extra in NETS.items():
            for variant, forward in variants.items():
                with mock.patch.object(tabm.LinearBatchEnsemble, "forward", forward):
                    samples[net_name, variant].append(timed(make_net(extra, data, continuous), data, args.epochs))
    print(f"adult: {len(data.X_train)} training rows; {args.threads} thread(s), {args.epochs} epochs x "
          f"{args.repeats} repeats; bf16 autocast: {native_bf16(torch.device('cpu'))}")
    print("| net | variant | epochs/s (median) | ratio | predicted rows/s (median) | ratio |")
    print("|---|---|---|---|---|---|")
    for net_name in NETS:
        base = [statistics.median(s) for s in zip(*samples[net_name, "tabm's layer"])]
        for variant in variants:
            rate, rows = (statistics.median(s) for s in zip(*samples[net_name, variant]))
            print(f"| {net_name} | {variant} | {rate:.2f} | {rate / base[0]:.2f} | {rows:,.0f} | {rows / base[1]:.2f} |")


if __name__ == "__main__":
    main()
