"""The report page's plotly figures, each a function of plain arrays, and the rules every figure obeys.

``finish`` is applied to every figure of the page (Optuna's too): WebGL traces (``scattergl``) become SVG
ones, since WebGL does not render headless nor in every browser; a trace longer than ``MAX_POINTS`` is
thinned to evenly spaced points, which keeps a 100-trial page small; and a fixed height with the page's
width keeps a figure from growing taller than a screen.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

MAX_POINTS = 5000
HEIGHT = 380
_ARRAY_KEYS = ("x", "y", "text", "hovertext", "customdata")
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


# --- the rules --------------------------------------------------------------------------------


def finish(fig: Any, *, height: int = HEIGHT) -> go.Figure:
    """SVG traces only, at most MAX_POINTS points per trace, a fixed height and the page's width."""
    data = [_svg_trace(trace.to_plotly_json()) for trace in fig.data]
    out = go.Figure(data=data, layout=fig.layout)
    out.update_layout(height=height, width=None, autosize=True, template=_template(),
                      margin=dict(l=60, r=20, t=50, b=50))
    return out


def _template() -> go.layout.Template:
    """A white look with layout keys only: a named template would embed defaults for every trace type
    (WebGL ones included) in every figure."""
    axis = dict(gridcolor="#ebebeb", zerolinecolor="#cccccc", linecolor="#cccccc", automargin=True)
    return go.layout.Template(layout=dict(paper_bgcolor="white", plot_bgcolor="white", colorway=list(_COLORS),
                                          font=dict(size=12), hovermode="closest", xaxis=axis, yaxis=axis))


def _svg_trace(trace: dict[str, Any]) -> dict[str, Any]:
    if trace.get("type") == "scattergl":
        trace["type"] = "scatter"
    n = max((len(trace[k]) for k in _ARRAY_KEYS if _is_array(trace.get(k))), default=0)
    if n <= MAX_POINTS:
        return trace
    keep = thin(n)
    for key in _ARRAY_KEYS:
        if _is_array(trace.get(key)) and len(trace[key]) == n:
            trace[key] = np.asarray(trace[key], dtype=object)[keep].tolist()
    marker = trace.get("marker")
    if isinstance(marker, dict):
        for key in ("color", "size", "symbol"):
            if _is_array(marker.get(key)) and len(marker[key]) == n:
                marker[key] = np.asarray(marker[key], dtype=object)[keep].tolist()
    return trace


def _is_array(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def thin(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Evenly spaced indices of at most ``limit`` of ``n`` points (first and last kept)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def _figure(title: str, x_title: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title)
    return fig


# --- classification ---------------------------------------------------------------------------


def confusion_matrix(labels: Sequence[str], matrix: np.ndarray) -> go.Figure:
    """Counts of true (rows) against predicted (columns) labels, each cell written in."""
    names = [str(label) for label in labels]
    fig = go.Figure(go.Heatmap(z=matrix, x=names, y=names, colorscale="Blues", texttemplate="%{z}",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z} rows<extra></extra>"))
    fig.update_layout(title="Confusion matrix", xaxis_title="predicted", yaxis_title="true",
                      yaxis_autorange="reversed", xaxis_type="category", yaxis_type="category")
    return finish(fig, height=max(HEIGHT, 60 + 40 * len(names)))


def roc_curves(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]]) -> go.Figure:
    """One ROC curve per (class name, false positive rate, true positive rate, AUC), and the chance line."""
    fig = _figure("ROC curve", "false positive rate", "true positive rate")
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="chance"))
    for i, (name, fpr, tpr, auc) in enumerate(curves):
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {auc:.3f})",
                                 line=dict(color=_COLORS[i % len(_COLORS)])))
    return finish(fig)


def pr_curves(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]]) -> go.Figure:
    """One precision-recall curve per (class name, recall, precision, average precision)."""
    fig = _figure("Precision-recall curve", "recall", "precision")
    for i, (name, recall, precision, ap) in enumerate(curves):
        fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", name=f"{name} (AP {ap:.3f})",
                                 line=dict(color=_COLORS[i % len(_COLORS)])))
    fig.update_yaxes(range=[0, 1.02])
    return finish(fig)


def calibration(predicted: np.ndarray, observed: np.ndarray, counts: np.ndarray, what: str) -> go.Figure:
    """Reliability diagram: the mean predicted probability of each bin against the observed frequency."""
    fig = _figure(f"Calibration ({what})", "mean predicted probability", "observed frequency")
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"),
                             name="perfect"))
    fig.add_trace(go.Scatter(x=predicted, y=observed, mode="lines+markers", name="model", text=counts,
                             hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>%{text} rows<extra></extra>"))
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1])
    return finish(fig)


