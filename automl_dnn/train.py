"""The training loop (techniques.md §4-7) and ``predict`` with MC dropout.

The whole dataset lives as tensors on the device; each epoch draws a seeded permutation and slices
mini-batches from it (no DataLoader: for tabular data its per-batch Python cost dominates). A refit on
every row of a large table leaves its rows in the run's file instead (``StoredRows``): the same batches,
read a group at a time. The loop reads straight down and only *notifies* callbacks; early stopping, the
NaN stop, clipping, max-norm, L1/L2, label smoothing, weight averaging and the lr schedule are small,
separately tested steps.
Per-batch work avoids host syncs (no ``.item()`` per batch); losses are summed on the device and read
once per epoch. The schedule's phases decide when patience starts counting (half way through 1cycle's or
flat_cosine's annealing) and when weight averaging starts; once it has, the averaged net is the one
evaluated and kept.

Epochs are numbered from 0 everywhere (history, callbacks, ``best_epoch``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tabm
import torch
import torch.nn.functional as F
from torch import nn

from automl_dnn.config import EVAL_BATCH_SIZE, EVAL_MAX_FLOATS, TrainConfig
from automl_dnn.model import count_parameters
from automl_dnn.optim import Schedule, make_optimizer, set_lr, set_momentum
from automl_dnn.tasks import TASKS

CLIP_KINDS = ("none", "value", "norm")
WEIGHT_AVERAGING = ("none", "ema", "swa")
#: the regression losses a trial may train with (``data_loss``); Huber's delta is 1 standardized unit
REGRESSION_LOSSES = {"mse": F.mse_loss, "huber": F.huber_loss, "l1": F.l1_loss}
EMA_WARMUP = 10  # ema's decay is min(ema_decay, (1 + n) / (EMA_WARMUP + n)) after n updates
STATUSES = ("completed", "early_stopped", "overfit", "diverged", "stopped")
TRIM_STEPS = 16  # optimizer steps between two hand-backs of freed heap memory (``trim_heap``): measured, no slower
STREAM_ROWS = 65_536  # rows of ``StoredRows`` read at a time: whole mini-batches, ~36 MB at 140 columns


@dataclass(frozen=True)
class StoredRows:
    """Training rows left in a file and read a few mini-batches at a time.

    Issue 13: a net refit on every development row of a 1M-row table held its 472 MB matrix beside
    XGBoost's boosting. ``read`` returns the rows at sorted positions; the trainer asks for each group of
    batches of its permutation, so the batches are the ones an in-memory matrix would give.
    """

    read: Callable[[np.ndarray], np.ndarray]
    n_rows: int
    n_features: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_features)

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return self.n_rows

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows at ``rows``, in that order (read sorted, then put back in order)."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        return np.asarray(self.read(rows[order]), dtype=np.float32)[back]

    def chunks(self, size: int = STREAM_ROWS) -> Iterator[np.ndarray]:
        """Every row, in order, ``size`` rows at a time."""
        for lo in range(0, self.n_rows, size):
            yield self.take(np.arange(lo, min(lo + size, self.n_rows)))


def head_rows(X: np.ndarray | StoredRows, n: int) -> np.ndarray:
    """The first ``n`` rows of an array or of stored rows."""
    return X.take(np.arange(min(n, len(X)))) if isinstance(X, StoredRows) else X[:n]


@dataclass
class TrainData:
    """Encoded arrays: float32 features; int64 class indices or float32 standardized targets.
    ``X_train`` may be ``StoredRows``: read from a file a group of batches at a time."""

    X_train: np.ndarray | StoredRows
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray

    def __post_init__(self) -> None:
        for part in ("train", "valid"):
            X, y = getattr(self, f"X_{part}"), getattr(self, f"y_{part}")
            if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
                raise ValueError(f"{part}: need X (n, d) and y (n,), got X{X.shape}, y{y.shape}")
            if len(X) == 0:
                raise ValueError(f"{part} split is empty")
        if self.X_train.shape[1] != self.X_valid.shape[1]:
            d_train, d_valid = self.X_train.shape[1], self.X_valid.shape[1]
            raise ValueError(f"train/valid feature counts differ: {d_train=}, {d_valid=}")


class Callback:
    """Hook called after every epoch. Return True to stop training (status "stopped").

    ``logs`` holds epoch, train_loss, valid_loss, score, lr, valid_pred (numpy, `predict` format),
    elapsed (seconds since the start), best_epoch, best_score. Exceptions propagate to the caller
    (the search raises ``optuna.TrialPruned`` here).
    """

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool | None:
        return None


@dataclass
class TrainResult:
    """What a training run did. The model itself is left on its device holding the best weights;
    ``best_state`` is a CPU copy of them (None if no epoch ever finished with a finite loss)."""

    status: str  # completed|early_stopped|diverged|stopped
    best_epoch: int | None
    epochs_run: int
    best_score: float
    best_valid_loss: float
    history: list[dict[str, float]]
    train_seconds: float
    device: str
    n_params: int
    best_valid_pred: np.ndarray | None = None
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def lr_by_epoch(self) -> list[float]:
        """The learning rate each epoch ran at (a plateau trial's copies replay it: ``optim.replayed_plateau``)."""
        return [row["lr"] for row in self.history]


# --------------------------------------------------------------------------- small helpers


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast can speed up this device's matmuls: a CUDA GPU with bf16, or a CPU with
    AVX512-BF16 or AMX (elsewhere a CPU emulates bf16, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch >= 2.3; absent: no native bf16
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def _autocast(device: torch.device, amp: bool) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of bf16 autocast contexts (no GradScaler needed with bf16) if ``amp`` and the device has bf16
    natively, else of no-ops: the device is asked once, not every step."""
    if amp and native_bf16(device):
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")


def check_config(config: TrainConfig) -> None:
    """Refuse a config that the loop, its optimizer or its schedule cannot run (ValueError naming the value)."""
    _check_config(config)
    make_optimizer(config.optimizer, [torch.zeros(1, requires_grad=True)], config)
    Schedule(config, total_steps=1)


def _check_config(c: TrainConfig) -> None:
    """Refuse values the loop cannot run (optimizer and schedule values are checked in optim.py)."""
    if c.clip not in CLIP_KINDS:
        raise ValueError(f"unknown clip {c.clip!r}; valid: {', '.join(CLIP_KINDS)}")
    if c.clip != "none" and not c.clip_value > 0:
        raise ValueError(f"clip_value must be > 0, got {c.clip_value=}")
    for name in ("l1", "l2", "max_norm", "overfit_margin"):
        value = getattr(c, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be >= 0, got {name}={value!r}")
    for name in ("batch_size", "max_epochs", "patience", "overfit_epochs"):
        value = getattr(c, name)
        if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")
    if c.weight_averaging not in WEIGHT_AVERAGING:
        raise ValueError(f"unknown weight_averaging {c.weight_averaging!r}; valid: {', '.join(WEIGHT_AVERAGING)}")
    if not 0.0 < c.ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got ema_decay={c.ema_decay!r}")
    if c.regression_loss not in REGRESSION_LOSSES:
        raise ValueError(f"unknown regression_loss {c.regression_loss!r}; valid: {', '.join(REGRESSION_LOSSES)}")
    if not 0.0 <= c.label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got label_smoothing={c.label_smoothing!r}")


def penalized_weights(model: nn.Module) -> list[torch.Tensor]:
    """Weight matrices of Linear layers: what L1/L2 and max-norm act on (never biases, BN, PReLU).

    A TabM layer's shared weight counts (its per-member adapters do not, nor does its ensemble head).
    """
    return [m.weight for m in model.modules()
            if isinstance(m, (nn.Linear, tabm.LinearBatchEnsemble)) and m.weight.dim() >= 2]


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights n / (K * n_c), so every class carries the same total weight."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return (len(y) / (n_classes * np.maximum(counts, 1.0))).astype(np.float32)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _batch_bounds(n: int, batch_size: int, drop_singleton: bool) -> list[tuple[int, int]]:
    """[start, end) of each mini-batch; a last batch of one row is dropped when BN would fail on it."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if drop_singleton and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds.pop()
    if drop_singleton and bounds == [(0, 1)]:
        raise ValueError("BatchNorm needs at least 2 training rows per batch, got 1 training row")
    return bounds


def _groups(bounds: list[tuple[int, int]], rows: int) -> Iterator[list[tuple[int, int]]]:
    """Consecutive batches in groups of about ``rows`` rows (at least one batch each)."""
    group: list[tuple[int, int]] = []
    for bound in bounds:
        group.append(bound)
        if bound[1] - group[0][0] >= rows:
            yield group
            group = []
    if group:
        yield group


# --------------------------------------------------------------------------- loss and outputs


def data_loss(out: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, task: str, *,
              label_smoothing: float = 0.0, regression_loss: str = "mse") -> torch.Tensor:
    """Mean loss of the task (BCE-with-logits, cross-entropy; MSE, Huber or L1), weighted per row if `weight`.

    Outputs of k ensemble members ``(B, k, d)`` (TabM) give the mean of the members' losses.
    ``label_smoothing`` = eps (classification only; regression ignores it) trains against softened
    targets: binary y(1 - eps) + eps/2, multiclass PyTorch's (1 - eps) one-hot + eps/K (techniques.md §7).
    ``regression_loss``: the mean minimizes MSE, the median L1 (so L1 suits an MAE metric); Huber with
    delta 1 is quadratic within one standard deviation of the (standardized) target and L1 beyond it.
    """
    out = out.float()
    if out.dim() == 3:
        k = out.shape[1]
        out, y = out.reshape(-1, out.shape[-1]), y.repeat_interleave(k)
        weight = None if weight is None else weight.repeat_interleave(k)
    if task == "regression":
        return REGRESSION_LOSSES[regression_loss](out.view(-1), y)
    reduction = "mean" if weight is None else "none"
    if task == "binary":
        target = y if not label_smoothing else y * (1.0 - label_smoothing) + 0.5 * label_smoothing
        per_row = F.binary_cross_entropy_with_logits(out.view(-1), target, reduction=reduction)
    else:
        per_row = F.cross_entropy(out, y, reduction=reduction, label_smoothing=label_smoothing)
    if weight is None:
        return per_row
    return (per_row * weight).sum() / weight.sum()


def outputs_to_pred(out: torch.Tensor, task: str) -> torch.Tensor:
    """Raw outputs -> probabilities (n, K) (binary as [1-p, p]) or standardized values (n,).

    Outputs of k ensemble members ``(n, k, d)`` give the mean of the members' probabilities (or values).
    """
    out = out.float()
    if out.dim() == 3:
        k = out.shape[1]
        pred = outputs_to_pred(out.reshape(-1, out.shape[-1]), task)
        return pred.reshape(len(out), k, *pred.shape[1:]).mean(dim=1)
    if task == "regression":
        return out.view(-1)
    if task == "binary":
        z = out.view(-1)
        return torch.stack([torch.sigmoid(-z), torch.sigmoid(z)], dim=1)
    return torch.softmax(out, dim=1)


def _forward_batched(model: nn.Module, X: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's outputs on X, in large batches, without autograd (freed activations handed back each batch).

    Always in full precision, as ``predict`` computes them: the validation predictions that choose the
    trial's epoch and the ensemble's weights are those of the exported model."""
    starts = range(0, max(len(X), 1), batch_size)  # an empty X still gives a (0, d_out) output
    outputs = []
    with torch.no_grad():
        for i in starts:
            outputs.append(model(X[i : i + batch_size]).float())
            if len(starts) > 1:
                trim_heap()
    return torch.cat(outputs)


_MALLOC_TRIM: list[Callable[[int], int] | None] = []


def trim_heap() -> None:
    """Hand the heap memory freed so far back to the system (glibc's ``malloc_trim``; a no-op elsewhere).

    A batch of a wide net allocates and frees tens of MB of activations; glibc keeps them in its heap, where
    they fragment: predicting 150,000 rows with a TabM net over 100 embedded columns grew the process by
    1.3 GB in one run of three, by 0.2 GB with a trim after each batch, at the same speed (issue 13).
    """
    if not _MALLOC_TRIM:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
        _MALLOC_TRIM.append(trim)
    if _MALLOC_TRIM[0] is not None:
        _MALLOC_TRIM[0](0)


def eval_batch_size(model: nn.Module, X: torch.Tensor, largest: int = EVAL_BATCH_SIZE) -> int:
    """Rows per evaluation batch: ``largest``, or fewer when the net's widest activation per row (measured on
    two rows) would make one batch's activation larger than EVAL_MAX_FLOATS."""
    if len(X) < 2:
        return largest
    widest = [1]

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() >= 1 and len(output) == 2:
            widest[0] = max(widest[0], output.numel() // 2)

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(X[:2])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return max(1, min(largest, EVAL_MAX_FLOATS // widest[0]))


def _n_outputs(model: nn.Module, X: torch.Tensor, task: str) -> int:
    """Probe the output width once, so a head that does not fit the task fails with a clear message."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(X[:2])
    model.train(was_training)
    width = out.shape[-1] if out.dim() >= 2 else 1
    if task in ("binary", "regression") and width != 1:
        raise ValueError(f"{task} needs a net with d_out=1, got {width} outputs")
    if task == "multiclass" and width < 2:
        raise ValueError(f"multiclass needs a net with d_out=K >= 2, got {width} outputs")
    return width


# --------------------------------------------------------------------------- the loop


@dataclass
class _Best:
    """The best epoch so far (early stopping state), skorch's `best_*_` in one place."""

    score: float = math.inf
    valid_loss: float = math.inf
    epoch: int | None = None
    state: dict[str, torch.Tensor] | None = None
    valid_pred: np.ndarray | None = None

    def update(self, epoch: int, score: float, valid_loss: float, pred: np.ndarray, model: nn.Module) -> bool:
        if not score < self.score:
            return False
        self.score, self.valid_loss, self.epoch, self.valid_pred = score, valid_loss, epoch, pred
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True


def patience_exhausted(epoch: int, best_epoch: int | None, patience: int, start: int) -> bool:
    """Whether early stopping fires after `epoch`: `patience` epochs counted from `start` on without a better score.

    Epochs before `start` (1cycle's warm-up, flat_cosine's flat phase, and half their annealing:
    ``Schedule.patience_start_epoch``) never count, so with start=5 and patience=3 a best epoch of 1 stops
    training after epoch 7 at the earliest.
    """
    if best_epoch is None:
        return False
    return epoch - max(best_epoch, start - 1) >= patience


#: The epochs either side of each one that ``copy_epoch`` averages its validation score over.
COPY_EPOCH_WINDOW = 1


def copy_epoch(history: Sequence[dict[str, float]]) -> int | None:
    """The epoch a copy of this run on other rows (a fold copy, a refit) trains to: the best of the validation
    curve averaged over each epoch and its neighbours (``COPY_EPOCH_WINDOW`` either side, fewer at the ends).

    At a constant learning rate the curve swings from epoch to epoch, and its best epoch is partly luck a copy does
    not share: diamonds' TabM-like trial scored 544 at epoch 5 between 840 and 734, then 561-548 for five epochs; its
    refit to 6 epochs scored 687.5 on test, to 9-11 epochs 564-567 (docs/benchmarks.md, session 30). The averaged
    curve's best sits in the stretch that stays good. Lower scores are better; a non-finite score ends the curve.
    """
    scores: list[float] = []
    for row in history:
        if not math.isfinite(row["score"]):
            break
        scores.append(row["score"])
    if not scores:
        return None
    w = COPY_EPOCH_WINDOW
    means = [float(np.mean(scores[max(0, e - w): e + w + 1])) for e in range(len(scores))]
    return int(np.argmin(means))


def overfitting(history: Sequence[dict[str, float]], best_epoch: int | None, margin: float, epochs: int,
                start: int = 0) -> bool:
    """Whether the last `epochs` epochs all overfit: each one's validation loss more than `margin` (relative) above
    the best epoch's, and its training loss below the best epoch's.

    Patience waits for the annealing, but annealing does not undo overfitting: adult's MLP-PLR trial was best at
    its 4th epoch and trained 38 more while its validation log-loss rose from 0.30 to 0.66 (docs/benchmarks.md,
    "The overfit stop"). A rising training loss, or a validation loss that comes back within the margin, is a
    high lr's noise, which the annealing does settle; epochs before `start` (1cycle's rising lr) never count.
    """
    if margin <= 0 or best_epoch is None or len(history) - 1 - best_epoch < epochs:
        return False
    recent, best = history[-epochs:], history[best_epoch]
    return recent[0]["epoch"] >= start and all(
        row["valid_loss"] > best["valid_loss"] * (1.0 + margin) and row["train_loss"] < best["train_loss"]
        for row in recent)


class WeightAverager:
    """A running average of a model's weights over the annealing phase, held in a copy of the model.

    - ``swa`` (Izmailov et al., UAI 2018): the equal-weight mean of the snapshots ``update()`` is given
      (the trainer takes one at the end of each epoch). The snapshots' BatchNorm statistics are not the
      statistics of the mean weights, so ``refresh_batchnorm`` recomputes them on the training rows
      (``torch.optim.swa_utils.update_bn``) before the averaged net is evaluated.
    - ``ema``: after n updates avg <- d avg + (1 - d) w with d = min(ema_decay, (1 + n) / (10 + n)) (the
      warm-up of TensorFlow's ExponentialMovingAverage: a short annealing phase is not dominated by its
      first snapshot). The trainer updates it after every optimizer step; floating buffers (BatchNorm's
      running statistics) are averaged the same way, as timm's ModelEmaV2 does.

    Integer buffers (BatchNorm's batch counter) are copied from the latest snapshot.
    """

    def __init__(self, model: nn.Module, kind: str, ema_decay: float) -> None:
        if kind not in ("ema", "swa"):
            raise ValueError(f"unknown weight averaging {kind!r}; valid: ema, swa")
        self.kind, self.ema_decay, self.n_averaged = kind, ema_decay, 0
        self.model = copy.deepcopy(model)
        buffers = list(zip(self.model.buffers(), model.buffers()))
        ema_buffers = [kind == "ema" and a.is_floating_point() for a, _ in buffers]
        averaged = list(zip(self.model.parameters(), model.parameters()))
        averaged += [pair for pair, avg in zip(buffers, ema_buffers) if avg]
        self._targets, self._sources = [a for a, _ in averaged], [w for _, w in averaged]
        self._copied = [pair for pair, avg in zip(buffers, ema_buffers) if not avg]

    def weight(self) -> float:
        """The weight of the next snapshot: 1 for the first, then 1 / (n + 1) for swa, 1 - decay for ema."""
        n = self.n_averaged
        if n == 0 or self.kind == "swa":
            return 1.0 / (n + 1)
        return 1.0 - min(self.ema_decay, (1.0 + n) / (EMA_WARMUP + n))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the source model's current weights into the average (the first call copies them)."""
        if self.n_averaged == 0:
            for a, w in zip(self._targets, self._sources):
                a.copy_(w)
        elif self._targets:
            torch._foreach_lerp_(self._targets, self._sources, self.weight())
        for a, w in self._copied:
            a.copy_(w)
        self.n_averaged += 1

    @torch.no_grad()
    def refresh_batchnorm(self, batches: Sequence[torch.Tensor]) -> None:
        """swa: BatchNorm's running statistics of the averaged weights, from one pass over `batches`."""
        if self.kind == "swa" and _has_batchnorm(self.model):
            torch.optim.swa_utils.update_bn(batches, self.model)


class _Trainer:
    """One training run; `run()` is the loop, the other methods its steps."""

    def __init__(
        self, model: nn.Module, data: TrainData, config: TrainConfig, task: str, device: torch.device,
        keep: str = "best",
    ) -> None:
        self.model, self.config, self.task, self.device, self.keep = model, config, task, device, keep
        self.amp_ctx = _autocast(device, config.amp)
        self.stored = data.X_train if isinstance(data.X_train, StoredRows) else None
        self.X_train = (None if self.stored is not None
                        else torch.as_tensor(np.asarray(data.X_train, dtype=np.float32), device=device))
        self.n_train = len(data.X_train)
        self.X_valid = torch.as_tensor(np.asarray(data.X_valid, dtype=np.float32), device=device)
        n_out = _n_outputs(model, self.X_valid, task)
        self.eval_batch = eval_batch_size(model, self.X_valid)
        self.y_train, self.w_train = self._targets(data.y_train, data.y_train, n_out)
        self.y_valid, self.w_valid = self._targets(data.y_valid, data.y_train, n_out)
        self.bounds = _batch_bounds(self.n_train, config.batch_size, _has_batchnorm(model))
        self.batch_sizes = torch.tensor([e - s for s, e in self.bounds], dtype=torch.float32, device=device)
        self.optimizer = make_optimizer(config.optimizer, model, config)
        self.schedule = Schedule(config, total_steps=config.max_epochs * len(self.bounds))
        self.weights = penalized_weights(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.generator = torch.Generator().manual_seed(config.seed)
        self.lr = float("nan")
        self.patience_start = self.schedule.patience_start_epoch()
        self.overfit_start = self.schedule.overfit_start_epoch()
        self.averaging_start = self.schedule.averaging_start_epoch()
        self.averager = (None if config.weight_averaging == "none"
                         else WeightAverager(model, config.weight_averaging, config.ema_decay))
        self.smoothing = config.label_smoothing if task != "regression" else 0.0

    def _targets(
        self, y: np.ndarray, y_train: np.ndarray, n_out: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The target tensor in the dtype the loss wants, and per-row class weights if asked for."""
        if self.task == "regression":
            return torch.as_tensor(np.asarray(y, dtype=np.float32), device=self.device), None
        labels = np.asarray(y, dtype=np.int64)
        n_classes = 2 if self.task == "binary" else n_out
        if labels.min() < 0 or labels.max() >= n_classes:
            low, high = labels.min(), labels.max()
            raise ValueError(f"{self.task} labels must be in [0, {n_classes}), got [{low}, {high}]")
        dtype = torch.float32 if self.task == "binary" else torch.int64
        target = torch.as_tensor(labels, device=self.device).to(dtype)
        if not self.config.class_weight:
            return target, None
        per_class = class_weights(np.asarray(y_train, dtype=np.int64), n_classes)
        return target, torch.as_tensor(per_class[labels], device=self.device)

    def _set_lr(self, t: int) -> None:
        """Set lr (and 1cycle momentum) for step/epoch t; only touch the optimizer on a change."""
        lr = self.schedule.lr(t)
        if lr != self.lr:
            set_lr(self.optimizer, lr)
            self.lr = lr
        momentum = self.schedule.momentum(t)
        if momentum is not None:
            set_momentum(self.optimizer, self.config.optimizer, momentum)

    def _penalty(self) -> torch.Tensor | None:
        c = self.config
        total = None
        if c.l1 > 0:
            total = c.l1 * sum(w.abs().sum() for w in self.weights)
        if c.l2 > 0:
            l2 = c.l2 * sum(w.pow(2).sum() for w in self.weights)
            total = l2 if total is None else total + l2
        return total

    def _clip(self) -> None:
        c = self.config
        if c.clip == "value":
            nn.utils.clip_grad_value_(self.params, c.clip_value)
        elif c.clip == "norm":
            nn.utils.clip_grad_norm_(self.params, c.clip_value)

    @torch.no_grad()
    def _apply_max_norm(self) -> None:
        for w in self.weights:
            w.renorm_(p=2, dim=0, maxnorm=self.config.max_norm)

    def _rows(self, perm: torch.Tensor, bounds: list[tuple[int, int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each batch's positions in ``perm`` and its feature rows: slices of the in-memory matrix, or of one
        group of batches read from ``StoredRows`` at a time (the same rows either way)."""
        if self.stored is None:
            for start, end in bounds:
                idx = perm[start:end]
                yield idx, self.X_train.index_select(0, idx)
            return
        for group in _groups(bounds, STREAM_ROWS):
            first, last = group[0][0], group[-1][1]
            rows = torch.as_tensor(self.stored.take(perm[first:last].cpu().numpy()), device=self.device)
            for start, end in group:
                yield perm[start:end], rows[start - first:end - first]

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        perm = torch.randperm(self.n_train, generator=self.generator).to(self.device)
        for idx, xb in self._rows(perm, self.bounds):
            w = None if self.w_train is None else self.w_train.index_select(0, idx)
            yield xb, self.y_train.index_select(0, idx), w

    def train_epoch(self, epoch: int, step: int) -> float:
        """One pass over the training set; returns the mean data loss (one host sync)."""
        self.model.train()
        per_batch = self.schedule.per_batch
        ema = self.averager is not None and self.averager.kind == "ema" and epoch >= self.averaging_start
        if not per_batch:
            self._set_lr(epoch)
        losses = []
        for xb, yb, wb in self._batches():
            if per_batch:
                self._set_lr(step)
            with self.amp_ctx():
                out = self.model(xb).float()  # the loss in float32 (a no-op without autocast)
            loss = data_loss(out, yb, wb, self.task, label_smoothing=self.smoothing,
                             regression_loss=self.config.regression_loss)
            penalty = self._penalty()
            self.optimizer.zero_grad(set_to_none=True)
            (loss if penalty is None else loss + penalty).backward()
            if self.config.clip != "none":
                self._clip()
            self.optimizer.step()
            if self.config.max_norm > 0:
                self._apply_max_norm()
            if ema:
                self.averager.update()
            losses.append(loss.detach())
            step += 1
            if step % TRIM_STEPS == 0:
                trim_heap()  # a long epoch's freed batches fragment the heap otherwise (issue 13)
        return float((torch.stack(losses) * self.batch_sizes).sum() / self.batch_sizes.sum())

    def average_epoch(self, epoch: int) -> None:
        """swa: one snapshot at the end of each epoch of the averaging phase, then BatchNorm refreshed."""
        if self.averager is None or self.averager.kind != "swa" or epoch < self.averaging_start:
            return
        self.averager.update()
        order = torch.randperm(self.n_train, generator=torch.Generator().manual_seed(self.config.seed))
        bounds = _batch_bounds(self.n_train, EVAL_BATCH_SIZE, drop_singleton=True)
        # one batch at a time: a permuted copy of every row was a second training matrix (issue 13)
        self.averager.refresh_batchnorm(xb for _, xb in self._rows(order.to(self.device), bounds))

    def evaluated_model(self) -> nn.Module:
        """The net that is evaluated and kept: the averaged weights once averaging has started."""
        if self.averager is not None and self.averager.n_averaged > 0:
            return self.averager.model
        return self.model

    def evaluate(self) -> tuple[float, np.ndarray]:
        """Validation loss (no penalties, no dropout, no label smoothing) and the `predict`-style predictions."""
        model = self.evaluated_model()
        model.eval()
        out = _forward_batched(model, self.X_valid, self.eval_batch)
        valid_loss = float(data_loss(out, self.y_valid, self.w_valid, self.task,
                                     regression_loss=self.config.regression_loss))
        return valid_loss, outputs_to_pred(out, self.task).cpu().numpy()

    def run(
        self, callbacks: Sequence[Callback], score_fn: Callable[[np.ndarray], float] | None
    ) -> TrainResult:
        start, best, history, status = time.perf_counter(), _Best(), [], "completed"
        epoch = -1
        try:
            for epoch in range(self.config.max_epochs):
                t0 = time.perf_counter()
                train_loss = self.train_epoch(epoch, epoch * len(self.bounds))
                self.average_epoch(epoch)
                valid_loss, valid_pred = self.evaluate()
                trim_heap()  # the epoch's freed batches back to the system, before they fragment (issue 13)
                score = float(score_fn(valid_pred)) if score_fn is not None else valid_loss
                row = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "valid_loss": valid_loss,
                    "score": score,
                    "lr": self.lr,
                    "seconds": time.perf_counter() - t0,
                }
                history.append(row)
                if not all(math.isfinite(v) for v in (train_loss, valid_loss, score)):
                    status = "diverged"
                    break
                if self.keep == "last":  # no selection on the validation rows: every epoch replaces the kept one
                    best = _Best()
                best.update(epoch, score, valid_loss, valid_pred, self.evaluated_model())
                self.schedule.update(valid_loss)
                elapsed = time.perf_counter() - start
                logs = {**row, "valid_pred": valid_pred, "elapsed": elapsed, "best_epoch": best.epoch,
                        "best_score": best.score}
                if any([bool(cb.on_epoch_end(epoch, logs)) for cb in callbacks]):
                    status = "stopped"
                    break
                if self.keep == "best" and patience_exhausted(epoch, best.epoch, self.config.patience,
                                                              self.patience_start):
                    status = "early_stopped"
                    break
                if self.keep == "best" and overfitting(history, best.epoch, self.config.overfit_margin,
                                                       self.config.overfit_epochs, self.overfit_start):
                    status = "overfit"
                    break
        finally:
            if best.state is not None:
                self.model.load_state_dict(best.state)
            self.model.eval()
        return TrainResult(
            status=status,
            best_epoch=best.epoch,
            epochs_run=epoch + 1,
            best_score=best.score,
            best_valid_loss=best.valid_loss,
            history=history,
            train_seconds=time.perf_counter() - start,
            device=str(self.device),
            n_params=count_parameters(self.model),
            best_valid_pred=best.valid_pred,
            best_state=best.state,
        )


def train(
    model: nn.Module,
    data: TrainData,
    config: TrainConfig,
    *,
    task: str,
    device: str = "auto",
    callbacks: Sequence[Callback] = (),
    score_fn: Callable[[np.ndarray], float] | None = None,
    threads: int | None = None,
    keep: str = "best",
) -> TrainResult:
    """Train `model` in place with early stopping on the score (lower is better) and return a report.

    ``keep="last"`` keeps the last epoch's weights instead, with no early stopping: for a model whose
    validation rows must not choose its epoch (a fold model predicting its out-of-fold rows), which is
    stopped instead by ``max_epochs`` or a callback.

    score = score_fn(valid_pred) if given, else the validation loss. On NaN/inf the run ends with
    status "diverged" (no exception). At the end the model holds the best epoch's weights, stays on
    `device` and is in eval mode. `threads` sets torch's intra-op threads for this call only. A CPU run
    is reproducible: the same model init, data and config give the same history. ``config.amp`` trains in
    bf16 autocast where the device computes bf16 natively; validation scores are always in float32.
    """
    _check_task(task)
    _check_config(config)
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads=}")
    dev = resolve_device(device)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(config.seed)  # dropout / RReLU masks; the permutation has its own generator
        model.to(dev)
        return _Trainer(model, data, config, task, dev, keep).run(callbacks, score_fn)
    finally:
        if threads is not None:
            torch.set_num_threads(previous_threads)


# --------------------------------------------------------------------------- predict


def estimate_epoch_seconds(model: nn.Module, data: TrainData, config: TrainConfig, *, task: str,
                           device: str | torch.device = "auto", probe_steps: int = 3) -> float:
    """Seconds one epoch of ``train`` will take, from a few real steps on a copy of the model.

    Lets a caller with a time budget choose ``max_epochs`` before training starts, so that a schedule
    laid over the epochs (1cycle) runs to its end instead of being cut short.
    """
    dev = resolve_device(device)
    probe = copy.deepcopy(model).to(dev).train()
    optimizer = torch.optim.SGD(probe.parameters(), lr=0.0)
    batch = max(2, min(config.batch_size, len(data.X_train)))
    X = torch.as_tensor(head_rows(data.X_train, batch), device=dev)
    dtype = torch.float32 if task in ("binary", "regression") else torch.int64
    y = torch.as_tensor(data.y_train[:batch], device=dev).to(dtype)

    autocast = _autocast(dev, config.amp)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            out = probe(X).float()
        data_loss(out, y, None, task).backward()
        optimizer.step()

    step()  # warm-up: first calls allocate
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    for _ in range(probe_steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    per_step = (time.perf_counter() - start) / probe_steps
    steps = math.ceil(len(data.X_train) / batch)
    validation = per_step / 3 * len(data.X_valid) / batch  # forward only: about a third of a step
    return per_step * steps + validation


def _dropout_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def predict(
    model: nn.Module,
    X: np.ndarray,
    *,
    task: str,
    mc_samples: int = 0,
    batch_size: int = EVAL_BATCH_SIZE,
    device: str = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, K) (binary: [1-p, p]) or standardized values (n,), as float32.

    With ``mc_samples=T > 0`` (MC dropout) dropout stays on while BatchNorm uses its running
    statistics, and the result is (mean, std) over T passes; a net without active dropout is
    deterministic, so it is run once and its std is exactly 0. ``device="auto"`` keeps the model
    where it is; another value moves the model there. The model's train/eval mode is restored.
    """
    _check_task(task)
    if mc_samples < 0:
        raise ValueError(f"mc_samples must be >= 0, got {mc_samples=}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size=}")
    dev = _model_device(model) if str(device) == "auto" else torch.device(device)
    model.to(dev)
    was_training = model.training
    model.eval()
    X_t = torch.as_tensor(np.asarray(X, dtype=np.float32), device=dev)
    batch_size = eval_batch_size(model, X_t, batch_size)
    dropouts = _dropout_modules(model) if mc_samples > 0 else []
    try:
        if not dropouts:
            out = _forward_batched(model, X_t, batch_size)
            pred = outputs_to_pred(out, task).cpu().numpy()
            return (pred, np.zeros_like(pred)) if mc_samples > 0 else pred
        for m in dropouts:
            m.train()
        means, stds = [], []
        with torch.no_grad():
            for i in range(0, max(len(X_t), 1), batch_size):
                xb = X_t[i : i + batch_size]
                passes = torch.stack([outputs_to_pred(model(xb), task) for _ in range(mc_samples)])
                avg = passes.mean(dim=0)
                means.append(avg)
                stds.append((passes - avg).pow(2).mean(dim=0).sqrt())  # population std over the T passes
        return torch.cat(means).cpu().numpy(), torch.cat(stds).cpu().numpy()
    finally:
        model.train(was_training)
