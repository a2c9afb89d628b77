"""The report page: one self-contained HTML file on a run, its ensemble and its exported model.

It answers what a user asks after ``fit``: how good is the model (summary, leaderboard), what is in it
(members, settings, learning curves), which features matter (permutation importance) and where it goes
wrong (behaviour on held-out rows, MC-dropout uncertainty), with the Optuna study last. It reads the
run folder (run.json, split.safetensors, preprocess/, ensemble.json, the study) and predicts the run's
held-out rows (its test split, else its validation split) with the exported model, reloading the source
table as the ensemble step does. plotly.js is inlined once; every figure passes ``figures.finish``.
"""

from __future__ import annotations

import html
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import pandas as pd
from optuna import visualization as vis
from optuna.trial import FrozenTrial, TrialState
from plotly.offline import get_plotlyjs
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

from automl_dnn import figures, metrics
from automl_dnn.data import load_dataset
from automl_dnn.errors import AutoDNNError, DataError, MismatchError, first_line
from automl_dnn.files import atomic_write, load_arrays, read_json, remove_stale_temporaries
from automl_dnn.importance import ImportanceCost
from automl_dnn.predictor import Predictor, load_model
from automl_dnn.run_folder import PARTS, RunDir
from automl_dnn.study import open_study

IMPORTANCE_ROWS, IMPORTANCE_REPEATS = 2000, 3
#: Shuffled cells (rows x input columns) at most: a table wider than 20 columns shuffles fewer rows, at least
#: IMPORTANCE_MIN_ROWS (issue 13: 100 columns x 2,000 rows x 3 repeats through a TabM net took 80 s).
IMPORTANCE_CELLS, IMPORTANCE_MIN_ROWS = 40_000, 300
#: Predicted cells at most (shuffled copies x rows x input columns: each copy is the whole table, so the cost grows
#: as the columns squared; 3 shuffles of 300 rows of 1,500 columns are 2e9 cells, a thousand prediction calls, an
#: hour on one core). Tables of up to about 200 columns stay as they were; a wider one gets one shuffle per column,
#: then fewer rows down to IMPORTANCE_WIDE_MIN_ROWS, then its adjacent columns shuffled in groups (past ~630
#: columns), and the page says which.
IMPORTANCE_PREDICTED_CELLS, IMPORTANCE_WIDE_MIN_ROWS = 40_000_000, 100
#: On a time budget (``fit``'s report share), the importance gets this share of the page's time left, at its
#: measured cost (``Predictor.importance_cost``: fixed + per row a prediction call, so a wide tiny table's call,
#: mostly fixed, is not taken for its rows: 45 rows of 1,500 columns said "about 2349 s" for about 30 s of work), and
#: shuffles at least IMPORTANCE_FLOOR_ROWS rows (a 60 s fit of letter: 26 classes, a TabM member, 2,000 rows
#: took 30 s of a 3 s share); measuring it takes at most IMPORTANCE_PILOT_SHARE of that share (two calls at least).
IMPORTANCE_TIME_SHARE, IMPORTANCE_FLOOR_ROWS, IMPORTANCE_PILOT_SHARE = 0.6, 100, 0.1
#: ... unless even one shuffle of that floor would take more than IMPORTANCE_SKIP_FACTOR x the page's time left
#: and more than IMPORTANCE_SKIP_SECONDS: then the page says so and skips it (a 60 s fit of a 1,000-row table
#: of 100 columns, its ensemble a bagged TabM, spent 8.1 s of a 3 s page on 100 rows x 1 shuffle).
IMPORTANCE_SKIP_FACTOR, IMPORTANCE_SKIP_SECONDS = 2.0, 3.0
MC_SAMPLES, MC_ROWS, MC_BINS = 20, 2000, 10
CALIBRATION_BINS = 10
#: Held-out rows the page predicts at most, a seeded sample beyond (issue 13: a large table's 150,000 test rows,
#: predicted by the model and again by each member, took minutes); its figures show 5,000 points a trace.
REPORT_ROWS = 20_000
MAX_CLASS_CURVES = 10  # ROC / PR curves of at most this many classes (the most frequent)
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

@dataclass
class Section:
    id: str
    title: str
    parts: list[Any] = field(default_factory=list)  # HTML strings and plotly figures, in order


@dataclass
class HeldOut:
    """The run's held-out rows: features, class indices (or values) and the target as the user wrote it."""

    part: str  # "test" | "valid"
    frame: pd.DataFrame
    y: np.ndarray
    labels: np.ndarray
    of: int = 0  # the part's rows, when ``frame`` is a sample of them (REPORT_ROWS)


@dataclass
class RunView:
    """What the page reads once from the run folder and the model folder."""

    run: RunDir
    spec: dict[str, Any]
    split: dict[str, int]
    preprocess: dict[str, Any] | None
    ensemble: dict[str, Any] | None
    study: optuna.Study | None
    trials: dict[int, FrozenTrial]
    model_dir: Path | None
    predictor: Predictor | None
    held_out: HeldOut | None
    missing: list[str] = field(default_factory=list)  # why a part of the page is left out
    seconds: dict[str, float] = field(default_factory=dict)  # what building the page cost
    deadline: float | None = None  # time.perf_counter() by which the page should be done (fit's report share)


# --- the page ---------------------------------------------------------------------------------


