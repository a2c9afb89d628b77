"""The MLP builder: a plain config in, a ``torch.nn.Module`` out (techniques.md §1-3, 7, 11).

The net is an ``nn.Sequential`` of named children so that its ``state_dict`` has short, stable keys
and can be reloaded by rebuilding from the same ``NetConfig``::

    embed               InputEmbeddings              numeric embeddings (num_embedding "plr" or "ple") and
                                                     learned embeddings of categorical level codes, if any
    front_scale         FrontScale                   only with front_scale: a learned factor per input (RealMLP)
    input_bn            BatchNorm1d                  only with batchnorm="input"
    ensemble_view       tabm.EnsembleView            only with k_ensemble > 1: (B, d) -> (B, k, d)
    hidden0 ... hiddenN nn.Sequential of linear, [bn], act, [bn], [dropout]
    out                 Linear(d_hidden, d_out)      the head: raw logits / values

Inside a hidden block the order is ``linear -> bn -> act`` for batchnorm="before" (the linear has no
bias: the BN shift replaces it) and ``linear -> act -> bn`` for batchnorm="after"; dropout comes last.

Numeric embeddings (Gorishniy et al., NeurIPS 2022) come from ``rtdl_num_embeddings``: PLR is
``PeriodicEmbeddings(lite=False)``, PLE ``PiecewiseLinearEmbeddings(version="B")`` on quantile bins
of the training rows, whose edges live in buffers, so the saved weights carry them. With
``k_ensemble = k > 1`` the net is TabM (Gorishniy et al., ICLR 2025, the ``tabm`` package): the hidden
linear layers are ``LinearBatchEnsemble`` (one shared weight, per-member adapters R, S and biases; the
first R random signs, the rest ones), the head is ``LinearEnsemble``, and the net outputs
``(B, k, d_out)``: the trainer averages the members' losses, ``predict`` their probabilities.
BatchNorm and PReLU see the members as extra rows (``MembersAsRows``), so they are shared too.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import warnings
from collections import OrderedDict
from collections.abc import Iterator

import rtdl_num_embeddings as rtdl
import tabm
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
NUM_EMBEDDINGS = ("none", "plr", "ple")
PLE_BINNINGS = ("quantile", "tree")
TREE_BIN_MIN_LEAF = 64  # rtdl's example; the PLE paper tunes it between 1 and 128

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
    _check_embedding(config, d_in)
    _check_categorical(config, d_in)
    _check_ensemble(config)


def _check_embedding(config: NetConfig, d_in: int) -> None:
    _check_choice("num_embedding", config.num_embedding, NUM_EMBEDDINGS)
    if config.num_embedding == "none":
        return
    for name in ("d_embedding", "plr_frequencies"):
        if not _is_int(getattr(config, name)) or getattr(config, name) < 1:
            raise ValueError(f"{name} must be an int >= 1, got {getattr(config, name)!r}")
    if not _is_int(config.ple_bins) or config.ple_bins < 2:
        raise ValueError(f"ple_bins must be an int >= 2, got {config.ple_bins!r}")
    _check_choice("ple_binning", config.ple_binning, PLE_BINNINGS)
    if not config.plr_sigma > 0:
        raise ValueError(f"plr_sigma must be > 0, got {config.plr_sigma!r}")
    if config.plr_sigma_max != 0 and not config.plr_sigma_max >= config.plr_sigma:
        raise ValueError(f"plr_sigma_max must be 0 or >= plr_sigma, got {config.plr_sigma_max!r}")
    columns = embedded_columns(config, d_in)
    if any(not _is_int(c) or not 0 <= c < d_in for c in columns) or len(set(columns)) != len(columns):
        raise ValueError(f"embedded_columns must be distinct column indices below d_in={d_in}, got {columns}")
    counts = config.bin_counts
    if counts is not None and (len(counts) != len(columns) or any(not _is_int(n) or n < 1 for n in counts)):
        raise ValueError(f"bin_counts must give a count >= 1 for each of the {len(columns)} embedded columns")


def _check_categorical(config: NetConfig, d_in: int) -> None:
    columns, cards = categorical_columns(config), list(config.categorical_cardinalities or [])
    if len(columns) != len(cards) or any(not _is_int(n) or n < 2 for n in cards):
        raise ValueError(f"categorical_cardinalities must give a count >= 2 for each of the {len(columns)} "
                         f"categorical columns, got {cards}")
    if any(not 0 <= c < d_in for c in columns) or len(set(columns)) != len(columns):
        raise ValueError(f"categorical_columns must be distinct column indices below d_in={d_in}, got {columns}")
    if set(columns) & set(embedded_columns(config, d_in)):
        raise ValueError("a column cannot be both categorical and numerically embedded")
    if columns and (not _is_int(config.d_cat_embedding) or config.d_cat_embedding < 1):
        raise ValueError(f"d_cat_embedding must be an int >= 1, got {config.d_cat_embedding!r}")


def _check_ensemble(config: NetConfig) -> None:
    k = config.k_ensemble
    if not _is_int(k) or k < 1:
        raise ValueError(f"k_ensemble must be an int >= 1, got {k!r}")


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
        "mish": CpuMish,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
    }
    return simple[name]()


class CpuMish(nn.Mish):
    """``nn.Mish`` whose CPU forward and backward are built from vectorized kernels.

    PyTorch's CPU mish and its backward are scalar loops: they took 29 % of the RealMLP-like first trial's
    training step (3 x 256 Mish) on 2 cores, 1.1 ms for a 256 x 256 batch where SiLU takes 0.2 ms
    (docs/benchmarks.md, "A vectorized Mish on the CPU"). With ``e = exp(x)``, ``tanh(softplus(x))`` is
    ``e (e + 2) / (e (e + 2) + 2)``: one exp and a few products. GPUs keep PyTorch's kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        return _VectorizedMish.apply(x)


