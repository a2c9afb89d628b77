"""The MLP builder: a plain config in, a ``torch.nn.Module`` out (techniques.md §1-3, 7).

The net is an ``nn.Sequential`` of named children so that its ``state_dict`` has short, stable keys
and can be reloaded by rebuilding from the same ``NetConfig``::

    input_bn            BatchNorm1d(d_in)            only with batchnorm="input"
    hidden0 ... hiddenN nn.Sequential of linear, [bn], act, [bn], [dropout]
    out                 Linear(d_hidden, d_out)      the head: raw logits / values

Inside a hidden block the order is ``linear -> bn -> act`` for batchnorm="before" (the linear has no
bias: the BN shift replaces it) and ``linear -> act -> bn`` for batchnorm="after"; dropout comes last.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections import OrderedDict

import torch
from torch import nn

from automl_dnn.config import NetConfig

ACTIVATIONS = (
    "relu",
    "leaky_relu",
    "rrelu",
    "prelu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "mish",
    "tanh",
    "sigmoid",
)
INITS = (
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "variance_scaling",
)
INIT_MODES = ("fan_in", "fan_out", "fan_avg")
INIT_DISTRIBUTIONS = ("normal", "uniform")
BATCHNORM_PLACEMENTS = ("none", "input", "before", "after")
DROPOUT_KINDS = ("standard", "alpha")
DROPOUT_PLACEMENTS = ("all", "last")

# Named inits as (scale, mode) of variance scaling: variance = scale / fan_mode (techniques.md §1).
_NAMED_INITS = {"glorot": (1.0, "fan_avg"), "he": (2.0, "fan_in"), "lecun": (1.0, "fan_in")}
# Slopes used when activation_alpha is None: 0.2 "often beats 0.01" (techniques.md §2); ELU is
# smooth at 0 with alpha=1; 0.25 is PReLU's usual starting slope.
DEFAULT_ALPHA = {"leaky_relu": 0.2, "elu": 1.0, "prelu": 0.25}


# --------------------------------------------------------------------------- validation


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def _is_int(value: object) -> bool:
    """Python or numpy integers (search values may be either), but not bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_config(config: NetConfig, d_in: int, d_out: int) -> None:
    """Refuse bad values up front so a bad trial fails with a message, not deep inside torch."""
    n_layers, d_hidden, mult = config.n_layers, config.d_hidden, config.first_layer_mult
    if not _is_int(d_in) or d_in < 1:
        raise ValueError(f"d_in must be an int >= 1, got {d_in=}")
    if not _is_int(d_out) or d_out < 1:
        raise ValueError(f"d_out must be an int >= 1, got {d_out=}")
    if not _is_int(n_layers) or n_layers < 0:
        raise ValueError(f"n_layers must be >= 0, got {n_layers=}")
    if not _is_int(d_hidden) or d_hidden < 1:
        raise ValueError(f"d_hidden must be >= 1, got {d_hidden=}")
    if not (mult > 0 and round(d_hidden * mult) >= 1):
        raise ValueError(f"first_layer_mult must make a first layer of >= 1 unit, got {mult=}")
    _check_choice("activation", config.activation, ACTIVATIONS)
    _check_choice("init", config.init, INITS)
    _check_choice("init_mode", config.init_mode, INIT_MODES)
    _check_choice("init_distribution", config.init_distribution, INIT_DISTRIBUTIONS)
    _check_choice("batchnorm", config.batchnorm, BATCHNORM_PLACEMENTS)
    _check_choice("dropout_kind", config.dropout_kind, DROPOUT_KINDS)
    _check_choice("dropout_placement", config.dropout_placement, DROPOUT_PLACEMENTS)
    init_scale, bn_momentum, dropout = config.init_scale, config.bn_momentum, config.dropout
    if not init_scale > 0:
        raise ValueError(f"init_scale must be > 0, got {init_scale=}")
    if not 0.0 <= bn_momentum <= 1.0:
        raise ValueError(f"bn_momentum must be in [0, 1] (textbook convention), got {bn_momentum=}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout=}")
    lower, upper = config.rrelu_lower, config.rrelu_upper
    if not 0.0 <= lower <= upper:
        raise ValueError(f"rrelu needs 0 <= lower <= upper, got {lower=}, {upper=}")
    alpha = config.activation_alpha
    if alpha is not None and not math.isfinite(alpha):
        raise ValueError(f"activation_alpha must be finite, got {alpha=}")
    if config.activation == "elu" and alpha is not None and alpha <= 0:
        raise ValueError(f"ELU needs activation_alpha > 0, got {alpha=}")


