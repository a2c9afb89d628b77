"""Optimizers by name and learning-rate schedules as pure functions of the step (techniques.md §5-6).

The schedules are written by hand (no ``torch.optim.lr_scheduler``) so each value is a formula of
``t`` that a test can check. ``t`` counts mini-batches for power, exponential, 1cycle and flat_cosine,
and epochs for piecewise constant and plateau; both start at 0.

A ``Schedule`` also knows its phases, because two other steps of the trainer depend on them: early
stopping may only fire once the warm-up / high-lr phase is over (``patience_start_epoch``), and
weight averaging runs over the annealing phase (``averaging_start_epoch``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Union

import rtdl_num_embeddings as rtdl
import torch
from torch import nn

from automl_dnn.config import TrainConfig

Params = Union[nn.Module, Iterable[torch.Tensor], Iterable[dict[str, Any]]]

SCHEDULES = ("none", "power", "exponential", "piecewise", "plateau", "onecycle", "flat_cosine")
ONECYCLE_PEAK = 0.45  # 1cycle's lr peaks after 45% of the steps
ONECYCLE_DIV = 25.0  # the cycle starts and returns to lr_max / 25
ONECYCLE_FINAL_DIV = 25_000.0  # and ends at lr_max / 25,000
ONECYCLE_MOMENTUM = (0.95, 0.85)  # (high, low): momentum moves opposite to the lr
#: How far into the annealing phase (1cycle's descent, flat_cosine's cosine) patience starts counting: half
#: way, where the lr has come down to about half its peak. From the phase's start, a noisy validation curve
#: stopped diamonds' MLP-PLR trial 11 epochs into its cosine, at 590 RMSE, where the annealing the schedule
#: is for brings such nets to ~545 (docs/benchmarks.md, "Patience from half way through the annealing").
PATIENCE_ANNEAL_SHARE = 0.5


# --------------------------------------------------------------------------- optimizers


#: Optimizers with a fused kernel, by device: PyTorch's fused Adam, AdamW and SGD run on CUDA and (from
#: PyTorch 2.4) on the CPU, Adagrad's on the CPU only. PyTorch checks a parameter's device at the first
#: step, not when the optimizer is made, so the choice is made here from the parameters themselves.
FUSED_KERNELS: dict[str, tuple[type[torch.optim.Optimizer], ...]] = {
    "cpu": (torch.optim.SGD, torch.optim.Adagrad, torch.optim.Adam, torch.optim.AdamW),
    "cuda": (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW),
}
FUSED_ON_CPU = torch.torch_version.TorchVersion(torch.__version__) >= "2.4"


def step_kernel(optimizer: type[torch.optim.Optimizer], params: list[dict[str, Any]]) -> dict[str, bool]:
    """``{"fused": True}`` when every parameter is a float tensor on one device with ``optimizer``'s fused
    kernel, else ``{"foreach": True}`` (the multi-tensor kernel, which every optimizer here has).

    On the CPU PyTorch's default is a Python loop over the tensors: a step of AdamW over the portfolio's
    2x256 PLR net took 431 us, fused 103 us (docs/benchmarks.md, "Cheaper training steps on the CPU").
    """
    tensors = [p for group in params for p in group["params"]]
    devices = {p.device.type for p in tensors}
    device = devices.pop() if len(devices) == 1 else None
    fused = (device is not None and optimizer in FUSED_KERNELS.get(device, ())
             and all(p.is_floating_point() for p in tensors)
             and (device != "cpu" or FUSED_ON_CPU))
    return {"fused": True} if fused else {"foreach": True}


def _fastest(optimizer: type[torch.optim.Optimizer], params: list[dict[str, Any]], **hparams: Any) -> torch.optim.Optimizer:
    """``optimizer`` with the fastest kernel ``step_kernel`` allows."""
    return optimizer(params, **step_kernel(optimizer, params), **hparams)


def _sgd(params: list[dict[str, Any]], c: TrainConfig) -> torch.optim.Optimizer:
    return _fastest(torch.optim.SGD, params, lr=c.lr, momentum=0.0)


def _momentum(params: list[dict[str, Any]], c: TrainConfig) -> torch.optim.Optimizer:
    return _fastest(torch.optim.SGD, params, lr=c.lr, momentum=c.momentum)


def _nesterov(params: list[dict[str, Any]], c: TrainConfig) -> torch.optim.Optimizer:
    return _fastest(torch.optim.SGD, params, lr=c.lr, momentum=c.momentum, nesterov=True)


def _adagrad(params: list[dict[str, Any]], c: TrainConfig) -> torch.optim.Optimizer:
    return _fastest(torch.optim.Adagrad, params, lr=c.lr)


def _rmsprop(params: list[dict[str, Any]], c: TrainConfig) -> torch.optim.Optimizer:
    # Plain RMSProp of techniques.md §5 (no momentum term); rho is torch's `alpha`.
    return _fastest(torch.optim.RMSprop, params, lr=c.lr, alpha=c.rho, momentum=0.0)


def _adam(params: list[dict[str, Any]], c: TrainConfig) -> torch.optim.Optimizer:
    return _fastest(torch.optim.Adam, params, lr=c.lr, betas=(c.beta1, c.beta2))


def _adamax(params: list[dict[str, Any]], c: TrainConfig) -> torch.optim.Optimizer:
    return _fastest(torch.optim.Adamax, params, lr=c.lr, betas=(c.beta1, c.beta2))


def _nadam(params: list[dict[str, Any]], c: TrainConfig) -> torch.optim.Optimizer:
    return _fastest(torch.optim.NAdam, params, lr=c.lr, betas=(c.beta1, c.beta2))


def _adamw(params: list[dict[str, Any]], c: TrainConfig) -> torch.optim.Optimizer:
    # weight_decay is set per group by split_decay_groups (matrices only); 0.0 here is the fallback.
    return _fastest(torch.optim.AdamW, params, lr=c.lr, betas=(c.beta1, c.beta2), weight_decay=0.0)


OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], TrainConfig], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov": _nesterov,
    "adagrad": _adagrad,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamax": _adamax,
    "nadam": _nadam,
    "adamw": _adamw,
}
# Which hyperparameter 1cycle cycles, per optimizer (None: the optimizer has no momentum).
MOMENTUM_KEY: dict[str, str | None] = {
    "sgd": None,
    "momentum": "momentum",
    "nesterov": "momentum",
    "adagrad": None,
    "rmsprop": None,
    "adam": "betas",
    "adamax": "betas",
    "nadam": "betas",
    "adamw": "betas",
}


def _as_groups(params: Params) -> list[dict[str, Any]]:
    if isinstance(params, nn.Module):
        params = params.parameters()
    items = list(params)
    if items and isinstance(items[0], dict):
        return [dict(g) for g in items]
    return [{"params": [p for p in items if p.requires_grad]}]


#: Modules none of whose parameters decay: normalization, PReLU's slopes, and the numeric embeddings' first steps
#: (PLR's frequencies, PLE's linear embedding), as in TabM's reference code (yandex-research/tabm, lib/deep.py:
#: ``default_zero_weight_decay_condition``): decay would pull the frequencies toward 0, the slowest waves.
NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.PReLU, rtdl.LinearEmbeddings, rtdl.LinearReLUEmbeddings,
    rtdl._Periodic)


def decayed_parameters(model: nn.Module) -> set[int]:
    """The ids of ``model``'s parameters that AdamW decays: weight matrices, not biases, whatever their shape.

    A TabM layer's per-member biases are (k, d), and so are the per-column biases of the numeric embeddings: a
    rule on ``dim() >= 2`` alone decayed them, where techniques.md §5 says a bias never decays.
    """
    return {id(p) for module in model.modules() if not isinstance(module, NO_DECAY_MODULES)
            for name, p in module.named_parameters(recurse=False) if p.dim() >= 2 and not name.endswith("bias")}


def split_decay_groups(params: Params, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weight matrices decay, the rest do not (biases, BN, PReLU, PLR's frequencies:
    ``decayed_parameters``). Of bare tensors, the matrices (p.dim() >= 2) decay (nanoGPT style)."""
    tensors = [p for g in _as_groups(params) for p in g["params"]]
    decayed = (decayed_parameters(params) if isinstance(params, nn.Module)
               else {id(p) for p in tensors if p.dim() >= 2})
    decay = [p for p in tensors if id(p) in decayed]
    no_decay = [p for p in tensors if id(p) not in decayed]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _check_train_hparams(c: TrainConfig) -> None:
    lr, momentum, beta1, beta2, rho, wd = c.lr, c.momentum, c.beta1, c.beta2, c.rho, c.weight_decay
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be > 0, got {lr=}")
    for name, value in (("momentum", momentum), ("beta1", beta1), ("beta2", beta2), ("rho", rho)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {name}={value!r}")
    if not wd >= 0:
        raise ValueError(f"weight_decay must be >= 0, got weight_decay={wd!r}")


def make_optimizer(name: str, params: Params, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `name` over `params` (a module, tensors, or param groups).

    Only AdamW gets a weight decay, and only on matrices; L1/L2 are loss terms added by the trainer,
    never the optimizer's `weight_decay` (which for Adam is not the same thing, techniques.md §5).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    _check_train_hparams(config)
    groups = split_decay_groups(params, config.weight_decay) if name == "adamw" else _as_groups(params)
    if isinstance(params, nn.Module):
        groups = _with_lr_factors(groups, params, config.lr)
    return OPTIMIZERS[name](groups, config)


def _with_lr_factors(groups: list[dict[str, Any]], model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """The parameters of modules with an ``lr_factor`` (RealMLP's scaling layer) in groups of their own, whose
    learning rate is the schedule's times that factor (``set_lr``)."""
    factors = {id(p): float(module.lr_factor) for module in model.modules() if hasattr(module, "lr_factor")
               for p in module.parameters(recurse=False)}
    if not factors:
        return groups
    out = []
    for group in groups:
        plain = [p for p in group["params"] if id(p) not in factors]
        if plain:
            out.append({**group, "params": plain})
        for factor in sorted({factors[id(p)] for p in group["params"] if id(p) in factors}):
            scaled = [p for p in group["params"] if factors.get(id(p)) == factor]
            out.append({**group, "params": scaled, "lr_factor": factor, "lr": lr * factor})
    return out


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_factor", 1.0)


def set_momentum(optimizer: torch.optim.Optimizer, name: str, momentum: float) -> None:
    """Set SGD's momentum or Adam-family beta1; a no-op for optimizers without momentum."""
    key = MOMENTUM_KEY[name]
    for group in optimizer.param_groups:
        if key == "momentum":
            group["momentum"] = momentum
        elif key == "betas":
            group["betas"] = (momentum, group["betas"][1])


# --------------------------------------------------------------------------- schedules (pure)


def power_lr(t: float, *, lr0: float, s: float, c: float = 1.0) -> float:
    """eta(t) = eta0 / (1 + t/s)^c."""
    return lr0 / (1.0 + t / s) ** c


def exponential_lr(t: float, *, lr0: float, s: float) -> float:
    """eta(t) = eta0 * 0.1^(t/s): x0.1 every s steps."""
    return lr0 * 0.1 ** (t / s)


def piecewise_lr(epoch: int, *, lr0: float, boundaries: list[int], factors: list[float]) -> float:
    """lr0 * factors[i] where i = number of boundaries <= epoch (epochs [b_{i-1}, b_i) share factor i)."""
    i = sum(1 for b in boundaries if epoch >= b)
    return lr0 * factors[i]


def _onecycle_phase(t: float, total_steps: int) -> tuple[int, float]:
    """(phase 0/1/2, fraction done within that phase) at step t of a total_steps cycle."""
    t = min(max(t, 0.0), float(total_steps))
    up_end, down_end = ONECYCLE_PEAK * total_steps, 2 * ONECYCLE_PEAK * total_steps
    if t <= up_end:
        return 0, t / up_end
    if t <= down_end:
        return 1, (t - up_end) / (down_end - up_end)
    return 2, (t - down_end) / (total_steps - down_end)


def onecycle_lr(t: float, *, lr_max: float, total_steps: int) -> float:
    """1cycle: lr_max/25 -> lr_max over 45% of the steps, back over 45%, then to lr_max/25,000."""
    low, final = lr_max / ONECYCLE_DIV, lr_max / ONECYCLE_FINAL_DIV
    phase, frac = _onecycle_phase(t, total_steps)
    if phase == 0:
        return low + (lr_max - low) * frac
    if phase == 1:
        return lr_max - (lr_max - low) * frac
    return low - (low - final) * frac


def onecycle_momentum(
    t: float, *, total_steps: int, high: float = ONECYCLE_MOMENTUM[0], low: float = ONECYCLE_MOMENTUM[1]
) -> float:
    """Momentum (or beta1) opposite to the lr: high -> low -> high, then flat at high."""
    phase, frac = _onecycle_phase(t, total_steps)
    if phase == 0:
        return high - (high - low) * frac
    if phase == 1:
        return low + (high - low) * frac
    return high


def flat_cosine_lr(t: float, *, lr0: float, total_steps: int, flat_fraction: float) -> float:
    """lr0 for the first `flat_fraction` of the steps, then half a cosine from lr0 down to 0 at total_steps.

    The end value is 0, as in SGDR's eta_min = 0 (Loshchilov & Hutter, ICLR 2017); the last step the
    trainer takes is t = total_steps - 1, whose rate is still (just) positive.
    """
    t = min(max(t, 0.0), float(total_steps))
    flat = flat_fraction * total_steps
    if t <= flat:
        return lr0
    progress = (t - flat) / (total_steps - flat)
    return lr0 * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_at(fraction: float, epochs: int) -> int:
    """The first epoch (0-based) that starts at or after `fraction` of `epochs` epochs: ceil(fraction * epochs).

    Epoch e covers the fraction [e / epochs, (e + 1) / epochs) of training. Rounded to 9 digits first,
    so that 0.45 * 20 (9.000000000000002 in floating point) gives epoch 9, not 10.
    """
    return math.ceil(round(fraction * epochs, 9))


class Plateau:
    """Performance scheduling: x factor when the validation loss has not improved for `patience` epochs.

    Stateful by nature: call ``update(valid_loss)`` once per epoch; ``lr`` is the rate for the next
    epoch. The counter restarts after each reduction, as in Keras' ReduceLROnPlateau.
    """

    def __init__(self, *, lr0: float, factor: float, patience: int) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"plateau_factor must be in (0, 1), got {factor=}")
        if patience < 1:
            raise ValueError(f"plateau_patience must be >= 1, got {patience=}")
        self.lr = lr0
        self.factor = factor
        self.patience = patience
        self.best_ = math.inf
        self.bad_epochs_ = 0

    def update(self, valid_loss: float) -> float:
        if valid_loss < self.best_:
            self.best_ = valid_loss
            self.bad_epochs_ = 0
        else:
            self.bad_epochs_ += 1
            if self.bad_epochs_ >= self.patience:
                self.lr *= self.factor
                self.bad_epochs_ = 0
        return self.lr


# --------------------------------------------------------------------------- schedule from config


class Schedule:
    """The lr (and 1cycle momentum) a trainer should use, from a TrainConfig, and the phases of training.

    `per_batch` says whether ``lr(t)`` takes the global batch index or the epoch index. ``momentum(t)``
    is None unless the schedule cycles momentum. ``update(valid_loss)`` feeds plateau; others ignore it.
    ``total_steps`` (batches) scales the per-batch schedules; ``config.max_epochs`` (the trial's own,
    possibly budget-capped count) scales the per-epoch quantities: piecewise fractions and the phases.
    """

    def __init__(self, config: TrainConfig, *, total_steps: int) -> None:
        name = config.schedule
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")
        _check_schedule(config)
        self.name = name
        self.config = config
        self.total_steps = max(int(total_steps), 1)
        self.per_batch = name in ("power", "exponential", "onecycle", "flat_cosine")
        self.plateau = (
            Plateau(lr0=config.lr, factor=config.plateau_factor, patience=config.plateau_patience)
            if name == "plateau"
            else None
        )

    @property
    def power_s(self) -> float:
        c = self.config
        return c.power_s if c.power_frac is None else c.power_frac * self.total_steps

    @property
    def exp_s(self) -> float:
        c = self.config
        return c.exp_s if c.exp_frac is None else c.exp_frac * self.total_steps

    @property
    def piecewise_epochs(self) -> list[int]:
        c = self.config
        if c.piecewise_fracs is None:
            return list(c.piecewise_epochs)
        return [epoch_at(f, c.max_epochs) for f in c.piecewise_fracs]

    def lr(self, t: int) -> float:
        c = self.config
        if self.name == "power":
            return power_lr(t, lr0=c.lr, s=self.power_s, c=c.power_c)
        if self.name == "exponential":
            return exponential_lr(t, lr0=c.lr, s=self.exp_s)
        if self.name == "onecycle":
            return onecycle_lr(t, lr_max=c.lr, total_steps=self.total_steps)
        if self.name == "flat_cosine":
            return flat_cosine_lr(t, lr0=c.lr, total_steps=self.total_steps, flat_fraction=c.flat_fraction)
        if self.name == "piecewise":
            return piecewise_lr(t, lr0=c.lr, boundaries=self.piecewise_epochs, factors=c.piecewise_factors)
        if self.plateau is not None:
            return self.plateau.lr
        return c.lr

    def momentum(self, t: int) -> float | None:
        if self.name != "onecycle":
            return None
        return onecycle_momentum(t, total_steps=self.total_steps)

    def update(self, valid_loss: float) -> None:
        if self.plateau is not None:
            self.plateau.update(valid_loss)

    @property
    def anneal_fraction(self) -> float | None:
        """Where the lr's final descent starts, as a fraction of training, for schedules that have a
        warm-up / high-lr phase first: 1cycle's peak, the end of flat_cosine's flat phase; else None."""
        if self.name == "onecycle":
            return ONECYCLE_PEAK
        if self.name == "flat_cosine":
            return self.config.flat_fraction
        return None

    def patience_start_epoch(self) -> int:
        """The first epoch whose lack of improvement counts towards early stopping.

        During 1cycle's warm-up, flat_cosine's flat phase and the first part of their annealing
        (``PATIENCE_ANNEAL_SHARE``) the lr is high, the validation score noisy and often stalled; stopping
        there would cut off the annealing the schedule is for. Other schedules: 0.
        """
        fraction = self.anneal_fraction
        if fraction is None:
            return 0
        return epoch_at(fraction + PATIENCE_ANNEAL_SHARE * (1.0 - fraction), self.config.max_epochs)

    def overfit_start_epoch(self) -> int:
        """The first epoch the overfit stop (``train.overfitting``) may count: 1cycle's peak, since a validation
        loss that a rising lr drives up comes back as it falls; 0 for the others (flat_cosine's flat phase
        included: a constant lr that overfits does not stop overfitting when it anneals)."""
        return epoch_at(ONECYCLE_PEAK, self.config.max_epochs) if self.name == "onecycle" else 0

    def averaging_start_epoch(self) -> int:
        """The first epoch of weight averaging: the annealing phase (after 1cycle's peak, flat_cosine's
        cosine part), otherwise the last half; never later than the last epoch, so it always averages."""
        fraction = self.anneal_fraction
        start = epoch_at(0.5 if fraction is None else fraction, self.config.max_epochs)
        return min(start, max(self.config.max_epochs - 1, 0))


def replayed_plateau(config: TrainConfig, lrs: Sequence[float], ratio: float) -> TrainConfig:
    """A plateau-scheduled trial's learning rates by epoch, ``lrs``, as a piecewise schedule for a copy of it whose
    epochs are ``ratio`` times the trial's (``folds.scaled_epochs``): the trial's cut at epoch e is the copy's at
    round(e * ratio).

    A copy keeps no validation rows of its own to watch: a fold copy's are the out-of-fold rows it predicts (its
    cuts would have read them), a refit's its training rows (whose loss keeps falling: no cut at all). Other
    schedules, or no recorded rates, are returned as they are.
    """
    if config.schedule != "plateau" or not lrs:
        return config
    cuts = [e for e in range(1, len(lrs)) if lrs[e] != lrs[e - 1]]
    return dataclasses.replace(config, schedule="piecewise", piecewise_fracs=None,
                               piecewise_epochs=[round(e * ratio) for e in cuts],
                               piecewise_factors=[lrs[0] / config.lr] + [lrs[e] / config.lr for e in cuts])


def _check_schedule(c: TrainConfig) -> None:
    if c.schedule == "power" and not (c.power_s > 0 and c.power_c > 0):
        raise ValueError(f"power schedule needs power_s > 0 and power_c > 0, got {c.power_s=}, {c.power_c=}")
    if c.schedule == "exponential" and not c.exp_s > 0:
        raise ValueError(f"exponential schedule needs exp_s > 0, got {c.exp_s=}")
    for name in ("power_frac", "exp_frac"):
        value = getattr(c, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be > 0 (a fraction of the total steps), got {name}={value!r}")
    if not 0.0 <= c.flat_fraction < 1.0:
        raise ValueError(f"flat_fraction must be in [0, 1), got flat_fraction={c.flat_fraction!r}")
    if c.schedule == "piecewise":
        _check_piecewise(c)


def _check_piecewise(c: TrainConfig) -> None:
    factors = list(c.piecewise_factors)
    bounds = list(c.piecewise_epochs if c.piecewise_fracs is None else c.piecewise_fracs)
    name = "piecewise_epochs" if c.piecewise_fracs is None else "piecewise_fracs"
    if len(factors) != len(bounds) + 1:
        raise ValueError(f"piecewise needs one more factor than boundaries, got {name}={bounds}, {factors=}")
    if bounds != sorted(bounds) or any(b < 0 for b in bounds):
        raise ValueError(f"{name} must be non-negative and increasing, got {name}={bounds}")
    if c.piecewise_fracs is not None and any(b > 1 for b in bounds):
        raise ValueError(f"piecewise_fracs are fractions of the epochs, in [0, 1], got piecewise_fracs={bounds}")
    if any(not f > 0 for f in factors):
        raise ValueError(f"piecewise_factors must be > 0, got {factors=}")
