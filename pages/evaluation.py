"""Evaluation: the chosen weights scored on their own val/test split with the images behind its errors, the
label-efficiency experiment and an embedding map of the trunk features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dermai import review
from dermai.context import fields_text, weighted_fields
from dermai.evaluate import compare_weights, evaluate, predictions_csv
from dermai.metrics import SUBGROUP_MIN_PER_CLASS
from dermai.plots import (
    confusion_figure,
    confusion_summary,
    embedding_figure,
    embedding_summary,
    label_efficiency_figure,
    label_efficiency_summary,
    pr_figure,
    pr_summary,
    reliability_figure,
    reliability_summary,
    roc_figure,
    roc_summary,
)
from dermai.predict import tta_mismatch, validated_tta
from dermai.ui import evaluation_view, formatting, predict_view, runs_view, sidebar_state, weights_menu, widget_state
from dermai.weights import untrained_classifier
from pages._common import (
    cached_meta,
    current_meta,
    data_dir,
    describe_chart,
    plain_errors,
    show_images,
    warn_if_weights_gone,
    weights_path,
)

REPO = Path(__file__).resolve().parent.parent


@st.cache_data(show_spinner=False, max_entries=8)
def scored(
    weights: str, mtime: tuple[int, int], data: str, split: str, tta: bool
) -> tuple[dict[str, Any], pd.DataFrame]:
    """evaluate(), once per weights version, data folder, split and TTA setting."""
    return evaluate(weights, data or None, split=split, tta=tta)


@st.cache_data(show_spinner=False, max_entries=8)
def compared(
    a: str, a_mtime: tuple[int, int], b: str, b_mtime: tuple[int, int], data: str, split: str
) -> dict[str, Any]:
    """compare_weights(), once per pair of weights versions, data folder and split."""
    return compare_weights(a, b, data or None, split=split)


@st.cache_data(show_spinner=False, max_entries=8)
def projected(weights: str, mtime: tuple[int, int], data: str, split: str, limit: int, method: str) -> pd.DataFrame:
    """The embedding map, once per setting."""
    return evaluation_view.embedding_map(weights, data or None, split, limit, method)


@st.cache_data(show_spinner=False, max_entries=8)
def label_efficiency(folder: str, stamp: tuple[int, int] | None) -> tuple[pd.DataFrame | None, dict[str, Any] | None]:
    """The experiment's summary table and its figure (as plotly's dict), once per summary.csv version
    (`summary_stamp`): read and drawn again on every rerun, they took about 0.2 s of each click on the page."""
    table = evaluation_view.read_label_efficiency(folder)
    return table, None if table is None else label_efficiency_figure(table).to_dict()


def summary_stamp(folder: str) -> tuple[int, int] | None:
    """A cache key part that changes when the summary.csv `folder` names (the file, or the one in it) is written,
    appears or goes: its mtime and size, the folder's mtime and -1 while it has none, None when neither exists."""
    path = Path(folder)
    try:
        for summary in (path, path / "summary.csv"):
            if summary.is_file():
                return summary.stat().st_mtime_ns, summary.stat().st_size
        return (path.stat().st_mtime_ns, -1) if path.is_dir() else None
    except OSError:  # gone while looked at: read afresh (its error names it)
        return None


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# The tiers' cut-offs were chosen on the validation split: on test they are re-checked, on val they are scored on
# the images they were tuned to, so those figures are optimistic, not a check.
CUT_OFFS_CAPTION = {
    "test": "Validated cut-offs re-checked (not re-tuned) on this split",
    "val": "The cut-offs as chosen on this split (val): these figures are the ones they were tuned to reach, not an "
    "independent check; the test split re-checks them",
}


SPLIT_HELP = (
    "test / val: the weights' own held-out images (a copy of their training folder elsewhere works too: its split "
    "is rebuilt and checked). all: every image of another (external) folder, less those the weights were "
    "trained or tuned on"
)


def metric_row() -> Any:
    """A row of figures that wraps in a narrow window instead of cutting their labels ("AUROC mal…")."""
    return st.container(horizontal=True, gap="large")


