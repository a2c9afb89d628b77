"""The model folder: one safe, self-checking artifact that predicts without the run folder.

```
MODEL_DIR/
  model.json              task, input schema, preprocessing, target encoder, members and weights,
                          decision threshold, scores, library versions, and the sha256 of every other file
                          (+ "estimator": the class and parameters of the scikit-learn estimator that fitted it)
  net-NNNNN.safetensors   one per net member: the state_dict of build_mlp(NetConfig(**settings["net"]))
  xgboost.ubj             the XGBoost member, if any (Booster.save_raw("ubj"))
```

Nothing is pickled. A folder is written beside its target and swapped in, so a half-written folder
never replaces a good one (a full disk midway is one ``DiskFullError``; the old folder stays, byte for
byte). ``read_verified`` checks the format version and every file's sha256 before anything is parsed,
and hands back the very bytes it hashed (no gap for a swap in between); ``predictor.load_model`` builds
the ``Predictor`` from them.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from safetensors.torch import save as save_tensors

from automl_dnn.errors import ModelFormatError, PathError, disk_full_as_error
from automl_dnn.files import new_temporary_folder, remove_stale_temporaries
from automl_dnn.paths import check_can_create, check_folder_path

FORMAT_NAME = "automl-dnn-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
GBT_FILE = "xgboost.ubj"


# --- saving -------------------------------------------------------------------------------------


@dataclass
class NetMember:
    """One trained net as it goes into a model folder."""

    trial: int
    settings: dict[str, Any]  # TrialSettings.to_dict()
    d_in: int
    d_out: int
    state: dict[str, Any]  # torch state_dict (tensors)
    weight: float
    scores: dict[str, Any] = field(default_factory=dict)
    part: str | None = None  # one of a bagged trial's copies: "fold1".. (the fold models) or "refit"

    @property
    def name(self) -> str:
        return f"net-{self.trial:05d}" + (f"-{self.part}" if self.part else "")


@dataclass
class GBTMember:
    """The XGBoost member: its trimmed booster and what predicting with it needs."""

    booster: Any  # xgboost.Booster
    params: dict[str, Any]
    best_iteration: int
    categories: dict[str, list[Any]]  # training categories per column (XGBoost codes them by position)
    preprocess: str  # key of the preprocessor whose transform_for_gbt builds its frame
    weight: float
    scores: dict[str, Any] = field(default_factory=dict)


def save_model(
    model_dir: Path,
    *,
    task: str,
    target: str,
    metric: str,
    target_encoder: dict[str, Any],
    preprocessors: dict[str, dict[str, Any]],
    nets: Sequence[NetMember],
    gbt: GBTMember | None = None,
    threshold: float | None = None,
    scores: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write a model folder; a half-written folder never replaces a good one."""
    if not nets and gbt is None:
        raise ValueError("a model needs at least one member")
    files: dict[str, bytes] = {}
    members: list[dict[str, Any]] = []
    for net in nets:
        if net.settings.get("scaling", "standard") not in preprocessors:
            raise ValueError(f"{net.name} uses scaling {net.settings.get('scaling')!r} with no preprocessor")
        state = {k: v.detach().cpu().contiguous() for k, v in net.state.items()}
        files[f"{net.name}.safetensors"] = save_tensors(state, metadata={"format": FORMAT_NAME})
        members.append({
            "kind": "net", "name": net.name, "file": f"{net.name}.safetensors", "trial": net.trial,
            "settings": net.settings, "d_in": net.d_in, "d_out": net.d_out,
            "scaling": net.settings.get("scaling", "standard"), "weight": float(net.weight), "scores": net.scores,
        })
    if gbt is not None:
        if gbt.preprocess not in preprocessors:
            raise ValueError(f"the XGBoost member uses preprocessor {gbt.preprocess!r}, which is not given")
        files[GBT_FILE] = bytes(gbt.booster.save_raw(raw_format="ubj"))
        members.append({
            "kind": "xgboost", "name": "xgboost", "file": GBT_FILE, "params": gbt.params,
            "best_iteration": int(gbt.best_iteration), "categories": gbt.categories,
            "preprocess": gbt.preprocess, "weight": float(gbt.weight), "scores": gbt.scores,
        })
    first = next(iter(preprocessors.values()))
    spec = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "task": task,
        "target": target,
        "metric": metric,
        "classes": list(target_encoder.get("classes", [])),
        "input_schema": [dict(item) for item in first.get("input_schema", [])],
        "target_encoder": target_encoder,
        "preprocessors": preprocessors,
        "members": members,
        "threshold": threshold,
        "scores": scores or {},
        "notes": list(notes),
        "versions": library_versions(),
        "files": {name: sha256(data) for name, data in sorted(files.items())},
    }
    files[MODEL_JSON] = model_json(spec)
    return write_model_folder(model_dir, files)


