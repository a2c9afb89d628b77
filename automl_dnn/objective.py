"""One trial: build the suggested net, train it reporting every epoch to the pruner, keep its artifacts.

A lease (``worker`` user attribute: host, pid, heartbeat) on every running trial lets any worker fail
trials whose worker died, whatever the storage (``storage.reap_stale_trials``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from automl_dnn import metrics
from automl_dnn.budget import BaggingReserve, capped_patience, trial_share
from automl_dnn.config import NetConfig, TrialSettings, describe
from automl_dnn.data import FeaturePreprocessor, TargetEncoder, TargetTransform, net_values
from automl_dnn.errors import AutoDNNError, first_line
from automl_dnn.files import read_json
from automl_dnn.folds import make_folds, scaled_epochs
from automl_dnn.memory_guard import check_trial_memory, large_table_allowance
from automl_dnn.model import build_mlp, count_parameters, quantile_bins, tree_bins
from automl_dnn.run_folder import RunDir, save_trial
from automl_dnn.search_rows import refit_seconds, sample_sizes, trial_data
from automl_dnn.space import SearchSpace, settings_from_values, suggest
from automl_dnn.storage import Lease
from automl_dnn.train import (Callback, StoredRows, TrainData, TrainResult, copy_epoch, estimate_epoch_seconds,
                              head_rows, predict, train)

MIN_EPOCHS = 5
# A trial whose MIN_EPOCHS take more than this many times its share is not started once a trial has
# completed: one such net (a wide TabM with k = 8 on 2 cores) can eat half of a short search.
SLOW_TRIAL_FACTOR = 2.0
# Whether the pruner may stop the space's enqueued first trials (its portfolio): their schedules differ
# (flat-then-cosine with EMA starts slow, a TabM converges in few epochs), so an early rung misjudges them.
# They still report, and set the bar at each rung for the trials after them.
PRUNE_PORTFOLIO = False
# Whether an enqueued first trial whose MIN_EPOCHS do not fit its share of a time budget goes behind the
# other first trials still waiting (Objective._defer_if_others_wait).
DEFER_SLOW_PORTFOLIO = True
BIN_ROWS = 200_000  # PLE's quantile bins are computed on at most this many training rows (seeded sample)
TREE_BIN_ROWS = 20_000  # its tree bins on at most this many (a tree a column: 20 regression columns ~0.5 s)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ACCURACY_LIKE_METRICS = ("accuracy", "balanced_accuracy")  # the only metrics label smoothing may serve


@dataclass
class WorkerContext:
    """What a worker needs to run trials: picklable, so worker processes can be spawned with it."""

    run_dir: str
    spec: dict[str, Any]
    space: SearchSpace
    deadline: float | None
    n_trials: int | None
    seed: int
    pruner: str
    device: str
    threads: int | None
    several_workers: bool
    worker_index: int = 0
    amp: bool | None = None  # bf16 autocast in training (with_amp); None: the device's default
    time_budget: float | None = None  # seconds of the whole search, when it has a time budget
    bagging: BaggingReserve | None = None  # fit's k-fold bagging, which the search keeps time for


class StopAfter(Callback):
    """Ends training after a fixed number of epochs (a copy of a trial trained for its best epoch count),
    or when ``should_stop`` says the search must stop."""

    def __init__(self, epochs: int, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.epochs, self.should_stop = epochs, should_stop

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool:
        return epoch + 1 >= self.epochs or self.should_stop()


class TrialFailed(Exception):
    """A trial that could not produce a model (diverged from the start, ran out of memory, raised)."""


class Objective:
    """Builds the trial's net, trains it reporting each epoch to the pruner, and stores its artifacts.

    ``should_stop`` is read after every epoch (Ctrl-C, the deadline): the trial ends there and keeps
    its best epoch. ``seconds_left`` says when the search stops (None: no deadline), which the bagging's
    reserve moves earlier than ``ctx.deadline``.
    """

    def __init__(self, ctx: WorkerContext, should_stop: Callable[[], bool],
                 seconds_left: Callable[[], float | None] = lambda: None) -> None:
        self.ctx, self.should_stop, self.seconds_left = ctx, should_stop, seconds_left
        self.run = RunDir(Path(ctx.run_dir))
        self.space = ctx.space
        self.task, self.metric = ctx.spec["task"], ctx.spec["metric"]
        self.encoder = TargetEncoder.from_dict(read_json(self.run.target_path))
        self._data: dict[str, dict[str, np.ndarray]] = {}
        self._preprocessors: dict[str, FeaturePreprocessor] = {}
        self.artifacts = Path(ctx.spec["artifacts"])
        self.cv_folds = int(ctx.spec.get("cv_folds", 1))
        self.device = worker_device(ctx.device, ctx.worker_index)

    def data(self, scaling: str) -> dict[str, np.ndarray]:
        """The trial's arrays of one scaling (issue 13: only the search's sampled training rows, and one
        scaling held at a time: on a large table every scaling's matrices would not fit beside each other)."""
        if scaling not in self._data:
            self._data = {scaling: trial_data(self.run, scaling)}
        return self._data[scaling]

    def _large_table_allowance(self, d_in: int) -> int | None:
        """A search on a sample of its training rows is one of a large table: its trials' memory is bounded
        by the table's size (``large_table_allowance``); None otherwise."""
        sizes = sample_sizes(self.run)
        if sizes is None or sizes["sample"] >= sizes["train"]:
            return None
        return large_table_allowance(sizes["train"] + sizes["valid"] + sizes["test"], d_in)

    def _columns_of(self, scaling: str) -> FeaturePreprocessor:
        """The run's fitted preprocessing of this scaling: which encoded columns hold what."""
        if scaling not in self._preprocessors:
            self._preprocessors[scaling] = FeaturePreprocessor.from_dict(read_json(self.run.preprocess_path(scaling)))
        return self._preprocessors[scaling]

    def user_space(self, pred: np.ndarray, target: TargetTransform | None = None) -> np.ndarray:
        """Predictions as the user sees them: probabilities, or values on the original scale (clipped to the
        training range, as ``predict`` gives them)."""
        return pred if self.task != "regression" else net_values(pred, self.encoder, target)

    def true_values(self, y: np.ndarray) -> np.ndarray:
        """Targets as the metrics want them: class indices, or values on the original scale."""
        return y if self.task != "regression" else self.encoder.decode(y).astype(np.float64)

    def __call__(self, trial: optuna.Trial) -> float:
        with Lease(trial):
            try:
                return self._run_trial(trial)
            except optuna.TrialPruned:
                raise
            except TrialFailed as exc:
                trial.set_user_attr("fail_reason", str(exc))
                raise
            except Exception as exc:
                reason = failure_reason(exc)
                trial.set_user_attr("fail_reason", reason)
                raise TrialFailed(reason) from exc

    def _check_slot(self, trial: optuna.Trial) -> None:
        """Workers on other machines may race for the last slots: later trials beyond the total give way."""
        if self.ctx.n_trials is None:
            return
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=FINISHED + (TrialState.RUNNING,))
                 if t.number < trial.number]
        if len(ahead) >= self.ctx.n_trials:
            raise TrialFailed(f"not run: the study already has its {self.ctx.n_trials} trials")

    def _fit_to_budget(self, trial: optuna.Trial, settings: TrialSettings, model: Any, data: Any) -> TrialSettings:
        """On a time budget, cap the epochs so that one trial takes about its share of it (``budget.trial_share``).

        Large tables would otherwise spend the whole budget on one or two trials, and a 1cycle schedule
        laid over 100 epochs would be cut off at its peak learning rate; capped, it runs to its end.
        Without a time budget nothing changes, so ``--n-trials`` searches stay deterministic. A
        cross-validated trial trains k fold nets on (k-1)/k of the development rows and one final net.
        """
        if self.ctx.time_budget is None:
            return settings
        epoch = estimate_epoch_seconds(model, data, settings.train, task=self.task, device=self.device)
        k = self.cv_folds
        if k > 1:
            n_dev = len(data.X_train) + len(data.X_valid)
            epoch *= 1 + (k - 1) * n_dev / len(data.X_train)  # k folds of (k-1)/k * n_dev rows, + the final net
        self._start_if_it_can_learn(trial, epoch)
        share, fewest = trial_share(self.ctx.time_budget), MIN_EPOCHS * epoch
        takes = f"{MIN_EPOCHS} epochs take about {fewest:.0f}s, more than"
        if DEFER_SLOW_PORTFOLIO and fewest > share:
            self._defer_if_others_wait(trial, f"{takes} a trial's share of the budget ({share:.0f}s)")
        if fewest > SLOW_TRIAL_FACTOR * share and _has_complete_trial(trial):
            reason = f"not started: {takes} {SLOW_TRIAL_FACTOR:g}x a trial's share of the budget ({share:.0f}s)"
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason)
        cap = max(MIN_EPOCHS, int(share / max(epoch, 1e-6)))
        if cap >= settings.train.max_epochs:
            return settings
        patience = capped_patience(settings.train.patience, cap)
        trial.set_user_attr("max_epochs_for_budget", cap)
        trial.set_user_attr("patience_for_budget", patience)
        return dataclasses.replace(settings, train=dataclasses.replace(settings.train, max_epochs=cap,
                                                                       patience=patience))

    def _start_if_it_can_learn(self, trial: optuna.Trial, epoch: float) -> None:
        """Prune before training a trial the search's end would cut below MIN_EPOCHS (an epoch or two score far
        below the others; the bagging gets the time instead), or, while none has completed, below one epoch
        (issue 13: on a large table one epoch can outlast the search)."""
        left = self.seconds_left()
        if left is None:
            return
        fewest = MIN_EPOCHS if _has_complete_trial(trial) else 1
        if fewest * epoch <= left:
            return
        takes = f"{MIN_EPOCHS} epochs take about {fewest * epoch:.0f}s" if fewest > 1 else \
            f"an epoch takes about {epoch:.0f}s"
        reason = f"not started: {takes} and the search ends in {max(left, 0):.0f}s"
        trial.set_user_attr("prune_reason", reason)
        raise optuna.TrialPruned(reason)

    @staticmethod
    def _defer_if_others_wait(trial: optuna.Trial, why: str) -> None:
        """Send an enqueued first trial that cannot finish its fewest epochs in its share to the back of the queue.

        At 60 s on 2 cores the TabM-like first trial (k = 8, eight MLPs a step) took 23 s of a 52 s search for
        4 epochs and the worst value, and the cheaper first trials behind it ran short of time. Deferred once:
        it runs after the others, if time is left; the record it leaves is pruned, with the reason.
        """
        mine = _frozen(trial)
        if mine is None or "fixed_params" not in mine.system_attrs or "deferred_from" in mine.user_attrs:
            return
        waiting = trial.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not any("deferred_from" not in t.user_attrs for t in waiting):
            return
        trial.study.enqueue_trial(mine.system_attrs["fixed_params"], user_attrs={"deferred_from": trial.number},
                                  skip_if_exists=False)
        reason = f"deferred behind the other first trials: {why}"
        trial.set_user_attr("prune_reason", reason)
        raise optuna.TrialPruned(reason)

    def _label_smoothing(self, trial: optuna.Trial, settings: TrialSettings) -> TrialSettings:
        """Label smoothing only where the metric is accuracy-like: it trains the net to be less confident,
        which leaves the argmax alone but worsens log-loss and can reorder scores (ROC-AUC). The space
        cannot see the metric, so a searched value is forced to 0 here, and the trial says so."""
        smoothing = settings.train.label_smoothing
        if smoothing == 0 or self.metric in ACCURACY_LIKE_METRICS:
            return settings
        trial.set_user_attr("label_smoothing_off", f"{smoothing:g} searched, 0 used: {self.metric} is not accuracy-like")
        return dataclasses.replace(settings, train=dataclasses.replace(settings.train, label_smoothing=0.0))

    def _regression_loss(self, trial: optuna.Trial, settings: TrialSettings) -> TrialSettings:
        """Huber or L1 only where the metric is MAE: they fit the median, which MAE rewards and RMSE and R2
        punish; for those the trial trains with MSE (the mean), and says so."""
        loss = settings.train.regression_loss
        if loss == "mse" or (self.task == "regression" and self.metric == "mae"):
            return settings
        if self.task == "regression":  # a classifier never uses it: only not shown as its loss in tables
            trial.set_user_attr("regression_loss_off", f"{loss} searched, mse used: {self.metric} is not mae")
        return dataclasses.replace(settings, train=dataclasses.replace(settings.train, regression_loss="mse"))

    def _cross_validate(self, trial: optuna.Trial, settings: TrialSettings, data: dict[str, np.ndarray], d_out: int,
                        reporter: EpochReporter) -> tuple[float, int]:
        """Train one net per fold of the development rows, each early-stopped on its own out-of-fold rows
        and reported to the pruner on the trial's one percent scale (a bad trial stops in its first fold).

        Returns the mean of the folds' best values, and the epochs the trial's final net trains on the run's
        training rows: the mean of the folds' ``copy_epoch``, scaled to keep its number of optimizer steps.
        """
        X_dev = np.concatenate([data["X_train"], data["X_valid"]])
        y_dev = np.concatenate([data["y_train"], data["y_valid"]])
        folds = make_folds(y_dev, self.task, k=self.cv_folds, seed=self.ctx.seed, **self.run.fold_keys())
        pre = self._columns_of(settings.scaling)
        values, best_epochs, copy_epochs, trained_rows = [], [], [], []
        for fold in range(folds.k):
            rows, out = folds.rows(0, fold)
            fold_settings, y_rows, y_out, target = target_inputs(settings, self.encoder, y_dev[rows], y_dev[out])
            fold_settings, bins = embedding_inputs(fold_settings, pre, X_dev[rows], y_dev[rows])
            torch.manual_seed(settings.train.seed + fold + 1)
            net = build_mlp(fold_settings.net, d_in=X_dev.shape[1], d_out=d_out, bins=bins)
            y_true = self.true_values(y_dev[out])
            reporter.start_fold(fold)
            result = train(net, TrainData(X_dev[rows], y_rows, X_dev[out], y_out), fold_settings.train, task=self.task,
                           device=self.device, callbacks=[reporter], threads=self.ctx.threads,
                           score_fn=lambda pred, y=y_true, t=target: metrics.as_loss(
                               self.metric, metrics.score(self.metric, y, self.user_space(pred, t))))
            if result.best_epoch is None or not math.isfinite(result.best_score):
                raise TrialFailed(f"{_why_not_finite(result, self.metric)} in fold {fold + 1} of {folds.k}")
            if result.status == "stopped":  # by the deadline or Ctrl-C: an unfinished trial, like a pruned one
                reason = f"cut short in fold {fold + 1} of {folds.k} of its cross-validation (the search stopped)"
                trial.set_user_attr("prune_reason", reason)
                raise optuna.TrialPruned(reason)
            values.append(reporter.sign * result.best_score)
            best_epochs.append(result.best_epoch)
            copy_epochs.append(copy_epoch(result.history))
            trained_rows.append(len(rows))
        trial.set_user_attr("cv_values", [finite_or_none(v) for v in values])
        trial.set_user_attr("cv_best_epochs", best_epochs)
        trial.set_user_attr("cv_copy_epochs", copy_epochs)
        mean_copy = round(float(np.mean(copy_epochs)))
        _, epochs = scaled_epochs(mean_copy, settings.train.max_epochs, int(np.mean(trained_rows)),
                                  len(data["X_train"]))
        return float(np.mean(values)), epochs

    def _run_trial(self, trial: optuna.Trial) -> float:
        self._check_slot(trial)
        settings = settings_from_values(suggest(trial, self.space), seed=self.ctx.seed * 100_003 + trial.number)
        settings = with_amp(self._regression_loss(trial, self._label_smoothing(trial, settings)), self.ctx.amp,
                            self.device)
        if self.task == "regression" and self.metric == "mae":  # the median's own scale (TargetTransform)
            settings = dataclasses.replace(settings, target_scale="robust")
        data = self.data(settings.scaling)
        d_out = len(self.encoder.classes_) if self.task == "multiclass" else 1
        torch.manual_seed(settings.train.seed)  # the initial weights too must follow the seed
        settings, bins = embedding_inputs(settings, self._columns_of(settings.scaling), data["X_train"],
                                          data["y_train"])
        too_big = check_trial_memory(settings, data, d_out=d_out, device=self.device, cv_folds=self.cv_folds,
                                     allowance=self._large_table_allowance(data["X_train"].shape[1]))
        if too_big:  # fail with the reason before allocating, rather than be killed by the kernel
            raise TrialFailed(too_big)
        model = build_mlp(settings.net, d_in=data["X_train"].shape[1], d_out=d_out, bins=bins)
        # Issue 13: on a sampled search each epoch scores the watched validation rows; the value, all of them.
        X_watch = data["X_watch"] if "X_watch" in data else data["X_valid"]  # (X_valid may be read from disk)
        y_watch = data.get("y_watch", data["y_valid"])
        settings, y_train, y_watch_scaled, target = target_inputs(settings, self.encoder, data["y_train"], y_watch)
        train_data = TrainData(data["X_train"], y_train, X_watch, y_watch_scaled)
        settings = self._fit_to_budget(trial, settings, model, train_data)
        y_valid, y_watch = self.true_values(data["y_valid"]), self.true_values(y_watch)
        reporter = EpochReporter(trial, self.metric, self.should_stop, max_epochs=settings.train.max_epochs,
                                 n_folds=self.cv_folds)
        cv_value = None
        if self.cv_folds > 1:  # the value: k fold nets; the trial's net: a final one, for their mean best epoch
            cv_value, epochs = self._cross_validate(trial, settings, data, d_out, reporter)
            callbacks: list[Callback] = [StopAfter(epochs, self.should_stop)]
        else:
            callbacks = [reporter]
        result = train(
            model,
            train_data,
            settings.train,
            task=self.task,
            device=self.device,
            callbacks=callbacks,
            score_fn=lambda pred: metrics.as_loss(self.metric, metrics.score(self.metric, y_watch,
                                                                             self.user_space(pred, target))),
            threads=self.ctx.threads,
            keep="best" if cv_value is None else "last",  # the final net of a CV trial never sees its valid rows choose
        )
        if result.best_epoch is None or not math.isfinite(result.best_score):
            raise TrialFailed(f"{_why_not_finite(result, self.metric)} at epoch {result.epochs_run}")
        valid_pred = self.user_space(predict(model, data["X_valid"], task=self.task, device=self.device), target)
        test_pred = (
            self.user_space(predict(model, data["X_test"], task=self.task, device=self.device), target)
            if len(data["y_test"])
            else np.zeros((0,) + valid_pred.shape[1:])
        )
        value = metrics.score(self.metric, y_valid, valid_pred) if cv_value is None else cv_value
        scores = metrics.all_scores(self.task, y_valid, valid_pred)
        config = {"settings": settings.to_dict(), "d_in": data["X_train"].shape[1], "d_out": d_out, "task": self.task,
                  "trial_number": trial.number, "valid_scores": scores, "metric": self.metric,
                  "lr_by_epoch": result.lr_by_epoch}  # a plateau trial's copies replay it
        folder = save_trial(self.artifacts, trial.number, state=model.state_dict(), config=config,
                            predictions={"valid": valid_pred, "test": test_pred})
        trial.set_user_attr("artifacts", str(folder))
        trial.set_user_attr("status", result.status)
        trial.set_user_attr("summary", describe(settings))
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("best_epoch", result.best_epoch)
        # What its copies train to (a CV trial's final net already trained to its folds' mean of it)
        to_copy = copy_epoch(result.history) if cv_value is None else result.best_epoch
        trial.set_user_attr("copy_epoch", to_copy)
        trial.set_user_attr("n_params", count_parameters(model))
        trial.set_user_attr("train_seconds", round(result.train_seconds, 3))
        trial.set_user_attr("epoch_seconds", round(sum(h["seconds"] for h in result.history), 3))
        sizes = sample_sizes(self.run)
        if sizes is not None and sizes["sample"] < sizes["train"] and to_copy is not None:
            # issue 13: what its copy on every row costs, for the planner (at least one pass over every row)
            trial.set_user_attr("refit_seconds", round(refit_seconds(
                sum(h["seconds"] for h in result.history), result.epochs_run, to_copy,
                settings.train.max_epochs, sizes), 3))
        trial.set_user_attr("device", str(result.device))
        trial.set_user_attr("valid_scores", {k: finite_or_none(v) for k, v in scores.items()})
        # A CV trial's curve is its final net's on the validation rows (the folds' epochs are in the reports).
        curve = reporter.curve if cv_value is None else [finite_or_none(reporter.sign * h["score"])
                                                         for h in result.history]
        trial.set_user_attr("learning_curve", curve)
        trial.set_user_attr("train_loss_curve", [finite_or_none(h["train_loss"]) for h in result.history])
        if self.should_stop() and result.status == "stopped":
            trial.set_user_attr("cut_short", True)
        return value