def headline_row(
    where: str,
    auroc: float | None,
    ci: list[float] | None,
    balanced_accuracy: float | None,
    ece: float | None,
    count: tuple[str, Any, str],
    delta: str | None = None,
) -> None:
    """The headline figures of one scoring: AUROC (with its interval), balanced accuracy, ECE and an image count
    (`count`: label, value, help). With `delta`, the change from the image alone, they are the figures with
    patient context, and their help says so."""
    context = ", with patient context" if delta is not None else ""
    row = metric_row()
    with row.container(width="content"):
        st.metric(
            f"AUROC ({where})",
            _f(auroc),
            delta=delta,
            help=f"Malignant vs benign on the {where} split"
            + (f"{context}; the change is from the image alone" if context else "; 95% CI, lesion-grouped bootstrap"),
        )
        if ci:
            st.caption(f"95% CI {ci[0]:.3f}–{ci[1]:.3f}")
    row.metric(
        f"Bal. accuracy ({where})",
        _f(balanced_accuracy),
        help=f"Balanced accuracy over the 7 diagnoses on the {where} split"
        + (context or ". One diagnosis for every image: 1/7 = 0.143 (malignant vs benign, all-benign: 0.500)"),
        width="content",
    )
    row.metric(
        f"ECE ({where})",
        _f(ece),
        help=f"Expected calibration error of p(malignant) on the {where} split{context}",
        width="content",
    )
    label, value, help_text = count
    row.metric(label, value, help=help_text, width="content")


def show_context(ctx: dict[str, Any], report: dict[str, Any], where: str, weights_meta: dict[str, Any]) -> None:
    """A sound patient-context fit's figures: headline metrics (with the change from the image alone) and its
    tiers' sensitivity and specificity. `weights_meta`: the weights' JSON, whose context model says which fields
    it weighs."""
    headline_row(
        where,
        ctx["auroc"],
        ctx.get("auroc_ci"),
        ctx["balanced_accuracy"],
        ctx["ece_malignant"],
        (
            "With context",
            ctx["n_with_context"],
            f"Images of the {where} split with some context (age, sex or site) recorded",
        ),
        delta=f"{ctx['auroc'] - report['auroc']:+.3f}",
    )
    rows = [
        {"tier": n, "sensitivity": r["sensitivity"], "specificity": r["specificity"]}
        for n, r in ctx["thresholds"].items()
    ]
    if rows:
        used = fields_text(weighted_fields(weights_meta))  # a field of weight 0 is left out, as `predict` leaves it
        st.caption(f"Each image with the {used} its metadata records, as `predict` would score it")
        st.table(pd.DataFrame(rows).set_index("tier").style.format("{:.3f}", na_rep="n/a"))


def show_unreliable_context(ctx: dict[str, Any]) -> None:
    """A weak patient-context fit (`context.weak_fit`): the reason, and its figures only in a collapsed expander
    marked unreliable. As headline metrics beside the image-only ones (with a green or red change) they read
    as results, whatever the warning above them said."""
    reason = ctx["unreliable"]
    st.warning(f"{reason[0].upper()}{reason[1:]}. They are kept out of the headline, in the box below.")
    with st.expander("Unreliable figures from this fit (not results)", expanded=False):
        st.table(evaluation_view.unreliable_context_figures(ctx).set_index("figure"))


def show_report(report: dict[str, Any], predictions: pd.DataFrame, weights_meta: dict[str, Any]) -> None:
    """Headline figures, tier table and the four plots. `weights_meta`: the scored weights' JSON (`show_context`)."""
    ci = report.get("auroc_ci")
    calib = report.get("calibration") or {}
    where = report.get("split") or "this split"
    external = evaluation_view.external_note(report)
    if external:
        getattr(st, external[0])(external[1])
    headline_row(
        where,
        report.get("auroc"),
        ci,
        report.get("balanced_accuracy"),
        calib.get("ece_malignant"),
        ("Images", report.get("n_images"), f"Images scored: the whole {where} split"),
    )
    table = evaluation_view.tier_table(report)
    if table is not None:
        st.caption(CUT_OFFS_CAPTION.get(report.get("split"), CUT_OFFS_CAPTION["test"]))
        st.table(table.style.format("{:.3f}", na_rep="n/a"))
    ctx = report.get("context")
    if ctx:
        st.subheader("With patient context")
        if ctx.get("unreliable"):  # a fit on a handful of images: its figures are not measurements to read
            show_unreliable_context(ctx)
        else:
            show_context(ctx, report, where, weights_meta)
    for note in evaluation_view.notes_below(report):
        st.caption(f"Note: {note}")
    a, b = st.columns(2)
    if report.get("binary"):
        y, p = predictions["malignant"].to_numpy(), predictions["p_malignant"].to_numpy()
        a.plotly_chart(roc_figure(y, p, report.get("operating_points")), width="stretch")
        describe_chart(a, roc_summary(y, p, report.get("operating_points")))
        b.plotly_chart(pr_figure(y, p), width="stretch")
        describe_chart(b, pr_summary(y, p))
    if calib.get("reliability_malignant"):
        a.plotly_chart(reliability_figure(calib["reliability_malignant"]), width="stretch")
        describe_chart(a, reliability_summary(calib["reliability_malignant"]))
    if report.get("multiclass"):
        m = report["multiclass"]
        b.plotly_chart(confusion_figure(m["confusion_matrix"], m["classes"]), width="stretch")
        describe_chart(b, confusion_summary(m["confusion_matrix"], m["classes"]))
    if report.get("subgroups"):
        show_subgroups(report["subgroups"])
    show_failures(predictions)
    st.download_button(
        "Download per-image predictions (CSV)",
        predictions_csv(predictions),  # the file `evaluate --predictions` writes, full precision
        file_name="dermai_predictions.csv",
        mime="text/csv",
    )


