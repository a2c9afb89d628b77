"""The model folder and the Predictor: no pickle, verified files, input checks, round trips, MC dropout.

Most tests use a hand-built model (untrained nets with BatchNorm and dropout, a 5-round XGBoost, a
categorical column) saved with ``save_model``: no search needed. The round-trip tests reuse the
searched models of tests/test_ensemble_step.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import pickle
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xgboost as xgb

from automl_dnn import metrics
from automl_dnn.config import NetConfig, TrainConfig, TrialSettings
from automl_dnn.data import FeaturePreprocessor, TargetEncoder, load_dataset
from automl_dnn.ensemble import blend
from automl_dnn.ensemble_step import ensemble_run
from automl_dnn.errors import AutoDNNError, DataError, ModelFormatError
from automl_dnn.files import load_arrays
from automl_dnn.gbt import frame_categories
from automl_dnn.model import build_mlp
from automl_dnn.model_folder import FORMAT_VERSION, GBTMember, NetMember, save_model, write_model_folder
from automl_dnn.predictor import Predictor, _Net, load_model, predict_file
from automl_dnn.run_folder import RunDir, trial_folder
from tests.test_ensemble_step import TASKS, ensembled, searched
from tests.conftest import POLL_LIMIT

PICKLE_OPCODES = (b"\x80",)  # protocol 2+ pickles start with PROTO


# --- a hand-built model -------------------------------------------------------------------------


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "a": rng.normal(size=n),
        "b": rng.normal(size=n) * 10 + 5,
        "color": rng.choice(["red", "green", "blue"], size=n),
    })


def _labels(df: pd.DataFrame) -> np.ndarray:
    return np.where(df["a"] + (df["color"] == "red") > 0.5, "yes", "no")


def _net(settings: TrialSettings, d_in: int, seed: int) -> torch.nn.Module:
    """An untrained net whose BatchNorm has non-trivial running statistics."""
    torch.manual_seed(seed)
    net = build_mlp(settings.net, d_in=d_in, d_out=1)
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(64, d_in) * 2 + 1)
    return net.eval()


def build_tiny_model(model_dir: Path, *, with_gbt: bool = True) -> Path:
    """A binary model ("no"/"yes") on columns a, b, color: two nets (BN before / after + dropout) and XGBoost."""
    train = _frame(300, 0)
    pre = FeaturePreprocessor().fit(train, "standard")
    encoder = TargetEncoder().fit(pd.Series(_labels(train)), "binary")
    nets = []
    for trial, placement in enumerate(("before", "after")):
        settings = TrialSettings(NetConfig(n_layers=2, d_hidden=16, batchnorm=placement, dropout=0.3), TrainConfig())
        net = _net(settings, pre.n_features_, seed=trial)
        nets.append(NetMember(trial=trial, settings=settings.to_dict(), d_in=pre.n_features_, d_out=1,
                              state=net.state_dict(), weight=1.0 + trial))
    gbt = None
    if with_gbt:
        X = pre.transform_for_gbt(train)
        dtrain = xgb.DMatrix(X, encoder.encode(_labels(train)), enable_categorical=True)
        booster = xgb.train({"objective": "binary:logistic", "seed": 0, "nthread": 1}, dtrain, num_boost_round=5)
        gbt = GBTMember(booster=booster, params={"eta": 0.3, "max_depth": 6}, best_iteration=4,
                        categories=frame_categories(X), preprocess="standard", weight=1.0)
    return save_model(model_dir, task="binary", target="label", metric="logloss", target_encoder=encoder.to_dict(),
                      preprocessors={"standard": pre.to_dict()}, nets=nets, gbt=gbt, threshold=0.4,
                      notes=["hand-built for tests"])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> Predictor:
    return load_model(tiny_model)


@pytest.fixture()
def tiny_copy(tiny_model: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model that a test may damage."""
    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


def _rewrite_spec(model_dir: Path, **changes: object) -> None:
    spec = json.loads((model_dir / "model.json").read_text())
    spec.update(changes)
    (model_dir / "model.json").write_text(json.dumps(spec))


