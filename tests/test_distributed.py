"""Two workers, two run folders ("two machines"), one study on a real PostgreSQL server on loopback; and
the same server restarting, or going away for good, in the middle of a search (database faults).

That both workers run trials does not depend on how fast they start: the trial gate (tests/conftest.py)
keeps each worker in its first trial until the other is in one too. The fault tests stop the server while
the gate holds trials, so the outage lands in the middle of a trial by construction, not by timing.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import optuna
import pytest
from optuna.storages import InMemoryStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

import automl_dnn.storage as storage_module
from automl_dnn.errors import StorageError
from automl_dnn.storage import (CREATE_TOKEN, RETRY_SECONDS_VARIABLE, RetryingStorage, _may_have_committed,
                                is_connection_error, reap_stale_trials)
from automl_dnn.study import open_study
from tests.conftest import POLL_LIMIT, TrialGate
from tests.postgres import postgres, postgres_server


def test_two_workers_share_one_postgres_study(tmp_path: Path, short_space: Path, trial_gate: TrialGate) -> None:
    with postgres_server() as url:
        command = [sys.executable, "-m", "automl_dnn", "search", "builtin:breast_cancer", "--space", str(short_space),
                   "--storage", url, "--study", "shared", "--n-trials", "8", "--pruner", "none", "--threads", "1",
                   "--quiet"]
        workers = [subprocess.Popen([*command, "--out", str(tmp_path / f"machine{i}")], env=trial_gate.env(parties=2),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        try:
            results = [w.communicate(timeout=POLL_LIMIT) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        for worker, (_, err) in zip(workers, results):
            assert worker.returncode == 0, err
        study = optuna.load_study(study_name="shared", storage=url.replace("postgresql://", "postgresql+psycopg://"))
        trials = study.get_trials()
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) == 8
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        assert len({t.number for t in trials}) == len(trials)
        assert trial_gate.arrived() == {w.pid for w in workers}, "each worker reached its first trial"
        by_folder = {Path(t.user_attrs["artifacts"]).parent.parent.name for t in finished if "artifacts" in t.user_attrs}
        assert by_folder == {"machine0", "machine1"}, "both workers ran trials"


# --- database faults (issue 13): the server restarts, or goes away for good ------------------------------

class _LostAnswers(InMemoryStorage):
    """An in-memory storage whose chosen calls lose their answer once: the write is done (committed), then
    the call fails the way a database connection that dropped at COMMIT does."""

    def __init__(self, *lose: str) -> None:
        super().__init__()
        self.lose = set(lose)

    def _maybe_lose(self, name: str) -> None:
        if name in self.lose:
            self.lose.discard(name)
            raise ConnectionResetError("server closed the connection unexpectedly")

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        self._maybe_lose("create_new_trial")
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        done = super().set_trial_state_values(trial_id, state, values)
        self._maybe_lose(f"set_trial_state_values:{state.name}")
        return done


def test_a_retry_after_a_lost_answer_repeats_no_write(capsys: pytest.CaptureFixture[str]) -> None:
    """Claim, finish and create each lose their answer once after their write landed: nothing is done twice."""
    inner = _LostAnswers("create_new_trial", "set_trial_state_values:RUNNING", "set_trial_state_values:COMPLETE")
    study = optuna.create_study(storage=RetryingStorage(inner, name="db", window=30))
    study.enqueue_trial({"x": 1.0})  # a waiting trial: its claim (WAITING -> RUNNING) loses its answer
    claimed = study.ask()
    study.tell(claimed, 1.0)  # the COMPLETE loses its answer: the retry finds it done, and says so
    created = study.ask()  # a new trial: the retry finds the one the lost answer created
    study.tell(created, 2.0)
    states = [(t.number, t.state, t.value) for t in study.trials]
    assert states == [(0, TrialState.COMPLETE, 1.0), (1, TrialState.COMPLETE, 2.0)], "no copy, nothing left RUNNING"
    assert not inner.lose, "every lost answer happened"
    assert capsys.readouterr().err.count("note: storage db unreachable") == 3, "one line for each of the 3 outages"


def test_the_copy_left_by_a_retry_inside_the_storage_is_failed() -> None:
    """Optuna's RDB storage retries trial creation inside (deadlocks): a lost COMMIT answer there leaves a copy."""

    class CreatesTwice(InMemoryStorage):
        def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
            super().create_new_trial(study_id, template_trial)
            return super().create_new_trial(study_id, template_trial)

    study = optuna.create_study(storage=RetryingStorage(CreatesTwice(), name="db", window=30))
    trial = study.ask()
    study.tell(trial, 1.0)
    assert [(t.number, t.state) for t in study.trials] == [(0, TrialState.FAIL), (1, TrialState.COMPLETE)]
    assert "copy" in study.trials[0].user_attrs["fail_reason"]


