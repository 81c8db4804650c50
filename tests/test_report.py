"""The printable HTML report: everything a clinician needs on one self-contained page, escaped."""

from __future__ import annotations

import base64
import io
import re
from datetime import datetime

import numpy as np
from PIL import Image

from dermai.predict import Prediction
from dermai.report import DISCLAIMER, diagnosis_legend, prediction_html


def prediction(**changes: object) -> Prediction:
    p = Prediction(
        probabilities={"mel": 0.6, "nv": 0.3, "bkl": 0.1},
        p_malignant=0.6,
        tier="urgent",
        tier_meaning="High suspicion <b>",
        tier_sensitivity=0.70,
        tier_specificity=0.90,
        ood=False,
        ood_score=1.5,
        ood_threshold=3.0,
        warnings=["image <script>alert(1)</script> is small"],
    )
    for key, value in changes.items():
        setattr(p, key, value)
    return p


def test_report_holds_tier_score_cutoff_probabilities_images_and_disclaimer() -> None:
    image = np.full((30, 40, 3), 200, np.uint8)
    page = prediction_html(
        prediction(),
        "a.jpg",
        "weights/model.safetensors",
        image,
        image,
        "gradcam",
        created=datetime(2026, 11, 28, 9, 5),
    )
    assert "a.jpg · 2026-11-28 09:05 · weights weights/model.safetensors" in page
    assert "URGENT" in page and "0.600" in page and "sensitivity 0.70, specificity 0.90" in page
    assert page.index("mel") < page.index("nv") < page.index("bkl")  # most likely first
    assert "60.0%" in page and "passed (score 1.50, threshold 3.00)" in page
    assert DISCLAIMER in page and "gradcam overlay" in page
    uris = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(uris) == 2
    with Image.open(io.BytesIO(base64.b64decode(uris[0]))) as decoded:
        assert decoded.size == (40, 30)
    assert "<script>" not in page and "&lt;script&gt;" in page and "High suspicion &lt;b&gt;" in page
    assert "http" not in page  # nothing fetched from elsewhere


def test_report_without_overlay_ood_or_tier_figures_and_with_context() -> None:
    image = Image.new("RGB", (20, 20))
    p = prediction(ood=None, tier_sensitivity=None, tier_specificity=None, warnings=[])
    p.context, p.p_malignant_image_only, p.context_effects = {"age": 80}, 0.2, {"age": 0.4}
    page = prediction_html(p, "b.png", "w", image)
    assert page.count("data:image/png;base64,") == 1 and "overlay" not in page
    assert "not available for these weights" in page and "Cut-off validated at" not in page
    assert "age 80" in page and "0.200" in page and "age +0.400" in page and "<ul>" not in page
    flagged = prediction_html(prediction(ood=True, ood_score=4.0), "c.png", "w", image)  # beyond the cut-off
    assert "FAILED: unlike the training images" in flagged
    # greyscale, blank or noise: flagged from the pixels at a distance inside the cut-off
    pixels = prediction_html(prediction(ood=True, ood_score=27.5, ood_threshold=56.1), "d.png", "w", image)
    assert "FAILED: flagged from its pixels (see the warnings) (score 27.50, threshold 56.10)" in pixels


def test_reports_say_whether_the_score_used_tta_and_when_the_tier_was_validated_otherwise() -> None:
    import json

    from dermai.ui import predict_view

    image = Image.new("RGB", (20, 20))
    plain = prediction_html(prediction(tta=False, tta_validated=False), "a.png", "w", image)
    assert "<th>Test-time augmentation</th><td>off</td>" in plain
    differs = prediction_html(prediction(tta=True, tta_validated=False), "a.png", "w", image)
    assert (
        "<th>Test-time augmentation</th><td>on (averaged over the 8 flips/rotations); the tier&#x27;s cut-offs were "
        "validated with it off, so its sensitivity and specificity describe the other setting</td>"
    ) in differs
    untiered = prediction_html(prediction(tta=True, tta_validated=None), "a.png", "w", image)  # nothing validated
    assert "<td>on (averaged over the 8 flips/rotations)</td>" in untiered
    record = json.loads(predict_view.prediction_report(prediction(tta=True, tta_validated=False), "a.png", "w"))
    assert record["prediction"]["tta"] is True and record["prediction"]["tta_validated"] is False


