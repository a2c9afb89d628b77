"""RealMLP-TD (Holzmueller et al., NeurIPS 2024): pytabkit's ``RealMLP_TD_Classifier`` / ``RealMLP_TD_Regressor``
with default settings, on the CPU with the machine's cores; the budget is its ``time_to_fit_in_seconds``
(see ``_pytabkit.py`` for the input handling: numeric NaN -> training median, strings -> category)."""

from __future__ import annotations

import _pytabkit
from pytabkit import RealMLP_TD_Classifier, RealMLP_TD_Regressor

if __name__ == "__main__":
    _pytabkit.run("realmlp", RealMLP_TD_Classifier, RealMLP_TD_Regressor, honours_time_limit=True)
