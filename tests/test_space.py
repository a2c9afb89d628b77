"""Search-space files: validation errors, conditional parameters, suggestions without training."""

from __future__ import annotations

import optuna
import pytest

from automl_dnn.errors import SpaceError
from automl_dnn.space import bundled_spaces, load_space, parse_space, settings_from_values, suggest


def _space(params: dict, **extra) -> object:
    return parse_space({"params": params, **extra})


@pytest.mark.parametrize("name", ["default", "selu", "quick"])
def test_bundled_spaces_load_and_enqueue_valid_trials(name: str) -> None:
    assert name in bundled_spaces()
    space = load_space(name)
    assert space.enqueue, "every bundled space starts from the practical defaults"
    for values in space.enqueue:
        settings = settings_from_values(suggest(optuna.trial.FixedTrial(values), space))
        assert settings.train.max_epochs > 0


def test_default_space_covers_every_technique() -> None:
    space = load_space("default")
    choices = {p.name: set(p.choices) for p in space.params if p.type == "categorical"}
    assert choices["activation"] >= {"relu", "leaky_relu", "rrelu", "prelu", "elu", "selu", "gelu", "silu", "mish", "tanh"}
    assert choices["optimizer"] == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw"}
    assert choices["schedule"] == {"none", "power", "exponential", "piecewise", "plateau", "onecycle"}
    assert choices["batchnorm"] == {"none", "input", "before", "after"}
    assert choices["clip"] == {"none", "value", "norm"}
    assert choices["scaling"] == {"standard", "quantile"}
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
