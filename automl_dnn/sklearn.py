"""scikit-learn estimators: ``AutoDNNClassifier`` and ``AutoDNNRegressor``.

``fit`` runs the whole tool (search, XGBoost, ensemble, export) on the given rows: it hands them, with
the target as one more column, straight to ``api.fit`` with the task fixed by the estimator. The fitted estimator keeps
the exported model folder's bytes in memory (a few MB), so ``save`` needs no work folder and the
temporary one is removed after ``fit`` (a ``work_dir`` you give is kept, with its run folders).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import DataConversionWarning, NotFittedError

from automl_dnn import api
from automl_dnn.data.dataset import MIN_ROWS
from automl_dnn.data.target import too_many_classes
from automl_dnn.errors import AutoDNNError, DataError, PathError, SpaceError
from automl_dnn.model_folder import MODEL_JSON, model_json, read_spec, write_model_folder
from automl_dnn.paths import make_folder
from automl_dnn.predictor import load_model


#: model.json's record of the estimator that fitted the model: its class name and ``get_params()``
ESTIMATOR_KEY = "estimator"


class _AutoDNNBase(BaseEstimator):
    """What the classifier and the regressor share; ``_tasks`` says which model tasks each accepts."""

    _tasks: tuple[str, ...] = ()

    def __init__(
        self,
        time_budget: float | None = 60.0,
        n_trials: int | None = None,
        space: str = "default",
        metric: str | None = None,
        top_k: int = 5,
        gbt: bool = True,
        gbt_trials: int | None = None,
        folds: int | None = None,
        bag_mode: str = "bag",
        cv_folds: int | None = None,
        valid_size: float = 0.15,
        test_size: float = 0.0,  # train on all given rows: the caller keeps its own test set
        seed: int = 0,
        threads: int | None = None,
        device: str = "auto",
        work_dir: str | Path | None = None,
        quiet: bool = True,
    ) -> None:
        self.time_budget = time_budget
        self.n_trials = n_trials
        self.space = space
        self.metric = metric
        self.top_k = top_k
        self.gbt = gbt
        self.gbt_trials = gbt_trials
        self.folds = folds
        self.bag_mode = bag_mode
        self.cv_folds = cv_folds
        self.valid_size = valid_size
        self.test_size = test_size
        self.seed = seed
        self.threads = threads
        self.device = device
        self.work_dir = work_dir
        self.quiet = quiet

    def __sklearn_tags__(self) -> Any:
        """What the estimators read: missing values, sparse matrices, and (in a DataFrame) text and categorical
        columns, which the preprocessing encodes itself; scikit-learn's meta-estimators and checks read these."""
        tags = super().__sklearn_tags__()
        inputs = tags.input_tags
        inputs.allow_nan = inputs.sparse = inputs.string = inputs.categorical = True
        return tags

    # -- fit ----------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> Any:
        """Search, ensemble and export on (X, y); the model is then held in memory."""
        with _value_errors():
            return self._fit(X, y)

    def _fit(self, X: Any, y: Any) -> Any:
        self._check_params()
        if y is None:  # np.asarray(None) is 0-d: "got shape ()" said nothing about y being left out
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        frame, names_in = _as_frame(X)
        if frame.shape[1] == 0:  # the search's words named its own 'target' column
            raise ValueError(f"X has 0 feature(s) (shape={frame.shape}) while a minimum of 1 is required.")
        target = np.asarray(y)
        if target.ndim == 2 and target.shape[1] == 1:
            warnings.warn(DataConversionWarning("A column-vector y was passed when a 1d array was expected. Please "
                                                "change the shape of y to (n_samples,), for example using ravel()."),
                          stacklevel=3)  # scikit-learn's words, which its checks and users look for
            target = target.ravel()
        if target.ndim != 1 or len(target) != len(frame):
            raise ValueError(f"y must be 1-D with one value per row of X ({len(frame)}), got shape {target.shape}")
        if pd.isna(pd.Series(target, dtype=object)).all():  # the search's own words would name a --target column
            raise ValueError(f"y has no values: {'X has 0 rows' if len(frame) == 0 else 'every one is missing'}")
        if len(frame) < MIN_ROWS:  # before the classes: one row is '1 class' too, but the rows are what is short
            raise ValueError(f"X has {len(frame)} sample(s) (n_samples={len(frame)}) while a minimum of {MIN_ROWS} "
                             "is required to search, validate and ensemble")
        task = self._task_for(target)
        work_root = Path(self.work_dir) if self.work_dir is not None else None
        if work_root is not None:
            make_folder(work_root, "work_dir")  # a file there: one line, not FileExistsError's traceback
        work = Path(tempfile.mkdtemp(prefix="automl-dnn-fit-", dir=work_root))
        try:
            target_name = _free_name("target", frame.columns)
            summary, report = api.fit(
                frame.assign(**{target_name: target}), model_dir=work / "model", out=work / "run", time_budget=self.time_budget,
                top_k=self.top_k, gbt=self.gbt, gbt_trials=self.gbt_trials, folds=self.folds,
                bag_mode=self.bag_mode, cv_folds=self.cv_folds, target=target_name, task=task,
                space=self.space, n_trials=self.n_trials, metric=self.metric, threads=self.threads,
                valid_size=self.valid_size, test_size=self.test_size, device=self.device, seed=self.seed,
                quiet=self.quiet,
            )
            self._set_model(_with_params(_read_model_files(work / "model"), self, names_in))
        finally:
            if work_root is None:
                shutil.rmtree(work, ignore_errors=True)
        self.search_summary_ = summary
        self.ensemble_report_ = report
        self._set_feature_names(names_in)
        return self

    def _check_params(self) -> None:
        if self.time_budget is not None and not (_is_number(self.time_budget) and self.time_budget > 0):
            raise ValueError(f"time_budget must be > 0 seconds or None, got {self.time_budget!r}")
        for name in ("n_trials", "top_k", "gbt_trials", "folds", "cv_folds"):
            value = getattr(self, name)
            if (value is not None or name == "top_k") and not (_is_number(value) and value >= 1):
                raise ValueError(f"{name} must be >= 1{'' if name == 'top_k' else ' or None'}, got {value!r}")
        if self.bag_mode not in ("bag", "refit"):
            raise ValueError(f"bag_mode must be 'bag' or 'refit', got {self.bag_mode!r}")
        if not isinstance(self.gbt, (bool, np.bool_)):  # gbt="no" is true
            raise ValueError(f"gbt must be True or False, got {self.gbt!r}")

    def _task_for(self, y: np.ndarray) -> str:
        raise NotImplementedError

    def _set_feature_names(self, names: list[str] | None) -> None:
        """``feature_names_in_`` for a model fitted on named columns; none after one fitted on an array, also when
        an earlier fit of this estimator had names (they are not this model's)."""
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _set_model(self, files: dict[str, bytes]) -> None:
        """Load the predictor from the exported files (verifying them) and set the fitted attributes."""
        with tempfile.TemporaryDirectory(prefix="automl-dnn-load-") as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            predictor = load_model(Path(tmp))
        if predictor.task not in self._tasks:
            raise AutoDNNError(f"this model does {predictor.task}, not {' or '.join(self._tasks)}; load it with "
                               f"{'AutoDNNRegressor' if predictor.task == 'regression' else 'AutoDNNClassifier'}")
        self.predictor_ = predictor
        self.model_files_ = dict(files)
        self.n_features_in_ = len(predictor.input_schema)

    # -- predict ------------------------------------------------------------------------------

    def predict(self, X: Any) -> np.ndarray:
        """Class labels or values, one per row of X."""
        with _value_errors():
            return self._predictor().predict(self._input(X))

    def _predictor(self) -> Any:
        if not hasattr(self, "predictor_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) or load(model_dir)")
        return self.predictor_

    def _input(self, X: Any) -> pd.DataFrame:
        """A DataFrame the predictor can read; an array gets the names the model was trained under."""
        names = [item["name"] for item in self._predictor().input_schema]
        if isinstance(X, pd.DataFrame):
            fitted_on_array = names == _array_names(len(names))  # its columns were named x0, x1, ...
            if fitted_on_array and X.shape[1] == len(names) and not set(map(str, X.columns)) & set(names):
                # a frame for a model fitted on an array: read by position, as scikit-learn does
                warnings.warn(f"X has feature names, but {type(self).__name__} was fitted without feature names",
                              UserWarning, stacklevel=3)
                return X.set_axis(names, axis=1)
            return X
        arr = _two_d(_dense(X))
        if arr.shape[1] != self.n_features_in_:
            raise _ValueDataError(f"X has {arr.shape[1]} features, but {type(self).__name__} is expecting "
                                  f"{self.n_features_in_} features as input (it was fitted with "
                                  f"{self.n_features_in_}); pass the same columns as in fit")
        return pd.DataFrame(arr, columns=names)

    # -- persistence --------------------------------------------------------------------------

    def save(self, model_dir: str | Path) -> Path:
        """Write the exported model folder (load it with ``load`` or ``automl_dnn.load``)."""
        self._predictor()
        return write_model_folder(Path(model_dir), self.model_files_)

    @classmethod
    def load(cls, model_dir: str | Path) -> Any:
        """An estimator from a model folder (written by ``save``, ``automl-dnn fit`` or ``ensemble``), with the
        parameters it was fitted with (``save``'s folders record them; the CLI's have none: the defaults)."""
        files = _read_model_files(Path(model_dir))
        record = _estimator_record(files)
        est = cls(**_recorded_params(record, cls))
        est._set_model(files)
        est._set_feature_names(_recorded_names(record, est.predictor_.input_schema))
        return est


