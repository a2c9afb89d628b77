"""The plain configs of one trial: the net's architecture, how it is trained, and the input scaling.

Dataclasses with no behaviour beyond describing themselves, so every layer can import them without a
cycle: ``model`` builds a ``NetConfig``, ``optim`` and ``train`` read a ``TrainConfig``, ``space``
produces a ``TrialSettings`` from an Optuna trial, and run folders and model folders store
``TrialSettings.to_dict()`` as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class NetConfig:
    """Architecture of one MLP. Defaults are the practical default net of techniques.md §8."""

    n_layers: int = 2
    d_hidden: int = 128
    first_layer_mult: float = 1.0  # >1 makes the first hidden layer wider; 1 keeps all layers equal
    activation: str = "elu"  # relu|leaky_relu|rrelu|prelu|elu|selu|gelu|silu|mish|tanh|sigmoid
    activation_alpha: float | None = None  # LeakyReLU slope / ELU alpha / PReLU initial slope
    rrelu_lower: float = 1.0 / 8.0
    rrelu_upper: float = 1.0 / 3.0
    init: str = "he_normal"  # {glorot,he,lecun}_{normal,uniform} | variance_scaling
    init_scale: float = 2.0  # variance_scaling only: variance = scale / fan_mode
    init_mode: str = "fan_avg"  # variance_scaling only: fan_in|fan_out|fan_avg
    init_distribution: str = "uniform"  # variance_scaling only: normal|uniform
    batchnorm: str = "none"  # none|input|before|after (activation)
    bn_momentum: float = 0.99  # textbook convention: running <- running*m + batch*(1-m)
    dropout: float = 0.0
    dropout_kind: str = "standard"  # standard|alpha (alpha keeps SELU self-normalizing)
    dropout_placement: str = "all"  # all hidden layers | last hidden layer only


@dataclass
class TrainConfig:
    """How one net is trained. Defaults follow techniques.md §8 (Nadam + 1cycle, early stopping)."""

    optimizer: str = "nadam"  # sgd|momentum|nesterov|adagrad|rmsprop|adam|adamax|nadam|adamw
    lr: float = 1e-3  # the peak lr for 1cycle, the initial lr otherwise
    momentum: float = 0.9  # momentum / nesterov (RMSProp is the plain, momentum-free one)
    beta1: float = 0.9
    beta2: float = 0.999
    rho: float = 0.9  # RMSProp decay
    weight_decay: float = 0.0  # AdamW's decoupled decay
    schedule: str = "onecycle"  # none|power|exponential|piecewise|plateau|onecycle
    power_s: float = 1000.0  # power: steps (batches) per halving-ish: lr0 / (1 + t/s)^c
    power_c: float = 1.0
    exp_s: float = 1000.0  # exponential: x0.1 every s steps (batches)
    piecewise_epochs: list[int] = field(default_factory=lambda: [5, 15])  # epoch boundaries
    piecewise_factors: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.1])  # lr multipliers
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    clip: str = "none"  # none|value|norm
    clip_value: float = 1.0
    l1: float = 0.0
    l2: float = 0.0
    max_norm: float = 0.0  # 0 disables; else each neuron's incoming weight vector has norm <= max_norm
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 10  # early stopping
    class_weight: bool = False  # weight classes by inverse frequency (imbalanced classification)
    seed: int = 0


@dataclass(frozen=True)
class TrialSettings:
    """What one trial trains: the net, how it is trained, and the input scaling."""

    net: NetConfig
    train: TrainConfig
    scaling: str = "standard"

    def to_dict(self) -> dict[str, Any]:
        return {"net": dataclasses.asdict(self.net), "train": dataclasses.asdict(self.train), "scaling": self.scaling}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSettings:
        return cls(net=NetConfig(**data["net"]), train=TrainConfig(**data["train"]), scaling=data.get("scaling", "standard"))


def describe(settings: dict[str, Any] | TrialSettings) -> dict[str, str]:
    """The key hyperparameters of a trial in three short strings (tables, dashboard, ensemble report)."""
    if isinstance(settings, dict):
        settings = TrialSettings.from_dict(settings)
    net, train = settings.net, settings.train
    extras = [f"bn-{net.batchnorm}" if net.batchnorm != "none" else "",
              f"{'alpha-' if net.dropout_kind == 'alpha' else ''}drop {net.dropout:.2f}" if net.dropout else "",
              "quantile" if settings.scaling == "quantile" else ""]
    return {
        "net": " ".join([f"{net.n_layers}x{net.d_hidden}", net.activation] + [e for e in extras if e]),
        "optimizer": f"{train.optimizer} {train.lr:.2g}",
        "schedule": train.schedule,
    }