class _VectorizedMish(torch.autograd.Function):
    """mish(x) = x t with t = tanh(softplus(x)); d mish / dx = t + x (1 - t^2) sigmoid(x), sigmoid(x) = e / (e + 1).

    Computed in float32 at least (bf16 inputs under autocast come back as bf16); exp's argument is clamped at
    20, above which t is 1 to float32's precision, so that e (e + 2) cannot overflow.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        e = wide.clamp(max=20.0).exp_()
        t = (e + 2.0).mul_(e)
        t = t.div_(t + 2.0)
        ctx.save_for_backward(wide, t, e)
        return (wide * t).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        wide, t, e = ctx.saved_tensors
        slope = (1.0 - t * t).mul_(e).div_(e + 1.0).mul_(wide).add_(t)
        return slope.mul_(grad).to(grad.dtype)


def torch_bn_momentum(textbook_momentum: float) -> float:
    """PyTorch weighs the *new* batch by `momentum`; the textbook weighs the running value by it."""
    return 1.0 - textbook_momentum


def _batchnorm(width: int, config: NetConfig) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(width, momentum=torch_bn_momentum(config.bn_momentum))


def _dropout(config: NetConfig) -> nn.Module:
    return nn.AlphaDropout(config.dropout) if config.dropout_kind == "alpha" else ByteMaskDropout(config.dropout)


class ByteMaskDropout(nn.Dropout):
    """``nn.Dropout`` whose mask, on the CPU, is drawn one random byte per element.

    PyTorch's CPU dropout draws one 32-bit random number per element, and that took a third of a TabM
    trial's training time on 2 cores (docs/benchmarks.md, "Cheaper training steps on the CPU"); eight
    elements per 64-bit draw make the mask about 3x cheaper. The rate is then a multiple of 1/256
    (0.1 -> 0.1016), the kept values scaled by the exact inverse of their share. GPUs keep PyTorch's
    fused kernel, as do rates below 1/256.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = round(self.p * 256)
        if not self.training or x.device.type != "cpu" or not 0 < dropped < 256:
            return super().forward(x)
        return x * byte_mask(x, dropped)


def byte_mask(x: torch.Tensor, dropped: int) -> torch.Tensor:
    """A dropout mask shaped like ``x``: 0 with probability ``dropped / 256``, else 256 / (256 - dropped)."""
    n = x.numel()
    draws = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device).random_(-2**63, 2**63 - 1)
    keep = draws.view(torch.uint8)[:n].view(x.shape) >= dropped
    return keep.to(x.dtype).mul_(256 / (256 - dropped))


def embedded_columns(config: NetConfig, d_in: int) -> list[int]:
    """The input columns a numeric embedding applies to: those set from the data, else all non-categorical."""
    if config.num_embedding == "none":
        return []
    if config.embedded_columns is None:
        return [c for c in range(d_in) if c not in set(categorical_columns(config))]
    return [int(c) for c in config.embedded_columns]


