"""Augmentation lab: every augmentation parameter as a control, previewed on real or uploaded images."""

from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st

from dermai.augment import preview_masks, preview_pairs, preview_simclr_pairs
from dermai.config import AugmentConfig, augment_overrides, check_augment, simclr_augment_config
from dermai.intake import READ_FORMATS, read_image
from dermai.pixel_cache import decode_mask
from dermai.preprocess import InputSize, resize_input
from dermai.ui import formatting
from dermai.ui.dataset_view import images_by_id, mask_path, missing_masks_note
from dermai.ui.image_display import outline_mask, read_images, resize_note
from dermai.ui.widget_state import (
    TRAIN_AUGMENT_KEYS,
    forget_uploads,
    keep_widgets,
    restore_widgets,
    uploads_to_show,
    widget_value,
)
from pages._common import data_dir, dataset, or_stop, plain_errors

st.title("Augmentation lab")
st.caption("Defaults are the paper's supervised pipeline; the SimCLR preset is the two-view pretraining pipeline.")
state = st.session_state
state.setdefault("aug_seed", 0)

restore_widgets(state, {"aug_simclr": None})  # Streamlit drops a widget's value once another page is shown
simclr = st.toggle("SimCLR preset", key="aug_simclr")
preset = "simclr" if simclr else "paper"
base = simclr_augment_config() if simclr else AugmentConfig()
kept: list[str] = ["aug_simclr"]


def key(name: str) -> str:
    """Widget keys per preset: switching preset shows that preset's values. The value is the one set before
    another page was shown (else the preset's default), so the lab still shows what "Use for …" sent."""
    widget = f"aug_{preset}_{name}"
    restore_widgets(state, {widget: None})
    state.setdefault(widget, getattr(base, name))  # the default here, not in the widget, which may get a kept one
    kept.append(widget)
    return widget


def range_key(name: str) -> tuple[str, tuple[float, float]]:
    """key() for a select_slider, which is a range only when given a range as its value: the key with the value
    to give it (the kept one, else the preset's default), with nothing set in Session State besides."""
    widget = f"aug_{preset}_{name}"
    kept.append(widget)
    return widget, widget_value(state, widget, getattr(base, name))


# Steps of 0.05 from 0.25 to 4, and the default's 3/4 and 4/3 (torchvision's), which a 0.05 step misses: a slider
# on that grid could never return to the default once touched, and sent 1.35 for it.
CROP_RATIOS = sorted({round(0.25 + 0.05 * i, 2) for i in range(76)} | set(AugmentConfig().crop_ratio))
CARD_PADDING_PX, IMAGE_GAP_PX = 34, 10  # a bordered card's padding and border; the space between its images
MAX_IDS = 16  # typed or pasted ids previewed at most: a pasted column of hundreds would take minutes
UPLOAD = ("aug_kept_upload", "aug_showing_kept")  # the uploaded image's (name, bytes), kept as Predict keeps its own
# The preview's choices, kept across pages as the sliders are; the diagnosis once the folder's are known.
restore_widgets(state, dict.fromkeys(["aug_source", "aug_size", "aug_shape", "aug_count", "aug_ids", "aug_masks"]))
for widget, default in (("aug_size", 128), ("aug_count", 4)):
    state.setdefault(widget, default)  # the defaults here, not in the widgets, which may be given kept ones

ratio_key, ratio = range_key("crop_ratio")
controls, view = st.columns([1, 2], gap="large")
with controls.container(height=760):
    st.caption("Parameters")
    values = {
        "crop_scale": st.slider("Crop area (fraction)", 0.05, 1.0, step=0.05, key=key("crop_scale")),
        "crop_ratio": st.select_slider(
            "Crop aspect ratio", CROP_RATIOS, value=ratio, format_func=lambda r: f"{r:.2f}", key=ratio_key
        ),
        "rotation_degrees": st.slider("Rotation ± degrees", 0.0, 180.0, step=5.0, key=key("rotation_degrees")),
        "hflip_p": st.slider("Horizontal flip p", 0.0, 1.0, step=0.05, key=key("hflip_p")),
        "vflip_p": st.slider("Vertical flip p", 0.0, 1.0, step=0.05, key=key("vflip_p")),
        "brightness": st.slider("Brightness", 0.0, 1.0, step=0.05, key=key("brightness")),
        "contrast": st.slider("Contrast", 0.0, 1.0, step=0.05, key=key("contrast")),
        "saturation": st.slider("Saturation", 0.0, 1.0, step=0.05, key=key("saturation")),
        "hue": st.slider("Hue (fraction of the colour wheel)", 0.0, 0.5, step=0.01, key=key("hue")),
        "grayscale_p": st.slider("Grayscale p", 0.0, 1.0, step=0.05, key=key("grayscale_p")),
        "blur_p": st.slider("Blur p", 0.0, 1.0, step=0.05, key=key("blur_p")),
        "blur_sigma": st.slider("Blur sigma", 0.1, 5.0, step=0.1, key=key("blur_sigma")),
        "vignette_p": st.slider("Vignette p", 0.0, 1.0, step=0.05, key=key("vignette_p")),
        "hair_p": st.slider("Hair p", 0.0, 1.0, step=0.05, key=key("hair_p")),
        "color_constancy": st.checkbox(
            "Colour constancy (shades of grey)",
            key=key("color_constancy"),
            help="Removes a global colour cast. Used for fine-tuning, it becomes part of the model, so every "
            "image it later scores is corrected the same way.",
        ),
    }
    st.caption(f"Normalisation (undone for display): mean {base.mean}, std {base.std}.")
