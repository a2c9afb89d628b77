"""Shared fixtures and helpers: tiny search spaces, a toy table, one fitted model, the CLI in-process,
a free port, and the trial gate that lets tests on workers and signals wait for states, not for time.

All work is bounded by trial and epoch counts on tiny data, never by wall-clock budgets. A test that
compares wall-clock measurements is marked ``timing`` and left out of the default run.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from automl_dnn.cli import cli


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests train tiny nets: intra-op threads gain nothing there, and on a busy machine their barriers stall."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

#: A net too big for a small memory limit, then a tiny one, twice (the memory guard's tests).
GUARDED_SPACE = """
name: guarded
params:
  n_layers: 4
  d_hidden: {choices: [8, 2048]}
  optimizer: adam
  lr: 0.01
  schedule: none
  batch_size: 64
  max_epochs: 2
  patience: 2
enqueue:
  - {d_hidden: 2048}
  - {d_hidden: 8}
  - {d_hidden: 2048}
  - {d_hidden: 8}
"""

TINY_SPACE = """\
name: tiny
params:
  n_layers: 1
  d_hidden: 8
  optimizer: adam
  lr: 0.01
  schedule: none
  batch_size: 64
  max_epochs: 3
  patience: 3
"""


# Two ranged parameters, two short epochs: a study with history, intermediate values and importances to show.
SHORT_SPACE = """\
name: short
params:
  n_layers: 1
  d_hidden: {type: int, low: 8, high: 16}
  lr: {type: float, low: 1.0e-3, high: 2.0e-3, log: true}
  optimizer: adam
  schedule: none
  batch_size: 64
  max_epochs: 2
  patience: 100
"""

POLL_LIMIT = 300  # seconds: only a safety net for waits on a condition, so a broken build cannot hang CI


def toy_frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Numbers, a category, a date and a string target that depends on them."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n).round(3), rng.normal(size=n).round(3)
    c = rng.choice(["red", "green", "blue"], n)
    d = pd.date_range("2021-01-01", periods=n, freq="D").strftime("%Y-%m-%d")
    y = np.where(a + 0.8 * (c == "red") + rng.normal(scale=0.3, size=n) > 0.3, "yes", "no")
    return pd.DataFrame({"a": a, "b": b, "c": c, "d": d, "y": y})


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def invoke(*args: object) -> Result:
    """Run the CLI in-process; ``result.output`` holds stdout and stderr."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def lines_of(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.strip()]


def assert_one_line_error(result: Result, *needles: str) -> str:
    """Exit status 2, exactly one output line ``error: ...`` naming the problem, no traceback."""
    lines = lines_of(result)
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output!r} ({result.exception!r})"
    assert "Traceback" not in result.output, result.output
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {result.output!r}"
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="session")
def tiny_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


@pytest.fixture(scope="session")
def short_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("space") / "short.yaml"
    path.write_text(SHORT_SPACE)
    return path


@pytest.fixture(scope="session")
def fitted(tmp_path_factory: pytest.TempPathFactory, tiny_space: Path) -> SimpleNamespace:
    """``automl-dnn fit`` once (1 trial, no XGBoost): the data, its run folder and its model folder."""
    root = tmp_path_factory.mktemp("fitted")
    frame = toy_frame()
    data = root / "train.csv"
    frame.to_csv(data, index=False)
    digest = sha256(data)
    result = invoke("fit", data, "--target", "y", "--model", root / "model", "--out", root / "run",
                    "--space", tiny_space, "--n-trials", 1, "--no-gbt", "--quiet")
    assert result.exit_code == 0, result.output
    assert sha256(data) == digest
    return SimpleNamespace(root=root, data=data, frame=frame, run=root / "run", model=root / "model")


