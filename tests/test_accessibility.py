"""What a clinician with a colour-vision deficiency, or one using a screen reader, must not miss: every tier and
every plotted series told apart by more than colour, colours that stay apart under a simulated deuteranopia and
protanopia, readable contrast, and text for every image."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from dermai.palette import DEUTERANOPIA, PROTANOPIA, colour_distance, contrast_ratio
from dermai.report import prediction_html
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
