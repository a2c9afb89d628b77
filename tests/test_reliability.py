"""Faults: a search killed with SIGKILL mid-trial resumes; Ctrl-C stops cleanly; the dashboard serves the study.

The kill and the Ctrl-C land mid-trial by construction, not by timing: the trial gate (tests/conftest.py)
pauses the search in a trial's first epoch, the test signals it there, then lets it go on.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from automl_dnn.run_folder import RunDir
from automl_dnn.study import open_study
from tests.conftest import POLL_LIMIT, SHORT_SPACE, TrialGate, free_port


def _command(out: Path, space: Path, n_trials: int, cv_folds: int = 1) -> list[str]:
    return [sys.executable, "-m", "automl_dnn", "search", "builtin:breast_cancer", "--out", str(out),
            "--space", str(space), "--n-trials", str(n_trials), "--pruner", "none", "--cv-folds", str(cv_folds),
            "--quiet"]


def _states(out: Path) -> list[TrialState]:
    """Trial states read straight from the SQLite file, read-only: opening it through Optuna while the
    search creates its tables would race with that creation."""
    db = out / "study.db"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            rows = conn.execute("SELECT state FROM trials ORDER BY number").fetchall()
    except sqlite3.OperationalError:  # the tables are being created
        return []
    return [TrialState[state] for (state,) in rows]


def _stop(proc: subprocess.Popen) -> None:
    """Kill a process a failed test left running (it may be paused at the gate)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigkill_mid_trial_then_rerun_resumes_to_the_total(tmp_path: Path, short_space: Path,
                                                          trial_gate: TrialGate) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(_command(out, short_space, 4), stderr=subprocess.PIPE, text=True,
                            env=trial_gate.env(hold=2))
    try:
        trial_gate.wait_until_held(proc, 2)  # trials 0 and 1 are done, trial 2 is in its first epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        _stop(proc)
    study = open_study(RunDir(out).read_spec(), create=False)
    before = {t.number: (t.value, t.user_attrs["artifacts"]) for t in study.get_trials(states=(TrialState.COMPLETE,))}
    killed = [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]
    assert len(before) >= 2 and killed == [2]

    rerun = subprocess.run(_command(out, short_space, 4), capture_output=True, text=True, timeout=POLL_LIMIT)
    assert rerun.returncode == 0, rerun.stderr
    study = open_study(RunDir(out).read_spec(), create=False)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[killed[0]].state == TrialState.FAIL
    assert "worker stopped" in trials[killed[0]].user_attrs["fail_reason"]
    for number, (value, artifacts) in before.items():
        assert trials[number].value == value
        assert (Path(artifacts) / "weights.safetensors").is_file()
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 4
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert not [p for p in (out / "artifacts").iterdir() if p.name.startswith(".")], "no half-written artifact"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_finishes_the_running_trial_and_says_how_to_resume(signum: int, tmp_path: Path, short_space: Path,
                                                                  trial_gate: TrialGate) -> None:
    """SIGTERM too: timeout, docker stop, Slurm and systemd send it before they kill."""
    out = tmp_path / "run"
    proc = subprocess.Popen(_command(out, short_space, 10), stderr=subprocess.PIPE, text=True,
                            env=trial_gate.env(hold=1))
    try:
        trial_gate.wait_until_held(proc, 1)  # trial 0 is done, trial 1 is in its first epoch
        proc.send_signal(signum)
        trial_gate.release()
        _, err = proc.communicate(timeout=POLL_LIMIT)
    finally:
        _stop(proc)
    assert proc.returncode == 130
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    states = _states(out)
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.COMPLETE) >= 2, "the interrupted trial was cut short and kept"
    study = open_study(RunDir(out).read_spec(), create=False)
    assert len(study.trials) == 2, "no trial started after Ctrl-C"
    assert study.trials[1].user_attrs["epochs_run"] == 1, "the interrupted trial stopped after its current epoch"


