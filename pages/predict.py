"""Predict: one uploaded or camera image → diagnosis probabilities, malignancy score, triage tier, OOD warning
and a saliency overlay, with a downloadable report. Several uploads → a worklist, most urgent first, with the
details of any one of them. Uploads stay in memory; nothing is written to disk. The last uploads, camera shot,
patient context, per-image body sites and saliency settings are kept in the session, so they are still there
after a visit to another page."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dermai.context import describe as describe_context
from dermai.context import unused_fields
from dermai.intake import READ_FORMATS, IntakeError, read_image
from dermai.palette import TIER_ICONS
from dermai.predict import OOD_NOTE, cut_off_validation, tta_mismatch
from dermai.report import cut_off_text, diagnosis_legend, prediction_html, score_text
from dermai.saliency import CAM_METHODS, OVERLAY_LEGEND, overlay, overlay_caption
from dermai.ui import formatting, image_display, predict_view, sidebar_state, weights_menu, widget_state
from dermai.weights import untrained_classifier
from dermai.worklist import (
    TOP_PROBABILITY,
    UNLIKE_TRAINING,
    WorklistEntry,
    score_images,
    tier_counts,
    worklist,
    worklist_csv,
)
from pages._common import (
    PLAIN_ERRORS,
    current_meta,
    describe_chart,
    or_stop,
    predictor,
    warn_if_weights_gone,
    weights_path,
)

UNRELIABLE_OUTPUT = "Model output for an ungradable image (unreliable)"
TIER_BOX = {"urgent": st.error, "refer": st.warning, "ungradable": st.info, "routine": st.success}

st.title("Predict")
st.caption("A research and triage aid, not a diagnosis. Dermoscopy images only.")
weights = weights_path()
warn_if_weights_gone()  # the chosen run's weights were deleted: the tier below is the default model's
mtime = sidebar_state.weights_mtime(weights)  # read once: the model and every result cached below go by it
CANNOT_LOAD = "Cannot load the model (choose other weights in the sidebar)"
SCORING_FAILED = "Cannot score the images (not a fault of the files)"
meta = or_stop(CANNOT_LOAD, current_meta)
untrained = untrained_classifier(meta)
if untrained:
    st.error(weights_menu.untrained_advice(untrained))
    st.stop()
for caution in weights_menu.weights_cautions(meta):  # the page's one weak-weights caveat: `show` skips its note
    st.warning(caution)
model, lock = or_stop(CANNOT_LOAD, predictor, weights, mtime)
state = st.session_state

SOURCES = ["Upload a file", "Camera"]
widget_state.restore_widgets(state, {"pred_source": SOURCES})
source = st.radio("Image source", SOURCES, horizontal=True, key="pred_source")
if source == "Camera":
    slot = widget_state.CAMERA
    reopened = "pred_camera" not in state  # Streamlit dropped the shot while another page (or source) was shown
    shot = st.camera_input("Take a dermoscopy photo", key="pred_camera")
    uploads = widget_state.uploads_to_show(state, [(shot.name, shot.getvalue())] if shot else [], reopened, slot)
else:
    slot = widget_state.UPLOADS
    reopened = "pred_upload" not in state  # Streamlit dropped the uploader's files while another page was shown
    # Any file type: the uploader's own refusal is a tooltip nobody sees; intake names the file and says why.
    chosen = st.file_uploader(
        "Dermoscopy images: one, or several for a worklist sorted by urgency",
        accept_multiple_files=True,
        key="pred_upload",
        help=f"{READ_FORMATS}. An iPhone's HEIC photo must be exported as JPEG or PNG first.",
    )
    uploads = widget_state.uploads_to_show(state, [(u.name, u.getvalue()) for u in chosen or []], reopened, slot)
if state.get(slot[1]):  # the kept images stand in for an empty widget
    i1, i2 = st.columns([5, 1])
    plural = "image" if len(uploads) == 1 else "images"
    kept = "the photo taken" if slot == widget_state.CAMERA else f"the {len(uploads)} {plural} uploaded"
    i1.info(f"Showing {kept} earlier in this session.")
    i2.button("Clear", key="pred_clear_kept", on_click=widget_state.forget_uploads, args=(state, slot))
widget_state.keep_widgets(state, ["pred_source"])
c1, c2, c3, c4 = st.columns([1, 1.35, 0.85, 0.8])  # room for "malignant (summed)"; TTA is short
targets = {"predicted class": None, "malignant (summed)": "malignant", **{c: c for c in model.classes}}
SALIENCY = {"pred_method": list(CAM_METHODS), "pred_target": list(targets), "pred_opacity": None, "pred_tta": None}
widget_state.restore_widgets(state, SALIENCY)
state.setdefault("pred_opacity", 0.4)  # the default here rather than in the slider, which may be given a kept one
method = c1.selectbox(
    "Saliency method",
    list(CAM_METHODS),
    key="pred_method",
    format_func=lambda name: f"{name} (slow)" if name == "scorecam" else name,
    help="Score-CAM runs the model once per channel of the last block (512 passes, per member for an ensemble): "
    "far slower than the others (with Grad-CAM a prediction of the shipped model takes about 0.1 s on a CPU: "
    "docs/benchmarks.md).",
)
target = targets[c2.selectbox("Explain", list(targets), key="pred_target")]
opacity = c3.slider("Overlay opacity", 0.0, 1.0, step=0.05, key="pred_opacity")
predict_view.default_tta(state, "pred_tta", weights, model.tta_validated)  # as the tiers were validated
tta = c4.checkbox(
    "TTA",
    help="Test-time augmentation. " + predict_view.tta_help(model.tta_validated, bool(model.operating_points)),
    key="pred_tta",
)
widget_state.keep_widgets(state, list(SALIENCY))
tta_differs = tta_mismatch(model.meta, tta)
if tta_differs:
    st.caption(f":warning: {tta_differs[0].upper()}{tta_differs[1:]}.")
NOT_GIVEN = "not given"
CONTEXT_LABELS = {"age": "age", "sex": "sex", "site": "body site"}  # the fields as the expander names them
age, sex, site = None, NOT_GIVEN, NOT_GIVEN
if model.context_model:
    asked = [CONTEXT_LABELS[name] for name in ("age", "sex", "site") if name in model.context_fields]
    with st.expander(f"Patient context (optional): {', '.join(asked) or 'none used'}"):
        st.caption(
            "Each field given adds its evidence to the image's, with weights and tiers validated on held-out "
            "lesions (split by lesion, and by patient where recorded). Leave a field blank when unknown: it then "
            "adds nothing."
        )
        used = model.context_fields
        column = dict(zip(used, st.columns(3), strict=False))  # the fields asked for, side by side
        sexes, site_options = [NOT_GIVEN, "female", "male"], [NOT_GIVEN, *model.context_sites]
        widget_state.restore_widgets(state, {"pred_age": None, "pred_sex": sexes, "pred_site": site_options})
        if "age" in used:
            age = column["age"].number_input("Age (years)", 0, 120, value=None, step=1, key="pred_age")
        if "sex" in used:
            sex = column["sex"].selectbox("Sex", sexes, key="pred_sex")
        if "site" in used:
            site = column["site"].selectbox("Body site", site_options, key="pred_site")
        widget_state.keep_widgets(state, ["pred_age", "pred_sex", "pred_site"])
        if len(uploads) > 1:
            st.caption(
                "With several images the context applies to every one of them (one patient's lesions); each "
                "image's body site can be changed under the worklist."
                if "site" in used
                else "With several images the context applies to every one of them (one patient's lesions)."
            )
        if unused := unused_fields(model.meta):  # each with its own reason
            st.caption(f"Not asked: {weights_menu.unused_fields_text(unused)}.")


def patient_context(image_site: str) -> Any:
    """The checked context of one image: the shared age and sex, and this image's body site."""
    given_sex = None if sex == NOT_GIVEN else sex
    return model.parse_context(age, given_sex, None if image_site == NOT_GIVEN else image_site)


