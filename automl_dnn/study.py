"""The Optuna study of a run: open or create it, with its sampler and pruner, and enqueue the defaults.

A read-only open (the ensemble step, the report) needs only the run's spec: no space file, no pruner.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from automl_dnn.errors import AutoDNNError, StorageError, first_line
from automl_dnn.space import SearchSpace
from automl_dnn.storage import open_study_storage, redact

PRUNERS = ("halving", "hyperband", "median", "none")
DEFAULT_PRUNER = "halving"
# Trials report at the percent (1..100) of their planned training done (objective.EpochReporter), so
# every pruner works on that scale, whatever a trial's epoch count.
MAX_STEP = 100
# No pruning before a quarter of a trial's planned training: before that its score mostly reflects the
# init and the warm-up (at 25%, 1cycle is at 57% of the peak lr it reaches at 45%), rather than the
# configuration. With reduction factor 3 the halving rungs then sit at 25% and 75%: the second past
# 1cycle's peak and inside flat_cosine's cosine, where the ranking is close to the final one, while
# still saving a quarter of a weak trial's cost (a warm-up over 33% would put the second rung past 100).
WARMUP_PERCENT = 25
REDUCTION_FACTOR = 3
STARTUP_TRIALS = 5  # TPE samples at random (enqueued trials included) until this many trials have run


def make_sampler(seed: int, *, several_workers: bool) -> optuna.samplers.BaseSampler:
    """Multivariate TPE that models conditional parameters by group; liars keep workers apart.

    It leaves random sampling after STARTUP_TRIALS trials (Optuna's default is 10): a 60 s search has
    few trials, and the enqueued defaults already spread the first ones.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=several_workers,
            n_startup_trials=STARTUP_TRIALS,
        )


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The pruner by name, on the percent-of-planned-training scale; none prunes before WARMUP_PERCENT.

    ``halving`` (the default) is one asynchronous successive-halving bracket: TPE sees every trial,
    where Hyperband's brackets would each hand it only their own.
    """
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=WARMUP_PERCENT, reduction_factor=REDUCTION_FACTOR, min_early_stopping_rate=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=WARMUP_PERCENT, max_resource=MAX_STEP, reduction_factor=REDUCTION_FACTOR)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=WARMUP_PERCENT)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise AutoDNNError(f"unknown pruner {name!r}; valid: {', '.join(PRUNERS)}")


def open_study(spec: dict[str, Any], *, seed: int = 0, pruner: optuna.pruners.BasePruner | None = None,
               several_workers: bool = False, create: bool = True) -> optuna.Study:
    """Open (or create) the run's study with a seeded TPE sampler and ``pruner`` (none: read-only use)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = {
        "storage": open_study_storage(spec["storage"]),  # waits out a database restart
        "study_name": spec["study_name"],
        "sampler": make_sampler(seed, several_workers=several_workers),
        "pruner": pruner or optuna.pruners.NopPruner(),
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
        raise StorageError(f"cannot open study {spec['study_name']!r} in {redact(spec['storage'])}: "
                           f"{first_line(exc)}") from None
    if study.direction.name.lower() != spec["direction"]:
        raise StorageError(f"study {spec['study_name']!r} already exists with direction {study.direction.name.lower()}")
    _check_fingerprint(study, spec, create)
    if create:
        _name_the_metric(study, spec["metric"])
    return study


def _name_the_metric(study: optuna.Study, metric: str) -> None:
    """optuna-dashboard shows the objective by this name (else as "Objective 0"); set once, when missing."""
    if study.metric_names == [metric]:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric])


def _check_fingerprint(study: optuna.Study, spec: dict[str, Any], create: bool) -> None:
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


def enqueue_defaults(study: optuna.Study, space: SearchSpace, task: str) -> None:
    """Enqueue the space's practical-default trials for ``task``, once, when the study is new."""
    if study.get_trials(deepcopy=False):
        return
    for params in space.first_trials(task):
        study.enqueue_trial(params, skip_if_exists=True)
