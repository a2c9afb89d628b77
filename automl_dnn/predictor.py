"""Predicting with a model folder: load and verify it, check the input table, blend the members.

A net with foldable BatchNorm is folded at load time for plain predictions (checked to match the
unfolded net); MC dropout always runs the unfolded net, since folding across dropout changes its samples.
"""

from __future__ import annotations

import gzip
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as load_tensors

from automl_dnn import metrics
from automl_dnn.config import NetConfig
from automl_dnn.data import (NESTED_CELLS, NOTES_ATTR, FeaturePreprocessor, TargetEncoder, TargetTransform,
                             formatted_numbers, merge_counted_notes, mixed_labels_as_text, nested_cell, net_values,
                             numpy_backed, other_unit_numbers, parse_dates, read_numbers, read_table, stripped_labels)
from automl_dnn.data.reading import dedupe, duplicate_note
from automl_dnn.ensemble import blend
from automl_dnn.errors import AutoDNNError, DataError, ModelFormatError, PathError, first_line
from automl_dnn.files import atomic_write
from automl_dnn.importance import ImportanceCost, measure_cost, permutation_importance
from automl_dnn.paths import check_file_path, same_file
from automl_dnn.gbt import predict_gbt
from automl_dnn.model import build_mlp, fold_batchnorm
from automl_dnn.memory_guard import count_net_parameters
from automl_dnn.model_folder import read_verified
from automl_dnn.tasks import TASKS
from automl_dnn.train import EVAL_BATCH_SIZE, predict
from automl_dnn.ubjson import load_booster

MC_SEED = 0  # MC-dropout passes are seeded, so the same input gives the same mean and std
FOLD_RTOL, FOLD_ATOL = 1e-4, 1e-5  # a folded net must match its original this closely, else it is not used
PREDICT_CHUNK_ROWS = 12 * EVAL_BATCH_SIZE  # rows predicted at a time (98,304): bounded memory on a large table
OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}


# --- loading ------------------------------------------------------------------------------------


@dataclass
class _Net:
    name: str
    weight: float
    scaling: str
    model: Any  # the net as trained: MC dropout runs this one
    fast: Any  # BatchNorm folded when that matches, else the same module
    target: TargetTransform | None = None  # its own target transform (regression), else the model's encoder


@dataclass
class _GBT:
    weight: float
    booster: Any
    preprocess: str
    categories: dict[str, list[Any]]


def load_model(model_dir: Path) -> Predictor:
    """Read and verify a model folder (format version, every sha256), then build its ``Predictor``."""
    model_dir = Path(model_dir)
    spec, blobs = read_verified(model_dir)
    try:
        return _build_predictor(spec, blobs, model_dir)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"model.json in {str(model_dir)!r} is incomplete or invalid ({exc!r}); "
                               "re-export the model") from None

def _check_task_fields(spec: dict[str, Any]) -> None:
    """The fields predictions are read through agree with each other, so a damaged model.json fails here
    in one line and not at predict time (a threshold that is no number), or silently (one class)."""
    task = spec["task"]
    if task not in TASKS or spec["target_encoder"]["task"] != task:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)} or not the target encoder's")
    classes = spec.get("classes")
    if task != "regression":
        if not isinstance(classes, list) or len(classes) < 2 or (task == "binary") != (len(classes) == 2):
            needs = "2" if task == "binary" else "3 or more"
            raise ValueError(f"a {task} model needs {needs} classes, got {classes!r}")
        if classes != spec["target_encoder"]["classes"]:
            raise ValueError("classes differ from the target encoder's")
        if not all(isinstance(c, (str, int, float)) for c in classes) or len(set(classes)) < len(classes):
            raise ValueError(f"classes {classes!r} are not distinct labels")  # ['no', 'no'] predicted 'no' alone
    threshold = spec.get("threshold")
    if threshold is not None and not (task == "binary" and isinstance(threshold, (int, float))
                                      and 0 < float(threshold) < 1):
        raise ValueError(f"threshold {threshold!r} is not a probability of a binary model")


def _build_predictor(spec: dict[str, Any], blobs: dict[str, bytes], model_dir: Path) -> Predictor:
    _check_task_fields(spec)
    preprocessors = {k: FeaturePreprocessor.from_dict(v) for k, v in spec["preprocessors"].items()}
    for name, pre in preprocessors.items():
        _check_encodes_a_row(name, pre)
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
            _check_gbt_predicts_a_row(gbt, preprocessors[member["preprocess"]], spec["task"], len(encoder.classes_))
        else:
            raise ModelFormatError(f"model.json has a member of unknown kind {member['kind']!r}; upgrade automl-dnn")
    if not nets and gbt is None:
        raise ModelFormatError("model.json lists no members; re-export the model")
    return Predictor(spec, preprocessors, encoder, nets, gbt, model_dir)