SUBGROUP_FIELDS = {"age": "Age band", "sex": "Sex", "site": "Body site"}


def show_subgroups(subgroups: list[dict[str, Any]]) -> None:
    """The same figures within each age band, sex and body site: where the model is weaker than its average."""
    st.subheader("By subgroup")
    present = [f for f in SUBGROUP_FIELDS if any(row["field"] == f for row in subgroups)]
    field = st.radio("Group by", present, format_func=SUBGROUP_FIELDS.get, horizontal=True, key="eval_subgroup")
    least = SUBGROUP_MIN_PER_CLASS
    st.caption(
        f"AUROC only where a group has at least {least} malignant and {least} benign images; sensitivity and "
        "specificity at the validated refer cut-off. Each figure with its 95% interval in brackets: small groups "
        "have wide ones."
    )
    st.dataframe(
        evaluation_view.subgroup_table(subgroups, field),
        hide_index=True,
        width="stretch",
        placeholder=formatting.MISSING,  # a rate without images to count: a dash, not the word "None"
        column_config={
            name: st.column_config.Column(help=text) for name, text in evaluation_view.SUBGROUP_HELP.items()
        },
    )


KIND_LABELS = {"missed": "Missed malignant", "false_alarm": "False alarms", "confusion": "Confusions"}
GALLERY = 12


def show_failures(predictions: pd.DataFrame) -> None:
    """The images behind the errors: missed malignant lesions, false alarms, confused diagnoses."""
    st.subheader("Where it fails")
    has_tiers = predictions["tier"].notna().any()
    kinds = list(KIND_LABELS) if has_tiers else ["confusion"]  # no validated cut-offs: no tiers to miss
    kind = st.radio("Show", kinds, format_func=KIND_LABELS.get, horizontal=True, key="eval_fail")
    st.caption(review.REVIEW_KINDS[kind])
    if kind == "missed":
        rows = review.missed_malignant(predictions)
        st.caption(f"{len(rows)} of {int((predictions['malignant'] == 1).sum())} malignant images.")
    elif kind == "false_alarm":
        rows = review.false_alarms(predictions)
        st.caption(f"{len(rows)} of {int((predictions['malignant'] == 0).sum())} benign images.")
    else:
        pairs = review.confusion_pairs(predictions)
        if pairs.empty:
            st.info("No diagnosis errors to show (or the folder's labels are not the model's diagnoses).")
            return
        options = [f"{r.dx} → {r.predicted} ({r.n})" for r in pairs.itertuples()]
        choice = pairs.iloc[options.index(st.selectbox("Diagnosis → predicted", options, key="eval_pair"))]
        rows = review.confused(predictions, choice["dx"], choice["predicted"])
    if rows.empty:
        st.success("None in this split.")
        return
    note = evaluation_view.gallery_note(kind, len(rows), GALLERY)
    if note:
        st.caption(note)
    rows = rows.head(GALLERY)
    show_images(st, list(rows["path"]), [review.caption(r) for _, r in rows.iterrows()], width=150)