class AutoDNNClassifier(ClassifierMixin, _AutoDNNBase):
    """Searches nets for a classification table, ensembles them with XGBoost, predicts labels."""

    _tasks = ("binary", "multiclass")

    def _task_for(self, y: np.ndarray) -> str:
        values = pd.Series(y).dropna()
        n = len(pd.unique(values))
        if n < 2:
            raise DataError(f"y has {n} distinct class{'es' if n != 1 else ''}; a classifier needs at least 2")
        if too_many_classes(n, len(values)):  # check_target's rule, said the sklearn way
            raise DataError(f"y looks continuous: {n} distinct values in {len(values)} rows, too many to be "
                            "classes; use AutoDNNRegressor")
        return "binary" if n == 2 else "multiclass"

    def _set_model(self, files: dict[str, bytes]) -> None:
        super()._set_model(files)
        self.classes_ = self.predictor_.classes_

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n, K)`` in the order of ``classes_``."""
        with _value_errors():
            return self._predictor().predict_proba(self._input(X))


class AutoDNNRegressor(RegressorMixin, _AutoDNNBase):
    """Searches nets for a regression table, ensembles them with XGBoost, predicts values."""

    _tasks = ("regression",)

    def _task_for(self, y: np.ndarray) -> str:
        if pd.Series(y).nunique(dropna=True) < 2:  # the search's own words named a 'target' column
            raise DataError(f"y has a single value {pd.Series(y).dropna().iloc[0]}; a regressor needs at least "
                            "two different values")
        return "regression"


# --- helpers ------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _as_frame(X: Any) -> tuple[pd.DataFrame, list[str] | None]:
    """X as a DataFrame with string column names; also the names when X came with its own, all text (as
    scikit-learn sets ``feature_names_in_``: a frame made from an array has the numbers 0, 1, ... instead)."""
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        _refuse_complex(X.dtypes)
        if len(set(names)) != len(names):
            raise DataError("X has duplicate column names; make them unique")
        given = names if all(isinstance(c, str) for c in X.columns) else None
        return X.set_axis(names, axis=1).reset_index(drop=True), given
    arr = _two_d(_dense(X))
    return pd.DataFrame(arr, columns=_array_names(arr.shape[1])), None


def _array_names(n: int) -> list[str]:
    """The column names an array's columns get in training."""
    return [f"x{i}" for i in range(n)]