def test_a_storage_away_past_the_window_is_one_storage_error_then_fails_at_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Past the window a worker stops with one line; it does not wait the window again for every later call."""
    tries = []

    class Away(InMemoryStorage):
        def get_all_trials(self, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
            tries.append(time.monotonic())
            raise ConnectionRefusedError("connection refused")

    storage = RetryingStorage(Away(), name="db", window=0.5)
    study_id = storage.create_new_study([StudyDirection.MINIMIZE], "s")
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"unreachable for 0.5 s \(connection refused\)") as raised:
        storage.get_all_trials(study_id)
    assert 0.5 <= time.monotonic() - started < 5 and "\n" not in str(raised.value)
    started = time.monotonic()
    with pytest.raises(StorageError):
        storage.get_all_trials(study_id)
    assert time.monotonic() - started < 0.5, "after giving up, calls fail at once until the storage answers"
    assert len(tries) >= 3 and capsys.readouterr().err.count("note:") == 1, "one line for the outage, not per try"


def test_leases_of_other_machines_get_a_fresh_window_after_an_outage() -> None:
    """No worker could beat while the database was away: a lease is judged from the later of its beat and the return."""
    storage = RetryingStorage(InMemoryStorage(), name="db", window=30)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    trial.set_user_attr("worker", {"host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600})
    storage.back_at = time.time()  # the database just came back
    assert reap_stale_trials(study) == []
    storage.back_at = time.time() - 3600
    assert reap_stale_trials(study) == [trial.number]


def test_connection_errors_are_told_from_other_errors() -> None:
    """Only lost or refused connections are waited for; only a lost answer to COMMIT is treated as maybe done."""
    psycopg = pytest.importorskip("psycopg")
    from sqlalchemy.exc import OperationalError

    shutdown = psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    in_statement = OperationalError("UPDATE trials SET state=%(state)s", {}, shutdown)
    at_commit = OperationalError(None, None, psycopg.OperationalError("server closed the connection unexpectedly"))
    assert is_connection_error(in_statement) and is_connection_error(at_commit)
    assert not _may_have_committed(in_statement), "a statement that failed leaves nothing committed: repeat it"
    assert _may_have_committed(at_commit), "a lost answer to COMMIT may hide a committed write"
    assert not _may_have_committed(ConnectionRefusedError("connection refused")), "nothing commits while connecting"
    assert not is_connection_error(sqlite3.OperationalError("no such table: trials")), "a file's error is no outage"
    assert not is_connection_error(ValueError("bad value")) and not is_connection_error(KeyError("study"))
    refused = [psycopg.OperationalError('connection failed: FATAL:  password authentication failed for user "a"'),
               psycopg.OperationalError('connection failed: FATAL:  database "nosuch" does not exist')]
    assert not any(is_connection_error(OperationalError(None, None, e)) for e in refused), "a wrong URL is no outage"
    full = OperationalError("INSERT INTO trials", {}, psycopg.errors.DiskFull("could not extend file: No space left"))
    assert not is_connection_error(full), "a full disk is no outage (tests/test_disk_faults.py: one line at once)"


def _search(url: str, out: Path, space: Path, n_trials: int) -> list[str]:
    return [sys.executable, "-m", "automl_dnn", "search", "builtin:breast_cancer", "--space", str(space),
            "--storage", url, "--study", "shared", "--n-trials", str(n_trials), "--pruner", "none", "--threads", "1",
            "--quiet", "--out", str(out)]


def _wait_for(condition: Callable[[], bool], procs: list[subprocess.Popen], what: str) -> None:
    """Wait for a state of the workers (never for a time); fail at once if one ends first."""
    deadline = time.monotonic() + POLL_LIMIT
    while not condition():
        ended = [p for p in procs if p.poll() is not None]
        if ended or time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached (ended: {[p.returncode for p in ended]})")
        time.sleep(0.05)


def _finished(url: str) -> tuple[optuna.Study, dict[int, tuple[TrialState, float | None, dict[str, Any]]]]:
    study = optuna.load_study(study_name="shared", storage=url.replace("postgresql://", "postgresql+psycopg://"))
    trials = study.get_trials()
    return study, {t.number: (t.state, t.value, t.params) for t in trials if t.state.is_finished()}


def test_a_postgres_restart_mid_search_loses_no_trial(tmp_path: Path, short_space: Path, trial_gate: TrialGate) -> None:
    """Both workers are in a trial (held by the gate) when the server stops; they wait it out and finish."""
    with postgres() as server:
        env = {**trial_gate.env(parties=2), "AUTOML_DNN_TEST_GATE_HOLD": "2,3"}  # two trials, one per worker
        logs = [tmp_path / f"err{i}.txt" for i in range(2)]  # files: the test reads them while the workers run
        with logs[0].open("w") as err0, logs[1].open("w") as err1:
            workers = [subprocess.Popen(_search(server.url, tmp_path / f"machine{i}", short_space, 8), env=env,
                                        stdout=subprocess.DEVNULL, stderr=err) for i, err in enumerate((err0, err1))]
        try:
            held = [trial_gate.folder / f"held-{k}" for k in (2, 3)]
            _wait_for(lambda: all(h.exists() for h in held), workers, "trials 2 and 3 held")
            _, before = _finished(server.url)
            server.stop("fast")  # every session ends: "terminating connection due to administrator command"
            trial_gate.release()  # both workers go on into a storage that is down
            _wait_for(lambda: all("unreachable" in log.read_text() for log in logs), workers, "both saw the outage")
            time.sleep(2)  # a few seconds down: several tries each (what is tested is the outcome, not the time)
            server.start()
            for w in workers:
                w.wait(timeout=POLL_LIMIT)
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        errs = [log.read_text() for log in logs]
        for worker, err in zip(workers, errs):
            assert worker.returncode == 0, err
            assert err.count("note: storage") == 1 and "Traceback" not in err, err
        study, after = _finished(server.url)
        trials = study.get_trials()
        assert sorted(before) == [0, 1], "each worker finished its first trial before it took trial 2 or 3"
        assert [t for t in trials if t.state == TrialState.RUNNING] == [], "nothing left RUNNING"
        assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 8, "the exact count"
        assert {n: after[n] for n in before} == before, "every trial finished before the restart is kept as it was"
        assert all("fail_reason" in t.user_attrs for t in trials if t.state == TrialState.FAIL)
        tokens = [t.system_attrs.get(CREATE_TOKEN) for t in trials]
        assert len(set(tokens)) == len(tokens), "no trial created twice"


def test_a_postgres_server_gone_for_good_is_a_one_line_error(tmp_path: Path, short_space: Path,
                                                             trial_gate: TrialGate) -> None:
    """The server stops while trial 1 is held and never comes back within the (shortened) retry window."""
    with postgres() as server:
        env = {**trial_gate.env(hold=1), RETRY_SECONDS_VARIABLE: "3"}
        proc = subprocess.Popen(_search(server.url, tmp_path / "run", short_space, 4), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            trial_gate.wait_until_held(proc, 1)  # trial 0 is complete, trial 1 in its first epoch
            _, before = _finished(server.url)
            server.stop("fast")
            trial_gate.release()
            _, err = proc.communicate(timeout=POLL_LIMIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 2, err
        assert "Traceback" not in err, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "unreachable for 3 s" in errors[0], err
        assert "run the same command again" in errors[0], err
        server.start()
        study, after = _finished(server.url)
        assert list(before) == [0] and after == before, "the trial finished before the server went is kept"
        assert reap_stale_trials(study) == [1], "the interrupted trial is failed by the next worker, not left RUNNING"


# --- a server that is down when a worker starts --------------------------------------------------------


def test_opening_is_retried_like_any_later_call(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """An open that meets a refused connection 3 times is tried a 4th time; a wrong URL is tried once."""
    monkeypatch.setattr(storage_module.time, "sleep", lambda seconds: None)
    opens: list[int] = []

    def open_after_three_refusals() -> InMemoryStorage:
        opens.append(len(opens))
        if len(opens) <= 3:
            raise ConnectionRefusedError("connection refused")
        return InMemoryStorage()

    storage = RetryingStorage.opening(open_after_three_refusals, name="db", window=30)
    assert len(opens) == 4 and storage.back_at > 0, "opened on the 4th try; leases get a fresh window"
    assert optuna.create_study(storage=storage).ask().number == 0
    assert capsys.readouterr().err.count("note: storage db unreachable (connection refused)") == 1

    refusals: list[int] = []

    def wrong_password() -> InMemoryStorage:
        refusals.append(1)
        raise ConnectionError('FATAL:  password authentication failed for user "a"')

    with pytest.raises(ConnectionError):
        RetryingStorage.opening(wrong_password, name="db", window=30)
    assert refusals == [1], "no wait for a URL that the server refuses"


def _spec(url: str) -> dict[str, Any]:
    return {"storage": url, "study_name": "shared", "direction": "minimize", "fingerprint": "f", "task": "regression",
            "metric": "rmse"}


def _counting_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the tries to open a database storage."""
    tries: list[str] = []
    real = storage_module._open_rdb

    def open_rdb(url: str) -> optuna.storages.RDBStorage:
        tries.append(url)
        return real(url)

    monkeypatch.setattr(storage_module, "_open_rdb", open_rdb)
    return tries


