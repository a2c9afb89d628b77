"""Disk faults: a full disk (ENOSPC, EDQUOT, SQLite's "database or disk is full") is one line, never a traceback.

What was written before stays intact (finished trials, their artifacts, the previous model folder), and
the same command rerun after space is freed continues. Two ways to fill a disk: a small tmpfs mounted
for the test and filled for real (these machines run as root; without permission to mount, those tests
skip), and ENOSPC injected at the write call, which runs everywhere.
"""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState

import automl_dnn.run_folder as run_folder
import automl_dnn.storage as storage_module
from automl_dnn.errors import DiskFullError, disk_full_error, is_disk_full
from automl_dnn.files import atomic_write, write_json
from automl_dnn.model_folder import write_model_folder
from automl_dnn.run_folder import RunDir
from automl_dnn.storage import RetryingStorage, is_connection_error
from automl_dnn.study import open_study
from tests.conftest import POLL_LIMIT, TrialGate, assert_one_line_error, invoke, toy_frame

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def _raise(exc: BaseException) -> Any:
    """A write that fails with ``exc``."""
    raise exc


# --- a small disk ---------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test, unmounted after it."""
    folder = tmp_path / "disk"
    folder.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                                 capture_output=True, text=True)
        why = mounted.stderr.strip() or f"mount exited {mounted.returncode}"
    except OSError as exc:  # no mount command
        mounted, why = None, str(exc)
    if mounted is None or mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({why}); the injected-ENOSPC tests of this file cover the same code")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # a file still open: detach


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; removing it frees the space."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


# --- helpers ----------------------------------------------------------------------------------------


def _search(out: Path, data: Path, space: Path, n_trials: int) -> list[Any]:
    return ["search", data, "--target", "y", "--out", out, "--space", space, "--n-trials", n_trials,
            "--cv-folds", 1, "--pruner", "none", "--quiet"]


def _states(out: Path) -> dict[int, tuple[TrialState, float | None]]:
    """Each trial's state and value, read straight from the SQLite file, read-only."""
    with closing(sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT t.number, t.state, v.value FROM trials t "
                            "LEFT JOIN trial_values v ON v.trial_id = t.trial_id ORDER BY t.number").fetchall()
    return {number: (TrialState[state], value) for number, state, value in rows}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    """Temporary files or folders a write left behind (every one starts with a dot)."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".trial-slot.lock"]


@pytest.fixture()
def table(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    toy_frame().to_csv(path, index=False)
    return path


# --- the search ---------------------------------------------------------------------------------------


def test_full_disk_while_a_trial_saves_its_artifacts_fails_it_and_stops_in_one_line(
        tmp_path: Path, table: Path, tiny_space: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC injected at trial 2's weights file: that trial ends FAILED with its reason, the search stops
    with one line (every next trial would fail alike), trials 0-1 keep their values and artifacts, and the
    rerun after space is freed continues to the exact total."""
    out = tmp_path / "run"
    real_save, disk = run_folder.save_tensors, {"full": True}

    def save_tensors(tensors: dict[str, Any], path: str) -> None:
        if disk["full"] and ".trial-00002." in path:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real_save(tensors, path)

    monkeypatch.setattr(run_folder, "save_tensors", save_tensors)
    line = assert_one_line_error(invoke(*_search(out, table, tiny_space, 4)), "disk full while writing",
                                 "trial-00002", "free space and rerun the same command")
    assert f"{out / 'artifacts' / 'trial-00002'}:" in line, "names the trial's folder, not a temporary one"
    states = _states(out)
    assert [s for s, _ in states.values()] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL], "no trial after it"
    study = open_study(RunDir(out).read_spec(), create=False)
    assert study.trials[2].user_attrs["fail_reason"].startswith("DiskFullError: disk full while writing")
    kept = {n: _snapshot(Path(study.trials[n].user_attrs["artifacts"])) for n in (0, 1)}
    assert all(len(files) == 3 for files in kept.values())
    assert _hidden(out / "artifacts") == [] and sorted(p.name for p in (out / "artifacts").iterdir()) == [
        "trial-00000", "trial-00001"]

    disk["full"] = False  # space freed: the same command continues
    result = invoke(*_search(out, table, tiny_space, 4))
    assert result.exit_code == 0, result.output
    after = _states(out)
    assert sum(s == TrialState.COMPLETE for s, _ in after.values()) == 4 and len(after) == 5
    assert all(after[n] == states[n] for n in (0, 1)), "finished trials unchanged"
    assert all(_snapshot(out / "artifacts" / f"trial-0000{n}") == kept[n] for n in (0, 1))


