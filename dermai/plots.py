"""Plotly figures shared by the Streamlit app and the reports: pure functions, data in, Figure out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from dermai.data import DIAGNOSIS_NAMES
from dermai.palette import OKABE_ITO

_STEP_KEYS = ("loss", "ce", "ntxent", "mask_loss")
_EPOCH_KEYS = ("val_auroc", "val_bacc", "val_acc", "train_acc")

# Fixed split order and colours: filtering the dataset page must not repaint or reorder the splits, or the
# reader compares the wrong bars across views. Splits not named here follow, sorted, in plotly's defaults.
# Okabe–Ito's blue, orange and bluish green: plotly's orange and green (val, test) were one hue to a protanope.
SPLIT_COLOURS: dict[str, str] = {"train": OKABE_ITO[0], "val": OKABE_ITO[1], "test": OKABE_ITO[2]}


def _split_order(splits: Sequence[Any]) -> list[str]:
    """The splits present, train/val/test first in that order, any others after them sorted."""
    present = {str(s) for s in splits}
    known = [s for s in SPLIT_COLOURS if s in present]
    return known + sorted(present - set(SPLIT_COLOURS))


# Colour is never a line's only cue (one man in twelve tells red from green poorly): the k-th line of a panel
# also gets the k-th dash and marker shape. The periods differ (6, 10), so the pair is distinct for 30 lines.
SERIES_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SERIES_SYMBOLS = (
    "circle",
    "square",
    "diamond",
    "triangle-up",
    "x",
    "cross",
    "triangle-down",
    "star-square",
    "pentagon",
    "hexagon",
)
# A step panel's line has hundreds of points: a marker on each would hide the line, so only this many show.
STEP_MARKERS = 12


def series_style(k: int) -> dict[str, Any]:
    """The k-th line's dash and marker shape in a panel (0-based), as go.Scatter's `line` and `marker`, so
    that two lines in one panel differ in more than colour."""
    return {
        "line": {"dash": SERIES_DASHES[k % len(SERIES_DASHES)]},
        "marker": {"symbol": SERIES_SYMBOLS[k % len(SERIES_SYMBOLS)]},
    }


# A legend under the plot, in one row: plotly's default, at the right, covered the ROC and PR curves or squeezed
# the plot in a half-width column at 800 px (Evaluation puts ROC beside PR, the reliability diagram under ROC).
LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0}


def _cut_off_rates(
    y: np.ndarray, s: np.ndarray, operating_points: Mapping[str, Mapping[str, Any]] | None
) -> list[tuple[str, Mapping[str, Any], float, float]]:
    """Each operating point with the sensitivity and specificity its cut-off gives on *these* data: where
    `roc_figure` marks it and what `roc_summary` says of it."""
    rates = []
    for name, point in (operating_points or {}).items():
        flagged = s >= point["threshold"]
        rates.append((name, point, flagged[y == 1].mean(), (~flagged[y == 0]).mean()))
    return rates


def roc_figure(
    y_true: np.ndarray, p: np.ndarray, operating_points: Mapping[str, Mapping[str, Any]] | None = None
) -> go.Figure:
    """ROC curve with AUROC in the title. Each operating point ({name: {"threshold": ...}}, e.g. from
    choose_operating_points on validation data) is marked where its cut-off lands on *these* data."""
    y = np.asarray(y_true).ravel()
    s = np.asarray(p, dtype=float).ravel()
    fpr, tpr, _ = roc_curve(y, s)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dash"}))
    fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name="ROC"))
    for name, point, sens, spec in _cut_off_rates(y, s, operating_points):
        fig.add_trace(
            go.Scatter(
                x=[1 - spec],
                y=[sens],
                mode="markers+text",
                name=name,
                text=[name],
                textposition="bottom right",
                marker={"size": 11},
                hovertemplate=f"{name}: threshold {point['threshold']:.3f}<br>"
                f"sensitivity {sens:.3f}, specificity {spec:.3f}<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"ROC (AUROC {roc_auc_score(y, s):.3f})",
        xaxis_title="1 − specificity",  # short: "(false-positive rate)" was cut in a half-width column at 800 px
        yaxis_title="sensitivity",
        legend=LEGEND_BELOW,
    )
    return fig


def pr_figure(y_true: np.ndarray, p: np.ndarray) -> go.Figure:
    """Precision–recall curve with average precision in the title; the prevalence line is what a useless
    classifier scores, which matters when malignant lesions are rare."""
    y = np.asarray(y_true).ravel()
    precision, recall, _ = precision_recall_curve(y, p)
    prevalence = float(y.mean())
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[prevalence, prevalence], mode="lines", name="prevalence", line={"dash": "dash"})
    )
    fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", name="PR"))
    fig.update_layout(
        title=f"Precision–recall (AUPRC {average_precision_score(y, p):.3f})",
        xaxis_title="recall (sensitivity)",
        yaxis_title="precision (PPV)",
        legend=LEGEND_BELOW,
    )
    return fig


def reliability_figure(bins: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Reliability diagram from calibration.reliability_bins: observed malignant fraction against mean
    predicted risk per bin (empty bins left out); points on the diagonal are perfectly calibrated."""
    filled = [b for b in bins if b["count"]]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line={"dash": "dash"}))
    fig.add_trace(
        go.Scatter(
            x=[b["mean_pred"] for b in filled],
            y=[b["frac_pos"] for b in filled],
            mode="lines+markers",
            name="model",
            customdata=[b["count"] for b in filled],
            hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>n = %{customdata}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Reliability",
        xaxis={"title": "mean predicted probability", "range": [0, 1]},
        yaxis={"title": "observed fraction positive", "range": [0, 1]},
        legend=LEGEND_BELOW,  # beside ROC on Evaluation: at the right it squeezed the plot to a sliver at 800 px
    )
    return fig


def confusion_figure(cm: Sequence[Sequence[int]] | np.ndarray, classes: Sequence[str]) -> go.Figure:
    """Confusion matrix heatmap, rows = true class. Colour is the row share (recall), so rare classes stay
    readable next to the dominant naevi; cells are annotated with counts."""
    counts = np.asarray(cm, dtype=int)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=list(classes),
            y=list(classes),
            text=counts,
            texttemplate="%{text}",
            zmin=0,
            zmax=1,
            colorscale="Blues",
            colorbar={"title": "row share"},
            hovertemplate="true %{y}, predicted %{x}<br>n = %{text} (%{z:.1%} of row)<extra></extra>",
        )
    )
    # Every class named on both axes: on a narrow page (800 px) plotly thinned the ticks to every other class.
    ticks = {"tickmode": "array", "tickvals": list(classes), "ticktext": list(classes)}
    fig.update_layout(
        title="Confusion matrix",
        xaxis={"title": "predicted", **ticks},
        yaxis={"title": "true", "autorange": "reversed", **ticks},
    )
    return fig