class InputEmbeddings(nn.Module):
    """The net's first step: numeric columns embedded (PLR or PLE), categorical codes looked up in learned
    embeddings, the other columns passed through; flattened side by side: (B, d) -> (B, d')."""

    def __init__(self, config: NetConfig, d_in: int, bins: list[torch.Tensor] | None = None) -> None:
        super().__init__()
        numeric, categorical = embedded_columns(config, d_in), categorical_columns(config)
        taken = set(numeric) | set(categorical)
        self.register_buffer("numeric", torch.tensor(numeric, dtype=torch.long))
        self.register_buffer("categorical", torch.tensor(categorical, dtype=torch.long))
        self.register_buffer("passed", torch.tensor([c for c in range(d_in) if c not in taken], dtype=torch.long))
        self.num_embed = _numeric_embedding(config, len(numeric), bins) if numeric else None
        self.cat_embed = nn.ModuleList(nn.Embedding(n, config.d_cat_embedding)
                                       for n in (config.categorical_cardinalities or []))
        self.d_out = (len(numeric) * config.d_embedding + len(categorical) * config.d_cat_embedding
                      + len(self.passed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.num_embed is not None:
            parts.append(self.num_embed(x.index_select(1, self.numeric)).flatten(1))
        if len(self.cat_embed):
            codes = x.index_select(1, self.categorical).round().long()
            parts += [embed(_known_or_reserved(codes[:, j], embed.num_embeddings)) for j, embed in enumerate(self.cat_embed)]
        parts.append(x.index_select(1, self.passed))
        return torch.cat(parts, dim=1)


def _known_or_reserved(codes: torch.Tensor, n: int) -> torch.Tensor:
    """Codes outside the table (never written by the preprocessing) read as 0, the unseen level's row."""
    return torch.where((codes >= 0) & (codes < n), codes, torch.zeros_like(codes))


def _numeric_embedding(config: NetConfig, n_columns: int, bins: list[torch.Tensor] | None) -> nn.Module:
    if config.num_embedding == "plr":
        plr = rtdl.PeriodicEmbeddings(n_columns, config.d_embedding, n_frequencies=config.plr_frequencies,
                                      frequency_init_scale=config.plr_sigma, lite=False)
        if config.plr_sigma_max > config.plr_sigma:
            spread_frequencies(plr.periodic.weight, config.plr_sigma, config.plr_sigma_max)
        return plr
    bins = bins if bins is not None else placeholder_bins(config, n_columns)
    with _single_bins_allowed():
        return rtdl.PiecewiseLinearEmbeddings(bins, config.d_embedding, activation=False, version="B")


@torch.no_grad()
def spread_frequencies(weight: torch.Tensor, low: float, high: float) -> None:
    """PLR's frequencies (columns x frequencies), frequency j drawn from N(0, sigma_j^2), truncated at 3
    sigma_j as rtdl does, with sigma_j geometric from ``low`` to ``high``: the best single sigma differs by
    100x between tables (docs/benchmarks.md), and the linear layer after it can pick the scales it needs."""
    sigmas = torch.logspace(math.log10(low), math.log10(high), weight.shape[1])
    for j, sigma in enumerate(sigmas.tolist()):
        nn.init.trunc_normal_(weight[:, j], 0.0, sigma, a=-3 * sigma, b=3 * sigma)


def categorical_columns(config: NetConfig) -> list[int]:
    """The input columns that hold level codes (set from the data)."""
    return [int(c) for c in (config.categorical_columns or [])]


def placeholder_bins(config: NetConfig, n_columns: int) -> list[torch.Tensor]:
    """Bins of the right counts (``bin_counts``, else ``ple_bins`` each): the saved weights overwrite them."""
    counts = config.bin_counts or [config.ple_bins] * n_columns
    return [torch.arange(n + 1, dtype=torch.float32) for n in counts]


def quantile_bins(X: torch.Tensor, n_bins: int) -> list[torch.Tensor]:
    """Quantile bin edges of each column of the training rows (rtdl's ``compute_bins``), at most ``n_bins``.

    A column with two distinct values gets one bin, which is min-max scaling: fine, and not worth rtdl's warning.
    """
    with _single_bins_allowed():
        return rtdl.compute_bins(X.float(), n_bins=max(2, min(n_bins, len(X) - 1)))


def tree_bins(X: torch.Tensor, y: torch.Tensor, n_bins: int, *, regression: bool) -> list[torch.Tensor]:
    """Target-aware bin edges: the split points of a decision tree of at most ``n_bins`` leaves fitted on each
    column alone against the training target (rtdl's ``compute_bins`` with trees), plus the column's range.

    Leaves of at least ``TREE_BIN_MIN_LEAF`` rows (an eighth of a small table) keep a bin from fitting noise.
    ``y`` is the run's encoded target: class indices, or a standardized value, so that the impurity floor
    means the same on every table.
    """
    leaf = max(1, min(TREE_BIN_MIN_LEAF, len(X) // 8))
    with _single_bins_allowed():
        return rtdl.compute_bins(X.float(), n_bins=max(2, min(n_bins, len(X) - 1)), y=y, regression=regression,
                                 tree_kwargs={"min_samples_leaf": leaf, "min_impurity_decrease": 1e-4})


@contextlib.contextmanager
def _single_bins_allowed() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*just two bin edges")
        yield


def hidden_widths(config: NetConfig) -> list[int]:
    """The first hidden layer is round(d_hidden * first_layer_mult) wide, the others d_hidden."""
    if config.n_layers == 0:
        return []
    first = int(round(config.d_hidden * config.first_layer_mult))
    return [first] + [config.d_hidden] * (config.n_layers - 1)


class MembersAsRows(nn.Module):
    """Runs a per-channel layer (BatchNorm, PReLU) on TabM's (B, k, d) tensor as (B * k, d) rows.

    The k members then share the layer: its statistics and slopes are the backbone's, like its weight.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def _hidden_block(config: NetConfig, d_prev: int, width: int, with_dropout: bool) -> nn.Sequential:
    placement = config.batchnorm
    per_channel = MembersAsRows if config.k_ensemble > 1 else (lambda layer: layer)
    layers: list[tuple[str, nn.Module]] = [("linear", nn.Linear(d_prev, width, bias=placement != "before"))]
    if placement == "before":
        layers.append(("bn", per_channel(_batchnorm(width, config))))
    act = make_activation(config, width)
    layers.append(("act", per_channel(act) if isinstance(act, nn.PReLU) else act))
    if placement == "after":
        layers.append(("bn", per_channel(_batchnorm(width, config))))
    if with_dropout:
        layers.append(("dropout", _dropout(config)))
    return nn.Sequential(OrderedDict(layers))


def build_mlp(config: NetConfig, *, d_in: int, d_out: int, bins: list[torch.Tensor] | None = None) -> nn.Module:
    """Build the MLP described by `config` (see the module docstring for its layout).

    Hidden Linear layers use the configured init. The output head uses Glorot with the same
    distribution (normal/uniform): it feeds a sigmoid, softmax or nothing, which techniques.md §1 pairs
    with Glorot, whatever the hidden activation. Biases start at zero. ``bins`` are PLE's bin edges of
    the embedded columns (``quantile_bins`` of the training rows); without them, placeholders of the
    counts in ``config.bin_counts``, for a net whose saved weights are loaded next.
    """
    _check_config(config, d_in, d_out)
    scale, mode, distribution = init_spec(config)
    widths = hidden_widths(config)
    use_dropout = config.dropout > 0
    k = config.k_ensemble
    children: list[tuple[str, nn.Module]] = []
    d_prev = d_in
    if embedded_columns(config, d_in) or categorical_columns(config):
        embed = InputEmbeddings(config, d_in, bins)
        children.append(("embed", embed))
        d_prev = embed.d_out
    if config.front_scale:
        children.append(("front_scale", FrontScale(d_prev)))
    if config.batchnorm == "input":  # after the embeddings: level codes are no quantities to normalize
        children.append(("input_bn", _batchnorm(d_prev, config)))
    if k > 1:
        children.append(("ensemble_view", tabm.EnsembleView(k=k)))
    for i, width in enumerate(widths):
        is_last = i == len(widths) - 1
        with_dropout = use_dropout and (config.dropout_placement == "all" or is_last)
        block = _hidden_block(config, d_prev, width, with_dropout)
        init_linear(block.linear, scale=scale, mode=mode, distribution=distribution)
        if k > 1:
            block.linear = _batch_ensemble(block.linear, k, first=i == 0)
        children.append((f"hidden{i}", block))
        d_prev = width
    if k > 1:
        children.append(("out", tabm.LinearEnsemble(d_prev, d_out, k=k)))
    else:
        out = nn.Linear(d_prev, d_out)
        init_linear(out, scale=1.0, mode="fan_avg", distribution=distribution)
        children.append(("out", out))
    return nn.Sequential(OrderedDict(children))


class FrontScale(nn.Module):
    """RealMLP's scaling layer: x * s, one learnable s per input, starting at 1 (Holzmueller et al., 2024)."""

    # 20 times the learning rate: RealMLP's 6 is for its NTK parametrization; with ours, 2, 6, 20 and 60 were measured
    # on the fixed fits and 20 won (docs/benchmarks.md, "RealMLP's scaling layer")
    lr_factor = 20.0

    def __init__(self, d: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _batch_ensemble(linear: nn.Linear, k: int, *, first: bool) -> nn.Module:
    """The Linear as TabM's BatchEnsemble layer: its weight shared, adapters initialized as TabM does."""
    layer = tabm.LinearBatchEnsemble.from_linear(linear, k=k, scaling_init=("random-signs", "ones") if first else "ones")
    with torch.no_grad():
        layer.weight.copy_(linear.weight)
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


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