def _has_complete_trial(trial: optuna.Trial) -> bool:
    return bool(trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def target_inputs(settings: TrialSettings, encoder: TargetEncoder, y_train: np.ndarray, y_valid: np.ndarray
                  ) -> tuple[TrialSettings, np.ndarray, np.ndarray, TargetTransform | None]:
    """The training and validation targets on the trial's own scale, and its fitted target transform.

    ``y_*`` are the run's encoded targets (class indices, or the plain standardization); another
    transform, or the robust scale, is fitted on the training rows.
    """
    if encoder.task_ != "regression":  # searched all the same (a space cannot see the task); recorded as unused
        return dataclasses.replace(settings, target_transform="none"), y_train, y_valid, None
    if settings.target_transform == "none" and settings.target_scale == "standard":
        return settings, y_train, y_valid, None
    target = TargetTransform(settings.target_transform, robust=settings.target_scale == "robust").fit(
        encoder.decode(y_train))
    settings = dataclasses.replace(settings, target=target.to_dict())
    return settings, target.forward(encoder.decode(y_train)), target.forward(encoder.decode(y_valid)), target


def copy_seconds(trial: FrozenTrial) -> float | None:
    """Seconds a copy of a completed trial's net takes on other rows for the same steps (k-fold bagging):
    its seconds per epoch times the epochs it copies (fewer epochs of more rows, or more of fewer). A trial of
    a search on a sample of the rows recorded what its copy on every row costs (issue 13: at least one pass)."""
    if trial.user_attrs.get("refit_seconds") is not None:
        return float(trial.user_attrs["refit_seconds"])
    seconds, epochs, to_copy = (trial.user_attrs.get("epoch_seconds"), trial.user_attrs.get("epochs_run"),
                                epochs_to_copy(trial))
    if seconds is None or not epochs or to_copy is None:
        return None
    return float(seconds) / int(epochs) * (int(to_copy) + 1)


def epochs_to_copy(trial: FrozenTrial) -> int | None:
    """The epoch (0-based) a completed trial's copies train to: ``train.copy_epoch`` of its curve, or, in a study
    from before it was recorded, the trial's best epoch."""
    value = trial.user_attrs.get("copy_epoch", trial.user_attrs.get("best_epoch"))
    return None if value is None else int(value)


def _column_spread(X: np.ndarray | StoredRows, columns: list[int]) -> np.ndarray:
    """max - min of each of ``columns``; of stored rows, one chunk at a time."""
    if not isinstance(X, StoredRows):
        return np.array([np.ptp(X[:, c]) for c in columns], dtype=np.float64)  # a view a column: no copy
    low, high = np.full(len(columns), np.inf), np.full(len(columns), -np.inf)
    for chunk in X.chunks():
        low, high = np.minimum(low, chunk[:, columns].min(axis=0)), np.maximum(high, chunk[:, columns].max(axis=0))
    return high - low


def embedding_inputs(settings: TrialSettings, pre: FeaturePreprocessor, X_train: np.ndarray | StoredRows,
                     y_train: np.ndarray) -> tuple[TrialSettings, list[torch.Tensor] | None]:
    """Point the embeddings at their columns of ``pre``'s encoding: level codes always, a numeric embedding
    at the continuous columns (PLE with bins of the training rows ``X_train``: their quantiles, or a tree's
    splits against their encoded targets ``y_train``).

    Columns constant in the training rows are passed through (a bin needs two distinct edges).
    """
    codes = pre.categorical_features_
    net = dataclasses.replace(settings.net, categorical_columns=[c for c, _ in codes] or None,
                              categorical_cardinalities=[n for _, n in codes] or None)
    bins = None
    if net.num_embedding != "none":
        spread = _column_spread(X_train, pre.continuous_features_)
        columns = [c for c, s in zip(pre.continuous_features_, spread, strict=True) if s > 0]
        if net.num_embedding == "ple" and columns:
            bins = _ple_bins(net, X_train, y_train, columns)
        net = dataclasses.replace(net, embedded_columns=columns,
                                  bin_counts=None if bins is None else [len(b) - 1 for b in bins])
    return dataclasses.replace(settings, net=net), bins


def _ple_bins(net: NetConfig, X_train: np.ndarray | StoredRows, y_train: np.ndarray, columns: list[int]
              ) -> list[torch.Tensor]:
    tree = net.ple_binning == "tree"
    limit = TREE_BIN_ROWS if tree else BIN_ROWS  # torch.quantile's input limit; a tree's time
    if len(X_train) > limit:  # bins need no more rows than a seeded sample
        # the sampled rows first, then their columns: no copy of the whole matrix's columns (issue 13)
        sample = np.sort(torch.randperm(len(X_train), generator=torch.Generator().manual_seed(0))[:limit].numpy())
        picked = (X_train.take(sample)[:, columns] if isinstance(X_train, StoredRows)
                  else X_train[sample[:, None], columns])
        rows, y = torch.as_tensor(picked), np.asarray(y_train)[sample]
    else:
        rows, y = torch.as_tensor(head_rows(X_train, len(X_train))[:, columns]), np.asarray(y_train)
    if not tree:
        return quantile_bins(rows, net.ple_bins)
    regression = not np.issubdtype(y.dtype, np.integer)
    return tree_bins(rows, torch.as_tensor(y), net.ple_bins, regression=regression)


def with_amp(settings: TrialSettings, amp: bool | None, device: str) -> TrialSettings:
    """The trial's training precision, kept in its settings so that its refits train alike: ``--amp`` /
    ``--no-amp`` as given; by default bf16 autocast on a CPU (used only where its bf16 is native:
    ``train.native_bf16``; docs/benchmarks.md, "bf16 training steps on the CPU") and float32 on CUDA."""
    on = torch.device(device).type == "cpu" if amp is None else amp
    return dataclasses.replace(settings, train=dataclasses.replace(settings.train, amp=on))


def worker_device(device: str, worker_index: int) -> str:
    """Spread workers over the GPUs: worker i trains on GPU i mod n (several trials share a GPU); a GPU named
    (``cuda:N``, which ``run_folder.check_device`` lets through) must be there, or every trial would fail in torch."""
    if device.startswith("cuda:"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise AutoDNNError(f"device {device!r} was given but no CUDA GPU is available; use 'auto' or 'cpu'")
        index = int(device.partition(":")[2])
        if index >= count:
            raise AutoDNNError(f"device {device!r} names GPU {index}, but this machine has {count} "
                               f"(cuda:0 to cuda:{count - 1}); use 'cuda' or one of those")
        return device
    if device not in ("auto", "cuda"):
        return device
    if not torch.cuda.is_available():
        if device == "cuda":
            raise AutoDNNError("--device cuda was given but no CUDA GPU is available; use --device auto or cpu")
        return "cpu"
    return f"cuda:{worker_index % torch.cuda.device_count()}"


def progress_step(done: int, planned: int) -> int:
    """The pruner's step: the percent (1..100) of the planned training done, rounded up.

    Trials with different epoch counts (a time budget caps each trial's epochs) are then compared at the
    same fraction of their own schedule, not at the same raw epoch. Integer arithmetic, so the step of
    the last unit of work is exactly 100.
    """
    if not 0 < done <= planned:
        raise ValueError(f"done must be in 1..planned, got {done=}, {planned=}")
    return -(-100 * done // planned)


def epoch_step(epoch: int, max_epochs: int, *, fold: int = 0, n_folds: int = 1) -> int:
    """The pruner's step after `epoch` (0-based) of fold `fold` (0-based) of `n_folds`, each of `max_epochs`.

    The folds of a cross-validated trial share one 1..100 scale: fold f's epochs are units
    f * max_epochs + 1 .. (f + 1) * max_epochs of n_folds * max_epochs, so later folds never reuse a step.
    """
    if not (0 <= epoch < max_epochs and 0 <= fold < n_folds):
        raise ValueError(f"need 0 <= epoch < max_epochs and 0 <= fold < n_folds, got {epoch=}, {max_epochs=}, "
                         f"{fold=}, {n_folds=}")
    return progress_step(fold * max_epochs + epoch + 1, n_folds * max_epochs)


class EpochReporter(Callback):
    """Reports the validation metric after each epoch at the percent of planned training done, prunes
    bad trials, and stops at the deadline.

    Optuna ignores a second report at the same step, so when several epochs map to one percent (more
    than 100 planned epochs) only the first is reported: the steps strictly increase. A trial that has
    done all its planned training (step 100) is never pruned: that saves nothing and loses its net.
    ``learning_curve`` (``curve``) keeps one value per epoch. A cross-validated trial reports its folds
    on the same scale: one reporter, ``n_folds``, and ``start_fold(f)`` before training fold f. What it
    reports is then the running estimate of its final value (the mean of the folds' best values): the
    finished folds' bests and the current fold's best so far, so a rung inside fold 2 compares trials by
    fold 1's result and fold 2's progress, not by one early epoch of a freshly initialised fold net.
    """

    def __init__(self, trial: optuna.Trial, metric: str, should_stop: Callable[[], bool], *, max_epochs: int,
                 n_folds: int = 1) -> None:
        self.trial, self.metric, self.should_stop = trial, metric, should_stop
        self.max_epochs, self.n_folds, self.fold = max_epochs, n_folds, 0
        self.sign = 1.0 if metrics.direction(metric) == "minimize" else -1.0
        self.curve: list[float | None] = []
        self.epoch_seconds = 0.0
        self.last_step = 0
        self.fold_bests: list[float] = []  # lower-is-better best of each finished fold
        self.fold_best = math.inf  # of the current fold so far
        self.protected = not PRUNE_PORTFOLIO and _is_enqueued(trial)  # reports, but is never pruned

    def start_fold(self, fold: int) -> None:
        """The next epochs belong to fold `fold` (0-based); their steps continue after the earlier folds'."""
        if not 0 <= fold < self.n_folds:
            raise ValueError(f"fold must be in 0..{self.n_folds - 1}, got {fold=}")
        if fold != self.fold:
            self.fold_bests.append(self.fold_best)
            self.fold_best = math.inf
        self.fold = fold

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool:
        value = self.sign * logs["score"]  # the trainer's score is the metric made lower-is-better
        self.curve.append(finite_or_none(value))
        self.epoch_seconds += float(logs.get("seconds", 0.0))
        if math.isfinite(value):  # every epoch counts for the fold's best, reported or not
            self.fold_best = min(self.fold_best, logs["score"])
        step = epoch_step(epoch, self.max_epochs, fold=self.fold, n_folds=self.n_folds)
        if math.isfinite(value) and step > self.last_step:
            self.last_step = step
            value = self._estimate(value)
            self.trial.report(value, step)
            # should_prune records the value at a rung, so a protected trial still sets the bar there
            if step < 100 and self.trial.should_prune() and not self.protected:
                self._prune(epoch, step, value)
        return self.should_stop()

    def _estimate(self, value: float) -> float:
        """The value reported for this epoch: the epoch's own, or a CV trial's running mean of fold bests."""
        if self.n_folds == 1:
            return value
        finished = [b for b in self.fold_bests if math.isfinite(b)]
        return self.sign * float(np.mean([*finished, self.fold_best]))

    def _prune(self, epoch: int, step: int, value: float) -> None:
        where = f"{step}% of the planned training (epoch {epoch + 1} of {self.max_epochs}"
        where += f", fold {self.fold + 1} of {self.n_folds})" if self.n_folds > 1 else ")"
        self.trial.set_user_attr("prune_reason", f"pruned at {where}: {self.metric}={value:.5g}")
        self.trial.set_user_attr("learning_curve", self.curve)
        self.trial.set_user_attr("epoch_seconds", round(self.epoch_seconds, 3))
        raise optuna.TrialPruned(f"{self.metric}={value:.5g} at {where}")


def _frozen(trial: optuna.Trial) -> FrozenTrial | None:
    """The running trial's stored record: its system attributes (an enqueued trial's fixed params) and user ones."""
    return next((t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number), None)


def _is_enqueued(trial: optuna.Trial) -> bool:
    """Whether the trial is one of the enqueued first trials (Optuna marks them with their fixed params)."""
    frozen = _frozen(trial)
    return frozen is not None and "fixed_params" in frozen.system_attrs


def finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def failure_reason(exc: BaseException) -> str:
    text = first_line(exc, limit=500) if str(exc).strip() else ""
    if "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return f"out of memory: {text or type(exc).__name__}"
    return f"{type(exc).__name__}: {text}"[:500]


# --- large tables (issue 13): what an epoch of the search's nets costs per row ----------------------

PROBE_NETS = 4  # the space's first (enqueued) trials, topped up with random draws of the space
PROBE_ROWS = 2048  # training rows a probe net steps through: enough for a full batch of any size searched


def probe_row_seconds(run: RunDir, spec: dict[str, Any], space: SearchSpace, *, device: str, threads: int | None,
                      seed: int = 0, amp: bool | None = None) -> float:
    """The mean seconds per training row of an epoch of the nets the search will try first.

    Each net takes a few real optimizer steps (``train.estimate_epoch_seconds``) on the first PROBE_ROWS
    training rows of its scaling, in the search's device and threads; ``search_rows.decide`` sizes the
    trials' sample of the rows from it. 0 when no net could be built (then every row is used).
    """
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created" line for a throwaway study
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    for params in space.first_trials(spec["task"])[:PROBE_NETS]:
        study.enqueue_trial(params, skip_if_exists=True)
    task, dev = spec["task"], worker_device(device, 0)
    d_out = len(spec.get("classes") or []) if task == "multiclass" else 1
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    costs = []
    try:
        for _ in range(PROBE_NETS):
            settings = with_amp(settings_from_values(suggest(study.ask(), space), seed=seed), amp, dev)
            try:
                costs.append(_probe(run, settings, task=task, d_out=d_out, device=dev))
            except (RuntimeError, ValueError, MemoryError):  # a net this run cannot build says nothing about cost
                continue
    finally:
        torch.set_num_threads(previous)
    return float(np.mean(costs)) if costs else 0.0


def _probe(run: RunDir, settings: TrialSettings, *, task: str, d_out: int, device: str) -> float:
    """Seconds per training row of one epoch of ``settings``' net (its forward, backward and step)."""
    from safetensors import safe_open

    with safe_open(str(run.data_path(settings.scaling)), framework="np") as f:
        n = min(PROBE_ROWS, f.get_slice("y_train").get_shape()[0])  # safetensors refuses a slice past the end
        X, y = f.get_slice("X_train")[0:n], f.get_slice("y_train")[0:n]
    pre = FeaturePreprocessor.from_dict(read_json(run.preprocess_path(settings.scaling)))
    torch.manual_seed(settings.train.seed)
    settings, bins = embedding_inputs(settings, pre, X, y)
    model = build_mlp(settings.net, d_in=X.shape[1], d_out=d_out, bins=bins)
    batch = max(2, min(settings.train.batch_size, len(X)))
    epoch = estimate_epoch_seconds(model, TrainData(X, y, X[:batch], y[:batch]), settings.train, task=task,
                                   device=device)
    steps = math.ceil(len(X) / batch) + 1 / 3  # the probe's validation term is one forward-only batch
    return epoch / steps / batch


def _why_not_finite(result: TrainResult, metric: str) -> str:
    """A failed trial's reason: the net diverged, or only its score is undefined on the rows it is judged on."""
    last = result.history[-1] if result.history else {}
    losses = [last.get("train_loss", math.nan), last.get("valid_loss", math.nan)]
    if all(math.isfinite(v) for v in losses):
        return f"its validation {metric} is undefined (NaN) on these rows"
    return "diverged: the loss became NaN or infinite"
