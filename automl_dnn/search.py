"""The Optuna study: storage, sampler, pruner, the objective, per-trial artifacts, budget and resume.

One worker runs in-process; ``jobs > 1`` starts that many worker processes (not threads: trials are
Python-heavy) on one study. A lease (``worker`` user attribute: host, pid, heartbeat) on every running
trial lets any worker fail trials whose worker died, whatever the storage, since only Optuna's RDB
storages have heartbeats of their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import optuna
from optuna.trial import TrialState

from automl_dnn import metrics
from automl_dnn.errors import AutoDNNError, StorageError
from automl_dnn.run import (
    RUN_FORMAT,
    RunDir,
    atomic_write,
    check_output_dir,
    load_arrays,
    read_json,
    save_arrays,
    write_json,
)
from automl_dnn.space import SearchSpace, TrialSettings, load_space, settings_from_values, suggest
from automl_dnn.storage import Lease, check_storage_for_jobs, open_storage, reap_stale_trials, redact
from automl_dnn.train import Callback

DEFAULT_TIME_BUDGET = 600.0  # seconds, when neither --time-budget nor --n-trials is given
MAX_FAILURES_IN_A_ROW = 10  # a worker whose last trials all failed stops: the space or data is broken
TRIALS_PER_BUDGET = 8  # on a time budget, epochs are capped so that a trial takes about budget / 8
MIN_EPOCHS = 5
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class SearchOptions:
    """Everything ``automl-dnn search`` takes; the API and the CLI share it."""

    source: Any  # a path, "builtin:NAME", or a pandas DataFrame
    out: Path
    target: str | None = None
    task: str = "auto"
    space: str = "default"
    time_budget: float | None = None
    n_trials: int | None = None
    metric: str | None = None
    storage: str | None = None
    study_name: str | None = None
    artifacts: Path | None = None
    jobs: int = 1
    threads: int | None = None
    valid_size: float = 0.15
    test_size: float = 0.15
    device: str = "auto"
    amp: bool = False  # bf16 autocast on CUDA
    pruner: str = "hyperband"
    seed: int = 0
    quiet: bool = False


@dataclass
class SearchSummary:
    run_dir: Path
    study_name: str
    storage: str
    task: str
    metric: str
    direction: str
    n_complete: int
    n_pruned: int
    n_failed: int
    seconds: float
    best: list[dict[str, Any]] = field(default_factory=list)  # best trials, best first
    notes: list[str] = field(default_factory=list)
    stopped_by: str = ""


# --- preparing the run folder -------------------------------------------------------------------


def prepare_run(options: SearchOptions) -> dict[str, Any]:
    """Create or reopen the run folder; returns its spec (run.json). Refuses to mix different searches."""
    from automl_dnn.data import FeaturePreprocessor, load_dataset

    run = RunDir(check_output_dir(options.out, "run folder"))
    if options.artifacts is not None:
        check_output_dir(options.artifacts, "artifacts folder")
    space = load_space(options.space)
    dataset = load_dataset(
        options.source,
        target=options.target,
        task=options.task,
        valid_size=options.valid_size,
        test_size=options.test_size,
        seed=options.seed,
    )
    metric = options.metric or metrics.default_metric(dataset.task)
    metrics.check_metric(metric, dataset.task)
    fingerprint = _fingerprint(dataset.fingerprint(), dataset.target, dataset.task, space.fingerprint(),
                               options.valid_size, options.test_size, options.seed, metric)
    storage = resolve_storage_url(options, run)
    spec = {
        "format": RUN_FORMAT,
        "run_dir": str(run.root.resolve()),
        "source": _keep_source(options.source, run),
        "target": dataset.target,
        "task": dataset.task,
        "task_rule": dataset.task_rule,
        "classes": dataset.target_encoder.classes,
        "metric": metric,
        "direction": metrics.direction(metric),
        "space": _describe_space(options.space),
        "space_fingerprint": space.fingerprint(),
        "data_fingerprint": dataset.fingerprint(),
        "fingerprint": fingerprint,
        "valid_size": options.valid_size,
        "test_size": options.test_size,
        "seed": options.seed,
        "storage": storage,
        "study_name": options.study_name or run.root.resolve().name,
        "artifacts": str(Path(options.artifacts).resolve()) if options.artifacts else str(run.root.resolve() / "artifacts"),
        "notes": list(dataset.notes),
    }
    if run.exists():
        old = run.read_spec()
        if old["fingerprint"] != fingerprint:
            raise StorageError(
                f"run folder {str(run.root)!r} holds a search of other data, target, task, space, split or metric "
                f"({_what_changed(old, spec)}); use a new --out, or the same arguments to resume"
            )
        if options.storage is None:
            spec["storage"] = old["storage"]
        if options.study_name is None:
            spec["study_name"] = old["study_name"]
        if options.artifacts is None:
            spec["artifacts"] = old["artifacts"]
        spec["notes"] = old.get("notes", spec["notes"])
    check_storage_for_jobs(spec["storage"], options.jobs)
    open_storage(spec["storage"])  # a URL that cannot be opened is never recorded in run.json
    expected = [run.split_path, run.target_path] + [run.data_path(s) for s in scalings_of(space)]
    if not all(path.exists() for path in expected):
        notes = _write_data(run, dataset, space, FeaturePreprocessor)
        spec["notes"] = list(dict.fromkeys(list(dataset.notes) + notes))
    write_json(run.spec_path, spec)
    return spec


def _write_data(run: RunDir, dataset: Any, space: SearchSpace, preprocessor_cls: type) -> list[str]:
    """Fit the preprocessing on train for every scaling the space can choose; save encoded matrices.

    Returns the preprocessing's notes (dropped columns, coerced values, ...) for the run's summary.
    """
    notes: list[str] = []
    save_arrays(run.split_path, {part: dataset.split[part].astype(np.int64) for part in ("train", "valid", "test")})
    write_json(run.target_path, dataset.target_encoder.to_dict())
    for scaling in scalings_of(space):
        pre = preprocessor_cls().fit(dataset.frame("train"), scaling=scaling)
        arrays = {}
        for part in ("train", "valid", "test"):
            arrays[f"X_{part}"] = pre.transform(dataset.frame(part)).astype(np.float32)
            arrays[f"y_{part}"] = dataset.labels(part)
        save_arrays(run.data_path(scaling), arrays)
        write_json(run.preprocess_path(scaling), pre.to_dict())
        notes.extend(pre.notes)
    return list(dict.fromkeys(notes))


def scalings_of(space: SearchSpace) -> list[str]:
    """Every input scaling a trial of this space may use."""
    values: set[str] = set()
    for param in space.params:
        if param.field == "scaling":
            values.update(param.choices if param.type == "categorical" else [param.value])
    return sorted(values) or ["standard"]


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _what_changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = ("data_fingerprint", "target", "task", "space_fingerprint", "valid_size", "test_size", "seed", "metric")
    names = {"data_fingerprint": "data", "space_fingerprint": "space"}
    changed = [names.get(k, k) for k in keys if old.get(k) != new.get(k)]
    return "different " + ", ".join(changed) if changed else "different settings"


def _keep_source(source: Any, run: RunDir) -> str:
    """Where the ensemble step finds the table again: the file, the builtin, or a Parquet copy of a DataFrame."""
    if isinstance(source, (str, os.PathLike)):
        return str(source) if str(source).startswith("builtin:") else str(Path(source).resolve())
    path = run.root.resolve() / "source.parquet"
    try:
        atomic_write(path, lambda tmp: source.to_parquet(tmp, index=False))
    except Exception:  # e.g. an object column mixing types, which Parquet cannot hold
        return "<DataFrame>"
    return str(path)


def _describe_space(space: str) -> str:
    path = Path(space)
    return str(path.resolve()) if path.suffix in (".yaml", ".yml") or path.exists() else space


# --- storage ------------------------------------------------------------------------------------


def resolve_storage_url(options: SearchOptions, run: RunDir) -> str:
    """The storage URL: the user's, else a SQLite file (one worker) or a journal file (several)."""
    if options.storage:
        return options.storage
    if run.default_journal.exists() or (options.jobs > 1 and not run.default_sqlite.exists()):
        return f"journal:///{run.default_journal.resolve()}"
    return f"sqlite:///{run.default_sqlite.resolve()}"