# --------------------------------------------------------------------------- init


def init_variance(weight_shape: tuple[int, ...], *, scale: float, mode: str) -> float:
    """sigma^2 = scale / fan_mode for a Linear weight of shape (fan_out, fan_in)."""
    fan_out, fan_in = weight_shape[0], weight_shape[1]
    fans = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
    return scale / fans[mode]


def init_spec(config: NetConfig) -> tuple[float, str, str]:
    """(scale, mode, distribution) of the hidden layers' init, named inits spelled as variance scaling."""
    if config.init == "variance_scaling":
        return config.init_scale, config.init_mode, config.init_distribution
    family, distribution = config.init.split("_")
    scale, mode = _NAMED_INITS[family]
    return scale, mode, distribution


@torch.no_grad()
def init_linear(linear: nn.Linear, *, scale: float, mode: str, distribution: str) -> None:
    """Draw the weights with variance scale/fan_mode (normal, or uniform on +-sqrt(3 var)); zero bias."""
    var = init_variance(tuple(linear.weight.shape), scale=scale, mode=mode)
    if distribution == "normal":
        linear.weight.normal_(0.0, math.sqrt(var))
    else:
        bound = math.sqrt(3.0 * var)
        linear.weight.uniform_(-bound, bound)
    if linear.bias is not None:
        linear.bias.zero_()


# --------------------------------------------------------------------------- layers


def make_activation(config: NetConfig, width: int) -> nn.Module:
    """One fresh activation module (PReLU learns one slope per unit, so it needs the width)."""
    name = config.activation
    alpha = config.activation_alpha if config.activation_alpha is not None else DEFAULT_ALPHA.get(name)
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope=alpha)
    if name == "rrelu":
        return nn.RReLU(lower=config.rrelu_lower, upper=config.rrelu_upper)
    if name == "prelu":
        return nn.PReLU(num_parameters=width, init=alpha)
    if name == "elu":
        return nn.ELU(alpha=alpha)
    simple = {
        "relu": nn.ReLU,
        "selu": nn.SELU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "mish": nn.Mish,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
    }
    return simple[name]()


def torch_bn_momentum(textbook_momentum: float) -> float:
    """PyTorch weighs the *new* batch by `momentum`; the textbook weighs the running value by it."""
    return 1.0 - textbook_momentum


def _batchnorm(width: int, config: NetConfig) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(width, momentum=torch_bn_momentum(config.bn_momentum))


def _dropout(config: NetConfig) -> nn.Module:
    return nn.AlphaDropout(config.dropout) if config.dropout_kind == "alpha" else nn.Dropout(config.dropout)


def hidden_widths(config: NetConfig) -> list[int]:
    """The first hidden layer is round(d_hidden * first_layer_mult) wide, the others d_hidden."""
    if config.n_layers == 0:
        return []
    first = int(round(config.d_hidden * config.first_layer_mult))
    return [first] + [config.d_hidden] * (config.n_layers - 1)


def _hidden_block(config: NetConfig, d_prev: int, width: int, with_dropout: bool) -> nn.Sequential:
    placement = config.batchnorm
    layers: list[tuple[str, nn.Module]] = [("linear", nn.Linear(d_prev, width, bias=placement != "before"))]
    if placement == "before":
        layers.append(("bn", _batchnorm(width, config)))
    layers.append(("act", make_activation(config, width)))
    if placement == "after":
        layers.append(("bn", _batchnorm(width, config)))
    if with_dropout:
        layers.append(("dropout", _dropout(config)))
    return nn.Sequential(OrderedDict(layers))


