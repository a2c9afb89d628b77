"""Where studies live: storage URLs, and leases that find trials whose worker died.

Optuna 5 gives heartbeats to its RDB storages only; a lease (a ``worker`` user attribute with host,
pid and heartbeat, renewed by a daemon thread) works for every storage, the journal file included.
"""

from __future__ import annotations

import importlib.util
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from automl_dnn.errors import StorageError, first_line

HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 120.0  # a lease older than this (from another host) marks its trial as dead


def check_storage_for_jobs(url: str, jobs: int) -> None:
    if jobs > 1 and url.startswith("sqlite"):
        raise StorageError(
            f"SQLite storage ({url}) is not safe for {jobs} concurrent workers; rerun with --jobs 1, "
            "or start a new run folder with --jobs N (it then uses a journal file), or give --storage postgresql://..."
        )


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open an Optuna storage from a URL: ``sqlite:///``, ``postgresql://``, ``mysql://``, ``journal:///path``."""
    if url.startswith("journal://") or url.endswith((".journal", ".log")):
        path = url.split("journal://", 1)[1] if url.startswith("journal://") else url
        path = path[1:] if path.startswith("//") else path
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        except (ValueError, OSError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise StorageError(f"{path!r} is not an Optuna journal file ({type(exc).__name__}); "
                               "give a new file name or an existing journal") from None
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql", "oracle", "mssql"):
        raise StorageError(
            f"bad storage URL {url!r}: use sqlite:///FILE, postgresql://USER@HOST/DB, mysql://..., or journal:///FILE"
        )
    url = _with_installed_driver(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if scheme == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        return _retry_racing_creation(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs))
    except ModuleNotFoundError as exc:
        raise StorageError(f"storage URL {redact(url)} needs the Python package {exc.name!r}: "
                           "pip install 'automl-dnn[postgres]'") from None
    except Exception as exc:  # sqlalchemy raises many kinds; all mean "cannot use this storage"
        raise StorageError(f"cannot open storage {redact(url)}: {first_line(exc)}") from None


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
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        lease = trial.user_attrs.get("worker")
        if lease and lease.get("host") == host and lease.get("pid") != os.getpid():
            dead = not _pid_alive(int(lease["pid"]))
        elif lease:
            dead = now - float(lease.get("heartbeat", 0)) > stale_after
        else:
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            dead = now - started > stale_after
        if dead:
            storage, trial_id = study._storage, trial._trial_id
            try:
                storage.set_trial_user_attr(trial_id, "fail_reason", "its worker stopped (crash or kill) mid-trial")
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
                reaped.append(trial.number)
            except Exception:  # another worker reaped or finished it first
                continue
    return reaped


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