def no_trial_completes(monkeypatch: pytest.MonkeyPatch, how: str = "cut short") -> None:
    """The search's worker replaced by one whose one trial does not complete: "cut short" as on a wide table on one
    core (the deadline has passed: pruned), "interrupted" (Ctrl-C) or "failed" (with its reason). Deterministic: the
    deadline is moved, not waited for."""
    from optuna.trial import TrialState

    def run_worker(ctx: Any, *, on_trial: Any, stop: Any, study: Any) -> None:
        trial = study.ask()
        if how == "failed":
            trial.set_user_attr("fail_reason", "diverged: loss nan at epoch 1")
            study.tell(trial, state=TrialState.FAIL)
            return
        if how == "interrupted":
            stop.interrupted = True
        else:
            stop.deadline = time.time() - 1.0
        trial.set_user_attr("cut_short", True)
        study.tell(trial, state=TrialState.PRUNED)

    monkeypatch.setattr("automl_dnn.search.run_worker", run_worker)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def patch_everywhere(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, replacement: Any) -> None:
    """Replace ``module.name``, and the binding of every automl_dnn module that imported it by name."""
    original = getattr(module, name)
    for loaded in list(sys.modules.values()):
        if getattr(loaded, "__name__", "").startswith("automl_dnn") and getattr(loaded, name, None) is original:
            monkeypatch.setattr(loaded, name, replacement)


# --- the trial gate ---------------------------------------------------------------------------------

GATE_SITE = Path(__file__).parent / "trial_gate"  # holds the sitecustomize.py that the gated processes load


class TrialGate:
    """Pauses the trials of the processes a test starts at their first reported epoch (tests/trial_gate).

    ``parties=N``: every process waits in its first trial until N processes are in one, so N workers
    all get trials however fast the first one starts. ``hold=K``: trial K waits until ``release()``,
    so a signal sent after ``wait_until_held`` lands in the middle of that trial.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def variables(self, *, parties: int = 0, hold: int | None = None, hold_step: int = 0) -> dict[str, str]:
        paths = [str(GATE_SITE), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
        variables = {"PYTHONPATH": os.pathsep.join(paths), "AUTOML_DNN_TEST_GATE": str(self.folder)}
        if parties:
            variables["AUTOML_DNN_TEST_GATE_PARTIES"] = str(parties)
        if hold is not None:
            variables["AUTOML_DNN_TEST_GATE_HOLD"] = str(hold)
        if hold_step:
            variables["AUTOML_DNN_TEST_GATE_HOLD_STEP"] = str(hold_step)
        return variables

    def env(self, *, parties: int = 0, hold: int | None = None, hold_step: int = 0) -> dict[str, str]:
        """The environment for ``subprocess``: this one plus the gate's variables (``hold_step``: hold trial
        ``hold`` at its first report at that percent of its planned training or later)."""
        return {**os.environ, **self.variables(parties=parties, hold=hold, hold_step=hold_step)}

    def apply(self, monkeypatch: pytest.MonkeyPatch, *, parties: int = 0, hold: int | None = None) -> None:
        """Gate the processes that this process spawns (``jobs > 1``) until the test ends."""
        for key, value in self.variables(parties=parties, hold=hold).items():
            monkeypatch.setenv(key, value)

    def arrived(self) -> set[int]:
        """The pids of the processes that reached the barrier."""
        return {int(p.name.split("-", 1)[1]) for p in self.folder.glob("arrived-*")}

    def wait_until_held(self, proc: subprocess.Popen, trial: int) -> None:
        """Wait until ``proc`` is paused in trial ``trial``; fail at once if it ends first."""
        deadline = time.monotonic() + POLL_LIMIT
        while not (self.folder / f"held-{trial}").exists():
            if proc.poll() is not None:
                pytest.fail(f"the process ended (exit {proc.returncode}) before trial {trial} started: "
                            f"{proc.stderr.read() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                pytest.fail(f"trial {trial} did not start within {POLL_LIMIT} s")
            time.sleep(0.05)

    def release(self) -> None:
        (self.folder / "release").touch()


@pytest.fixture()
def trial_gate(tmp_path: Path) -> TrialGate:
    folder = tmp_path / "gate"
    folder.mkdir()
    return TrialGate(folder)
