"""Tests for the training loop and predict (TECHNIQUES.md sections 4-8)."""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from automl_dnn.model import NetConfig, build_mlp
from automl_dnn.optim import onecycle_lr, onecycle_momentum, piecewise_lr
from automl_dnn.train import (
    Callback,
    StoredRows,
    TrainConfig,
    TrainData,
    WeightAverager,
    _Trainer,
    class_weights,
    copy_epoch,
    data_loss,
    overfitting,
    patience_exhausted,
    penalized_weights,
    predict,
    train,
)

train_module = importlib.import_module("automl_dnn.train")



# --------------------------------------------------------------------------- data


def _split(X: np.ndarray, y: np.ndarray, n_train: int) -> TrainData:
    return TrainData(X[:n_train], y[:n_train], X[n_train:], y[n_train:])


@pytest.fixture(scope="module")
def binary_split() -> TrainData:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 8)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] - X[:, 2] + 0.3 * rng.normal(size=400) > 0).astype(np.int64)
    return _split(X, y, 300)


@pytest.fixture(scope="module")
def multiclass_split() -> TrainData:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 6)).astype(np.float32)
    y = np.argmax(X[:, :3] + 0.3 * rng.normal(size=(400, 3)), axis=1).astype(np.int64)
    return _split(X, y, 300)


@pytest.fixture(scope="module")
def regression_split() -> TrainData:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 5)).astype(np.float32)
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=400)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    return _split(X, y, 300)


def _net(d_in: int, d_out: int = 1, seed: int = 0, **kwargs: Any) -> nn.Module:
    torch.manual_seed(seed)
    return build_mlp(NetConfig(**{"n_layers": 2, "d_hidden": 16, **kwargs}), d_in=d_in, d_out=d_out)


def _cfg(**kwargs: Any) -> TrainConfig:
    """A fast, schedule-free config for logic tests."""
    return TrainConfig(**{"optimizer": "adam", "lr": 0.01, "schedule": "none", "batch_size": 64, "max_epochs": 5, **kwargs})


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _loss_now(model: nn.Module, data: TrainData, task: str) -> float:
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(data.X_train))
    y = torch.from_numpy(data.y_train)
    return float(data_loss(out, y.float() if task == "binary" else y, None, task))


class Recorder(Callback):
    """Keeps a copy of the weights and the logs of every epoch."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.states, self.logs = model, [], []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        self.states.append(_params(self.model))
        self.logs.append(logs)


# --------------------------------------------------------------------------- optimizers and tasks

LRS = {
    "sgd": 0.2,
    "momentum": 0.05,
    "nesterov": 0.05,
    "adagrad": 0.05,
    "rmsprop": 0.005,
    "adam": 0.01,
    "adamax": 0.02,
    "nadam": 0.01,
    "adamw": 0.01,
}


@pytest.mark.parametrize("optimizer", list(LRS))
def test_every_optimizer_reduces_the_loss(optimizer: str, binary_split: TrainData) -> None:
    model = _net(8)
    before = _loss_now(model, binary_split, "binary")
    config = _cfg(optimizer=optimizer, lr=LRS[optimizer], weight_decay=0.01, max_epochs=8)
    result = train(model, binary_split, config, task="binary")
    after = _loss_now(model, binary_split, "binary")
    assert result.status == "completed"
    assert after < 0.6 * before
    assert result.best_valid_loss < 0.4


def test_multiclass_and_regression_learn(multiclass_split: TrainData, regression_split: TrainData) -> None:
    model = _net(6, d_out=3)
    before = _loss_now(model, multiclass_split, "multiclass")
    train(model, multiclass_split, _cfg(max_epochs=15), task="multiclass")
    assert _loss_now(model, multiclass_split, "multiclass") < 0.5 * before

    model = _net(5)
    before = _loss_now(model, regression_split, "regression")
    train(model, regression_split, _cfg(max_epochs=15), task="regression")
    assert _loss_now(model, regression_split, "regression") < 0.5 * before


def test_result_fields(binary_split: TrainData) -> None:
    model = _net(8)
    result = train(model, binary_split, _cfg(max_epochs=3, patience=50), task="binary")
    assert result.status == "completed" and result.epochs_run == 3
    assert [row["epoch"] for row in result.history] == [0, 1, 2]
    assert set(result.history[0]) == {"epoch", "train_loss", "valid_loss", "score", "lr", "seconds"}
    assert result.n_params == sum(p.numel() for p in model.parameters())
    assert result.device == "cpu" and result.train_seconds > 0
    assert result.best_valid_pred is not None and result.best_valid_pred.shape == (100, 2)
    assert result.best_score == min(row["score"] for row in result.history)
    assert not model.training


# --------------------------------------------------------------------------- regularization


def test_max_norm_holds_after_steps_with_a_huge_lr(binary_split: TrainData) -> None:
    def max_row_norm(model: nn.Module) -> float:
        return max(w.norm(dim=1).max().item() for w in penalized_weights(model))

    config = _cfg(optimizer="sgd", lr=5.0, batch_size=50, max_epochs=1)
    free = _net(8)
    train(free, binary_split, config, task="binary")
    assert max_row_norm(free) > 10  # without the constraint the rows grow far past 1
    capped = _net(8)
    train(capped, binary_split, TrainConfig(**{**config.__dict__, "max_norm": 1.0}), task="binary")
    assert max_row_norm(capped) <= 1.0 + 1e-5


def _one_full_batch_step(data: TrainData, net_kwargs: dict[str, Any], **config: Any) -> tuple[dict, dict]:
    """Weights before and after exactly one plain-SGD step (lr=1) on the whole training set."""
    model = _net(data.X_train.shape[1], **net_kwargs)
    before = _params(model)
    cfg = TrainConfig(optimizer="sgd", lr=config.pop("lr", 1.0), schedule="none", batch_size=1000, max_epochs=1, **config)
    train(model, data, cfg, task="regression")
    return before, _params(model)


@pytest.fixture(scope="module")
def big_targets(regression_split: TrainData) -> TrainData:
    """Targets x100 so that the raw gradients are far larger than the clip threshold."""
    data = regression_split
    return TrainData(data.X_train, data.y_train * 100, data.X_valid, data.y_valid * 100)


def test_clip_by_value(big_targets: TrainData) -> None:
    before, free = _one_full_batch_step(big_targets, {})
    _, clipped = _one_full_batch_step(big_targets, {}, clip="value", clip_value=0.5)
    assert max((free[k] - before[k]).abs().max().item() for k in before) > 0.5
    for k in before:  # with lr=1 the step is minus the gradient: each component clamped to [-c, c]
        torch.testing.assert_close(clipped[k] - before[k], (free[k] - before[k]).clamp(-0.5, 0.5), atol=1e-5, rtol=1e-4)


def test_clip_by_norm(big_targets: TrainData) -> None:
    before, free = _one_full_batch_step(big_targets, {})
    _, clipped = _one_full_batch_step(big_targets, {}, clip="norm", clip_value=0.5)
    free_step = torch.cat([(free[k] - before[k]).flatten() for k in before])
    clipped_step = torch.cat([(clipped[k] - before[k]).flatten() for k in before])
    assert free_step.norm() > 0.5
    assert clipped_step.norm().item() == pytest.approx(0.5, rel=1e-4)
    torch.testing.assert_close(clipped_step, free_step * 0.5 / free_step.norm(), atol=1e-6, rtol=1e-4)  # same direction


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_penalties_touch_weight_matrices_only(penalty: str, regression_split: TrainData) -> None:
    """One SGD step: the penalty's gradient is added to Linear weights only (not biases, BN, PReLU)."""
    net_kwargs = {"batchnorm": "before", "activation": "prelu"}
    before, free = _one_full_batch_step(regression_split, net_kwargs, lr=0.1)
    _, penalized = _one_full_batch_step(regression_split, net_kwargs, lr=0.1, **{penalty: 0.5})
    matrices = {k for k, v in before.items() if v.dim() >= 2}
    assert matrices == {"hidden0.linear.weight", "hidden1.linear.weight", "out.weight"}
    for k, w0 in before.items():
        if k in matrices:
            grad = 0.5 * (torch.sign(w0) if penalty == "l1" else 2 * w0)  # d/dw of l1*|w| or l2*w^2
            torch.testing.assert_close(penalized[k] - free[k], -0.1 * grad, atol=1e-6, rtol=1e-4)
        else:
            torch.testing.assert_close(penalized[k], free[k], atol=0, rtol=0)