def _dense(X: Any) -> np.ndarray:
    """X as a numpy array; a scipy sparse matrix (OneHotEncoder's default output) is made dense, since the nets
    and the preprocessing read dense columns (np.asarray would wrap it in a 0-d object array)."""
    arr = X.toarray() if sp.issparse(X) else np.asarray(X)
    _refuse_complex([arr.dtype])
    return arr


def _two_d(arr: np.ndarray) -> np.ndarray:
    """``arr`` when it is 2-D; else a ValueError in scikit-learn's words ("Reshape your data"), which its checks
    look for."""
    if arr.ndim != 2:
        how = (" Reshape your data either using X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) if "
               "it contains a single sample." if arr.ndim == 1 else "")
        raise ValueError(f"X must be 2-D (rows, features), got shape {arr.shape}.{how}")
    return arr


def _refuse_complex(dtypes: Any) -> None:
    """Complex numbers are refused: the preprocessing's cast to float dropped their imaginary parts, with only
    numpy's ComplexWarning."""
    if any(dtype.kind == "c" for dtype in dtypes):
        raise ValueError("Complex data not supported: X holds complex numbers, which the model cannot read; pass "
                         "their real and imaginary parts as two columns")


class _ValueDataError(DataError, ValueError):
    """A DataError that is also the ValueError scikit-learn's conventions (and its callers) expect."""


