"""The recent tabular-DL layers inside the net: numeric embeddings (PLR, PLE) and TabM's k members.

Exact values where the formulas give them (a PLE code at a bin edge), the shapes and the averaging
TabM promises, and the round trip a saved net needs: rebuilt from its config, then its weights loaded.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tabm
import torch

from automl_dnn.config import NetConfig, TrainConfig
from automl_dnn.model import FrontScale, build_mlp, quantile_bins, tree_bins
from automl_dnn.optim import make_optimizer, set_lr
from automl_dnn.train import TrainData, data_loss, penalized_weights, predict, train


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _ple_net(bins: list[torch.Tensor], d_in: int, **extra: object) -> torch.nn.Module:
    config = NetConfig(n_layers=1, d_hidden=8, num_embedding="ple", d_embedding=4,
                       embedded_columns=list(range(len(bins))), bin_counts=[len(b) - 1 for b in bins], **extra)
    return build_mlp(config, d_in=d_in, d_out=1, bins=bins)


def test_ple_code_at_a_bin_edge_and_inside_a_bin() -> None:
    """Bins [0, 1, 2, 4]: x = 2 fills the first two bins and starts the third; x = 3 fills it halfway."""
    net = _ple_net([torch.tensor([0.0, 1.0, 2.0, 4.0])], d_in=1)
    code = net.embed.num_embed.impl(torch.tensor([[2.0], [3.0], [0.5], [-1.0]]))
    expected = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.5], [0.5, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    torch.testing.assert_close(code[:, 0, :], expected)


def test_quantile_bins_come_from_the_training_rows() -> None:
    X = torch.arange(101, dtype=torch.float32)[:, None]  # 0..100: quartiles at 0, 25, 50, 75, 100
    (edges,) = quantile_bins(X, n_bins=4)
    torch.testing.assert_close(edges, torch.tensor([0.0, 25.0, 50.0, 75.0, 100.0]))


def test_tree_bins_split_where_the_target_changes() -> None:
    """Target-aware bins: a column whose class flips at 29.5 gets an edge there, which quartiles miss; with
    two leaves allowed, that is the only edge inside the column's range."""
    X = torch.arange(1000, dtype=torch.float32)[:, None] / 10  # 0.0 .. 99.9
    flips = (X[:, 0] >= 29.5).long()
    (edges,) = tree_bins(X, flips, n_bins=2, regression=False)
    torch.testing.assert_close(edges, torch.tensor([0.0, 29.45, 99.9]))
    steps = torch.where(X[:, 0] < 70.0, 0.0, 3.0) + torch.where(X[:, 0] < 10.0, -1.0, 0.0)
    (edges,) = tree_bins(X, steps, n_bins=3, regression=True)
    torch.testing.assert_close(edges, torch.tensor([0.0, 9.95, 69.95, 99.9]))


def test_embeddings_apply_to_the_given_columns_and_pass_the_others() -> None:
    config = NetConfig(n_layers=1, d_hidden=8, num_embedding="plr", d_embedding=5, embedded_columns=[0, 2])
    net = build_mlp(config, d_in=4, d_out=1)
    assert net.embed.d_out == 2 * 5 + 2 and net.hidden0.linear.in_features == 12
    x = torch.randn(3, 4)
    y = x.clone()
    y[:, 1] += 1.0  # a passed-through column reaches the first layer as it is
    delta = net.embed(y) - net.embed(x)
    torch.testing.assert_close(delta[:, :10], torch.zeros(3, 10))
    torch.testing.assert_close(delta[:, 10], torch.ones(3))


def test_plr_frequencies_spread_from_plr_sigma_to_plr_sigma_max() -> None:
    """plr_sigma_max: frequency j of every column starts from N(0, sigma_j^2), sigma_j geometric from
    plr_sigma (j = 0) to plr_sigma_max (the last); without it every frequency starts at plr_sigma."""
    config = NetConfig(n_layers=1, d_hidden=8, num_embedding="plr", plr_frequencies=3, plr_sigma=0.01,
                       plr_sigma_max=1.0, embedded_columns=list(range(4000)))
    weight = build_mlp(config, d_in=4000, d_out=1).embed.num_embed.periodic.weight  # (columns, frequencies)
    spread = weight.std(dim=0) / torch.tensor([0.01, 0.1, 1.0])
    torch.testing.assert_close(spread, torch.full((3,), 0.986), atol=0.04, rtol=0)  # 3-sigma truncation
    assert weight.abs().max(dim=0).values.le(torch.tensor([0.03, 0.3, 3.0]) + 1e-6).all()
    single = build_mlp(dataclasses.replace(config, plr_sigma_max=0.0), d_in=4000, d_out=1)
    stds = single.embed.num_embed.periodic.weight.std(dim=0)
    torch.testing.assert_close(stds, torch.full((3,), 0.00986), atol=4e-4, rtol=0)
    with pytest.raises(ValueError, match="plr_sigma_max must be 0 or >= plr_sigma"):
        build_mlp(dataclasses.replace(config, plr_sigma_max=0.005), d_in=4000, d_out=1)


