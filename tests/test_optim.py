"""Tests for optimizers by name and the hand-written lr schedules (TECHNIQUES.md sections 5-6)."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from automl_dnn import optim
from automl_dnn.model import NetConfig, build_mlp
from automl_dnn.optim import (
    OPTIMIZERS,
    Plateau,
    Schedule,
    epoch_at,
    exponential_lr,
    flat_cosine_lr,
    make_optimizer,
    onecycle_lr,
    onecycle_momentum,
    piecewise_lr,
    power_lr,
    replayed_plateau,
    set_momentum,
    split_decay_groups,
)
from automl_dnn.train import TrainConfig




def _net() -> nn.Module:
    torch.manual_seed(0)
    return build_mlp(NetConfig(n_layers=2, d_hidden=8, batchnorm="before", activation="prelu"), d_in=4, d_out=1)


# --------------------------------------------------------------------------- optimizers

OPT_CASES = {
    "sgd": (torch.optim.SGD, {"momentum": 0.0, "nesterov": False}),
    "momentum": (torch.optim.SGD, {"momentum": 0.8, "nesterov": False}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
    "adagrad": (torch.optim.Adagrad, {}),
    "rmsprop": (torch.optim.RMSprop, {"alpha": 0.7, "momentum": 0.0}),
    "adam": (torch.optim.Adam, {"betas": (0.85, 0.99)}),
    "adamax": (torch.optim.Adamax, {"betas": (0.85, 0.99)}),
    "nadam": (torch.optim.NAdam, {"betas": (0.85, 0.99)}),
    "adamw": (torch.optim.AdamW, {"betas": (0.85, 0.99)}),
}


def test_every_name_is_covered() -> None:
    assert set(OPT_CASES) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", list(OPT_CASES))
def test_make_optimizer_hyperparameters(name: str) -> None:
    cls, expected = OPT_CASES[name]
    config = TrainConfig(lr=0.05, momentum=0.8, rho=0.7, beta1=0.85, beta2=0.99, weight_decay=0.1)
    opt = make_optimizer(name, _net(), config)
    assert type(opt) is cls
    for group in opt.param_groups:
        assert group["lr"] == 0.05
        for key, value in expected.items():
            assert group[key] == value
        if name != "adamw":  # L2 is a loss term; only AdamW decays, and decoupled
            assert group.get("weight_decay", 0.0) == 0.0


FUSED_ON_CPU = {"sgd", "momentum", "nesterov", "adagrad", "adam", "adamw"}


@pytest.mark.parametrize("name", list(OPT_CASES))
def test_optimizers_take_their_fused_or_multi_tensor_kernel_and_step_as_the_plain_loop(name: str) -> None:
    cls, expected = OPT_CASES[name]
    config = TrainConfig(lr=0.05, momentum=0.8, rho=0.7, beta1=0.85, beta2=0.99, weight_decay=0.1)
    fast_net, plain_net = _net(), _net()
    fast = make_optimizer(name, fast_net, config)
    assert fast.defaults["fused" if name in FUSED_ON_CPU else "foreach"] is True
    groups = [{**g, "params": list(plain_net.parameters())[:0]} for g in fast.param_groups]  # same hyperparameters
    plain_params = dict(plain_net.named_parameters())
    index = {id(p): n for n, p in fast_net.named_parameters()}
    for group, source in zip(groups, fast.param_groups):
        group["params"] = [plain_params[index[id(p)]] for p in source["params"]]
        for key in ("fused", "foreach"):
            group.pop(key, None)
    plain = cls(groups, foreach=False)
    torch.manual_seed(1)
    for _ in range(3):
        for a, b in zip(fast_net.parameters(), plain_net.parameters()):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        fast.step()
        plain.step()
    for a, b in zip(fast_net.parameters(), plain_net.parameters()):
        torch.testing.assert_close(a, b)


class _OnDevice:
    """A parameter as ``step_kernel`` sees it: its device's type and whether it is a float tensor."""

    def __init__(self, device: str, floating: bool = True) -> None:
        self.device, self.floating = SimpleNamespace(type=device), floating

    def is_floating_point(self) -> bool:
        return self.floating