# One colour per initialisation in both panels: plotly's colour cycle runs on across subplots, so without
# this the balanced-accuracy lines came out in other colours than the legend (drawn from the AUROC panel).
INIT_COLOURS: dict[str, str] = {"random": "#1f77b4", "simclr": "#d62728"}
_OTHER_INIT_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _init_colours(inits: Sequence[Any]) -> dict[str, str]:
    """A colour per initialisation: the fixed ones for random/simclr, the rest from a spare palette in
    sorted order, so the same table always gets the same colours."""
    others = sorted({str(i) for i in inits} - set(INIT_COLOURS))
    spare = {init: _OTHER_INIT_COLOURS[k % len(_OTHER_INIT_COLOURS)] for k, init in enumerate(others)}
    return {**INIT_COLOURS, **spare}


def label_efficiency_figure(table: pd.DataFrame) -> go.Figure:
    """AUROC and balanced accuracy (mean ± SD over seeds) against the labelled fraction on a log axis, one
    line per initialisation (SimCLR vs random): where does pre-training pay off?"""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("AUROC (malignant)", "balanced accuracy"))
    colours = _init_colours(table["init"].unique())
    styles = {init: series_style(k) for k, init in enumerate(colours)}  # the same in both panels, as the colours
    for col, metric in enumerate(("auroc", "bacc"), start=1):
        for init, rows in table.sort_values("fraction").groupby("init", sort=True):
            style = styles[str(init)]
            fig.add_trace(
                go.Scatter(
                    x=rows["fraction"],
                    y=rows[f"{metric}_mean"],
                    error_y={"type": "data", "array": rows[f"{metric}_sd"], "color": colours[str(init)]},
                    mode="lines+markers",
                    name=str(init),
                    legendgroup=str(init),
                    showlegend=col == 1,
                    line={**style["line"], "color": colours[str(init)]},
                    marker={**style["marker"], "color": colours[str(init)], "size": 8},
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(type="log", title_text="labelled fraction", row=1, col=col)
    fig.update_layout(title="Label efficiency")
    return fig


def class_distribution_figure(df: pd.DataFrame) -> go.Figure:
    """Images per diagnosis in each split (grouped bars with counts): shows the imbalance every metric
    has to be read against."""
    counts = df.assign(split=df["split"].astype(str)).groupby(["split", "dx"], sort=False).size()
    dx_order = sorted(df["dx"].unique())
    fig = go.Figure()
    for split in _split_order(df["split"].unique()):
        n = [int(counts.get((split, dx), 0)) for dx in dx_order]
        colour = {"color": SPLIT_COLOURS[split]} if split in SPLIT_COLOURS else None
        fig.add_trace(go.Bar(x=dx_order, y=n, name=split, text=n, textposition="outside", marker=colour))
    fig.update_layout(title="Class distribution", barmode="group", xaxis_title="diagnosis", yaxis_title="images")
    return fig


def embedding_figure(points: pd.DataFrame, title: str) -> go.Figure:
    """The embedding map: one point per image at its projected (x, y), with a colour and a marker shape per
    diagnosis (no palette keeps seven colours apart for a colour-blind reader; seven shapes stay apart). The
    HAM10000 diagnoses keep one look on every map, whichever of them it holds; other labels (an external
    folder's benign/malignant) follow, sorted. Each point carries its image_id for the page's selection."""
    present = {str(d) for d in points["dx"].unique()}
    everyone = list(DIAGNOSIS_NAMES) + sorted(present - set(DIAGNOSIS_NAMES))
    return px.scatter(
        points.assign(dx=points["dx"].astype(str)),
        x="x",
        y="y",
        color="dx",
        symbol="dx",
        category_orders={"dx": [d for d in everyone if d in present]},
        color_discrete_map={d: OKABE_ITO[k % len(OKABE_ITO)] for k, d in enumerate(everyone)},
        symbol_map={d: SERIES_SYMBOLS[k % len(SERIES_SYMBOLS)] for k, d in enumerate(everyone)},
        custom_data=["image_id"],
        hover_data=["image_id"],
        title=title,
    )


def _series(records: Sequence[Mapping[str, Any]], x_key: str, y_key: str) -> tuple[list, list]:
    """(x, y) of the records holding a y value; x falls back to the record's position when missing."""
    xs, ys = [], []
    for i, r in enumerate(records):
        if r.get(y_key) is not None:
            xs.append(r.get(x_key, i))
            ys.append(r[y_key])
    return xs, ys


def one_based_epochs(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records with each epoch numbered from 1, as people count them and the Training page says them ("epoch 1
    of 6"); metrics.jsonl keeps the trainer's 0-based index, so a chart drawn from it read 0 for the first epoch."""
    return [{**r, "epoch": r["epoch"] + 1} if isinstance(r.get("epoch"), int) else r for r in records]


def _whole_epoch_ticks(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """An epoch axis's tick settings: one tick per epoch while they are few, else Plotly's own (10, 20, …), whose
    steps are whole then too; a two-epoch run's axis read "1, 1.2, 1.4 … 2", numbers no epoch has."""
    last = max((r["epoch"] for r in records if r.get("kind") == "epoch" and isinstance(r.get("epoch"), int)), default=0)
    return {"tick0": 1, "dtick": 1} if last <= 12 else {}


def has_training_curves(records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether `training_curves_figure` would draw a line: a step or epoch record (an ensemble run, or a run
    stopped before its first logged step, has none, and empty axes read as a broken chart)."""
    return any(r.get("kind", "step") in ("step", "epoch") for r in records)


def _parts_equal_to_loss(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """The loss parts (ce, ntxent, mask_loss) whose line would be the loss's line, point for point: SimCLR
    pretraining's loss is its NT-Xent loss (fine-tuning's is its cross-entropy when λ is 0), and two lines on
    top of each other read as one line with a legend entry that shows nothing."""
    xs, ys = _series(steps, "step", "loss")
    parts = []
    for key in _STEP_KEYS[1:]:
        part_xs, part_ys = _series(steps, "step", key)
        if ys and part_xs == xs and np.allclose(part_ys, ys, rtol=1e-6, atol=1e-9):
            parts.append(key)
    return parts


def training_curves_figure(records: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Training curves from metrics.jsonl lines: loss parts (loss, ce, ntxent, mask_loss) per step on the
    left (a part that is the whole loss, as NT-Xent is in pretraining, drawn once, as "pretrain loss (= ntxent)"),
    validation AUROC / balanced accuracy / accuracy and train accuracy per epoch on the right, one line per stage,
    and a star for a stochastic weight average's validation AUROC. Missing keys are skipped; a record without
    "kind" counts as a step record."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss per step", "per epoch"))
    records = one_based_epochs(records)
    stages = list(dict.fromkeys(r.get("stage", "train") for r in records))
    lines = {1: 0, 2: 0}  # lines drawn so far per panel: each next one gets the next dash and marker shape
    for stage in stages:
        mine = [r for r in records if r.get("stage", "train") == stage]
        panels = (
            (
                1,
                "step",
                _STEP_KEYS,
                {"maxdisplayed": STEP_MARKERS},
                [r for r in mine if r.get("kind", "step") == "step"],
            ),
            (2, "epoch", _EPOCH_KEYS, {}, [r for r in mine if r.get("kind") == "epoch"]),
        )
        for col, x_key, keys, markers, rows in panels:
            same = _parts_equal_to_loss(rows) if col == 1 else []
            for key in (k for k in keys if k not in same):
                xs, ys = _series(rows, x_key, key)
                name = f"{stage} {key}" + (f" (= {', '.join(same)})" if key == "loss" and same else "")
                if ys:
                    style = series_style(lines[col])
                    lines[col] += 1
                    line = go.Scatter(
                        x=xs,
                        y=ys,
                        mode="lines+markers",
                        name=name,
                        line=style["line"],
                        marker={**style["marker"], **markers},
                    )
                    fig.add_trace(line, row=1, col=col)
    for swa in (r for r in records if r.get("kind") == "swa" and r.get("val_auroc") is not None):
        # The weight average belongs to no single epoch: a star after the last one it averaged.
        epochs = [r["epoch"] for r in records if r.get("kind") == "epoch" and r.get("stage") == swa.get("stage")]
        verdict = "kept" if swa.get("kept") else "not kept"
        fig.add_trace(
            go.Scatter(
                x=[(max(epochs) if epochs else 0) + 0.5],
                y=[swa["val_auroc"]],
                mode="markers",
                marker={"symbol": "star", "size": 14},
                name=f"weight average of {swa.get('epochs_averaged', '?')} epochs: val_auroc ({verdict})",
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2, **_whole_epoch_ticks(records))
    fig.update_layout(title="Training curves", colorway=list(OKABE_ITO))
    return fig


def swa_label(stage: str, record: Mapping[str, Any]) -> str:
    """How a stochastic weight average is named beside its stage: which epochs it averaged and whether the run
    kept it as its weights (the trainer keeps it only when it beats the best epoch on validation)."""
    kept = "kept as the run's weights" if record.get("kept") else "not kept"
    return f"{stage}: weight average of {record.get('epochs_averaged', '?')} epochs ({kept})"


def compare_runs_figure(records_by_run: Mapping[str, Sequence[Mapping[str, Any]]], key: str = "val_auroc") -> go.Figure:
    """One per-epoch line of `key` (e.g. val_auroc, val_bacc) for each run and stage, to compare runs, and a
    star for each stochastic weight average, which belongs to no epoch (`swa_label` names it)."""
    fig = go.Figure()
    lines = 0
    for name, records in records_by_run.items():
        epochs = [r for r in one_based_epochs(records) if r.get("kind") == "epoch"]
        stages = list(dict.fromkeys(r.get("stage", "train") for r in epochs))
        for stage in stages:
            xs, ys = _series([r for r in epochs if r.get("stage", "train") == stage], "epoch", key)
            if ys:
                label = name if len(stages) == 1 else f"{name} ({stage})"
                style = series_style(lines)
                lines += 1
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label, **style))
        for swa in (r for r in records if r.get("kind") == "swa" and r.get(key) is not None):
            # As in training_curves_figure: a star after the last epoch the average took in.
            stage = swa.get("stage", "train")
            last = max((r["epoch"] for r in epochs if r.get("stage", "train") == stage and "epoch" in r), default=0)
            fig.add_trace(
                go.Scatter(
                    x=[last + 0.5],
                    y=[swa[key]],
                    mode="markers",
                    marker={"symbol": "star", "size": 14},
                    name=f"{name}: {swa_label(stage, swa)}",
                )
            )
    fig.update_layout(title=f"{key} per epoch", xaxis_title="epoch", yaxis_title=key, colorway=list(OKABE_ITO))
    fig.update_xaxes(**_whole_epoch_ticks(one_based_epochs([r for rs in records_by_run.values() for r in rs])))
    return fig


def _images(n: int) -> str:
    """ "1 image", "1,204 images": a count said as a reader would."""
    return f"{n:,} image{'' if n == 1 else 's'}"


# Text alternatives (WCAG 1.1.1): each chart's one or two plain sentences, computed from the data its figure is
# drawn from, shown under it, so a screen-reader user (or a reader skimming) gets what the lines and bars say.
def finite_number(value: Any) -> float | None:
    """A finite float, or None for a missing, non-numeric or NaN value: a summary says what it cannot read."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    number = float(value)
    return number if np.isfinite(number) else None


def _trend(first: float, last: float) -> str:
    """ "rose", "fell" or "stayed" as the curve went, at the summary's 3 decimals."""
    return "rose" if round(last - first, 3) > 0 else "fell" if round(last - first, 3) < 0 else "stayed"


def _finite_series(records: Sequence[Mapping[str, Any]], x_key: str, y_key: str) -> list[tuple[Any, float]]:
    """(x, y) of the records whose y is a finite number (a NaN AUROC of a one-class epoch is left out)."""
    pairs = []
    for i, r in enumerate(records):
        y = finite_number(r.get(y_key))
        if y is not None:
            pairs.append((r.get(x_key, i), y))
    return pairs


def _epoch_metric_words(epochs: Sequence[Mapping[str, Any]], key: str, label: str) -> str:
    """How one per-epoch metric went: first and last value with their epochs and the best one, or that it has
    none (an epoch not validated yet)."""
    pairs = _finite_series(epochs, "epoch", key)
    if not pairs:
        return f"no {label} recorded yet"
    (x0, y0), (x1, y1) = pairs[0], pairs[-1]
    best_x, best_y = max(pairs, key=lambda pair: pair[1])  # the first of equal bests, as the trainer keeps
    if len(pairs) == 1:
        return f"{label} {y0:.3f} at epoch {x0} (one epoch validated)"
    best = ", best)" if best_x == x1 else f"); best {best_y:.3f} (epoch {best_x})"
    return f"{label} {_trend(y0, y1)} from {y0:.3f} (epoch {x0}) to {y1:.3f} (epoch {x1}{best}"


def _loss_words(steps: Sequence[Mapping[str, Any]]) -> str:
    """How the loss per step went: its first and last value and over how many logged steps."""
    pairs = _finite_series(steps, "step", "loss")
    if not pairs:
        return ""
    if len(pairs) == 1:
        return f"loss {pairs[0][1]:.3g} after one logged step"
    first, last = pairs[0][1], pairs[-1][1]
    return f"loss {_trend(first, last)} from {first:.3g} to {last:.3g} over {len(pairs)} logged steps"


def training_curves_summary(records: Sequence[Mapping[str, Any]]) -> str:
    """`training_curves_figure`'s text alternative: per stage, validation AUROC's first, last and best epoch (counted
    from 1, as the chart) and the loss's first and last step, and each weight average's AUROC."""
    records = one_based_epochs(records)
    sentences = []
    for stage in dict.fromkeys(r.get("stage", "train") for r in records):
        mine = [r for r in records if r.get("stage", "train") == stage]
        steps = [r for r in mine if r.get("kind", "step") == "step"]
        epochs = [r for r in mine if r.get("kind") == "epoch"]
        if not steps and not epochs:
            continue
        parts = [_epoch_metric_words(epochs, "val_auroc", "validation AUROC")] if epochs else []
        parts += [words] if (words := _loss_words(steps)) else []
        if not parts:
            parts = ["no loss or validation figures logged yet"]
        for swa in (r for r in mine if r.get("kind") == "swa" and finite_number(r.get("val_auroc")) is not None):
            parts.append(f"{swa_label(stage, swa).removeprefix(f'{stage}: ')}: validation AUROC {swa['val_auroc']:.3f}")
        sentences.append(f"{stage}: " + "; ".join(parts) + ".")
    return " ".join(sentences) or "No training steps or epochs logged yet."


def compare_runs_summary(records_by_run: Mapping[str, Sequence[Mapping[str, Any]]], key: str = "val_auroc") -> str:
    """`compare_runs_figure`'s text alternative: each run's (and stage's) best `key`, at which epoch, and its last
    value, so runs compare without the lines."""
    sentences = []
    for name, records in records_by_run.items():
        epochs = [r for r in one_based_epochs(records) if r.get("kind") == "epoch"]
        stages = list(dict.fromkeys(r.get("stage", "train") for r in epochs)) or ["train"]
        for stage in stages:
            label = name if len(stages) == 1 else f"{name} ({stage})"
            pairs = _finite_series([r for r in epochs if r.get("stage", "train") == stage], "epoch", key)
            if not pairs:
                sentences.append(f"{label}: no {key} recorded.")
                continue
            best_x, best_y = max(pairs, key=lambda pair: pair[1])
            last_x, last_y = pairs[-1]
            tail = "" if last_x == best_x else f"; {last_y:.3f} at its last, epoch {last_x}"
            sentences.append(f"{label}: best {key} {best_y:.3f} at epoch {best_x} of {len(pairs)}{tail}.")
        for swa in (r for r in records if r.get("kind") == "swa" and finite_number(r.get(key)) is not None):
            sentences.append(f"{name}: {swa_label(swa.get('stage', 'train'), swa)}: {key} {swa[key]:.3f}.")
    return " ".join(sentences) or "No runs to compare."


def _fraction_value(value: Any) -> str:
    """A figure of the label-efficiency table at 3 decimals, "n/a" where it is missing or NaN."""
    number = finite_number(value)
    return "n/a" if number is None else f"{number:.3f}"


def label_efficiency_summary(table: pd.DataFrame) -> str:
    """`label_efficiency_figure`'s text alternative: each start's test AUROC and balanced accuracy (means over
    seeds) at the smallest and the largest labelled fraction, whether pre-training pays off where labels are few."""
    if table.empty:
        return "No label-efficiency results to show."
    sentences = []
    for init, rows in table.sort_values("fraction").groupby("init", sort=True):
        low, high = rows.iloc[0], rows.iloc[-1]
        if len(rows) == 1:
            sentences.append(
                f"{init}: test AUROC {_fraction_value(low['auroc_mean'])} and balanced accuracy "
                f"{_fraction_value(low['bacc_mean'])} at labelled fraction {low['fraction']:g} (one fraction only)."
            )
            continue
        sentences.append(
            f"{init}: test AUROC {_fraction_value(low['auroc_mean'])} at labelled fraction {low['fraction']:g} and "
            f"{_fraction_value(high['auroc_mean'])} at {high['fraction']:g}; balanced accuracy "
            f"{_fraction_value(low['bacc_mean'])} and {_fraction_value(high['bacc_mean'])}."
        )
    return " ".join(sentences)


def class_distribution_summary(df: pd.DataFrame) -> str:
    """`class_distribution_figure`'s text alternative: each split's image count and malignant share (in the
    figure's split order) and the largest diagnosis, the imbalance every metric is read against."""
    if df.empty:
        return "No images to count."
    splits = df["split"].astype(str)
    parts = []
    for split in _split_order(splits.unique()):
        rows = df[splits == split]
        malignant = pd.to_numeric(rows["malignant"], errors="coerce") if "malignant" in rows else pd.Series([])
        share = f", {malignant.mean():.1%} malignant" if malignant.notna().any() else ""
        parts.append(f"{split}: {_images(len(rows))}{share}")
    counts = df["dx"].astype(str).value_counts()
    largest = f" The largest class is {counts.index[0]} ({counts.iloc[0]:,} of {len(df):,} images)."
    return f"Images per diagnosis in {len(parts)} split{'s' if len(parts) != 1 else ''}. {'; '.join(parts)}." + largest


def embedding_summary(points: pd.DataFrame) -> str:
    """`embedding_figure`'s text alternative: how many points per diagnosis, in the map's legend order, and what
    the map is (distances on it are the projection's, not a measure this app checks)."""
    if points.empty:
        return "No images on the map."
    counts = points["dx"].astype(str).value_counts()
    order = [d for d in DIAGNOSIS_NAMES if d in counts] + sorted(set(counts.index) - set(DIAGNOSIS_NAMES))
    per_dx = ", ".join(f"{d} {counts[d]:,}" for d in order)
    n = len(points)
    return (
        f"A 2-D projection of the model's trunk features: {_images(n)}, one point each, "
        f"coloured and shaped by diagnosis ({per_dx})."
    )


def roc_summary(
    y_true: np.ndarray, p: np.ndarray, operating_points: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """`roc_figure`'s text alternative: AUROC over how many images, and each operating point's sensitivity and
    specificity on these data, as its marker shows them."""
    y = np.asarray(y_true).ravel()
    s = np.asarray(p, dtype=float).ravel()
    n_pos = int((y == 1).sum())
    if n_pos in (0, len(y)):
        return f"No ROC curve: the {len(y)} images are all of one class."
    said = [f"AUROC {roc_auc_score(y, s):.3f} over {_images(len(y))} ({n_pos:,} malignant)"]
    for name, _, sens, spec in _cut_off_rates(y, s, operating_points):
        said.append(f"{name} cut-off: sensitivity {sens:.3f}, specificity {spec:.3f}")
    return "; ".join(said) + "."


def pr_summary(y_true: np.ndarray, p: np.ndarray) -> str:
    """`pr_figure`'s text alternative: average precision against the prevalence line a useless classifier draws."""
    y = np.asarray(y_true).ravel()
    if not len(y) or not (y == 1).any():
        return "No precision–recall curve: no malignant image among these."
    return (
        f"AUPRC {average_precision_score(y, p):.3f}, against a prevalence of {float(y.mean()):.3f} "
        "(the precision of a classifier that guesses)."
    )


def reliability_summary(bins: Sequence[Mapping[str, Any]]) -> str:
    """`reliability_figure`'s text alternative: how many bins hold images and the bin farthest from the diagonal
    (predicted against observed), where the risk shown misleads most."""
    filled = [b for b in bins if b["count"] and finite_number(b["mean_pred"]) is not None]
    if not filled:
        return "No reliability points: no image was scored."
    worst = max(filled, key=lambda b: abs(b["frac_pos"] - b["mean_pred"]))
    return (
        f"{len(filled)} of {len(bins)} risk bins hold images. Farthest from perfect calibration: mean predicted "
        f"{worst['mean_pred']:.3f} against {worst['frac_pos']:.3f} observed malignant ({_images(worst['count'])})."
    )


def confusion_summary(cm: Sequence[Sequence[int]] | np.ndarray, classes: Sequence[str]) -> str:
    """`confusion_figure`'s text alternative: each true class's share predicted right (the colour of its diagonal
    cell) with its counts, and the most frequent mistake."""
    counts = np.asarray(cm, dtype=int)
    rows = counts.sum(axis=1)
    right = [
        f"{c} {counts[i, i] / rows[i]:.1%} ({counts[i, i]:,} of {rows[i]:,})" for i, c in enumerate(classes) if rows[i]
    ]
    if not right:
        return "No images in the confusion matrix."
    off = counts.copy()
    np.fill_diagonal(off, 0)
    said = f"Share of each true class predicted correctly: {', '.join(right)}."
    if off.max() > 0:
        i, j = np.unravel_index(int(off.argmax()), off.shape)
        said += f" Most frequent mistake: {classes[i]} predicted as {classes[j]} ({_images(int(off[i, j]))})."
    return said
