"""Checks on the paths a command will write to, made before any work is spent on what goes there.

Standard library only, so the CLI can check its options without loading numpy or torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from automl_dnn.errors import PathError


def file_in_the_way(path: Path) -> Path | None:
    """The existing non-folder at ``path`` or above it, if any: then ``path`` cannot be a folder."""
    for candidate in (Path(path), *Path(path).parents):
        try:
            if candidate.exists() and not candidate.is_dir():
                return candidate
        except OSError:  # e.g. no permission to look: creating the folder will say what is wrong
            return None
    return None


def check_folder_path(path: Path, what: str = "output folder") -> None:
    """Refuse a path that cannot be a folder (an existing file, or a path under a file); creates nothing."""
    path = Path(path)
    blocker = file_in_the_way(path)
    if blocker is not None:
        where = "is a file" if blocker == path else f"lies under the file {str(blocker)!r}"
        raise PathError(f"{what} {str(path)!r} {where}; choose a folder path")


def check_file_path(path: Path, what: str = "output file") -> None:
    """Refuse a path that cannot be a file to write (an existing folder, or a path under a file)."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{what} {str(path)!r} is a folder; give a file name")
    blocker = file_in_the_way(path.parent)
    if blocker is not None:
        raise PathError(f"{what} {str(path)!r} lies under the file {str(blocker)!r}; choose a path in a folder")


def make_folder(path: Path, what: str = "output folder") -> Path:
    """``check_folder_path``, then create the folder (and its parents)."""
    check_folder_path(path, what)
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PathError(f"cannot create {what} {str(path)!r}: {exc.strerror}") from None
    return Path(path)


def check_can_create(path: Path, what: str = "output folder") -> None:
    """Refuse a folder that could not be made or replaced, creating only the folders above it.

    The folder itself is made when its contents are ready: one made now, before hours of work, is left empty
    by a kill (SIGKILL, a lost machine) that no clean-up can answer.
    """
    check_folder_path(path, what)
    parent = Path(path).absolute().parent
    make_folder(parent, f"folder of the {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PathError(f"cannot create {what} {str(path)!r}: no permission to write in {str(parent)!r}")


def same_file(a: Any, b: Any) -> bool:
    """Whether two paths name one existing file (so writing to ``b`` would overwrite the input ``a``)."""
    if not isinstance(a, (str, os.PathLike)) or not isinstance(b, (str, os.PathLike)):
        return False
    try:
        return Path(a).exists() and Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False
