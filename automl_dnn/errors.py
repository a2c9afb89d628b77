"""The project's exceptions.

Every error a user can cause (bad file, bad option, bad search space, tampered model) is an
``AutoDNNError``: the CLI prints its message on one line and exits with status 2. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from contextlib import contextmanager
from typing import Iterator


class AutoDNNError(Exception):
    """An error caused by the user's input; its message names the problem and the fix."""

    exit_code = 2


class DataError(AutoDNNError):
    """The data file, target or split cannot be used."""


class SourceTypeError(DataError, TypeError):
    """The data is neither a path nor a DataFrame (an array, a list): a TypeError too, as Python code expects."""


class SpaceError(AutoDNNError):
    """A search-space file is invalid."""


class StorageError(AutoDNNError):
    """The study storage cannot be opened, or the run directory belongs to another search."""


class ModelFormatError(AutoDNNError):
    """A model folder is incomplete, tampered with, or from a newer version."""


class MismatchError(AutoDNNError):
    """A model folder and a run folder (or a table) that do not belong together: other task, target or classes."""


class PathError(AutoDNNError):
    """A path given for output cannot be used: it is a file, lies under a file, or is the input itself."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when empty), for one-line user messages."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip()[:limit] if lines else type(exc).__name__


PG_DISK_FULL = "53100"  # PostgreSQL's SQLSTATE disk_full (class 53, insufficient resources)


class DiskFullError(AutoDNNError):
    """A write failed for lack of space or quota: what was written before stays intact, a rerun continues."""

    @classmethod
    def writing(cls, what: object, exc: BaseException | None = None) -> DiskFullError:
        """The one-line error for a full disk (or an exceeded quota) while writing ``what``."""
        quota = any(getattr(e, "errno", None) == errno.EDQUOT or "quota exceeded" in str(e).lower()
                    for e in _chain(exc))
        return cls(f"{'disk quota exceeded' if quota else 'disk full'} while writing {what}: "
                   "free space and rerun the same command")


def is_disk_full(exc: BaseException | str | None) -> bool:
    """Whether an error (or a recorded failure reason) says the disk is full or over quota.

    Matches ENOSPC and EDQUOT, and the texts of the libraries that drop the errno on the way: safetensors
    ("os error 28"), SQLite ("database or disk is full"), PostgreSQL ("No space left on device", "could not
    extend file", and SQLSTATE 53100 disk_full: psycopg2's ``pgcode``, psycopg's ``sqlstate``).
    """
    if isinstance(exc, str):
        text = exc.lower()
        codes = (errno.ENOSPC, errno.EDQUOT)
        return any(s in text for s in ("disk full while writing", "no space left on device", "disk quota exceeded",
                                        "database or disk is full", "could not extend file",
                                        *(f"os error {c})" for c in codes)))
    return any(isinstance(e, DiskFullError) or getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
               or getattr(e, "sqlite_errorname", None) == "SQLITE_FULL"
               or PG_DISK_FULL in (getattr(e, "pgcode", None), getattr(e, "sqlstate", None)) or is_disk_full(str(e))
               for e in _chain(exc))


def disk_full_error(exc: BaseException, what: object) -> DiskFullError | None:
    """The DiskFullError to raise for ``exc``: the one already in its chain (it names the exact file), a new
    one naming ``what`` when the chain says the disk is full, None when it does not."""
    for e in _chain(exc):
        if isinstance(e, DiskFullError):
            return e
    return DiskFullError.writing(what, exc) if is_disk_full(exc) else None


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc``, its causes and contexts, and the driver errors SQLAlchemy wraps (``.orig``), each once."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 20:
        e = todo.pop(0)
        if isinstance(e, BaseException) and not any(e is s for s in seen):
            seen.append(e)
            todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return seen


@contextmanager
def disk_full_as_error(what: object) -> Iterator[None]:
    """Turn a full disk or quota (ENOSPC, EDQUOT, SQLite's "database or disk is full") met inside the block
    into one ``DiskFullError`` naming ``what`` (or the file an inner block named), so the user gets one line
    saying to free space and rerun, not a library's traceback. Other errors pass unchanged."""
    try:
        yield
    except Exception as exc:
        error = disk_full_error(exc, what)
        if error is None or error is exc:
            raise
        raise error from exc