@pytest.mark.parametrize(("optimizer", "devices", "floating", "kernel"), [
    (torch.optim.AdamW, ["cuda", "cuda"], True, "fused"),
    (torch.optim.Adagrad, ["cuda"], True, "foreach"),  # Adagrad's fused kernel is the CPU's only
    (torch.optim.Adagrad, ["cpu"], True, "fused"),
    (torch.optim.NAdam, ["cpu"], True, "foreach"),  # no fused kernel
    (torch.optim.Adam, ["cpu", "cuda"], True, "foreach"),  # one device or none
    (torch.optim.SGD, ["mps"], True, "foreach"),
    (torch.optim.SGD, ["cpu"], False, "foreach"),
])
def test_the_fused_kernel_is_chosen_from_the_parameters_devices(optimizer: type, devices: list[str], floating: bool,
                                                               kernel: str) -> None:
    params = [{"params": [_OnDevice(d, floating) for d in devices]}]
    assert optim.step_kernel(optimizer, params) == {kernel: True}


def test_unknown_optimizer_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'lion'.*sgd, momentum, nesterov"):
        make_optimizer("lion", _net(), TrainConfig())


@pytest.mark.parametrize(("field", "value"), [("lr", 0.0), ("momentum", 1.0), ("beta1", -0.1), ("weight_decay", -1.0)])
def test_bad_hyperparameters_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{field}={value}"):
        make_optimizer("adam", _net(), TrainConfig(**{field: value}))


def test_adamw_decays_matrices_only() -> None:
    net = _net()
    groups = split_decay_groups(net, 0.1)
    decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == {id(p) for p in net.parameters() if p.dim() >= 2}
    assert len(decay) == 3  # two hidden Linear weights + the head; no bias, BN or PReLU

    opt = make_optimizer("adamw", net, TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.5))
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: only the decoupled decay can move a parameter
    opt.step()
    for name, p in net.named_parameters():
        expected = before[name] * (1 - 0.1 * 0.5) if p.dim() >= 2 else before[name]
        torch.testing.assert_close(p.detach(), expected)


@pytest.mark.parametrize("embedding", ["plr", "ple"])
def test_adamw_never_decays_biases_or_embedding_frequencies_of_any_shape(embedding: str) -> None:
    """TabM's per-member biases (k, d), the embeddings' per-column biases and PLR's frequencies are 2-D too:
    a rule on p.dim() alone decayed them (techniques.md §5: never biases; TabM's reference: not the embeddings)."""
    torch.manual_seed(0)
    config = NetConfig(n_layers=2, d_hidden=8, k_ensemble=4, num_embedding=embedding, d_embedding=4, ple_bins=4)
    net = build_mlp(config, d_in=3, d_out=1)
    opt = make_optimizer("adamw", net, TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.5))
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)  # only the decoupled decay can move a parameter
    opt.step()
    moved = {name for name, p in net.named_parameters() if not torch.equal(p.detach(), before[name])}
    kept = {name for name in before if name.endswith("bias") or "periodic" in name or "linear0" in name}
    assert kept and not moved & kept
    assert {"hidden0.linear.weight", "hidden1.linear.weight", "out.weight"} <= moved


def test_a_replayed_plateau_cuts_where_its_trial_did_at_the_scaled_epochs() -> None:
    trial = TrainConfig(schedule="plateau", lr=0.01, max_epochs=10)
    lrs = [0.01] * 3 + [0.005] * 4 + [0.0025] * 3
    copy = replayed_plateau(trial, lrs, 2.0)
    schedule = Schedule(dataclasses.replace(copy, max_epochs=20), total_steps=200)
    assert [schedule.lr(e) for e in range(20)] == pytest.approx([0.01] * 6 + [0.005] * 8 + [0.0025] * 6)
    assert replayed_plateau(TrainConfig(schedule="onecycle"), lrs, 2.0) == TrainConfig(schedule="onecycle")
    assert replayed_plateau(trial, [], 2.0) == trial  # a trial saved before its rates were recorded