def build_mlp(config: NetConfig, *, d_in: int, d_out: int) -> nn.Module:
    """Build the MLP described by `config` (see the module docstring for its layout).

    Hidden Linear layers use the configured init. The output head uses Glorot with the same
    distribution (normal/uniform): it feeds a sigmoid, softmax or nothing, which techniques.md §1 pairs
    with Glorot, whatever the hidden activation. Biases start at zero.
    """
    _check_config(config, d_in, d_out)
    scale, mode, distribution = init_spec(config)
    widths = hidden_widths(config)
    use_dropout = config.dropout > 0
    children: list[tuple[str, nn.Module]] = []
    if config.batchnorm == "input":
        children.append(("input_bn", _batchnorm(d_in, config)))
    d_prev = d_in
    for i, width in enumerate(widths):
        is_last = i == len(widths) - 1
        with_dropout = use_dropout and (config.dropout_placement == "all" or is_last)
        block = _hidden_block(config, d_prev, width, with_dropout)
        init_linear(block.linear, scale=scale, mode=mode, distribution=distribution)
        children.append((f"hidden{i}", block))
        d_prev = width
    out = nn.Linear(d_prev, d_out)
    init_linear(out, scale=1.0, mode="fan_avg", distribution=distribution)
    children.append(("out", out))
    return nn.Sequential(OrderedDict(children))


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) scalars, for reporting model size."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------- BatchNorm folding

# Modules that are the identity in eval mode, so an affine map can be moved across them.
_EVAL_IDENTITY = (nn.Dropout, nn.AlphaDropout, nn.Identity)


def _leaves(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, name, leaf) in forward order, for nets made of (nested) nn.Sequential."""
    found: list[tuple[nn.Module, str, nn.Module]] = []
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            found.extend(_leaves(child))
        else:
            found.append((module, name, child))
    return found


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as y = s*x + t."""
    assert bn.running_mean is not None and bn.running_var is not None
    s = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight
    t = -bn.running_mean * s
    if bn.bias is not None:
        t = t + bn.bias
    return s, t


def _linear_with_bias(linear: nn.Linear) -> nn.Linear:
    new = nn.Linear(linear.in_features, linear.out_features, bias=True)
    new = new.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(linear.weight)
        new.bias.copy_(linear.bias if linear.bias is not None else torch.zeros_like(new.bias))
    return new


@torch.no_grad()
def _fold_into_previous(linear: nn.Linear, s: torch.Tensor, t: torch.Tensor) -> None:
    """BN(Wx + b) = (s*W)x + (s*b + t): scale the rows."""
    linear.weight.mul_(s[:, None])
    linear.bias.mul_(s).add_(t)


@torch.no_grad()
def _fold_into_next(linear: nn.Linear, s: torch.Tensor, t: torch.Tensor) -> None:
    """W(s*h + t) + b = (W*s)h + (Wt + b): scale the columns, shift the bias."""
    linear.bias.add_(linear.weight @ t)
    linear.weight.mul_(s[None, :])


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every foldable BatchNorm merged into an adjacent Linear.

    A BN right after a Linear ("before" placement) folds into that Linear; a BN followed (possibly
    through dropout) by a Linear ("input" and "after" placements) folds into that next Linear. Folded
    BNs become ``nn.Identity``; any other BN is kept. Outputs match the original in eval mode. The copy
    is for deterministic inference: moving a BN across dropout does not commute in train mode, so do
    not use it for MC dropout.
    """
    folded = copy.deepcopy(model).eval()
    leaves = _leaves(folded)
    for i, (parent, name, leaf) in enumerate(leaves):
        if not isinstance(leaf, nn.modules.batchnorm._BatchNorm) or leaf.running_var is None:
            continue
        s, t = _bn_affine(leaf)
        prev = leaves[i - 1] if i > 0 else None
        if prev is not None and isinstance(prev[2], nn.Linear):
            linear = _linear_with_bias(prev[2])
            _fold_into_previous(linear, s, t)
            setattr(prev[0], prev[1], linear)
            leaves[i - 1] = (prev[0], prev[1], linear)
        else:
            j = i + 1
            while j < len(leaves) and isinstance(leaves[j][2], _EVAL_IDENTITY):
                j += 1
            if j == len(leaves) or not isinstance(leaves[j][2], nn.Linear):
                continue
            nxt_parent, nxt_name, nxt = leaves[j]
            linear = _linear_with_bias(nxt)
            _fold_into_next(linear, s, t)
            setattr(nxt_parent, nxt_name, linear)
            leaves[j] = (nxt_parent, nxt_name, linear)
        setattr(parent, name, nn.Identity())
    return folded