def test_a_really_full_disk_mid_trial_is_one_line_and_the_rerun_continues(
        small_disk: Path, tmp_path: Path, table: Path, tiny_space: Path, trial_gate: TrialGate) -> None:
    """A tmpfs filled while trial 2 runs: the study's SQLite file cannot take the trial's next report (or
    its artifacts their files). One line, exit 2; the rerun after freeing fails that trial (never left
    RUNNING) and continues to the total, the trials before it intact."""
    out = small_disk / "run"
    command = [sys.executable, "-m", "automl_dnn", *map(str, _search(out, table, tiny_space, 4))]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=trial_gate.env(hold=2))
    try:
        trial_gate.wait_until_held(proc, 2)  # trials 0 and 1 are done, trial 2 is in its first epoch
        filler = fill(small_disk)
        trial_gate.release()
        _, err = proc.communicate(timeout=POLL_LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: disk full while writing "), err
    assert lines[0].endswith("free space and rerun the same command"), err
    before = _states(out)
    assert [before[n][0] for n in (0, 1)] == [TrialState.COMPLETE] * 2 and before[2][0] != TrialState.COMPLETE
    kept = {n: _snapshot(out / "artifacts" / f"trial-0000{n}") for n in (0, 1)}

    filler.unlink()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=POLL_LIMIT)
    assert rerun.returncode == 0, rerun.stderr
    after = _states(out)
    assert after[2][0] == TrialState.FAIL and TrialState.RUNNING not in [s for s, _ in after.values()]
    assert sum(s == TrialState.COMPLETE for s, _ in after.values()) == 4
    assert all(after[n] == before[n] for n in (0, 1))
    assert all(_snapshot(out / "artifacts" / f"trial-0000{n}") == kept[n] for n in (0, 1))
    assert _hidden(out / "artifacts") == [] and _hidden(out) == []


def test_a_full_disk_before_the_search_starts_keeps_run_json_and_says_so(
        small_disk: Path, table: Path, tiny_space: Path) -> None:
    """A resumed search rewrites run.json first: on a full disk that is the one line, the old file intact."""
    out = small_disk / "run"
    assert invoke(*_search(out, table, tiny_space, 1)).exit_code == 0
    spec = (out / "run.json").read_bytes()
    filler = fill(small_disk)
    assert_one_line_error(invoke(*_search(out, table, tiny_space, 2)), "disk full while writing", "run.json")
    assert (out / "run.json").read_bytes() == spec and _hidden(out) == []
    filler.unlink()
    assert invoke(*_search(out, table, tiny_space, 2)).exit_code == 0
    assert [s for s, _ in _states(out).values()] == [TrialState.COMPLETE] * 2


# --- the model export ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, tiny_space: Path) -> tuple[Path, Path]:
    """A run folder with 2 trials (on the ordinary disk) and its table."""
    root = tmp_path_factory.mktemp("searched")
    data = root / "train.csv"
    toy_frame().to_csv(data, index=False)
    result = invoke(*_search(root / "run", data, tiny_space, 2))
    assert result.exit_code == 0, result.output
    return root / "run", data


def _ensemble(run: Path, model: Path, top_k: int) -> list[Any]:
    return ["ensemble", run, "--model", model, "--top-k", top_k, "--no-gbt", "--folds", 1, "--quiet"]


def _export_fails_and_keeps_the_old_model(run: Path, data: Path, model: Path, out: Path,
                                          make_full: Any, make_free: Any) -> None:
    """The shared body: export, fill, export again (fails), check the old folder, free, export again."""
    assert invoke(*_ensemble(run, model, 1)).exit_code == 0
    old = _snapshot(model)
    make_full()
    assert_one_line_error(invoke(*_ensemble(run, model, 2)), "disk full while writing", str(model),
                          "free space and rerun the same command")
    assert _snapshot(model) == old, "the previous model folder is byte-identical"
    assert _hidden(model.parent) == [], "no temporary folder left beside it"
    predicted = invoke("predict", model, data, "--out", out)
    assert predicted.exit_code == 0 and out.stat().st_size > 0, predicted.output
    make_free()
    result = invoke(*_ensemble(run, model, 2))
    assert result.exit_code == 0, result.output
    assert invoke("predict", model, data, "--out", out).exit_code == 0


