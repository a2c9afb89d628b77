"""Where studies live: storage URLs, and leases that find trials whose worker died.

Optuna 5 gives heartbeats to its RDB storages only; a lease (a ``worker`` user attribute with host,
pid and heartbeat, renewed by a daemon thread) works for every storage, the journal file included.
A database server's storage is wrapped in ``RetryingStorage``: a restart of the server pauses the
workers, it does not stop them.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import random
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Container, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar, cast

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from automl_dnn.errors import AutoDNNError, DiskFullError, StorageError, first_line, is_disk_full

HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 120.0  # a lease older than this (from another host) marks its trial as dead
# libpq (psycopg, psycopg2): give up connecting after 10 s, and notice within about a minute a server whose
# machine vanished (no TCP reset), so RetryingStorage sees an error, not a hang. The URL's own values win.
PG_CONNECT_ARGS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                   "keepalives_count": 3}


def check_storage_for_jobs(url: str, jobs: int) -> None:
    if jobs > 1 and url.startswith("sqlite"):
        raise StorageError(
            f"SQLite storage ({url}) is not safe for {jobs} concurrent workers; rerun with --jobs 1, "
            "or start a new run folder with --jobs N (it then uses a journal file), or give --storage postgresql://..."
        )


def absolute_storage_url(url: str) -> str:
    """A file storage's URL with an absolute path, as run.json records it: a relative ``sqlite:///x.db`` or
    journal named the file in the current folder, so a later ``ensemble`` or resume from another folder opened
    (and created) another, empty study. An in-memory SQLite study would be gone when the command ends."""
    if url in ("sqlite://", "sqlite:///:memory:") or url.startswith("sqlite:///:memory:?"):
        raise StorageError(f"storage {url!r} is in memory and ends with the command; give sqlite:///FILE")
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path, sep, query = url[len("sqlite:///"):].partition("?")
        return f"sqlite:///{Path(path).resolve()}{sep}{query}"
    if _is_journal(url):
        return f"journal:///{Path(_journal_path(url)).resolve()}"
    return url


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open an Optuna storage from a URL: ``sqlite:///``, ``postgresql://``, ``mysql://``, ``journal:///path``.

    A database server that does not answer is an error at once here (a mistyped URL is told in one line);
    ``open_study_storage`` is the open that waits for a server that is down.
    """
    if _is_journal(url):
        return _open_journal(_journal_path(url))
    with _open_errors(url):
        return _open_rdb(url)


def storage_file(url: str) -> Path | None:
    """The local file a SQLite or journal storage keeps its studies in; None for a database server."""
    if _is_journal(url):
        return Path(_journal_path(url))
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        return Path(url[len("sqlite:///"):].partition("?")[0])
    return None


def _is_journal(url: str) -> bool:
    return url.startswith("journal://") or url.endswith((".journal", ".log"))


def _journal_path(url: str) -> str:
    """The file of a journal URL, read as SQLite's: ``journal:///x.journal`` is relative, ``journal:////x`` absolute
    (``journal:///x`` was ``/x``: a file at the root, while run.json records ``journal:////abs/path``)."""
    if not url.startswith("journal://"):
        return url
    path = url[len("journal://"):]
    return path[1:] if path.startswith("/") else path