def make_sampler(seed: int, *, several_workers: bool) -> optuna.samplers.BaseSampler:
    """Multivariate TPE that models conditional parameters by group; liars keep workers apart."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=several_workers, n_startup_trials=10
        )


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, max_resource=max(max_epochs, 3), reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
    return optuna.pruners.NopPruner()


def open_study(spec: dict[str, Any], *, seed: int, pruner: str = "hyperband", several_workers: bool = False,
               create: bool = True) -> optuna.Study:
    """Open (or create) the run's study with a seeded TPE sampler and the chosen pruner."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(spec["storage"])
    space = load_space(spec["space"])
    max_epochs = max([int(p.value) for p in space.params if p.field == "max_epochs" and p.type == "fixed"] or [100])
    kwargs = {
        "storage": storage,
        "study_name": spec["study_name"],
        "sampler": make_sampler(seed, several_workers=several_workers),
        "pruner": make_pruner(pruner, max_epochs),
    }
    try:
        if create:
            study = optuna.create_study(direction=spec["direction"], load_if_exists=True, **kwargs)
        else:
            study = optuna.load_study(**kwargs)
    except KeyError:
        raise StorageError(f"no study named {spec['study_name']!r} in {redact(spec['storage'])}") from None
    except AutoDNNError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot open study {spec['study_name']!r} in {redact(spec['storage'])}: {reason}") from None
    if study.direction.name.lower() != spec["direction"]:
        raise StorageError(f"study {spec['study_name']!r} already exists with direction {study.direction.name.lower()}")
    _check_study_fingerprint(study, spec, create)
    return study