def test_l1_drives_irrelevant_weights_to_zero() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 20)).astype(np.float32)
    y = X[:, 0] * 1.5 - X[:, 1] + rng.normal(size=200)
    data = _split(X, ((y - y.mean()) / y.std()).astype(np.float32), 100)

    def weights(l1: float) -> np.ndarray:
        torch.manual_seed(0)
        model = build_mlp(NetConfig(n_layers=0), d_in=20, d_out=1)
        cfg = TrainConfig(optimizer="sgd", lr=0.02, schedule="none", l1=l1, batch_size=25, max_epochs=60, patience=1000)
        train(model, data, cfg, task="regression")
        return model.out.weight.detach().numpy().ravel()

    plain, sparse = weights(0.0), weights(0.1)
    assert np.abs(sparse[2:]).mean() < 0.4 * np.abs(plain[2:]).mean()
    assert (np.abs(sparse[2:]) < 0.01).sum() > (np.abs(plain[2:]) < 0.01).sum() + 5
    assert abs(sparse[0]) > 0.5  # the informative weights survive


def test_class_weights_inverse_frequency() -> None:
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    np.testing.assert_allclose(class_weights(y, 3), [10 / 18, 10 / 9, 10 / 3], rtol=1e-6)
    out = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    target = torch.tensor([0, 1, 2])
    w = torch.as_tensor(class_weights(y, 3))
    expected = nn.functional.cross_entropy(out, target, weight=w)
    torch.testing.assert_close(data_loss(out, target, w[target], "multiclass"), expected)


def test_class_weight_raises_minority_probabilities() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 4)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=600) > 1.8).astype(np.int64)  # about 10% positives
    data = _split(X, y, 450)

    def mean_minority_prob(weighted: bool) -> float:
        model = _net(4)
        train(model, data, _cfg(class_weight=weighted, max_epochs=10, patience=50), task="binary")
        return float(predict(model, data.X_valid, task="binary")[:, 1].mean())

    assert mean_minority_prob(True) > mean_minority_prob(False) + 0.1


# --------------------------------------------------------------------------- schedules inside the loop


def test_onecycle_sets_lr_and_beta1_every_batch(binary_split: TrainData) -> None:
    model = _net(8)
    config = TrainConfig(optimizer="nadam", lr=0.01, schedule="onecycle", batch_size=64, max_epochs=4)
    trainer = _Trainer(model, binary_split, config, "binary", torch.device("cpu"))
    n_batches = len(trainer.bounds)  # 300 rows / 64 -> 5
    total = 4 * n_batches
    for epoch in range(2):
        trainer.train_epoch(epoch, epoch * n_batches)
        last_step = (epoch + 1) * n_batches - 1
        for group in trainer.optimizer.param_groups:
            assert group["lr"] == pytest.approx(onecycle_lr(last_step, lr_max=0.01, total_steps=total))
            assert group["betas"][0] == pytest.approx(onecycle_momentum(last_step, total_steps=total))


