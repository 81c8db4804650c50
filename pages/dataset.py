"""Dataset browser: filter the data folder, page through images, see distributions and one image in detail."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from dermai.plots import class_distribution_figure, class_distribution_summary
from dermai.ui import dataset_view, formatting, image_display, widget_state
from pages._common import dataset, describe_chart, folder_summary, or_stop, plain_errors, require_data, show_images

PER_PAGE = 24
TILE_PX = 140  # a grid tile: wide enough for an image id ("ISIC_0027419") on one line of its caption

st.title("Dataset browser")
root = require_data()
data = or_stop("Cannot read the data folder", dataset, root)
meta = data.meta
st.caption(
    f"{formatting.code_span(str(data.root))} · {len(meta)} images · {data.mode} · grouped by {data.group_key} · "
    "split seed 0"
)

FILTERS = ["ds_dx", "ds_kind", "ds_split", "ds_age", "ds_sex", "ds_site"]
state = st.session_state
options = {
    "ds_dx": sorted(meta["dx"].dropna().unique()),
    "ds_split": sorted(meta["split"].unique()),
    "ds_sex": sorted(meta["sex"].unique()),
    "ds_site": sorted(meta["localization"].unique()),
}
# Streamlit drops the filters when another page is shown: the ones set before come back (those still offered).
widget_state.restore_choices(state, options)
widget_state.restore_widgets(state, {"ds_kind": ["all", "benign", "malignant"]})
ages = meta["age"].dropna()
low, high = (math.floor(ages.min()), math.ceil(ages.max())) if len(ages) else (0, 100)  # 89.5 → 90
high = max(high, low + 1)
widget_state.restore_range(state, "ds_age", low, high)
with st.expander("Filters", expanded=True):
    c1, c2, c3 = st.columns(3)
    dx = c1.multiselect(
        "Diagnosis",
        options["ds_dx"],
        key="ds_dx",
        disabled=not options["ds_dx"],
        placeholder="Choose options" if options["ds_dx"] else "This folder records only benign or malignant",
    )
    kind = c1.radio("Benign / malignant", ["all", "benign", "malignant"], horizontal=True, key="ds_kind")
    splits = c2.multiselect("Split", options["ds_split"], key="ds_split")
    unknown = int(meta["age"].isna().sum())
    age = c2.slider(
        "Age",
        low,
        high,
        key="ds_age",
        help=f"The {unknown} images with no recorded age are shown only while the range spans every age."
        if unknown
        else None,
    )
    sexes = c3.multiselect("Sex", options["ds_sex"], key="ds_sex")
    sites = c3.multiselect("Localisation", options["ds_site"], key="ds_site")
widget_state.keep_widgets(state, FILTERS)

rows = dataset_view.filter_meta(meta, dx, kind, splits, age, sexes, sites)
st.subheader(f"{len(rows)} images match")


def grid() -> pd.DataFrame:
    """One page of the matching images; returns the rows it shows (the detail view picks among them)."""
    pages = max(1, math.ceil(len(rows) / PER_PAGE))
    widget_state.restore_widgets(state, {"ds_page": range(1, pages + 1)})  # the page left, back with its filters
    page = st.number_input(f"Page (of {pages})", 1, pages, key="ds_page")
    widget_state.keep_widgets(state, ["ds_page"])
    shown = rows.iloc[(page - 1) * PER_PAGE : page * PER_PAGE]
    # Tiles of a fixed width, as many to a row as the window holds: six columns in a narrow window were too
    # thin for an id, which broke mid-word ("ISIC_0027 419").
    tiles = st.container(horizontal=True, gap="small")
    for _, row in shown.iterrows():
        show_images(tiles.container(width=TILE_PX), [row["path"]], [dataset_view.caption(row)])
    return shown


def detail(shown: pd.DataFrame) -> None:
    """One image of the grid's page, its lesion mask, metadata and the other images of its lesion."""
    image_id = st.selectbox("Image", list(shown["image_id"]), key="ds_detail")
    row = rows[rows["image_id"] == image_id].iloc[0]
    a, b = st.columns(2)
    show_images(a, [row["path"]], [image_id])
    mask = dataset_view.mask_path(data.root, image_id)
    if mask is not None:
        with plain_errors("Cannot overlay the lesion mask"):
            overlaid = image_display.mask_overlay(row["path"], mask)
            b.image(overlaid, caption="lesion mask (green)", width="stretch", alt=f"Lesion mask of {image_id} in green")
    else:
        b.info("No lesion mask for this image.")
    fields = ["image_id", "lesion_id", "dx", "malignant", "age", "sex", "localization", "split", "path"]
    st.dataframe(dataset_view.detail_values(row, fields), width="stretch")  # an unrecorded age: "—", not "nan"
    siblings = meta[(meta["group"] == row["group"]) & (meta["image_id"] != image_id)]
    if len(siblings):
        # Grouped splits keep these on one side: no model trains on one view of a lesion and is tested on another.
        where = ", ".join(sorted({*siblings["split"], row["split"]}))
        key = data.group_key
        unit = "patient" if key == "patient_id" else "lesion" if key.startswith("lesion_id") else "patient or lesion"
        st.caption(f"{len(siblings)} other image(s) of this {unit} (split: {where})")
        show_images(st, list(siblings["path"]), list(siblings["image_id"]), width=150)


# No match: said where each filtered view would be; the whole folder's table still shows.
no_match = dataset_view.no_match_words(meta, dx, kind) if rows.empty else ""
if no_match:
    st.info(no_match)
else:
    shown = grid()

st.subheader("Distributions")
# Chart and table side by side where both fit, else the table below the chart: a narrow column cut its "total".
charts = st.container(horizontal=True, gap="large")
left, right = charts.container(width=480), charts.container(width="content")
if no_match:
    left.info(no_match)
else:
    named = dataset_view.with_class_names(rows)
    left.plotly_chart(class_distribution_figure(named), width="stretch")
    describe_chart(left, class_distribution_summary(named))
full = folder_summary(root)
right.caption("Whole folder: images per class and split")
right.table(full)

st.subheader("One image in detail")
if no_match:
    st.info(no_match)
else:
    detail(shown)