def test_opening_a_study_while_the_server_is_down_waits_for_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The study is opened while the server is down; the server starts after a few failed tries."""
    monkeypatch.setenv(RETRY_SECONDS_VARIABLE, "60")
    tries = _counting_opens(monkeypatch)
    with postgres(start=False) as server, ThreadPoolExecutor(1) as pool:
        opening = pool.submit(open_study, _spec(server.url))
        _wait_for(lambda: len(tries) >= 3 or opening.done(), [], "three tries to open")
        assert not opening.done(), "the open waits for the server"
        server.start()
        study = opening.result(timeout=POLL_LIMIT)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        _, finished = _finished(server.url)
    assert [state for state, _, _ in finished.values()] == [TrialState.COMPLETE] * 2
    err = capsys.readouterr().err
    assert err.count("note: storage") == 1 and "unreachable" in err and "Traceback" not in err, err


def test_a_server_down_at_open_past_the_window_is_one_storage_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(RETRY_SECONDS_VARIABLE, "1")
    tries = _counting_opens(monkeypatch)
    with postgres(start=False) as server:
        with pytest.raises(StorageError, match=r"unreachable for 1 s \(.*Connection refused") as raised:
            open_study(_spec(server.url))
    assert "\n" not in str(raised.value) and "run the same command again" in str(raised.value)
    assert len(tries) >= 2, "it was retried before giving up"
    assert capsys.readouterr().err.count("note: storage") == 1


def test_a_resumed_search_waits_for_its_server_a_new_one_is_told_at_once(
        tmp_path: Path, tiny_space: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run folder's recorded storage worked before: its open retries (the window's one-line error);
    a new run's storage that cannot be opened is one line at once, and never recorded."""
    from automl_dnn import api

    monkeypatch.setenv(RETRY_SECONDS_VARIABLE, "1")
    with postgres() as server:
        search = dict(space=str(tiny_space), storage=server.url, study_name="shared", quiet=True, cv_folds=1,
                      pruner="none")
        api.search("builtin:breast_cancer", out=tmp_path / "run", n_trials=1, **search)
        server.stop()
        with pytest.raises(StorageError, match=r"unreachable for 1 s"):
            api.search("builtin:breast_cancer", out=tmp_path / "run", n_trials=2, **search)
        with pytest.raises(StorageError, match=r"^cannot open storage"):
            api.search("builtin:breast_cancer", out=tmp_path / "new", n_trials=1, **search)
        assert not (tmp_path / "new" / "run.json").exists()
        server.start()
        api.search("builtin:breast_cancer", out=tmp_path / "run", n_trials=2, **search)  # resumes: one more trial
        _, finished = _finished(server.url)
    assert [state for state, _, _ in finished.values()] == [TrialState.COMPLETE] * 2
