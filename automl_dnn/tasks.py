"""The shared vocabulary: the tasks, and the metrics by name with their direction and tasks.

Plain Python with no imports, so the CLI can offer the choices without loading numpy or scikit-learn;
``metrics.py`` computes every metric named here.
"""

from __future__ import annotations

TASKS = ("binary", "multiclass", "regression")
CLASSIFICATION = frozenset({"binary", "multiclass"})
REGRESSION = frozenset({"regression"})

#: metric name -> (direction, the tasks it applies to), in the order options and reports list them.
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "logloss": ("minimize", CLASSIFICATION),
    "accuracy": ("maximize", CLASSIFICATION),
    "roc_auc": ("maximize", CLASSIFICATION),
    "balanced_accuracy": ("maximize", CLASSIFICATION),
    "rmse": ("minimize", REGRESSION),
    "mae": ("minimize", REGRESSION),
    "r2": ("maximize", REGRESSION),
}