def model_json(spec: dict[str, Any]) -> bytes:
    """model.json's bytes: plain JSON (``_json_safe``), sorted and indented."""
    return json.dumps(_json_safe(spec), indent=2, sort_keys=True, allow_nan=False).encode("utf-8")


def write_model_folder(model_dir: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` into a temporary sibling folder, then swap it in for ``model_dir``.

    Refuses to replace a non-empty folder that is not a model folder (no model.json), so a mistyped
    ``--model .`` never wipes a project. A full disk raises ``DiskFullError``: the temporary folder is
    removed and ``model_dir`` keeps the model it held.
    """
    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    with disk_full_as_error(f"the model folder {model_dir}"):
        check_can_create(model_dir, "model folder")  # made by the rename: a kill mid-write leaves no empty one
        remove_stale_temporaries(model_dir.parent, of=[model_dir.name])  # a killed export's copies
        tmp = new_temporary_folder(model_dir, "tmp-")
        try:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            _swap_in(tmp, model_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return model_dir


def check_model_dir(model_dir: Path) -> None:
    """Refuse, before any work, a path that cannot become a model folder (creates nothing)."""
    model_dir = Path(model_dir)
    check_folder_path(model_dir, "model folder")
    if model_dir.is_dir() and any(model_dir.iterdir()) and not (model_dir / MODEL_JSON).is_file():
        raise PathError(f"model folder {str(model_dir)!r} is not empty and holds no model.json; "
                           "choose a new or empty folder")


def _swap_in(new: Path, target: Path) -> None:
    """Replace ``target`` by ``new``: rename to a new or over an empty folder, else swap the two in one atomic
    exchange (Linux ``renameat2(RENAME_EXCHANGE)``), else via a backup that is restored on failure.

    The backup's two renames leave a moment with no ``target`` at all: a kill there (SIGKILL, the OOM killer, a
    power cut) left no model folder, the old model hidden in ``.NAME.old-*`` and the new one in ``.NAME.tmp-*``,
    and `predict` said "not found". The exchange has no such moment."""
    if not target.exists() or not any(target.iterdir()):
        os.replace(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # holds the old model now
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(backup)
    os.replace(target, backup)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically where the system can (Linux >= 3.15 with glibc >= 2.28, on ext4, xfs, btrfs,
    tmpfs, ...); False where it cannot, and nothing was changed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that made the model, for a user debugging a difference later."""
    out = {"python": platform.python_version()}
    for name in ("automl-dnn", "torch", "xgboost", "optuna", "numpy", "pandas", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _json_safe(value: Any) -> Any:
    """Plain JSON: numpy scalars to Python, NaN/inf to null (an empty test split scores NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


# --- reading and verifying ------------------------------------------------------------------------


def read_verified(model_dir: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """model.json and the bytes of every file it lists, each checked against its sha256."""
    spec = read_spec(Path(model_dir))
    return spec, _verified_files(Path(model_dir), spec)


def _model_of_run(run_dir: Path) -> str:
    """Where a run folder's model is: ``ensemble``'s default RUN/model, or ``fit``'s MODEL beside MODEL-run."""
    beside = run_dir.with_name(run_dir.name.removesuffix("-run")) if run_dir.name.endswith("-run") else None
    for folder in (run_dir / "model", beside):
        if folder is not None and (folder / MODEL_JSON).is_file():
            return f"its model is {str(folder)!r}"
    return f"`automl-dnn ensemble {run_dir}` exports its model to {str(run_dir / 'model')!r}"


def read_spec(model_dir: Path) -> dict[str, Any]:
    """model.json, checked for its format name and version."""
    if not model_dir.is_dir():
        what = "is a file, not a folder" if model_dir.exists() else "not found"
        raise ModelFormatError(f"model folder {str(model_dir)!r} {what}; pass a folder written by "
                               "`automl-dnn fit` or `automl-dnn ensemble`")
    path = model_dir / MODEL_JSON
    if not path.is_file() and (model_dir / "run.json").is_file():  # a search's run folder, given by mistake
        raise ModelFormatError(f"{str(model_dir)!r} is a run folder (a search's), not a model folder; "
                               f"{_model_of_run(model_dir)}")
    if not path.is_file():
        raise ModelFormatError(f"{str(model_dir)!r} has no model.json, so it is not a model folder; pass a folder "
                               "written by `automl-dnn fit` or `automl-dnn ensemble`")
    try:
        spec = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, an int of 5,000 digits
        raise ModelFormatError(f"model.json in {str(model_dir)!r} is not valid JSON ({str(exc)[:120]}); "
                               "re-export the model") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"model.json in {str(model_dir)!r} is not an automl-dnn model; re-export the model")
    version = spec.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"model.json in {str(model_dir)!r} has an invalid format_version {version!r}; "
                               "re-export the model")
    if version > FORMAT_VERSION:
        raise ModelFormatError(f"model format {version} is newer than this automl-dnn supports "
                               f"({FORMAT_VERSION}); upgrade automl-dnn")
    return spec


def _verified_files(model_dir: Path, spec: dict[str, Any]) -> dict[str, bytes]:
    """Every file listed in model.json, read once and checked against its sha256 before any parsing."""
    listed = spec.get("files")
    if not isinstance(listed, dict):
        raise ModelFormatError("model.json has no 'files' table of sha256 hashes; re-export the model")
    blobs = {}
    for name, digest in listed.items():
        if not _plain_name(name) or not isinstance(digest, str):
            raise ModelFormatError(f"model.json lists an invalid file entry {name!r}; re-export the model")
        path = model_dir / name
        if not path.is_file():
            raise ModelFormatError(f"model file {name!r} is missing from {str(model_dir)!r}; restore it or "
                                   "re-export the model")
        data = path.read_bytes()
        if sha256(data) != digest.lower():
            raise ModelFormatError(f"file {name!r} does not match its sha256 in model.json (tampered or "
                                   "corrupted); restore it or re-export the model")
        blobs[name] = data
    members = spec.get("members", [])
    if not isinstance(members, list) or not all(isinstance(member, dict) for member in members):
        raise ModelFormatError("model.json's 'members' is not a list of records; re-export the model")
    for member in members:
        if member.get("file") not in blobs:
            raise ModelFormatError(f"member file {member.get('file')!r} is not listed with a sha256 in "
                                   "model.json; re-export the model")
    return blobs


def _plain_name(name: Any) -> bool:
    """A file name inside the folder: no separators, no parent references, no hidden or absolute paths."""
    return (isinstance(name, str) and bool(name) and name != MODEL_JSON and not name.startswith(".")
            and "/" not in name and "\\" not in name and "\0" not in name)


__all__ = ["GBTMember", "MODEL_JSON", "NetMember", "check_model_dir", "model_json", "read_spec",
           "read_verified", "save_model", "write_model_folder"]
