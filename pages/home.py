"""Home: what the tool is and is not, the model card's key figures, the data and its licence."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dermai.metrics import TIER_MEANINGS
from dermai.ui import dataset_view, formatting, weights_menu
from dermai.weights import WeightsError
from pages._common import current_meta, warn_if_weights_gone, weights_path

st.title("dermai — dermoscopy triage workbench")
st.warning(
    "**A research and triage aid, not a diagnosis.** It scores a dermoscopy image for how urgently a specialist "
    "should see the lesion. It does not replace clinical examination, histopathology or a dermatologist."
)
st.markdown(
    """
**What it is:** a SimCLR ResNet-18 trained on dermoscopy images that gives seven-class diagnosis probabilities,
a calibrated malignancy score (melanoma, basal cell carcinoma, actinic keratosis / Bowen's), a triage tier
set on validation data, an out-of-distribution warning and a saliency map of what the model looked at.

**Where to go:** *Predict* scores one image (with a printable report), or several as a worklist sorted by
urgency; *Evaluation* scores a model on held-out lesions, shows the images behind its errors and compares two
models with paired intervals; *Training* launches, watches and compares runs; *Dataset browser* and
*Augmentation lab* show the data and what training does to it.

**What it is not:** a medical device. It has seen only HAM10000-style dermoscopy (mostly fair skin, one
device family per centre); photos from phones, other skin types or other lesions are outside what it was
validated on, and a *routine* tier is never an all-clear.
"""
)


TESTED_TIER_COLUMNS = {
    "sensitivity": "sensitivity (val)",
    "specificity": "specificity (val)",
    "test_sensitivity": "sensitivity (test)",
    "test_specificity": "specificity (test)",
}
st.header("Model card")
path = weights_path()
warn_if_weights_gone()
try:
    meta = current_meta()
except WeightsError as exc:
    st.warning(f"No model to describe: {exc}. Choose other weights in the sidebar (e.g. a finished training run's).")
else:
    card = weights_menu.model_card(meta)
    st.caption(f"Weights: {formatting.code_span(str(path))}")
    if card["untrained"]:
        st.warning(weights_menu.untrained_advice(card["untrained"]))
    else:
        for caution in weights_menu.weights_cautions(meta):
            st.warning(caution)
    # Side by side where they fit, wrapping onto a second row in a narrow window: a short label (the split
    # kept in it, the rest in its help) and a value shown whole, never cut to "96 and …".
    row = st.container(horizontal=True, gap="large")
    if card["auroc"] is not None:
        ci = card["auroc_ci"]
        with row.container(width="content"):
            st.metric(
                f"AUROC ({card['auroc_split']})",
                f"{card['auroc']:.3f}",
                help=f"Malignant vs benign on the {card['auroc_split']} split; "
                + (f"95% CI {ci[0]:.3f}–{ci[1]:.3f}" if ci else "no interval stored"),
            )
            if ci:
                st.caption(f"95% CI {ci[0]:.3f}–{ci[1]:.3f}")
    else:
        row.metric("AUROC", "n/a", help="Malignant vs benign: no figure stored with these weights", width="content")
    row.metric(
        "Input size",
        card["input_sizes"],
        help="The images' size as the network reads them (height × width when not square; an ensemble's "
        "members may differ)",
        width="content",
    )
    row.metric("Training status", str(card["status"] or "?"), width="content")
    if card["tiers"]:
        table = pd.DataFrame(card["tiers"]).set_index("tier")
        st.subheader(weights_menu.tier_table_title(meta, tested="test_sensitivity" in table))
        if "test_sensitivity" in table:
            table = table.rename(columns=TESTED_TIER_COLUMNS)
        st.table(table.style.format("{:.3f}", na_rep="n/a"))
        for tier, figures in card["tier_validation"].items():  # how sure: Predict's and the report's words
            st.caption(f"{tier.capitalize()} cut-off on the validation split: {figures}.")
        for tier in ("urgent", "refer", "routine", "ungradable"):
            st.markdown(f"**{tier}** — {TIER_MEANINGS[tier]}")
    else:
        st.info("These weights carry no validated operating points (run `python -m dermai calibrate`): no tiers.")
    if card["context"]:
        st.caption(weights_menu.context_caption(card["context"]))
    for problem in card["problems"]:
        st.warning(f"The weights' JSON is not as expected: {problem}.")
    if not card["ood"]:
        st.caption("No out-of-distribution statistics stored: unusual images are not flagged.")

st.header("Data")
st.markdown(
    "Trained and evaluated on **HAM10000**: 10,015 dermoscopy images of pigmented lesions (7 diagnoses, "
    "1,954 malignant), split by lesion so no lesion is on both sides of a split."
)
st.info(dataset_view.LICENCE)