# --- regression -------------------------------------------------------------------------------


def predicted_vs_actual(actual: np.ndarray, predicted: np.ndarray) -> go.Figure:
    """Each held-out row (at most MAX_POINTS), with the diagonal of perfect predictions."""
    keep = thin(len(actual))
    low = float(min(np.min(actual), np.min(predicted)))
    high = float(max(np.max(actual), np.max(predicted)))
    fig = _figure("Predicted vs actual", "actual", "predicted")
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", line=dict(dash="dot", color="grey"),
                             name="perfect"))
    fig.add_trace(go.Scatter(x=actual[keep], y=predicted[keep], mode="markers", name="rows",
                             marker=dict(size=5, opacity=0.6)))
    return finish(fig)


def residuals(predicted: np.ndarray, residual: np.ndarray) -> go.Figure:
    """Residual (actual - predicted) against the prediction, and their histogram beside it."""
    keep = thin(len(predicted))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.65, 0.35],
                        subplot_titles=("residual vs predicted", "residual histogram"))
    fig.add_trace(go.Scatter(x=predicted[keep], y=residual[keep], mode="markers", name="rows",
                             marker=dict(size=5, opacity=0.6)), row=1, col=1)
    counts, edges = np.histogram(residual, bins=min(40, max(5, len(residual) // 10)))
    fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, name="rows per bin", showlegend=False),
                  row=1, col=2)
    fig.add_hline(y=0, line=dict(dash="dot", color="grey"), row=1, col=1)
    fig.update_layout(title="Residuals", showlegend=False)
    fig.update_xaxes(title_text="predicted", row=1, col=1)
    fig.update_xaxes(title_text="residual", row=1, col=2)
    return finish(fig)


# --- the model --------------------------------------------------------------------------------


def importance_bars(features: Sequence[str], mean: np.ndarray, std: np.ndarray, metric: str) -> go.Figure:
    """Permutation importance, most important on top, with one standard deviation as error bars."""
    order = np.argsort(mean)  # plotly draws horizontal bars bottom-up
    fig = go.Figure(go.Bar(x=np.asarray(mean)[order], y=[str(features[i]) for i in order], orientation="h",
                           error_x=dict(type="data", array=np.asarray(std)[order], visible=True)))
    fig.update_layout(title="Permutation importance", xaxis_title=f"drop in {metric} when shuffled",
                      yaxis_type="category")
    return finish(fig, height=min(1200, max(HEIGHT, 80 + 22 * len(features))))


def learning_curves(curves: Sequence[dict[str, Any]], metric: str) -> go.Figure:
    """Per net: validation metric and training loss per epoch, the best epoch marked with a star."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"validation {metric}", "training loss"))
    for i, curve in enumerate(curves):
        color = _COLORS[i % len(_COLORS)]
        for col, key in ((1, "valid"), (2, "train")):
            values = curve[key]
            if not values:
                continue
            epochs = list(range(1, len(values) + 1))
            fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines", name=curve["name"], legendgroup=curve["name"],
                                     showlegend=col == 1, line=dict(color=color)), row=1, col=col)
            best = curve.get("best_epoch")
            if best is not None and 0 <= best < len(values) and values[best] is not None:
                fig.add_trace(go.Scatter(x=[best + 1], y=[values[best]], mode="markers", legendgroup=curve["name"],
                                         marker=dict(symbol="star", size=13, color=color), showlegend=False,
                                         name=f"{curve['name']} best epoch {best + 1}"), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    return finish(fig, height=420)


def uncertainty(std: np.ndarray, error: np.ndarray, counts: np.ndarray, what: str) -> go.Figure:
    """Mean error per bin of predicted MC-dropout std: a useful std rises with the error."""
    fig = _figure("MC-dropout uncertainty against the error", "predicted std (bin mean)", f"{what} (bin mean)")
    fig.add_trace(go.Scatter(x=std, y=error, mode="lines+markers", text=counts, name="bins",
                             hovertemplate="std %{x:.4g}<br>error %{y:.4g}<br>%{text} rows<extra></extra>"))
    return finish(fig)


__all__ = ["MAX_POINTS", "calibration", "confusion_matrix", "finish", "importance_bars", "learning_curves",
           "pr_curves", "predicted_vs_actual", "residuals", "roc_curves", "thin", "uncertainty"]