def test_a_really_full_disk_during_export_keeps_the_previous_model(
        small_disk: Path, tmp_path: Path, searched: tuple[Path, Path]) -> None:
    run, data = searched
    state: dict[str, Path] = {}
    _export_fails_and_keeps_the_old_model(run, data, small_disk / "model", tmp_path / "preds.csv",
                                          lambda: state.update(filler=fill(small_disk)),
                                          lambda: state["filler"].unlink())


def test_enospc_injected_during_export_keeps_the_previous_model(
        tmp_path: Path, searched: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same without a mount: ENOSPC at the second file the export writes (a half-written new folder)."""
    run, data = searched
    model = tmp_path / "models" / "model"
    real, disk = Path.write_bytes, {"full": False, "written": 0}

    def write_bytes(self: Path, content: bytes) -> int:
        if disk["full"] and ".model.tmp-" in str(self):
            disk["written"] += 1
            if disk["written"] >= 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, content)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    _export_fails_and_keeps_the_old_model(run, data, model, tmp_path / "preds.csv",
                                          lambda: disk.update(full=True), lambda: disk.update(full=False))
    assert disk["written"] >= 2, "the failure hit the export midway"


# --- the write helpers ----------------------------------------------------------------------------------


def test_atomic_write_and_trial_folders_on_a_full_disk_keep_what_was_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.json"
    write_json(path, {"old": 1})
    with pytest.raises(DiskFullError, match=r"disk full while writing .*run\.json: free space"):
        atomic_write(path, lambda tmp: _raise(ENOSPC))
    assert path.read_text() == '{\n  "old": 1\n}' and _hidden(tmp_path) == []
    with pytest.raises(DiskFullError, match="disk quota exceeded while writing"):
        atomic_write(path, lambda tmp: _raise(OSError(errno.EDQUOT, "Disk quota exceeded")))

    fold = tmp_path / "bagging" / "trial-00000" / "fold1"
    monkeypatch.setattr(run_folder, "write_arrays", lambda *args: _raise(ENOSPC))
    with pytest.raises(DiskFullError, match=r"fold1: free space"):
        run_folder.save_trial_folder(fold, state={}, config={}, predictions={})
    assert list(fold.parent.iterdir()) == [], "no temporary folder left"

    model = tmp_path / "model"
    write_model_folder(model, {"model.json": b"{}"})
    monkeypatch.setattr(Path, "write_bytes", lambda self, content: _raise(ENOSPC))
    with pytest.raises(DiskFullError, match="the model folder"):
        write_model_folder(model, {"model.json": b"{...}", "net.safetensors": b"x"})
    assert (model / "model.json").read_bytes() == b"{}" and _hidden(tmp_path) == []


def test_what_counts_as_a_full_disk() -> None:
    """The errno, and the texts of the libraries that drop it: safetensors, SQLite (through SQLAlchemy)."""
    assert is_disk_full(OSError(errno.ENOSPC, "x")) and is_disk_full(OSError(errno.EDQUOT, "x"))
    assert is_disk_full(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"))
    sqlite_full = sqlite3.OperationalError("database or disk is full")
    wrapped = type("DBError", (Exception,), {})("(sqlite3.OperationalError) database or disk is full")
    wrapped.orig = sqlite_full
    assert is_disk_full(sqlite_full) and is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied")) and not is_disk_full(ValueError("x"))
    error = disk_full_error(wrapped, "the study")
    assert str(error) == "disk full while writing the study: free space and rerun the same command"
    inner = DiskFullError.writing("a/trial-00003")
    try:
        try:
            raise inner
        except DiskFullError:
            raise sqlite_full
    except sqlite3.OperationalError as exc:
        assert disk_full_error(exc, "the study") is inner, "the exact file an inner write named wins"


# --- a database server whose disk is full --------------------------------------------------------------


def _server_disk_full_errors() -> list[BaseException]:
    """What SQLAlchemy raises for PostgreSQL's disk_full: by SQLSTATE (psycopg's ``sqlstate``, psycopg2's
    ``pgcode``), and by the server's words alone."""
    from sqlalchemy.exc import OperationalError

    psycopg = pytest.importorskip("psycopg")
    words = 'could not extend file "base/16384/16385": No space left on device'
    by_psycopg = OperationalError("INSERT INTO trial_values ...", {}, psycopg.errors.DiskFull(words))
    psycopg2_like = type("OperationalError", (Exception,), {"pgcode": "53100"})("could not write to file")
    by_psycopg2 = OperationalError("UPDATE trials ...", {}, psycopg2_like)
    by_words = OperationalError("INSERT INTO trials ...", {}, Exception('could not extend file "base/1/2"'))
    return [by_psycopg, by_psycopg2, by_words]