def _missing_row(pre: FeaturePreprocessor) -> pd.DataFrame:
    """One row whose every input column is missing: the load-time checks' probe."""
    return pd.DataFrame({column: pd.Series([None], dtype=object) for column in pre.required_columns_})


def _check_encodes_a_row(name: str, pre: FeaturePreprocessor) -> None:
    """The preprocessor encodes a row of missing cells (each column's imputation and scaling) into finite numbers,
    for the nets and for XGBoost: a hand-edited column record (its statistics left out, a mean of 'abc', a std of
    NaN) failed at predict time with "internal error: KeyError: 'stats'", or predicted NaN probabilities."""
    row = _missing_row(pre)
    if not np.all(np.isfinite(pre.transform(row, report=[]))):
        raise ValueError(f"preprocessor {name!r} encodes missing cells as NaN or infinite numbers")
    pre.transform_for_gbt(row, report=[])


def _check_gbt_predicts_a_row(gbt: _GBT, pre: FeaturePreprocessor, task: str, n_classes: int) -> None:
    """XGBoost predicts the probe row in the model's shape: a booster of another model (other feature names, another
    class count) failed at predict time with "internal error: ValueError: feature_names mismatch"."""
    pred = predict_gbt(gbt.booster, pre.transform_for_gbt(_missing_row(pre), report=[]), task=task,
                       categories=gbt.categories)
    expected = (1,) if task == "regression" else (1, max(n_classes, 2))
    if pred.shape != expected:
        raise ValueError(f"the XGBoost model predicts shape {pred.shape}, the model's {task} needs {expected}")


def _load_net(member: dict[str, Any], data: bytes) -> _Net:
    """Rebuild the net from its config and load the safetensors weights strictly (never torch.load)."""
    name = member["file"]
    try:
        state = load_tensors(data)
    except Exception as exc:  # safetensors raises its own error types for bad headers and sizes
        raise ModelFormatError(f"{name!r} is not a valid safetensors file ({first_line(exc, 100)}); "
                               "re-export the model") from None
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        # training keeps no such epoch; they predicted NaN probabilities, read as the first class
        raise ModelFormatError(f"{name!r} holds weights that are NaN or infinite; re-export the model")
    try:
        config, d_in, d_out = NetConfig(**member["settings"]["net"]), int(member["d_in"]), int(member["d_out"])
        _check_net_fits_its_weights(config, d_in, d_out, state)
        model = build_mlp(config, d_in=d_in, d_out=d_out)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{name!r} does not fit its net config in model.json ({first_line(exc, 160)}); "
                               "re-export the model") from None
    model.eval()
    target = member["settings"].get("target")
    return _Net(name=member["name"], weight=float(member["weight"]), scaling=member["scaling"], model=model,
                fast=_folded_if_equal(model, int(member["d_in"])),
                target=None if not target else TargetTransform.from_dict(target))


def _check_net_fits_its_weights(config: NetConfig, d_in: int, d_out: int, state: dict[str, torch.Tensor]) -> None:
    """Refuse, before a net is built, a config that asks for more layers or parameters than its file holds. A model
    folder may come from anyone: a hand-set ``n_layers`` of 10**6 built a million layers for minutes, a ``d_hidden``
    of 10**9 allocated gigabytes, before the strict load refused them. The sizes are compared first, as plain
    integers, so that the count itself stays cheap."""
    held = sum(t.numel() for t in state.values())
    sizes = {"n_layers": config.n_layers, "d_in": d_in, "d_out": d_out, "k_ensemble": config.k_ensemble}
    for key, size in sizes.items():
        if not 0 <= size <= max(held, len(state)):
            raise ValueError(f"{key} {size} cannot be built from the {held} weights the file holds")
    needs = count_net_parameters(config, d_in=d_in, d_out=d_out)
    if needs > held:
        raise ValueError(f"the net config needs {needs} parameters, the file holds {held} weights")