def test_set_momentum_targets_the_right_hyperparameter() -> None:
    config = TrainConfig(beta2=0.99)
    adam = make_optimizer("adam", _net(), config)
    set_momentum(adam, "adam", 0.85)
    assert all(g["betas"] == (0.85, 0.99) for g in adam.param_groups)
    sgd = make_optimizer("momentum", _net(), config)
    set_momentum(sgd, "momentum", 0.95)
    assert all(g["momentum"] == 0.95 for g in sgd.param_groups)
    plain = make_optimizer("sgd", _net(), config)
    set_momentum(plain, "sgd", 0.95)  # no momentum to cycle: unchanged
    assert all(g["momentum"] == 0.0 for g in plain.param_groups)


# --------------------------------------------------------------------------- pure schedules


def test_power_schedule() -> None:
    assert power_lr(0, lr0=0.1, s=100) == pytest.approx(0.1)
    assert power_lr(100, lr0=0.1, s=100) == pytest.approx(0.05)
    assert power_lr(300, lr0=0.1, s=100, c=2.0) == pytest.approx(0.1 / 16)


def test_exponential_schedule() -> None:
    assert exponential_lr(0, lr0=0.1, s=50) == pytest.approx(0.1)
    assert exponential_lr(50, lr0=0.1, s=50) == pytest.approx(0.01)
    assert exponential_lr(125, lr0=0.1, s=50) == pytest.approx(0.1 * 0.1**2.5)


def test_piecewise_boundaries() -> None:
    lrs = [piecewise_lr(e, lr0=0.01, boundaries=[5, 15], factors=[1.0, 0.5, 0.1]) for e in range(20)]
    assert lrs[:5] == pytest.approx([0.01] * 5)
    assert lrs[5:15] == pytest.approx([0.005] * 10)
    assert lrs[15:] == pytest.approx([0.001] * 5)


@pytest.mark.parametrize(
    ("t", "lr", "momentum"),
    [
        (0, 1.0 / 25, 0.95),
        (225, 0.52, 0.90),  # halfway up
        (450, 1.0, 0.85),  # 45%: the peak
        (675, 0.52, 0.90),  # halfway down
        (900, 1.0 / 25, 0.95),  # 90%
        (950, (1.0 / 25 + 1.0 / 25_000) / 2, 0.95),
        (1000, 1.0 / 25_000, 0.95),  # 100%
    ],
)
def test_onecycle(t: int, lr: float, momentum: float) -> None:
    assert onecycle_lr(t, lr_max=1.0, total_steps=1000) == pytest.approx(lr)
    assert onecycle_momentum(t, total_steps=1000) == pytest.approx(momentum)


def test_plateau_reduces_after_patience_and_restarts_counting() -> None:
    plateau = Plateau(lr0=1.0, factor=0.5, patience=2)
    lrs = [plateau.update(loss) for loss in [1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.8, 0.85]]
    # 0.95 and 0.92 do not beat 0.9 -> halve; 0.91, 0.93 -> halve again; 0.8 improves; 0.85 is one miss.
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25]


@pytest.mark.parametrize(("factor", "patience"), [(1.0, 2), (0.5, 0)])
def test_plateau_refuses_bad_values(factor: float, patience: int) -> None:
    with pytest.raises(ValueError):
        Plateau(lr0=1.0, factor=factor, patience=patience)


# --------------------------------------------------------------------------- Schedule from a config


def test_schedule_from_config_granularity_and_values() -> None:
    steps = 200
    cases = {
        "none": (False, 0.1),
        "power": (True, power_lr(50, lr0=0.1, s=20, c=1.5)),
        "exponential": (True, exponential_lr(50, lr0=0.1, s=30)),
        "onecycle": (True, onecycle_lr(50, lr_max=0.1, total_steps=steps)),
        "piecewise": (False, 0.1 * 0.1),
        "plateau": (False, 0.1),
        "flat_cosine": (True, 0.1),  # 50 of 200 steps: still flat
    }
    for name, (per_batch, lr_at_50) in cases.items():
        config = TrainConfig(lr=0.1, schedule=name, power_s=20, power_c=1.5, exp_s=30, piecewise_epochs=[5, 15])
        schedule = Schedule(config, total_steps=steps)
        assert schedule.per_batch is per_batch, name
        assert schedule.lr(50) == pytest.approx(lr_at_50), name
        assert (schedule.momentum(50) is not None) == (name == "onecycle"), name


