"""The model folder: one safe, self-checking artifact that predicts without the run folder.

```
MODEL_DIR/
  model.json              task, input schema, preprocessing, target encoder, members and weights,
                          decision threshold, scores, library versions, and the sha256 of every other file
  net-NNNNN.safetensors   one per net member: the state_dict of build_mlp(NetConfig(**settings["net"]))
  xgboost.ubj             the XGBoost member, if any (Booster.save_raw("ubj"))
```

Nothing is pickled. ``load_model`` checks the format version and every file's sha256 before parsing
anything, then parses each file from the very bytes it hashed (no gap for a swap in between). A net
with foldable BatchNorm is folded at load time for plain predictions (checked to match the unfolded
net); MC dropout always runs the unfolded net, since folding across dropout changes its samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from automl_dnn.errors import AutoDNNError, DataError, ModelFormatError, StorageError
from automl_dnn.run import atomic_write, check_output_dir

FORMAT_NAME = "automl-dnn-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
GBT_FILE = "xgboost.ubj"
MC_SEED = 0  # MC-dropout passes are seeded, so the same input gives the same mean and std
FOLD_RTOL, FOLD_ATOL = 1e-4, 1e-5  # a folded net must match its original this closely, else it is not used
OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}


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

    @property
    def name(self) -> str:
        return f"net-{self.trial:05d}"


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
    from safetensors.torch import save as save_tensors

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
    files[MODEL_JSON] = json.dumps(_json_safe(spec), indent=2, sort_keys=True, allow_nan=False).encode("utf-8")
    return write_model_folder(model_dir, files)


def write_model_folder(model_dir: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` into a temporary sibling folder, then swap it in for ``model_dir``.

    Refuses to replace a non-empty folder that is not a model folder (no model.json), so a mistyped
    ``--model .`` never wipes a project.
    """
    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    check_output_dir(model_dir, "model folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.tmp-", dir=model_dir.parent))
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
    for parent in (model_dir, *model_dir.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == model_dir else f"lies under the file {str(parent)!r}"
            raise StorageError(f"model folder {str(model_dir)!r} {where}; choose a folder path")
    if model_dir.is_dir() and any(model_dir.iterdir()) and not (model_dir / MODEL_JSON).is_file():
        raise StorageError(f"model folder {str(model_dir)!r} is not empty and holds no model.json; "
                           "choose a new or empty folder")


def _swap_in(new: Path, target: Path) -> None:
    """Replace ``target`` by ``new``: rename over an empty folder, else via a backup that is restored on failure."""
    if not any(target.iterdir()):
        os.replace(new, target)
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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that made the model, for a user debugging a difference later."""
    from importlib.metadata import PackageNotFoundError, version

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


# --- loading ------------------------------------------------------------------------------------


@dataclass
class _Net:
    name: str
    weight: float
    scaling: str
    model: Any  # the net as trained: MC dropout runs this one
    fast: Any  # BatchNorm folded when that matches, else the same module


@dataclass
class _GBT:
    weight: float
    booster: Any
    preprocess: str
    categories: dict[str, list[Any]]


def load_model(model_dir: Path) -> Predictor:
    """Read and verify a model folder (format version, every sha256), then build its ``Predictor``."""
    model_dir = Path(model_dir)
    spec = read_spec(model_dir)
    blobs = _verified_files(model_dir, spec)
    try:
        return _build_predictor(spec, blobs, model_dir)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"model.json in {str(model_dir)!r} is incomplete or invalid ({exc!r}); "
                               "re-export the model") from None


def read_spec(model_dir: Path) -> dict[str, Any]:
    """model.json, checked for its format name and version."""
    if not model_dir.is_dir():
        raise ModelFormatError(f"model folder {str(model_dir)!r} not found; pass a folder written by "
                               "`automl-dnn fit` or `automl-dnn ensemble`")
    path = model_dir / MODEL_JSON
    if not path.is_file():
        raise ModelFormatError(f"{str(model_dir)!r} has no model.json, so it is not a model folder; pass a folder "
                               "written by `automl-dnn fit` or `automl-dnn ensemble`")
    try:
        spec = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
    for member in spec.get("members", []):
        if member.get("file") not in blobs:
            raise ModelFormatError(f"member file {member.get('file')!r} is not listed with a sha256 in "
                                   "model.json; re-export the model")
    return blobs


def _plain_name(name: Any) -> bool:
    """A file name inside the folder: no separators, no parent references, no hidden or absolute paths."""
    return (isinstance(name, str) and bool(name) and name != MODEL_JSON and not name.startswith(".")
            and "/" not in name and "\\" not in name and "\0" not in name)


def _build_predictor(spec: dict[str, Any], blobs: dict[str, bytes], model_dir: Path) -> Predictor:
    from automl_dnn.data import FeaturePreprocessor, TargetEncoder

    preprocessors = {k: FeaturePreprocessor.from_dict(v) for k, v in spec["preprocessors"].items()}
    encoder = TargetEncoder.from_dict(spec["target_encoder"])
    nets, gbt = [], None
    for member in spec["members"]:
        if member["kind"] == "net":
            if member["scaling"] not in preprocessors:
                raise KeyError(f"preprocessor {member['scaling']!r}")
            nets.append(_load_net(member, blobs[member["file"]]))
        elif member["kind"] == "xgboost":
            if member["preprocess"] not in preprocessors:
                raise KeyError(f"preprocessor {member['preprocess']!r}")
            gbt = _load_gbt(member, blobs[member["file"]])
        else:
            raise ModelFormatError(f"model.json has a member of unknown kind {member['kind']!r}; upgrade automl-dnn")
    if not nets and gbt is None:
        raise ModelFormatError("model.json lists no members; re-export the model")
    return Predictor(spec, preprocessors, encoder, nets, gbt, model_dir)


def _load_net(member: dict[str, Any], data: bytes) -> _Net:
    """Rebuild the net from its config and load the safetensors weights strictly (never torch.load)."""
    from safetensors.torch import load as load_tensors

    from automl_dnn.model import NetConfig, build_mlp

    name = member["file"]
    try:
        state = load_tensors(data)
    except Exception as exc:  # safetensors raises its own error types for bad headers and sizes
        raise ModelFormatError(f"{name!r} is not a valid safetensors file ({str(exc)[:100]}); "
                               "re-export the model") from None
    try:
        model = build_mlp(NetConfig(**member["settings"]["net"]), d_in=int(member["d_in"]), d_out=int(member["d_out"]))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"{name!r} does not fit its net config in model.json ({reason}); "
                               "re-export the model") from None
    model.eval()
    return _Net(name=member["name"], weight=float(member["weight"]), scaling=member["scaling"], model=model,
                fast=_folded_if_equal(model, int(member["d_in"])))


def _folded_if_equal(model: Any, d_in: int) -> Any:
    """The BatchNorm-folded copy when it reproduces the net's eval outputs, else the net itself."""
    import torch

    from automl_dnn.model import fold_batchnorm

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    folded = fold_batchnorm(model)
    x = torch.randn(256, d_in, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same = torch.allclose(model(x), folded(x), rtol=FOLD_RTOL, atol=FOLD_ATOL)
    return folded if same else model


def _load_gbt(member: dict[str, Any], data: bytes) -> _GBT:
    import xgboost as xgb

    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
    except xgb.core.XGBoostError as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else "unreadable"
        raise ModelFormatError(f"{member['file']!r} is not a valid XGBoost model ({reason}); "
                               "re-export the model") from None
    return _GBT(weight=float(member["weight"]), booster=booster, preprocess=member["preprocess"],
                categories={str(k): list(v) for k, v in member.get("categories", {}).items()})


# --- predicting ---------------------------------------------------------------------------------


class Predictor:
    """An exported ensemble: checks the input table, preprocesses it, and blends the members."""

    def __init__(self, spec: dict[str, Any], preprocessors: dict[str, Any], encoder: Any, nets: list[_Net],
                 gbt: _GBT | None, model_dir: Path | None = None) -> None:
        self.spec = spec
        self.task: str = spec["task"]
        self.target: str = spec["target"]
        self.metric: str = spec.get("metric", "")
        self.threshold: float | None = spec.get("threshold")
        self.input_schema: list[dict[str, Any]] = list(spec["input_schema"])
        self.model_dir = model_dir
        self.notes: list[str] = []
        self._pre = preprocessors
        self._encoder = encoder
        self._nets = nets
        self._gbt = gbt
        weights = np.array([n.weight for n in nets] + ([gbt.weight] if gbt else []), dtype=np.float64)
        if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and weights.sum() > 0):
            raise ModelFormatError(f"model.json has invalid member weights {weights.tolist()}; re-export the model")
        self._weights = weights / weights.sum()
        labels = np.asarray(encoder.classes)
        self.classes_ = labels if labels.dtype.kind in "iufbU" else np.asarray(encoder.classes, dtype=object)

    def __repr__(self) -> str:
        kinds = [f"{len(self._nets)} nets"] + (["XGBoost"] if self._gbt else [])
        return f"Predictor(task={self.task!r}, target={self.target!r}, members={' + '.join(kinds)})"

    @property
    def required_columns(self) -> list[str]:
        """The input columns the model reads (columns dropped in training are not needed)."""
        return next(iter(self._pre.values())).required_columns

    @property
    def members(self) -> list[dict[str, Any]]:
        """Kind, name and weight of each member, for display."""
        return [{k: m[k] for k in ("kind", "name", "weight") if k in m} for m in self.spec["members"]]

    # -- public -------------------------------------------------------------------------------

    def predict(self, df: Any) -> np.ndarray:
        """Class labels (the decision threshold applied for binary) or values on the original scale."""
        mean, _ = self._predict(df, 0)
        return self._labels(mean) if self.task != "regression" else mean

    def predict_proba(self, df: Any) -> np.ndarray:
        """Class probabilities ``(n, K)``, columns in the order of ``classes_``."""
        if self.task == "regression":
            raise AutoDNNError("predict_proba is for classification models, and this one does regression; "
                               "use predict")
        return self._predict(df, 0)[0]

    def predict_frame(self, df: Any, mc_samples: int = 0) -> pd.DataFrame:
        """``prediction`` (+ ``proba_<label>`` per class); with MC dropout also ``<column>_std`` columns.

        One output row per input row, in order, with the input's index.
        """
        if mc_samples < 0:
            raise AutoDNNError(f"mc_samples must be >= 0, got {mc_samples}")
        mean, std = self._predict(df, mc_samples)
        index = df.index if isinstance(df, pd.DataFrame) else pd.RangeIndex(len(mean))
        if self.task == "regression":
            out = {"prediction": mean}
            if mc_samples:
                out["prediction_std"] = std
            return pd.DataFrame(out, index=index)
        out = {"prediction": self._labels(mean)}
        names = [f"proba_{label}" for label in self.classes_.tolist()]
        out.update({name: mean[:, k] for k, name in enumerate(names)})
        if mc_samples:
            out.update({f"{name}_std": std[:, k] for k, name in enumerate(names)})
        return pd.DataFrame(out, index=index)

    # -- internals ----------------------------------------------------------------------------

    def _labels(self, proba: np.ndarray) -> np.ndarray:
        if self.task == "binary":
            threshold = 0.5 if self.threshold is None else float(self.threshold)
            return self.classes_[(proba[:, 1] >= threshold).astype(np.int64)]
        return self.classes_[proba.argmax(axis=1)]

    def _predict(self, df: Any, mc_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """The weighted mean of the members, and with MC dropout the std of the weighted sum of their passes.

        Members' passes are independent, so Var(sum w_i X_i) = sum w_i^2 Var(X_i); XGBoost adds no variance.
        """
        notes: list[str] = []
        frame = self._checked_frame(df, notes)
        means, variances = [], []
        matrices: dict[str, np.ndarray] = {}
        for net in self._nets:
            if net.scaling not in matrices:
                matrices[net.scaling] = self._pre[net.scaling].transform(frame, report=notes)
            mean, std = self._net_output(net, matrices[net.scaling], mc_samples)
            means.append(mean)
            variances.append(std**2)
        if self._gbt is not None:
            means.append(self._gbt_output(frame, notes))
            variances.append(np.zeros_like(means[-1]))
        from automl_dnn.ensemble import blend

        mean = blend(means, self._weights) if len(means) > 1 else means[0]
        var = np.tensordot(self._weights**2, np.stack(variances), axes=1)
        self.notes = list(dict.fromkeys(notes))
        return mean, np.sqrt(var)

    def _net_output(self, net: _Net, X: np.ndarray, mc_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """One net's prediction in user space (probabilities, or values on the original scale)."""
        import torch

        from automl_dnn.train import predict

        if mc_samples:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(MC_SEED)
                mean, std = predict(net.model, X, task=self.task, mc_samples=mc_samples)
        else:
            mean = predict(net.fast, X, task=self.task)
            std = np.zeros_like(mean)
        mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if self.task == "regression":
            return self._encoder.decode(mean), std * self._encoder.std
        return mean, std

    def _gbt_output(self, frame: pd.DataFrame, notes: list[str]) -> np.ndarray:
        from automl_dnn.gbt import predict_gbt

        assert self._gbt is not None
        X = self._pre[self._gbt.preprocess].transform_for_gbt(frame, report=notes)
        pred = predict_gbt(self._gbt.booster, X, task=self.task, categories=self._gbt.categories)
        return np.asarray(pred, dtype=np.float64)

    def _checked_frame(self, df: Any, notes: list[str]) -> pd.DataFrame:
        """The input as a DataFrame with every required column; refuses what cannot be predicted."""
        df = self._as_frame(df, notes)
        if len(df) == 0:
            raise DataError("the input table has no rows; pass at least one row to predict")
        names = [str(c) for c in df.columns]
        if names != list(df.columns):
            df = df.set_axis(names, axis=1)
        missing = [c for c in self.required_columns if c not in names]
        if missing:
            s = "s" if len(missing) > 1 else ""
            raise DataError(f"input is missing column{s} {', '.join(repr(c) for c in missing[:10])} used in "
                            "training; add it to the table")
        known = {item["name"] for item in self.input_schema}
        extra = [c for c in names if c not in known]
        if extra:
            shown = ", ".join(repr(c) for c in extra[:5]) + (", ..." if len(extra) > 5 else "")
            notes.append(f"ignored {len(extra)} column{'s' if len(extra) > 1 else ''} not used in training: {shown}")
        self._check_readable(df)
        return df

    def _as_frame(self, df: Any, notes: list[str]) -> pd.DataFrame:
        if isinstance(df, pd.DataFrame):
            return df
        if isinstance(df, np.ndarray) and df.ndim == 2:
            names = [item["name"] for item in self.input_schema]
            if df.shape[1] != len(names):
                raise DataError(f"the input array has {df.shape[1]} columns but the model was trained on "
                                f"{len(names)}; pass a DataFrame with the training columns")
            notes.append("the input is an array: its columns were taken in the training order")
            return pd.DataFrame(df, columns=names)
        try:
            return pd.DataFrame(df)
        except (TypeError, ValueError):
            raise DataError(f"cannot predict from a {type(df).__name__}; pass a pandas DataFrame") from None

    def _check_readable(self, df: pd.DataFrame) -> None:
        """Refuse a numeric or date column none of whose cells can be read (odd cells alone become missing)."""
        for spec in next(iter(self._pre.values())).columns:
            if spec["kind"] not in ("numeric", "date"):
                continue
            s = df[spec["name"]]
            if isinstance(s, pd.DataFrame) or pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
                continue
            if spec["kind"] == "date" and pd.api.types.is_datetime64_any_dtype(s):
                continue
            present = s[s.notna() & (s.astype(str).str.strip() != "")]
            if len(present) == 0:
                continue
            if spec["kind"] == "numeric":
                readable = pd.to_numeric(present.astype(object), errors="coerce").notna().any()
                what = "numbers"
            else:
                from automl_dnn.data import _parse_dates

                readable = _parse_dates(present.reset_index(drop=True))[0].notna().any()
                what = "dates"
            if not readable:
                raise DataError(f"column {spec['name']!r} was {what} in training but none of its values can be "
                                f"read as {what} (e.g. {str(present.iloc[0])[:40]!r}); fix that column")


# --- predicting a file --------------------------------------------------------------------------


def predict_file(model_dir: Path, data: Any, *, out: Path | None = None, mc_samples: int = 0) -> list[str]:
    """Predict a table (file, builtin:NAME or DataFrame) and write CSV/Parquet (stdout CSV without ``out``)."""
    from automl_dnn.data import NOTES_ATTR, read_table

    kind = _output_kind(out, data) if out is not None else "csv"
    predictor = load_model(Path(model_dir))
    frame = data if isinstance(data, pd.DataFrame) else read_table(data)
    notes = list(frame.attrs.get(NOTES_ATTR, []))
    if predictor.target in [str(c) for c in frame.columns]:
        frame = frame.drop(columns=[c for c in frame.columns if str(c) == predictor.target])
        notes.append(f"dropped the target column {predictor.target!r} from the input")
    result = predictor.predict_frame(frame, mc_samples=mc_samples)
    notes.extend(predictor.notes)
    if out is None:
        sys.stdout.write(result.to_csv(index=False))
        sys.stdout.flush()
    else:
        _write_table(result, Path(out), kind)
    return list(dict.fromkeys(notes))


def _output_kind(out: Path, data: Any = None) -> str:
    """The output format by extension, after refusing paths that cannot be written or would overwrite the input."""
    from automl_dnn.run import check_output_dir

    check_output_dir(Path(out).parent, "output folder")
    if isinstance(data, (str, os.PathLike)) and Path(out).exists() and Path(data).exists() \
            and Path(out).resolve() == Path(data).resolve():
        raise AutoDNNError(f"--out {str(out)!r} is the input data file; write the predictions to another file")
    name = Path(out).name.lower()
    stem_suffix = Path(name[:-3]).suffix if name.endswith(".gz") else Path(name).suffix
    kind = OUTPUT_FORMATS.get(stem_suffix)
    if kind is None or (name.endswith(".gz") and kind == "parquet"):
        raise AutoDNNError(f"cannot write predictions to {str(out)!r}: unsupported extension; "
                           "use .csv, .tsv (optionally .gz), .parquet or .pq")
    if Path(out).is_dir():
        raise AutoDNNError(f"--out {str(out)!r} is a folder; give a file name ending in .csv or .parquet")
    return kind


def _write_table(frame: pd.DataFrame, out: Path, kind: str) -> None:
    """Atomically write CSV/TSV (gzip by the .gz suffix) or Parquet."""
    compression = "gzip" if out.name.lower().endswith(".gz") else None
    if kind == "parquet":
        atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        sep = "\t" if kind == "tsv" else ","
        atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False, sep=sep, compression=compression))


__all__ = ["GBTMember", "NetMember", "Predictor", "check_model_dir", "load_model", "predict_file", "read_spec",
           "save_model", "write_model_folder"]
