"""automl-dnn: finds a good deep neural network for a tabular dataset, then beats it by ensembling."""

from __future__ import annotations

import os
from typing import Any

# torch and XGBoost share the process in a fit; idle OpenMP threads that spin-wait for work steal the cores the
# other library's threads need (on a 2-core machine a 2-thread XGBoost fit ran 20x slower). Passive waiting costs
# nothing measurable. Set here, before torch or XGBoost load their OpenMP runtime, so the CLI, the Python API and
# the scikit-learn estimators all get it (a process that loaded torch first keeps its policy); a user's own value
# wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