def _folded_if_equal(model: Any, d_in: int) -> Any:
    """The BatchNorm-folded copy when it reproduces the net's eval outputs, else the net itself."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    folded = fold_batchnorm(model)
    x = torch.randn(256, d_in, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same = torch.allclose(model(x), folded(x), rtol=FOLD_RTOL, atol=FOLD_ATOL)
    return folded if same else model


def _load_gbt(member: dict[str, Any], data: bytes) -> _GBT:
    try:
        booster = load_booster(data)
    except ValueError as exc:
        raise ModelFormatError(f"{member['file']!r} is not a valid XGBoost model ({first_line(exc, 120)}); "
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
        labels = np.asarray(encoder.classes_)
        self.classes_ = labels if labels.dtype.kind in "iufbU" else np.asarray(encoder.classes_, dtype=object)

    def __repr__(self) -> str:
        kinds = [f"{len(self._nets)} nets"] if self._nets else []  # XGBoost alone: a fit whose nets had no time
        kinds += ["XGBoost"] if self._gbt else []
        return f"Predictor(task={self.task!r}, target={self.target!r}, members={' + '.join(kinds)})"

    @property
    def required_columns(self) -> list[str]:
        """The input columns the model reads (columns dropped in training are not needed)."""
        return next(iter(self._pre.values())).required_columns_

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

    def dropout_nets(self) -> list[str]:
        """Names of the member nets that use dropout, which MC dropout needs (a bagged net's folds count once)."""
        names = []
        for member in self.spec["members"]:
            if member["kind"] == "net" and float(member["settings"]["net"].get("dropout", 0) or 0) > 0:
                name = f"net-{int(member['trial']):05d}"
                if name not in names:
                    names.append(name)
        return names

    def predict_frame(self, df: Any, mc_samples: int = 0) -> pd.DataFrame:
        """``prediction`` (+ ``proba_<label>`` per class); with MC dropout also ``<column>_std`` columns.

        One output row per input row, in order, with the input's index.
        """
        if mc_samples < 0:
            raise AutoDNNError(f"mc_samples must be >= 0, got {mc_samples}")
        mean, std = self._predict(df, mc_samples)
        if mc_samples and not self.dropout_nets():
            self.notes.append("no net of the model uses dropout, so MC dropout has no spread: the _std columns are 0")
        index = df.index if isinstance(df, pd.DataFrame) else pd.Index([df.name]) if isinstance(df, pd.Series) \
            else pd.RangeIndex(len(mean))
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

    def feature_importance(self, df: Any, *, target: str | None = None, repeats: int = 3, max_rows: int = 2000,
                           seed: int = 0, group_size: int = 1) -> pd.DataFrame:
        """Permutation importance of each input column on ``df`` (which holds the target column): the mean
        drop of the model's metric over ``repeats`` shuffles, its std and each repeat; most important first.

        At most ``max_rows`` rows (a seeded sample) are used; label metrics use the decision threshold;
        ``group_size`` > 1 shuffles that many adjacent input columns together (the report page, on a very wide table).
        """
        frame, y = self._scored_rows(df, target or self.target)
        return permutation_importance(self._importance_fn(), frame, y,
                                      metric=self.metric or metrics.default_metric(self.task),
                                      columns=self.required_columns, repeats=repeats, max_rows=max_rows,
                                      seed=seed, threshold=self.threshold, group_size=group_size)

    def importance_cost(self, df: pd.DataFrame, *, rows: int = 100, seconds: float = 1.0,
                        seed: int = 0) -> ImportanceCost:
        """What a prediction call of ``feature_importance`` on ``df`` costs, fixed and per row, from stacked
        shuffled copies of ``rows`` of its rows timed for about ``seconds`` (``importance.measure_cost``): the
        report page sizes its importance to a time budget from it."""
        frame = df.drop(columns=[self.target]) if self.target in df.columns else df
        return measure_cost(self._importance_fn(), frame, self.required_columns, rows=rows, seconds=seconds,
                            seed=seed)

    def member_seconds(self, df: Any) -> dict[str, float]:
        """Seconds each member takes to predict ``df``, its preprocessing included, by member name
        (``net-00012-fold1``, ``xgboost``): the leaderboard's predict times."""
        notes: list[str] = []
        frame = self._checked_frame(df, notes)
        seconds = {}
        for net in self._nets:
            started = time.perf_counter()
            self._net_output(net, self._pre[net.scaling].transform(frame, report=notes), 0)
            seconds[net.name] = time.perf_counter() - started
        if self._gbt is not None:
            started = time.perf_counter()
            self._gbt_output(frame, notes)
            seconds["xgboost"] = time.perf_counter() - started
        return seconds

    # -- internals ----------------------------------------------------------------------------

    def _scored_rows(self, df: Any, target: str) -> tuple[pd.DataFrame, np.ndarray]:
        """The feature columns and the target of the rows that have one: class indices, or values."""
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"feature importance needs a DataFrame with the target column, got a {type(df).__name__}")
        names = [str(c) for c in df.columns]
        if target not in names:
            raise DataError(f"the table has no target column {target!r}; name the column that holds "
                            "the true values (target= in Python, --target on the command line)")
        column = df.columns[names.index(target)]
        labels = stripped_labels(df[column])[0]  # as training read them: 'yes ' is 'yes', '$1,250' is 1250
        numbers = formatted_numbers(labels) if self.task == "regression" or self.classes_.dtype.kind == "f" else None
        labels = labels if numbers is None else numbers[0]
        if self.classes_.dtype.kind in "OU":  # text classes: 1 beside 'no' was read as '1' in training
            labels = mixed_labels_as_text(labels)[0]
        keep = labels.notna().to_numpy()
        frame = df.loc[keep].drop(columns=[column]).reset_index(drop=True)
        if self.task == "regression":
            y = pd.to_numeric(labels[keep], errors="coerce").to_numpy(dtype=np.float64)
            if not np.all(np.isfinite(y)):
                what = "infinite" if np.isinf(y).any() and not np.isnan(y).any() else "not numbers"
                raise DataError(f"target column {target!r} has {int((~np.isfinite(y)).sum())} values that are "
                                f"{what}; fix or drop those rows")
            return frame, y
        return frame, self._encoder.encode(labels[keep].reset_index(drop=True))

    def _importance_fn(self) -> Any:
        """What the importance scores: values for regression, probabilities for classification."""
        return self.predict if self.task == "regression" else self.predict_proba

    def _labels(self, proba: np.ndarray) -> np.ndarray:
        if self.task == "binary":
            threshold = 0.5 if self.threshold is None else float(self.threshold)
            return self.classes_[(proba[:, 1] >= threshold).astype(np.int64)]
        return self.classes_[proba.argmax(axis=1)]

    def _predict(self, df: Any, mc_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """The weighted mean of the members, and with MC dropout the std of the weighted sum of their passes.

        Members' passes are independent, so Var(sum w_i X_i) = sum w_i^2 Var(X_i); XGBoost adds no variance.
        Rows are predicted PREDICT_CHUNK_ROWS at a time (issue 13), so the encoded matrices, XGBoost's frame
        and the members' outputs of a large table never exist for all its rows at once; a chunk is a whole
        number of evaluation batches, so the nets see the batches they would see unchunked.
        """
        notes: list[str] = []
        frame = self._checked_frame(df, notes)
        chunks = []
        for start in range(0, len(frame), PREDICT_CHUNK_ROWS):
            chunk_notes: list[str] = []  # one line per column and chunk, however many members report it
            chunks.append(self._predict_chunk(frame.iloc[start:start + PREDICT_CHUNK_ROWS], mc_samples, chunk_notes))
            notes.extend(dict.fromkeys(chunk_notes))
        self.notes = merge_counted_notes(notes)  # the chunks' counts added up
        if len(chunks) == 1:
            return chunks[0]
        return np.concatenate([m for m, _ in chunks]), np.concatenate([s for _, s in chunks])

    def _predict_chunk(self, frame: pd.DataFrame, mc_samples: int, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``_predict`` of one chunk of checked rows."""
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
        mean = blend(means, self._weights)  # also for one member: its float32 rows summed to 1 only within ~1e-7
        var = np.tensordot(self._weights**2, np.stack(variances), axes=1)
        return mean, np.sqrt(var)

    def _net_output(self, net: _Net, X: np.ndarray, mc_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """One net's prediction in user space (probabilities, or values on the original scale)."""
        if mc_samples:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(MC_SEED)
                mean, std = predict(net.model, X, task=self.task, mc_samples=mc_samples)
        else:
            mean = predict(net.fast, X, task=self.task)
            std = np.zeros_like(mean)
        mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        if self.task != "regression":
            return mean, std
        slope = net.target.slope(mean) if net.target is not None else self._encoder.std_  # the spread's scale
        return net_values(mean, self._encoder, net.target), std * slope

    def _gbt_output(self, frame: pd.DataFrame, notes: list[str]) -> np.ndarray:
        assert self._gbt is not None
        X = self._pre[self._gbt.preprocess].transform_for_gbt(frame, report=notes)
        pred = predict_gbt(self._gbt.booster, X, task=self.task, categories=self._gbt.categories)
        return np.asarray(pred, dtype=np.float64)

    def _checked_frame(self, df: Any, notes: list[str]) -> pd.DataFrame:
        """The input as a DataFrame with every required column; refuses what cannot be predicted."""
        df = numpy_backed(self._as_frame(df, notes))
        if len(df) == 0:
            raise DataError("the input table has no rows; pass at least one row to predict")
        names = self._unique_names(df, notes)
        if names != list(df.columns):
            df = df.set_axis(names, axis=1)
        missing = [c for c in self.required_columns if c not in names]
        spaced = _spaced_matches(missing, names, known=set(self.required_columns))
        if spaced:
            notes.append("read columns whose names differ from training only in surrounding spaces: "
                         + ", ".join(f"{a!r} as {b!r}" for a, b in spaced.items()))
            names = [spaced.get(n, n) for n in names]
            df = df.set_axis(names, axis=1)
            missing = [c for c in missing if c not in spaced.values()]
        if missing:
            s, them = ("s", "them") if len(missing) > 1 else ("", "it")
            by_case = {c.casefold(): c for c in names}
            near = [f"{by_case[c.casefold()]!r}" for c in missing if c.casefold() in by_case]
            hint = f" (the input has {', '.join(near[:5])}: names are case-sensitive)" if near else ""
            more = f", ... ({len(missing)} in all)" if len(missing) > 10 else ""
            raise DataError(f"input is missing column{s} {', '.join(repr(c) for c in missing[:10])}{more} used in "
                            f"training; add {them} to the table{hint}")
        known = {item["name"] for item in self.input_schema}
        extra = [c for c in names if c not in known]
        if extra:
            shown = ", ".join(repr(c) for c in extra[:5]) + (", ..." if len(extra) > 5 else "")
            notes.append(f"ignored {len(extra)} column{'s' if len(extra) > 1 else ''} not used in training: {shown}")
        self._refuse_unreadable_cells(df)
        self._check_readable(df)
        notes.extend(self._empty_column_notes(df))
        return df

    @staticmethod
    def _unique_names(df: pd.DataFrame, notes: list[str]) -> list[str]:
        """The input's column names as text, made unique as training made them (``a``, ``a.1``), with its note: a
        frame built in Python may hold a name twice, and selecting it gave two columns where one was read
        ("ValueError: The truth value of a Series is ambiguous"); a CSV's reading already renames them so."""
        names = [str(c) for c in df.columns]
        if len(set(names)) == len(names):
            return names
        notes.extend(duplicate_note(names))
        return dedupe(names)

    def _empty_column_notes(self, df: pd.DataFrame) -> list[str]:
        """A note per used column with no value in any row (of more than one): a column emptied by an export or a
        parse mistake otherwise predicts silently, every row as if its cell were missing."""
        if len(df) < 2:
            return []
        used = next(iter(self._pre.values())).required_columns_
        return [f"column {name!r} is empty in all {len(df)} rows; it was treated as missing in every row"
                for name in used if df[name].isna().all()]

    def _as_frame(self, df: Any, notes: list[str]) -> pd.DataFrame:
        if isinstance(df, pd.DataFrame):
            return df
        if df is None:  # pandas reads None as an empty frame: "no rows" would blame a table never given
            raise DataError("no input was given (None); pass a pandas DataFrame, or a path to a table")
        if isinstance(df, pd.Series):  # df.iloc[i]: one row, its index the column names
            notes.append("the input is a Series: read as one row, its index as the column names")
            return df.to_frame().T.infer_objects()
        if isinstance(df, dict) and df and not any(pd.api.types.is_list_like(v) for v in df.values()):
            # one record (a web request's JSON): pandas refused it, "If using all scalar values, you must pass an index"
            notes.append("the input is a dict of single values: read as one row, its keys as the column names")
            return pd.DataFrame([df])
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

    def _refuse_unreadable_cells(self, df: pd.DataFrame) -> None:
        """Refuse a used column of complex numbers or of lists, arrays or records, as ``fit`` refuses or drops them:
        complex cells lost their imaginary parts with only numpy's ComplexWarning, and list cells of a categorical
        column ended with "internal error: TypeError: unhashable type: 'list'"."""
        for name in self.required_columns:
            s = df[name]
            if s.dtype.kind == "c":
                raise DataError(f"column {name!r} holds complex numbers, which the model cannot read; pass the real "
                                "numbers it held in training")
            cell = nested_cell(s, NESTED_CELLS)
            if cell is not None:
                raise DataError(f"column {name!r} holds lists, arrays or records (such as {str(cell)[:40]}), "
                                "not values; pass one value per cell, as in training")

    def _check_readable(self, df: pd.DataFrame) -> None:
        """Refuse a numeric or date column none of whose cells can be read (odd cells alone become missing): such a
        column is another one (shifted, or from another file), and predicting it as missing would hide that.
        Numbers in another unit than training's ('160 lb' in a column of kg; a one-row batch in pounds is all of it)
        are the right column's numbers, not converted: missing cells, with the counted note."""
        for spec in next(iter(self._pre.values())).columns_:
            if spec["kind"] not in ("numeric", "date"):
                continue
            s = df[spec["name"]]
            if isinstance(s, pd.DataFrame) or pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
                continue
            if spec["kind"] == "date" and pd.api.types.is_datetime64_any_dtype(s):
                continue
            reading = spec.get("text") or {}
            markers = {m.casefold() for m in reading.get("missing", [])} | {""}
            present = s[s.notna() & ~s.astype(str).str.strip().str.casefold().isin(markers)]
            if len(present) == 0:
                continue
            if spec["kind"] == "numeric":
                readable = (not np.isnan(read_numbers(present.reset_index(drop=True), reading)[0]).all()
                            or other_unit_numbers(present, reading) > 0)
                what = "times of day" if reading.get("clock") else "numbers"
            else:
                readable = parse_dates(present.reset_index(drop=True), reading)[0].notna().any()
                what = "dates"
            if not readable:
                raise DataError(f"column {spec['name']!r} was {what} in training but none of its values can be "
                                f"read as {what} (e.g. {str(present.iloc[0])[:40]!r}); fix that column")


# --- predicting a file --------------------------------------------------------------------------


def predict_file(model_dir: Path, data: Any, *, out: Path | None = None, mc_samples: int = 0) -> list[str]:
    """Predict a table (file, builtin:NAME or DataFrame) and write CSV/Parquet (stdout CSV without ``out``)."""
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
    check_file_path(Path(out), "--out")
    if same_file(data, out):
        raise PathError(f"--out {str(out)!r} is the input data file, which is never overwritten; "
                        "write the predictions to another file")
    name = Path(out).name.lower()
    stem_suffix = Path(name[:-3]).suffix if name.endswith(".gz") else Path(name).suffix
    kind = OUTPUT_FORMATS.get(stem_suffix)
    if kind is None or (name.endswith(".gz") and kind == "parquet"):
        raise AutoDNNError(f"cannot write predictions to {str(out)!r}: unsupported extension; "
                           "use .csv, .tsv (optionally .gz), .parquet or .pq")
    return kind


def _write_table(frame: pd.DataFrame, out: Path, kind: str) -> None:
    """Atomically write CSV/TSV (gzip by the .gz suffix) or Parquet."""
    if kind == "parquet":
        atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))
    elif out.name.lower().endswith(".gz"):
        atomic_write(out, lambda tmp: _write_gzip_csv(frame, tmp, sep="\t" if kind == "tsv" else ",", name=out.name))
    else:
        atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False, sep="\t" if kind == "tsv" else ","))


def _write_gzip_csv(frame: pd.DataFrame, tmp: Path, *, sep: str, name: str) -> None:
    """Gzipped CSV into ``tmp`` whose header names the final file (``name`` less .gz, as gzip does): pandas' gzip
    names the file it writes, and ``gunzip -N`` would restore the temporary's hidden name."""
    with open(tmp, "wb") as raw, gzip.GzipFile(filename=name, mode="wb", fileobj=raw) as packed:
        frame.to_csv(packed, index=False, sep=sep)


def _spaced_matches(missing: list[str], names: list[str], known: set[str]) -> dict[str, str]:
    """Input names that are a missing training column's but for surrounding spaces -> that column.

    A CSV header read by the CLI loses its leading spaces (``skipinitialspace``) and one read by pandas keeps
    them, so a model trained on either must read the other. Only an unambiguous match counts."""
    by_stripped: dict[str, list[str]] = {}
    for name in names:
        if name not in known:
            by_stripped.setdefault(name.strip(), []).append(name)
    return {by_stripped[c.strip()][0]: c for c in missing if len(by_stripped.get(c.strip(), [])) == 1}


__all__ = ["Predictor", "load_model", "predict_file"]