def write_report_page(run_dir: Path, path: Path, *, model_dir: Path | None = None, seed: int = 0,
                      time_budget: float | None = None) -> Path:
    """Write the report page of ``run_dir`` (with ``model_dir``, else the model its ensemble.json names);
    on a ``time_budget`` its permutation importance shuffles as many rows as fit the time left."""
    started = time.perf_counter()
    view = read_run(Path(run_dir), model_dir)
    view.deadline = None if time_budget is None else started + time_budget
    prediction = _predict_held_out(view)
    body = [leaderboard_section(view, prediction), behaviour_section(view, prediction),
            importance_section(view, seed), learning_curves_section(view), uncertainty_section(view),
            study_section(view)]
    view.seconds["page"] = time.perf_counter() - started
    page = render_page(view, [summary_section(view)] + body)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    remove_stale_temporaries(path.parent, of=[path.name])  # a killed write's megabytes
    return path


def read_run(run_dir: Path, model_dir: Path | None) -> RunView:
    """The run's spec, split sizes, preprocessing, ensemble report, study, model and held-out rows."""
    run = RunDir(run_dir)
    spec = run.read_spec()
    missing: list[str] = []
    split = _split_sizes(run)
    keys = run.preprocess_keys()
    preprocess = read_json(run.preprocess_path(keys[0])) if keys else None
    ensemble = read_json(run.ensemble_path) if run.ensemble_path.is_file() else None
    study, trials = _study(spec, missing)
    model_dir = _model_dir(run, ensemble, model_dir, missing)
    predictor = load_model(model_dir) if model_dir is not None else None
    if predictor is not None:
        check_model_matches(predictor, spec, run, model_dir)
    held_out = _held_out(run, spec, missing) if predictor is not None else None
    if held_out is not None and predictor is not None:
        _check_columns(predictor, held_out, run, model_dir)
    return RunView(run=run, spec=spec, split=split, preprocess=preprocess, ensemble=ensemble, study=study,
                   trials=trials, model_dir=model_dir, predictor=predictor, held_out=held_out, missing=missing)


def _split_sizes(run: RunDir) -> dict[str, int]:
    if not run.split_path.is_file():
        return {}
    arrays = load_arrays(run.split_path)
    return {part: int(len(arrays[part])) for part in PARTS if part in arrays}


def _study(spec: dict[str, Any], missing: list[str]) -> tuple[optuna.Study | None, dict[int, FrozenTrial]]:
    try:
        study = open_study(spec, create=False)
    except AutoDNNError as exc:
        missing.append(f"the study cannot be opened ({first_line(exc)})")
        return None, {}
    return study, {t.number: t for t in study.get_trials(deepcopy=False)}


def _model_dir(run: RunDir, ensemble: dict[str, Any] | None, given: Path | None, missing: list[str]) -> Path | None:
    """The model to describe: the one given, else the one the last ensemble step exported, if it is there."""
    if given is not None:
        return Path(given)  # load_model refuses a folder that is not a model, in one line
    places = ([Path(ensemble["model_dir"])] if ensemble and ensemble.get("model_dir") else []) + [run.root / "model"]
    for place in places:
        if (place / "model.json").is_file():
            return place
    missing.append("no exported model: run `automl-dnn ensemble RUN` (or pass --model MODEL) for the leaderboard's "
                   "predict times, the behaviour on held-out rows, the feature importance and the uncertainty")
    return None


def check_model_matches(predictor: Predictor, spec: dict[str, Any], run: RunDir, model_dir: Path | None) -> None:
    """Refuse a model of another run: other task, target or classes."""
    where = f"model {str(model_dir)!r} and run {str(run.root)!r}"
    if predictor.task != spec["task"] or predictor.target != spec["target"]:
        raise MismatchError(f"{where} do not belong together: the model predicts {predictor.target!r} "
                            f"({predictor.task}), the run searched {spec['target']!r} ({spec['task']}); "
                            "pass the model this run exported")
    if spec["task"] != "regression" and [str(c) for c in predictor.classes_] != [str(c) for c in spec["classes"]]:
        raise MismatchError(f"{where} do not belong together: their classes differ; pass the model this run exported")


def _check_columns(predictor: Predictor, held_out: HeldOut, run: RunDir, model_dir: Path | None) -> None:
    absent = [c for c in predictor.required_columns if c not in held_out.frame.columns]
    if absent:
        raise MismatchError(f"model {str(model_dir)!r} reads column(s) {', '.join(map(repr, absent[:5]))} that the "
                            f"data of run {str(run.root)!r} lacks; pass the model this run exported")


def _held_out(run: RunDir, spec: dict[str, Any], missing: list[str]) -> HeldOut | None:
    """The test rows (else the validation rows) of the source table, as the search split it."""
    if spec["source"] == "<DataFrame>":
        missing.append("the held-out rows are not available: the search ran on an in-memory DataFrame that the run "
                       "folder could not keep")
        return None
    try:
        dataset = load_dataset(spec["source"], target=spec["target"], task=spec["task"],
                               valid_size=spec["valid_size"], test_size=spec["test_size"], seed=spec["seed"])
    except DataError as exc:
        missing.append(f"the held-out rows cannot be read again ({first_line(exc)}); restore {spec['source']!r}")
        return None
    if dataset.fingerprint() != spec["data_fingerprint"]:
        missing.append(f"the held-out rows are left out: {spec['source']!r} changed since the search")
        return None
    split = load_arrays(run.split_path)
    part = "test" if len(split["test"]) else "valid"
    rows = split[part].astype(np.int64)
    of = len(rows)
    if of > REPORT_ROWS:  # issue 13: a large table's page predicts a sample (twice: the model, then each member)
        rows = np.sort(np.random.default_rng(spec["seed"]).choice(rows, REPORT_ROWS, replace=False))
    y = dataset.y[rows]
    return HeldOut(part=part, frame=dataset.features.iloc[rows].reset_index(drop=True), y=y,
                   labels=dataset.target_encoder.decode(y), of=of if of > len(rows) else 0)


