"""The Optuna study of a run: open or create it, with its sampler and pruner, and enqueue the defaults.

A read-only open (the ensemble step, the report) needs only the run's spec: no space file, no pruner.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from automl_dnn.errors import AutoDNNError, StorageError, first_line
from automl_dnn.space import SearchSpace
from automl_dnn.storage import open_storage, redact

PRUNERS = ("hyperband", "median", "none")
DEFAULT_MAX_EPOCHS = 100  # Hyperband's max resource when the space does not fix max_epochs


def make_sampler(seed: int, *, several_workers: bool) -> optuna.samplers.BaseSampler:
    """Multivariate TPE that models conditional parameters by group; liars keep workers apart."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=several_workers, n_startup_trials=10
        )


def make_pruner(name: str, space: SearchSpace) -> optuna.pruners.BasePruner:
    """The pruner by name; Hyperband's max resource is the space's fixed ``max_epochs``."""
    if name == "hyperband":
        fixed = [int(p.value) for p in space.params if p.field == "max_epochs" and p.type == "fixed"]
        max_epochs = max(fixed or [DEFAULT_MAX_EPOCHS])
        return optuna.pruners.HyperbandPruner(min_resource=2, max_resource=max(max_epochs, 3), reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
    return optuna.pruners.NopPruner()


def open_study(spec: dict[str, Any], *, seed: int = 0, pruner: optuna.pruners.BasePruner | None = None,
               several_workers: bool = False, create: bool = True) -> optuna.Study:
    """Open (or create) the run's study with a seeded TPE sampler and ``pruner`` (none: read-only use)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = {
        "storage": open_storage(spec["storage"]),
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
    return study


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


def enqueue_defaults(study: optuna.Study, space: SearchSpace) -> None:
    """Enqueue the space's practical-default trials, once, when the study is new."""
    if study.get_trials(deepcopy=False):
        return
    for params in space.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