def _rehash(model_dir: Path, name: str) -> None:
    """Update model.json's sha256 of ``name`` as an attacker who can edit the whole folder would."""
    spec = json.loads((model_dir / "model.json").read_text())
    spec["files"][name] = hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
    (model_dir / "model.json").write_text(json.dumps(spec))


class _Plant:
    """A pickle payload that creates a marker file when unpickled (torch.load or pickle.load would run it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


# --- the folder ---------------------------------------------------------------------------------


def test_model_json_describes_and_hashes_everything(tiny_model: Path) -> None:
    spec = json.loads((tiny_model / "model.json").read_text())
    assert spec["format_version"] == FORMAT_VERSION and spec["task"] == "binary" and spec["target"] == "label"
    assert spec["classes"] == ["no", "yes"] and spec["threshold"] == 0.4
    assert [c["name"] for c in spec["input_schema"]] == ["a", "b", "color"]
    assert {"torch", "xgboost", "optuna", "automl-dnn", "python"} <= set(spec["versions"])
    assert [m["kind"] for m in spec["members"]] == ["net", "net", "xgboost"]
    assert sorted(spec["files"]) == sorted(p.name for p in tiny_model.iterdir() if p.name != "model.json")
    for name, digest in spec["files"].items():
        assert hashlib.sha256((tiny_model / name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("name", list(TASKS))
def test_exported_folders_hold_no_pickle(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    model, _ = ensembled(name, tmp_path_factory)
    files = [p for p in model.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".ubj"}
    for path in files:
        assert not path.read_bytes().startswith(PICKLE_OPCODES), path
        assert path.suffix not in (".pkl", ".pickle", ".pt", ".pth", ".joblib")


def test_save_replaces_an_old_model_without_leftovers(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "m")
    (model / "stale-file.txt").write_text("from an older model")
    build_tiny_model(tmp_path / "m", with_gbt=False)
    assert not (model / "stale-file.txt").exists() and not (model / "xgboost.ubj").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or backup folder left
    assert len(load_model(model).members) == 2


def test_save_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "notes.txt").write_text("precious")
    # A path in the way: PathError (StorageError before), both AutoDNNError.
    with pytest.raises(AutoDNNError, match="not empty and holds no model.json"):
        write_model_folder(tmp_path / "project", {"model.json": b"{}"})
    assert (tmp_path / "project" / "notes.txt").read_text() == "precious"


# --- refusing bad folders -----------------------------------------------------------------------


def test_tampered_file_is_refused(tiny_copy: Path) -> None:
    path = tiny_copy / "net-00000.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="'net-00000.safetensors' does not match its sha256 .*tampered"):
        load_model(tiny_copy)


def test_missing_file_is_refused(tiny_copy: Path) -> None:
    (tiny_copy / "xgboost.ubj").unlink()
    with pytest.raises(ModelFormatError, match="'xgboost.ubj' is missing"):
        load_model(tiny_copy)


def test_newer_format_is_refused(tiny_copy: Path) -> None:
    _rewrite_spec(tiny_copy, format_version=FORMAT_VERSION + 1)
    with pytest.raises(ModelFormatError, match=f"model format {FORMAT_VERSION + 1} is newer than this automl-dnn "
                                               f"supports \\({FORMAT_VERSION}\\); upgrade automl-dnn"):
        load_model(tiny_copy)


@pytest.mark.parametrize("content, message", [(None, "no model.json"), (b"{not json", "not valid JSON"),
                                              (b'{"format": "other"}', "not an automl-dnn model")])
def test_bad_model_json_is_refused(tiny_copy: Path, content: bytes | None, message: str) -> None:
    if content is None:
        (tiny_copy / "model.json").unlink()
    else:
        (tiny_copy / "model.json").write_bytes(content)
    with pytest.raises(ModelFormatError, match=message):
        load_model(tiny_copy)


def test_file_names_outside_the_folder_are_refused(tiny_copy: Path) -> None:
    spec = json.loads((tiny_copy / "model.json").read_text())
    spec["files"]["../outside.json"] = "0" * 64
    (tiny_copy / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelFormatError, match="invalid file entry"):
        load_model(tiny_copy)


def test_weights_that_do_not_fit_the_config_are_refused(tiny_copy: Path) -> None:
    spec = json.loads((tiny_copy / "model.json").read_text())
    spec["members"][0]["settings"]["net"]["d_hidden"] = 17
    (tiny_copy / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelFormatError, match="does not fit its net config"):
        load_model(tiny_copy)


@pytest.mark.parametrize("field, value", [("n_layers", 10**6), ("d_hidden", 10**9), ("d_in", 10**12)])
def test_a_config_far_bigger_than_its_weights_is_refused_before_its_net_is_built(
        tiny_copy: Path, field: str, value: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model folder from anyone: a hand-set n_layers of 10**6 built a million layers for minutes, a d_hidden of 10**9
    allocated gigabytes, before the strict load of the weights refused them."""
    import automl_dnn.predictor as predictor

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the net was built")

    spec = json.loads((tiny_copy / "model.json").read_text())
    member = next(m for m in spec["members"] if m["kind"] == "net")
    (member if field == "d_in" else member["settings"]["net"])[field] = value
    (tiny_copy / "model.json").write_text(json.dumps(spec))
    monkeypatch.setattr(predictor, "build_mlp", never)
    with pytest.raises(ModelFormatError, match=f"does not fit its net config .*({value} cannot be built|needs)"):
        load_model(tiny_copy)


