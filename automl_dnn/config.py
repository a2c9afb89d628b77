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

#: Evaluation's batch (no backward pass, so much larger than training's), and the most float32 values
#: (32 MB) one activation of an evaluation batch may hold: a wide net gets fewer rows a batch (issue 13:
#: TabM k = 8 over 100 embedded columns holds ~13,000 floats a row; PLR's cos, sin and their concatenation
#: live at once, so 128 MB a tensor made a 1M-row refit's predictions 300-500 MB; ~600 such rows a batch
#: still leave the per-batch overhead negligible). Here so that the trainer and the memory guard share them.
EVAL_BATCH_SIZE = 8192
EVAL_MAX_FLOATS = 2**23


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
    # Numeric embeddings inside the net (techniques.md §11): none | plr (periodic, linear, ReLU) | ple
    # (piecewise-linear encoding on quantile bins, then a linear map per column).
    num_embedding: str = "none"
    d_embedding: int = 16  # width of each embedded column
    plr_frequencies: int = 48  # PLR: frequencies per column
    plr_sigma: float = 0.01  # PLR: scale of the initial frequencies (the important knob)
    # PLR: above plr_sigma, the frequencies' initial scales spread geometrically from plr_sigma to this, one
    # per frequency, so that one net starts with both slow and fast ones (0: every frequency at plr_sigma)
    plr_sigma_max: float = 0.0
    ple_bins: int = 48  # PLE: at most this many bins per column
    # PLE's bin edges: quantiles of the training rows, or a decision tree's splits of each column against the
    # training target (target-aware bins, Gorishniy et al. 2022 §3.2.2)
    ple_binning: str = "quantile"
    # Set from the training data by the search, never by a space: the input columns to embed (the
    # continuous ones; None: all) and, for PLE, the number of bins of each (the bin edges are buffers in
    # the weights, so a saved net is rebuilt from this config and then loaded).
    embedded_columns: list[int] | None = None
    bin_counts: list[int] | None = None
    # Categorical columns with many levels arrive as one column of level codes (0: a level not seen in
    # training) and get a learned embedding of d_cat_embedding each. Set from the data, like the above.
    categorical_columns: list[int] | None = None
    categorical_cardinalities: list[int] | None = None  # codes per column, the reserved 0 included
    d_cat_embedding: int = 8
    k_ensemble: int = 1  # TabM: k members sharing one backbone through BatchEnsemble adapters; 1 = plain MLP
    # RealMLP's scaling layer (Holzmueller et al. 2024): one learnable factor per input of the first hidden layer,
    # starting at 1, trained at 20 times the learning rate (model.FrontScale.lr_factor): a soft feature selection
    front_scale: bool = False


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
    schedule: str = "onecycle"  # none|power|exponential|piecewise|plateau|onecycle|flat_cosine
    power_s: float = 1000.0  # power: steps (batches) per halving-ish: lr0 / (1 + t/s)^c
    power_c: float = 1.0
    exp_s: float = 1000.0  # exponential: x0.1 every s steps (batches)
    piecewise_epochs: list[int] = field(default_factory=lambda: [5, 15])  # epoch boundaries
    piecewise_factors: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.1])  # lr multipliers
    # The same three as fractions of the trial's own length (power/exponential: of its total steps;
    # piecewise: of its epochs). When set they override power_s / exp_s / piecewise_epochs, so that a
    # trial whose epochs a time budget caps keeps the shape of its schedule.
    power_frac: float | None = None
    exp_frac: float | None = None
    piecewise_fracs: list[float] | None = None
    flat_fraction: float = 0.5  # flat_cosine: lr for this fraction of the steps, then a cosine to 0
    weight_averaging: str = "none"  # none|ema|swa, over the annealing phase (techniques.md §7)
    ema_decay: float = 0.999  # ema: the per-step decay (warmed up as min(decay, (1 + n) / (10 + n)))
    label_smoothing: float = 0.0  # classification only; the search uses it only for accuracy-like metrics
    regression_loss: str = "mse"  # mse|huber|l1, regression only; the search uses huber and l1 only for MAE
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
    # Overfit stop (techniques.md §6): training ends, whatever the schedule's phase, once the validation loss has
    # stayed more than `overfit_margin` (relative) above the best epoch's for `overfit_epochs` epochs while the
    # training loss sat below that epoch's. 0 (the default) turns it off: 60 s fits measured no gain from it
    # (docs/benchmarks.md, "The overfit stop"); 0.1 with 10 epochs is the rule that was measured.
    overfit_margin: float = 0.0
    overfit_epochs: int = 10
    class_weight: bool = False  # weight classes by inverse frequency (imbalanced classification)
    seed: int = 0
    # bf16 autocast in the training steps, on a device that computes bf16 natively (train.native_bf16); set by
    # the search from --amp and the trial's device, not searched, so a net's refits train as its trial did
    amp: bool = False


@dataclass(frozen=True)
class TrialSettings:
    """What one trial trains: the net, how it is trained, the input scaling and the target transform.

    ``target`` is the fitted ``TargetTransform`` of a regression trial whose ``target_transform`` is not
    ``none`` or whose ``target_scale`` is ``robust`` (set by the search from the training rows): the net's
    outputs are decoded with it. ``robust`` centres and scales the target by its median and interquartile
    range (an MAE study's, which estimates the median).
    """

    net: NetConfig
    train: TrainConfig
    scaling: str = "standard"
    target_transform: str = "none"
    target: dict[str, Any] | None = None
    target_scale: str = "standard"  # standard | robust

    def to_dict(self) -> dict[str, Any]:
        return {"net": dataclasses.asdict(self.net), "train": dataclasses.asdict(self.train), "scaling": self.scaling,
                "target_transform": self.target_transform, "target": self.target, "target_scale": self.target_scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSettings:
        return cls(net=NetConfig(**data["net"]), train=TrainConfig(**data["train"]), scaling=data.get("scaling", "standard"),
                   target_transform=data.get("target_transform", "none"), target=data.get("target"),
                   target_scale=data.get("target_scale", "standard"))


def _target_words(settings: TrialSettings) -> str:
    words = [settings.target_transform] if settings.target_transform != "none" else []
    return "y " + " ".join(words + (["robust"] if settings.target_scale == "robust" else []))


def describe(settings: dict[str, Any] | TrialSettings) -> dict[str, str]:
    """The key hyperparameters of a trial in three short strings (tables, dashboard, ensemble report)."""
    if isinstance(settings, dict):
        settings = TrialSettings.from_dict(settings)
    net, train = settings.net, settings.train
    extras = [f"bn-{net.batchnorm}" if net.batchnorm != "none" else "",
              f"{'alpha-' if net.dropout_kind == 'alpha' else ''}drop {net.dropout:.2f}" if net.dropout else "",
              settings.scaling if settings.scaling != "standard" else "",
              net.num_embedding if net.num_embedding != "none" else "",
              f"tabm k={net.k_ensemble}" if net.k_ensemble > 1 else "",
              _target_words(settings) if settings.target is not None else ""]
    return {
        "net": " ".join([f"{net.n_layers}x{net.d_hidden}", net.activation] + [e for e in extras if e]),
        "optimizer": f"{train.optimizer} {train.lr:.2g}" + (f", {train.regression_loss} loss"
                                                             if train.regression_loss != "mse" else ""),
        "schedule": train.schedule,
    }
