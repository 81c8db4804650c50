"""The Predict page and its reports as a clinician meets them: the diagnosis codes spelled out in the HTML
report, an ungradable image's output kept apart and said unreliable, weights that vanished named, a worklist
whose scores stay on screen, a corrupt upload answered once, and a portrait photo shown as the model saw it."""

from __future__ import annotations

from html import unescape

from PIL import Image

from dermai.report import prediction_html
from tests.test_report import prediction


def test_html_report_spells_out_the_diagnosis_codes_as_the_page_does() -> None:
    from dermai import app_support

    p = prediction(probabilities={"akiec": 0.1, "bcc": 0.1, "bkl": 0.1, "df": 0.1, "mel": 0.4, "nv": 0.1, "vasc": 0.1})
    page = unescape(prediction_html(p, "a.jpg", "w", Image.new("RGB", (20, 20))))
    legend = app_support.diagnosis_legend(list(p.probabilities))
    assert legend and legend in page  # one wording: the page's legend is the report's
    assert "akiec: actinic keratosis / Bowen's disease" in page and "nv: melanocytic naevus" in page
    assert "p(malignant) = akiec + bcc + mel." in page
    binary = prediction(probabilities={"benign": 0.7, "malignant": 0.3})
    assert "p(malignant) =" not in prediction_html(binary, "b.jpg", "w", Image.new("RGB", (20, 20)))