def _open_journal(path: str) -> optuna.storages.JournalStorage:
    """A journal file storage, its torn last line (an append cut short by a full disk) cut off first."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        repair_torn_journal(path)
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    except (ValueError, OSError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        if is_disk_full(exc):  # no room even for the journal's lock file
            raise DiskFullError.writing(path, exc) from None
        raise StorageError(f"{path!r} is not an Optuna journal file ({type(exc).__name__}); "
                           "give a new file name or an existing journal") from None


def _open_rdb(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on a database; a bad URL is a ``StorageError``, the driver's errors pass unchanged."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql", "oracle", "mssql"):
        raise StorageError(
            f"bad storage URL {url!r}: use sqlite:///FILE, postgresql://USER@HOST/DB, mysql://..., or journal:///FILE"
        )
    url = _with_installed_driver(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if scheme == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif scheme in ("postgresql", "postgres") and url.split(":", 1)[0].partition("+")[2] in ("", "psycopg", "psycopg2"):
        engine_kwargs["connect_args"] = {k: v for k, v in PG_CONNECT_ARGS.items() if f"{k}=" not in url}
    return _retry_racing_creation(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs))


@contextmanager
def _open_errors(url: str) -> Iterator[None]:
    """Any failure to open a database storage as one line (the project's own errors pass unchanged)."""
    try:
        yield
    except AutoDNNError:
        raise
    except ModuleNotFoundError as exc:
        raise StorageError(f"storage URL {redact(_with_installed_driver(url))} needs the Python package "
                           f"{exc.name!r}: pip install 'automl-dnn[postgres]'") from None
    except Exception as exc:  # sqlalchemy raises many kinds; all mean "cannot use this storage"
        raise StorageError(f"cannot open storage {redact(_with_installed_driver(url))}: {first_line(exc)}") from None


# --- a journal file whose last append was cut short -------------------------------------------------

_JOURNAL_LINE = re.compile(rb'\{\s*"op_code"\s*:')  # how every line of an Optuna journal starts


def repair_torn_journal(path: str) -> int:
    """Cut off a partial last line (no newline) of a journal file; return how many bytes were cut.

    A full disk can stop an append midway. Optuna reads past such a line, but its next append is glued
    onto it: that log is lost, the append fails, and the lines after it make the file unreadable. Only
    the bytes after the last newline go; the complete lines are never touched. The journal's own lock is
    held, so an append in progress in another worker is never taken for a torn one. A file that does not
    begin like a journal is left alone (opening it then fails with its own one line).
    """
    if not _ends_torn(path):
        return 0
    lock = JournalFileOpenLock(path)
    lock.acquire()
    try:
        keep = _end_of_last_line(path)
        size = os.path.getsize(path)
        if keep == size:
            return 0  # an append that was in progress, now complete
        os.truncate(path, keep)
    finally:
        lock.release()
    print(f"note: journal {path} ended in a partial line (an append cut short, e.g. by a full disk); "
          f"cut off those {size - keep} bytes, every complete line before them is kept",
          file=sys.stderr, flush=True)
    return size - keep


def _ends_torn(path: str) -> bool:
    """Whether ``path`` is a journal (by its first bytes) whose last byte is not a newline."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if not _JOURNAL_LINE.match(head):
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _end_of_last_line(path: str, chunk: int = 1 << 16) -> int:
    """The offset just after the file's last newline (0 when it has none), read backwards in chunks."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            found = f.read(end - start).rfind(b"\n")
            if found >= 0:
                return start + found + 1
            end = start
    return 0


def _retry_racing_creation(open_: Callable[[], Any], attempts: int = 6) -> Any:
    """Retry when another worker is creating the same tables right now (workers that start together)."""
    for attempt in range(attempts):
        try:
            return open_()
        except Exception as exc:
            racing = any(s in str(exc).lower() for s in ("already exists", "duplicate key", "uniqueviolation"))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * (attempt + 1) * 0.3)
    raise AssertionError("unreachable")


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` means psycopg2 to SQLAlchemy; use psycopg (3), the one the postgres extra installs."""
    if url.startswith(("postgresql://", "postgres://")):
        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redact(url: str) -> str:
    """Hide a password in a storage URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


# --- leases: detect trials whose worker died -------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_trials(study: optuna.Study, *, stale_after: float = STALE_AFTER_SECONDS) -> list[int]:
    """Fail RUNNING trials whose worker is gone: a dead pid on this host, or no heartbeat for a while."""
    host, now = socket.gethostname(), time.time()
    back_at = getattr(study._storage, "back_at", 0.0)  # no one could beat while the database was away
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lease = trial.user_attrs.get("worker")
        if lease and lease.get("host") == host and lease.get("pid") != os.getpid():
            dead = not _pid_alive(int(lease["pid"]))
        elif lease:
            dead = now - max(float(lease.get("heartbeat", 0)), back_at) > stale_after
        else:
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            dead = now - max(started, back_at) > stale_after
        if dead:
            storage, trial_id = study._storage, trial._trial_id
            try:
                storage.set_trial_user_attr(trial_id, "fail_reason", "its worker stopped (crash or kill) mid-trial")
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
                reaped.append(trial.number)
            except Exception:  # another worker reaped or finished it first
                continue
            _retry(study, trial)
    return reaped


def _retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Enqueue the settings of a trial whose worker died, once, so that the next trial runs them again.

    Without it the killed trial is lost for good: a portfolio trial is never tried again, and its values at the
    pruner's rungs (kept in its system attributes, which Optuna's pruners read from every trial, failed ones too)
    go on setting the bar, so that on a small ``--n-trials`` every later trial could be pruned and a rerun of the
    same command ended with no completed trial, for ever. An enqueued trial runs to its end (it is never
    pruned, as the portfolio's are not). A retry that dies too is not retried again: a configuration that
    kills its worker (the kernel's OOM killer) must not loop."""
    if "retry_of" in trial.user_attrs:
        return
    params = trial.system_attrs.get("fixed_params") or trial.params
    if not params:
        return
    user_attrs = {"retry_of": trial.number}
    try:
        study.enqueue_trial(dict(params), user_attrs=user_attrs, skip_if_exists=False)
    except Exception:  # the space changed meanwhile (a resume with another space is refused earlier): no retry
        pass


class Lease:
    """Marks a trial as owned by this process and beats every few seconds in a daemon thread."""

    def __init__(self, trial: optuna.Trial, interval: float = HEARTBEAT_SECONDS) -> None:
        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _beat(self) -> None:
        self.trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()})

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception:  # the trial finished meanwhile, or the storage hiccuped: try next time
                pass

    def __enter__(self) -> Lease:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


# --- database faults: wait out a server that restarts ----------------------------------------------

RETRY_SECONDS = 120.0  # how long a worker waits for an unreachable database before it stops with an error
RETRY_SECONDS_VARIABLE = "AUTOML_DNN_STORAGE_RETRY_SECONDS"  # overrides RETRY_SECONDS (tests use a few seconds)
MAX_BACKOFF_SECONDS = 5.0
CREATE_TOKEN = "automl_dnn:create_token"  # system attribute naming the call that created a trial
# Phrases of lost or refused connections, for drivers whose exception types say less (and for wrappers).
_LOST_PHRASES = ("server closed the connection", "connection refused", "terminating connection",
                 "could not connect", "connection is closed", "connection already closed", "connection reset",
                 "broken pipe", "ssl syscall", "the database system is", "not accepting connections",
                 "lost connection", "server has gone away", "can't connect", "consuming input failed")
# A failure while connecting committed nothing (a failure at COMMIT may have committed).
_CONNECT_PHRASES = ("connection refused", "could not connect", "the database system is", "not accepting connections",
                    "can't connect")
_CONNECTION_TYPES = ("OperationalError", "InterfaceError", "DisconnectionError")
# A server that answered no to this URL: its user, password or database is wrong, which no wait mends.
_REFUSED_FOR_GOOD = ("password authentication failed", "no pg_hba.conf entry", "does not exist",
                     "access denied for user", "unknown database")


def retry_seconds() -> float:
    """The retry window: RETRY_SECONDS, or the environment's AUTOML_DNN_STORAGE_RETRY_SECONDS."""
    text = os.environ.get(RETRY_SECONDS_VARIABLE)
    try:
        return max(0.0, float(text)) if text else RETRY_SECONDS
    except ValueError:
        raise StorageError(f"{RETRY_SECONDS_VARIABLE}={text!r} is not a number of seconds") from None


def open_study_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage a study runs on: Optuna's cache over an RDB storage, and retries where there is a server.

    The open itself is retried within the same window as every later call: a worker that starts while its
    database server restarts waits for it too. SQLite and journal files are local files: no connection
    to lose, so nothing to wait for.
    """
    if _is_journal(url) or url.startswith("sqlite"):
        return optuna.storages.get_storage(open_storage(url))
    with _open_errors(url):
        return RetryingStorage.opening(lambda: optuna.storages.get_storage(_open_rdb(url)), name=redact(url))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (causes, contexts, SQLAlchemy's ``orig``), outermost first."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is f for f in found):
            continue
        found.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return found


def _says_lost(exc: BaseException) -> bool:
    names = {(c.__module__.split(".", 1)[0], c.__name__) for c in type(exc).__mro__}
    return (isinstance(exc, ConnectionError) or bool(getattr(exc, "connection_invalidated", False))
            or any(m in ("sqlalchemy", "psycopg", "psycopg2", "pymysql", "MySQLdb") and n in _CONNECTION_TYPES
                   for m, n in names)
            or any(p in str(exc).lower() for p in _LOST_PHRASES))


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the database connection was lost or refused: worth waiting for.

    SQLite's "operational" errors (no such table, disk I/O) are about its file, never a connection. A
    server whose disk is full (SQLSTATE 53100) answers: waiting would not free space, so it is no outage.
    Nor is a server that refuses this user or database: a wrong URL does not mend itself.
    """
    chain = _chain(exc)
    if any(type(e).__module__.startswith("sqlite3") for e in chain) or is_disk_full(exc):
        return False
    if any(p in str(e).lower() for e in chain for p in _REFUSED_FOR_GOOD):
        return False
    return any(_says_lost(e) for e in chain)


def _may_have_committed(exc: BaseException) -> bool:
    """A failure while running a statement (SQLAlchemy names it) or while connecting committed nothing;
    one at COMMIT may have committed before the answer was lost."""
    for e in _chain(exc):
        if getattr(e, "statement", None) or any(p in str(e).lower() for p in _CONNECT_PHRASES):
            return False
    return True


def _reason(exc: BaseException) -> str:
    """The driver's own words for a connection error, on one line (SQLAlchemy's and Optuna's wrap them)."""
    said = [e for e in _chain(exc) if _says_lost(e) and str(e).strip() not in ("", "()")]
    own = [e for e in said if type(e).__module__.split(".", 1)[0] not in ("sqlalchemy", "optuna")]
    return first_line((own or said or [exc])[0], limit=160)


def _with_token(template: FrozenTrial | None, token: str) -> FrozenTrial:
    """The trial to create, carrying ``token``: a retry after a lost connection can then find it."""
    if template is None:
        return FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                           datetime_complete=None, params={}, distributions={}, user_attrs={},
                           system_attrs={CREATE_TOKEN: token}, intermediate_values={}, trial_id=-1)
    trial = copy.deepcopy(template)
    trial.system_attrs = {**trial.system_attrs, CREATE_TOKEN: token}
    return trial


T = TypeVar("T")


class RetryingStorage(optuna.storages.BaseStorage):
    """Delegates to a storage and waits out lost connections, so a database restart pauses the workers.

    Lost-connection errors are retried with exponential backoff and jitter for up to ``retry_seconds()``
    from the start of the outage (one ``note:`` line per outage); then a one-line ``StorageError``, and
    later calls fail at once until the database answers again. Writes that are not idempotent are
    made safe to repeat: a created trial carries a token that a retry looks for first (and duplicates
    are failed), and a state change that finds its own earlier, committed, write counts as done.
    """

    def __init__(self, inner: optuna.storages.BaseStorage, *, name: str, window: float | None = None) -> None:
        self._inner, self._name = inner, name
        self._window = retry_seconds() if window is None else window
        self._lock = threading.Lock()
        self._outage_since: float | None = None
        self._gave_up = False
        self.back_at = 0.0  # time.time() when the database answered again after the last outage

    @classmethod
    def opening(cls, open_: Callable[[], optuna.storages.BaseStorage], *, name: str,
                window: float | None = None) -> RetryingStorage:
        """Open the inner storage within the retry window too: a server that is down when a worker starts
        is waited for like one that goes down later (one note line, then a one-line ``StorageError``)."""
        storage = cls(cast(optuna.storages.BaseStorage, None), name=name, window=window)
        storage._inner = storage._call(lambda _: open_())
        return storage

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- the retry loop -------------------------------------------------------------------------------

    def _call(self, attempt: Callable[[bool], T]) -> T:
        """Run ``attempt(may_have_committed)`` until it gets through; the flag says an earlier try may have."""
        tries, committed = 0, False
        while True:
            try:
                result = attempt(committed)
            except Exception as exc:
                if is_disk_full(exc):  # the server's disk: one line now, not 120 s of retries
                    raise DiskFullError.writing(f"the study in {self._name}", exc) from exc
                if not is_connection_error(exc):
                    raise
                committed = committed or _may_have_committed(exc)
                self._wait(exc, tries)
                tries += 1
                continue
            if self._outage_since is not None:
                self._back()
            return result

    def _plain(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Retry a call that is safe to repeat (reads, and upserts of attributes, params and values)."""
        return self._call(lambda _: method(*args, **kwargs))

    def _wait(self, exc: BaseException, tries: int) -> None:
        """Sleep before the next try, or give up: the outage has lasted the whole window."""
        now = time.monotonic()
        with self._lock:
            if self._outage_since is None:
                self._outage_since = now
                print(f"note: storage {self._name} unreachable ({_reason(exc)}); retrying for up to "
                      f"{self._window:g} s", file=sys.stderr, flush=True)
            left = self._outage_since + self._window - now
            if self._gave_up or left <= 0:
                self._gave_up = True
                raise StorageError(f"storage {self._name} unreachable for {self._window:g} s ({_reason(exc)}); "
                                   "the finished trials are kept in it: run the same command again once it is back"
                                   ) from exc
        backoff = min(MAX_BACKOFF_SECONDS, 0.25 * 2.0 ** tries) * random.uniform(0.5, 1.0)
        time.sleep(min(left, backoff))

    def _back(self) -> None:
        with self._lock:
            self._outage_since, self._gave_up, self.back_at = None, False, time.time()

    # -- writes that are not idempotent ---------------------------------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        token = uuid.uuid4().hex
        template = _with_token(template_trial, token)

        def attempt(may_have_committed: bool) -> int:
            mine = self._tokened(study_id, token) if may_have_committed else []
            return mine[0]._trial_id if mine else self._inner.create_new_trial(study_id, template)

        trial_id = self._call(attempt)
        # The RDB storage also retries inside (deadlocks), where a lost answer to a COMMIT can leave a copy.
        self._call(lambda _: self._fail_copies(study_id, token, keep=trial_id))
        return trial_id

    def _tokened(self, study_id: int, token: str) -> list[FrozenTrial]:
        trials = self._inner.get_all_trials(study_id, deepcopy=False)
        return sorted((t for t in trials if t.system_attrs.get(CREATE_TOKEN) == token), key=lambda t: t.number)

    def _fail_copies(self, study_id: int, token: str, keep: int) -> None:
        for copy_ in self._tokened(study_id, token):
            if copy_._trial_id != keep:
                try:
                    self._inner.set_trial_user_attr(copy_._trial_id, "fail_reason",
                                                    "a copy of another trial, made by a retry after a lost connection")
                    self._inner.set_trial_state_values(copy_._trial_id, TrialState.FAIL)
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        def attempt(may_have_committed: bool) -> bool:
            try:
                done = self._inner.set_trial_state_values(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if may_have_committed and self._has_state(trial_id, state, values):
                    return True  # our own earlier try finished it; its answer was lost
                raise
            if not done and may_have_committed and state == TrialState.RUNNING:
                return self._claimed_unleased(trial_id)
            return done

        return self._call(attempt)

    def _has_state(self, trial_id: int, state: TrialState, values: Sequence[float] | None) -> bool:
        trial = self._inner.get_trial(trial_id)
        return trial.state == state and (values is None or trial.values == list(values))

    def _claimed_unleased(self, trial_id: int) -> bool:
        """A waiting trial that our lost COMMIT may have claimed: take it when it is RUNNING and no worker
        holds a lease on it, rather than leave it RUNNING with no one to run it."""
        trial = self._inner.get_trial(trial_id)
        return trial.state == TrialState.RUNNING and "worker" not in trial.user_attrs

    # -- everything else: safe to repeat ----------------------------------------------------------------

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._plain(self._inner.create_new_study, directions, study_name)  # a repeat: DuplicatedStudyError

    def delete_study(self, study_id: int) -> None:
        self._plain(self._inner.delete_study, study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._plain(self._inner.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._plain(self._inner.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._plain(self._inner.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._plain(self._inner.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._plain(self._inner.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._plain(self._inner.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._plain(self._inner.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._plain(self._inner.get_all_studies)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self._plain(self._inner.set_trial_param, trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._plain(self._inner.get_trial_id_from_study_id_trial_number, study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self._plain(self._inner.get_trial_number_from_id, trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._plain(self._inner.get_trial_param, trial_id, param_name)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._plain(self._inner.set_trial_intermediate_value, trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._plain(self._inner.set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._plain(self._inner.set_trial_system_attr, trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._plain(self._inner.get_trial, trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._plain(self._inner.get_all_trials, study_id, deepcopy=deepcopy, states=states)

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        return self._plain(self._inner.get_n_trials, study_id, state)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._plain(self._inner.get_best_trial, study_id)

    def get_trial_params(self, trial_id: int) -> dict[str, Any]:
        return self._plain(self._inner.get_trial_params, trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._plain(self._inner.get_trial_user_attrs, trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._plain(self._inner.get_trial_system_attrs, trial_id)

    def remove_session(self) -> None:
        self._inner.remove_session()

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        self._inner.check_trial_is_updatable(trial_id, trial_state)


@contextmanager
def storage_errors_surface() -> Iterator[None]:
    """Raise the ``StorageError`` itself when Optuna's trial loop masks it (its clean-up after a failed
    ``tell`` reads a state that the unreachable storage never gave, and fails with an UnboundLocalError)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        cause = next((e for e in _chain(exc) if isinstance(e, StorageError)), None)
        if cause is None:
            raise
        raise cause from None