def test_an_ungradable_image_has_no_score_in_the_report_only_unreliable_model_output() -> None:
    image = Image.new("RGB", (20, 20))
    p = prediction(tier="ungradable", p_malignant=0.0004, tier_sensitivity=None, tier_specificity=None, ood=True)
    p.context, p.p_malignant_image_only, p.context_effects = {"age": 80}, 0.0002, {"age": 0.0002}
    page = prediction_html(p, "grey.png", "w", image, image, "gradcam")
    score = re.search(r"<th>Malignancy score p\(malignant\)</th><td>([^<]*)</td>", page)
    assert score and score.group(1).startswith("none: the image is ungradable") and "unreliable" in score.group(1)
    assert "Score from the image alone" not in page and "Each field&#x27;s effect" not in page
    assert "Diagnosis probabilities" not in page
    assert "Model output for an ungradable image (unreliable, not a result)" in page
    assert "gradcam overlay: unreliable, the image is ungradable" in page and "where the model looked" not in page


def test_the_report_gives_the_cut_offs_that_decided_the_tier() -> None:
    image = Image.new("RGB", (20, 20))
    row = "<th>Tier cut-offs on p(malignant)</th><td>{}</td>"
    page = prediction_html(prediction(cut_offs={"refer": 0.10292, "urgent": 0.34223}), "a.png", "w", image)
    assert row.format("refer at p ≥ 0.103, urgent at p ≥ 0.342") in page
    with_context = prediction(
        context={"age": 80},
        p_malignant_image_only=0.5,
        context_effects={"age": 0.1},
        cut_offs={"refer": 0.08596, "urgent": 0.34752},
        cut_offs_with_context=True,
    )
    page = prediction_html(with_context, "a.png", "w", image)
    assert row.format("refer at p ≥ 0.086, urgent at p ≥ 0.348 (validated with patient context)") in page
    assert "Tier cut-offs" not in prediction_html(prediction(), "a.png", "w", image)  # the weights have none
    ungradable = prediction(tier="ungradable", tier_sensitivity=None, tier_specificity=None, cut_offs={"refer": 0.1})
    assert "Tier cut-offs" not in prediction_html(ungradable, "a.png", "w", image)  # no score to compare


def test_the_report_does_not_call_a_weakly_validated_cut_off_validated() -> None:
    """The Predict page said "Cut-off set at … not reliable for these weights" for a quick run's weights, but
    their HTML report, the copy that gets filed, still said "Cut-off validated at"."""
    image = Image.new("RGB", (20, 20))
    weak = prediction_html(prediction(tier_reliable=False), "a.png", "w", image)
    assert "Cut-off validated" not in weak
    assert "Cut-off set at sensitivity 0.70, specificity 0.90" in weak and "not reliable for these weights" in weak
    assert "Cut-off validated at sensitivity 0.70" in prediction_html(prediction(), "a.png", "w", image)


def test_diagnosis_legend_spells_out_the_codes_and_what_the_malignancy_score_adds() -> None:
    legend = diagnosis_legend(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])
    assert legend is not None and legend.startswith("akiec: actinic keratosis / Bowen's disease; bcc: basal cell")
    assert "nv: melanocytic naevus; vasc: vascular lesion. p(malignant) = akiec + bcc + mel." in legend
    assert diagnosis_legend(["nv", "mel"]) == "nv: melanocytic naevus; mel: melanoma. p(malignant) = mel."
    assert diagnosis_legend(["benign", "malignant"]) is None  # a binary model's classes say it already