keep_widgets(state, kept)
cfg = dataclasses.replace(base, **values)
pipeline = "SimCLR pretraining" if simclr else "fine-tuning"
if controls.button(
    "Use in training",  # short: the parameters' column is narrow in an 800 px window ("Use for fine-tu…")
    help=f"The Training page's next run uses these settings for its {pipeline} augmentation",
):
    with plain_errors("Not used"):
        changed = augment_overrides(check_augment(cfg), base)
        state[TRAIN_AUGMENT_KEYS[preset]] = changed
        controls.success(
            f"The next training run's {pipeline} augmentation: "
            + (", ".join(changed) if changed else "the defaults")
            + "."
        )


def preview() -> None:
    """Image choice and the before/after and two-view grids."""
    # Side by side where they fit, else wrapped onto the next line: narrow columns split "square" in two.
    row = st.container(horizontal=True, gap="medium")
    left, middle, right = row.container(width=300), row.container(width=170), row.container(width=140)
    source = left.radio("Images", ["From the data folder", "Upload one"], horizontal=True, key="aug_source")
    width = middle.select_slider("Output width (px)", [64, 96, 128, 160, 224], key="aug_size")
    shape = right.radio(
        "Shape",
        ["square", "4:3"],
        horizontal=True,
        key="aug_shape",
        help="square: every image squashed to a square, as the paper trains (and the Training page's image width "
        "0); 4:3: HAM10000's own shape, as a run with an image width trains",
    )
    keep_widgets(state, ["aug_source", "aug_size", "aug_shape"])  # before any st.stop below
    size: InputSize = width if shape == "square" else (width * 3 // 4, width)
    pixels: np.ndarray | None = None
    masks: np.ndarray | None = None  # the chosen images' lesion masks, when the data folder has them all
    kept_upload: list[tuple[str, bytes]] = []
    shape_note: str | None = None  # an upload far from the input's shape, or tiny: said under the preview
    upload_notes: list[str] = []  # what reading the upload found (intake's notes), said under the preview
    names: list[str] = []  # each previewed image's name, for its alt text
    if source == "Upload one":
        reopened = "aug_upload" not in state  # Streamlit dropped the uploader's file while another page was shown
        upload = st.file_uploader("Image", key="aug_upload", help=READ_FORMATS)  # any type: intake says why not
        chosen_upload = [(upload.name, upload.getvalue())] if upload is not None else []
        kept_upload = uploads_to_show(state, chosen_upload, reopened, UPLOAD)
        if state.get(UPLOAD[1]):  # the kept image stands in for an empty uploader
            i1, i2 = st.columns([5, 1])
            i1.info(f"Showing {kept_upload[0][0]}, uploaded earlier in this session.")
            i2.button("Clear", key="aug_clear_kept", on_click=forget_uploads, args=(state, UPLOAD))
        if kept_upload:
            name, data = kept_upload[0]
            with plain_errors("Cannot use this file"):  # its message names the upload: escaped there
                intake = read_image(data, name)  # its notes (transparency, frames, damaged metadata) said too
                pixels = resize_input(intake.image, size)[None]
                shape_note = resize_note(intake.image.size, size)
                upload_notes = list(intake.warnings)
                names = [name]
    else:
        root = data_dir()
        if not root:
            st.error("No data folder found. Enter one in the sidebar, or upload an image.")
            st.stop()
        meta = or_stop("Cannot read the data folder", dataset, root).meta
        a, b = st.columns(2)
        diagnoses = ["any", *sorted(meta["dx"].dropna().unique())]
        restore_widgets(state, {"aug_dx": diagnoses})  # a diagnosis this folder still has
        dx = a.selectbox("Diagnosis", diagnoses, key="aug_dx")
        count = b.slider("How many", 1, 8, key="aug_count")
        state.setdefault("aug_pick", 0)
        if st.button("Other images", help="Sample other images from the data folder"):
            state["aug_pick"] += 1
        typed = st.text_input(
            "Or image ids (comma-separated)",
            key="aug_ids",
            placeholder="ISIC_0024306, …",
            help="These images, whatever the diagnosis and count above",
        )
        keep_widgets(state, ["aug_dx", "aug_count", "aug_ids"])  # before the st.stop for ids not in the folder
        pool = meta if dx == "any" else meta[meta["dx"] == dx]
        chosen = pool.sample(n=min(count, len(pool)), random_state=state["aug_pick"])
        by_id, missing = images_by_id(meta, typed)
        if missing and by_id.empty:
            st.error(f"None of these ids is in the data folder: {formatting.markdown_plain(', '.join(missing))}")
            st.stop()
        if missing:
            st.warning(f"Not in the data folder, so not shown: {formatting.markdown_plain(', '.join(missing))}")
        if len(by_id) > MAX_IDS:
            st.caption(f"Showing the first {MAX_IDS} of the {len(by_id)} images found: each is augmented four times.")
        if not by_id.empty:
            chosen = by_id.head(MAX_IDS)
        read, images, problems = read_images(list(chosen["path"]), size)
        for problem in problems:
            st.error(f"Not previewed: {problem}")
        if not images:
            st.stop()
        chosen = chosen.iloc[read]
        pixels = np.stack(images)
        names = list(chosen["image_id"])
        mask_files = [mask_path(root, i) for i in chosen["image_id"]]
        if no_masks := missing_masks_note(list(chosen["image_id"]), mask_files):
            st.caption(no_masks)  # in place of the box, which needs every image's mask
        elif st.checkbox(
            "Outline the lesion masks",
            key="aug_masks",
            help="Each augmented image with its lesion mask, given the same crop, flips and rotation: what the "
            "lesion-mask loss (Training page) asks the model to find",
        ):
            with plain_errors("Cannot read the lesion masks"):
                masks = np.stack(
                    [decode_mask(str(f), str(p), size) for f, p in zip(mask_files, chosen["path"], strict=True)]
                )
        keep_widgets(state, ["aug_masks"])

    if pixels is None:  # nothing uploaded yet, or the error above says why the images could not be used
        if source == "Upload one" and not kept_upload:
            st.info("Upload an image to preview.")
        st.stop()
    if st.button("Reseed", help="Draw new random augmentations"):
        state["aug_seed"] += 1
    st.caption(f"Seed {state['aug_seed']}")
    seed = state["aug_seed"]
    with plain_errors("Invalid augmentation settings"):
        pairs = preview_pairs(pixels, cfg, size, seed)
        after, caption = [p[1] for p in pairs], "augmented"
        if masks is not None:
            warped = preview_masks(pixels, masks, cfg, size, seed)
            after, caption = [outline_mask(a, m) for a, m in zip(after, warped, strict=True)], "augmented + mask"
        st.subheader("Before / after")
        cards([[p[0] for p in pairs], after], ["original", caption], ["original", caption], names, width)
        for note in [*upload_notes, *([shape_note] if shape_note else [])]:
            st.warning(formatting.markdown_plain(note))  # an upload's notes start with its name
        st.subheader("SimCLR two-view pairs")
        st.caption("Two independent augmentations of the same image: what the contrastive loss pulls together.")
        views = preview_simclr_pairs(pixels, cfg, size, seed + 7919)  # not the same draws as above
        views_ab = [[v[0] for v in views], [v[1] for v in views]]
        cards(views_ab, ["view a", "view b"], ["SimCLR view a", "SimCLR view b"], names, width)


def cards(shown: list[list[np.ndarray]], captions: list[str], views: list[str], names: list[str], width: int) -> None:
    """Each image's versions (`shown[k][i]`: version k of image i) side by side in a bordered card (one above
    the other when the window is too narrow), the cards as many to a row as fit: before, in a narrow window two
    rows of originals above two rows of augmented images lost which was which. `views` name the versions in
    the alt text (a caption never becomes it)."""
    row = st.container(horizontal=True, gap="medium")
    for i, name in enumerate(names):
        alt = [f"{name}, {view}" for view in views]
        card = row.container(border=True, width=CARD_PADDING_PX + len(shown) * (width + IMAGE_GAP_PX))
        card.image([versions[i] for versions in shown], caption=captions, width=width, alt=alt)


with view:
    preview()
