"""XGBoost's tuning kept in the run folder, so that a killed fit loses none of its completed trials.

``gbt.fit_gbt`` tunes XGBoost in an in-memory Optuna study, as it always has (a fresh run behaves exactly as
before). Each trial that runs to its end (early stopping or the last round) is appended to
``RUN/xgboost-tuning/trials.json`` as it completes, and the best booster so far to ``best-NNNNN.ubj`` (XGBoost's
own UBJ, never pickle) whenever it improves. A trial cut short (the deadline, a stop, the nets ahead) is not kept:
a rerun with more time would boost it further. Every file is written atomically (``files.atomic_write``): the
booster first, then the list that names it, then the older booster goes, so a kill leaves the old state or the
new one.

A rerun whose key matches (the run's split, preprocessing and target, the task, seed, search space and boosting
settings: ``KeptTuning.keyed``) gives the kept trials to its TPE study, runs no default trial again and starts
from the kept best booster. A state of another key, or one that cannot be read, is ignored with a note and
replaced once the new tuning keeps its first trial.

One tuning keeps into a folder at a time (``claimed``: an exclusive lock on the folder while it tunes); a second
fit or ensemble on the same run folder tunes without keeping, with a note, rather than delete the first one's
boosters.

A JSON list rather than a journal study: one small file written whole, so there is no torn line to repair and
no lock file, its key is checked before anything in it is used, and the tuning itself stays in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import optuna.distributions as d
import xgboost as xgb

from automl_dnn.errors import AutoDNNError, first_line
from automl_dnn.files import atomic_write, json_digest, read_json, write_json
from automl_dnn.ubjson import load_booster as booster_from_bytes

STATE_FORMAT = 1
TRIALS_FILE = "trials.json"


def space_key(space: dict[str, d.BaseDistribution]) -> dict[str, str]:
    """The search space as JSON, for a key."""
    return {name: d.distribution_to_json(dist) for name, dist in sorted(space.items())}


@dataclass(frozen=True)
class KeptTuning:
    """Where XGBoost's tuning is kept, and the key of what it was tuned on (a kept state of another key is ignored)."""

    folder: Path
    key: str

    def keyed(self, *parts: Any) -> KeptTuning:
        """The same folder, its key narrowed by ``parts`` (a caller's own settings)."""
        return KeptTuning(self.folder, json_digest((self.key, *parts)))


@dataclass
class Resumed:
    """A kept tuning read back: its trials (in order), which one is best, its booster, and the trials for TPE."""

    trials: list[dict[str, Any]]
    best: int
    booster: xgb.Booster
    frozen: list[optuna.trial.FrozenTrial] = field(default_factory=list)

    @property
    def best_trial(self) -> dict[str, Any]:
        return self.trials[self.best]


@contextlib.contextmanager
def claimed(kept: KeptTuning | None, notes: list[str]) -> Iterator[KeptTuning | None]:
    """``kept``, with its folder locked for the whole tuning; None, with a note, while another process tunes there.

    A folder that cannot be made or opened is yielded as it is: the tuning's first write then says so
    (``TuningLog``). The lock goes with the process, so a killed fit leaves none behind.
    """
    if kept is None:
        yield None
        return
    try:
        kept.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(kept.folder, os.O_RDONLY)
    except OSError:
        yield kept
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            notes.append(f"XGBoost's trials are not kept in {str(kept.folder)!r}: another fit or ensemble of this run "
                         "is tuning XGBoost there now")
            yield None
            return
        yield kept
    finally:
        os.close(fd)  # and the lock with it


def resume(kept: KeptTuning, space: dict[str, d.BaseDistribution], notes: list[str]) -> Resumed | None:
    """The kept trials and best booster when they are of ``kept.key``; else None, with a note when a state was there."""
    path = kept.folder / TRIALS_FILE
    if not path.exists():
        return None
    try:
        state = read_json(path)
        if not isinstance(state, dict):
            raise ValueError(f"{TRIALS_FILE} holds no object")
        if state.get("format", 0) > STATE_FORMAT:
            raise ValueError("written by a newer automl-dnn")
        if state.get("key") != kept.key:
            notes.append(f"XGBoost's kept tuning in {str(kept.folder)!r} ignored: it was tuned on another split, "
                         "preprocessing, seed or search space; tuning starts over")
            return None
        return _read(kept.folder, state, space)
    except (OSError, ValueError, KeyError, TypeError, xgb.core.XGBoostError) as exc:
        notes.append(unreadable(kept, exc))
        return None