def test_schedule_plateau_is_fed_by_update() -> None:
    schedule = Schedule(TrainConfig(lr=0.1, schedule="plateau", plateau_patience=1, plateau_factor=0.1), total_steps=10)
    schedule.update(1.0)
    assert schedule.lr(1) == pytest.approx(0.1)
    schedule.update(1.0)
    assert schedule.lr(2) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedule": "cosine"}, "onecycle"),
        ({"schedule": "power", "power_s": 0.0}, "power_s"),
        ({"schedule": "exponential", "exp_s": -1.0}, "exp_s"),
        ({"schedule": "piecewise", "piecewise_epochs": [5], "piecewise_factors": [1.0]}, "one more factor"),
        ({"schedule": "piecewise", "piecewise_epochs": [9, 3], "piecewise_factors": [1.0, 0.5, 0.1]}, "increasing"),
    ],
)
def test_bad_schedules_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Schedule(TrainConfig(**kwargs), total_steps=10)


# --------------------------------------------------------------------------- flat_cosine, fractions, phases


@pytest.mark.parametrize(
    ("t", "lr"),
    [
        (0, 0.1),
        (250, 0.1),
        (500, 0.1),  # the end of the flat half
        (625, 0.1 * (1 + math.cos(math.pi / 4)) / 2),  # a quarter into the cosine: 0.0854
        (750, 0.05),  # halfway down
        (875, 0.1 * (1 + math.cos(3 * math.pi / 4)) / 2),  # 0.0146
        (999, 0.1 * (1 + math.cos(math.pi * 499 / 500)) / 2),  # the last step the trainer takes: > 0
        (1000, 0.0),
    ],
)
def test_flat_cosine(t: int, lr: float) -> None:
    assert flat_cosine_lr(t, lr0=0.1, total_steps=1000, flat_fraction=0.5) == pytest.approx(lr, abs=1e-15)
    schedule = Schedule(TrainConfig(lr=0.1, schedule="flat_cosine", flat_fraction=0.5), total_steps=1000)
    assert schedule.per_batch and schedule.momentum(t) is None
    assert schedule.lr(t) == pytest.approx(lr, abs=1e-15)


def test_flat_cosine_without_a_flat_phase_is_a_plain_cosine() -> None:
    assert flat_cosine_lr(0, lr0=1.0, total_steps=10, flat_fraction=0.0) == 1.0
    assert flat_cosine_lr(5, lr0=1.0, total_steps=10, flat_fraction=0.0) == pytest.approx(0.5)
    assert flat_cosine_lr(999, lr0=0.1, total_steps=1000, flat_fraction=0.5) > 0


@pytest.mark.parametrize("flat_fraction", [1.0, -0.1])
def test_flat_fraction_must_leave_a_cosine(flat_fraction: float) -> None:
    with pytest.raises(ValueError, match="flat_fraction"):
        Schedule(TrainConfig(schedule="flat_cosine", flat_fraction=flat_fraction), total_steps=10)


@pytest.mark.parametrize(("fraction", "epochs", "epoch"), [(0.45, 10, 5), (0.45, 20, 9), (0.45, 5, 3), (0.5, 7, 4),
                                                           (0.0, 10, 0), (1.0, 10, 10)])
def test_epoch_at_is_the_first_epoch_starting_at_or_after_the_fraction(fraction: float, epochs: int, epoch: int) -> None:
    assert epoch_at(fraction, epochs) == epoch


