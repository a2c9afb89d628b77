"""Two workers, two run folders ("two machines"), one study on a real PostgreSQL server on loopback.

That both workers run trials does not depend on how fast they start: the trial gate (tests/conftest.py)
keeps each worker in its first trial until the other is in one too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.conftest import POLL_LIMIT, TrialGate
from tests.postgres import postgres_server


def test_two_workers_share_one_postgres_study(tmp_path: Path, short_space: Path, trial_gate: TrialGate) -> None:
    with postgres_server() as url:
        command = [sys.executable, "-m", "automl_dnn", "search", "builtin:breast_cancer", "--space", str(short_space),
                   "--storage", url, "--study", "shared", "--n-trials", "8", "--pruner", "none", "--threads", "1",
                   "--quiet"]
        workers = [subprocess.Popen([*command, "--out", str(tmp_path / f"machine{i}")], env=trial_gate.env(parties=2),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        try:
            results = [w.communicate(timeout=POLL_LIMIT) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        for worker, (_, err) in zip(workers, results):
            assert worker.returncode == 0, err
        study = optuna.load_study(study_name="shared", storage=url.replace("postgresql://", "postgresql+psycopg://"))
        trials = study.get_trials()
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) == 8
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        assert len({t.number for t in trials}) == len(trials)
        assert trial_gate.arrived() == {w.pid for w in workers}, "each worker reached its first trial"
        by_folder = {Path(t.user_attrs["artifacts"]).parent.parent.name for t in finished if "artifacts" in t.user_attrs}
        assert by_folder == {"machine0", "machine1"}, "both workers ran trials"