def test_a_server_disk_full_is_a_disk_full_error_not_an_outage() -> None:
    errors = _server_disk_full_errors()
    assert all(is_disk_full(e) and not is_connection_error(e) for e in errors)
    from sqlalchemy.exc import OperationalError

    out_of_memory = type("OperationalError", (Exception,), {"pgcode": "53200"})("out of memory")
    assert not is_disk_full(OperationalError("SELECT 1", {}, out_of_memory)), "only 53100 is a full disk"


def test_a_server_disk_full_stops_at_once_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The storage call that meets it is tried once, with no retry sleep and no outage note."""
    sleeps: list[float] = []
    monkeypatch.setattr(storage_module.time, "sleep", sleeps.append)
    for error in _server_disk_full_errors():
        calls: list[int] = []

        class FullServer(InMemoryStorage):
            def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
                calls.append(step)
                if len(calls) > 1:  # a retry: end it here (not a connection error) rather than wait the window
                    raise AssertionError("retried")
                raise error

        study = optuna.create_study(storage=RetryingStorage(FullServer(), name="postgresql://db", window=30))
        trial = study.ask()
        with pytest.raises(DiskFullError) as raised:
            trial.report(0.5, step=1)
        assert str(raised.value) == ("disk full while writing the study in postgresql://db: "
                                     "free space and rerun the same command")
        assert calls == [1], "tried once: no retry"
    assert sleeps == [] and "note:" not in capsys.readouterr().err


def test_a_written_file_gets_the_umask_s_permissions_or_keeps_the_old_file_s(tmp_path: Path) -> None:
    """Not tempfile's 0600: a prediction file is readable by whom the user's umask lets read new files."""
    import os
    import stat

    import numpy as np

    from automl_dnn.files import atomic_write, save_arrays

    path = tmp_path / "pred.csv"
    old_mask = os.umask(0o027)
    try:
        atomic_write(path, lambda tmp: tmp.write_text("a\n1\n"))
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.chmod(0o600)  # a file the user made private stays private when it is written again
    atomic_write(path, lambda tmp: tmp.write_text("a\n2\n"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "a\n2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pred.csv"]  # no temporary file left
    arrays = tmp_path / "split.safetensors"  # safetensors' save_file made its files 0600 whatever the umask
    old_mask = os.umask(0o027)
    try:
        save_arrays(arrays, {"train": np.arange(3)})
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(arrays.stat().st_mode) == 0o640


def test_a_model_folder_and_a_trials_folder_get_the_umask_s_permissions_or_keep_the_old_ones(tmp_path: Path) -> None:
    """Not tempfile.mkdtemp's 0700: a model folder renamed into place was one nobody else could read (a model shared
    on a team's disk, a trial's artifacts read by another user's worker)."""
    import os
    import stat

    import torch

    from automl_dnn.run_folder import save_trial

    model = tmp_path / "m"
    old_mask = os.umask(0o027)
    try:
        write_model_folder(model, {"model.json": b"{}"})
        trial = save_trial(tmp_path / "artifacts", 0, state={"w": torch.zeros(1)}, config={}, predictions={})
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(model.stat().st_mode) == 0o750 == stat.S_IMODE(trial.stat().st_mode)
    # and the files in it: safetensors' save_file made them 0600 (trial weights another user's worker could not read)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in trial.iterdir()} == {
        "weights.safetensors": 0o640, "config.json": 0o640, "predictions.safetensors": 0o640}
    model.chmod(0o700)  # a model the user made private stays private when it is exported again
    write_model_folder(model, {"model.json": b"{ }"})
    assert stat.S_IMODE(model.stat().st_mode) == 0o700 and (model / "model.json").read_bytes() == b"{ }"
