"""automl-dnn: finds a good deep neural network for a tabular dataset, then beats it by ensembling."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AutoDNNClassifier", "AutoDNNRegressor", "__version__", "load"]


def __getattr__(name: str) -> Any:
    """Import the public names lazily, so ``import automl_dnn`` stays light (no torch, no xgboost)."""
    if name == "load":
        from automl_dnn.api import load

        return load
    if name in ("AutoDNNClassifier", "AutoDNNRegressor"):
        from automl_dnn import sklearn

        return getattr(sklearn, name)
    raise AttributeError(f"module 'automl_dnn' has no attribute {name!r}")
