"""Shared fixtures and helpers for the CLI tests: a tiny search space, a toy table, one fitted model.

All work is bounded by trial and epoch counts on tiny data, never by wall-clock budgets.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

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
