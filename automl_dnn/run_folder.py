"""The run folder: everything a search keeps, laid out so the ensemble step never retrains.

```
RUN_DIR/
  run.json                 what was searched (source, target, task, metric, space, fingerprints, storage)
  data/<scaling>.safetensors   encoded train/valid/test matrices and targets, one file per input scaling
  preprocess/<scaling>.json    the fitted preprocessing (plain JSON)
  target.json              the fitted target encoder
  split.safetensors        row indices of each split in the source table
  ensemble.json            the last ensemble step's report: every candidate, weights, scores, notes
  report.html              the report page (`automl-dnn report RUN`; `fit` writes MODEL-report.html instead)
  bagging/<member>/<fold>/ k-fold bagging's fold models (weights, config, predictions), reused on a rerun
  xgboost-tuning/          XGBoost's completed tuning trials (trials.json) and best booster so far (best-NNNNN.ubj),
                           resumed by a rerun (gbt_state.py)
  source.parquet           a copy of an in-memory DataFrame that was searched (files are read in place)
  study.db                 the Optuna study (SQLite; a journal file or a database URL when several write)
  artifacts/trial-NNNNN/   per completed trial: weights.safetensors, config.json, predictions.safetensors
```
Every file is written to a temporary name and renamed (``files.atomic_write``), so a crash never
leaves half a file behind; a trial's artifacts folder is renamed into place whole. A full disk is one
``DiskFullError`` naming what was being written; what was there before stays as it was.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file as load_tensors
from safetensors.torch import save_file as save_tensors

from automl_dnn import metrics
from automl_dnn.budget import BaggingRequest
from automl_dnn.data import Dataset, FeaturePreprocessor, load_dataset
from automl_dnn.errors import AutoDNNError, StorageError, disk_full_as_error, is_disk_full
from automl_dnn.files import (atomic_write, json_digest, keeping_file_mode, load_arrays, new_temporary_folder,
                              read_json, remove_stale_temporaries, save_arrays, write_arrays, write_json)
from automl_dnn.folds import default_cv_folds, make_folds
from automl_dnn.paths import make_folder
from automl_dnn.space import SearchSpace, load_space
from automl_dnn.storage import absolute_storage_url, check_storage_for_jobs, open_storage, open_study_storage, redact

RUN_FORMAT = 1
PARTS = ("train", "valid", "test")
#: The files of one trial's artifacts folder: the net's weights, its config, its predictions.
WEIGHTS_FILE, CONFIG_FILE, PREDICTIONS_FILE = "weights.safetensors", "config.json", "predictions.safetensors"
TRIAL_FILES = (WEIGHTS_FILE, CONFIG_FILE, PREDICTIONS_FILE)


AUTO_JOBS = "auto"  # --jobs auto: ``workers.auto_workers`` picks the count


@dataclass
class SearchOptions:
    """Everything ``automl-dnn search`` takes; the API and the CLI share it, and run.json records it."""

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
    # worker processes, or AUTO_JOBS (``workers.auto_workers``): the CLI's default; the API's is 1, since spawned
    # workers re-import a user's script, which then needs an ``if __name__ == "__main__":`` guard
    jobs: int | str = 1
    threads: int | None = None
    valid_size: float = 0.15
    test_size: float = 0.15
    device: str = "auto"
    amp: bool | None = None  # bf16 autocast in training (objective.with_amp); None: on a CPU with native bf16
    pruner: str = "halving"  # study.PRUNERS
    seed: int = 0
    quiet: bool = False
    cv_folds: int | None = None  # a trial's value is the mean over k folds; None: 5 below 2,000 rows, else 1
    bagging: BaggingRequest | None = None  # fit: the time to keep for the k-fold bagging after the search
    groups: str | None = None  # a column whose rows stay together in every split and fold (not a feature)
    time_column: str | None = None  # a column that orders the rows in time: test = the latest, folds = periods
    categorical: tuple[str, ...] = ()  # columns of codes (zip codes) read as categories, not numbers

    def __post_init__(self) -> None:
        """The checks the CLI's option types make, for callers of the Python API: one line, before any work."""
        check_time_budget(self.time_budget)
        if isinstance(self.categorical, str):  # categorical="zip" from the API: one column, not three letters
            self.categorical = (self.categorical,)
        self.categorical = tuple(self.categorical)
        if self.jobs != AUTO_JOBS and not _whole(self.jobs, 1):
            raise AutoDNNError(f"jobs must be a whole number >= 1 or 'auto', got {self.jobs!r}")
        check_whole_numbers(n_trials=self.n_trials, threads=self.threads, cv_folds=self.cv_folds)
        if not _whole(self.seed, 0) or self.seed > 2**32 - 1:
            raise AutoDNNError(f"seed must be a whole number from 0 to 2**32 - 1, got {self.seed!r}")
        self.device = check_device(self.device)
        self.storage = None if self.storage is None else absolute_storage_url(self.storage)


