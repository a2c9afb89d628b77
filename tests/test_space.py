"""Search-space files: validation errors, conditional parameters, suggestions without training."""

from __future__ import annotations

import functools
import math
import random

import optuna
import pytest

from automl_dnn.errors import SpaceError
from automl_dnn.space import bundled_spaces, load_space, parse_space, settings_from_values, suggest
from automl_dnn.study import enqueue_defaults
from automl_dnn.tasks import TASKS


def _space(params: dict, **extra) -> object:
    return parse_space({"params": params, **extra})


@pytest.mark.parametrize("name", ["default", "selu", "quick"])
def test_bundled_spaces_load_and_enqueue_valid_trials(name: str) -> None:
    assert name in bundled_spaces()
    space = load_space(name)
    assert space.enqueue, "every bundled space starts from the practical defaults"
    for task in TASKS:
        assert space.first_trials(task), f"{name} has no first trial for {task}"
        for values in space.first_trials(task):
            settings = settings_from_values(suggest(optuna.trial.FixedTrial(values), space))
            assert settings.train.max_epochs > 0


def test_default_space_covers_every_technique() -> None:
    space = load_space("default")
    choices = {p.name: set(p.choices) for p in space.params if p.type == "categorical"}
    assert choices["activation"] >= {"relu", "leaky_relu", "rrelu", "prelu", "elu", "selu", "gelu", "silu", "mish", "tanh"}
    assert choices["optimizer"] == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw"}
    assert choices["schedule"] == {"none", "power", "exponential", "piecewise", "plateau", "onecycle", "flat_cosine"}
    assert choices["weight_averaging"] == {"none", "ema", "swa"}
    assert choices["init_policy"] == {"matched", "any"}
    assert 0.0 in choices["label_smoothing"] and max(choices["label_smoothing"]) > 0
    assert choices["batchnorm"] == {"none", "input", "before", "after"}
    assert choices["clip"] == {"none", "value", "norm"}
    assert choices["scaling"] == {"standard", "quantile", "robust"}
    assert choices["num_embedding"] == {"none", "plr", "ple"} and choices["k_ensemble"] == {1, 4, 8}
    assert choices["front_scale"] == {False, True}
    assert choices["target_transform"] == {"none", "log1p", "quantile"}
    fields = {p.field for p in space.params}
    assert {"l1", "l2", "max_norm", "dropout", "dropout_kind", "bn_momentum", "init_mode", "batch_size"} <= fields


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_layers": {"low": 1, "high": 3, "colour": 1}}, "unknown key 'colour'"),
        ({"n_layerz": {"low": 1, "high": 3}}, "unknown key 'n_layerz'"),
        ({"activation": {"choices": []}}, "non-empty list"),
        ({"n_layers": {"low": 5, "high": 2}}, "low <= high"),
        ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "log range must be > 0"),
        ({"lr": {"low": "a", "high": 0.1}}, "'low' must be a number"),
        ({"dropout": {"low": 0.0, "high": 0.5, "when": {"activation": "selu"}}}, "not a parameter defined above"),
        ({"activation": {"choices": ["relu"]}, "dropout": {"low": 0.0, "high": 0.5, "when": {"activation": "elu"}}},
         "not among its values"),
        ({"activation": {"type": "gaussian"}}, "unknown type"),
    ],
)
def test_invalid_spaces_are_refused_with_the_reason(params: dict, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        _space(params)


def test_unknown_top_level_key_and_bad_enqueue_are_refused() -> None:
    with pytest.raises(SpaceError, match="unknown key 'parms'"):
        parse_space({"parms": {}, "params": {"n_layers": 2}})
    with pytest.raises(SpaceError, match="outside"):
        _space({"n_layers": {"low": 1, "high": 3}}, enqueue=[{"n_layers": 9}])


def test_an_enqueued_trial_runs_only_for_the_tasks_it_names() -> None:
    space = _space({"n_layers": {"low": 1, "high": 3}},
                   enqueue=[{"n_layers": 1}, {"tasks": ["binary"], "n_layers": 2}, {"tasks": ["regression", "multiclass"],
                                                                                     "n_layers": 3}])
    assert space.first_trials("binary") == [{"n_layers": 1}, {"n_layers": 2}]
    assert space.first_trials("multiclass") == space.first_trials("regression") == [{"n_layers": 1}, {"n_layers": 3}]
    study = optuna.create_study()
    enqueue_defaults(study, space, "regression")
    assert [suggest(study.ask(), space)["n_layers"] for _ in range(2)] == [1, 3]


@pytest.mark.parametrize("tasks", [[], ["ranking"], "binary", None, [["binary"]]])
def test_an_enqueued_trial_with_bad_tasks_is_refused(tasks: object) -> None:
    with pytest.raises(SpaceError, match=r"enqueue\[0\]: 'tasks' must be a non-empty list of binary, multiclass, regression"):
        _space({"n_layers": {"low": 1, "high": 3}}, enqueue=[{"tasks": tasks, "n_layers": 2}])


def test_space_file_errors(tmp_path) -> None:
    with pytest.raises(SpaceError, match="does not exist"):
        load_space(tmp_path / "missing.yaml")
    with pytest.raises(SpaceError, match="unknown search space 'nope'"):
        load_space("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: {n_layers: [1, 2\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(bad)


def test_conditional_parameters_are_only_suggested_when_active() -> None:
    space = _space(
        {
            "activation": {"choices": ["relu", "leaky_relu", "selu"]},
            "leaky_alpha": {"low": 0.01, "high": 0.3, "field": "activation_alpha", "when": {"activation": "leaky_relu"}},
            "init": {"choices": ["he_normal"], "when": {"activation": {"not": ["selu"]}}},
            "selu_init": {"value": "lecun_normal", "field": "init", "when": {"activation": "selu"}},
        }
    )
    relu = suggest(optuna.trial.FixedTrial({"activation": "relu", "init": "he_normal"}), space)
    assert relu == {"activation": "relu", "init": "he_normal"}
    leaky = suggest(optuna.trial.FixedTrial({"activation": "leaky_relu", "leaky_alpha": 0.2, "init": "he_normal"}), space)
    assert leaky["activation_alpha"] == 0.2
    selu = suggest(optuna.trial.FixedTrial({"activation": "selu"}), space)
    assert selu == {"activation": "selu", "init": "lecun_normal"}


def test_study_records_only_active_params_and_settings_split() -> None:
    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
        trial = study.ask()
        settings = settings_from_values(suggest(trial, space), seed=3)
        study.tell(trial, 0.0)
        params = study.trials[-1].params
        assert ("leaky_alpha" in params) == (params["activation"] == "leaky_relu")
        assert ("l1" in params) == (params["penalty"] in ("l1", "l1_l2"))
        if params["activation"] == "selu":
            assert settings.net.init == "lecun_normal" and settings.net.dropout_kind == "alpha"
            assert settings.net.batchnorm == "none"
        assert settings.train.seed == 3


def test_fingerprint_changes_with_content() -> None:
    a = _space({"n_layers": {"low": 1, "high": 3}})
    b = _space({"n_layers": {"low": 1, "high": 4}})
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == _space({"n_layers": {"low": 1, "high": 3}}).fingerprint()


class _RandomTrial:
    """Optuna's ``suggest_*`` drawing uniformly from a seeded generator (no study: thousands per second)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.params = rng, {}

    def suggest_categorical(self, name: str, choices: list) -> object:
        self.params[name] = self.rng.choice(choices)
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        self.params[name] = self.rng.randrange(low, high + 1, step)
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        self.params[name] = math.exp(self.rng.uniform(math.log(low), math.log(high))) if log else self.rng.uniform(low, high)
        return self.params[name]


@functools.lru_cache(maxsize=None)
def _random_settings(name: str, n: int = 400) -> tuple[tuple[dict, object], ...]:
    """(parameters, settings) of n random trials of a bundled space."""
    space, rng, out = load_space(name), random.Random(0), []
    for _ in range(n):
        trial = _RandomTrial(rng)
        settings = settings_from_values(suggest(trial, space))
        out.append((trial.params, settings))
    return tuple(out)


RELU_LIKE = {"relu", "leaky_relu", "rrelu", "prelu", "elu", "gelu", "silu", "mish"}


def test_matched_init_follows_the_activation_family() -> None:
    seen = set()
    for params, settings in _random_settings("default"):
        activation, init = settings.net.activation, settings.net.init
        if activation == "selu":
            assert "init_policy" not in params and init == "lecun_normal"
        elif params["init_policy"] == "matched":
            family = {"he_normal", "he_uniform"} if activation in RELU_LIKE else {"glorot_normal", "glorot_uniform"}
            assert init in family, (activation, init)
            seen.add((activation == "tanh", init))
        else:
            assert params["init"] == init  # any: today's full choice
    assert {(False, "he_normal"), (False, "he_uniform"), (True, "glorot_normal"), (True, "glorot_uniform")} <= seen


@pytest.mark.parametrize("name", ["default", "selu"])
def test_momentum_is_not_searched_under_onecycle(name: str) -> None:
    searched = 0
    for params, settings in _random_settings(name):
        if settings.train.schedule == "onecycle":
            assert "momentum" not in params
        searched += "momentum" in params
    assert searched > 0


def test_flat_cosine_comes_with_the_adam_family_adamw_first() -> None:
    space = load_space("default")
    fc = next(p for p in space.params if p.name == "fc_optimizer")
    assert fc.choices[0] == "adamw" and set(fc.choices) <= {"adamw", "adam", "nadam"}
    n_flat = 0
    for params, settings in _random_settings("default"):
        train = settings.train
        if train.schedule == "flat_cosine":
            n_flat += 1
            assert train.optimizer in fc.choices and 0.25 <= train.flat_fraction <= 0.75
            assert "fc_lr" in params and "optimizer" not in params
            assert ("fc_weight_decay" in params) == (train.optimizer == "adamw")
    assert n_flat > 0


def test_schedule_lengths_are_fractions_of_the_trial() -> None:
    for name in ("default", "selu"):
        fields = {p.field for p in load_space(name).params}
        assert not fields & {"power_s", "exp_s", "piecewise_epochs"}, name
    fields = {p.field for p in load_space("default").params}
    assert {"power_frac", "exp_frac", "piecewise_fracs"} <= fields


@pytest.mark.parametrize("name", ["default", "selu"])
def test_penalty_upper_ends_cannot_swamp_the_data_loss_at_init(name: str) -> None:
    """The penalty of the largest net of the space at its init, at the upper ends of l1 / l2, stays
    under a tenth of ln 2 (the log-loss of a binary net that knows nothing)."""
    import torch

    from automl_dnn.config import NetConfig
    from automl_dnn.model import build_mlp
    from automl_dnn.train import penalized_weights

    space = load_space(name)
    high = {p.field: p.high for p in space.params if p.field in ("l1", "l2")}
    largest = {p.field: (p.high if p.type == "int" else max(p.choices)) for p in space.params
               if p.field in ("n_layers", "d_hidden", "first_layer_mult") and p.type in ("int", "categorical")}
    init = "lecun_normal" if name == "selu" else "he_normal"
    torch.manual_seed(0)
    net = build_mlp(NetConfig(**largest, init=init, activation="selu" if name == "selu" else "relu"), d_in=100, d_out=1)
    weights = penalized_weights(net)
    with torch.no_grad():
        penalty = high.get("l1", 0.0) * float(sum(w.abs().sum() for w in weights))
        penalty += high.get("l2", 0.0) * float(sum(w.pow(2).sum() for w in weights))
    assert 0 < penalty <= 0.1 * math.log(2)


@pytest.mark.parametrize("task", TASKS)
def test_the_default_space_starts_from_its_portfolio(task: str) -> None:
    """TabM-like, MLP-PLR, the practical default and RealMLP-like, in that order (benchmarks/portfolio.py), then
    TabM-mini-like, SELU (with what self-normalizing needs) and quantile + BatchNorm; regression takes the TabM-like
    and RealMLP-like trials without dropout, and the RealMLP-like and TabM-mini-like ones with wider PLR frequencies."""
    space = load_space("default")
    first = [settings_from_values(suggest(optuna.trial.FixedTrial(values), space))
             for values in space.first_trials(task)]
    assert [(s.net.k_ensemble, s.net.num_embedding, s.scaling) for s in first] == [
        (4, "ple", "quantile"), (1, "plr", "quantile"), (1, "none", "standard"), (1, "plr", "robust"),
        (4, "plr", "quantile"), (1, "none", "standard"), (1, "none", "quantile")]
    assert first[0].net.dropout == (0.0 if task == "regression" else 0.1)
    assert (first[3].net.activation, first[3].net.dropout) == ("mish", 0.0 if task == "regression" else 0.15)
    assert (first[3].net.plr_sigma, first[4].net.plr_sigma) == ((0.3, 0.3) if task == "regression" else (0.1, 0.05))
    assert (first[1].net.dropout, first[1].train.weight_decay) == (0.1, 1e-5)
    selu, batchnorm = first[5].net, first[6].net
    assert (selu.activation, selu.init, selu.batchnorm, selu.dropout_kind) == ("selu", "lecun_normal", "none", "alpha")
    assert (batchnorm.batchnorm, first[6].train.batch_size) == ("before", 512)
    default = first[2]
    assert (default.train.optimizer, default.train.schedule, default.net.activation, default.net.init) == (
        "nadam", "onecycle", "elu", "he_normal")
    assert {s.train.optimizer for s in first} == {"adamw", "nadam"}
    assert all(s.target_transform == "none" for s in first)
