"""Tests for the MLP builder: init variances, activations, BatchNorm placement/momentum, dropout, folding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from automl_dnn.model import (
    ACTIVATIONS,
    ByteMaskDropout,
    CpuMish,
    NetConfig,
    build_mlp,
    count_parameters,
    fold_batchnorm,
    hidden_widths,
)




@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


# --------------------------------------------------------------------------- init

# fan_in = 500, fan_out = 2000, fan_avg = 1250: every mode gives a different variance.
D_IN, D_HIDDEN = 500, 2000
INIT_CASES = [
    ("glorot_normal", {}, 1.0 / 1250, "normal"),
    ("glorot_uniform", {}, 1.0 / 1250, "uniform"),
    ("he_normal", {}, 2.0 / 500, "normal"),
    ("he_uniform", {}, 2.0 / 500, "uniform"),
    ("lecun_normal", {}, 1.0 / 500, "normal"),
    ("lecun_uniform", {}, 1.0 / 500, "uniform"),
    ("variance_scaling", {"init_scale": 2.0, "init_mode": "fan_avg", "init_distribution": "uniform"}, 2.0 / 1250, "uniform"),
    ("variance_scaling", {"init_scale": 3.0, "init_mode": "fan_out", "init_distribution": "normal"}, 3.0 / 2000, "normal"),
    ("variance_scaling", {"init_scale": 0.5, "init_mode": "fan_in", "init_distribution": "uniform"}, 0.5 / 500, "uniform"),
]


@pytest.mark.parametrize(("init", "extra", "variance", "distribution"), INIT_CASES)
def test_init_variance_and_distribution(init: str, extra: dict, variance: float, distribution: str) -> None:
    net = build_mlp(NetConfig(n_layers=1, d_hidden=D_HIDDEN, init=init, **extra), d_in=D_IN, d_out=1)
    w = net.hidden0.linear.weight.detach()
    assert w.shape == (D_HIDDEN, D_IN)
    assert w.var().item() == pytest.approx(variance, rel=0.03)
    assert abs(w.mean().item()) < 0.01 * math.sqrt(variance)
    bound = math.sqrt(3 * variance)
    if distribution == "uniform":  # bounded by sqrt(3 sigma^2) and filling the interval
        assert w.abs().max().item() <= bound
        assert w.abs().max().item() > 0.99 * bound
    else:  # a normal's tails go far past the uniform's bound
        assert w.abs().max().item() > 1.5 * bound
    assert torch.count_nonzero(net.hidden0.linear.bias) == 0


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_output_layer_uses_glorot_with_same_distribution(distribution: str) -> None:
    net = build_mlp(NetConfig(n_layers=1, d_hidden=1500, init=f"he_{distribution}"), d_in=10, d_out=700)
    w = net.out.weight.detach()
    variance = 1.0 / ((1500 + 700) / 2)
    assert w.var().item() == pytest.approx(variance, rel=0.03)
    beyond = w.abs().max().item() > 1.5 * math.sqrt(3 * variance)
    assert beyond == (distribution == "normal")
    assert torch.count_nonzero(net.out.bias) == 0


def test_selu_lecun_normal_self_normalizes() -> None:
    """TECHNIQUES 2: standardized input + LeCun normal + SELU keeps mean ~0, std ~1 through depth."""
    cfg = NetConfig(n_layers=20, d_hidden=300, activation="selu", init="lecun_normal")
    net = build_mlp(cfg, d_in=300, d_out=1).eval()
    h = torch.randn(2000, 300)
    with torch.no_grad():
        for i in range(cfg.n_layers):
            h = getattr(net, f"hidden{i}")(h)
    assert abs(h.mean().item()) < 0.15
    assert 0.8 < h.std().item() < 1.2


# --------------------------------------------------------------------------- structure


def test_widths_first_layer_mult_and_head() -> None:
    cfg = NetConfig(n_layers=3, d_hidden=64, first_layer_mult=1.5)
    assert hidden_widths(cfg) == [96, 64, 64]
    net = build_mlp(cfg, d_in=7, d_out=4)
    shapes = [(lin.in_features, lin.out_features) for lin in _linears(net)]
    assert shapes == [(7, 96), (96, 64), (64, 64), (64, 4)]
    assert net(torch.randn(5, 7)).shape == (5, 4)


def test_zero_layers_is_a_linear_model() -> None:
    net = build_mlp(NetConfig(n_layers=0, batchnorm="before", dropout=0.5), d_in=6, d_out=1)
    assert [name for name, _ in net.named_children()] == ["out"]
    assert isinstance(net.out, nn.Linear) and (net.out.in_features, net.out.out_features) == (6, 1)


def test_count_parameters() -> None:
    net = build_mlp(NetConfig(n_layers=2, d_hidden=8, batchnorm="before", activation="prelu"), d_in=3, d_out=2)
    linear = 3 * 8 + 8 * 8 + (8 * 2 + 2)  # hidden linears have no bias with BN before
    bn = 2 * (8 + 8)
    prelu = 8 + 8
    assert count_parameters(net) == linear + bn + prelu


def test_batchnorm_before_has_no_bias_and_order() -> None:
    net = build_mlp(NetConfig(n_layers=2, batchnorm="before"), d_in=5, d_out=1)
    for block in (net.hidden0, net.hidden1):
        kinds = [type(m) for m in block.children()]
        assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ELU]
        assert block.linear.bias is None
    assert net.out.bias is not None


def test_batchnorm_after_order() -> None:
    net = build_mlp(NetConfig(n_layers=2, batchnorm="after", dropout=0.1), d_in=5, d_out=1)
    for block in (net.hidden0, net.hidden1):
        assert [type(m) for m in block.children()] == [nn.Linear, nn.ELU, nn.BatchNorm1d, ByteMaskDropout]
        assert block.linear.bias is not None


def test_batchnorm_input_first() -> None:
    net = build_mlp(NetConfig(n_layers=1, batchnorm="input"), d_in=5, d_out=1)
    first_name, first = next(iter(net.named_children()))
    assert first_name == "input_bn" and isinstance(first, nn.BatchNorm1d) and first.num_features == 5
    assert sum(isinstance(m, nn.BatchNorm1d) for m in net.modules()) == 1


def test_no_batchnorm_by_default() -> None:
    net = build_mlp(NetConfig(), d_in=5, d_out=1)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())


@pytest.mark.parametrize("momentum", [0.99, 0.9])
def test_bn_momentum_is_textbook_convention(momentum: float) -> None:
    net = build_mlp(NetConfig(n_layers=1, d_hidden=4, batchnorm="input", bn_momentum=momentum), d_in=3, d_out=1)
    bn = net.input_bn
    assert bn.momentum == pytest.approx(1 - momentum)
    x = torch.randn(64, 3) * 3 + 2
    running_before = bn.running_mean.clone()
    net.train()(x)
    expected = running_before * momentum + x.mean(dim=0) * (1 - momentum)  # v <- v*m + v_batch*(1-m)
    torch.testing.assert_close(bn.running_mean, expected)


# --------------------------------------------------------------------------- activations


ACTIVATION_TYPES = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "rrelu": nn.RReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": CpuMish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def test_activation_list_is_complete() -> None:
    assert set(ACTIVATIONS) == set(ACTIVATION_TYPES)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_builds_and_runs(activation: str) -> None:
    net = build_mlp(NetConfig(n_layers=2, d_hidden=8, activation=activation), d_in=4, d_out=3)
    out = net(torch.randn(10, 4))
    assert out.shape == (10, 3) and torch.isfinite(out).all()
    expected = ACTIVATION_TYPES[activation]
    assert isinstance(net.hidden0.act, expected) and isinstance(net.hidden1.act, expected)
    assert net.hidden0.act is not net.hidden1.act


def test_activation_alpha_defaults_and_overrides() -> None:
    def act(**kw: object) -> nn.Module:
        return build_mlp(NetConfig(n_layers=1, d_hidden=8, **kw), d_in=2, d_out=1).hidden0.act

    assert act(activation="leaky_relu").negative_slope == pytest.approx(0.2)
    assert act(activation="leaky_relu", activation_alpha=0.05).negative_slope == pytest.approx(0.05)
    assert act(activation="elu").alpha == pytest.approx(1.0)
    assert act(activation="elu", activation_alpha=0.5).alpha == pytest.approx(0.5)
    prelu = act(activation="prelu", activation_alpha=0.1)
    assert prelu.weight.shape == (8,) and torch.allclose(prelu.weight, torch.full((8,), 0.1))
    rrelu = act(activation="rrelu", rrelu_lower=0.1, rrelu_upper=0.4)
    assert (rrelu.lower, rrelu.upper) == (0.1, 0.4)


def test_leaky_relu_slope_is_applied() -> None:
    net = build_mlp(NetConfig(n_layers=1, d_hidden=8, activation="leaky_relu", activation_alpha=0.3), d_in=2, d_out=1)
    z = torch.tensor([[-2.0, 1.0]])
    torch.testing.assert_close(net.hidden0.act(z), torch.tensor([[-0.6, 1.0]]))


# --------------------------------------------------------------------------- dropout


def _dropouts(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Dropout, nn.AlphaDropout))]


def test_alpha_dropout_with_selu() -> None:
    cfg = NetConfig(n_layers=3, activation="selu", init="lecun_normal", dropout=0.1, dropout_kind="alpha")
    net = build_mlp(cfg, d_in=4, d_out=1)
    drops = _dropouts(net)
    assert len(drops) == 3 and all(type(d) is nn.AlphaDropout and d.p == 0.1 for d in drops)


def test_dropout_placement() -> None:
    all_net = build_mlp(NetConfig(n_layers=3, dropout=0.2), d_in=4, d_out=1)
    assert len(_dropouts(all_net)) == 3 and all(type(d) is ByteMaskDropout for d in _dropouts(all_net))
    last_net = build_mlp(NetConfig(n_layers=3, dropout=0.2, dropout_placement="last"), d_in=4, d_out=1)
    assert len(_dropouts(last_net)) == 1
    assert isinstance(last_net.hidden2.dropout, nn.Dropout)
    assert not hasattr(last_net.hidden0, "dropout") and not hasattr(last_net.hidden1, "dropout")
    assert _dropouts(build_mlp(NetConfig(n_layers=3, dropout=0.0), d_in=4, d_out=1)) == []


def test_byte_mask_dropout_drops_its_rate_and_keeps_the_mean() -> None:
    torch.manual_seed(0)
    drop = ByteMaskDropout(0.1)  # 26 of 256 byte values
    x = torch.ones(200_000, requires_grad=True)
    y = drop(x)
    zeros = (y == 0).float().mean().item()
    assert abs(zeros - 26 / 256) < 0.003
    assert torch.allclose(torch.unique(y), torch.tensor([0.0, 256 / 230]))
    assert abs(y.mean().item() - 1.0) < 0.005  # the kept values make up for the dropped ones
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient passes where the value did, scaled alike


def test_byte_mask_dropout_is_the_identity_in_eval_and_seeded_in_training() -> None:
    drop = ByteMaskDropout(0.3)
    x = torch.randn(64, 8, 32)
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    torch.manual_seed(5)
    first = drop(x)
    torch.manual_seed(5)
    assert torch.equal(drop(x), first) and first.shape == x.shape
    assert not torch.equal(drop(x), first)  # a new mask each call
    tiny = ByteMaskDropout(0.001)  # below 1/256: PyTorch's own dropout, at the exact rate
    assert abs((tiny(torch.ones(400_000)) == 0).float().mean().item() - 0.001) < 0.0003


def test_cpu_mish_is_mish_in_value_and_gradient_from_far_below_zero_to_far_above() -> None:
    x = torch.cat([torch.linspace(-60.0, 60.0, 2001), torch.tensor([-1e4, -88.0, 0.0, 19.99, 20.0, 20.01, 1e4])])
    x = x.double().requires_grad_()
    ours, reference = CpuMish()(x), nn.functional.mish(x)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-300)
    (slope,) = torch.autograd.grad(ours.sum(), x)
    (reference_slope,) = torch.autograd.grad(reference.sum(), x)
    torch.testing.assert_close(slope, reference_slope, rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(CpuMish(), (torch.randn(6, 5, dtype=torch.float64, requires_grad=True) * 4,))


def test_cpu_mish_keeps_the_dtype_it_is_given_under_bf16_autocast() -> None:
    linear = nn.Linear(8, 16)
    x = torch.randn(32, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = linear(x)
        ours, reference = CpuMish()(hidden), nn.functional.mish(hidden)
    assert ours.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), reference.float(), rtol=1e-2, atol=1e-2)
    ours.float().sum().backward()
    assert linear.weight.grad is not None and torch.isfinite(linear.weight.grad).all()


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_layers": -1}, "n_layers=-1"),
        ({"d_hidden": 0}, "d_hidden=0"),
        ({"first_layer_mult": 0.0}, "mult=0.0"),
        ({"activation": "swish"}, "relu, leaky_relu"),
        ({"init": "orthogonal"}, "glorot_normal"),
        ({"init_mode": "fan_sum"}, "fan_in, fan_out, fan_avg"),
        ({"init_distribution": "trunc"}, "normal, uniform"),
        ({"batchnorm": "middle"}, "none, input, before, after"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"dropout_kind": "gaussian"}, "standard, alpha"),
        ({"dropout_placement": "first"}, "all, last"),
        ({"bn_momentum": 1.5}, "bn_momentum=1.5"),
        ({"init_scale": -1.0}, "init_scale=-1.0"),
        ({"rrelu_lower": 0.5, "rrelu_upper": 0.1}, "lower=0.5"),
    ],
)
def test_bad_values_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_mlp(NetConfig(**kwargs), d_in=3, d_out=1)


@pytest.mark.parametrize(("d_in", "d_out", "match"), [(0, 1, "d_in=0"), (3, 0, "d_out=0")])
def test_bad_dims_are_refused(d_in: int, d_out: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_mlp(NetConfig(), d_in=d_in, d_out=d_out)


# --------------------------------------------------------------------------- state_dict and folding


def test_state_dict_reloads_into_a_rebuilt_net() -> None:
    cfg = NetConfig(n_layers=2, d_hidden=16, batchnorm="before", activation="prelu", dropout=0.2)
    net = build_mlp(cfg, d_in=5, d_out=3)
    with torch.no_grad():
        net.hidden0.bn.running_mean.add_(1.0)
    rebuilt = build_mlp(cfg, d_in=5, d_out=3)
    rebuilt.load_state_dict(net.state_dict())  # strict: same keys and shapes
    x = torch.randn(8, 5)
    torch.testing.assert_close(rebuilt.eval()(x), net.eval()(x))
    assert "hidden0.linear.weight" in net.state_dict() and "out.bias" in net.state_dict()


def _trained_bn_net(batchnorm: str, dropout: float) -> nn.Module:
    """A net whose BN layers have non-trivial running stats and affine parameters."""
    net = build_mlp(NetConfig(n_layers=3, d_hidden=32, batchnorm=batchnorm, dropout=dropout, bn_momentum=0.5), d_in=6, d_out=2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-1.0, 1.0)
        net.train()
        for _ in range(5):
            net(torch.randn(128, 6) * 2 + 1)
    return net.eval()


@pytest.mark.parametrize("batchnorm", ["before", "after", "input"])
def test_fold_batchnorm_matches_in_eval(batchnorm: str) -> None:
    net = _trained_bn_net(batchnorm, dropout=0.3)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm1d) for m in net.modules())  # the original is untouched
    x = torch.randn(256, 6) * 2 + 1
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)
    assert count_parameters(folded) < count_parameters(net)


def test_fold_batchnorm_without_bn_is_a_copy() -> None:
    net = build_mlp(NetConfig(), d_in=4, d_out=1).eval()
    folded = fold_batchnorm(net)
    assert folded is not net
    x = torch.randn(10, 4)
    torch.testing.assert_close(folded(x), net(x))