def test_weights_that_are_not_finite_are_refused(tiny_copy: Path) -> None:
    """NaN weights (an attacker rewrites the file and its sha256) predicted NaN probabilities, read as class 0."""
    from safetensors.torch import load_file, save_file

    spec = json.loads((tiny_copy / "model.json").read_text())
    name = next(m for m in spec["members"] if m["kind"] == "net")["file"]
    state = load_file(tiny_copy / name)
    next(t for t in state.values() if t.is_floating_point()).fill_(float("nan"))
    save_file(state, tiny_copy / name)
    _rehash(tiny_copy, name)
    with pytest.raises(ModelFormatError, match=f"'{name}' holds weights that are NaN or infinite"):
        load_model(tiny_copy)


def _numeric_record(spec: dict) -> dict:
    pre = next(iter(spec["preprocessors"].values()))
    return next(c for c in pre["columns"] if c["kind"] == "numeric")


#: hand edits of model.json (the sha256 of no file changes) -> a phrase of the one-line refusal at load
SPEC_EDITS = {
    "members not records": (lambda spec: spec.update(members=["x"]), "'members' is not a list of records"),
    "members a number": (lambda spec: spec.update(members=5), "'members' is not a list of records"),
    "a class twice": (lambda spec: [spec.update(classes=[spec["classes"][0]] * 2),
                                    spec["target_encoder"].update(classes=[spec["classes"][0]] * 2)], "not distinct"),
    "statistics left out": (lambda spec: _numeric_record(spec).pop("stats"), "KeyError('stats')"),
    "a mean of text": (lambda spec: _numeric_record(spec)["stats"].update(mean="abc", median="abc"), "invalid"),
    "a std of NaN": (lambda spec: _numeric_record(spec)["stats"].update(std=float("nan"), quantiles=[float("nan")] * 3,
                                                                       spread=float("nan")), "NaN or infinite"),
}


@pytest.mark.parametrize("how", list(SPEC_EDITS))
def test_a_damaged_model_json_is_refused_at_load(tiny_copy: Path, how: str) -> None:
    """Each failed at predict time ("internal error: KeyError: 'stats'", "AttributeError: 'str' object has no
    attribute 'get'"), or predicted silently: NaN probabilities, or one class of two named alike."""
    spec = json.loads((tiny_copy / "model.json").read_text())
    edit, phrase = SPEC_EDITS[how]
    edit(spec)
    (tiny_copy / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelFormatError, match=re.escape(phrase)):
        load_model(tiny_copy)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"format_version": 1' + "0" * 5000 + "}"],
                         ids=["nested too deep", "an integer of 5,000 digits"])