def test_ctrl_c_in_a_cross_validated_trial_prunes_it_with_its_reason(tmp_path: Path, short_space: Path,
                                                                     trial_gate: TrialGate) -> None:
    """A trial whose folds are not all done has no value: it ends PRUNED (never RUNNING), saying where."""
    out = tmp_path / "run"
    proc = subprocess.Popen(_command(out, short_space, 10, cv_folds=3), stderr=subprocess.PIPE, text=True,
                            env=trial_gate.env(hold=1))
    try:
        trial_gate.wait_until_held(proc, 1)
        proc.send_signal(signal.SIGINT)
        trial_gate.release()
        _, err = proc.communicate(timeout=POLL_LIMIT)
    finally:
        _stop(proc)
    assert proc.returncode == 130 and "Traceback" not in err
    study = open_study(RunDir(out).read_spec(), create=False)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[0].user_attrs["cv_values"] and len(study.trials[0].user_attrs["cv_values"]) == 3
    assert study.trials[1].user_attrs["prune_reason"].startswith("cut short in fold 1 of 3")


def test_ctrl_c_during_fit_stops_xgboost_and_exports_what_is_done(tmp_path: Path, short_space: Path,
                                                                  trial_gate: TrialGate) -> None:
    run, model = tmp_path / "model-run", tmp_path / "model"
    command = [sys.executable, "-m", "automl_dnn", "fit", "builtin:breast_cancer", "--model", str(model),
               "--space", str(short_space), "--n-trials", "50", "--pruner", "none", "--gbt-trials", "100000",
               "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=trial_gate.env(hold=1))
    try:
        trial_gate.wait_until_held(proc, 1)
        proc.send_signal(signal.SIGINT)
        trial_gate.release()
        _, err = proc.communicate(timeout=POLL_LIMIT)  # 100000 XGBoost trials would outlast this: it was stopped
    finally:
        _stop(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    spec = json.loads((model / "model.json").read_text())
    assert {m["kind"] for m in spec["members"]} <= {"net", "xgboost"} and spec["members"]
    xgb_note = next(n for n in spec["notes"] if n.startswith("XGBoost: "))
    assert int(xgb_note.split()[1]) < 100000 and "stopped" in xgb_note
    assert TrialState.RUNNING not in _states(run)


#: ``automl-dnn`` whose process dies (as SIGKILL would: no cleanup) when XGBoost starts its third trial.
_DIES_IN_XGBOOST_TRIAL_3 = """
import os, sys
from automl_dnn import gbt
from automl_dnn.cli import cli
real, calls = gbt._train_one, []
def train_one(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        os._exit(137)
    return real(*args, **kwargs)
gbt._train_one = train_one
cli(sys.argv[1:], prog_name="automl-dnn")
"""


def test_a_fit_killed_while_xgboost_tunes_keeps_its_completed_trials(tmp_path: Path, tiny_space: Path) -> None:
    """The rerun of the same command goes on from XGBoost's kept trials and best booster (RUN/xgboost-tuning):
    it runs the one trial left of 3, not the default trial again."""
    run, model = tmp_path / "model-run", tmp_path / "model"
    args = ["fit", "builtin:breast_cancer", "--model", str(model), "--space", str(tiny_space), "--n-trials", "1",
            "--gbt-trials", "3", "--folds", "1", "--pruner", "none", "--no-report", "--quiet"]
    killed = subprocess.run([sys.executable, "-c", _DIES_IN_XGBOOST_TRIAL_3, *args], capture_output=True, text=True,
                            timeout=POLL_LIMIT)
    assert killed.returncode == 137, killed.stderr
    assert not model.exists()
    kept = json.loads((run / "xgboost-tuning" / "trials.json").read_text())
    assert len(kept["trials"]) == 2 and len(list((run / "xgboost-tuning").glob("best-*.ubj"))) == 1

    rerun = subprocess.run([sys.executable, "-m", "automl_dnn", *args], capture_output=True, text=True,
                           timeout=POLL_LIMIT)
    assert rerun.returncode == 0, rerun.stderr
    after = json.loads((run / "xgboost-tuning" / "trials.json").read_text())
    assert after["trials"][:2] == kept["trials"] and len(after["trials"]) == 3  # grew by one, not restarted
    notes = json.loads((model / "model.json").read_text())["notes"]
    xgb_note = next(n for n in notes if n.startswith("XGBoost: "))
    assert xgb_note.startswith("XGBoost: 1 trials in ") and "after 2 kept from an earlier run" in xgb_note


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_dashboard_serves_the_study_and_its_trials(tmp_path: Path, short_space: Path) -> None:
    out = tmp_path / "run"
    subprocess.run(_command(out, short_space, 2), check=True, capture_output=True, timeout=POLL_LIMIT)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "automl_dnn", "dashboard", str(out), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + POLL_LIMIT  # waits for the server to answer; only a safety net
        while True:
            try:
                studies = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "dashboard did not start"
                time.sleep(0.2)
        assert [s["study_name"] for s in studies] == ["run"]
        detail = json.loads(_get(f"{base}/api/studies/{studies[0]['study_id']}"))
        assert len(detail["trials"]) == 2
        assert {"learning_curve", "epochs_run"} <= {a["key"] for a in detail["trials"][0]["user_attrs"]}
        page = _get(f"{base}/dashboard/").decode()
        script = page.split('src="', 1)[1].split('"', 1)[0]
        assert script.endswith(".js") and len(_get(base + script)) > 10_000
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_html_report_has_history_importances_and_best_configs(tmp_path: Path, short_space: Path) -> None:
    from automl_dnn import api

    out = tmp_path / "run"
    api.search("builtin:breast_cancer", out=out, space=str(short_space), n_trials=3, quiet=True, pruner="none")
    path = api.write_report(out)
    html = path.read_text()
    for title in ("Optimization history", "Validation metric by percent", "Hyperparameter importances", "Best configs"):
        assert title in html
    assert "plotly" in html.lower()
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    assert f"<td>{study.best_trial.number}</td>" in html


# SHORT_SPACE with four epochs: a trial held at 50 % has passed the pruner's first rung (25 %)
HALVING_SPACE = SHORT_SPACE.replace("max_epochs: 2", "max_epochs: 4")


def test_a_trial_killed_after_a_pruner_rung_is_run_again_on_the_rerun(tmp_path: Path, trial_gate: TrialGate) -> None:
    """A SIGKILL in the first trial, once it has set the bar at the pruner's first rung (25%): the rerun runs its
    settings again, to their end, and completes. The dead trial's rung values stay in the study, where Optuna's
    pruners read them, so without the retry every later trial of a small ``--n-trials`` could be pruned and each
    rerun of the same command ended with "all 1 trials failed" and no completed trial."""
    space = tmp_path / "halving.yaml"
    space.write_text(HALVING_SPACE)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "automl_dnn", "search", "builtin:breast_cancer", "--out", str(out),
               "--space", str(space), "--n-trials", "2", "--pruner", "halving", "--cv-folds", "1", "--quiet"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=trial_gate.env(hold=0, hold_step=50))
    try:
        trial_gate.wait_until_held(proc, 0)  # trial 0 is at 50%: its value at the 25% rung is recorded
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        _stop(proc)
    study = open_study(RunDir(out).read_spec(), create=False)
    (killed,) = study.trials
    assert killed.state == TrialState.RUNNING and "completed_rung_0" in killed.system_attrs

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=POLL_LIMIT)
    assert rerun.returncode == 0, rerun.stderr
    study = open_study(RunDir(out).read_spec(), create=False)
    assert study.trials[0].state == TrialState.FAIL
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state == TrialState.COMPLETE, "the retried settings ran to their end"
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2
