"""The training loop (TECHNIQUES.md sections 4-7)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    """How one net is trained. Defaults follow TECHNIQUES.md section 8 (Nadam + 1cycle, early stopping)."""

    optimizer: str = "nadam"  # sgd|momentum|nesterov|adagrad|rmsprop|adam|adamax|nadam|adamw
    lr: float = 1e-3  # the peak lr for 1cycle, the initial lr otherwise
    momentum: float = 0.9  # momentum / nesterov / rmsprop momentum
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