def test_onecycle_history_follows_the_formula(binary_split: TrainData) -> None:
    config = TrainConfig(lr=0.01, batch_size=100, max_epochs=10, patience=50)
    result = train(_net(8), binary_split, config, task="binary")
    total = 10 * 3
    expected = [onecycle_lr((e + 1) * 3 - 1, lr_max=0.01, total_steps=total) for e in range(10)]
    assert [row["lr"] for row in result.history] == pytest.approx(expected)


def test_piecewise_history(binary_split: TrainData) -> None:
    config = _cfg(lr=0.01, schedule="piecewise", piecewise_epochs=[2, 4], piecewise_factors=[1.0, 0.5, 0.1], max_epochs=6)
    result = train(_net(8), binary_split, config, task="binary")
    expected = [piecewise_lr(e, lr0=0.01, boundaries=[2, 4], factors=[1.0, 0.5, 0.1]) for e in range(6)]
    assert [row["lr"] for row in result.history] == pytest.approx(expected)
    assert expected == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.001, 0.001])


def test_plateau_history_reduces_after_patience(binary_split: TrainData) -> None:
    config = _cfg(
        optimizer="sgd", lr=2.0, schedule="plateau", plateau_patience=1, plateau_factor=0.5, batch_size=16,
        max_epochs=12, patience=50,
    )
    history = train(_net(8), binary_split, config, task="binary").history
    lr, best, bad = 2.0, math.inf, 0  # replay the rule on the observed valid losses
    for row in history:
        assert row["lr"] == pytest.approx(lr)
        if row["valid_loss"] < best:
            best, bad = row["valid_loss"], 0
        else:
            bad += 1
            if bad >= 1:
                lr, bad = lr * 0.5, 0
    assert history[-1]["lr"] < 2.0  # the noisy high-lr run did hit a plateau


# --------------------------------------------------------------------------- stopping


class ScriptedScore:
    """score_fn returning a fixed sequence: a valid score that gets worse after a chosen epoch."""

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.calls, self.preds = scores, 0, []

    def __call__(self, pred: np.ndarray) -> float:
        self.preds.append(pred)
        self.calls += 1
        return self.scores[self.calls - 1]


