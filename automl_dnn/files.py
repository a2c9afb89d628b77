"""Files the tool writes: atomic writes, JSON and safetensors arrays.

Every file is written to a temporary name and renamed, so a crash never leaves half a file behind,
and a full disk (``errors.disk_full_as_error``) is one ``DiskFullError`` naming the file, the old file intact.
Arrays are safetensors (no pickle).
"""

from __future__ import annotations

import json
import os
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


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save numpy arrays as safetensors in place: for a file of a temporary folder renamed into place whole."""
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    return load_file(str(path))
