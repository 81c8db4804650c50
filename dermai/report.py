"""One prediction as a self-contained HTML page: what a clinician files or prints.

The JSON report is for programs; a person needs the tier and what it means, the score, what the cut-off was
validated at, the warnings, the image beside its saliency map, and the reminder that this is not a diagnosis,
on one page that opens anywhere (images are embedded, no external files or scripts).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

import numpy as np
from PIL import Image

from dermai.context import describe
from dermai.data import DIAGNOSIS_NAMES, MALIGNANT
from dermai.ood import beyond_cut_off
from dermai.palette import OTHER_TIER_COLOUR, TIER_COLOURS
from dermai.predict import cut_off_validation, on_off
from dermai.saliency import OVERLAY_LEGEND, overlay_caption


def score_text(p: float) -> str:
    """p(malignant) as page and report print it: three decimals, but "< 0.001" for a score that would print as
    0.000, which reads as no chance at all (a routine tier is never an all-clear)."""
    return "< 0.001" if p < 0.0005 else f"{p:.3f}"


DISCLAIMER = (
    "A research and triage aid, not a diagnosis. The tier comes from cut-offs validated on held-out "
    "HAM10000 lesions; a clinician decides."
)
# An ungradable image's score and probabilities are the model's output on an image it cannot read: shown as
# unreliable, never as a result (a low score reads as reassurance).
UNRELIABLE_SCORE = "none: the image is ungradable (the model's output, {p:.3f}, is unreliable)"
UNRELIABLE_HEADING = "Model output for an ungradable image (unreliable, not a result)"
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 900px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
.meta { color: #666; font-size: 0.9em; }
.tier { border-left: 8px solid; padding: 0.6em 1em; margin: 1em 0; background: #fafafa; }
.tier b { font-size: 1.3em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.images { display: flex; gap: 1em; }
.images figure { margin: 0; flex: 1; }
.images img { width: 100%; }
.warning { color: #b71c1c; }
.legend { color: #555; font-size: 0.9em; }
.disclaimer { border-top: 1px solid #ccc; margin-top: 2em; padding-top: 0.5em; font-size: 0.9em; }
@media print { body { margin: 0; } }
"""


def _png_data_uri(pixels: np.ndarray | Image.Image) -> str:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(pixels: np.ndarray | Image.Image, caption: str) -> str:
    text = escape(caption, quote=True)
    return f"<figure><img src='{_png_data_uri(pixels)}' alt='{text}'><figcaption>{text}</figcaption></figure>"


def _row(label: str, value: str) -> str:
    return f"<tr><th>{escape(label)}</th><td>{escape(value)}</td></tr>"


def diagnosis_legend(classes: Sequence[str]) -> str | None:
    """The diagnosis codes the chart and worklist show, spelled out, and which of them p(malignant) adds up: a
    "URGENT" tier whose top diagnosis is nv looks contradictory until one knows the score is mel + bcc + akiec.
    None for classes without known names (a binary model's)."""
    named = [f"{c}: {DIAGNOSIS_NAMES[c]}" for c in classes if c in DIAGNOSIS_NAMES]
    if not named:
        return None
    malignant = " + ".join(c for c in classes if c in MALIGNANT)
    return "; ".join(named) + (f". p(malignant) = {malignant}." if malignant else ".")


def cut_off_text(prediction: Any) -> str | None:
    """The tier's cut-offs in words ("refer at p ≥ 0.103, urgent at p ≥ 0.342"), saying when they are the
    context model's; None without cut-offs, or for an ungradable image (no score to compare them with)."""
    if not prediction.cut_offs or prediction.ungradable:
        return None
    text = ", ".join(f"{tier} at p ≥ {value:.3f}" for tier, value in prediction.cut_offs.items())
    return text + (" (validated with patient context)" if prediction.cut_offs_with_context else "")


def tta_text(prediction: Any) -> str:
    """Whether the score was averaged over the 8 flips/rotations, and, when the tier's cut-offs were validated
    with the other setting, that its validated figures describe another score (a filed report must say so)."""
    used, validated = bool(prediction.tta), prediction.tta_validated
    text = "on (averaged over the 8 flips/rotations)" if used else "off"
    if validated is not None and bool(validated) != used:
        text += (
            f"; the tier's cut-offs were validated with it {on_off(bool(validated))}, so its sensitivity and "
            "specificity describe the other setting"
        )
    return text


