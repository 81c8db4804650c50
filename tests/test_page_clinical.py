"""What a clinician must be told wherever a result is read: the weak-weights caveat in every filed record, a
patient group nobody validated, a calibration that failed, an in-sample context figure, and why a context
field is not asked."""

from __future__ import annotations

import json
from html import unescape
from pathlib import Path

import pytest
from PIL import Image

from dermai.context import PatientContext
from dermai.predict import Predictor, subgroup_notes
from dermai.report import prediction_html
from dermai.ui import predict_view, weights_menu
from dermai.worklist import score_images, worklist, worklist_csv
from tests import test_app_pages
from tests.conftest import HAM
from tests.test_app_pages import alerts, assert_clean, page

app_env = test_app_pages.app_env  # the pages' fixture: data, tiny weights and an empty runs folder
IMAGE = HAM / "images" / "ISIC_0024306.jpg"
WEAK = "these weights are not validated well enough for triage: "


def test_every_record_of_a_weakly_validated_models_prediction_carries_the_caveat(
    app_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny model validates on a handful of images: the HTML and JSON reports, predict --json and the
    worklist CSV (what gets filed) all say its tiers are not reliable, not only the page's banner."""
    from dermai import cli

    model = Predictor.from_weights(app_env)
    assert model.weak_note and model.weak_note.startswith(WEAK) and "validation images" in model.weak_note
    p = model.predict(str(IMAGE))
    assert p.warnings[0] == model.weak_note and p.to_dict()["warnings"][0] == model.weak_note
    html = unescape(prediction_html(p, IMAGE.name, str(app_env), Image.open(IMAGE)))
    assert model.weak_note in html
    report = json.loads(predict_view.prediction_report(p, IMAGE.name, str(app_env)))
    assert report["prediction"]["warnings"][0] == model.weak_note
    assert cli.main(["predict", str(IMAGE), "--weights", str(app_env), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["warnings"][0] == model.weak_note
    table = worklist([entry for entry, _ in score_images(model, [(IMAGE.name, IMAGE.read_bytes())], None)])
    assert model.weak_note in worklist_csv(table).decode()
    on_screen = predict_view.worklist_shown(table, model.weak_note)  # the page's banner says it once
    assert "notes" not in on_screen or not on_screen["notes"].astype(str).str.contains(WEAK).any()


def test_weights_validated_on_enough_images_add_no_caveat(app_env: Path, tmp_path: Path) -> None:
    meta = json.loads(app_env.with_suffix(".json").read_text())
    (tmp_path / "model.safetensors").write_bytes(app_env.read_bytes())
    val = {**meta["val_metrics"], "val_auroc": 0.9, "n_val": 1500}
    (tmp_path / "model.json").write_text(json.dumps({**meta, "val_metrics": val}))
    model = Predictor.from_weights(tmp_path / "model.safetensors")
    assert model.weak_note is None
    assert not any(note.startswith(WEAK) for note in model.predict(str(IMAGE)).warnings)


def test_the_predict_page_says_the_weak_weights_caveat_once(app_env: Path) -> None:
    at = page("predict").run()
    at.file_uploader[0].upload(IMAGE.name, IMAGE.read_bytes(), "image/jpeg").run()
    assert_clean(at)
    said = [text for text in alerts(at) if "not validated well enough for triage" in text]
    assert len(said) == 1 and said[0].startswith("**These weights"), said


def test_a_worklists_notes_keep_other_warnings_without_the_caveat() -> None:
    note = "weak; few images"  # the caveat itself may hold "; "
    assert predict_view.without_note(f"{note}; image is small", note) == "image is small"
    assert predict_view.without_note(f"image is small; {note}", note) == "image is small"
    assert predict_view.without_note(note, note) is None and predict_view.without_note(None, note) is None


SUBGROUPS = [
    {"field": "age", "group": "50-69", "n": 561, "n_malignant": 121, "auroc": 0.90},
    {"field": "age", "group": "under 30", "n": 94, "n_malignant": 4, "auroc": None},
    {"field": "age", "group": "70 and over", "n": 322, "n_malignant": 130, "auroc": 0.82},
    {"field": "site", "group": "face", "n": 121, "n_malignant": 48, "auroc": 0.88},
]
TEST_METRICS = {"test_metrics": {"auroc": 0.89, "auroc_ci": [0.87, 0.91], "subgroups": SUBGROUPS}}


def test_a_context_in_a_group_too_small_to_score_is_said_to_be_unvalidated() -> None:
    """Age 0 puts the image in the under-30 band, which the test split could not score (4 malignant): said,
    as a group scored worse is, with the group and why."""
    (note,) = subgroup_notes(TEST_METRICS, PatientContext(age=0))
    assert note.startswith("age under 30: this model's performance for this group was not validated")
    assert "only 94 such images, 4 of them malignant" in note and "fewer than 5 malignant or benign" in note
    (absent,) = subgroup_notes(TEST_METRICS, PatientContext(site="acral"))  # no such image on the test split
    assert absent.startswith("body site acral: ") and "its test split had no such images" in absent
    assert subgroup_notes(TEST_METRICS, PatientContext(age=55, site="face")) == []  # scored, and not worse
    assert subgroup_notes(TEST_METRICS, PatientContext(sex="male")) == []  # no sex group scored at all: no claim


def test_the_shipped_model_says_an_under_30_age_was_not_validated() -> None:
    from dermai.weights import DEFAULT_WEIGHTS, read_meta

    (note,) = subgroup_notes(read_meta(DEFAULT_WEIGHTS), PatientContext(age=0))
    assert note.startswith("age under 30: this model's performance for this group was not validated")


def copy_weights(weights: Path, folder: Path, **changes: object) -> Path:
    """A copy of `weights` in `folder` whose JSON has `changes` applied (top-level fields)."""
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(weights.read_bytes())
    meta = json.loads(weights.with_suffix(".json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, **changes}))
    return folder / "model.safetensors"


def test_a_temperature_on_its_search_bound_is_a_failed_calibration() -> None:
    from dermai.calibration import TEMPERATURE_BOUNDS
    from dermai.weights import calibration_failure, failed_calibration

    low, high = TEMPERATURE_BOUNDS
    said = failed_calibration({"temperature": high, "val_metrics": {"n_val": 46}})
    assert said and said.startswith("Calibration could not fit a temperature") and "(46 images)" in said
    assert "not calibrated" in said
    assert calibration_failure(low * 1.0005) and calibration_failure(1.3) is None and calibration_failure(None) is None
    assert failed_calibration({"temperature": 1.3}) is None and failed_calibration({}) is None


def test_home_predict_and_evaluation_show_the_same_weights_cautions(app_env: Path, tmp_path: Path) -> None:
    """Weak validation and a failed calibration were said on Training (and weak on Home and Predict) only:
    now all three pages that read the weights show both, in one wording."""
    from dermai.calibration import TEMPERATURE_BOUNDS

    weights = copy_weights(app_env, tmp_path / "qa2", temperature=TEMPERATURE_BOUNDS[1])
    cautions = weights_menu.weights_cautions(json.loads(weights.with_suffix(".json").read_text()))
    assert [c.split(":**")[0] for c in cautions] == [
        "**These weights are not validated well enough for triage",
        "**Calibration failed",
    ]
    for name in ("home", "predict", "evaluation"):
        at = page(name)
        at.session_state["weights_path"] = str(weights)
        at.run()
        assert_clean(at)
        shown = alerts(at)
        assert all(shown.count(c) == 1 for c in cautions), (name, shown)
    fitted = copy_weights(app_env, tmp_path / "fitted", temperature=1.2)
    assert not any(
        "Calibration failed" in c
        for c in weights_menu.weights_cautions(json.loads(fitted.with_suffix(".json").read_text()))
    )


def test_homes_context_figure_on_validation_says_it_is_in_sample() -> None:
    summary = {"weights": {"age": 0.9, "sex": 3.82}, "auroc": 0.943, "auroc_image_only": 0.742, "split": "val", "n": 46}
    text = weights_menu.context_caption(summary)
    assert "0.742 from the image alone, 0.943 with the recorded context" in text
    assert "fitted and measured on the same 46 validation images, so optimistic (in-sample)" in text
    tested = weights_menu.context_caption({**summary, "split": "test", "n": 1495})
    assert tested.endswith("with the recorded context.") and "optimistic" not in tested
    meta = {
        "context": {"fields": {"age": {"weight": 0.9}}, "val_metrics": {"val_auroc": 0.9, "n_val_with_context": 40}}
    }
    assert weights_menu.context_summary(meta)["n"] == 40


def test_home_says_the_tiny_models_context_figure_is_in_sample(app_env: Path) -> None:
    at = page("home").run()
    assert_clean(at)
    assert any("No AUROC is quoted" in c.value and "fitted on only" in c.value for c in at.caption)  # a weak fit


def test_each_field_not_asked_for_says_its_own_reason() -> None:
    from dermai.context import NOT_RECORDED, WEIGHT_ZERO, fields_text, unused_fields

    meta = {"context": {"fields": {"age": {"weight": 0.98, "table": {}}, "sex": {"weight": 0.0, "table": {}}}}}
    assert unused_fields(meta) == {"sex": WEIGHT_ZERO, "site": NOT_RECORDED}
    assert unused_fields({}) == {}
    assert "fitted on validation, is 0" in WEIGHT_ZERO and NOT_RECORDED == "not recorded in the training data"
    assert fields_text(["age"]) == "age" and fields_text(["age", "site"]) == "age and site"
    assert fields_text(["age", "sex", "site"]) == "age, sex and site"


def test_predict_says_why_the_shipped_model_does_not_ask_for_sex(app_env: Path) -> None:
    from dermai.context import WEIGHT_ZERO
    from dermai.weights import DEFAULT_WEIGHTS

    at = page("predict")
    at.session_state["weights_path"] = str(DEFAULT_WEIGHTS)
    at.run()
    assert_clean(at)
    assert f"Not asked: sex ({WEIGHT_ZERO})." in [c.value for c in at.caption]
    assert not any("not recorded in the training data" in c.value for c in at.caption)