# --- summary ----------------------------------------------------------------------------------


def summary_section(view: RunView) -> Section:
    """The data, the split, the budget and where it went, and the final scores."""
    spec = view.spec
    facts = [("data", html.escape(_source_name(spec["source"]))),
             ("target", f"{html.escape(str(spec['target']))} ({spec['task']}: {html.escape(spec.get('task_rule', ''))})"),
             ("rows", _rows_text(view.split)),
             ("columns", _columns_text(view.preprocess)),
             ("metric", f"{spec['metric']} ({'higher' if spec['direction'] == 'maximize' else 'lower'} is better)"),
             ("split", _split_text(view)),
             ("search", _search_text(view)),
             ("ensemble step", _seconds_text((view.ensemble or {}).get("seconds", {}))),
             ("this page", _seconds_text(view.seconds))]
    parts = [_facts_table(facts), _scores_text(view)]
    notes = list((view.ensemble or {}).get("notes", [])) + list(spec.get("notes", []))
    warnings_ = list((view.ensemble or {}).get("warnings", []))
    parts += [f"<p class='warn'>warning: {html.escape(w)}</p>" for w in warnings_]
    parts += [f"<p class='missing'>{html.escape(m)}</p>" for m in view.missing]
    if notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in dict.fromkeys(notes))
        parts.append(f"<details><summary>notes ({len(notes)})</summary><ul>{items}</ul></details>")
    return Section("summary", "Summary", parts)


def _source_name(source: str) -> str:
    if source == "<DataFrame>" or Path(source).name == "source.parquet":
        return "an in-memory DataFrame" + (" (kept in the run as source.parquet)" if source != "<DataFrame>" else "")
    return source if source.startswith("builtin:") else Path(source).name


def _rows_text(split: dict[str, int]) -> str:
    if not split:
        return "-"
    parts = ", ".join(f"{split[p]:,} {p}" for p in PARTS if p in split)
    return f"{sum(split.values()):,} with a target ({parts})"


def _columns_text(preprocess: dict[str, Any] | None) -> str:
    if preprocess is None:
        return "-"
    kinds: dict[str, int] = {}
    for column in preprocess.get("columns", []):
        kinds[column["kind"]] = kinds.get(column["kind"], 0) + 1
    dropped = [str(d.get("name", d)) if isinstance(d, dict) else str(d) for d in preprocess.get("dropped", [])]
    text = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none used"
    if dropped:
        shown = ", ".join(dropped[:5]) + (", ..." if len(dropped) > 5 else "")
        text += f"; {len(dropped)} dropped ({html.escape(shown)})"
    return text


def _split_text(view: RunView) -> str:
    spec, folds = view.spec, int((view.ensemble or {}).get("folds", 1))
    text = f"valid {spec['valid_size']:g}, test {spec['test_size']:g}, seed {spec['seed']}"
    if spec.get("cv_folds", 1) > 1:
        text += f"; trials scored by {spec['cv_folds']}-fold cross-validation"
    if folds > 1:
        text += f"; ensemble fitted on out-of-fold predictions ({folds} folds)"
    if not view.split.get("test"):
        text += "; <b>no test split</b> (--test-size 0)"
    return text


def _search_text(view: RunView) -> str:
    trials = list(view.trials.values())
    if not trials:
        return "-"
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    text = (f"{len(trials)} trials: {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
            f"{counts[TrialState.FAIL]} failed")
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    if starts and ends:
        spent = {s.name.lower(): sum(_trial_seconds(t) for t in trials if t.state == s) for s in counts}
        text += (f"; {(max(ends) - min(starts)).total_seconds():.0f} s from first start to last end; trial time "
                 + ", ".join(f"{v:.0f} s {k}" for k, v in spent.items() if v))
    return text


def _trial_seconds(trial: FrozenTrial) -> float:
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return 0.0


# What the ensemble step's timings are: in ``fit`` XGBoost trains in a thread beside the search, so the
# step's "gbt" is only the wait for that thread (often 0), not XGBoost's fit time (the leaderboard's).
SECONDS_LABELS = {"gbt": "wait for XGBoost"}


def _seconds_text(seconds: dict[str, float]) -> str:
    return ", ".join(f"{SECONDS_LABELS.get(k, k)} {_duration(v)}" for k, v in seconds.items()
                     if v is not None) or "-"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def _scores_text(view: RunView) -> str:
    ensemble = view.ensemble
    if not ensemble or not ensemble.get("summary"):
        return "<p>No ensemble yet: run <code>automl-dnn ensemble RUN</code> for the final scores.</p>"
    final = ensemble["summary"][-1]
    inner = "out-of-fold" if int(ensemble.get("folds", 1)) > 1 else "validation"
    text = f"<p class='score'>{html.escape(final['name'])}: {ensemble['metric']} {_fmt(final['valid'])} ({inner})"
    if ensemble.get("has_test"):
        text += f", {_fmt(final['test'])} (test)</p>"
    else:
        text += (f".</p><p>There is no test split (--test-size 0): every row trained, and the scores are "
                 f"{inner} only.</p>")
    return text