def analyse(data: bytes, name: str, image_site: str | None = None) -> dict[str, Any]:
    """Prediction and saliency for one upload (with its own body site, else the shared one), kept for this
    session only (the last upload)."""
    image_site = site if image_site is None else image_site
    digest = hashlib.sha256(data).hexdigest()
    cache_key = (digest, weights, mtime, method, target, tta, age, sex, image_site)  # the loaded model's mtime
    cached = st.session_state.get("pred_last")
    if cached and cached["key"] == cache_key:
        return cached
    context = patient_context(image_site)
    with lock:
        intake = read_image(data, name)
        prediction = model.predict(intake, tta=tta, context=context)
        saliency = model.explain(intake, method=method, target=target, shown=prediction)  # the top class shown
    result = {
        "key": cache_key,
        "name": name,
        "image": image_display.display_image(intake.image),  # the model scored the full image
        "prediction": prediction,
        "heatmap": saliency.heatmap,
    }
    st.session_state["pred_last"] = result
    return result


def analysed(data: bytes, name: str, image_site: str | None = None) -> dict[str, Any] | None:
    """`analyse`, or None after one plain st.error: the file's fault (it cannot be read as an image) said as
    such, any other (the model, the context) not blamed on the file. Under a spinner: a large photo takes
    seconds, and without one the page shows the last run's content greyed out, as if nothing were happening."""
    try:
        with st.spinner(f"Analysing {formatting.markdown_plain(name)}…"):
            return analyse(data, name, image_site)
    except IntakeError as exc:  # its message names the upload, which markdown must not act on
        st.error(f"Cannot analyse this file: {formatting.markdown_plain(str(exc))}")
    except PLAIN_ERRORS as exc:
        st.error(f"Cannot score this image (not a fault of the file): {formatting.markdown_plain(str(exc))}")
    return None


