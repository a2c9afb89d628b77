"""Files the tool writes: atomic writes, JSON and safetensors arrays.

Every file is written to a temporary name and renamed, so a crash never leaves half a file behind,
and a full disk (``errors.disk_full_as_error``) is one ``DiskFullError`` naming the file, the old file intact.
Arrays are safetensors (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
from safetensors.numpy import load_file, save_file

from automl_dnn.errors import disk_full_as_error


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` over ``path``: readers see the old file or the new one.

    A full disk raises ``DiskFullError`` naming ``path``; the temporary file is removed, the old file kept.
    """
    path = Path(path)
    with disk_full_as_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_temporary(path)
        try:
            write(Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _new_temporary(path: Path) -> str:
    """An empty new file beside ``path``, with the permissions the new file would get (the umask's), or the ones the
    file it replaces has. ``tempfile.mkstemp`` makes 0600 files: a prediction file others could not read."""
    tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777)
    except FileNotFoundError:  # a new file: the umask's permissions, as os.open gave
        pass
    return tmp


#: What the writers here name the temporaries of a final NAME: ``atomic_write``'s ``.NAME.<12 hex>.tmp`` files, a
#: trial's or fold copy's ``.NAME.<8 hex>`` folder (``new_temporary_folder``; ``tempfile.mkdtemp``'s 8 characters
#: before), a model folder's ``.NAME.tmp-*`` and ``.NAME.old-*``.
_TEMPORARY_SUFFIX = r"(\.[0-9a-f]{12}\.tmp|\.[a-z0-9_]{8}|\.tmp-[a-z0-9_]{8}|\.old-[a-z0-9_]{8})$"
#: A temporary this old lost its writer (a kill: the rename that ends a write never came). A live writer's lives
#: for seconds, and several machines may write into one run folder, so only old ones go.
STALE_TEMPORARY_SECONDS = 3600.0


def remove_stale_temporaries(folder: Path, *, of: list[str] | None = None, recursive: bool = False,
                             now: float | None = None) -> list[Path]:
    """Remove the temporaries that killed writers left in ``folder`` (only those of the final names ``of``, in a
    folder that is not the tool's own, such as a model folder's parent); returns what was removed.

    Nothing reads them (every reader looks for final names), but a report page's is megabytes, and a rerun after
    every kill adds more."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = ".+" if of is None else "|".join(re.escape(name) for name in of)
    pattern = re.compile(rf"^\.({names}){_TEMPORARY_SUFFIX}")
    now = time.time() if now is None else now
    removed = []
    for path in (folder.rglob(".*") if recursive else folder.glob(".*")):
        try:
            if not pattern.match(path.name) or now - path.lstat().st_mtime <= STALE_TEMPORARY_SECONDS:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:  # gone meanwhile (another worker's sweep), or not ours to remove: left as it is
            continue
    return removed


def new_temporary_folder(final: Path, tag: str = "") -> Path:
    """An empty new folder beside ``final`` (``.NAME.<tag><8 hex>``) with the permissions a new folder gets (the
    umask's) or the ones ``final`` has. ``tempfile.mkdtemp`` makes 0700 folders: a model folder, renamed into
    place, that nobody else could read."""
    while True:
        tmp = final.parent / f".{final.name}.{tag}{uuid.uuid4().hex[:8]}"
        try:
            os.mkdir(tmp, 0o777)  # the umask applies, as to any new folder
            break
        except FileExistsError:
            continue
    try:
        os.chmod(tmp, final.stat().st_mode & 0o777)
    except FileNotFoundError:
        pass
    return tmp


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=_jsonable)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save numpy arrays as safetensors (no pickle), atomically."""
    atomic_write(path, lambda tmp: write_arrays(tmp, arrays))


def json_digest(value: Any) -> str:
    """A short stable hash of a JSON-able ``value`` (a run's fingerprint, a fold copy's, a kept tuning's key)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(*paths: Path) -> str:
    """A short hash of the bytes of ``paths`` (a run's split, preprocessing and target files)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save numpy arrays as safetensors in place: for a file of a temporary folder renamed into place whole."""
    keeping_file_mode(Path(path), lambda p: save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(p)))


def keeping_file_mode(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(path)``, leaving ``path`` the permissions a new file gets (the umask's) or the ones it had:
    safetensors' ``save_file`` makes its files 0600 whatever the umask (a trial's weights that another user's
    worker could not read)."""
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = path.stat().st_mode & 0o777
    write(path)
    os.chmod(path, mode)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    return load_file(str(path))
