"""The Predict page and its reports as a clinician meets them: the diagnosis codes spelled out in the HTML
report, an ungradable image's output kept apart and said unreliable, weights that vanished named, a worklist
whose scores stay on screen, a corrupt upload answered once, and a portrait photo shown as the model saw it."""

from __future__ import annotations

import io
import json
from html import unescape
from pathlib import Path

import pytest
from PIL import Image

from dermai.report import prediction_html
from tests import test_app_pages
from tests.conftest import HAM
from tests.test_app_pages import assert_clean, page
from tests.test_report import prediction

app_env = test_app_pages.app_env  # the pages' fixture: data, tiny weights and an empty runs folder


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


def grey_png(size: tuple[int, int] = (224, 224)) -> bytes:
    """A flat grey image: ungradable (flagged from its pixels)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (128, 128, 128)).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_ungradable_images_overlay_is_offered_only_inside_the_unreliable_expander(app_env: Path) -> None:
    at = page("predict").run()
    at.file_uploader[0].upload("grey.png", grey_png(), "image/png")
    at.run()
    assert_clean(at)
    (hidden,) = [e for e in at.expander if e.label == "Model output for an ungradable image (unreliable)"]
    inside = [b.label for b in hidden.get("download_button")]
    assert inside == ["Overlay (PNG, unreliable)"]
    assert [b.label for b in at.download_button] == ["Overlay (PNG, unreliable)", "Report (HTML)", "Report (JSON)"]


def test_the_json_report_and_predict_json_say_an_ungradable_images_scores_are_unreliable(
    app_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dermai import app_support, cli
    from dermai.predict import UNRELIABLE_NOTE, Predictor

    image = tmp_path / "grey.png"
    image.write_bytes(grey_png())
    assert cli.main(["predict", str(image), "--weights", str(app_env), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["tier"] == "ungradable" and line["unreliable"] == UNRELIABLE_NOTE
    assert isinstance(line["p_malignant"], float)  # the numbers are kept, as the worklist CSV keeps them
    prediction = Predictor.from_weights(app_env).predict(str(image))
    report = json.loads(app_support.prediction_report(prediction, "grey.png", str(app_env)))["prediction"]
    assert report["unreliable"] == line["unreliable"] and report["p_malignant"] == round(line["p_malignant"], 4)
    real = Predictor.from_weights(app_env).predict(str(HAM / "images" / "ISIC_0024306.jpg"))
    assert real.tier != "ungradable" and real.to_dict()["unreliable"] is None
