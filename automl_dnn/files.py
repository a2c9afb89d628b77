"""Files the tool writes: atomic writes, JSON and safetensors arrays.

Every file is written to a temporary name and renamed, so a crash never leaves half a file behind,
and a full disk (``errors.disk_full_as_error``) is one ``DiskFullError`` naming the file, the old file intact.
Arrays are safetensors (no pickle).
"""

from __future__ import annotations

import json
import os
import tempfile
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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            write(Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


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