def _read(folder: Path, state: dict[str, Any], space: dict[str, d.BaseDistribution]) -> Resumed:
    """The trials and best booster a state of the right key names; raises on anything missing or inconsistent."""
    trials = [_checked(record) for record in state["trials"]]
    best = int(state["best"])
    if not 0 <= best < len(trials):
        raise ValueError(f"its best trial {best} is not one of its {len(trials)} trials")
    booster = load_booster(folder / booster_name(best))
    rounds = trials[best]["best_iteration"] + 1
    if booster.num_boosted_rounds() != rounds:
        raise ValueError(f"{booster_name(best)} does not hold its trial's {rounds} rounds")
    frozen = [optuna.trial.create_trial(params=t["params"], distributions=space, value=finite(t["valid_loss"]))
              for t in trials]
    return Resumed(trials=trials, best=best, booster=booster, frozen=frozen)


def unreadable(kept: KeptTuning, reason: Any) -> str:
    """The note for a kept state that cannot be used."""
    text = first_line(reason) if isinstance(reason, BaseException) else str(reason)
    return f"XGBoost's kept tuning in {str(kept.folder)!r} ignored: it cannot be read ({text}); tuning starts over"


def _checked(record: Any) -> dict[str, Any]:
    """One kept trial, with the types ``fit_gbt`` records."""
    if not isinstance(record, dict) or not isinstance(record["params"], dict):
        raise ValueError("a kept trial is not a record of params, loss, rounds and seconds")
    return {"params": dict(record["params"]), "valid_loss": float(record["valid_loss"]),
            "best_iteration": int(record["best_iteration"]), "seconds": float(record["seconds"])}


def finite(loss: float) -> float:
    """A loss as the study is told it: one that is not finite never wins."""
    return loss if math.isfinite(loss) else math.inf


def booster_name(number: int) -> str:
    return f"best-{number:05d}.ubj"


def load_booster(path: Path) -> xgb.Booster:
    """A kept booster; a damaged one (an empty file a power cut left) is a ValueError, not XGBoost's abort of the
    whole fit."""
    return booster_from_bytes(Path(path).read_bytes())


class TuningLog:
    """Keeps each completed trial of a tuning in ``kept.folder``, and the booster of each new best first.

    A write that fails (a full disk) is one note, and the tuning goes on without keeping more: a crash would then
    lose the trials after it, but the fit itself does not fail for it.
    """

    def __init__(self, kept: KeptTuning, resumed: Resumed | None, notes: list[str]) -> None:
        self.kept, self.notes = kept, notes
        self.trials: list[dict[str, Any]] = [] if resumed is None else list(resumed.trials)
        self.best: int | None = None if resumed is None else resumed.best
        self.failed = False
        if resumed is not None or not (kept.folder / TRIALS_FILE).exists():
            self._remove_other_boosters()  # a kill between a booster's write and its list's left it unnamed

    def add(self, record: dict[str, Any], booster: xgb.Booster) -> None:
        """Keep ``record`` (params, valid_loss, best_iteration, seconds), and ``booster`` if it is the best so far."""
        if self.failed:
            return
        number = len(self.trials)
        better = self.best is None or finite(record["valid_loss"]) < finite(self.trials[self.best]["valid_loss"])
        try:
            if better:
                raw = bytes(booster.save_raw(raw_format="ubj"))
                atomic_write(self.kept.folder / booster_name(number), lambda tmp: tmp.write_bytes(raw))
            self.trials.append(_checked(record))
            self.best = number if better else self.best
            write_json(self.kept.folder / TRIALS_FILE, {"format": STATE_FORMAT, "key": self.kept.key,
                                                        "best": self.best, "trials": self.trials})
            if better:
                self._remove_other_boosters()
        except (OSError, AutoDNNError) as exc:
            self.failed = True
            self.notes.append(f"XGBoost's trials are no longer kept in {str(self.kept.folder)!r} ({first_line(exc)}): "
                              "a crash would lose the later ones")

    def _remove_other_boosters(self) -> None:
        keep = booster_name(self.best) if self.best is not None else None
        with contextlib.suppress(OSError):  # a folder that cannot be listed: the first write says so
            for path in self.kept.folder.glob("best-*.ubj"):
                if path.name != keep:
                    path.unlink(missing_ok=True)


__all__ = ["KeptTuning", "Resumed", "TuningLog", "claimed", "resume", "space_key"]