@pytest.mark.parametrize(
    ("kwargs", "patience_start", "averaging_start"),
    [
        # averaging from the peak (step 0.45 * 20 epochs = epoch 9's start); patience from half way down from
        # it: 0.45 + 0.55 / 2 = 0.725 of 20 epochs = 14.5 -> epoch 15
        ({"schedule": "onecycle", "max_epochs": 20}, 15, 9),
        ({"schedule": "onecycle", "max_epochs": 10}, 8, 5),  # the peak lies inside epoch 4: averaging from epoch 5 on
        ({"schedule": "flat_cosine", "flat_fraction": 0.5, "max_epochs": 10}, 8, 5),  # 0.75 * 10 = 7.5 -> epoch 8
        ({"schedule": "flat_cosine", "flat_fraction": 0.3, "max_epochs": 12}, 8, 4),  # 0.65 * 12 = 7.8; 3.6 -> 4
        ({"schedule": "flat_cosine", "flat_fraction": 0.9, "max_epochs": 5}, 5, 4),  # averages the last epoch at least
        ({"schedule": "none", "max_epochs": 10}, 0, 5),  # no warm-up: patience counts at once; averages the last half
        ({"schedule": "exponential", "max_epochs": 7}, 0, 4),
        ({"schedule": "plateau", "max_epochs": 1}, 0, 0),
    ],
)
def test_schedule_phases_in_epochs(kwargs: dict, patience_start: int, averaging_start: int) -> None:
    schedule = Schedule(TrainConfig(**kwargs), total_steps=kwargs["max_epochs"] * 7)
    assert schedule.patience_start_epoch() == patience_start
    assert schedule.averaging_start_epoch() == averaging_start


def test_fractions_override_the_absolute_steps_and_epochs() -> None:
    steps = 400
    power = Schedule(TrainConfig(lr=0.1, schedule="power", power_s=1.0, power_frac=0.25, power_c=2.0), total_steps=steps)
    assert power.lr(300) == pytest.approx(power_lr(300, lr0=0.1, s=100, c=2.0))  # s = 0.25 * 400
    exp = Schedule(TrainConfig(lr=0.1, schedule="exponential", exp_s=1.0, exp_frac=0.5), total_steps=steps)
    assert exp.lr(400) == pytest.approx(0.1 * 0.1**2)  # s = 200: x0.1 twice over the run
    config = TrainConfig(lr=1.0, schedule="piecewise", piecewise_epochs=[1, 2], piecewise_fracs=[0.5, 0.75],
                         piecewise_factors=[1.0, 0.5, 0.1], max_epochs=8)
    piecewise = Schedule(config, total_steps=steps)
    assert piecewise.piecewise_epochs == [4, 6]
    assert [piecewise.lr(e) for e in range(8)] == pytest.approx([1.0] * 4 + [0.5] * 2 + [0.1] * 2)
    capped = Schedule(TrainConfig(**{**config.__dict__, "max_epochs": 10}), total_steps=steps)
    assert capped.piecewise_epochs == [5, 8]  # the same shape on a budget-capped trial (7.5 -> 8)


def test_absolute_schedule_fields_still_work_without_fractions() -> None:
    config = TrainConfig(lr=0.1, schedule="power", power_s=20.0)
    assert config.power_frac is None and Schedule(config, total_steps=1000).power_s == 20.0
    assert Schedule(TrainConfig(schedule="piecewise"), total_steps=10).piecewise_epochs == [5, 15]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedule": "power", "power_frac": 0.0}, "power_frac"),
        ({"schedule": "exponential", "exp_frac": -1.0}, "exp_frac"),
        ({"schedule": "piecewise", "piecewise_fracs": [0.5], "piecewise_factors": [1.0]}, "one more factor"),
        ({"schedule": "piecewise", "piecewise_fracs": [0.8, 0.5], "piecewise_factors": [1.0, 0.5, 0.1]}, "increasing"),
        ({"schedule": "piecewise", "piecewise_fracs": [0.5, 1.5], "piecewise_factors": [1.0, 0.5, 0.1]}, r"\[0, 1\]"),
    ],
)
def test_bad_fractions_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Schedule(TrainConfig(**kwargs), total_steps=10)
