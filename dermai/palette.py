"""The app's and the report's colours, chosen so that no reading depends on telling red from green.

About one man in twelve has a red–green colour-vision deficiency. The tier colours are checked (in
tests/test_accessibility.py, with the functions below) to stay apart under a simulated deuteranopia and
protanopia, and to be readable as text on white (WCAG AA contrast, at least 4.5:1). Colour is never the only
cue: the tier's word says it too (and on the Predict page its icon, `TIER_ICONS`), and a plotted line's dash
and marker shape (`dermai.plots.series_style`).
"""

from __future__ import annotations

import numpy as np

# Okabe & Ito (2008), "Color Universal Design": eight colours that stay distinct under the common colour-vision
# deficiencies. Yellow is last: it is faint on a white page, so only an eighth series (none of the seven
# HAM10000 diagnoses on the embedding map) is drawn in it.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermilion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)

# The triage tiers' colours (the HTML report's tier word and border). Urgent is a dark red and refer a
# lighter amber-brown, so they differ in lightness, which a red–green deficiency leaves intact; routine is
# blue, not green (red against green is the pair deuteranopes confuse); ungradable is grey: no result.
TIER_COLOURS: dict[str, str] = {"urgent": "#780000", "refer": "#ad5300", "ungradable": "#5c5c5c", "routine": "#0066a3"}
OTHER_TIER_COLOUR = "#455a64"  # a tier not named above (none today): dark slate
# The Predict page's tier box takes Streamlit's alert colours (error, warning, info, success), whose urgent red
# and routine green text are 4 ΔE apart for a protanope: each tier's box also has its own icon, a shape.
# Routine's is a calendar (a routine appointment), not a tick: a routine tier is never an all-clear.
TIER_ICONS: dict[str, str] = {
    "urgent": ":material/priority_high:",
    "refer": ":material/forward:",
    "ungradable": ":material/visibility_off:",
    "routine": ":material/event:",
}

# Machado, Oliveira & Fernandes (2009) simulation matrices at full severity, applied to linear RGB.
DEUTERANOPIA = np.array(
    [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]
)
PROTANOPIA = np.array(
    [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]
)
_RGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_WHITE_XYZ = _RGB_TO_XYZ @ np.ones(3)


def linear_rgb(colour: str) -> np.ndarray:
    """A '#rrggbb' colour as linear-light RGB in [0, 1] (the sRGB transfer curve undone): luminance and the
    deficiency simulations are linear in light, not in the hex digits."""
    digits = colour.lstrip("#")
    if len(digits) != 6:
        raise ValueError(f"expected a colour as #rrggbb, got {colour!r}")
    srgb = np.array([int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)])
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two '#rrggbb' colours, from 1 (same) to 21 (black on white); body text needs
    4.5 for level AA."""
    lighter, darker = sorted((float(_RGB_TO_XYZ[1] @ linear_rgb(c)) for c in (foreground, background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def _lab(linear: np.ndarray) -> np.ndarray:
    """CIELAB (D65 white) of a linear-RGB colour: a space where distance follows perceived difference."""
    t = (_RGB_TO_XYZ @ np.clip(linear, 0.0, 1.0)) / _WHITE_XYZ
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def colour_distance(a: str, b: str, deficiency: np.ndarray | None = None) -> float:
    """CIE76 ΔE between two '#rrggbb' colours as seen with `deficiency` (DEUTERANOPIA, PROTANOPIA, or None for
    normal vision). About 2.3 is just noticeable; two colours that must be told apart at a glance want 20 or
    more."""
    first, second = linear_rgb(a), linear_rgb(b)
    if deficiency is not None:
        first, second = deficiency @ first, deficiency @ second
    return float(np.linalg.norm(_lab(first) - _lab(second)))
