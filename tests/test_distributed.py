"""Two workers, two run folders ("two machines"), one study on a real PostgreSQL server on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.postgres import postgres_server

SPACE = """
params:
  n_layers: {type: int, low: 1, high: 2}
  d_hidden: {type: int, low: 8, high: 32, log: true}
  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
  optimizer: adam
  schedule: none
  batch_size: 16
  max_epochs: 60
  patience: 60
"""
# Each trial trains 60 epochs unpruned (about a second), so the eight trials outlast the start-up of the
# second worker (a few seconds on a loaded CI machine) and both workers get trials to run.


def test_two_workers_share_one_postgres_study(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    with postgres_server() as url:
        command = [sys.executable, "-m", "automl_dnn", "search", "builtin:breast_cancer", "--space", str(space),
                   "--storage", url, "--study", "shared", "--n-trials", "8", "--pruner", "none", "--threads", "1", "--quiet"]
        workers = [subprocess.Popen([*command, "--out", str(tmp_path / f"machine{i}")],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        results = [w.communicate(timeout=300) for w in workers]
        for worker, (_, err) in zip(workers, results):
            assert worker.returncode == 0, err
        study = optuna.load_study(study_name="shared", storage=url.replace("postgresql://", "postgresql+psycopg://"))
        trials = study.get_trials()
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) == 8
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        assert len({t.number for t in trials}) == len(trials)
        by_folder = {Path(t.user_attrs["artifacts"]).parent.parent.name for t in finished if "artifacts" in t.user_attrs}
        assert by_folder == {"machine0", "machine1"}, "both workers ran trials"