SCORE_HELP = "Malignancy score: the probability of a malignant diagnosis (akiec + bcc + mel)"


def show(result: dict[str, Any]) -> None:
    """Tier, score, warnings, probabilities, original beside overlay, downloads."""
    p = result["prediction"]
    ungradable = p.ungradable
    box = TIER_BOX.get(p.tier, st.info)
    left, right = st.columns([1, 1])
    with left:
        box(f"**Triage tier: {p.tier.upper()}**\n\n{p.tier_meaning}", icon=TIER_ICONS.get(p.tier))
        cut_offs = cut_off_text(p)
        if cut_offs:  # the score means something only beside the cut-offs that tiered it
            st.caption(f"Tier cut-offs: {cut_offs}.")
        if validation := cut_off_validation(p):
            st.caption(validation)
        if ungradable:  # a number here (0.000) would read as reassurance
            st.metric("p(malignant)", formatting.MISSING, help=predict_view.NO_SCORE_HELP)
        elif p.context:
            given = describe_context(p.context)
            st.metric(
                "p(malignant), with context",
                score_text(p.p_malignant),
                help=f"{SCORE_HELP}, with the patient context given: {given}",
                delta=f"{p.p_malignant - (p.p_malignant_image_only or 0.0):+.3f} from the context",
                delta_color="off",
            )
            st.caption(f"Image alone: {score_text(p.p_malignant_image_only)} · context used: {given}")
            effects = p.context_effects or {}
            st.caption(
                "Each field's effect on p(malignant) (with it minus without it): "
                + ", ".join(f"{k} {effects[k]:+.3f}" for k in p.context)
            )
        else:
            st.metric("p(malignant)", score_text(p.p_malignant), help=SCORE_HELP)
        flagged = predict_view.feature_gate_flagged(p)
        if flagged:
            st.warning(
                "**Out of distribution:** this image does not look like the dermoscopy images the model was "
                f"trained on (score {p.ood_score:.2f} > threshold {p.ood_threshold:.2f}); its "
                "probabilities are unreliable, so it gets no tier."
            )
        elif p.ood is None:
            st.caption("No out-of-distribution check is stored with these weights.")
        for note in p.warnings:
            if not (note == model.weak_note or (flagged and note == OOD_NOTE)):  # a box above says it already
                st.warning(formatting.markdown_plain(note))  # an intake note starts with the file name
    blended = overlay(result["image"], result["heatmap"], alpha=opacity)
    with right:
        if ungradable:  # the model's output on an image it cannot read: out of the main view, said unreliable
            with st.expander(UNRELIABLE_OUTPUT, expanded=False):
                st.caption("Not a result: the image is ungradable, so these figures say nothing about the lesion.")
                model_output(p, blended)
                overlay_download(st, result, blended, "Overlay (PNG, unreliable)")
        else:
            model_output(p, None)
        st.caption(f"{p.elapsed_ms:.0f} ms · weights {formatting.code_span(str(weights))}")
    a, b = st.columns(2)
    a.image(result["image"], caption="original", width="stretch", alt=f"The uploaded image {result['name']}")
    if not ungradable:
        b.image(blended, caption=overlay_caption(method), width="stretch", alt=overlay_alt(result["name"], p))
        b.caption(OVERLAY_LEGEND)  # the report's legend: what the colours mean, and what they do not
    downloads(result, p, blended)