@pytest.mark.parametrize("kind", ["plr", "ple"])
def test_a_saved_embedding_net_is_rebuilt_from_its_config(kind: str) -> None:
    X = torch.randn(200, 3)
    bins = quantile_bins(X, 10) if kind == "ple" else None
    config = NetConfig(n_layers=2, d_hidden=8, num_embedding=kind, embedded_columns=[0, 1, 2],
                       bin_counts=None if bins is None else [len(b) - 1 for b in bins], k_ensemble=2)
    net = build_mlp(config, d_in=3, d_out=2, bins=bins).eval()
    rebuilt = build_mlp(config, d_in=3, d_out=2)  # placeholder bins: the state overwrites them
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(X), net(X))


def test_tabm_members_differ_and_predict_returns_the_mean_of_their_probabilities() -> None:
    net = build_mlp(NetConfig(n_layers=2, d_hidden=16, k_ensemble=4), d_in=5, d_out=3).eval()
    X = np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32)
    with torch.no_grad():
        members = torch.softmax(net(torch.as_tensor(X)), dim=-1)  # (50, 4, 3)
    assert members.shape == (50, 4, 3)
    assert (members[:, 0] - members[:, 1]).abs().max() > 1e-3, "the random-sign adapters make members differ"
    np.testing.assert_allclose(predict(net, X, task="multiclass"), members.mean(dim=1).numpy(), rtol=1e-5, atol=1e-6)


def test_tabm_trains_on_the_mean_of_the_member_losses() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = build_mlp(NetConfig(n_layers=1, d_hidden=8, k_ensemble=3), d_in=4, d_out=1)
    out = net(torch.as_tensor(X))  # (120, 3, 1)
    per_member = [torch.nn.functional.binary_cross_entropy_with_logits(out[:, j, 0], torch.as_tensor(y).float())
                  for j in range(3)]
    torch.testing.assert_close(data_loss(out, torch.as_tensor(y).float(), None, "binary"),
                               torch.stack(per_member).mean())
    result = train(net, TrainData(X[:90], y[:90], X[90:], y[90:]), TrainConfig(max_epochs=3, max_norm=1.0),
                   task="binary", device="cpu")
    assert result.status in ("completed", "early_stopped")
    shared = [w for w in penalized_weights(net) if w is net.hidden0.linear.weight]
    assert shared and shared[0].norm(dim=1).max() <= 1.0 + 1e-5, "max-norm holds on TabM's shared weight"


@pytest.mark.parametrize("extra", [{"batchnorm": "before", "activation": "prelu"}, {"batchnorm": "after", "dropout": 0.2}])
def test_tabm_members_share_batchnorm_and_prelu(extra: dict) -> None:
    net = build_mlp(NetConfig(n_layers=2, d_hidden=8, k_ensemble=3, **extra), d_in=4, d_out=2)
    X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    result = train(net, TrainData(X[:48], y[:48], X[48:], y[48:]), TrainConfig(max_epochs=2), task="multiclass",
                   device="cpu")
    assert result.status == "completed" and net(torch.as_tensor(X)).shape == (64, 3, 2)
    bn = net.hidden0.bn.layer
    assert bn.num_features == 8 and bn.running_mean.abs().sum() > 0, "BatchNorm saw the members' rows"