def test_early_stopping_restores_the_best_epoch(binary_split: TrainData) -> None:
    model = _net(8)
    recorder = Recorder(model)
    scores = ScriptedScore([5.0, 4.0, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    result = train(model, binary_split, _cfg(patience=3, max_epochs=10), task="binary", callbacks=[recorder],
                   score_fn=scores)
    assert result.status == "early_stopped"
    assert (result.best_epoch, result.epochs_run, result.best_score) == (2, 6, 3.0)
    assert result.best_valid_loss == result.history[2]["valid_loss"]
    assert result.best_valid_pred is scores.preds[2]
    assert [log["score"] for log in recorder.logs] == [5.0, 4.0, 3.0, 3.5, 4.0, 5.0]
    restored = _params(model)
    for k, v in recorder.states[2].items():
        torch.testing.assert_close(restored[k], v, atol=0, rtol=0)
        torch.testing.assert_close(result.best_state[k], v, atol=0, rtol=0)
    assert any(not torch.equal(restored[k], v) for k, v in recorder.states[5].items())


def test_a_copy_trains_to_the_best_of_the_curve_averaged_over_neighbouring_epochs() -> None:
    def rows(scores: list[float]) -> list[dict[str, float]]:
        return [{"score": s} for s in scores]

    # diamonds' TabM-like trial (session 30): best at epoch 5 (544) between 840 and 734; the averaged curve's best is
    # the last epoch, (553 + 548) / 2 = 550.5, ahead of epoch 9's (556 + 553 + 548) / 3 = 552.3
    swinging = [673, 685, 637, 677, 840, 544, 734, 561, 556, 553, 548]
    assert copy_epoch(rows(swinging)) == 10
    assert copy_epoch(rows([5.0, 4.0, 3.0, 3.5, 4.0, 5.0])) == 2  # a smooth curve keeps its best epoch
    assert copy_epoch(rows([3.0, 9.0, 1.0, 9.0, 2.0, 2.0, 2.0])) == 5  # a lone dip is not copied
    assert copy_epoch(rows([3.0, 2.0, 1.0, math.nan, 0.5])) == 2  # a non-finite score ends the curve
    assert copy_epoch(rows([math.inf])) is None


def test_inf_data_diverges_without_exception(binary_split: TrainData) -> None:
    X = binary_split.X_train.copy()
    X[3, 0] = np.inf
    data = TrainData(X, binary_split.y_train, binary_split.X_valid, binary_split.y_valid)
    result = train(_net(8), data, _cfg(), task="binary")
    assert result.status == "diverged"
    assert (result.epochs_run, result.best_epoch, result.best_state) == (1, None, None)
    assert result.best_score == math.inf


def test_huge_lr_diverges(regression_split: TrainData) -> None:
    result = train(_net(5), regression_split, _cfg(optimizer="sgd", lr=1e6, max_epochs=20), task="regression")
    assert result.status == "diverged"
    assert not math.isfinite(result.history[-1]["train_loss"] + result.history[-1]["valid_loss"])


def test_divergence_keeps_the_best_weights_so_far(binary_split: TrainData) -> None:
    model = _net(8)
    recorder = Recorder(model)
    scores = ScriptedScore([3.0, 2.0, 2.5, math.nan, 1.0])
    result = train(model, binary_split, _cfg(max_epochs=5), task="binary", callbacks=[recorder], score_fn=scores)
    assert (result.status, result.best_epoch, result.epochs_run) == ("diverged", 1, 4)
    assert len(recorder.logs) == 3  # callbacks do not see the diverged epoch
    restored = _params(model)
    for k, v in recorder.states[1].items():
        torch.testing.assert_close(restored[k], v, atol=0, rtol=0)


def test_callback_returning_true_stops(binary_split: TrainData) -> None:
    class StopAt(Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool:
            assert {"epoch", "train_loss", "valid_loss", "score", "lr", "valid_pred", "elapsed"} <= set(logs)
            return epoch == 2

    seen: list[int] = []

    class Watch(Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
            seen.append(epoch)

    result = train(_net(8), binary_split, _cfg(max_epochs=10), task="binary", callbacks=[StopAt(), Watch()])
    assert (result.status, result.epochs_run) == ("stopped", 3)
    assert seen == [0, 1, 2]  # every callback is notified in the stopping epoch too


def test_callback_exception_propagates(binary_split: TrainData) -> None:
    class Pruned(Exception):
        pass

    class Prune(Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
            if epoch == 1:
                raise Pruned

    with pytest.raises(Pruned):
        train(_net(8), binary_split, _cfg(), task="binary", callbacks=[Prune()])


# --------------------------------------------------------------------------- predict


def test_predict_shapes_and_probabilities(binary_split: TrainData, multiclass_split: TrainData,
                                          regression_split: TrainData) -> None:
    model = _net(8)
    proba = predict(model, binary_split.X_valid, task="binary")
    with torch.no_grad():
        p = torch.sigmoid(model.eval()(torch.from_numpy(binary_split.X_valid))).numpy().ravel()
    assert proba.shape == (100, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba[:, 1], p, rtol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    proba3 = predict(_net(6, d_out=3), multiclass_split.X_valid, task="multiclass", batch_size=7)
    assert proba3.shape == (100, 3)
    np.testing.assert_allclose(proba3.sum(axis=1), 1.0, rtol=1e-6)
    assert predict(_net(5), regression_split.X_valid, task="regression").shape == (100,)


def test_predict_empty_input() -> None:
    empty = np.zeros((0, 8), dtype=np.float32)
    assert predict(_net(8), empty, task="binary").shape == (0, 2)
    mean, std = predict(_net(8, dropout=0.5), empty, task="regression", mc_samples=3)
    assert mean.shape == std.shape == (0,)


def test_mc_dropout(binary_split: TrainData) -> None:
    model = _net(8, dropout=0.3, batchnorm="before")
    bn_mean = model.hidden0.bn.running_mean.clone()
    mean, std = predict(model, binary_split.X_valid, task="binary", mc_samples=20, batch_size=32)
    assert mean.shape == std.shape == (100, 2)
    assert (std[:, 1] > 0).all()
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, rtol=1e-5)
    torch.testing.assert_close(model.hidden0.bn.running_mean, bn_mean, atol=0, rtol=0)  # BN stayed in eval
    assert model.training  # the mode is restored

    plain = _net(8, batchnorm="before")
    mean0, std0 = predict(plain, binary_split.X_valid, task="binary", mc_samples=20)
    assert np.all(std0 == 0.0)
    np.testing.assert_array_equal(mean0, predict(plain, binary_split.X_valid, task="binary"))


def test_mc_dropout_differs_between_passes_alpha(regression_split: TrainData) -> None:
    model = _net(5, activation="selu", init="lecun_normal", dropout=0.2, dropout_kind="alpha")
    _, std = predict(model, regression_split.X_valid, task="regression", mc_samples=10)
    assert std.shape == (100,) and (std > 0).all()


# --------------------------------------------------------------------------- reproducibility and devices


def _history(data: TrainData, seed: int, **config: Any) -> list[dict]:
    model = _net(8, dropout=0.2)
    result = train(model, data, _cfg(batch_size=32, seed=seed, **config), task="binary")
    return [{k: v for k, v in row.items() if k != "seconds"} for row in result.history]


def test_same_seed_same_history(binary_split: TrainData) -> None:
    first = _history(binary_split, seed=7)
    assert first == _history(binary_split, seed=7)
    assert first != _history(binary_split, seed=8)


def _linear_dtypes(model: nn.Module) -> list[tuple[bool, torch.dtype]]:
    """(training?, output dtype) of every call of the net's first Linear layer."""
    seen: list[tuple[bool, torch.dtype]] = []
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    first.register_forward_hook(lambda module, args, out: seen.append((module.training, out.dtype)))
    return seen


def test_amp_trains_in_bf16_and_validates_in_float32_where_bf16_is_native(
        binary_split: TrainData, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "native_bf16", lambda device: device.type == "cpu")
    model = _net(8, dropout=0.2)
    seen = _linear_dtypes(model)
    result = train(model, binary_split, _cfg(batch_size=32, seed=7, max_epochs=2, amp=True), task="binary", device="cpu")
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}  # the scores predict computes
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32
    assert [row["valid_loss"] for row in result.history] != [row["valid_loss"] for row in
                                                              _history(binary_split, seed=7, max_epochs=2)]


def test_amp_is_a_noop_where_bf16_is_not_native(binary_split: TrainData, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "native_bf16", lambda device: False)
    model = _net(8, dropout=0.2)
    result = train(model, binary_split, _cfg(batch_size=32, seed=7, amp=True), task="binary", device="cpu")
    without_seconds = [{k: v for k, v in row.items() if k != "seconds"} for row in result.history]
    assert without_seconds == _history(binary_split, seed=7)


def test_the_epoch_estimate_steps_in_the_trained_precision(binary_split: TrainData,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "native_bf16", lambda device: True)
    for amp, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        model = _net(8)
        seen = _linear_dtypes(model)  # the estimate steps a copy: the hook is copied with it
        train_module.estimate_epoch_seconds(model, binary_split, _cfg(amp=amp), task="binary", device="cpu")
        assert {d for _, d in seen} == {dtype}


def test_threads_apply_to_the_call_only(binary_split: TrainData) -> None:
    seen: list[int] = []

    class Threads(Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
            seen.append(torch.get_num_threads())

    train(_net(8), binary_split, _cfg(max_epochs=1), task="binary", threads=2, callbacks=[Threads()])
    assert seen == [2] and torch.get_num_threads() == 1


def test_batchnorm_with_a_leftover_batch_of_one(binary_split: TrainData) -> None:
    data = TrainData(binary_split.X_train[:65], binary_split.y_train[:65], binary_split.X_valid, binary_split.y_valid)
    result = train(_net(8, batchnorm="before"), data, _cfg(batch_size=32, max_epochs=2), task="binary")
    assert result.status == "completed"


@pytest.mark.parametrize(
    ("kwargs", "task", "d_out", "match"),
    [
        ({}, "ranking", 1, "unknown task 'ranking'"),
        ({}, "binary", 2, "d_out=1"),
        ({}, "multiclass", 1, "d_out=K"),
        ({"clip": "both"}, "binary", 1, "none, value, norm"),
        ({"batch_size": 0}, "binary", 1, "batch_size=0"),
        ({"l2": -1.0}, "binary", 1, "l2=-1.0"),
        ({"overfit_margin": -0.1}, "binary", 1, "overfit_margin=-0.1"),
        ({"overfit_epochs": 0}, "binary", 1, "overfit_epochs=0"),
        ({"schedule": "cosine"}, "binary", 1, "unknown schedule"),
        ({"optimizer": "lion"}, "binary", 1, "unknown optimizer"),
    ],
)
def test_bad_inputs_are_refused(kwargs: dict, task: str, d_out: int, match: str, binary_split: TrainData) -> None:
    with pytest.raises(ValueError, match=match):
        train(_net(8, d_out=d_out), binary_split, _cfg(**kwargs), task=task)


def test_labels_out_of_range_are_refused(binary_split: TrainData) -> None:
    data = TrainData(binary_split.X_train, binary_split.y_train * 2, binary_split.X_valid, binary_split.y_valid)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        train(_net(8), data, _cfg(), task="binary")


def test_train_data_checks_shapes(binary_split: TrainData) -> None:
    with pytest.raises(ValueError, match="valid"):
        TrainData(binary_split.X_train, binary_split.y_train, binary_split.X_valid, binary_split.y_valid[:5])


# --------------------------------------------------------------------------- the practical default


def test_default_net_and_training_on_breast_cancer() -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X_rest, X_test, y_rest, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    X_train, X_valid, y_train, y_valid = train_test_split(X_rest, y_rest, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(X_train)

    def prep(a: np.ndarray) -> np.ndarray:
        return scaler.transform(a).astype(np.float32)

    torch.manual_seed(0)
    model = build_mlp(NetConfig(), d_in=X.shape[1], d_out=1)
    data = TrainData(prep(X_train), y_train.astype(np.int64), prep(X_valid), y_valid.astype(np.int64))
    result = train(model, data, TrainConfig(), task="binary")
    assert result.status in ("completed", "early_stopped")
    accuracy = (predict(model, prep(X_test), task="binary").argmax(axis=1) == y_test).mean()
    assert accuracy >= 0.95


def _estimate_case() -> tuple[nn.Module, TrainData, TrainConfig]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4096, 32)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    data = TrainData(X[:3072], y[:3072], X[3072:], y[3072:])
    config = TrainConfig(optimizer="sgd", schedule="none", batch_size=64, max_epochs=3, patience=10)
    model = build_mlp(NetConfig(n_layers=2, d_hidden=256), d_in=32, d_out=1)
    return model, data, config


def test_epoch_estimate_probes_a_copy_and_is_a_positive_time() -> None:
    from automl_dnn.train import estimate_epoch_seconds

    model, data, config = _estimate_case()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    estimate = estimate_epoch_seconds(model, data, config, task="binary", device="cpu")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the probe trains a copy"
    assert math.isfinite(estimate) and estimate > 0


@pytest.mark.timing
def test_epoch_estimate_is_close_to_a_real_epoch() -> None:
    """Marked ``timing`` (not in the default run, ``pytest -m timing`` runs it): it compares two wall-clock
    measurements, the probe's estimate and a real epoch, and a loaded machine can slow one but not the
    other. What needs no clock (the probe trains a copy) is checked by the test above."""
    import time as _time

    from automl_dnn.train import estimate_epoch_seconds

    model, data, config = _estimate_case()
    estimate = estimate_epoch_seconds(model, data, config, task="binary", device="cpu")
    start = _time.perf_counter()
    result = train(model, data, config, task="binary", device="cpu")
    per_epoch = (_time.perf_counter() - start) / result.epochs_run
    assert per_epoch / 10 < estimate < per_epoch * 10  # a ballpark is all a budget needs


# ------------------------------------------------------------ the recipe: patience from half the annealing


@pytest.mark.parametrize(
    ("epoch", "best", "start", "stops"),
    [(3, 0, 0, True), (2, 0, 0, False), (7, 1, 5, True), (6, 1, 5, False), (8, 6, 5, False), (9, 6, 5, True),
     (4, None, 0, False)],
)
def test_patience_counts_from_its_start_epoch(epoch: int, best: int | None, start: int, stops: bool) -> None:
    assert patience_exhausted(epoch, best, patience=3, start=start) is stops


@pytest.mark.parametrize(
    ("schedule", "epochs_run"),
    [
        ("none", 3),  # best at epoch 0, patience 2: stops after epoch 2
        ("onecycle", 17),  # 20 epochs: the peak is at epoch 9, half the descent at 14.5; epochs 15 and 16 count
        ("flat_cosine", 17),  # flat for 10 epochs, half the cosine at 15; epochs 15 and 16 count
    ],
)
def test_early_stopping_waits_for_half_the_annealing(schedule: str, epochs_run: int,
                                                     binary_split: TrainData) -> None:
    scores = ScriptedScore([1.0] + [2.0] * 19)  # never better than epoch 0
    config = _cfg(schedule=schedule, flat_fraction=0.5, patience=2, max_epochs=20, batch_size=150)
    result = train(_net(8), binary_split, config, task="binary", score_fn=scores)
    assert (result.status, result.best_epoch, result.epochs_run) == ("early_stopped", 0, epochs_run)


# --------------------------------------------------------------------------- the recipe: the overfit stop


def _loss_rows(valid: list[float], train_losses: list[float]) -> list[dict[str, float]]:
    return [{"epoch": e, "valid_loss": v, "train_loss": t} for e, (v, t) in enumerate(zip(valid, train_losses))]


@pytest.mark.parametrize(
    ("valid", "train_losses", "start", "stops"),
    [
        ([1.0, 1.2, 1.2, 1.2], [1.0, 0.9, 0.8, 0.7], 0, True),  # 3 epochs, each 20 % worse while training loss falls
        ([1.0, 1.2, 1.2], [1.0, 0.9, 0.8], 0, False),  # only 2 epochs past the best
        ([1.0, 1.2, 1.05, 1.2], [1.0, 0.9, 0.8, 0.7], 0, False),  # one came back within 10 %: noise, not overfitting
        ([1.0, 1.2, 1.2, 1.2], [1.0, 0.9, 1.1, 0.7], 0, False),  # the training loss rose too: a high lr, not overfitting
        ([1.0, 1.2, 1.2, 1.2], [1.0, 0.9, 0.8, 0.7], 2, False),  # epoch 1 is before the start (1cycle's rising lr)
        ([1.0, 1.2, 1.2, 1.2], [1.0, 0.9, 0.8, 0.7], 1, True),
    ],
)
def test_the_overfit_stop_needs_every_recent_epoch_to_overfit(valid: list[float], train_losses: list[float],
                                                              start: int, stops: bool) -> None:
    assert overfitting(_loss_rows(valid, train_losses), 0, margin=0.1, epochs=3, start=start) is stops
    assert overfitting(_loss_rows(valid, train_losses), 0, margin=0.0, epochs=3, start=start) is False  # 0: off


def _memorizing_case() -> tuple[nn.Module, TrainData]:
    """A wide net and validation labels that are coin flips: the net learns its training rows and grows ever surer
    of answers the validation rows do not share, so its validation log-loss climbs."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    y = rng.integers(0, 2, size=300).astype(np.int64)
    return _net(8, d_hidden=128), _split(X, y, 200)


def test_a_net_that_overfits_stops_before_patience_and_keeps_its_best_epoch() -> None:
    model, data = _memorizing_case()
    config = _cfg(lr=0.01, max_epochs=60, patience=60, overfit_margin=0.1, overfit_epochs=5)
    result = train(model, data, config, task="binary")
    assert result.status == "overfit" and result.epochs_run < 60
    best, recent = result.history[result.best_epoch], result.history[-5:]
    assert result.epochs_run - 1 - result.best_epoch >= 5
    assert all(r["valid_loss"] > 1.1 * best["valid_loss"] and r["train_loss"] < best["train_loss"] for r in recent)
    assert result.best_valid_loss == pytest.approx(best["valid_loss"])

    off = train(_memorizing_case()[0], data, dataclasses.replace(config, overfit_margin=0.0), task="binary")
    assert (off.status, off.epochs_run) == ("completed", 60)  # patience 60 never fires; only the stop ended it


@pytest.mark.parametrize(("schedule", "start"), [("onecycle", 9), ("flat_cosine", 0), ("none", 0)])
def test_the_overfit_stop_waits_for_1cycle_peak_only(schedule: str, start: int) -> None:
    from automl_dnn.optim import Schedule

    config = _cfg(schedule=schedule, flat_fraction=0.5, max_epochs=20)
    assert Schedule(config, total_steps=20 * 4).overfit_start_epoch() == start


# --------------------------------------------------------------------------- the recipe: weight averaging


def _snapshots(*values: float) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    """A tiny net and snapshots of it whose every weight, bias and BN statistic is one of `values`."""
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    states = []
    for v in values:
        with torch.no_grad():
            for t in list(net.parameters()) + [net[1].running_mean, net[1].running_var]:
                t.fill_(v)
        states.append({k: t.clone() for k, t in net.state_dict().items()})
    return net, states


def test_swa_is_the_mean_of_the_snapshots() -> None:
    net, states = _snapshots(0.0)
    averager = WeightAverager(net, "swa", ema_decay=0.9)
    for v in (1.0, 2.0, 6.0):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(v)
        averager.update()
    for p in averager.model.parameters():
        assert torch.all(p == 3.0)  # (1 + 2 + 6) / 3
    assert averager.n_averaged == 3


def test_ema_follows_the_warmed_up_decay() -> None:
    net, _ = _snapshots(0.0)
    averager = WeightAverager(net, "ema", ema_decay=0.5)
    expected = None
    for n, v in enumerate([4.0, 8.0, 2.0, 10.0]):
        with torch.no_grad():
            for t in list(net.parameters()) + [net[1].running_mean]:
                t.fill_(v)
        averager.update()
        decay = min(0.5, (1 + n) / (10 + n))  # (1/10), 2/11, 3/12, 4/13: 0.5 only from n = 8 on
        expected = v if n == 0 else decay * expected + (1 - decay) * v
        for t in list(averager.model.parameters()) + [averager.model[1].running_mean]:
            torch.testing.assert_close(t, torch.full_like(t, expected))  # BN statistics are averaged too
    assert expected == pytest.approx(((4 * 2 / 11 + 8 * 9 / 11) * 3 / 12 + 2 * 9 / 12) * 4 / 13 + 10 * 9 / 13)


def test_bad_weight_averaging_is_refused(binary_split: TrainData) -> None:
    for kwargs, match in [({"weight_averaging": "polyak"}, "none, ema, swa"), ({"ema_decay": 1.0}, "ema_decay"),
                          ({"label_smoothing": 1.0}, "label_smoothing"), ({"regression_loss": "huberish"}, "mse, huber, l1")]:
        with pytest.raises(ValueError, match=match):
            train(_net(8), binary_split, _cfg(**kwargs), task="binary")


def test_swa_weights_of_the_trained_net_are_the_mean_of_its_epoch_snapshots(binary_split: TrainData) -> None:
    """schedule none, 6 epochs: averaging over the last half, epochs 3, 4, 5; the final net holds the mean."""
    model = _net(8)
    recorder = Recorder(model)  # sees the trained (not the averaged) weights at the end of each epoch
    scores = ScriptedScore([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])  # the last epoch is best
    config = _cfg(weight_averaging="swa", max_epochs=6, patience=50)
    result = train(model, binary_split, config, task="binary", callbacks=[recorder], score_fn=scores)
    assert result.best_epoch == 5
    final = _params(model)
    for k in final:
        mean = torch.stack([recorder.states[e][k] for e in (3, 4, 5)]).mean(dim=0)
        torch.testing.assert_close(final[k], mean, atol=1e-6, rtol=1e-5)
        assert not torch.allclose(final[k], recorder.states[5][k])  # not simply the last epoch


def test_swa_recomputes_batchnorm_statistics_on_the_training_rows(binary_split: TrainData) -> None:
    model = _net(8, batchnorm="input")  # the input BN's statistics are those of the training rows
    train(model, binary_split, _cfg(weight_averaging="swa", max_epochs=4, patience=50), task="binary",
          score_fn=ScriptedScore([4.0, 3.0, 2.0, 1.0]))
    X = torch.from_numpy(binary_split.X_train)
    torch.testing.assert_close(model.input_bn.running_mean, X.mean(dim=0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.input_bn.running_var, X.var(dim=0), atol=1e-5, rtol=1e-5)
    plain = _net(8, batchnorm="input")  # without SWA: a running average of batch statistics, not these
    train(plain, binary_split, _cfg(max_epochs=4, patience=50), task="binary")
    assert not torch.allclose(plain.input_bn.running_mean, X.mean(dim=0), atol=1e-3)


def test_evaluation_uses_the_averaged_weights_once_averaging_has_started(binary_split: TrainData) -> None:
    """The same seed trains the same weights with or without averaging; only the evaluated net differs,
    and only from the averaging start (epoch 2 of 4) on."""
    plain = train(_net(8), binary_split, _cfg(max_epochs=4, patience=50), task="binary").history
    ema = train(_net(8), binary_split, _cfg(max_epochs=4, patience=50, weight_averaging="ema", ema_decay=0.9),
                task="binary").history
    assert [r["train_loss"] for r in ema] == [r["train_loss"] for r in plain]
    assert [r["valid_loss"] for r in ema[:2]] == [r["valid_loss"] for r in plain[:2]]
    assert all(a["valid_loss"] != b["valid_loss"] for a, b in zip(ema[2:], plain[2:]))


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_weight_averaging_trains_batchnorm_and_tabm_nets(kind: str, binary_split: TrainData) -> None:
    for net_kwargs in ({"batchnorm": "before", "dropout": 0.2}, {"k_ensemble": 4}):
        config = _cfg(weight_averaging=kind, schedule="flat_cosine", optimizer="adamw", max_epochs=4, patience=50)
        result = train(_net(8, **net_kwargs), binary_split, config, task="binary")
        assert result.status == "completed" and result.best_valid_loss < 0.6


# --------------------------------------------------------------------------- the recipe: label smoothing


def test_binary_label_smoothing_trains_against_softened_targets() -> None:
    z, y = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 1.0])
    eps = 0.2
    t = y * (1 - eps) + eps / 2  # 0.9, 0.1, 0.9
    p = torch.sigmoid(z)
    expected = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
    torch.testing.assert_close(data_loss(z.view(-1, 1), y, None, "binary", label_smoothing=eps), expected)
    assert float(data_loss(z.view(-1, 1), y, None, "binary", label_smoothing=eps)) > float(
        data_loss(z.view(-1, 1), y, None, "binary"))


def test_multiclass_label_smoothing_is_cross_entropy_with_smoothed_one_hots() -> None:
    out, y = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2])
    eps, k = 0.3, 3
    log_p = torch.log_softmax(out, dim=1)
    target = torch.nn.functional.one_hot(y, k) * (1 - eps) + eps / k
    expected = -(target * log_p).sum(dim=1).mean()
    torch.testing.assert_close(data_loss(out, y, None, "multiclass", label_smoothing=eps), expected)
    w = torch.tensor([1.0, 3.0])  # per-row weights still apply
    per_row = -(target * log_p).sum(dim=1)
    torch.testing.assert_close(data_loss(out, y, w, "multiclass", label_smoothing=eps), (per_row * w).sum() / 4)


def test_label_smoothing_leaves_regression_alone() -> None:
    out, y = torch.tensor([[0.5], [1.5]]), torch.tensor([0.0, 1.0])
    assert data_loss(out, y, None, "regression", label_smoothing=0.2) == data_loss(out, y, None, "regression")


def test_regression_losses_at_known_residuals() -> None:
    """Residuals 0, 1 and 3: MSE (0 + 1 + 9) / 3; L1 (0 + 1 + 3) / 3; Huber (delta 1) (0 + 0.5 + 2.5) / 3;
    TabM's members (B, k, 1) give the mean over members and rows alike."""
    out, y = torch.tensor([[0.0], [0.0], [3.0]]), torch.tensor([0.0, 1.0, 0.0])
    for loss, expected in (("mse", 10 / 3), ("l1", 4 / 3), ("huber", 1.0)):
        assert float(data_loss(out, y, None, "regression", regression_loss=loss)) == pytest.approx(expected)
        members = torch.stack([out, out + 1.0], dim=1)  # (3, 2, 1): the second member's residuals 1, 0, 4
        second = {"mse": 17 / 3, "l1": 5 / 3, "huber": (0.5 + 0 + 3.5) / 3}[loss]
        assert float(data_loss(members, y, None, "regression", regression_loss=loss)) == pytest.approx(
            (expected + second) / 2)


def test_an_l1_net_fits_the_median_where_mse_fits_the_mean() -> None:
    """A constant net (one bias) on targets 0, 0, 0, 10: L1 drives it to the median (0), MSE to the mean (2.5)."""
    X = np.zeros((400, 1), dtype=np.float32)
    y = np.tile(np.array([0.0, 0.0, 0.0, 10.0], dtype=np.float32), 100)
    fitted = {}
    for loss in ("mse", "l1"):
        torch.manual_seed(0)
        net = nn.Linear(1, 1)
        config = TrainConfig(optimizer="adam", lr=0.05, schedule="none", max_epochs=60, batch_size=400,
                             regression_loss=loss, patience=100)
        train(net, TrainData(X, y, X[:4], y[:4]), config, task="regression", device="cpu")
        fitted[loss] = float(net.bias.detach())
    assert fitted["mse"] == pytest.approx(2.5, abs=0.1) and abs(fitted["l1"]) < 0.1


def test_label_smoothing_caps_the_confidence_of_a_trained_net() -> None:
    """The loss is smallest at p = 1 - eps/2: on separable data the net stops short of certainty."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 2)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    X[:, 0] += np.where(y == 1, 2.0, -2.0)
    data = _split(X, y, 200)

    def top_probability(eps: float) -> float:
        model = _net(2)
        last_is_best = ScriptedScore([float(40 - e) for e in range(40)])  # keep the trained net, not the best log-loss
        train(model, data, _cfg(lr=0.05, max_epochs=40, patience=100, label_smoothing=eps), task="binary",
              score_fn=last_is_best)
        return float(predict(model, data.X_valid, task="binary").max(axis=1).mean())

    assert top_probability(0.0) > 0.99
    assert 0.85 < top_probability(0.2) < 0.93  # near 1 - 0.2/2 = 0.9


# --------------------------------------------------------------------------- rows left in a file


class _CountedRows:
    """A matrix behind ``StoredRows``'s read: counts how many rows each read asked for."""

    def __init__(self, X: np.ndarray) -> None:
        self.X, self.reads = X, []

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        assert np.all(np.diff(rows) >= 0), "StoredRows reads sorted positions"
        self.reads.append(len(rows))
        return self.X[rows].copy()


@pytest.mark.parametrize("averaging", ["none", "swa"])
def test_stored_rows_train_the_same_net_as_the_matrix_a_group_of_batches_at_a_time(
        averaging: str, binary_split: TrainData, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: a refit on 850,000 rows reads its rows from the run's file instead of holding them; the batches
    (and SWA's BatchNorm pass) are the in-memory matrix's, read 100 rows (two batches of 64 ... ) at a time."""
    monkeypatch.setattr(train_module, "STREAM_ROWS", 100)
    config = _cfg(weight_averaging=averaging, max_epochs=4, patience=50)
    torch.manual_seed(0)
    in_memory = _net(8, batchnorm="input")
    torch.manual_seed(0)
    from_file = _net(8, batchnorm="input")
    expected = train(in_memory, binary_split, config, task="binary", keep="last")
    source = _CountedRows(binary_split.X_train)
    stored = TrainData(StoredRows(source, *binary_split.X_train.shape), binary_split.y_train,
                       binary_split.X_valid, binary_split.y_valid)
    got = train(from_file, stored, config, task="binary", keep="last")
    assert [r["train_loss"] for r in got.history] == [r["train_loss"] for r in expected.history]
    for (name, a), b in zip(in_memory.state_dict().items(), from_file.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    # training reads a group of batches (100 rows + at most one batch of 64) at a time; SWA's BatchNorm pass
    # reads one evaluation batch (8,192 rows, here every row) after each averaged epoch (the last half: 2, 3)
    assert [n for n in source.reads if n > 100 + 63] == ([] if averaging == "none" else [300, 300])
    assert sum(n for n in source.reads if n <= 100 + 63) == 4 * 300


def test_stored_rows_take_rows_in_the_order_asked() -> None:
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    stored = StoredRows(lambda rows: X[rows], 10, 2)
    np.testing.assert_array_equal(stored.take(np.array([7, 2, 9, 2])), X[[7, 2, 9, 2]])
    np.testing.assert_array_equal(np.concatenate(list(stored.chunks(4))), X)