def _check_study_fingerprint(study: optuna.Study, spec: dict[str, Any], create: bool) -> None:
    """Workers on other machines join a study only for the same data, target, task, space and split."""
    recorded = study.user_attrs.get("fingerprint")
    if recorded is None and create:
        study.set_user_attr("fingerprint", spec["fingerprint"])
        study.set_user_attr("task", spec["task"])
        study.set_user_attr("metric", spec["metric"])
    elif recorded is not None and recorded != spec["fingerprint"]:
        raise StorageError(
            f"study {spec['study_name']!r} in {redact(spec['storage'])} searches other data, target, task, space "
            "or split; use another --study name, or the same arguments as its other workers"
        )


def enqueue_defaults(study: optuna.Study, space: SearchSpace) -> None:
    """Enqueue the space's practical-default trials, once, when the study is new."""
    if study.get_trials(deepcopy=False):
        return
    for params in space.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)


# --- the objective ------------------------------------------------------------------------------


class StopFlag:
    """Set by SIGINT or the deadline; the epoch callback reads it and cuts the trial short."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.interrupted = False

    def should_stop(self) -> bool:
        return self.interrupted or (self.deadline is not None and time.time() >= self.deadline)


class TrialFailed(Exception):
    """A trial that could not produce a model (diverged from the start, ran out of memory, raised)."""


@dataclass
class WorkerContext:
    """What a worker needs to run trials: picklable, so worker processes can be spawned with it."""

    run_dir: str
    spec: dict[str, Any]
    deadline: float | None
    n_trials: int | None
    seed: int
    pruner: str
    device: str
    threads: int | None
    several_workers: bool
    worker_index: int = 0
    amp: bool = False
    time_budget: float | None = None  # seconds of the whole search, when it has a time budget


class Objective:
    """Builds the trial's net, trains it reporting each epoch to the pruner, and stores its artifacts."""

    def __init__(self, ctx: WorkerContext, stop: StopFlag) -> None:
        from automl_dnn.data import TargetEncoder

        self.ctx, self.stop = ctx, stop
        self.run = RunDir(Path(ctx.run_dir))
        self.space = load_space(ctx.spec["space"])
        self.task, self.metric = ctx.spec["task"], ctx.spec["metric"]
        self.encoder = TargetEncoder.from_dict(read_json(self.run.target_path))
        self._data: dict[str, dict[str, np.ndarray]] = {}
        self.artifacts = Path(ctx.spec["artifacts"])
        self.device = worker_device(ctx.device, ctx.worker_index)

    def data(self, scaling: str) -> dict[str, np.ndarray]:
        if scaling not in self._data:
            self._data[scaling] = load_arrays(self.run.data_path(scaling))
        return self._data[scaling]

    def user_space(self, pred: np.ndarray) -> np.ndarray:
        """Predictions as the user sees them: probabilities, or values on the original scale."""
        return pred if self.task != "regression" else self.encoder.decode(pred).astype(np.float64)

    def true_values(self, y: np.ndarray) -> np.ndarray:
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
                reason = _failure_reason(exc)
                trial.set_user_attr("fail_reason", reason)
                raise TrialFailed(reason) from exc

    def _check_slot(self, trial: optuna.Trial) -> None:
        """Workers on other machines may race for the last slots: later trials beyond the total give way."""
        if self.ctx.n_trials is None:
            return
        study = trial.study
        ahead = [t for t in study.get_trials(deepcopy=False, states=FINISHED + (TrialState.RUNNING,))
                 if t.number < trial.number]
        if len(ahead) >= self.ctx.n_trials:
            raise TrialFailed(f"not run: the study already has its {self.ctx.n_trials} trials")

    def _fit_to_budget(self, trial: optuna.Trial, settings: TrialSettings, model: Any, data: Any) -> TrialSettings:
        """On a time budget, cap the epochs so that one trial takes about 1/TRIALS_PER_BUDGET of it.

        Large tables would otherwise spend the whole budget on one or two trials, and a 1cycle schedule
        laid over 100 epochs would be cut off at its peak learning rate; capped, it runs to its end.
        Without a time budget nothing changes, so ``--n-trials`` searches stay deterministic.
        """
        from automl_dnn.train import estimate_epoch_seconds

        if self.ctx.time_budget is None:
            return settings
        epoch = estimate_epoch_seconds(model, data, settings.train, task=self.task, device=self.device)
        cap = max(MIN_EPOCHS, int(self.ctx.time_budget / TRIALS_PER_BUDGET / max(epoch, 1e-6)))
        if cap >= settings.train.max_epochs:
            return settings
        patience = min(settings.train.patience, max(3, cap // 4))
        trial.set_user_attr("max_epochs_for_budget", cap)
        train = dataclasses.replace(settings.train, max_epochs=cap, patience=patience)
        return dataclasses.replace(settings, train=train)

    def _run_trial(self, trial: optuna.Trial) -> float:
        self._check_slot(trial)
        import torch

        from automl_dnn.model import build_mlp, count_parameters
        from automl_dnn.train import TrainData, predict, train

        settings = settings_from_values(suggest(trial, self.space), seed=self.ctx.seed * 100_003 + trial.number)
        data = self.data(settings.scaling)
        d_out = len(self.encoder.classes) if self.task == "multiclass" else 1
        torch.manual_seed(settings.train.seed)  # the initial weights too must follow the seed
        model = build_mlp(settings.net, d_in=data["X_train"].shape[1], d_out=d_out)
        train_data = TrainData(data["X_train"], data["y_train"], data["X_valid"], data["y_valid"])
        settings = self._fit_to_budget(trial, settings, model, train_data)
        y_valid = self.true_values(data["y_valid"])
        reporter = _EpochReporter(trial, self)
        result = train(
            model,
            train_data,
            settings.train,
            task=self.task,
            device=self.device,
            amp=self.ctx.amp,
            callbacks=[reporter],
            score_fn=lambda pred: metrics.as_loss(self.metric, metrics.score(self.metric, y_valid, self.user_space(pred))),
            threads=self.ctx.threads,
        )
        if result.best_epoch is None or not math.isfinite(result.best_score):
            raise TrialFailed(f"diverged: the loss became NaN or infinite at epoch {result.epochs_run}")
        valid_pred = self.user_space(predict(model, data["X_valid"], task=self.task, device=self.device))
        test_pred = (
            self.user_space(predict(model, data["X_test"], task=self.task, device=self.device))
            if len(data["X_test"])
            else np.zeros((0,) + valid_pred.shape[1:])
        )
        value = metrics.score(self.metric, y_valid, valid_pred)
        scores = metrics.all_scores(self.task, y_valid, valid_pred)
        self._save_artifacts(trial, model, settings, data["X_train"].shape[1], d_out, valid_pred, test_pred, scores)
        trial.set_user_attr("status", result.status)
        trial.set_user_attr("summary", describe_settings(settings))
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("n_params", count_parameters(model))
        trial.set_user_attr("train_seconds", round(result.train_seconds, 3))
        trial.set_user_attr("epoch_seconds", round(sum(h["seconds"] for h in result.history), 3))
        trial.set_user_attr("device", str(result.device))
        trial.set_user_attr("valid_scores", {k: _finite(v) for k, v in scores.items()})
        trial.set_user_attr("learning_curve", reporter.curve)
        trial.set_user_attr("train_loss_curve", [_finite(h["train_loss"]) for h in result.history])
        if self.stop.should_stop() and result.status == "stopped":
            trial.set_user_attr("cut_short", True)
        return value

    def _save_artifacts(self, trial: optuna.Trial, model: Any, settings: TrialSettings, d_in: int, d_out: int,
                        valid_pred: np.ndarray, test_pred: np.ndarray, scores: dict[str, float]) -> None:
        """Write weights, config and predictions to a temporary folder, then rename it into place."""
        import shutil
        import tempfile

        from safetensors.torch import save_file

        final = self.artifacts / f"trial-{trial.number:05d}"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=self.artifacts))
        try:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(tmp / "weights.safetensors"))
            config = {"settings": settings.to_dict(), "d_in": d_in, "d_out": d_out, "task": self.task,
                      "trial_number": trial.number, "valid_scores": scores, "metric": self.metric}
            (tmp / "config.json").write_text(json.dumps(config, indent=2, default=float), encoding="utf-8")
            save_arrays(tmp / "predictions.safetensors", {"valid": valid_pred, "test": test_pred})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        trial.set_user_attr("artifacts", str(final))