st.title("Evaluation")
weights, data = weights_path(), data_dir()
warn_if_weights_gone()
mtime = sidebar_state.weights_mtime(weights)
st.caption(
    f"Weights {formatting.code_span(weights)} · data {formatting.code_span(data or '(from the weights config)')}"
)
meta: dict[str, Any] = {}  # stays empty when the weights' JSON cannot be read (the error says why)
with plain_errors("Cannot read the weights"):
    meta = current_meta()
    untrained = untrained_classifier(meta)
    if untrained:
        st.warning(f"{untrained[0].upper()}{untrained[1:]}: these scores measure a classifier that never learned.")
    for caution in weights_menu.weights_cautions(meta):  # as Home and Predict say it
        st.warning(caution)

# Streamlit drops a page's widget state when another page is shown: these come back as they were left, so the
# report, comparison or map asked for is still there on return.
state = st.session_state
splits = evaluation_view.evaluation_splits(meta, data)  # "all" for a folder other than the weights' own
cmp_splits = [s for s in ("all", "val", "test") if s in splits]  # as evaluation's, val before test
KEPT = {"eval_split": splits, "eval_tta": None, "cmp_split": cmp_splits, "eval_le": None}
KEPT |= {"eval_proj": ["pca", "tsne"], "eval_limit": None}
widget_state.restore_widgets(state, KEPT)
state.setdefault("eval_le", str(REPO / "docs" / "label_efficiency"))  # defaults here, not in widgets given kept ones
state.setdefault("eval_limit", 500)

st.header("Scores on the weights' own split" if "all" not in splits else "Scores on an external folder")
c1, c2, c3 = st.columns([1, 1, 2])
split = c1.radio("Split", splits, horizontal=True, key="eval_split", help=SPLIT_HELP)
validated = validated_tta(meta)
predict_view.default_tta(state, "eval_tta", weights, validated)  # as the tiers' cut-offs were validated
tta = c2.checkbox("TTA", key="eval_tta", help=predict_view.tta_help(validated, bool(meta.get("operating_points"))))
tta_differs = tta_mismatch(meta, tta)
if tta_differs:
    st.caption(f":warning: {tta_differs[0].upper()}{tta_differs[1:]}.")
request = (weights, mtime, data, split, tta)
if c3.button("Evaluate", type="primary"):
    st.session_state["eval_request"] = request
if st.session_state.get("eval_request") == request:
    with (
        plain_errors("Cannot evaluate", evaluation_view.evaluation_words),
        st.spinner("Scoring the split (bootstrap intervals included)…"),
    ):
        show_report(*scored(*request), meta)
else:
    st.info("Press Evaluate to score these weights (takes a while on a CPU; results are cached).")

# Short labels, so that the table fits an 800 px window ("95% CI high" and the verdict were off it); each
# column's help says the rest.
_number = st.column_config.NumberColumn
COMPARE_COLUMNS = {
    "metric": st.column_config.TextColumn(
        "metric",
        pinned=True,
        help="AUROC: malignant vs benign. Bal. acc.: balanced accuracy over the seven diagnoses (mean recall)",
    ),
    "A": _number("A", format="%.3f", help="These weights (the sidebar's)"),
    "B": _number("B", format="%.3f", help="The weights chosen above"),
    "B − A": _number("B − A", format="%+.3f", help="B's figure minus A's on the same images"),
    "95% CI low": _number(
        "CI low", format="%+.3f", help="Low end of the 95% interval of B − A (lesions resampled for both together)"
    ),
    "95% CI high": _number("CI high", format="%+.3f", help="High end of the 95% interval of B − A"),
    "p": _number(
        "p", format="%.3f", help="Two-sided bootstrap probability of a difference of the other sign than B − A's"
    ),
    "verdict": st.column_config.TextColumn(
        "verdict", help="Which is higher when the interval leaves out 0; an interval spanning 0 is noise"
    ),
}
st.header("Compare with other weights")
st.caption(
    "These weights (A) and another model (B) on the same images: the paired difference B − A with a 95% interval "
    "that resamples lesions for both together. An interval spanning 0 is noise. On val or test B must share A's "
    "split; on all (an external folder) any B, scored less the images either model was trained or tuned on."
)
m1, m2, m3 = st.columns([2, 1, 1])
cmp_split = m2.radio(  # read before B's list, which depends on it
    "Split",
    cmp_splits,
    horizontal=True,
    key="cmp_split",
    help="choose on val; test reports; all: every image of this external folder, less those either model was "
    "trained or tuned on (models of different splits: only all)",
)
listed = weights_menu.weight_choices(current=weights, read=cached_meta)  # each JSON read once: the sidebar's cache
others = weights_menu.compare_choices(listed, weights, cmp_split, cached_meta)
widget_state.restore_widgets(state, {"cmp_other": list(others)})
other = m1.selectbox("B", list(others), format_func=others.get, key="cmp_other") if others else None
cmp_request = (weights, mtime, other, sidebar_state.weights_mtime(other or ""), data, cmp_split)
if other and m3.button("Compare"):
    st.session_state["cmp_request"] = cmp_request
