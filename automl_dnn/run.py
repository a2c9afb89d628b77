"""The run folder: everything a search keeps, laid out so the ensemble step never retrains.

```
RUN_DIR/
  run.json                 what was searched (source, target, task, metric, space, fingerprints, storage)
  data/<scaling>.safetensors   encoded train/valid/test matrices and targets, one file per input scaling
  preprocess/<scaling>.json    the fitted preprocessing (plain JSON)
  target.json              the fitted target encoder
  split.safetensors        row indices of each split in the source table
  study.db                 the Optuna study (SQLite; a journal file or a database URL when several write)
  artifacts/trial-NNNNN/   per completed trial: weights.safetensors, config.json, predictions.safetensors
```
Every file is written to a temporary name and renamed, so a crash never leaves half a file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from automl_dnn.errors import StorageError

RUN_FORMAT = 1
PARTS = ("train", "valid", "test")


def check_output_dir(path: Path, what: str = "output folder") -> Path:
    """Refuse a path that cannot be a folder (an existing file, or a path under a file)."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == path else f"lies under the file {str(parent)!r}"
            raise StorageError(f"{what} {str(path)!r} {where}; choose a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {what} {str(path)!r}: {exc.strerror}") from None
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` over ``path``: readers see the old file or the new one."""
    path = Path(path)
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
    from safetensors.numpy import save_file

    clean = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    atomic_write(path, lambda tmp: save_file(clean, str(tmp)))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


class RunDir:
    """Paths of one run folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def spec_path(self) -> Path:
        return self.root / "run.json"

    @property
    def default_sqlite(self) -> Path:
        return self.root / "study.db"

    @property
    def default_journal(self) -> Path:
        return self.root / "study.journal"

    @property
    def split_path(self) -> Path:
        return self.root / "split.safetensors"

    @property
    def target_path(self) -> Path:
        return self.root / "target.json"

    def data_path(self, scaling: str) -> Path:
        return self.root / "data" / f"{scaling}.safetensors"

    def preprocess_path(self, scaling: str) -> Path:
        return self.root / "preprocess" / f"{scaling}.json"

    def exists(self) -> bool:
        return self.spec_path.is_file()

    def read_spec(self) -> dict[str, Any]:
        if not self.exists():
            raise StorageError(f"{str(self.root)!r} is not a run folder (no run.json); run `automl-dnn search` first")
        spec = read_json(self.spec_path)
        if spec.get("format", 0) > RUN_FORMAT:
            raise StorageError(f"run folder {str(self.root)!r} was written by a newer automl-dnn; upgrade to use it")
        return self._follow_move(spec)

    def _follow_move(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A run folder that was moved or copied uses its own study file, artifacts and source copy."""
        old_root = spec.get("run_dir")
        here = str(self.root.resolve())
        if not old_root or old_root == here:
            return spec
        moved = dict(spec)
        for key in ("storage", "artifacts", "source"):
            value = str(spec.get(key, ""))
            if old_root + "/" in value:
                moved[key] = value.replace(old_root + "/", here + "/")
        return moved

    def load_part(self, scaling: str) -> dict[str, np.ndarray]:
        """Encoded ``X_<part>`` / ``y_<part>`` matrices for one input scaling."""
        return load_arrays(self.data_path(scaling))
