"""The MLP builder: a plain config in, a ``torch.nn.Module`` out (TECHNIQUES.md sections 1-3, 7)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NetConfig:
    """Architecture of one MLP. Defaults are the practical default net of TECHNIQUES.md section 8."""

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
