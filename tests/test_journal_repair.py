"""A journal file whose last append was cut short (a full disk): the next open cuts off the torn line.

Optuna 5 alone reads past a torn last line, but its next append is glued onto it: that append fails
(or its log is lost) and the lines written after it make the file unreadable. The first test shows
this, the others that the project's open repairs it and keeps every complete line.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from automl_dnn.errors import StorageError
from automl_dnn.storage import open_storage, open_study_storage, repair_torn_journal

TORN = b'{"op_code": 4, "wor'  # the start of a trial-creation log, cut short


def _journal(path: Path, n_trials: int) -> bytes:
    """A journal holding a study with ``n_trials`` completed trials; its bytes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=open_study_storage(str(path)), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n_trials)
    return path.read_bytes()


def _completed(path: Path) -> int:
    study = optuna.load_study(storage=open_study_storage(str(path)), study_name="s")
    return sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def test_without_the_repair_optuna_cannot_add_a_trial_after_a_torn_line(tmp_path: Path) -> None:
    """Why the repair exists (if this fails, Optuna now copes by itself and the repair is merely harmless)."""
    path = tmp_path / "study.journal"
    _journal(path, 3)
    with path.open("ab") as f:
        f.write(TORN)
    raw = str(path)
    study = optuna.load_study(storage=JournalStorage(JournalFileBackend(raw, lock_obj=JournalFileOpenLock(raw))),
                              study_name="s")
    assert len(study.trials) == 3, "Optuna reads past the torn line"
    with pytest.raises((AttributeError, ValueError)):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # the new log is glued onto the torn one


def test_a_torn_last_line_is_cut_off_on_open_and_new_trials_are_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "study.journal"
    complete = _journal(path, 3)
    capsys.readouterr()
    with path.open("ab") as f:
        f.write(TORN)
    assert _completed(path) == 3
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and f"note: journal {path} ended in a partial line" in err, err
    assert f"cut off those {len(TORN)} bytes" in err and "Traceback" not in err
    assert path.read_bytes() == complete, "only the torn bytes went; every complete line is as it was"

    study = optuna.load_study(storage=open_study_storage(str(path)), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert _completed(path) == 4, "the trial added after the repair is read back"
    assert "note:" not in capsys.readouterr().err, "nothing to repair the second time"


def test_only_a_torn_journal_is_touched(tmp_path: Path) -> None:
    """A whole journal, a file that is not a journal, and a journal whose only line is torn."""
    whole = tmp_path / "whole.journal"
    complete = _journal(whole, 1)
    assert repair_torn_journal(str(whole)) == 0 and whole.read_bytes() == complete

    table = tmp_path / "data.log"
    table.write_bytes(b"a,b\n1,2")  # no newline at its end, but no journal either
    with pytest.raises(StorageError, match="not an Optuna journal file"):
        open_storage(str(table))
    assert table.read_bytes() == b"a,b\n1,2"

    first = tmp_path / "first.journal"
    first.write_bytes(TORN)  # the very first append was cut short
    assert repair_torn_journal(str(first)) == len(TORN) and first.read_bytes() == b""
    _journal(first, 1)
    assert _completed(first) == 1, "the emptied file is a new journal"
