"""The project's exceptions.

Every error a user can cause (bad file, bad option, bad search space, tampered model) is an
``AutoDNNError``: the CLI prints its message on one line and exits with status 2. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class AutoDNNError(Exception):
    """An error caused by the user's input; its message names the problem and the fix."""

    exit_code = 2


class DataError(AutoDNNError):
    """The data file, target or split cannot be used."""


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