def prediction_html(
    prediction: Any,
    filename: str,
    weights: str,
    image: np.ndarray | Image.Image,
    overlay: np.ndarray | Image.Image | None = None,
    method: str | None = None,
    created: datetime | None = None,
) -> str:
    """The HTML page for one `dermai.predict.Prediction` of `filename`: tier, score, validated cut-off,
    context, warnings, probabilities (their codes spelled out, `diagnosis_legend`), the image and (when given)
    its saliency overlay, and the tier's cut-offs (`cut_off_text`). Every text from outside (file name,
    warnings) is escaped."""
    p = prediction
    when = (created or datetime.now()).strftime("%Y-%m-%d %H:%M")
    colour = TIER_COLOURS.get(p.tier, OTHER_TIER_COLOUR)
    ungradable = p.ungradable  # the model cannot read the image: its figures are no result
    score = UNRELIABLE_SCORE.format(p=p.p_malignant) if ungradable else score_text(p.p_malignant)
    facts = [_row("Malignancy score p(malignant)", score)]
    if p.context and not ungradable:
        facts.append(_row("Patient context used", describe(p.context)))
        facts.append(_row("Score from the image alone", score_text(p.p_malignant_image_only)))
        effects = p.context_effects or {}
        facts.append(_row("Each field's effect", ", ".join(f"{k} {effects.get(k, 0.0):+.3f}" for k in p.context)))
    if validation := cut_off_validation(p):  # the page's words beside the tier
        facts.append(_row("The tier's cut-off", validation))
    cut_off = cut_off_text(p)
    if cut_off:
        facts.append(_row("Tier cut-offs on p(malignant)", cut_off))
    facts.append(_row("Test-time augmentation", tta_text(p)))
    if p.ood is None:
        facts.append(_row("Out-of-distribution check", "not available for these weights"))
    else:
        # flagged from the pixels alone (blank, noise, greyscale): the distance may sit inside the cut-off
        verdict = (
            "passed"
            if not p.ood
            else "FAILED: unlike the training images"
            if beyond_cut_off(p.ood_score, p.ood_threshold) or p.ood_score is None
            else "FAILED: flagged from its pixels (see the warnings)"
        )
        score = f" (score {p.ood_score:.2f}, threshold {p.ood_threshold:.2f})" if p.ood_score is not None else ""
        facts.append(_row("Out-of-distribution check", verdict + score))
    probabilities = "".join(
        f"<tr><td>{escape(name)}</td><td class='num'>{value:.1%}</td></tr>"
        for name, value in sorted(p.probabilities.items(), key=lambda item: -item[1])
    )
    legend = diagnosis_legend(list(p.probabilities))  # the codes spelled out, as the Predict page does
    warnings = "".join(f"<li class='warning'>{escape(w)}</li>" for w in p.warnings)
    figures = _figure(image, "original")
    if overlay is not None:
        unreliable = f"{method or 'saliency'} overlay: unreliable, the image is ungradable"
        figures += _figure(overlay, unreliable if ungradable else overlay_caption(method))
    legend_line = overlay is not None and not ungradable  # the colours explained, as on the Predict page
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dermai report: {escape(filename)}</title>
<style>{STYLE}</style></head><body>
<h1>dermai triage report</h1>
<div class="meta">{escape(filename)} · {when} · weights {escape(weights)}</div>
<div class="tier" style="border-color: {colour}"><b style="color: {colour}">{escape(p.tier.upper())}</b>
<p>{escape(p.tier_meaning)}</p></div>
<table>{"".join(facts)}</table>
{f"<ul>{warnings}</ul>" if warnings else ""}
<h2>{UNRELIABLE_HEADING if ungradable else "Diagnosis probabilities"}</h2>
<table><tr><th>diagnosis</th><th>probability</th></tr>{probabilities}</table>
{f'<p class="legend">{escape(legend)}</p>' if legend else ""}
<div class="images">{figures}</div>
{f'<p class="legend">{escape(OVERLAY_LEGEND)}</p>' if legend_line else ""}
<p class="disclaimer">{escape(DISCLAIMER)}</p>
</body></html>
"""