def _whole(value: Any, least: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= least


def check_whole_numbers(**values: Any) -> None:
    """Each of ``values`` is None or a whole number >= 1: the CLI's integer options, checked for callers of the Python
    API in one line, before any work (a top_k of 1.5 ended the ensemble step in a TypeError, 0 only after the search)."""
    for name, value in values.items():
        if value is not None and not _whole(value, 1):
            raise AutoDNNError(f"{name} must be a whole number >= 1, got {value!r}")


def check_device(device: Any) -> str:
    """A device is auto, cpu, cuda or cuda:N (the CLI's choices, and one GPU of several), or a ``torch.device`` of
    those (returned as its name): the API's "gpu" or "tpu" failed every trial with torch's error, one after another,
    before the search gave up."""
    name = str(device) if type(device).__name__ == "device" and type(device).__module__ == "torch" else device
    if not (isinstance(name, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", name)):
        raise AutoDNNError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return name


def check_time_budget(seconds: Any) -> None:
    """A time budget is None or a finite number of seconds > 0."""
    if seconds is None:
        return
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not 0 < float(seconds) < math.inf:
        raise AutoDNNError(f"time_budget must be a number of seconds > 0, got {seconds!r}")


class RunDir:
    """Paths of one run folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def spec_path(self) -> Path:
        return self.root / "run.json"

    @property
    def default_sqlite(self) -> Path:
        return self.root / "study.db"

    @property
    def default_journal(self) -> Path:
        return self.root / "study.journal"

    @property
    def split_path(self) -> Path:
        return self.root / "split.safetensors"

    @property
    def target_path(self) -> Path:
        return self.root / "target.json"

    def dev_groups(self) -> np.ndarray | None:
        """The group codes of the development rows (train then valid), when the search had ``--groups``."""
        split = load_arrays(self.split_path)
        if "groups" not in split:
            return None
        return split["groups"][np.concatenate([split["train"], split["valid"]])]

    def dev_time_order(self) -> np.ndarray | None:
        """The time ranks of the development rows (train then valid), when the search had ``--time-column``."""
        split = load_arrays(self.split_path)
        if "time_order" not in split:
            return None
        return split["time_order"][np.concatenate([split["train"], split["valid"]])]

    def fold_keys(self) -> dict[str, np.ndarray | None]:
        """What ``make_folds`` keeps together (groups) or in order (time) for this run's development rows."""
        return {"groups": self.dev_groups(), "order": self.dev_time_order()}

    @property
    def gbt_tuning(self) -> Path:
        """XGBoost's kept tuning (``gbt_state``): a rerun goes on from its completed trials and best booster."""
        return self.root / "xgboost-tuning"

    @property
    def ensemble_path(self) -> Path:
        """The last ``ensemble`` step's report (every candidate, weights, scores, notes, seconds)."""
        return self.root / "ensemble.json"

    @property
    def source_copy(self) -> Path:
        return self.root / "source.parquet"

    def data_path(self, scaling: str) -> Path:
        return self.root / "data" / f"{scaling}.safetensors"

    def preprocess_path(self, scaling: str) -> Path:
        return self.root / "preprocess" / f"{scaling}.json"

    def preprocess_keys(self) -> list[str]:
        """The scalings whose fitted preprocessing the folder holds."""
        return sorted(p.stem for p in (self.root / "preprocess").glob("*.json"))

    def default_storage(self, jobs: int) -> str:
        """A SQLite file for one worker, a journal file for several (SQLite is not safe for them)."""
        if self.default_journal.exists() or (jobs > 1 and not self.default_sqlite.exists()):
            return f"journal:///{self.default_journal.resolve()}"
        return f"sqlite:///{self.default_sqlite.resolve()}"

    def exists(self) -> bool:
        return self.spec_path.is_file()

    def read_spec(self) -> dict[str, Any]:
        if not self.exists():
            raise StorageError(f"{str(self.root)!r} is not a run folder (no run.json); run `automl-dnn search` first")
        spec = read_json(self.spec_path)
        if spec.get("format", 0) > RUN_FORMAT:
            raise StorageError(f"run folder {str(self.root)!r} was written by a newer automl-dnn; upgrade to use it")
        return self._follow_move(spec)

    def _follow_move(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A run folder that was moved or copied uses its own study file, artifacts and source copy."""
        old_root = spec.get("run_dir")
        here = str(self.root.resolve())
        if not old_root or old_root == here:
            return spec
        moved = dict(spec)
        for key in ("storage", "artifacts", "source"):
            value = str(spec.get(key, ""))
            if old_root + "/" in value:
                moved[key] = value.replace(old_root + "/", here + "/")
        return moved


# --- preparing the run folder -------------------------------------------------------------------


def prepare_run(options: SearchOptions, space: SearchSpace | None = None) -> tuple[dict[str, Any], Dataset]:
    """Create or reopen the run folder; returns its spec (run.json) and the data, read once.

    Refuses to mix different searches in one folder. ``space`` is ``load_space(options.space)`` when
    the caller has it already.
    """
    run = RunDir(make_folder(options.out, "run folder"))
    if options.artifacts is not None:
        make_folder(options.artifacts, "artifacts folder")
    space = space or load_space(options.space)
    groups, time_column, categorical = options.groups, options.time_column, options.categorical
    if run.exists():  # a resumed search keeps its groups, time column and categorical columns
        groups = groups or run.read_spec().get("groups")
        time_column = time_column or run.read_spec().get("time_column")
        categorical = categorical or tuple(run.read_spec().get("categorical", ()))
    dataset = load_dataset(options.source, target=options.target, task=options.task,
                           valid_size=options.valid_size, test_size=options.test_size, seed=options.seed,
                           groups=groups, time_column=time_column, categorical=categorical)
    metric = options.metric or metrics.default_metric(dataset.task)
    metrics.check_metric(metric, dataset.task)
    n_dev = len(dataset.split["train"]) + len(dataset.split["valid"])
    cv_folds = options.cv_folds
    if cv_folds is None:  # a resumed search keeps what it was started with
        cv_folds = run.read_spec().get("cv_folds", 1) if run.exists() else default_cv_folds(n_dev)
    if cv_folds > 1 and n_dev < 2 * cv_folds:
        raise AutoDNNError(f"{n_dev} training + validation rows are too few for --cv-folds {cv_folds}")
    if cv_folds > 1 and dataset.groups is not None:
        n_groups = len(np.unique(dataset.groups[np.concatenate([dataset.split["train"], dataset.split["valid"]])]))
        if n_groups < cv_folds and options.cv_folds is not None:
            raise AutoDNNError(f"--cv-folds {cv_folds} needs {cv_folds} groups of {groups!r} in the training + "
                               f"validation rows; they have {n_groups}")
        cv_folds = cv_folds if n_groups >= cv_folds else 1
    _check_metric_defined(metric, dataset, cv_folds, options.seed)
    # Trial values of a cross-validated search are not comparable with a holdout's: a resume must keep it.
    cv = (cv_folds,) if cv_folds > 1 else ()
    fingerprint = json_digest((dataset.fingerprint(), dataset.target, dataset.task, space.fingerprint(),
                               options.valid_size, options.test_size, options.seed, metric, *cv))
    spec = {
        "format": RUN_FORMAT,
        "run_dir": str(run.root.resolve()),
        "source": _keep_source(options.source, run),
        "target": dataset.target,
        "task": dataset.task,
        "task_rule": dataset.task_rule,
        "classes": dataset.target_encoder.classes_,
        "metric": metric,
        "direction": metrics.direction(metric),
        "space": _describe_space(options.space),
        "space_fingerprint": space.fingerprint(),
        "data_fingerprint": dataset.fingerprint(),
        "fingerprint": fingerprint,
        "valid_size": options.valid_size,
        "test_size": options.test_size,
        "cv_folds": cv_folds,
        "groups": groups,
        "time_column": time_column,
        "categorical": list(categorical),
        "seed": options.seed,
        "storage": options.storage or run.default_storage(options.jobs),
        "study_name": options.study_name or run.root.resolve().name,
        "artifacts": str(Path(options.artifacts).resolve()) if options.artifacts else str(run.root.resolve() / "artifacts"),
        "notes": list(dataset.notes),
    }
    resumed = run.exists() and run.read_spec()["storage"]
    if run.exists():
        _keep_recorded(run.read_spec(), spec, options, run)
    check_storage_for_jobs(spec["storage"], options.jobs)
    if spec["storage"] == resumed:  # a URL that worked before: wait for its server like any later call
        open_study_storage(spec["storage"])
    else:  # a URL that cannot be opened is never recorded in run.json: a mistyped host is told at once
        open_storage(spec["storage"])
    # The preprocessing of each scaling too: a kill between a scaling's data file and its preprocess/*.json left a
    # folder that looked complete, and every later trial of that scaling failed on the missing file, for ever.
    expected = [run.split_path, run.target_path] + [path for s in scalings_of(space)
                                                    for path in (run.data_path(s), run.preprocess_path(s))]
    if not all(path.exists() for path in expected):
        notes = _write_data(run, dataset, space)
        spec["notes"] = list(dict.fromkeys(list(dataset.notes) + notes))
    write_json(run.spec_path, spec)
    _remove_stale_temporaries(run, Path(spec["artifacts"]))
    return spec, dataset


def _remove_stale_temporaries(run: RunDir, artifacts: Path) -> None:
    """What killed writers left in the run's own folders (a trial's artifacts, a fold copy, a JSON file)."""
    for folder in (run.root, run.root / "data", run.root / "preprocess", run.gbt_tuning, artifacts):
        remove_stale_temporaries(folder)
    remove_stale_temporaries(run.root / "bagging", recursive=True)


def _check_metric_defined(metric: str, dataset: Dataset, cv_folds: int, seed: int) -> None:
    """ROC-AUC needs two classes in every part a trial is scored on; without them every trial would fail."""
    if metric != "roc_auc":
        return
    dev = np.concatenate([dataset.split["train"], dataset.split["valid"]])
    y_dev = np.asarray(dataset.y[dev], dtype=np.int64)
    if cv_folds > 1:
        keys = {"groups": None if dataset.groups is None else dataset.groups[dev],
                "order": None if dataset.order is None else dataset.order[dev]}
        folds = make_folds(y_dev, dataset.task, k=cv_folds, seed=seed, **keys)
        parts = [y_dev[folds.rows(0, f)[1]] for f in range(folds.k)]
        where = f"a fold of the {cv_folds}-fold cross-validation"
    else:
        parts, where = [np.asarray(dataset.y[dataset.split["valid"]])], "the validation split"
    if all(len(np.unique(part)) >= 2 for part in parts):
        return
    counts = np.bincount(y_dev, minlength=len(dataset.target_encoder.classes_))
    rarest = dataset.target_encoder.classes_[int(np.argmin(counts))]
    raise AutoDNNError(f"--metric roc_auc cannot score {where}: it holds one class only (class {rarest!r} has "
                       f"{counts.min()} of the {len(dev)} training + validation rows); use --metric logloss, "
                       "or add rows of that class")


def _keep_recorded(old: dict[str, Any], spec: dict[str, Any], options: SearchOptions, run: RunDir) -> None:
    """A resumed search keeps the storage, study, artifacts and notes it recorded, unless given anew."""
    if old["fingerprint"] != spec["fingerprint"]:
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
        _refuse_another_study(old, spec, run)
    spec["notes"] = old.get("notes", spec["notes"])


def _refuse_another_study(old: dict[str, Any], spec: dict[str, Any], run: RunDir) -> None:
    """Another study in the same artifacts folder would number its trials 0, 1, ... again and write over the
    recorded study's trial folders, so that study's trials would later meet another net's weights."""
    recorded = {"storage": _as_given_now(old["storage"]), "study_name": old["study_name"]}
    changed = [flag for flag, key in (("--storage", "storage"), ("--study", "study_name"))
               if recorded[key] != spec[key]]
    if changed:
        what = " and ".join(changed)
        raise StorageError(f"run folder {str(run.root)!r} holds study {old['study_name']!r} in "
                           f"{redact(old['storage'])}; another {what} would write its trials over that study's "
                           f"artifacts; resume with the recorded {what}, or use a new --out or --artifacts")


def _as_given_now(url: str) -> str:
    """A recorded storage URL as it is given now (an older run folder may hold a relative path)."""
    try:
        return absolute_storage_url(url)
    except StorageError:  # an in-memory URL recorded before it was refused
        return url


def _write_data(run: RunDir, dataset: Dataset, space: SearchSpace) -> list[str]:
    """Fit the preprocessing on train for every scaling the space can choose; save encoded matrices.

    Returns the preprocessing's notes (dropped columns, coerced values, ...) for the run's summary.
    """
    notes: list[str] = []
    split = {part: dataset.split[part].astype(np.int64) for part in PARTS}
    if dataset.groups is not None:  # every row's group code: the folds keep a group on one side
        split["groups"] = dataset.groups.astype(np.int64)
    if dataset.order is not None:  # every row's rank in time: the folds are periods
        split["time_order"] = dataset.order.astype(np.int64)
    save_arrays(run.split_path, split)
    write_json(run.target_path, dataset.target_encoder.to_dict())
    # Issue 13: the columns are typed once for every scaling, and each part is read from the table by
    # its rows, a column at a time (no copy of the part's frame, no float32 copy of the matrix).
    preprocessors = FeaturePreprocessor.fit_scalings(dataset.features, scalings_of(space), rows=dataset.split["train"])
    for scaling, pre in preprocessors.items():
        arrays = {}
        for part in PARTS:
            arrays[f"X_{part}"] = pre.transform(dataset.features, rows=dataset.split[part])
            arrays[f"y_{part}"] = dataset.labels(part)
        save_arrays(run.data_path(scaling), arrays)
        write_json(run.preprocess_path(scaling), pre.to_dict())
        notes.extend(pre.notes_)
    return list(dict.fromkeys(notes))


def scalings_of(space: SearchSpace) -> list[str]:
    """Every input scaling a trial of this space may use."""
    values: set[str] = set()
    for param in space.params:
        if param.field == "scaling":
            values.update(param.choices if param.type == "categorical" else [param.value])
    return sorted(values) or ["standard"]


def _what_changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = ("data_fingerprint", "target", "task", "space_fingerprint", "valid_size", "test_size", "seed", "metric",
            "cv_folds")
    names = {"data_fingerprint": "data", "space_fingerprint": "space"}
    changed = [names.get(k, k) for k in keys if old.get(k) != new.get(k)]
    return "different " + ", ".join(changed) if changed else "different settings"


def _keep_source(source: Any, run: RunDir) -> str:
    """Where the ensemble step finds the table again: the file, the builtin, or a Parquet copy of a DataFrame."""
    if isinstance(source, (str, os.PathLike)):
        return str(source) if str(source).startswith("builtin:") else str(Path(source).resolve())
    path = run.source_copy.resolve()
    try:
        atomic_write(path, lambda tmp: source.to_parquet(tmp, index=False))
    except Exception as exc:  # e.g. an object column mixing types, which Parquet cannot hold
        if is_disk_full(exc):  # not a table Parquet refuses: recording "<DataFrame>" would lose it for good
            raise
        return "<DataFrame>"
    return str(path)


def _describe_space(space: str) -> str:
    path = Path(space)
    return str(path.resolve()) if path.suffix in (".yaml", ".yml") or path.exists() else space


# --- per-trial artifacts ------------------------------------------------------------------------


@dataclass
class TrialArtifacts:
    """What a completed trial keeps: the net's weights and config, and its predictions in user space."""

    folder: Path
    config: dict[str, Any]  # settings, d_in, d_out, task, trial_number, valid_scores, metric
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # "valid", "test"

    def weights(self) -> dict[str, Any]:
        """The net's state_dict (torch tensors), read from safetensors."""
        return load_tensors(str(self.folder / WEIGHTS_FILE))


def trial_folder(artifacts: Path, number: int) -> Path:
    return Path(artifacts) / f"trial-{number:05d}"


def save_trial(artifacts: Path, number: int, *, state: dict[str, Any], config: dict[str, Any],
               predictions: dict[str, np.ndarray]) -> Path:
    """Write a trial's weights, config and predictions to a temporary folder, then rename it into place."""
    return save_trial_folder(trial_folder(artifacts, number), state=state, config=config, predictions=predictions)


def save_trial_folder(final: Path, *, state: dict[str, Any], config: dict[str, Any],
                      predictions: dict[str, np.ndarray]) -> Path:
    """``save_trial`` into any folder (the bagging phase's fold models have the same three files).

    A full disk raises ``DiskFullError`` naming ``final``, with the temporary folder removed.
    """
    with disk_full_as_error(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temporary_folder(final)
        try:
            weights = {k: v.detach().cpu().contiguous() for k, v in state.items()}
            keeping_file_mode(tmp / WEIGHTS_FILE, lambda path: save_tensors(weights, str(path)))
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=float), encoding="utf-8")
            write_arrays(tmp / PREDICTIONS_FILE, predictions)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def find_trial(places: list[Any]) -> Path | None:
    """The first of ``places`` that holds a trial's complete artifacts (all three files)."""
    for place in places:
        if place and all((Path(place) / name).is_file() for name in TRIAL_FILES):
            return Path(place)
    return None


def load_trial(folder: Path) -> TrialArtifacts:
    """A trial's config and predictions (the weights are read on demand: ``TrialArtifacts.weights``)."""
    return TrialArtifacts(folder=Path(folder), config=read_json(Path(folder) / CONFIG_FILE),
                          predictions=load_arrays(Path(folder) / PREDICTIONS_FILE))