@pytest.mark.parametrize(("extra", "message"), [
    ({"k_ensemble": 0}, "k_ensemble"),
    ({"num_embedding": "plr", "embedded_columns": [0, 9]}, "embedded_columns"),
    ({"num_embedding": "fourier"}, "num_embedding"),
])
def test_impossible_combinations_are_refused(extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_mlp(NetConfig(n_layers=1, d_hidden=4, **extra), d_in=3, d_out=1)


def test_tabm_layers_are_the_packages() -> None:
    net = build_mlp(NetConfig(n_layers=2, d_hidden=8, k_ensemble=4), d_in=3, d_out=1)
    assert isinstance(net.hidden0.linear, tabm.LinearBatchEnsemble)
    assert isinstance(net.out, tabm.LinearEnsemble)
    assert set(net.hidden0.linear.r.unique().tolist()) == {-1.0, 1.0}, "TabM's first adapter: random signs"
    assert torch.all(net.hidden1.linear.r == 1.0), "only the first layer's adapter starts random"


def test_level_codes_get_learned_embeddings_and_an_unseen_level_its_reserved_row() -> None:
    config = NetConfig(n_layers=1, d_hidden=8, categorical_columns=[1], categorical_cardinalities=[4],
                       d_cat_embedding=3, batchnorm="input")
    net = build_mlp(config, d_in=3, d_out=1).eval()
    assert net.embed.d_out == 3 + 2 and net.input_bn.num_features == 5
    table = net.embed.cat_embed[0].weight
    x = torch.tensor([[0.5, 2.0, -1.0], [0.5, 0.0, -1.0], [0.5, 7.0, -1.0]])  # level 2, unseen (0), out of range
    out = net.embed(x)
    torch.testing.assert_close(out[0, :3], table[2])
    torch.testing.assert_close(out[1, :3], table[0])
    torch.testing.assert_close(out[2, :3], table[0])  # a code beyond the table reads as unseen, never an error
    torch.testing.assert_close(out[:, 3:], x[:, [0, 2]])


# --- through the search, the ensemble step and the exported model ----------------------------------

MODERN_SPACE = """
name: modern
params:
  num_embedding: {choices: [plr, ple]}
  k_ensemble: {choices: [1, 4]}
  target_transform: {choices: [log1p, quantile]}
  n_layers: 1
  d_hidden: 16
  d_embedding: 4
  ple_bins: 8
  optimizer: adamw
  lr: 0.01
  schedule: none
  batch_size: 64
  max_epochs: 3
  patience: 3
enqueue:
  - {num_embedding: ple, k_ensemble: 4, target_transform: log1p}
  - {num_embedding: plr, k_ensemble: 1, target_transform: quantile}
"""


@pytest.mark.parametrize("source", ["builtin:diabetes", "builtin:breast_cancer"])
def test_modern_nets_search_ensemble_export_and_predict(tmp_path, source: str) -> None:
    """The embeddings point at the continuous columns, a regression target is transformed and decoded, and
    the exported model (nets only) predicts what the trials saved (the ensemble step checks every net)."""
    import json

    from automl_dnn import api
    from automl_dnn.data import read_table
    from automl_dnn.predictor import load_model
    from automl_dnn.run_folder import RunDir, load_trial, trial_folder

    space = tmp_path / "modern.yaml"
    space.write_text(MODERN_SPACE)
    report = api.ensemble(api.search(source, out=tmp_path / "run", space=str(space), n_trials=2, threads=1,
                                     pruner="none", quiet=True, progress=False).run_dir, model_dir=tmp_path / "m", gbt=False,
                          folds=1)
    spec = RunDir(tmp_path / "run").read_spec()
    for number in (0, 1):
        saved = load_trial(trial_folder(spec["artifacts"], number))
        net = saved.config["settings"]["net"]
        assert net["embedded_columns"] and max(net["embedded_columns"]) < saved.config["d_in"]
        target = saved.config["settings"]["target"]
        assert (target is not None) == (spec["task"] == "regression")
        if spec["task"] != "regression":  # searched, but a classification trial records it as unused
            assert saved.config["settings"]["target_transform"] == "none"
    model = load_model(tmp_path / "m")
    frame = read_table(source).drop(columns=["target"])
    pred = model.predict(frame) if spec["task"] == "regression" else model.predict_proba(frame)
    assert np.all(np.isfinite(pred)) and len(pred) == len(frame)
    if spec["task"] == "regression":
        assert pred.min() > 0, "a log1p-trained net decodes to the positive scale of the target"
        spread = model.predict_frame(frame.head(5), mc_samples=3)["prediction_std"]
        assert len(spread) == 5 and np.all(np.isfinite(spread)) and np.all(spread >= 0)
    assert report.members and json.loads((tmp_path / "m" / "model.json").read_text())["members"]


def _many_levels_frame(n: int = 1200, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    city = rng.integers(0, 120, n)
    x = rng.normal(size=n)
    y = np.where(x + (city % 3 == 0) + rng.normal(scale=0.3, size=n) > 0.5, "yes", "no")
    return pd.DataFrame({"x": x, "city": [f"city-{c}" for c in city], "y": y})


def test_a_many_level_column_becomes_codes_with_a_reserved_unseen_code() -> None:
    from automl_dnn.data import FeaturePreprocessor

    frame = _many_levels_frame()
    pre = FeaturePreprocessor(min_frequency=1).fit(frame.drop(columns=["y"]))  # every level kept: no __rare__
    levels = pre.columns_[1]["levels"]
    assert pre.feature_names_ == ["x", "city__code"] and len(levels) > 64
    assert pre.categorical_features_ == [(1, len(levels) + 1)] and pre.continuous_features_ == [0]
    known = [lvl for lvl in levels if lvl.startswith("city-")][:2]
    X = pre.transform(frame.drop(columns=["y"]).head(3).assign(city=[*known, "nowhere"]))
    assert X[:, 1].tolist() == [levels.index(known[0]) + 1, levels.index(known[1]) + 1, 0.0]


def test_an_unseen_category_at_predict_time_through_the_whole_tool(tmp_path) -> None:
    from automl_dnn import api
    from automl_dnn.run_folder import RunDir, load_trial, trial_folder

    frame = _many_levels_frame()
    space = tmp_path / "space.yaml"
    space.write_text(MODERN_SPACE.split("enqueue:")[0])
    _, report = api.fit(frame, target="y", model_dir=tmp_path / "m", out=tmp_path / "run", space=str(space),
                        n_trials=1, gbt=False, pruner="none", threads=1, quiet=True, progress=False)
    spec = RunDir(tmp_path / "run").read_spec()
    net = load_trial(trial_folder(spec["artifacts"], 0)).config["settings"]["net"]
    assert net["categorical_columns"] == [1] and net["categorical_cardinalities"][0] > 65
    model = api.load(tmp_path / "m")
    new = frame.drop(columns=["y"]).iloc[[0, 0, 0, 0]].assign(city=["city-5", "a new city", "another", None])
    proba = model.predict_proba(new)
    assert proba.shape == (4, 2) and np.all(np.isfinite(proba))
    np.testing.assert_array_equal(proba[1], proba[2])  # two unseen cities share the reserved code


def test_embedding_inputs_of_stored_rows_are_those_of_the_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refit reads its rows from the file (``StoredRows``): its embedded columns (a constant one passed
    through) and its PLE bins, from a sample of the rows above BIN_ROWS, are those of the matrix."""
    from types import SimpleNamespace

    from automl_dnn import objective
    from automl_dnn.space import settings_from_values
    from automl_dnn.train import StoredRows

    monkeypatch.setattr(objective, "BIN_ROWS", 50)
    X = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    X[:, 3] = 1.0
    pre = SimpleNamespace(continuous_features_=[0, 1, 3], categorical_features_=[])
    y = (X[:, 0] > 0).astype(np.int64)
    for binning in ("quantile", "tree"):
        settings = settings_from_values({"num_embedding": "ple", "ple_bins": 8, "ple_binning": binning})
        from_matrix, bins = objective.embedding_inputs(settings, pre, X, y)
        from_file, stored_bins = objective.embedding_inputs(settings, pre, StoredRows(lambda rows: X[rows], 300, 4), y)
        assert from_matrix.net.embedded_columns == from_file.net.embedded_columns == [0, 1]
        assert from_matrix == from_file
        for a, b in zip(bins, stored_bins, strict=True):
            torch.testing.assert_close(a, b)


def test_front_scale_starts_as_the_identity_and_its_factors_learn_at_their_own_higher_rate() -> None:
    X = torch.randn(64, 5)
    torch.manual_seed(0)
    plain = build_mlp(NetConfig(n_layers=2, d_hidden=8, num_embedding="plr", embedded_columns=[0, 1, 2]), d_in=5, d_out=1)
    torch.manual_seed(0)
    scaled = build_mlp(NetConfig(n_layers=2, d_hidden=8, num_embedding="plr", embedded_columns=[0, 1, 2],
                                 front_scale=True), d_in=5, d_out=1)
    assert scaled.front_scale.scale.shape == (3 * 16 + 2,), "one factor per input of the first hidden layer"
    with torch.no_grad():
        torch.testing.assert_close(scaled(X), plain(X))  # ones: the same net at init (the same draws)
    optimizer = make_optimizer("adamw", scaled, TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.1))
    set_lr(optimizer, 0.002)
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decays = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert FrontScale.lr_factor > 1
    assert lrs[id(scaled.front_scale.scale)] == pytest.approx(0.002 * FrontScale.lr_factor)
    assert decays[id(scaled.front_scale.scale)] == 0.0
    assert lrs[id(scaled.hidden0.linear.weight)] == pytest.approx(0.002)
    assert len(lrs) == len(list(scaled.parameters())), "every parameter in exactly one group"