def model_output(p: Any, blended: Any | None) -> None:
    """The diagnosis probabilities as a bar chart, and the saliency overlay when given (ungradable: both inside
    the expander that says they are unreliable)."""
    probs = sorted(p.probabilities.items(), key=lambda item: item[1])
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in probs],
            y=[k for k, _ in probs],
            orientation="h",
            text=[f"{v:.1%}" for _, v in probs],
            textposition="outside",
            cliponaxis=False,  # "99.8%" beside a full bar, not cut to "99"
        )
    )
    fig.update_layout(
        title="Diagnosis probabilities",
        height=300,
        xaxis={"range": [0, 1.1]},
        margin={"l": 10, "r": 50, "t": 40, "b": 10},
    )
    st.plotly_chart(fig, width="stretch", key="pred_probs")
    describe_chart(st, predict_view.probabilities_summary(p.probabilities))
    if legend := diagnosis_legend(list(p.probabilities)):
        st.caption(legend)
    if blended is not None:
        st.image(blended, caption=f"{method} overlay (unreliable)", width="stretch", alt=overlay_alt("the image", p))


def overlay_alt(name: str, p: Any) -> str:
    """The overlay's text for a screen reader (a caption never becomes an image's alt text): what the map
    shows and for which output."""
    explained = target or p.top_diagnosis
    return (
        f"{method} saliency map over {name}: bright colours mark the regions that most raised the score of {explained}"
    )


def downloads(result: dict[str, Any], p: Any, blended: Any) -> None:
    """The HTML and JSON reports and, for a gradable image, the overlay, named after the upload (an ungradable
    image's overlay is offered only inside the expander that says it is unreliable)."""
    stem = predict_view.download_stem(result["name"])  # "a.jpg (2)" → a_2: not the first a.jpg's file names
    d0, d1, d2 = st.columns(3)
    # Short labels with a download icon: three columns at an 800 px window leave about 150 px each.
    d0.download_button(
        "Report (HTML)",
        prediction_html(p, result["name"], weights, result["image"], blended, method).encode(),
        file_name=f"{stem}_dermai.html",
        mime="text/html",
        icon=":material/download:",
        help="A printable page: tier, malignancy score and cut-off, warnings, diagnosis probabilities, the "
        "image and its overlay",
    )
    d1.download_button(
        "Report (JSON)",
        predict_view.prediction_report(p, result["name"], weights, method),
        file_name=f"{stem}_dermai.json",
        mime="application/json",
        icon=":material/download:",
        help="The same report as data, for records or scripts"
        + (" (its `unreliable` field says why this image's scores are no result)" if p.ungradable else ""),
    )
    if not p.ungradable:
        overlay_download(d2, result, blended, "Overlay (PNG)")


