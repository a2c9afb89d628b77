"""Tabular data in, clean numbers out: read, infer the task, encode the target, split, preprocess.

Everything a user can get wrong here raises ``DataError`` with a one-line message. Every decision
made on the user's behalf (a dropped column, a guessed task, a fallback) is recorded as a note.

Modules, each using only those listed before it: ``builtins`` (the ``builtin:NAME`` datasets),
``reading`` (``read_table``), ``target`` (task inference, ``TargetEncoder``, ``TargetTransform``), ``preprocessing``
(``FeaturePreprocessor``) and ``dataset`` (``load_dataset``).
"""

from __future__ import annotations

from automl_dnn.data.builtins import BUILTINS, BuiltinInfo
from automl_dnn.data.dataset import NESTED_CELLS, PARTS, Dataset, load_dataset, nested_cell
from automl_dnn.data.preprocessing import (MISSING_LEVEL, RARE_LEVEL, FeaturePreprocessor, formatted_numbers,
                                            merge_counted_notes, other_unit_numbers, parse_dates, read_numbers)
from automl_dnn.data.reading import NOTES_ATTR, numpy_backed, read_table, release_table_memory
from automl_dnn.data.target import (TARGET_TRANSFORMS, TargetEncoder, TargetTransform, check_target, extreme_targets,
                                     infer_task, mixed_labels_as_text, net_values, stripped_labels)

__all__ = [
    "BUILTINS", "MISSING_LEVEL", "NESTED_CELLS", "NOTES_ATTR", "PARTS", "RARE_LEVEL", "TARGET_TRANSFORMS",
    "BuiltinInfo", "Dataset", "FeaturePreprocessor", "TargetEncoder", "TargetTransform", "check_target",
    "extreme_targets", "formatted_numbers", "infer_task", "load_dataset", "parse_dates", "merge_counted_notes",
    "mixed_labels_as_text", "nested_cell", "net_values", "numpy_backed", "other_unit_numbers", "read_numbers",
    "read_table", "release_table_memory", "stripped_labels",
]
