"""The Predict page and its reports as a clinician meets them: the diagnosis codes spelled out in the HTML
report, an ungradable image's output kept apart and said unreliable, weights that vanished named, a worklist
whose scores stay on screen, a corrupt upload answered once, and a portrait photo shown as the model saw it."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dermai import jobs
from dermai.report import diagnosis_legend, prediction_html
from dermai.ui import predict_view, sidebar_state
from tests import test_app_pages
from tests.conftest import HAM
from tests.test_app_pages import REPO, TIMEOUT, assert_clean, page
from tests.test_report import prediction

app_env = test_app_pages.app_env  # the pages' fixture: data, tiny weights and an empty runs folder


def test_html_report_spells_out_the_diagnosis_codes_as_the_page_does() -> None:

    p = prediction(probabilities={"akiec": 0.1, "bcc": 0.1, "bkl": 0.1, "df": 0.1, "mel": 0.4, "nv": 0.1, "vasc": 0.1})
    page = unescape(prediction_html(p, "a.jpg", "w", Image.new("RGB", (20, 20))))
    legend = diagnosis_legend(list(p.probabilities))
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
    from dermai import cli
    from dermai.predict import UNRELIABLE_NOTE, Predictor

    image = tmp_path / "grey.png"
    image.write_bytes(grey_png())
    assert cli.main(["predict", str(image), "--weights", str(app_env), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["tier"] == "ungradable" and line["unreliable"] == UNRELIABLE_NOTE
    assert isinstance(line["p_malignant"], float)  # the numbers are kept, as the worklist CSV keeps them
    prediction = Predictor.from_weights(app_env).predict(str(image))
    report = json.loads(predict_view.prediction_report(prediction, "grey.png", str(app_env)))["prediction"]
    assert report["unreliable"] == line["unreliable"] and report["p_malignant"] == round(line["p_malignant"], 4)
    real = Predictor.from_weights(app_env).predict(str(HAM / "images" / "ISIC_0024306.jpg"))
    assert real.tier != "ungradable" and real.to_dict()["unreliable"] is None


def run_with_weights(runs: Path, name: str, weights: Path) -> Path:
    """A finished run `name` holding a copy of `weights`, quiet for an hour (so the Training page may delete it)."""
    from tests.test_compare import make_run

    run = make_run(runs, name, 1e-3, [0.80, 0.86])
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights.with_suffix(suffix), run / f"model{suffix}")
    then = time.time() - 3600
    for file in run.iterdir():
        os.utime(file, (then, then))
    return run


def gone_warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if w.value.startswith("**The weights chosen earlier are gone:**")]


def test_predict_and_home_say_when_the_chosen_runs_weights_were_deleted_on_the_training_page(app_env: Path) -> None:
    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    chosen = run_with_weights(runs, "chosen", app_env) / "model.safetensors"
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT)
    at.session_state[sidebar_state.WEIGHTS_KEY] = str(chosen)
    at.run()
    at.switch_page("pages/predict.py").run()
    assert_clean(at)
    assert not gone_warnings(at) and not at.error
    at.switch_page("pages/training.py").run()
    next(b for b in at.button if b.label == "Delete chosen").click().run()
    assert_clean(at)
    assert not chosen.exists()
    for name in ("pages/predict.py", "pages/home.py"):
        at.switch_page(name).run()
        assert_clean(at)
        assert gone_warnings(at) == [
            f"**The weights chosen earlier are gone:** run `chosen` (`{chosen}`) was deleted or its folder "
            f"removed. The default model, `{app_env}`, is in use now; choose other weights in the sidebar."
        ]
        assert not at.error


def test_predict_falls_back_to_the_default_weights_and_says_so_when_the_runs_folder_is_removed(
    app_env: Path,
) -> None:
    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    run = run_with_weights(runs, "moved", app_env)
    at = page("predict")
    at.session_state[sidebar_state.WEIGHTS_KEY] = str(run / "model.safetensors")
    at.run()
    assert not gone_warnings(at)
    shutil.rmtree(run)  # removed on disk, not from the Training page
    at.run()
    assert_clean(at)
    (warned,) = gone_warnings(at)
    assert "run `moved`" in warned and f"`{app_env}`, is in use now" in warned
    assert not at.error  # the default model scores, rather than "weights file not found"
    assert at.file_uploader  # the page goes on
    at.session_state[sidebar_state.WEIGHTS_KEY] = str(app_env)  # the same file chosen again: still the default
    at.run()
    assert gone_warnings(at)


def test_a_choice_made_since_ends_the_gone_weights_notice(tmp_path: Path) -> None:

    state = {sidebar_state.WEIGHTS_KEY: str(tmp_path / "runs" / "a" / "model.safetensors")}
    assert sidebar_state.forget_missing_weights(state) and sidebar_state.WEIGHTS_KEY not in state
    assert sidebar_state.gone_weights_notice(state, tmp_path / "runs").startswith("**The weights chosen earlier")
    state[sidebar_state.WEIGHTS_KEY] = str(tmp_path / "other.safetensors")  # other weights chosen since
    assert sidebar_state.gone_weights_notice(state, tmp_path / "runs") is None
    assert not sidebar_state.forget_missing_weights({sidebar_state.WEIGHTS_KEY: sidebar_state.default_weights()})


def test_the_worklist_shows_image_tier_and_score_first_and_its_notes_last_on_screen_only(app_env: Path) -> None:
    from dermai.worklist import COLUMNS, worklist, worklist_csv

    real = HAM / "images" / "ISIC_0024306.jpg"
    at = page("predict").run()
    at.file_uploader[0].set_value(
        [
            (real.name, real.read_bytes(), "image/jpeg"),
            ("grey.png", grey_png(), "image/png"),  # ungradable: a note
            ("broken.jpg", b"\xff\xd8\xff\xe0 not a jpeg", "image/jpeg"),  # unreadable: a long note
        ]
    )
    at.run()
    assert_clean(at)
    shown = list(at.dataframe[0].value.columns)
    assert shown[:4] == ["rank", "image", "tier", "p_malignant"] and shown[-1] == "notes"
    assert shown.index("p_malignant") < shown.index("notes")
    header = worklist_csv(worklist([])).decode().splitlines()[0]
    assert header == ",".join(COLUMNS)  # the CSV download keeps its own columns, the tta one included


@pytest.mark.parametrize("data", [b"\xff\xd8\xff\xe0 not really a jpeg", b"", b"hello"])
def test_a_corrupt_upload_shows_only_its_error_and_the_uploader(app_env: Path, data: bytes) -> None:
    at = page("predict").run()
    assert [i.value for i in at.info if i.value.startswith("Upload a dermoscopy image")]  # the prompt, before
    at.file_uploader[0].upload("broken.jpg", data, "image/jpeg")
    at.run()
    assert_clean(at)
    assert [e.value for e in at.error if e.value.startswith("Cannot analyse this file: broken.jpg: ")]
    assert not [i.value for i in at.info if i.value.startswith("Upload a dermoscopy image")]  # not as if none
    assert at.file_uploader  # another file can be uploaded in its place


def portrait_jpeg_with_orientation_tag() -> bytes:
    """A JPEG stored 60 wide × 40 high, red on its stored left half, whose EXIF orientation 6 says: show it
    turned a quarter clockwise, 40 wide × 60 high, red on top (as a phone writes a portrait photo)."""
    stored = Image.new("RGB", (60, 40), (40, 40, 200))
    stored.paste((220, 30, 30), (0, 0, 30, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif, quality=95)
    return buffer.getvalue()


def test_a_portrait_photos_exif_orientation_is_applied_where_it_is_read_and_shown(app_env: Path) -> None:
    from dermai.intake import read_image

    data = portrait_jpeg_with_orientation_tag()
    oriented = read_image(data, "portrait.jpg").image  # the one place an upload is opened for prediction
    assert oriented.size == (40, 60)
    top, bottom = np.asarray(oriented)[5, 20], np.asarray(oriented)[55, 20]
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]  # red on top, as the tag says
    at = page("predict").run()
    at.file_uploader[0].upload("portrait.jpg", data, "image/jpeg")
    at.run()
    assert_clean(at)
    assert "original" in [i.proto.imgs[0].caption for i in at.image]
    alts = {i.proto.imgs[0].caption: i.proto.imgs[0].alt for i in at.image}  # a caption is never the alt text
    assert alts["original"] == "The uploaded image portrait.jpg"
    assert alts["gradcam overlay"].startswith("gradcam saliency map over portrait.jpg: bright colours mark")
    shown = at.session_state["pred_last"]["image"]  # the pixels drawn under "original"
    assert shown.shape == (60, 40, 3)  # upright, as the model was given it: not the stored landscape
    assert shown[5, 20, 0] > 150 > shown[5, 20, 2] and shown[55, 20, 2] > 150 > shown[55, 20, 0]
