"""automl-dnn: finds a good deep neural network for a tabular dataset, then beats it by ensembling."""

from __future__ import annotations

__version__ = "0.1.0"