if not others:
    st.info(weights_menu.no_comparison_hint(meta, cmp_split))
elif st.session_state.get("cmp_request") == cmp_request:
    with (
        plain_errors("Cannot compare", evaluation_view.evaluation_words),
        st.spinner("Scoring both models on the split…"),
    ):
        result = compared(*cmp_request)
        external = evaluation_view.external_note(result)  # the images left out, as the evaluation above says it
        if external:
            getattr(st, external[0])(external[1])
        st.dataframe(
            runs_view.comparison_table(result),
            hide_index=True,
            width="stretch",
            column_config=COMPARE_COLUMNS,
            placeholder=formatting.MISSING,
        )
        b_path = formatting.code_span(str(result["b"]))
        st.caption(f"{result['split']} split, {result['n_images']} images · B = {b_path}")

st.header("Label efficiency")
folder = st.text_input("Experiment folder", key="eval_le").strip()
with plain_errors("Cannot read the experiment"):
    table, figure = label_efficiency(folder, summary_stamp(folder)) if folder else (None, None)
    if not folder:  # else the folder the app was started in
        st.info("Enter the folder of a label-efficiency experiment (its summary.csv is read).")
    elif table is None:
        st.info(
            f"No summary.csv in {formatting.code_span(str(folder))} (run `python -m dermai experiment "
            "label-efficiency --out DIR`)."
        )
    else:
        number = st.column_config.NumberColumn
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            placeholder=formatting.MISSING,  # one seed: no SD
            column_config={
                "fraction": number("labelled fraction", format="%g"),
                "init": st.column_config.TextColumn("start", help="random weights or the SimCLR trunk"),
                "auroc_mean": number("test AUROC", format="%.3f", help="malignant vs benign, mean over seeds"),
                "auroc_sd": number("± sd", format="%.3f"),
                "bacc_mean": number("test bal. acc.", format="%.3f", help="seven classes, mean over seeds"),
                "bacc_sd": number("± sd", format="%.3f"),
                "val_auroc_mean": number("val AUROC", format="%.3f"),
                "n_labelled": number("labelled images", format="%.0f", help="mean over seeds"),
                "n_seeds": number("seeds", format="%d"),
            },
        )
        st.plotly_chart(figure, width="stretch")
        describe_chart(st, label_efficiency_summary(table))

st.header("Embedding map")
st.caption("Trunk features of up to 1000 images of the split, projected to 2-D. Select points to see the images.")
e1, e2, e3 = st.columns([1, 1, 2])
method = e1.radio("Projection", ["pca", "tsne"], horizontal=True, key="eval_proj")
limit = e2.number_input("Images", 50, 1000, step=50, key="eval_limit")
widget_state.keep_widgets(state, [*KEPT, "cmp_other"])
map_request = (weights, mtime, data, split, int(limit), method)
if e3.button("Compute map"):
    st.session_state["map_request"] = map_request
if st.session_state.get("map_request") == map_request:
    with plain_errors("Cannot compute the map", evaluation_view.evaluation_words), st.spinner("Extracting features…"):
        points = projected(*map_request)
        fig = embedding_figure(points, f"{method.upper()} of trunk features ({split}, {len(points)} images)")
        event = st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"), key="eval_map")
        describe_chart(st, embedding_summary(points))
        chosen = [pt["customdata"][0] for pt in event.selection.points if pt.get("customdata")][:8]
        if chosen:
            rows = points.set_index("image_id").loc[chosen]
            captions = [f"{i} · {d}" for i, d in zip(chosen, rows["dx"], strict=True)]
            show_images(st, list(rows["path"]), captions, width=150)
        else:
            st.caption("Click or lasso points to show their images here.")