def _facts_table(facts: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    return f"<table class='facts'>{rows}</table>"


# --- leaderboard ------------------------------------------------------------------------------


@dataclass
class Prediction:
    """The exported model on the held-out rows: its output, its labels, and how long each member took."""

    mean: np.ndarray  # probabilities (n, K) or values (n,)
    labels: np.ndarray  # class indices predicted (threshold applied), or values
    seconds: float
    member_seconds: dict[str, float]


def _predict_held_out(view: RunView) -> Prediction | None:
    predictor, held = view.predictor, view.held_out
    if predictor is None or held is None:
        return None
    started = time.perf_counter()
    frame = predictor.predict_frame(held.frame)
    seconds = time.perf_counter() - started
    if predictor.task == "regression":
        mean = frame["prediction"].to_numpy(dtype=np.float64)
        labels = mean
    else:
        mean = frame[[c for c in frame.columns if c.startswith("proba_")]].to_numpy(dtype=np.float64)
        labels = pd.Index(list(predictor.classes_)).get_indexer(frame["prediction"].tolist())
    view.seconds["held-out prediction"] = seconds
    return Prediction(mean=mean, labels=labels, seconds=seconds, member_seconds=_member_seconds(predictor, held))


def _member_seconds(predictor: Predictor, held: HeldOut) -> dict[str, float]:
    """Predict seconds per leaderboard row: a bagged net's fold models are summed under its trial's name."""
    by_member = predictor.member_seconds(held.frame)
    out: dict[str, float] = {}
    for member in predictor.spec["members"]:
        name = member["name"] if member["kind"] != "net" else f"net-{int(member['trial']):05d}"
        out[name] = out.get(name, 0.0) + by_member.get(member["name"], 0.0)
    return out


def leaderboard_section(view: RunView, prediction: Prediction | None) -> Section:
    """Every candidate and the summary rows: kind, settings, inner and test score, weight, fit and predict time."""
    ensemble = view.ensemble
    if not ensemble:
        return Section("leaderboard", "Leaderboard", ["<p>No ensemble yet: run <code>automl-dnn ensemble RUN"
                                                     "</code>.</p>"])
    inner = "oof" if int(ensemble.get("folds", 1)) > 1 else "valid"
    seconds = prediction.member_seconds if prediction else {}
    header = ["model", "kind", "settings", f"{ensemble['metric']} {inner}", f"{ensemble['metric']} test", "weight",
              "fit s", "predict s"]
    rows = []
    for m in ensemble["members"]:
        trial = view.trials.get(m["trial"]) if m.get("trial") is not None else None
        fit_s = trial.user_attrs.get("train_seconds") if trial is not None else None
        if m.get("fit_seconds") is not None:  # XGBoost's search, and the fold copies of a bagged member
            fit_s = (fit_s or 0.0) + m["fit_seconds"]
        rows.append([m["name"], m["kind"], m["description"], m["valid"], m["test"], m["weight"], fit_s,
                     seconds.get(m["name"])])
    for s in ensemble["summary"]:
        ensemble_row = s is ensemble["summary"][-1]
        rows.append([s["name"], "ensemble" if ensemble_row else "summary", "", s["valid"], s["test"], None, None,
                     prediction.seconds if (prediction and ensemble_row) else None])
    held = f" on {len(view.held_out.y):,} {view.held_out.part} rows" if view.held_out else ""
    note = (f"<p class='small'>Click a column to sort. {inner}: the score the weights were fitted on; fit s: the "
            f"search trial's training (a bagged net trains once per fold on top); predict s: the exported member"
            f"{held}, preprocessing included (a bagged net: its fold models together); weight 0: a candidate the "
            "ensemble did not select.</p>")
    return Section("leaderboard", "Leaderboard", [_sortable_table(header, rows, ensemble["direction"]), note])


def _sortable_table(header: list[str], rows: list[list[Any]], direction: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for value in row:
            sort = "" if _missing(value) else (f"{value:.12g}" if isinstance(value, (int, float)) else str(value))
            cells.append(f"<td data-v='{html.escape(sort, quote=True)}'>{html.escape(_fmt(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table class='sortable' data-direction='{direction}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _fmt(value: Any, digits: int = 4) -> str:
    if _missing(value):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4) else f"{value:.{digits}f}"


# --- behaviour on held-out rows ---------------------------------------------------------------


def behaviour_section(view: RunView, prediction: Prediction | None) -> Section:
    section = Section("behaviour", "Behaviour on held-out rows")
    if prediction is None or view.held_out is None or view.predictor is None:
        section.parts.append("<p class='missing'>Not available: " + html.escape("; ".join(view.missing) or
                                                                              "no held-out rows") + "</p>")
        return section
    held, predictor = view.held_out, view.predictor
    section.parts.append(_held_out_text(view, prediction))
    if predictor.task == "regression":
        section.parts += [figures.predicted_vs_actual(held.labels.astype(np.float64), prediction.mean),
                          figures.residuals(prediction.mean, held.labels.astype(np.float64) - prediction.mean)]
    else:
        classes = [str(c) for c in predictor.classes_]
        section.parts.append(figures.confusion_matrix(classes, confusion(held.y, prediction.labels, len(classes))))
        curves = class_curves(held.y, prediction.mean, classes)
        if curves:
            section.parts += [figures.roc_curves([(n, fpr, tpr, auc) for n, fpr, tpr, auc, *_ in curves]),
                              figures.pr_curves([(n, r, p, ap) for n, *_, r, p, ap in curves])]
        section.parts.append(figures.calibration(*reliability(held.y, prediction.mean), what=_calibration_what(classes)))
    return section


def _held_out_text(view: RunView, prediction: Prediction) -> str:
    held, predictor = view.held_out, view.predictor
    assert held is not None and predictor is not None
    scores = metrics.all_scores(predictor.task, _metric_y(predictor, held), prediction.mean, predictor.threshold)
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in scores.items())
    where = ("the test split" if held.part == "test" else
             "the validation split (there is no test split; the ensemble's weights, and after k-fold bagging its "
             "members, were fitted on these rows, so this view is optimistic)")
    threshold = f"; decision threshold {predictor.threshold:.3f}" if predictor.threshold is not None else ""
    sample = f" (a seeded sample of its {held.of:,})" if held.of else ""
    return (f"<p>The exported model on {len(held.y):,} rows of {where}{sample}: {shown}{threshold}. "
            f"Model folder: <code>{html.escape(str(view.model_dir))}</code>.</p>")


def _metric_y(predictor: Predictor, held: HeldOut) -> np.ndarray:
    return held.labels.astype(np.float64) if predictor.task == "regression" else held.y


def confusion(y: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true, predicted) class pairs; sums to the number of rows."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def class_curves(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> list[tuple]:
    """(name, fpr, tpr, auc, recall, precision, ap) for the positive class (binary) or each of the most
    frequent classes one-vs-rest (multiclass); classes absent from the rows are skipped."""
    if len(classes) == 2:
        chosen = [1]
    else:
        chosen = [int(k) for k in np.argsort(-np.bincount(y, minlength=len(classes)))[:MAX_CLASS_CURVES]]
    curves = []
    for k in chosen:
        positive = np.asarray(y) == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, proba[:, k])
        precision, recall, _ = precision_recall_curve(positive, proba[:, k])
        auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
        curves.append((classes[k], fpr, tpr, auc, recall, precision, float(average_precision_score(positive, proba[:, k]))))
    return curves


