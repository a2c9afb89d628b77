"""TabM (Gorishniy et al., ICLR 2025): pytabkit's ``TabM_D_Classifier`` / ``TabM_D_Regressor`` with default
settings, on the CPU with the machine's cores. pytabkit's TabM takes no time limit: it trains until its
early stopping whatever the budget (see ``_pytabkit.py`` for the input handling)."""

from __future__ import annotations

import _pytabkit
from pytabkit import TabM_D_Classifier, TabM_D_Regressor

if __name__ == "__main__":
    _pytabkit.run("tabm", TabM_D_Classifier, TabM_D_Regressor, honours_time_limit=False)