def overlay_download(where: Any, result: dict[str, Any], blended: Any, label: str) -> None:
    """The saliency overlay as shown, as a PNG named after the upload and the method, at `where`."""
    stem = predict_view.download_stem(result["name"])
    where.download_button(
        label,
        image_display.png_bytes(blended),
        file_name=f"{stem}_{method}.png",
        mime="image/png",
        icon=":material/download:",
        help="The saliency overlay as shown",
    )


def sites_per_image(names: list[str]) -> dict[str, str]:
    """Each image's body site: the shared one, unless changed in a small table (one patient's lesions are
    often on different sites). Only asked when the model uses the site."""
    if "site" not in model.context_fields:
        return dict.fromkeys(names, site)
    shared = None if site == NOT_GIVEN else site
    with st.expander("Body site per image (optional)", expanded=False):
        key = "pred_sites_" + hashlib.sha256("\n".join([*names, str(shared)]).encode()).hexdigest()[:16]
        start = widget_state.editor_rows(state, key, [shared] * len(names))  # the kept sites on return
        # No site of its own: the shared field's words, not the editor's "None" (a site other weights knew, too)
        start = [value if value in model.context_sites else NOT_GIVEN for value in start]
        edited = st.data_editor(
            pd.DataFrame({"image": names, "site": start}),
            hide_index=True,
            disabled=["image"],
            column_config={
                "site": st.column_config.SelectboxColumn(
                    "body site",
                    options=[NOT_GIVEN, *model.context_sites],
                    help="This image's body site; not given: none (the context then adds nothing for the site)",
                )
            },
            key=key,
        )
    given = [value if value in model.context_sites else None for value in edited["site"]]  # "not given": no site
    widget_state.keep_rows(state, key, given)
    return {name: value or NOT_GIVEN for name, value in zip(edited["image"], given, strict=True)}


def score_batch(files: dict[str, bytes], sites: dict[str, str]) -> list[WorklistEntry]:
    """Each upload's prediction (no saliency), or why it could not be read (`score_images`: the CLI's rule, so
    only an unreadable image is a row; a model or context error is raised); kept for this session so that
    changing the selection or the overlay does not score the batch again."""
    settings = (weights, mtime, tta, age, sex)  # the time `model` was loaded at, not a fresh reading
    keys = {name: (name, hashlib.sha256(data).hexdigest(), *settings, sites[name]) for name, data in files.items()}
    cached = st.session_state.get("pred_batch", {})
    todo = [(name, data) for name, data in files.items() if keys[name] not in cached]
    for entry, _ in score_images(model, todo, tta, lambda name: patient_context(sites[name]), lock=lock):
        cached[keys[entry.image]] = entry
    fresh = {keys[name]: cached[keys[name]] for name in files}
    st.session_state["pred_batch"] = fresh  # only this batch's results are kept
    return list(fresh.values())


def worklist_on_screen(table: pd.DataFrame) -> pd.DataFrame:
    """The worklist as shown: without the TTA column (the checkbox above says it; the CSV keeps it) and the OOD
    verdict in words. A checkbox column draws a missing verdict (weights with no OOD check, an unreadable file)
    as an empty box, which reads as "passed"; as text it is the table's dash."""
    shown = predict_view.worklist_shown(table.drop(columns="tta"), model.weak_note)  # the banner above says it
    return shown.assign(ood=shown["ood"].map({True: "yes", False: "no"}))