def test_a_model_json_python_cannot_parse_is_not_valid_json(tiny_copy: Path, text: str) -> None:
    """RecursionError and the integer-digits limit's ValueError were "internal error"s with a traceback."""
    (tiny_copy / "model.json").write_text(text)
    with pytest.raises(ModelFormatError, match="is not valid JSON"):
        load_model(tiny_copy)


def test_a_booster_of_another_model_is_refused_at_load(tiny_copy: Path, tmp_path: Path) -> None:
    """XGBoost's file swapped for another model's (the sha256 rewritten): predict failed with "internal error:
    ValueError: feature_names mismatch"."""
    other = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(np.eye(4), label=[0, 1, 0, 1],
                                                                    feature_names=["p", "q", "r", "s"]), 2)
    other.save_model(tiny_copy / "xgboost.ubj")
    _rehash(tiny_copy, "xgboost.ubj")
    with pytest.raises(ModelFormatError, match="feature_names mismatch"):
        load_model(tiny_copy)


@pytest.mark.parametrize("keep", [0.0, 0.65, 0.999], ids=["empty", "cut at 65 %", "last bytes cut"])
def test_a_cut_xgboost_file_is_refused_without_crashing_the_process(tiny_copy: Path, keep: float) -> None:
    """XGBoost's parser aborted the process on an empty .ubj ("terminate called without an active exception") and
    segfaulted on some cut ones, their sha256 rewritten; loaded in a child process so that a crash fails this test
    rather than the whole run."""
    import subprocess
    import sys

    data = (tiny_copy / "xgboost.ubj").read_bytes()
    (tiny_copy / "xgboost.ubj").write_bytes(data[:int(len(data) * keep)])
    _rehash(tiny_copy, "xgboost.ubj")
    code = ("import sys\nfrom automl_dnn.errors import ModelFormatError\nfrom automl_dnn.predictor import load_model\n"
            "try:\n    load_model(sys.argv[1])\nexcept ModelFormatError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tiny_copy)], capture_output=True, text=True,
                          timeout=POLL_LIMIT)
    assert done.returncode == 0, done.stderr
    assert "'xgboost.ubj' is not a valid XGBoost model" in done.stdout


