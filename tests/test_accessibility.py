"""What a clinician with a colour-vision deficiency, or one using a screen reader, must not miss: every tier and
every plotted series told apart by more than colour, colours that stay apart under a simulated deuteranopia and
protanopia, readable contrast, and text for every image."""

from __future__ import annotations

import io
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dermai.palette import DEUTERANOPIA, PROTANOPIA, TIER_ICONS, colour_distance, contrast_ratio
from dermai.plots import (
    class_distribution_figure,
    compare_runs_figure,
    embedding_figure,
    label_efficiency_figure,
    pr_figure,
    reliability_figure,
    roc_figure,
    training_curves_figure,
)
from dermai.report import prediction_html
from tests.conftest import HAM
from tests.test_app_pages import alerts, app_env, assert_clean, page  # noqa: F401  (app_env: a fixture)
from tests.test_report import prediction

TIERS = ("urgent", "refer", "routine", "ungradable")
DEFICIENCIES = {"deuteranopia": DEUTERANOPIA, "protanopia": PROTANOPIA}
APART = 20.0  # CIE76 ΔE: told apart at a glance (2.3 is only just noticeable)
REPORT_BACKGROUND = "#fafafa"  # the report's tier box (`.tier` in dermai.report.STYLE)


def test_the_colour_maths_gives_the_known_values() -> None:
    """The checks below rest on these: black on white is 21:1, a colour against itself 1:1 and 0 apart, and
    the simulations leave grey alone but fold red onto green's side for a deuteranope."""
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#777777") == pytest.approx(1.0)
    assert contrast_ratio("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)  # WCAG's lightest AA grey
    assert colour_distance("#336699", "#336699") == 0.0
    assert colour_distance("#808080", "#404040", DEUTERANOPIA) == pytest.approx(colour_distance("#808080", "#404040"))
    red, green = "#d62728", "#2ca02c"  # plotly's default red and green
    assert colour_distance(red, green) > 80 and colour_distance(red, green, DEUTERANOPIA) < colour_distance(red, green)


def report_tier(tier: str) -> tuple[str, str]:
    """(colour, word) of the tier as the HTML report prints it: the coloured box's border and its bold word."""
    page = prediction_html(prediction(tier=tier), "a.jpg", "w", np.zeros((8, 8, 3), np.uint8))
    match = re.search(r'<div class="tier" style="border-color: (#[0-9a-fA-F]{6})"><b style="color: \1">(.*?)</b>', page)
    assert match, f"no coloured tier box for {tier} in the report"
    return match.group(1), match.group(2)


@pytest.mark.parametrize("tier", TIERS)
def test_the_reports_tier_is_written_as_a_word_in_a_colour_readable_on_its_box(tier: str) -> None:
    """The colour is not the only cue, and the word in it is readable (WCAG AA, 4.5:1): refer's orange
    (#e65100) was 3.6:1 on the box's grey."""
    colour, word = report_tier(tier)
    assert word == tier.upper()
    assert contrast_ratio(colour, REPORT_BACKGROUND) >= 4.5, (tier, colour)


@pytest.mark.parametrize("deficiency", DEFICIENCIES)
def test_the_reports_tier_colours_stay_apart_for_colour_blind_readers(deficiency: str) -> None:
    """Urgent's red and routine's green (#b71c1c, #1b5e20) were 8.5 apart for a protanope (95 with normal
    vision): both read as one dark olive."""
    colours = {tier: report_tier(tier)[0] for tier in TIERS}
    for (a, first), (b, second) in itertools.combinations(colours.items(), 2):
        distance = colour_distance(first, second, DEFICIENCIES[deficiency])
        assert distance >= APART, f"{a} {first} and {b} {second}: {distance:.1f} apart under {deficiency}"


def test_every_image_in_the_report_has_alt_text() -> None:
    """A screen reader announces an <img> without alt by its file name, here a page-long data URI."""
    image = np.zeros((8, 8, 3), np.uint8)
    page = prediction_html(prediction(), "a.jpg", "w", image, image, "gradcam")
    tags = re.findall(r"<img\b[^>]*>", page)
    assert len(tags) == 2
    alts = [re.search(r"\balt='([^']*)'", tag) for tag in tags]
    assert all(alt and alt.group(1).strip() for alt in alts), tags
    assert [alt.group(1) for alt in alts if alt][0] == "original"


def line_styles(fig: go.Figure) -> dict[str, list[tuple[str, str | None]]]:
    """Per panel (x axis), each line's non-colour look: its dash, and its marker shape when it shows markers
    (plotly's defaults, solid and circle, when unset)."""
    panels: dict[str, list[tuple[str, str | None]]] = {}
    for trace in fig.data:
        mode = trace.mode or "lines"
        if "lines" not in mode:
            continue  # a lone marker (an operating point, a weight average) is named beside it or in the legend
        symbol = (trace.marker.symbol or "circle") if "markers" in mode else None
        panels.setdefault(trace.xaxis or "x", []).append((trace.line.dash or "solid", symbol))
    return panels


def assert_lines_differ_beyond_colour(fig: go.Figure) -> None:
    panels = line_styles(fig)
    assert panels, "no lines drawn"
    for axis, styles in panels.items():
        assert len(set(styles)) == len(styles), f"lines in panel {axis} differ only by colour: {styles}"


def test_training_curves_lines_differ_in_dash_and_marker_not_only_colour() -> None:
    """The loss parts (loss, ce, ntxent, mask_loss) and the epoch metrics (val_auroc, val_bacc, …) were plain
    lines, told apart only by plotly's colours, two of which (#00cc96, #ff6692) are 3.5 apart for a deuteranope."""
    steps = [
        {"stage": "pretrain", "kind": "step", "step": s, "loss": 5.0 - s / 10, "ntxent": 5.0 - s / 10} for s in (0, 10)
    ]
    steps += [
        {"stage": "finetune", "kind": "step", "step": s, "loss": 2.0, "ce": 1.5, "ntxent": 0.3, "mask_loss": 0.2}
        for s in (0, 10, 20)
    ]
    epochs = [
        {"stage": "finetune", "kind": "epoch", "epoch": e, "val_auroc": 0.8, "val_bacc": 0.5, "val_acc": 0.6}
        for e in (0, 1)
    ]
    fig = training_curves_figure(steps + epochs)
    assert len(line_styles(fig)["x"]) == 5 and len(line_styles(fig)["x2"]) == 3
    assert_lines_differ_beyond_colour(fig)


def test_compared_runs_and_label_efficiency_lines_differ_beyond_colour() -> None:
    """Training's run comparison draws a line per run, Evaluation's label-efficiency plot one per
    initialisation in each of its two panels."""
    runs = {
        name: [{"stage": "finetune", "kind": "epoch", "epoch": e, "val_auroc": 0.7 + e / 10} for e in (0, 1)]
        for name in ("a", "b", "c")
    }
    assert_lines_differ_beyond_colour(compare_runs_figure(runs, "val_auroc"))
    rows = [
        {"fraction": f, "init": init, "auroc_mean": 0.8, "auroc_sd": 0.02, "bacc_mean": 0.6, "bacc_sd": 0.03}
        for init in ("simclr", "random", "imagenet")
        for f in (0.1, 1.0)
    ]
    figure = label_efficiency_figure(pd.DataFrame(rows))
    assert_lines_differ_beyond_colour(figure)
    looks = {(t.name, t.line.dash, t.marker.symbol) for t in figure.data}
    assert len(looks) == 3  # an initialisation looks the same in both panels, as its legend entry shows it


def test_roc_pr_and_reliability_lines_differ_beyond_colour() -> None:
    """Checked and fine before: each reference line (chance, prevalence, perfect calibration) is dashed."""
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(int)
    p = np.clip(rng.random(200) * 0.6 + y * 0.4, 0, 1)
    for fig in (roc_figure(y, p, {"refer": {"threshold": 0.3}}), pr_figure(y, p)):
        assert_lines_differ_beyond_colour(fig)
    bins = [{"count": 5, "mean_pred": 0.2, "frac_pos": 0.1}, {"count": 5, "mean_pred": 0.7, "frac_pos": 0.8}]
    assert_lines_differ_beyond_colour(reliability_figure(bins))


@pytest.mark.parametrize("deficiency", DEFICIENCIES)
def test_the_dataset_pages_split_bars_stay_apart_for_colour_blind_readers(deficiency: str) -> None:
    """The class-distribution bars' val orange and test green (#ff7f0e, #2ca02c) were 4.6 apart for a
    protanope: the legend could not say which bar was which split."""
    df = pd.DataFrame({"dx": ["nv", "mel", "nv"], "split": ["train", "val", "test"]})
    colours = {bar.name: bar.marker.color for bar in class_distribution_figure(df).data}
    assert list(colours) == ["train", "val", "test"]
    for (a, first), (b, second) in itertools.combinations(colours.items(), 2):
        distance = colour_distance(first, second, DEFICIENCIES[deficiency])
        assert distance >= APART, f"{a} {first} and {b} {second}: {distance:.1f} apart under {deficiency}"


def test_the_embedding_maps_diagnoses_differ_in_marker_shape_not_only_colour() -> None:
    """Evaluation's map coloured seven diagnoses with plotly's defaults and nothing else; no palette keeps seven
    colours apart for a colour-blind reader, so each diagnosis also has its own marker shape, the same one
    whichever diagnoses a map holds."""
    dx = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
    points = pd.DataFrame({"x": range(14), "y": range(14), "dx": dx * 2, "image_id": [f"ISIC_{i}" for i in range(14)]})
    fig = embedding_figure(points, "PCA")
    assert sorted(t.name for t in fig.data) == sorted(dx)
    assert all(t.mode == "markers" for t in fig.data)
    assert len({t.marker.symbol for t in fig.data}) == 7 and len({t.marker.color for t in fig.data}) == 7
    assert sorted(c[0] for t in fig.data for c in t.customdata) == sorted(points["image_id"])  # selection reads it
    looks = {t.name: (t.marker.symbol, t.marker.color) for t in fig.data}
    fewer = embedding_figure(points[points["dx"].isin(["mel", "nv"])], "PCA")
    assert {t.name: (t.marker.symbol, t.marker.color) for t in fewer.data} == {d: looks[d] for d in ("mel", "nv")}
    external = embedding_figure(points.assign(dx=["benign", "malignant"] * 7), "PCA")
    assert len({t.marker.symbol for t in external.data}) == 2


def tier_box_icons(at: AppTest) -> dict[str, str]:
    """{tier word: icon} of the Predict page's tier boxes."""
    boxes = [e for e in (*at.error, *at.warning, *at.info, *at.success) if "Triage tier:" in e.value]
    found = {re.search(r"Triage tier: (\w+)", e.value).group(1).lower(): e.icon for e in boxes}  # type: ignore[union-attr]
    assert found, alerts(at)
    return found


def test_predicts_tier_box_has_an_icon_of_its_own_besides_its_colour(app_env: Path) -> None:  # noqa: F811
    """The box took Streamlit's alert colours alone: urgent's red text (#9e303b) and routine's green (#0c5a44)
    are 4.4 ΔE apart for a protanope. Each tier now also has its own icon shape."""
    assert len(set(TIER_ICONS.values())) == len(TIERS) and set(TIER_ICONS) == set(TIERS)
    at = page("predict").run()
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg")
    at.run()
    assert_clean(at)
    ((tier, icon),) = tier_box_icons(at).items()
    assert icon == TIER_ICONS[tier]
    grey = io.BytesIO()
    Image.new("RGB", (224, 224), (128, 128, 128)).save(grey, "PNG")
    at.file_uploader[0].upload("grey.png", grey.getvalue(), "image/png")
    at.run()
    assert_clean(at)
    assert tier_box_icons(at) == {"ungradable": TIER_ICONS["ungradable"]}


def test_the_evaluation_pages_embedding_map_gives_each_diagnosis_a_marker_shape(app_env: Path) -> None:  # noqa: F811
    """The page draws `embedding_figure`, not a figure of its own coloured by diagnosis alone."""
    at = page("evaluation").run()
    (images,) = [n for n in at.number_input if n.label == "Images"]
    images.set_value(50)
    (compute,) = [b for b in at.button if b.label == "Compute map"]
    compute.click()
    at.run()
    assert_clean(at)
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    (traces,) = [spec["data"] for spec in specs if "trunk features" in spec["layout"]["title"]["text"]]
    symbols = [trace["marker"].get("symbol") for trace in traces]
    assert len(traces) >= 2 and None not in symbols and len(set(symbols)) == len(traces), symbols


@pytest.mark.parametrize("deficiency", [None, *DEFICIENCIES])
def test_the_saliency_overlay_grows_lighter_with_the_score_for_every_reader(deficiency: str | None) -> None:
    """JET's red peak, the Grad-CAM overlay's old map, was about as dark as its low blue to a red-green colour-blind
    reader: where the model looked most could not be read from brightness. Each step up the heatmap must now
    lighten the overlay (luminance of the simulated colour, on a mid-grey photo)."""
    from dermai.saliency import overlay

    heat = np.linspace(0.0, 1.0, 16)[None, :].repeat(4, axis=0)
    blended = overlay(np.full((4, 16, 3), 128, np.uint8), heat, alpha=1.0)[0]  # one row: the colour map itself
    matrix = np.eye(3) if deficiency is None else DEFICIENCIES[deficiency]
    linear = np.where(blended / 255 <= 0.04045, blended / 255 / 12.92, ((blended / 255 + 0.055) / 1.055) ** 2.4)
    luminance = np.clip(linear @ matrix.T, 0, 1) @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > 0), luminance.round(3)