# Rank and image pinned at the left, then tier and p(malignant): in a narrow window the table scrolls sideways
# to the top diagnosis's probability, the OOD verdict, the context and the notes (wide enough to read; the CSV
# download has them whole). Those two headers are plain words (`worklist.TOP_PROBABILITY`, `UNLIKE_TRAINING`).
WORKLIST_COLUMNS = {
    "rank": st.column_config.NumberColumn("rank", width=50, pinned=True),
    "image": st.column_config.TextColumn("image", width=130, pinned=True),
    "tier": st.column_config.TextColumn("tier", width=80),
    # the scores' display is `predict_view.worklist_styled`'s ("< 0.001" as on the single-image view): no format here
    "p_malignant": st.column_config.NumberColumn(
        "p(malignant)", width=95, help=f"{SCORE_HELP}, with the patient context when given"
    ),
    "top_diagnosis": st.column_config.TextColumn("top diagnosis", width=100),
    "p_top_diagnosis": st.column_config.NumberColumn(
        TOP_PROBABILITY, width=105, help="The top diagnosis's probability (0 to 1); the CSV's p_top_diagnosis"
    ),
    "ood": st.column_config.TextColumn(  # yes, no, or a dash: not checked
        UNLIKE_TRAINING,
        width=155,
        help="Out of distribution (OOD): yes, the image is unlike the dermoscopy images the model was trained on, "
        "so its scores are unreliable; no; or — when not checked (no OOD statistics, unreadable). The CSV's ood",
    ),
    "p_malignant_image_only": st.column_config.NumberColumn(
        "p(mal.), image only", width=130, help="p(malignant) from the image alone, without the context"
    ),
    "context": st.column_config.TextColumn("context", width=260, help="The patient context used for this image"),
    # last, after the scores (`worklist_shown`); a long note is cut at the column's width: listed in full below
    "notes": st.column_config.TextColumn(
        "notes", width=640, help="Why a file could not be read, or other notes; each in full below the table"
    ),
}


def show_notes(table: pd.DataFrame) -> None:
    """Each image's notes in full under the worklist: in the table a long one (why a file could not be scored)
    was cut at the column's width, even at 1280 px."""
    noted = predict_view.worklist_notes(table)
    if noted:
        plain = formatting.markdown_plain
        lines = [f"- **{plain(image)}**: {plain(note)}" for image, note in noted]
        st.markdown("Notes in full:\n" + "\n".join(lines))


def show_worklist(files: dict[str, bytes]) -> None:
    """The batch as a worklist (tier counts, table, CSV), then one chosen image in full."""
    sites = sites_per_image(list(files))
    with st.spinner(f"Scoring {len(files)} images…"):
        table = worklist(or_stop(SCORING_FAILED, score_batch, files, sites))
    st.subheader(f"Worklist: {len(table)} images, most urgent first")
    counts = tier_counts(table)
    for column, (tier, n) in zip(st.columns(len(counts)), counts.items(), strict=True):
        column.metric(tier.capitalize(), n)
    shown = worklist_on_screen(table)
    st.dataframe(
        predict_view.worklist_styled(shown),
        hide_index=True,
        width="stretch",
        placeholder=formatting.MISSING,  # an unreadable file has no scores: a dash, not the word "None"
        column_config=WORKLIST_COLUMNS,
        key="pred_worklist",
    )
    show_notes(shown)
    if legend := diagnosis_legend(model.classes):
        st.caption(legend)
    st.download_button("Download worklist (CSV)", worklist_csv(table), file_name="dermai_worklist.csv", mime="text/csv")
    # Options are the images themselves, their rank and tier only a label: a setting that re-ranks the batch
    # (TTA, an age) keeps the image looked at instead of jumping to #1.
    labels = {row.image: f"#{row.rank} {row.image} ({row.tier})" for row in table.itertuples()}
    widget_state.restore_widgets(state, {"pred_detail": list(labels)})  # the image looked at before, if still listed
    chosen = st.selectbox(
        "Details for", list(labels), key="pred_detail", format_func=lambda image: labels.get(image, str(image))
    )
    widget_state.keep_widgets(state, ["pred_detail"])
    row = table.set_index("image").loc[chosen]
    if row["tier"] == "unreadable":
        st.error(f"Cannot analyse this file: {formatting.markdown_plain(str(row['notes']))}")
        return
    outcome = analysed(files[chosen], chosen, sites[chosen])
    if outcome:
        show(outcome)


if not uploads:
    st.info(f"Upload a dermoscopy image ({READ_FORMATS}) to get a triage tier, or several to get a worklist.")
    st.stop()
if len(uploads) > 1:
    show_worklist(
        dict(zip(predict_view.unique_names([name for name, _ in uploads]), (data for _, data in uploads), strict=True))
    )
    st.stop()
outcome = analysed(uploads[0][1], uploads[0][0])
if outcome:
    show(outcome)
