"""The datasets bundled with scikit-learn, named ``builtin:NAME``, so demos and tests need no download."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from automl_dnn.errors import DataError


@dataclass(frozen=True)
class BuiltinInfo:
    """A dataset bundled with scikit-learn, so demos and tests need no download."""

    name: str
    task: str
    target: str
    description: str
    loader: Callable[[], pd.DataFrame]


def _sklearn_frame(loader_name: str) -> Callable[[], pd.DataFrame]:
    """A loader that imports scikit-learn only when the dataset is used, so listing them stays light."""

    def load() -> pd.DataFrame:
        from sklearn import datasets

        return getattr(datasets, loader_name)(as_frame=True).frame

    return load


BUILTINS: dict[str, BuiltinInfo] = {
    "breast_cancer": BuiltinInfo(
        "breast_cancer", "binary", "target",
        "Wisconsin breast cancer: malignant (0) or benign (1) from 30 cell measurements (569 rows)",
        _sklearn_frame("load_breast_cancer"),
    ),
    "digits": BuiltinInfo(
        "digits", "multiclass", "target",
        "8x8 images of handwritten digits 0-9, one column per pixel (1797 rows)",
        _sklearn_frame("load_digits"),
    ),
    "wine": BuiltinInfo(
        "wine", "multiclass", "target",
        "Wine cultivar (3 classes) from 13 chemical measurements (178 rows)",
        _sklearn_frame("load_wine"),
    ),
    "diabetes": BuiltinInfo(
        "diabetes", "regression", "target",
        "Diabetes progression after one year from 10 baseline measurements (442 rows)",
        _sklearn_frame("load_diabetes"),
    ),
}


def builtin_info(source: str) -> BuiltinInfo:
    """The built-in dataset named by ``builtin:NAME``; an unknown name lists the known ones."""
    name = source.split(":", 1)[1].strip().lower()
    if name not in BUILTINS:
        raise DataError(f"unknown built-in dataset {name!r}; use one of: {', '.join(sorted(BUILTINS))}")
    return BUILTINS[name]


def is_builtin(source: object) -> bool:
    """Whether source names a built-in dataset (``builtin:NAME``, any case) rather than a file."""
    return isinstance(source, str) and source.lower().startswith("builtin:")