def worker_device(device: str, worker_index: int) -> str:
    """Spread workers over the GPUs: worker i trains on GPU i mod n (several trials share a GPU)."""
    if device not in ("auto", "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        if device == "cuda":
            raise AutoDNNError("--device cuda was given but no CUDA GPU is available; use --device auto or cpu")
        return "cpu"
    return f"cuda:{worker_index % torch.cuda.device_count()}"


class _EpochReporter(Callback):
    """Reports the validation metric each epoch, prunes bad trials, and stops at the deadline."""

    def __init__(self, trial: optuna.Trial, objective: Objective) -> None:
        self.trial, self.objective = trial, objective
        self.sign = 1.0 if metrics.direction(objective.metric) == "minimize" else -1.0
        self.curve: list[float | None] = []
        self.epoch_seconds = 0.0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool:
        value = self.sign * logs["score"]  # the trainer's score is the metric made lower-is-better
        self.curve.append(_finite(value))
        self.epoch_seconds += float(logs.get("seconds", 0.0))
        if math.isfinite(value):
            self.trial.report(value, epoch)
            if self.trial.should_prune():
                self.trial.set_user_attr("prune_reason", f"pruned at epoch {epoch}: {self.objective.metric}={value:.5g}")
                self.trial.set_user_attr("learning_curve", self.curve)
                self.trial.set_user_attr("epoch_seconds", round(self.epoch_seconds, 3))
                raise optuna.TrialPruned(f"{self.objective.metric}={value:.5g} at epoch {epoch}")
        return self.objective.stop.should_stop()


def describe_settings(settings: TrialSettings) -> dict[str, str]:
    """The key hyperparameters of a trial in three short strings (tables, dashboard, ensemble report)."""
    net, train = settings.net, settings.train
    extras = [f"bn-{net.batchnorm}" if net.batchnorm != "none" else "",
              f"{'alpha-' if net.dropout_kind == 'alpha' else ''}drop {net.dropout:.2f}" if net.dropout else "",
              "quantile" if settings.scaling == "quantile" else ""]
    return {
        "net": " ".join([f"{net.n_layers}x{net.d_hidden}", net.activation] + [e for e in extras if e]),
        "optimizer": f"{train.optimizer} {train.lr:.2g}",
        "schedule": train.schedule,
    }


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _failure_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return f"out of memory: {text or type(exc).__name__}"
    return f"{type(exc).__name__}: {text}"[:500]


# --- workers ------------------------------------------------------------------------------------


@contextmanager
def _sigint_stops(stop: StopFlag) -> Iterator[None]:
    """First Ctrl-C: finish the current epoch, keep the trial, stop. Second: interrupt at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.interrupted:
            raise KeyboardInterrupt
        stop.interrupted = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def run_worker(ctx: WorkerContext, on_trial: Callable[[optuna.Study], None] | None = None,
               stop: StopFlag | None = None) -> None:
    """Run trials until the trial count, the deadline, or Ctrl-C; never more than ``n_trials`` in total."""
    # Failed trials are counted on screen and keep their reason in the study; no traceback per trial.
    stop = stop or StopFlag(ctx.deadline)
    if ctx.threads:
        import torch

        torch.set_num_threads(ctx.threads)
    study = open_study(ctx.spec, seed=ctx.seed + ctx.worker_index, pruner=ctx.pruner,
                       several_workers=ctx.several_workers, create=False)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    objective = Objective(ctx, stop)
    lock = _TrialSlotLock(Path(ctx.run_dir) / ".trial-slot.lock")
    failures_in_a_row = 0
    with _sigint_stops(stop):
        while not stop.should_stop() and failures_in_a_row < MAX_FAILURES_IN_A_ROW:
            reap_stale_trials(study)
            with lock:
                if ctx.n_trials is not None and _count(study, FINISHED + (TrialState.RUNNING,)) >= ctx.n_trials:
                    break
                # The objective releases the slot lock as soon as its trial is RUNNING in the storage.
                finished: list[TrialState] = []
                study.optimize(_releasing(objective, lock), n_trials=1, catch=(TrialFailed,),
                               callbacks=[lambda s, t: _after_trial(s, t, finished, on_trial)])
            failures_in_a_row = failures_in_a_row + 1 if finished == [TrialState.FAIL] else 0


def _after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, finished: list[TrialState],
                 on_trial: Callable[[optuna.Study], None] | None) -> None:
    finished.append(trial.state)
    if on_trial:
        on_trial(study)


def _releasing(objective: Objective, lock: _TrialSlotLock) -> Callable[[optuna.Trial], float]:
    def run(trial: optuna.Trial) -> float:
        lock.release()
        return objective(trial)

    return run


class _TrialSlotLock:
    """An inter-process file lock held from "is there a trial slot left?" until the trial is RUNNING.

    It makes ``--n-trials`` exact for local workers; workers on other machines rely on the count check.
    """

    def __init__(self, path: Path) -> None:
        self.path, self._fd = path, None

    def __enter__(self) -> _TrialSlotLock:
        import fcntl

        self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _worker_process(ctx: WorkerContext) -> None:
    """Entry point of a spawned worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into SIGTERM-free stop files
    stop = _FileStop(Path(ctx.run_dir) / ".stop", ctx.deadline)
    run_worker(ctx, stop=stop)


class _FileStop(StopFlag):
    """Worker processes stop when the parent creates the stop file (after a Ctrl-C)."""

    def __init__(self, path: Path, deadline: float | None) -> None:
        super().__init__(deadline)
        self.path = path

    def should_stop(self) -> bool:
        return super().should_stop() or self.path.exists()


# --- the search ---------------------------------------------------------------------------------


def run_search(options: SearchOptions, *, on_progress: Callable[[dict[str, Any]], None] | None = None,
               on_prepared: Callable[[dict[str, Any], float | None], None] | None = None) -> SearchSummary:
    """Run (or resume) a search; returns the study's summary.

    ``on_prepared(spec, deadline)`` is called once the run folder holds the split and the preprocessing,
    before the first trial: ``fit`` starts XGBoost there, to train beside the nets.
    """
    started = time.time()
    budget = options.time_budget
    if budget is None and options.n_trials is None:
        budget = DEFAULT_TIME_BUDGET
    spec = prepare_run(options)
    deadline = started + budget if budget is not None else None
    if on_prepared is not None:
        on_prepared(spec, deadline)
    study = open_study(spec, seed=options.seed, pruner=options.pruner, several_workers=options.jobs > 1)
    enqueue_defaults(study, load_space(spec["space"]))
    reap_stale_trials(study)
    ctx = WorkerContext(
        run_dir=str(Path(options.out).resolve()), spec=spec, deadline=deadline, n_trials=options.n_trials,
        seed=options.seed, pruner=options.pruner, device=options.device, amp=options.amp, threads=options.threads,
        time_budget=budget,
        several_workers=options.jobs > 1 or not spec["storage"].startswith("sqlite"),
    )
    stop = StopFlag(deadline)
    progress = (lambda s: on_progress(progress_of(s, started, deadline))) if on_progress else None
    if options.jobs == 1:
        run_worker(ctx, on_trial=progress, stop=stop)
    else:
        _run_processes(ctx, options.jobs, stop, progress, study)
    summary = summarize(study, spec, Path(options.out), time.time() - started)
    summary.stopped_by = "interrupted" if stop.interrupted else "budget"
    if summary.n_complete == 0:
        reasons = [t.user_attrs.get("fail_reason") for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]
        reasons = [r for r in reasons if r]
        if stop.interrupted:
            raise AutoDNNError("interrupted before any trial completed; run the same command again to resume")
        if reasons:
            raise AutoDNNError(f"all {len(reasons)} trials failed; first reason: {reasons[0]}")
        if summary.n_pruned == 0:
            raise AutoDNNError("the time budget ended before any trial completed; give a larger --time-budget")
    return summary


def _run_processes(ctx: WorkerContext, jobs: int, stop: StopFlag, progress: Callable[[optuna.Study], None] | None,
                   study: optuna.Study) -> None:
    import multiprocessing as mp

    stop_file = Path(ctx.run_dir) / ".stop"
    stop_file.unlink(missing_ok=True)
    spawn = mp.get_context("spawn")
    workers = [spawn.Process(target=_worker_process, args=(dataclasses.replace(ctx, worker_index=i),), daemon=False)
               for i in range(jobs)]
    for w in workers:
        w.start()
    try:
        with _sigint_stops(stop):
            while any(w.is_alive() for w in workers):
                if stop.interrupted and not stop_file.exists():
                    stop_file.touch()
                for w in workers:
                    w.join(timeout=1.0 / jobs)
                if progress:
                    progress(study)
    finally:
        for w in workers:
            w.join()
        stop_file.unlink(missing_ok=True)
    reap_stale_trials(study)


def progress_of(study: optuna.Study, started: float, deadline: float | None) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        best = (min if study.direction.name == "MINIMIZE" else max)(t.value for t in complete)
    now = time.time()
    return {
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
        "running": states.count(TrialState.RUNNING),
        "best": best,
        "elapsed": now - started,
        "remaining": None if deadline is None else max(0.0, deadline - now),
    }


def summarize(study: optuna.Study, spec: dict[str, Any], run_dir: Path, seconds: float, top: int = 5) -> SearchSummary:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    reverse = spec["direction"] == "maximize"
    complete.sort(key=lambda t: t.value, reverse=reverse)
    best = [
        {"number": t.number, "value": t.value, "params": dict(t.params), "summary": t.user_attrs.get("summary", {}),
         "epochs": t.user_attrs.get("epochs_run"), "seconds": t.user_attrs.get("train_seconds")}
        for t in complete[:top]
    ]
    return SearchSummary(
        run_dir=run_dir, study_name=spec["study_name"], storage=redact(spec["storage"]), task=spec["task"],
        metric=spec["metric"], direction=spec["direction"],
        n_complete=len(complete), n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == TrialState.FAIL for t in trials), seconds=seconds, best=best,
        notes=list(spec.get("notes", [])),
    )
