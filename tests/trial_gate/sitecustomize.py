"""Test-only trial gate: pauses search trials at their first reported epoch, so that the tests on several
workers and on signals wait for observable states instead of guessing how long a trial takes.

Python imports ``sitecustomize`` at start-up from ``sys.path``; the ``trial_gate`` fixture of
tests/conftest.py puts this folder first on PYTHONPATH only for the processes that a test starts (and
for the worker processes those spawn). Without ``AUTOML_DNN_TEST_GATE`` it does nothing.

It wraps ``optuna.trial.Trial.report``, which the search calls with every epoch's validation score:

* ``AUTOML_DNN_TEST_GATE_PARTIES=N`` (a barrier): a process's first report writes ``arrived-<pid>`` in
  the gate folder and waits until N processes have arrived. Each worker is then inside a RUNNING
  trial of its own at the same time, so every one of the N workers gets at least one trial.
* ``AUTOML_DNN_TEST_GATE_HOLD=K`` (a hold): the first report of trial number K writes ``held-K`` (its
  pid) and waits until the test writes ``release``: the test then signals a process known to be in the
  middle of a trial. ``K1,K2,...`` holds each of those trials (in whichever workers run them).
  ``AUTOML_DNN_TEST_GATE_HOLD_STEP=S`` holds it at its first report at step S or later instead (the pruner's
  rungs before S are recorded by then).

Every wait ends after ``LIMIT`` seconds whatever happens, so a broken build fails the test's own
assertions instead of hanging.
"""

from __future__ import annotations

import os

LIMIT = 300.0  # seconds: only a safety net; the conditions are normally met within seconds


def _install(folder: str) -> None:
    import time
    from pathlib import Path

    from optuna.trial import Trial

    gate = Path(folder)
    parties = int(os.environ.get("AUTOML_DNN_TEST_GATE_PARTIES", "0"))
    hold = os.environ.get("AUTOML_DNN_TEST_GATE_HOLD")
    hold_trials = {int(k) for k in hold.split(",")} if hold else set()
    hold_step = int(os.environ.get("AUTOML_DNN_TEST_GATE_HOLD_STEP", "0"))
    state: dict = {"arrived": False, "held": set()}

    def wait_for(condition) -> None:
        deadline = time.monotonic() + LIMIT
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)

    def gate_trial(number: int, step: int) -> None:
        if parties and not state["arrived"]:
            state["arrived"] = True
            (gate / f"arrived-{os.getpid()}").touch()
            wait_for(lambda: len(list(gate.glob("arrived-*"))) >= parties)
        if number in hold_trials and number not in state["held"] and step >= hold_step:
            state["held"].add(number)
            (gate / f"held-{number}").write_text(str(os.getpid()))
            wait_for((gate / "release").exists)

    original = Trial.report

    def report(self: Trial, value: float, step: int) -> None:
        gate_trial(self.number, step)
        return original(self, value, step)

    Trial.report = report  # type: ignore[method-assign]


if os.environ.get("AUTOML_DNN_TEST_GATE"):
    _install(os.environ["AUTOML_DNN_TEST_GATE"])