class _ValueSpaceError(SpaceError, ValueError):
    """A bad ``space``, as a ValueError too."""


class _ValuePathError(PathError, ValueError):
    """A bad ``work_dir``, as a ValueError too."""


class _ValueAutoDNNError(AutoDNNError, ValueError):
    """A bad parameter that ``api.fit`` refuses (seed, threads, device, metric), as a ValueError too."""


#: the bad-input errors a fit or a prediction raises -> their ValueError twins (module-level classes, so that an
#: error pickles back from a joblib worker of cross_val_score(n_jobs=2)); a full disk, storage or model error is
#: no bad parameter and stays as it is
_VALUE_ERRORS: dict[type, type] = {DataError: _ValueDataError, SpaceError: _ValueSpaceError,
                                   PathError: _ValuePathError, AutoDNNError: _ValueAutoDNNError}


@contextmanager
def _value_errors() -> Iterator[None]:
    """A bad-input AutoDNNError raised inside is raised again as its twin that is also a ValueError."""
    try:
        yield
    except AutoDNNError as exc:
        twin = _VALUE_ERRORS.get(type(exc))
        if twin is None:
            raise
        raise twin(str(exc)) from exc


def _free_name(name: str, taken: Any) -> str:
    taken = {str(c) for c in taken}
    while name in taken:
        name = f"_{name}"
    return name


def _with_params(files: dict[str, bytes], est: _AutoDNNBase, names_in: list[str] | None) -> dict[str, bytes]:
    """The model files with the estimator's class, parameters and feature names recorded in model.json, so ``load``
    gives back an estimator that reports (and ``clone`` copies) the parameters it was fitted with, and has the
    ``feature_names_in_`` it had; predicting ignores them."""
    spec = json.loads(files[MODEL_JSON])
    spec[ESTIMATOR_KEY] = {"class": type(est).__name__, "params": est.get_params(),  # model_json: a Path as text
                           "feature_names_in": names_in}
    return {**files, MODEL_JSON: model_json(spec)}


def _estimator_record(files: dict[str, bytes]) -> dict[str, Any]:
    """model.json's record of the estimator that fitted the model; empty when the CLI or ``api.fit`` made it."""
    record = json.loads(files[MODEL_JSON]).get(ESTIMATOR_KEY)
    return record if isinstance(record, dict) else {}


def _recorded_params(record: dict[str, Any], cls: type) -> dict[str, Any]:
    """The recorded parameters that ``cls`` takes (none without a record: the defaults)."""
    params = record.get("params")
    if not isinstance(params, dict):
        return {}
    names = set(cls._get_param_names())
    return {name: value for name, value in params.items() if name in names}


def _recorded_names(record: dict[str, Any], schema: list[dict[str, Any]]) -> list[str] | None:
    """The feature names the estimator was fitted with; without a record (the CLI's folders, trained on a named
    table) the model's input columns, unless they are the names an array's columns get."""
    columns = [str(item["name"]) for item in schema]
    if "feature_names_in" not in record:
        return None if columns == _array_names(len(columns)) else columns
    names = record["feature_names_in"]
    return names if isinstance(names, list) and [str(n) for n in names] == columns else None


def _read_model_files(model_dir: Path) -> dict[str, bytes]:
    """model.json and every file it lists (load_model verifies them)."""
    load_model(model_dir)  # refuses a bad folder (names, hashes, formats) before anything is copied
    return {name: (model_dir / name).read_bytes() for name in [MODEL_JSON, *read_spec(model_dir)["files"]]}


__all__ = ["AutoDNNClassifier", "AutoDNNRegressor"]