def reliability(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binned mean predicted probability, observed frequency and rows per bin: of the positive class
    (binary), or of the predicted class being right (multiclass: confidence against accuracy)."""
    if proba.shape[1] == 2:
        p, hit = proba[:, 1], (np.asarray(y) == 1)
    else:
        p, hit = proba.max(axis=1), proba.argmax(axis=1) == np.asarray(y)
    bins = np.minimum((p * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
    counts = np.bincount(bins, minlength=CALIBRATION_BINS)
    used = counts > 0
    mean_p = np.bincount(bins, weights=p, minlength=CALIBRATION_BINS)[used] / counts[used]
    observed = np.bincount(bins, weights=hit.astype(np.float64), minlength=CALIBRATION_BINS)[used] / counts[used]
    return mean_p, observed, counts[used]


def _calibration_what(classes: list[str]) -> str:
    return f"class {classes[1]}" if len(classes) == 2 else "confidence of the predicted class"


# --- feature importance -----------------------------------------------------------------------


def importance_bounds(n_columns: int, n_rows: int) -> tuple[int, int, int]:
    """(rows, shuffles, columns per group) of the importance of ``n_columns`` columns on ``n_rows`` held-out rows
    without a time limit: IMPORTANCE_REPEATS shuffles a column on up to IMPORTANCE_ROWS rows (fewer past 20
    columns), and on a table so wide that they would predict more than IMPORTANCE_PREDICTED_CELLS, one shuffle,
    fewer rows, then groups of adjacent columns."""
    rows = max(2, min(n_rows, max(IMPORTANCE_MIN_ROWS, min(IMPORTANCE_ROWS, IMPORTANCE_CELLS // n_columns))))
    if predicted_cells(rows, n_columns, IMPORTANCE_REPEATS) <= IMPORTANCE_PREDICTED_CELLS:
        return rows, IMPORTANCE_REPEATS, 1
    fit = IMPORTANCE_PREDICTED_CELLS // ((n_columns + 1) * n_columns)
    rows = max(min(rows, IMPORTANCE_WIDE_MIN_ROWS), min(rows, fit))
    if predicted_cells(rows, n_columns, 1) <= IMPORTANCE_PREDICTED_CELLS:
        return rows, 1, 1
    groups = max(1, IMPORTANCE_PREDICTED_CELLS // (rows * n_columns) - 1)  # - 1: the unshuffled pass
    return rows, 1, math.ceil(n_columns / groups)


def predicted_cells(rows: int, n_columns: int, repeats: int, group_size: int = 1) -> int:
    """The cells an importance predicts: its shuffled copies and the unshuffled rows, each of every column."""
    return (repeats * math.ceil(n_columns / group_size) + 1) * rows * n_columns


def importance_rows_in_time(seconds_left: float, cost: ImportanceCost, n_columns: int,
                            repeats: int = IMPORTANCE_REPEATS, max_rows: int = IMPORTANCE_ROWS,
                            group_size: int = 1) -> int:
    """The most rows (up to ``max_rows``) whose ``repeats`` shuffles of every column (and one unshuffled pass) the
    model predicts in IMPORTANCE_TIME_SHARE of the page's time left at ``cost``, at least IMPORTANCE_FLOOR_ROWS."""
    share = IMPORTANCE_TIME_SHARE * max(seconds_left, 0.0)
    low = min(IMPORTANCE_FLOOR_ROWS, max_rows)
    high = max(low, max_rows)
    while low < high:  # the cost grows with the rows, in steps where a call stacks fewer copies
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost.seconds(mid, n_columns, repeats, group_size) <= share else (low, mid - 1)
    return low


def importance_plan(seconds_left: float, cost: ImportanceCost, n_columns: int, max_rows: int = IMPORTANCE_ROWS,
                    repeats: int = IMPORTANCE_REPEATS, group_size: int = 1) -> tuple[int, int]:
    """(rows, shuffles per column) of the importance in the page's time left: ``repeats`` shuffles while their
    floor of rows fits, else one (a 60 s fit of a 1,000-row table of 100 columns spent 11.6 s of its 3 s page on
    3 shuffles of 100 rows)."""
    floor = min(IMPORTANCE_FLOOR_ROWS, max_rows)
    if cost.seconds(floor, n_columns, repeats, group_size) > IMPORTANCE_TIME_SHARE * max(seconds_left, 0.0):
        repeats = 1
    return importance_rows_in_time(seconds_left, cost, n_columns, repeats, max_rows, group_size), repeats


def floor_seconds_over(seconds_left: float, cost: ImportanceCost, n_columns: int,
                       max_rows: int = IMPORTANCE_ROWS, group_size: int = 1) -> float | None:
    """The seconds one shuffle of IMPORTANCE_FLOOR_ROWS would take, when that is too long to spend on a time
    budget (IMPORTANCE_SKIP_FACTOR x the time left, and IMPORTANCE_SKIP_SECONDS); else None."""
    seconds = cost.seconds(min(IMPORTANCE_FLOOR_ROWS, max_rows), n_columns, 1, group_size)
    too_long = seconds > IMPORTANCE_SKIP_FACTOR * max(seconds_left, 0.0) and seconds > IMPORTANCE_SKIP_SECONDS
    return seconds if too_long else None


def importance_section(view: RunView, seed: int) -> Section:
    section = Section("importance", "Feature importance")
    predictor, held = view.predictor, view.held_out
    if predictor is None or held is None:
        section.parts.append("<p class='missing'>Not available: no model or no held-out rows (see the summary).</p>")
        return section
    # issue 13: a wide table shuffles fewer rows, so the page's cost stays about that of 20 columns x 2,000 rows
    n_columns = max(1, len(predictor.required_columns))
    rows, repeats, group_size = importance_bounds(n_columns, len(held.frame))
    wide = repeats < IMPORTANCE_REPEATS or group_size > 1
    if view.deadline is not None:
        planned = _importance_in_time(view, predictor, held, seed, n_columns, rows, repeats, group_size)
        if isinstance(planned, str):
            section.parts.append(planned)
            return section
        rows, repeats = planned
    table = predictor.feature_importance(held.frame.assign(**{predictor.target: held.labels}), target=predictor.target,
                                         repeats=repeats, max_rows=rows, seed=seed, group_size=group_size)
    view.seconds["importance"] = table.attrs["seconds"]
    metric = table.attrs["metric"]
    section.parts.append(f"<p>Permutation importance of the exported model on {table.attrs['rows']:,} "
                         f"{held.part} rows, {table.attrs['repeats']} shuffle{'s' if table.attrs['repeats'] > 1 else ''} "
                         f"per column: how much {metric} "
                         f"gets worse (baseline {_fmt(table.attrs['baseline'])}) when a column's values are "
                         f"shuffled; the bar is the mean, the whisker one standard deviation. Took "
                         f"{_duration(table.attrs['seconds'])}.</p>")
    if wide:
        section.parts.append(_wide_importance_note(n_columns, table.attrs))
    shown = table.head(40)
    section.parts.append(figures.importance_bars(shown["feature"].tolist(), shown["importance"].to_numpy(),
                                                 shown["std"].to_numpy(), metric))
    rows = [[r.feature, r.importance, r.std] for r in table.itertuples()]
    section.parts.append(_sortable_table(["feature", f"importance ({metric})", "std"], rows, "maximize"))
    return section


def _wide_importance_note(n_columns: int, attrs: dict[str, Any]) -> str:
    """What a wide table's importance left out to stay within IMPORTANCE_PREDICTED_CELLS, and how to get it all."""
    if attrs["group_size"] > 1:
        groups = math.ceil(n_columns / attrs["group_size"])
        what = (f"its {n_columns:,} columns were shuffled in {groups:,} groups of {attrs['group_size']} adjacent "
                "columns (a group's importance is that of its columns together), once each")
    else:
        what = f"each of its {n_columns:,} columns was shuffled once, not {IMPORTANCE_REPEATS} times (no spread)"
    return (f"<p class='small'>A wide table: {what}, on {attrs['rows']:,} rows, so that the page predicts at most "
            f"about {IMPORTANCE_PREDICTED_CELLS:,} cells (every shuffled copy is the whole table); "
            "<code>automl-dnn importance MODEL DATA --target Y</code> ranks every column with the rows and shuffles "
            "you choose.</p>")


def _importance_in_time(view: RunView, predictor: Predictor, held: HeldOut, seed: int, n_columns: int, rows: int,
                        repeats: int, group_size: int) -> tuple[int, int] | str:
    """(rows, shuffles per column) that fit the page's time left, from the importance's measured cost; or the
    paragraph that says why it is not computed, when even one shuffle of its floor of rows is far too long."""
    assert view.deadline is not None
    started = time.perf_counter()
    share = IMPORTANCE_TIME_SHARE * max(view.deadline - started, 0.0)
    cost = predictor.importance_cost(held.frame, rows=min(IMPORTANCE_FLOOR_ROWS, rows),
                                     seconds=IMPORTANCE_PILOT_SHARE * share, seed=seed)
    view.seconds["importance cost"] = time.perf_counter() - started
    seconds_left = view.deadline - time.perf_counter()
    over = floor_seconds_over(seconds_left, cost, n_columns, rows, group_size)
    if over is None:
        return importance_plan(seconds_left, cost, n_columns, rows, repeats, group_size)
    floor = min(IMPORTANCE_FLOOR_ROWS, rows)
    calls = cost.calls(floor, n_columns, 1, group_size)
    groups = f" in {math.ceil(n_columns / group_size)} groups" if group_size > 1 else ""
    return (f"<p class='missing'>Not computed within the fit's budget: one shuffle of {n_columns} columns{groups} on "
            f"{floor} rows would take about {_duration(over)} ({calls} prediction calls, "
            f"measured at {_duration(cost.fixed)} a call + {_duration(cost.per_row * 1000)} per 1,000 rows) and "
            f"{_duration(max(seconds_left, 0.0))} were left; <code>automl-dnn report</code> on the run folder "
            "computes it without a budget.</p>")


# --- learning curves --------------------------------------------------------------------------


def learning_curves_section(view: RunView) -> Section:
    section = Section("learning-curves", "Learning curves")
    numbers, which = _chosen_trials(view)
    curves = [_curve(view.trials[n]) for n in numbers if n in view.trials]
    curves = [c for c in curves if c["valid"] or c["train"]]
    if not curves:
        section.parts.append(f"<p class='missing'>No learning curve recorded for {which}.</p>")
        return section
    section.parts.append(f"<p>{which[0].upper() + which[1:]} during their search trial: validation metric and "
                         "training loss per epoch; the star marks the best epoch, whose weights the trial kept.</p>")
    section.parts.append(figures.learning_curves(curves, view.spec["metric"]))
    return section


def _chosen_trials(view: RunView) -> tuple[list[int], str]:
    """The nets the ensemble selected (weight > 0), else the best five trials; and those words."""
    if view.ensemble:
        chosen = [m["trial"] for m in view.ensemble["members"] if m["kind"] == "net" and m["weight"] > 0]
        if chosen:
            return chosen, "the ensemble's nets"
    complete = [t for t in view.trials.values() if t.state == TrialState.COMPLETE and t.value is not None]
    complete.sort(key=lambda t: t.value, reverse=view.spec["direction"] == "maximize")
    which = "the best trials' nets" + (" (the ensemble gives no net a weight)" if view.ensemble else "")
    if not complete:  # ``fit``'s budget ended before any trial completed: the model is XGBoost alone
        which = "any net: no trial of the search completed"
    return [t.number for t in complete[:5]], which


def _curve(trial: FrozenTrial) -> dict[str, Any]:
    return {"name": f"net-{trial.number:05d}", "valid": list(trial.user_attrs.get("learning_curve") or []),
            "train": list(trial.user_attrs.get("train_loss_curve") or []),
            "best_epoch": trial.user_attrs.get("best_epoch")}


# --- MC-dropout uncertainty -------------------------------------------------------------------


def uncertainty_section(view: RunView) -> Section:
    section = Section("uncertainty", "MC-dropout uncertainty")
    predictor, held = view.predictor, view.held_out
    if predictor is None or held is None:
        section.parts.append("<p class='missing'>Not available: no model or no held-out rows (see the summary).</p>")
        return section
    dropout = predictor.dropout_nets()
    if not dropout:
        section.parts.append("<p>Omitted: no net of the ensemble uses dropout, so MC dropout has no spread to "
                             "show.</p>")
        return section
    started = time.perf_counter()
    keep = figures.thin(len(held.y), MC_ROWS)
    frame = predictor.predict_frame(held.frame.iloc[keep].reset_index(drop=True), mc_samples=MC_SAMPLES)
    std, error, what = _std_and_error(predictor, frame, held.y[keep], held.labels[keep])
    view.seconds["mc dropout"] = time.perf_counter() - started
    centers, errors, counts = binned(std, error, MC_BINS)
    rho = pd.Series(std).rank().corr(pd.Series(error).rank())
    section.parts.append(f"<p>{MC_SAMPLES} MC-dropout passes over {len(keep):,} {held.part} rows. Nets with "
                         f"dropout: {html.escape(', '.join(dropout))}; the other members add no spread. Rank "
                         f"correlation of std and error: {_fmt(float(rho))}.</p>")
    section.parts.append(figures.uncertainty(centers, errors, counts, what))
    return section


def _std_and_error(predictor: Predictor, frame: pd.DataFrame, y: np.ndarray,
                   labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Per row: the std of the prediction and its error (regression: |error|; classification: the std of
    the true class's probability and 1 minus that probability)."""
    if predictor.task == "regression":
        prediction = frame["prediction"].to_numpy(dtype=np.float64)
        return frame["prediction_std"].to_numpy(dtype=np.float64), np.abs(labels.astype(np.float64) - prediction), \
            "absolute error"
    names = [f"proba_{label}" for label in predictor.classes_.tolist()]
    proba = frame[names].to_numpy(dtype=np.float64)
    std = frame[[f"{n}_std" for n in names]].to_numpy(dtype=np.float64)
    rows = np.arange(len(y))
    return std[rows, y], 1.0 - proba[rows, y], "1 - probability of the true class"


def binned(x: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean x, mean y and count per quantile bin of x (equal rows per bin; ties may merge bins)."""
    order = np.argsort(x, kind="stable")
    groups = [g for g in np.array_split(order, min(n_bins, len(x))) if len(g)]
    return (np.array([x[g].mean() for g in groups]), np.array([y[g].mean() for g in groups]),
            np.array([len(g) for g in groups]))


# --- the study --------------------------------------------------------------------------------


def study_section(view: RunView) -> Section:
    """Optimization history, intermediate values, hyperparameter importances and the best configs."""
    section = Section("study", "The study")
    study, spec = view.study, view.spec
    if study is None:
        section.parts.append("<p class='missing'>The study cannot be opened (see the summary).</p>")
        return section
    complete = [t for t in view.trials.values() if t.state == TrialState.COMPLETE and t.value is not None]
    section.parts.append(f"<p>Study {html.escape(spec['study_name'])}: {len(view.trials)} trials, {len(complete)} "
                         f"complete; metric {spec['metric']} ({spec['direction']}).</p>")
    plots: list[tuple[str, Callable[[], Any]]] = [
        ("Optimization history", lambda: vis.plot_optimization_history(study)),
        ("Validation metric by percent of planned training", lambda: vis.plot_intermediate_values(study)),
        ("Hyperparameter importances", lambda: vis.plot_param_importances(study)),
    ]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "does not contain completed trials": the page says so
    try:
        for title, make in plots:
            section.parts.append(f"<h3>{title}</h3>")
            try:
                with warnings.catch_warnings():  # importances on few trials warn once per parameter
                    warnings.simplefilter("ignore")
                    section.parts.append(figures.finish(make()))
            except Exception as exc:  # e.g. importances need >= 2 complete trials
                section.parts.append(f"<p class='missing'>not available: {html.escape(first_line(exc))}</p>")
    finally:
        optuna.logging.set_verbosity(verbosity)
    best = sorted(complete, key=lambda t: t.value, reverse=spec["direction"] == "maximize")[:10]
    rows = "".join(f"<tr><td>{t.number}</td><td>{t.value:.6g}</td><td><code>{html.escape(json.dumps(t.params))}"
                   "</code></td></tr>" for t in best)
    section.parts.append(f"<h3>Best configs</h3><table class='plain'><tr><th>trial</th><th>{spec['metric']}</th>"
                         f"<th>params</th></tr>{rows}</table>")
    return section


# --- rendering --------------------------------------------------------------------------------


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 28px;z-index:10}
nav a{margin-right:16px;color:#1f3b57;text-decoration:none;font-weight:600}
main{max-width:1200px;margin:0 auto;padding:0 28px 40px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:18px 0;padding:10px 20px}
h2{color:#1f3b57}table{border-collapse:collapse;margin:8px 0;font-size:14px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
table.sortable th{cursor:pointer;background:#eef2f6}table.sortable th:hover{background:#dde6ef}
table.facts th{background:#eef2f6;width:140px}.missing{color:#8a5a00}.warn{color:#b00}
.small{font-size:12px;color:#555}.score{font-size:18px;font-weight:600}code{font-size:12px}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute('data-order') !== 'asc';
    th.setAttribute('data-order', asc ? 'asc' : 'desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[i].getAttribute('data-v'), y = b.cells[i].getAttribute('data-v');
      if (x === '' || y === '') { return (x === '') - (y === ''); }
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def render_page(view: RunView, sections: list[Section]) -> str:
    """The whole page: plotly.js once in the head, then the sections with their figures."""
    title = f"automl-dnn report: {view.spec['study_name']}"
    nav = "".join(f"<a href='#{s.id}'>{html.escape(s.title)}</a>" for s in sections)
    counter = iter(range(10**6))
    body = "".join(_render_section(s, counter) for s in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style>"
            f"<script type='text/javascript' id='plotly-js'>{get_plotlyjs()}</script></head><body>"
            f"<header><h1>{html.escape(title)}</h1></header><nav>{nav}</nav><main>{body}</main>"
            f"<script>{_SORT_JS}</script></body></html>")


def _render_section(section: Section, counter: Any) -> str:
    parts = []
    for part in section.parts:
        if isinstance(part, str):
            parts.append(part)
        else:
            parts.append(part.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG,
                                      div_id=f"figure-{next(counter)}", default_width="100%"))
    return f"<section id='{section.id}'><h2>{html.escape(section.title)}</h2>{''.join(parts)}</section>"


__all__ = ["RunView", "Section", "binned", "check_model_matches", "class_curves", "confusion",
           "read_run", "reliability", "write_report_page"]
