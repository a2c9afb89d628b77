"""The report page (issue 12): its sections, the leaderboard, the held-out behaviour, permutation importance,
the page's rules (plotly.js once, SVG traces only), the terminal tables, and one-line errors.

Runs are tiny and bounded by trial and epoch counts: a binary table with a planted informative column and a
planted noise column (a DataFrame source, so the run keeps source.parquet), and a regression run with
--test-size 0.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import pytest
from rich.console import Console

from automl_dnn import api
from automl_dnn import budget as budget_module, figures, importance, report, report_page
from automl_dnn.errors import DataError, MismatchError
from automl_dnn.files import load_arrays, read_json
from automl_dnn.importance import ImportanceCost
from automl_dnn.run_folder import RunDir
from tests.conftest import assert_one_line_error, invoke, lines_of

SECTIONS = ("summary", "leaderboard", "behaviour", "importance", "learning-curves", "uncertainty", "study")

DROPOUT_SPACE = """\
name: dropout
params:
  n_layers: 1
  d_hidden: {type: int, low: 8, high: 16}
  dropout: 0.2
  optimizer: adam
  lr: 0.01
  schedule: none
  batch_size: 64
  max_epochs: 4
  patience: 4
"""

PLAIN_SPACE = DROPOUT_SPACE.replace("name: dropout", "name: plain").replace("dropout: 0.2", "dropout: 0.0")


def planted_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """``signal`` decides the label, ``noise`` is unrelated to it; ``colour`` helps a little."""
    rng = np.random.default_rng(seed)
    signal, noise = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    y = np.where(signal + 0.3 * (colour == "red") + rng.normal(scale=0.2, size=n) > 0, "pos", "neg")
    return pd.DataFrame({"signal": signal, "noise": noise, "colour": colour, "y": y})


def _space(folder: Path, text: str, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A fitted binary run (nets with dropout + XGBoost, no bagging) and its report page."""
    root = tmp_path_factory.mktemp("binary")
    frame = planted_frame()
    api.fit(frame, target="y", model_dir=root / "model", out=root / "run",
            space=str(_space(root, DROPOUT_SPACE, "dropout")), n_trials=2, pruner="none", gbt_trials=1, threads=1,
            folds=1, cv_folds=1, quiet=True, progress=False, report_page=True)
    page = api.report_path_for(root / "model")  # fit wrote it
    return SimpleNamespace(root=root, frame=frame, run=root / "run", model=root / "model", page=page,
                           html=page.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def no_test_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A regression run with --test-size 0, nets without dropout, and its report page."""
    root = tmp_path_factory.mktemp("regression")
    api.fit("builtin:diabetes", model_dir=root / "model", out=root / "run", test_size=0.0,
            space=str(_space(root, PLAIN_SPACE, "plain")), n_trials=2, pruner="none", gbt_trials=1, threads=1,
            folds=1, cv_folds=1, quiet=True, progress=False)
    page = api.write_report(root / "run", out=root / "page.html")
    return SimpleNamespace(root=root, run=root / "run", model=root / "model", page=page,
                           html=page.read_text(encoding="utf-8"))


def _section(page: str, name: str) -> str:
    match = re.search(rf"<section id='{name}'>(.*?)</section>", page, flags=re.S)
    assert match, f"section {name!r} missing"
    return match.group(1)


def _without_plotly_js(page: str) -> str:
    return re.sub(r"<script type='text/javascript' id='plotly-js'>.*?</script>", "", page, count=1, flags=re.S)


def _figures_of(section: report_page.Section) -> list[go.Figure]:
    return [part for part in section.parts if isinstance(part, go.Figure)]


# --- the page -------------------------------------------------------------------------------------


def test_every_section_is_present(binary_run: SimpleNamespace) -> None:
    for name in SECTIONS:
        body = _section(binary_run.html, name)
        assert "Not available" not in body, f"{name}: {body[:300]}"
    summary = _section(binary_run.html, "summary")
    assert "rows" in summary and "numeric" in summary and "categorical" in summary and "logloss" in summary
    assert "(test)" in summary and "(validation)" in summary


def test_plotly_js_is_inlined_once_and_every_trace_is_svg(binary_run: SimpleNamespace) -> None:
    page = binary_run.html
    assert page.count("plotly.js v") == 1
    assert page.count("<script type='text/javascript' id='plotly-js'>") == 1
    rest = _without_plotly_js(page)
    assert "scattergl" not in rest.lower()
    assert "src=" not in rest  # self-contained: no script or image fetched from elsewhere
    assert rest.count("Plotly.newPlot") >= 8  # confusion, ROC, PR, calibration, importance, curves, MC, study


def test_the_leaderboard_holds_every_member_with_its_weight(binary_run: SimpleNamespace) -> None:
    ensemble = read_json(RunDir(binary_run.run).ensemble_path)
    board = _section(binary_run.html, "leaderboard")
    rows = re.findall(r"<tr>(.*?)</tr>", board, flags=re.S)
    cells = {re.sub(r"<.*?>", "", row.split("</td>")[0]): re.findall(r">([^<]*)</td>", row) for row in rows}
    assert {m["name"] for m in ensemble["members"]} <= set(cells)
    assert {"xgboost"} <= set(cells) and any(name.startswith("net-") for name in cells)
    for member in ensemble["members"]:
        assert cells[member["name"]][5] == report_page._fmt(member["weight"])
        if member["weight"] > 0:  # an exported member: its predict time was measured on the held-out rows
            assert cells[member["name"]][7] != "-"
    assert "weighted ensemble" in cells
    assert "class='sortable'" in board


def test_the_confusion_matrix_sums_to_the_held_out_rows(binary_run: SimpleNamespace) -> None:
    view = report_page.read_run(binary_run.run, None)
    section = report_page.behaviour_section(view, report_page._predict_held_out(view))
    heatmaps = [t for fig in _figures_of(section) for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 1
    n_test = len(load_arrays(RunDir(binary_run.run).split_path)["test"])
    assert int(np.asarray(heatmaps[0].z).sum()) == n_test == len(view.held_out.y)
    titles = " ".join(fig.layout.title.text for fig in _figures_of(section))
    assert "ROC" in titles and "Precision-recall" in titles and "Calibration" in titles


def test_permutation_importance_ranks_the_planted_signal_above_the_noise(binary_run: SimpleNamespace) -> None:
    model = api.load(binary_run.model)
    table = model.feature_importance(binary_run.frame, target="y", repeats=3, max_rows=2000, seed=0)
    ranked = table["feature"].tolist()
    assert set(ranked) == {"signal", "noise", "colour"}
    assert ranked.index("signal") < ranked.index("noise")
    assert table.set_index("feature").loc["signal", "importance"] > 0.1
    assert {"importance", "std", "repeat_1", "repeat_3"} <= set(table.columns)
    assert table.attrs["rows"] == len(binary_run.frame) and table.attrs["metric"] == "logloss"
    page = _section(binary_run.html, "importance")
    assert page.index(">signal<") < page.index(">noise<")


def test_importance_takes_at_most_max_rows_and_refuses_a_table_without_the_target(
        binary_run: SimpleNamespace) -> None:
    model = api.load(binary_run.model)
    table = model.feature_importance(binary_run.frame, repeats=1, max_rows=50, seed=1)
    assert table.attrs["rows"] == 50 and (table["std"] == 0).all()
    with pytest.raises(DataError, match="no target column 'label'"):
        model.feature_importance(binary_run.frame, target="label")


def test_learning_curves_and_mc_dropout_are_drawn(binary_run: SimpleNamespace) -> None:
    curves = _section(binary_run.html, "learning-curves")
    assert "best epoch" in curves and "Plotly.newPlot" in curves
    mc = _section(binary_run.html, "uncertainty")
    assert "Plotly.newPlot" in mc and "MC-dropout passes" in mc


def test_the_page_works_without_a_test_split(no_test_run: SimpleNamespace) -> None:
    page = no_test_run.html
    for name in SECTIONS:
        _section(page, name)
    summary = _section(page, "summary")
    assert "no test split" in summary.lower() and "(test)" not in summary
    behaviour = _section(page, "behaviour")
    assert "validation split" in behaviour and "Predicted vs actual" in behaviour and "Residuals" in behaviour
    assert "Omitted: no net of the ensemble uses dropout" in _section(page, "uncertainty")
    importance = _section(page, "importance")
    assert "rmse gets worse" in importance and "Plotly.newPlot" in importance
    assert page.count("plotly.js v") == 1 and "scattergl" not in _without_plotly_js(page).lower()


def test_multiclass_behaviour_has_one_curve_per_class(tmp_path: Path) -> None:
    api.fit("builtin:wine", model_dir=tmp_path / "model", out=tmp_path / "run", gbt=False,
            space=str(_space(tmp_path, PLAIN_SPACE, "plain")), n_trials=1, pruner="none", threads=1, folds=1,
            cv_folds=1, quiet=True, progress=False)
    view = report_page.read_run(tmp_path / "run", None)
    section = report_page.behaviour_section(view, report_page._predict_held_out(view))
    by_title = {fig.layout.title.text: fig for fig in _figures_of(section)}
    assert int(np.asarray(by_title["Confusion matrix"].data[0].z).sum()) == len(view.held_out.y)
    assert np.asarray(by_title["Confusion matrix"].data[0].z).shape == (3, 3)
    assert len(by_title["ROC curve"].data) == 1 + 3  # the chance line and one curve per class
    assert "Calibration (confidence of the predicted class)" in by_title
    table = api.load(tmp_path / "model").feature_importance(view.held_out.frame.assign(target=view.held_out.labels))
    assert len(table) == view.held_out.frame.shape[1] and table["importance"].iloc[0] > 0


def test_a_run_without_an_ensemble_still_gets_a_page(tmp_path: Path) -> None:
    api.search("builtin:breast_cancer", out=tmp_path / "run", space=str(_space(tmp_path, PLAIN_SPACE, "plain")),
               n_trials=1, pruner="none", cv_folds=1, quiet=True, progress=False)
    page = api.write_report(tmp_path / "run").read_text(encoding="utf-8")
    assert "No ensemble yet" in _section(page, "leaderboard")
    assert "no exported model" in _section(page, "summary")
    assert "Optimization history" in _section(page, "study")


# --- the figures' rules -----------------------------------------------------------------------------


def test_finish_turns_webgl_into_svg_and_thins_long_scatters() -> None:
    n = 12_345
    fig = go.Figure(go.Scattergl(x=np.arange(n), y=np.arange(n) * 2.0, mode="markers"))
    done = figures.finish(fig)
    trace = done.data[0]
    assert trace.type == "scatter"
    assert len(trace.x) <= figures.MAX_POINTS and trace.x[0] == 0 and trace.x[-1] == n - 1
    assert list(trace.y) == [2.0 * x for x in trace.x]
    assert done.layout.height == figures.HEIGHT


def test_binned_and_reliability_keep_every_row() -> None:
    rng = np.random.default_rng(0)
    std, err = rng.random(103), rng.random(103)
    _, _, counts = report_page.binned(std, err, 10)
    assert counts.sum() == 103
    proba = rng.dirichlet([1, 1, 1], size=50)
    _, _, counts = report_page.reliability(rng.integers(0, 3, 50), proba)
    assert counts.sum() == 50


def test_a_100_trial_study_adds_less_than_1_mb_beyond_plotly_js() -> None:
    """100 trials of 100 reported steps each, and five 100-epoch learning curves (no training: a built study)."""
    rng = np.random.default_rng(0)
    study = optuna.create_study(study_name="big", direction="minimize")
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
             "width": optuna.distributions.IntDistribution(8, 512),
             "activation": optuna.distributions.CategoricalDistribution(["relu", "elu", "gelu"])}
    for _ in range(100):
        trial = study.ask(space)
        for step in range(1, 101):
            trial.report(float(rng.random()), step)
        trial.set_user_attr("learning_curve", rng.random(100).tolist())
        trial.set_user_attr("train_loss_curve", rng.random(100).tolist())
        trial.set_user_attr("best_epoch", 50)
        study.tell(trial, float(rng.random()))
    spec = {"study_name": "big", "metric": "logloss", "direction": "minimize"}
    view = report_page.RunView(run=None, spec=spec, split={}, preprocess=None, ensemble=None, study=study,
                               trials={t.number: t for t in study.trials}, model_dir=None, predictor=None,
                               held_out=None)
    sections = [report_page.learning_curves_section(view), report_page.study_section(view)]
    rest = _without_plotly_js(report_page.render_page(view, sections))
    assert rest.count("Plotly.newPlot") == 4
    assert len(rest.encode("utf-8")) < 1_000_000


# --- the metric's name in the dashboard -------------------------------------------------------------


def test_the_study_names_its_metric(binary_run: SimpleNamespace) -> None:
    spec = RunDir(binary_run.run).read_spec()
    study = optuna.load_study(study_name=spec["study_name"], storage=spec["storage"])
    assert study.metric_names == ["logloss"]


# --- the terminal ---------------------------------------------------------------------------------


def test_the_ensemble_table_reads_at_100_columns(binary_run: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    ensemble = read_json(RunDir(binary_run.run).ensemble_path)
    long = "4x512 leaky_relu bn-before drop 0.25 quantile plr tabm k=8, adamw 0.0031, flat_cosine"
    rows = [{"model": m["name"], "details": long, "valid": m["valid"], "test": m["test"], "weight": m["weight"]}
            for m in ensemble["members"]]
    rows += [{"model": s["name"], "details": "", "valid": s["valid"], "test": s["test"], "weight": None}
             for s in ensemble["summary"]]
    buffer = io.StringIO()
    monkeypatch.setattr(report, "out", Console(file=buffer, width=100, color_system=None))
    report.out.print(report.ensemble_table(rows, metric="logloss", inner="valid"))
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 100
    for row in rows:
        shown = report._short_name(row["model"])
        assert sum(line.strip().startswith(shown) for line in lines) == 1, (shown, lines)


# --- the CLI --------------------------------------------------------------------------------------


def test_cli_report_with_a_model_and_the_importance_command(binary_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    result = invoke("report", binary_run.run, "--model", binary_run.model, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and lines_of(result)[-1] == f"wrote {out}"
    data = tmp_path / "data.csv"
    binary_run.frame.to_csv(data, index=False)
    result = invoke("importance", binary_run.model, data, "--target", "y", "--max-rows", 300)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "Permutation importance" in text and text.index("signal") < text.index("noise")


def test_cli_fit_writes_the_page_beside_the_model_and_names_it_last(tmp_path: Path, tiny_space: Path) -> None:
    data = tmp_path / "train.csv"
    planted_frame(200).to_csv(data, index=False)
    model = tmp_path / "m"
    result = invoke("fit", data, "--target", "y", "--model", model, "--space", tiny_space, "--n-trials", 1,
                    "--no-gbt", "--folds", 1, "--cv-folds", 1, "--quiet")
    assert result.exit_code == 0, result.output
    page = tmp_path / "m-report.html"
    assert page.is_file() and lines_of(result)[-1] == f"report written to {page}"


def test_bad_input_is_one_line(binary_run: SimpleNamespace, no_test_run: SimpleNamespace, tmp_path: Path) -> None:
    assert_one_line_error(invoke("report", tmp_path / "nowhere"), "not a run folder")
    assert_one_line_error(invoke("report", binary_run.run, "--model", no_test_run.model, "--out",
                                 tmp_path / "r.html"), "do not belong together")
    assert_one_line_error(invoke("report", binary_run.run, "--model", tmp_path, "--out", tmp_path / "r.html"),
                          "not a model folder")
    assert_one_line_error(invoke("importance", binary_run.model, "builtin:diabetes"), "no target column")
    with pytest.raises(MismatchError):
        api.write_report(no_test_run.run, model_dir=binary_run.model, out=tmp_path / "x.html")


@pytest.mark.parametrize("budget", [10.0, 60.0, 3600.0, 10_000.0])
@pytest.mark.parametrize("page", [True, False])
def test_the_fit_plan_adds_up_to_the_budget_and_keeps_a_share_for_the_page(budget: float, page: bool) -> None:
    plan = budget_module.plan_fit(budget, report=page)
    assert plan.total == pytest.approx(budget)
    assert plan.report == (min(budget_module.REPORT_SHARE * budget, budget_module.REPORT_MAX_SECONDS) if page else 0)
    assert plan.ensemble == pytest.approx(budget_module.ENSEMBLE_SHARE * (budget - plan.report))
    assert plan.bagging_cap < plan.search
    assert api.report_path_for(Path("models/m")) == Path("models/m-report.html")


@pytest.mark.parametrize("budget, ensemble", [(300.0, 0.03 * 285), (60.0, 2.0), (20.0, 0.1 * 19)])
def test_a_fit_without_xgboost_keeps_less_for_the_ensemble_step(budget: float, ensemble: float) -> None:
    """Nothing to wait for after the nets: 3 % of the budget, at least 2 s (within the usual 10 %)."""
    plan = budget_module.plan_fit(budget, report=True, gbt=False)
    assert plan.ensemble == pytest.approx(ensemble)
    assert plan.total == pytest.approx(budget)
    assert plan.search > budget_module.plan_fit(budget, report=True).search or budget <= 20


def test_piped_output_is_100_columns_wide_unless_columns_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich gives a pipe 80 columns, where every score in the member tables is cut to "0.…"."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr("sys.stdout", io.StringIO())  # not a terminal
    assert report._console().width == report.PIPED_WIDTH == 100
    monkeypatch.setenv("COLUMNS", "132")
    assert report._console().width == 132


def test_on_a_time_budget_the_importance_shuffles_the_rows_that_fit() -> None:
    """fit's report share: at 1,000 rows/s (no fixed cost a call), 10 s left and 20 columns, 0.6 x 10 x 1,000 / 61
    predictions = 98 rows, raised to the floor of 100; with more time the rows grow, and nothing left still gives
    the floor."""
    per_row = ImportanceCost(fixed=0.0, per_row=1 / 1_000)
    assert report_page.importance_rows_in_time(10.0, per_row, 20) == report_page.IMPORTANCE_FLOOR_ROWS == 100
    assert report_page.importance_rows_in_time(100.0, per_row, 20) == int(0.6 * 100 * 1_000 / 61) == 983
    assert report_page.importance_rows_in_time(-5.0, per_row, 20) == 100
    assert report_page.importance_rows_in_time(1e6, per_row, 20) == report_page.IMPORTANCE_ROWS  # never past it
    # the floor of 3 shuffles does not fit: one shuffle a column, and the rows one shuffle affords
    assert report_page.importance_plan(100.0, per_row, 20) == (983, 3)
    assert report_page.importance_plan(10.0, per_row, 20) == (int(0.6 * 10 * 1_000 / 21), 1) == (285, 1)
    assert report_page.importance_plan(1.0, per_row, 20) == (100, 1)
    assert report_page.importance_plan(100.0, per_row, 20, max_rows=45) == (45, 3)  # a small held-out part


def test_on_a_time_budget_a_floor_far_too_slow_is_skipped() -> None:
    """One shuffle of 100 rows x 100 columns at 1,250 rows/s: 101 predictions x 100 rows / 1,250 = 8.1 s."""
    per_row = ImportanceCost(fixed=0.0, per_row=1 / 1_250)
    assert report_page.floor_seconds_over(2.0, per_row, 100) == pytest.approx(8.08)
    assert report_page.floor_seconds_over(5.0, per_row, 100) is None  # within twice the time left
    assert report_page.floor_seconds_over(0.5, ImportanceCost(0.0, 1 / 5_000), 100) is None  # 2 s: too little
    assert report_page.floor_seconds_over(-1.0, per_row, 100) == pytest.approx(8.08)


def test_a_wide_tiny_table_is_planned_by_its_calls_not_by_its_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """300 rows x 1,500 columns: a prediction call costs 0.6 s whatever its rows (checks and set-up per column), so
    the 45 test rows predicted in 0.6 s are no 75 rows/s: the page said one shuffle "would take about 2349 s" and
    skipped it. Timed on a clock that each call moves by 0.6 s + 10 us a row, the importance's 29 copies a call
    make one shuffle 53 calls, 32 s: it fits 100 s left, and 10 s left still skips it."""
    clock = [0.0]
    monkeypatch.setattr(importance.time, "perf_counter", lambda: clock[0])
    columns = [f"f{i}" for i in range(1_500)]
    frame = pd.DataFrame(np.zeros((45, 1_500)), columns=columns)
    sizes: list[int] = []

    def predict(df: pd.DataFrame) -> np.ndarray:
        sizes.append(len(df))
        clock[0] += 0.6 + 1e-5 * len(df)
        return np.zeros(len(df))

    cost = importance.measure_cost(predict, frame, columns, rows=100, seconds=5.0)
    assert sizes == [45, 90, 180, 360, 720, 1_305]  # 1, 2, 4, ... copies, up to one full call of 29
    assert cost.fixed == pytest.approx(0.6) and cost.per_row == pytest.approx(1e-5)
    assert report_page.floor_seconds_over(100.0, cost, 1_500, max_rows=45) is None
    assert report_page.importance_plan(100.0, cost, 1_500, max_rows=45) == (45, 1)
    assert cost.seconds(45, 1_500, 1) == pytest.approx(53 * 0.6 + 1e-5 * 45 * 1_501)
    assert report_page.floor_seconds_over(10.0, cost, 1_500, max_rows=45) == pytest.approx(32.5, abs=0.1)
    sizes.clear()
    importance.measure_cost(predict, frame, columns, rows=100, seconds=0.0)
    assert sizes == [45, 90]  # two calls at least: one alone cannot tell the fixed cost from the rows'


def test_a_wide_table_is_bounded_by_predicted_cells_and_ordinary_tables_are_not() -> None:
    """Every shuffled copy is the whole table, so the cells predicted grow as the columns squared: 3 shuffles of 300
    rows of 1,500 columns were 2e9 cells (a thousand prediction calls). Up to about 200 columns nothing changes;
    wider, one shuffle, then fewer rows (100 at least), then groups of adjacent columns keep within the cap."""
    bounds = report_page.importance_bounds
    assert bounds(20, 5_000) == (2_000, 3, 1) and bounds(3, 90) == (90, 3, 1)  # as before
    assert bounds(100, 5_000) == (400, 3, 1) and bounds(200, 5_000) == (300, 3, 1)
    assert bounds(250, 5_000) == (300, 1, 1)  # 3 shuffles: 56M cells; one: 19M
    assert bounds(600, 5_000) == (110, 1, 1)
    assert bounds(1_500, 45) == (45, 1, 3)  # 500 groups of 3 columns
    assert bounds(1_500, 5_000) == (100, 1, 6)
    for columns, rows in [(250, 5_000), (600, 5_000), (1_500, 45), (1_500, 5_000), (20_000, 300)]:
        r, repeats, size = bounds(columns, rows)
        assert report_page.predicted_cells(r, columns, repeats, size) <= report_page.IMPORTANCE_PREDICTED_CELLS


def test_grouped_importance_shuffles_adjacent_columns_together() -> None:
    """Groups of 2 of a, b, c, d, e: (a, b) holds the one column the model reads, so only it drops."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 5)), columns=list("abcde"))
    y = frame["c"].to_numpy() * 2.0
    calls: list[int] = []

    def predict(df: pd.DataFrame) -> np.ndarray:
        calls.append(len(df))
        return df["c"].to_numpy() * 2.0

    table = importance.permutation_importance(predict, frame, y, metric="rmse", repeats=1, group_size=2)
    assert table["feature"].tolist()[0] == "c … d (2 columns)"
    assert set(table["feature"]) == {"a … b (2 columns)", "c … d (2 columns)", "e"}
    assert table["importance"].iloc[0] > 1 and (table["importance"].iloc[1:] == 0).all()
    assert table.attrs["group_size"] == 2 and sum(calls) == 200 * 4  # the unshuffled rows and 3 groups
    single = importance.permutation_importance(predict, frame, y, metric="rmse", repeats=1)
    assert single["feature"].iloc[0] == "c" and single.attrs["group_size"] == 1


def test_the_page_says_what_a_wide_table_left_out(binary_run: SimpleNamespace, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The 3-column run's 90 test rows under a cap of 1,500 predicted cells: one shuffle a column (4 x 90 x 3 =
    1,080 cells); under 1,000, groups of 2 columns (3 x 90 x 3 = 810)."""
    monkeypatch.setattr(report_page, "IMPORTANCE_PREDICTED_CELLS", 1_500)
    page = _section(api.write_report(binary_run.run, out=tmp_path / "one.html").read_text(), "importance")
    assert "on 90 test rows, 1 shuffle per column" in page
    assert "A wide table: each of its 3 columns was shuffled once, not 3 times (no spread), on 90 rows" in page
    monkeypatch.setattr(report_page, "IMPORTANCE_PREDICTED_CELLS", 1_000)
    page = _section(api.write_report(binary_run.run, out=tmp_path / "groups.html").read_text(), "importance")
    assert "its 3 columns were shuffled in 2 groups of 2 adjacent columns" in page and "(2 columns)" in page
    assert "A wide table" not in _section(binary_run.html, "importance")  # the cap the page has: 3 shuffles


def test_a_page_far_out_of_time_says_why_it_has_no_importance(binary_run: SimpleNamespace, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_page, "IMPORTANCE_SKIP_SECONDS", 0.0)
    page = api.write_report(binary_run.run, out=tmp_path / "page.html", time_budget=1e-6).read_text()
    assert "Not computed within the fit's budget: one shuffle of" in page
    assert "Permutation importance of the exported model" not in page
    assert "Permutation importance of the exported model" in api.write_report(binary_run.run,
                                                                              out=tmp_path / "all.html").read_text()


def test_a_page_out_of_time_shuffles_only_the_floor_of_rows(binary_run: SimpleNamespace, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_page, "IMPORTANCE_FLOOR_ROWS", 10)
    rows_used = re.compile(r"Permutation importance of the exported model on ([\d,]+) test rows")
    unlimited = api.write_report(binary_run.run, out=tmp_path / "all.html").read_text()
    out_of_time = api.write_report(binary_run.run, out=tmp_path / "page.html", time_budget=1e-6).read_text()
    assert int(rows_used.search(unlimited).group(1)) == 90  # every test row (600 x 0.15)
    assert int(rows_used.search(out_of_time).group(1)) == 10
    assert "test rows, 3 shuffles per column" in unlimited and "test rows, 1 shuffle per column" in out_of_time