def test_the_ubjson_check_takes_whole_boosters_and_refuses_every_cut(tiny_model: Path) -> None:
    from automl_dnn.ubjson import check_ubjson

    data = (tiny_model / "xgboost.ubj").read_bytes()
    check_ubjson(data)
    for end in [*range(0, len(data), max(1, len(data) // 200)), len(data) - 1]:
        with pytest.raises(ValueError):
            check_ubjson(data[:end])
    with pytest.raises(ValueError, match="follow the document's end"):
        check_ubjson(data + b"}")


def _payloads(marker: Path) -> dict[str, bytes]:
    plain = pickle.dumps({"weight": _Plant(marker)})
    buffer = Path(str(marker) + ".pt")
    torch.save({"weight": torch.zeros(2), "extra": _Plant(marker)}, buffer)  # a zip holding a pickle
    return {"pickle": plain, "torch.save": buffer.read_bytes()}


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_the_planted_payload_is_live(tmp_path: Path, kind: str) -> None:
    """Control: unpickling the payload does create the marker, so the refusal tests below mean something."""
    marker = tmp_path / "executed"
    payload = _payloads(marker)[kind]
    if kind == "pickle":
        pickle.loads(payload)
    else:
        (tmp_path / "payload.pt").write_bytes(payload)
        torch.load(tmp_path / "payload.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("target", ["net-00001.safetensors", "xgboost.ubj"])
@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
@pytest.mark.parametrize("rehash", [False, True])
def test_malicious_pickle_is_never_executed(tiny_copy: Path, tmp_path: Path, target: str, kind: str,
                                            rehash: bool) -> None:
    marker = tmp_path / "pwned"
    (tiny_copy / target).write_bytes(_payloads(marker)[kind])
    if rehash:
        _rehash(tiny_copy, target)
    match = "not a valid" if rehash else "does not match its sha256"
    with pytest.raises(ModelFormatError, match=match):
        load_model(tiny_copy)
    assert not marker.exists()


# --- predicting ---------------------------------------------------------------------------------


def test_predict_frame_columns_rows_and_order(tiny: Predictor) -> None:
    df = _frame(50, 1).set_index(pd.Index(np.arange(100, 50, -1)))
    out = tiny.predict_frame(df)
    assert list(out.columns) == ["prediction", "proba_no", "proba_yes"]
    assert len(out) == 50 and out.index.equals(df.index)
    np.testing.assert_allclose(out[["proba_no", "proba_yes"]].sum(axis=1), 1.0, atol=1e-9)
    proba = tiny.predict_proba(df)
    np.testing.assert_array_equal(out["proba_yes"].to_numpy(), proba[:, 1])
    # the stored threshold (0.4) decides, not 0.5
    np.testing.assert_array_equal(tiny.predict(df), np.where(proba[:, 1] >= 0.4, "yes", "no"))
    # rows are predicted independently: one row alone gives the same answer as within the batch
    np.testing.assert_allclose(tiny.predict_proba(df.iloc[[7]]), proba[[7]], rtol=1e-6)


def test_predictions_are_deterministic_across_loads(tiny_model: Path) -> None:
    df = _frame(200, 2)
    first, second = load_model(tiny_model), load_model(tiny_model)
    assert np.array_equal(first.predict_proba(df), second.predict_proba(df))
    assert first.predict_frame(df, mc_samples=4).equals(second.predict_frame(df, mc_samples=4))


def test_mc_dropout_adds_std_columns(tiny: Predictor) -> None:
    df = _frame(40, 3)
    out = tiny.predict_frame(df, mc_samples=8)
    assert list(out.columns) == ["prediction", "proba_no", "proba_yes", "proba_no_std", "proba_yes_std"]
    assert (out[["proba_no_std", "proba_yes_std"]] >= 0).all().all()
    assert out["proba_yes_std"].max() > 0  # the nets have dropout 0.3
    np.testing.assert_allclose(out["proba_no_std"], out["proba_yes_std"], rtol=1e-6, atol=1e-9)
    plain = tiny.predict_frame(df)
    assert np.abs(out["proba_yes"] - plain["proba_yes"]).max() < 0.2  # the MC mean stays near the plain mean


def test_batchnorm_folding_matches_the_trained_net(tiny: Predictor) -> None:
    nets: list[_Net] = tiny._nets
    assert nets[0].fast is not nets[0].model  # "before": folds into the previous Linear
    x = torch.randn(100, nets[0].model[0].linear.in_features)
    for net in nets:
        with torch.no_grad():
            torch.testing.assert_close(net.fast(x), net.model(x), rtol=1e-4, atol=1e-5)


def test_missing_column_is_refused_by_name(tiny: Predictor) -> None:
    with pytest.raises(DataError, match="missing column 'color'"):
        tiny.predict(_frame(5, 4).drop(columns=["color"]))


def test_extra_columns_are_ignored_with_a_note(tiny: Predictor) -> None:
    df = _frame(5, 4)
    expected = tiny.predict_proba(df)
    got = tiny.predict_proba(df.assign(label="yes", other=1.0)[["other", "color", "label", "b", "a"]])
    np.testing.assert_array_equal(got, expected)
    assert any("ignored 2 columns" in note and "'other'" in note for note in tiny.notes)


def test_unseen_category_is_predicted(tiny: Predictor) -> None:
    df = _frame(6, 5)
    df.loc[[0, 3], "color"] = "purple"
    out = tiny.predict_frame(df)
    assert len(out) == 6 and np.isfinite(out[["proba_no", "proba_yes"]].to_numpy()).all()


def test_odd_cells_become_missing_and_are_counted(tiny: Predictor) -> None:
    df = _frame(6, 6).astype({"b": object})
    df.loc[[1, 4], "b"] = "n/a?"
    out = tiny.predict_frame(df)
    assert len(out) == 6 and np.isfinite(out["proba_yes"]).all()
    assert any("'b'" in note and "2 values" in note for note in tiny.notes)


def test_unreadable_column_is_refused(tiny: Predictor) -> None:
    df = _frame(4, 7).astype({"b": object})
    df["b"] = ["low", "high", "mid", "low"]
    with pytest.raises(DataError, match="column 'b' was numbers in training but none of its values"):
        tiny.predict(df)


def test_empty_table_is_refused(tiny: Predictor) -> None:
    with pytest.raises(DataError, match="no rows"):
        tiny.predict(_frame(3, 8).iloc[:0])


def test_predict_proba_is_refused_for_regression(tmp_path_factory: pytest.TempPathFactory) -> None:
    model, _ = ensembled("diabetes", tmp_path_factory)
    with pytest.raises(AutoDNNError, match="predict_proba is for classification"):
        load_model(model).predict_proba(load_dataset("builtin:diabetes").frame("test"))


# --- round trips against the ensemble step ------------------------------------------------------


def _test_part(run: Path) -> tuple[pd.DataFrame, np.ndarray, str]:
    spec = RunDir(run).read_spec()
    dataset = load_dataset(spec["source"], target=spec["target"], task=spec["task"], valid_size=spec["valid_size"],
                           test_size=spec["test_size"], seed=spec["seed"])
    y = dataset.labels("test")
    if dataset.task == "regression":
        y = dataset.target_encoder.decode(y)
    return dataset.frame("test"), y, spec["metric"]


@pytest.mark.parametrize("name", list(TASKS))
def test_round_trip_reproduces_the_ensemble_test_score(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    model, report = ensembled(name, tmp_path_factory)
    predictor = load_model(model)
    frame, y, metric = _test_part(searched(name, tmp_path_factory))
    pred = predictor.predict_proba(frame) if predictor.task != "regression" else predictor.predict(frame)
    assert len(pred) == len(frame)
    assert metrics.score(metric, y, pred) == pytest.approx(report.summary[-1].test, rel=1e-5, abs=1e-7)


def test_round_trip_equals_the_saved_net_predictions(tmp_path_factory: pytest.TempPathFactory,
                                                     tmp_path: Path) -> None:
    """Nets only: the exported model's test probabilities are the weighted blend of the saved ones (not
    bagged, each chosen net is exported as its refit on every training + validation row and as searched)."""
    run = searched("digits", tmp_path_factory)
    ensemble_run(run, model_dir=tmp_path / "m", gbt=False)
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    refits = [m for m in spec["members"] if m["name"].endswith("-refit")]
    assert sorted(m["name"] for m in spec["members"]) == sorted(
        [m["name"] for m in refits] + [m["name"].removesuffix("-refit") for m in refits])

    def saved_test(member: dict) -> np.ndarray:
        if member["name"].endswith("-refit"):
            folder = RunDir(run).root / "bagging" / f"net-{member['trial']:05d}" / "refit"
        else:
            folder = trial_folder(RunDir(run).root / "artifacts", member["trial"])
        return load_arrays(folder / "predictions.safetensors")["test"]

    saved = [saved_test(m) for m in spec["members"]]
    expected = blend(saved, [m["weight"] for m in spec["members"]])
    frame, _, _ = _test_part(run)
    np.testing.assert_allclose(load_model(tmp_path / "m").predict_proba(frame), expected, rtol=1e-4, atol=1e-6)


def test_multiclass_labels_are_the_original_classes(tmp_path_factory: pytest.TempPathFactory) -> None:
    model, _ = ensembled("digits", tmp_path_factory)
    predictor = load_model(model)
    frame, y, _ = _test_part(searched("digits", tmp_path_factory))
    out = predictor.predict_frame(frame)
    assert list(out.columns) == ["prediction"] + [f"proba_{k}" for k in range(10)]
    assert list(predictor.classes_) == list(range(10))
    assert np.mean(out["prediction"].to_numpy() == y) > 0.8


# --- predict_file -------------------------------------------------------------------------------


def test_predict_file_writes_csv_and_parquet(tiny_model: Path, tmp_path: Path) -> None:
    df = _frame(30, 9).assign(label="yes")
    source = tmp_path / "in.csv"
    df.to_csv(source, index=False)
    notes = predict_file(tiny_model, source, out=tmp_path / "out.csv")
    assert any("dropped the target column 'label'" in note for note in notes)
    csv = pd.read_csv(tmp_path / "out.csv")
    predict_file(tiny_model, source, out=tmp_path / "out.parquet")
    parquet = pd.read_parquet(tmp_path / "out.parquet")
    assert list(csv.columns) == list(parquet.columns) == ["prediction", "proba_no", "proba_yes"]
    assert len(csv) == 30
    np.testing.assert_allclose(csv["proba_yes"], parquet["proba_yes"], rtol=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv", "out.parquet"]


def test_a_gzipped_prediction_file_names_itself_in_its_header(tiny_model: Path, tmp_path: Path) -> None:
    """The predictions are written to a hidden temporary file and renamed; its gzip header named that temporary
    (FNAME), which ``gunzip -N`` restores. It names the final file, less .gz, as gzip does."""
    source = tmp_path / "in.csv"
    _frame(20, 3).to_csv(source, index=False)
    for name, sep in (("p.csv.gz", ","), ("p.tsv.gz", "\t")):
        predict_file(tiny_model, source, out=tmp_path / name)
        header = (tmp_path / name).read_bytes()
        assert header[:3] == b"\x1f\x8b\x08" and header[3] & 0x08, "FNAME flag"
        assert header[10:header.index(b"\x00", 10)] == name[:-3].encode()
        out = pd.read_csv(tmp_path / name, sep=sep)
        assert list(out.columns) == ["prediction", "proba_no", "proba_yes"] and len(out) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "p.csv.gz", "p.tsv.gz"]


def test_predict_file_to_stdout_with_mc_samples(tiny_model: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.parquet"
    _frame(5, 10).to_parquet(source)
    predict_file(tiny_model, source, mc_samples=3)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "prediction,proba_no,proba_yes,proba_no_std,proba_yes_std" and len(lines) == 6


def test_predict_file_refuses_an_unknown_extension(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(AutoDNNError, match="unsupported extension"):
        predict_file(tiny_model, "builtin:wine", out=tmp_path / "out.xlsx")


def test_predict_file_reads_builtins(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    model, _ = ensembled("diabetes", tmp_path_factory)
    predict_file(model, "builtin:diabetes", out=tmp_path / "p.csv.gz")
    out = pd.read_csv(tmp_path / "p.csv.gz")
    assert list(out.columns) == ["prediction"] and len(out) == 442


class _Killed(BaseException):
    """Stands for a SIGKILL at that instant: nothing after it runs, no cleanup."""


def test_a_kill_at_any_rename_of_a_re_export_leaves_a_model_folder(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Replacing a model folder swapped it in through a backup: target -> .NAME.old-*, then .NAME.tmp-* ->
    target. A kill between the two renames left no model folder at all (`predict`: "not found"), the old model
    hidden beside it. At every rename the export makes, a kill must leave a folder holding a whole model."""
    import automl_dnn.model_folder as model_folder

    target = tmp_path / "m"
    write_model_folder(target, {"model.json": b'{"v": "old"}', "a.bin": b"old"})
    real = os.replace
    for kill_at in range(1, 4):
        calls = []

        def replace(src: object, dst: object, **kw: object) -> None:
            calls.append((src, dst))
            if len(calls) >= kill_at:  # killed: this rename and every later one never happen
                raise _Killed
            real(src, dst, **kw)

        with monkeypatch.context() as patch:
            patch.setattr(model_folder.os, "replace", replace)
            try:
                write_model_folder(target, {"model.json": b'{"v": "new"}', "a.bin": b"new"})
            except _Killed:
                pass
        assert (target / "model.json").read_bytes() in (b'{"v": "old"}', b'{"v": "new"}'), f"kill at rename {kill_at}"
        assert (target / "a.bin").read_bytes() == (target / "model.json").read_bytes()[7:10]


def test_an_export_removes_a_killed_exports_copies_and_nothing_else(tmp_path: Path) -> None:
    """A kill mid-export left ``.m.tmp-*`` (the new copy) or ``.m.old-*`` (the old model) beside the model folder;
    the next export of ``m`` removes those over an hour old, and no other hidden file of the folder it lies in."""
    import time

    target = tmp_path / "m"
    left = [tmp_path / ".m.tmp-ab12cd_3", tmp_path / ".m.old-zz99yy88"]
    others = [tmp_path / ".vscode.settings", tmp_path / ".m2.tmp-ab12cd_3", tmp_path / ".m.notes"]
    for path in left + others:
        path.mkdir()
        then = time.time() - 2 * 3600
        os.utime(path, (then, then))
    write_model_folder(target, {"model.json": b"{}"})
    assert not any(path.exists() for path in left)
    assert all(path.exists() for path in others)


def _one_member_model(model_dir: Path, kind: str) -> Path:
    """A model of one member: a multiclass XGBoost alone, or a binary net alone."""
    train = _frame(300, 0)
    pre = FeaturePreprocessor().fit(train, "standard")
    if kind == "xgboost":
        labels = np.array(["lo", "mid", "hi"])[np.digitize(train["a"], [-0.5, 0.5])]
        encoder = TargetEncoder().fit(pd.Series(labels), "multiclass")
        X = pre.transform_for_gbt(train)
        dtrain = xgb.DMatrix(X, encoder.encode(labels), enable_categorical=True)
        booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "seed": 0, "nthread": 1}, dtrain,
                            num_boost_round=5)
        gbt = GBTMember(booster=booster, params={}, best_iteration=4, categories=frame_categories(X),
                        preprocess="standard", weight=1.0)
        return save_model(model_dir, task="multiclass", target="label", metric="logloss",
                          target_encoder=encoder.to_dict(), preprocessors={"standard": pre.to_dict()}, nets=[], gbt=gbt)
    encoder = TargetEncoder().fit(pd.Series(_labels(train)), "binary")
    settings = TrialSettings(NetConfig(n_layers=2, d_hidden=16), TrainConfig())
    net = _net(settings, pre.n_features_, seed=0)
    member = NetMember(trial=0, settings=settings.to_dict(), d_in=pre.n_features_, d_out=1, state=net.state_dict(),
                       weight=1.0)
    return save_model(model_dir, task="binary", target="label", metric="logloss", target_encoder=encoder.to_dict(),
                      preprocessors={"standard": pre.to_dict()}, nets=[member], gbt=None)


@pytest.mark.parametrize("kind", ["xgboost", "net"])
def test_a_single_members_probabilities_sum_to_one_in_float64(kind: str, tmp_path: Path) -> None:
    # one member's float32 probabilities summed to 1 only within ~1e-7, beyond scikit-learn's sqrt(eps) check:
    # log_loss(y, model.predict_proba(X)) warned "The y_prob values do not sum to one"
    from sklearn.metrics import log_loss

    predictor = load_model(_one_member_model(tmp_path / "model", kind))
    proba = predictor.predict_proba(_frame(500, 1))
    assert proba.dtype == np.float64
    assert np.abs(proba.sum(axis=1) - 1.0).max() <= 1e-12
    labels = predictor.predict(_frame(500, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_loss(labels, proba, labels=predictor.classes_)
