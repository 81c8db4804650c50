"""The Streamlit pages through streamlit.testing (AppTest): each renders without an exception against the real
HAM10000 copy and a tiny calibrated model, and the interactive paths work (upload, filters, training)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Metric

from dermai import jobs, run_status, run_table
from dermai.context import weighted_fields
from dermai.train import read_metrics
from dermai.ui import evaluation_view, predict_view, runs_view, sidebar_state, training_form, weights_menu
from tests.conftest import HAM
from tests.test_ui_evaluation_view import tiny_weights

REPO = Path(__file__).resolve().parent.parent
PAGES = ["home", "dataset", "augmentation", "training", "predict", "evaluation"]
TIMEOUT = 180


@pytest.fixture
def app_env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Data, tiny weights and an empty runs folder, through the environment the app reads."""
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    weights = tiny_weights(tmp_path_factory.getbasetemp())
    monkeypatch.setenv("DERMAI_DATA", str(HAM))
    monkeypatch.setenv("DERMAI_WEIGHTS", str(weights))
    monkeypatch.setenv("DERMAI_RUNS", str(tmp_path / "runs"))
    monkeypatch.syspath_prepend(str(REPO))  # `from pages._common import …`, as under `streamlit run`
    monkeypatch.chdir(REPO)
    return weights


def page(name: str) -> AppTest:
    return AppTest.from_file(str(REPO / "pages" / f"{name}.py"), default_timeout=TIMEOUT)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def copy_tiny_run(app_env: Path, run: Path) -> Path:
    """A finished fine-tuning run at `run`: a copy of the tiny weights' run (without its checkpoints), not a link
    to it, since a link's weights are the very file the app uses by default ("Predict uses these weights")."""
    shutil.copytree(app_env.parent, run, ignore=shutil.ignore_patterns("checkpoints"))
    return run


def alerts(at: AppTest) -> list[str]:
    return [e.value for e in (*at.error, *at.warning, *at.success, *at.info)]


@pytest.mark.parametrize("name", PAGES)
def test_page_renders(app_env: Path, name: str) -> None:
    at = page(name).run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert at.title


def test_training_page_says_how_fast_this_machine_trains(app_env: Path) -> None:
    from dermai.inference import machine_compute

    at = page("training").run()
    assert_clean(at)
    assert training_form.training_speed_note(*machine_compute()) in [c.value for c in at.caption]


def test_entrypoint_renders_home_and_sidebar(app_env: Path) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    assert_clean(at)
    assert at.title[0].value.startswith("dermai")
    assert at.sidebar.text_input[0].value == str(HAM.resolve())
    assert at.sidebar.selectbox[0].value == str(app_env)
    assert at.session_state["weights_path"] == str(app_env)


def test_a_typed_weights_path_is_checked_before_it_is_used(app_env: Path, tmp_path: Path) -> None:
    # AppTest drops the sidebar on a rerun of a multipage app (st.navigation), so the typed path is read from
    # the first run's widget and the outcome from the session state the sidebar shows it from.
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    before = at.session_state["weights_path"]
    other = at.sidebar.text_input(key="_other_weights")
    other.set_value(str(tmp_path / "typo.safetensors")).run()
    assert_clean(at)
    assert (
        at.session_state["_other_weights_error"] == f"Not used: {tmp_path / 'typo.safetensors'}: weights file not found"
    )
    assert at.session_state["weights_path"] == before  # the weights that worked stay chosen
    choices = weights_menu.weight_choices(jobs.runs_dir(), at.session_state["weights_path"])
    assert before in choices and not any("typo" in path for path in choices)  # the typo is not offered
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.sidebar.text_input(key="_other_weights").set_value(str(app_env.parent)).run()  # a folder: its one file
    assert "_other_weights_error" not in at.session_state
    assert at.session_state["weights_path"] == str(app_env)


def test_a_data_folder_that_does_not_exist_is_said_in_the_sidebar_and_the_pages_words(
    app_env: Path, tmp_path: Path
) -> None:
    typo = str(tmp_path / "ham1000")
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT)
    at.session_state["data_dir"] = typo  # as the sidebar's box sets it
    at.run()
    assert_clean(at)
    assert [w.value for w in at.sidebar.warning] == [f"{typo}: no such folder: enter another folder above."]
    for name in ("pages/dataset.py", "pages/augmentation.py"):
        at.switch_page(name).run()
        assert_clean(at)
        assert [e.value for e in at.error] == [
            f"Cannot read the data folder: {typo}: no such folder (enter another data folder in the sidebar)"
        ]


def test_missing_weights_are_a_plain_message(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMAI_WEIGHTS", "/nonexistent/model.safetensors")
    home = page("home").run()
    assert_clean(home)
    assert any("weights file not found" in text for text in alerts(home))
    predict = page("predict").run()
    assert_clean(predict)
    assert "weights file not found" in predict.error[0].value


def test_a_greyscale_upload_is_ungradable_and_says_why(app_env: Path) -> None:
    import io

    buffer = io.BytesIO()
    from PIL import Image

    Image.open(HAM / "images" / "ISIC_0024306.jpg").convert("L").save(buffer, "JPEG")
    at = page("predict").run()
    at.file_uploader[0].upload("grey.jpg", buffer.getvalue(), "image/jpeg")
    at.run()
    assert_clean(at)
    texts = alerts(at)
    assert any("Triage tier: UNGRADABLE" in text for text in texts), texts
    assert any("no colour (greyscale)" in text for text in texts), texts


@pytest.mark.parametrize("size", [(224, 224), (10, 10)])
def test_an_ungradable_upload_shows_no_score_and_hides_its_chart_and_overlay(app_env: Path, size: tuple) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (128, 128, 128)).save(buffer, "PNG")  # flat grey, or too small to grade
    at = page("predict").run()
    at.file_uploader[0].upload("grey.png", buffer.getvalue(), "image/png")
    at.run()
    assert_clean(at)
    assert any("Triage tier: UNGRADABLE" in text for text in alerts(at)), alerts(at)
    score = next(m for m in at.metric if m.label == "p(malignant)")
    assert score.value == "—" and score.proto.help == predict_view.NO_SCORE_HELP
    (hidden,) = [e for e in at.expander if e.label == "Model output for an ungradable image (unreliable)"]
    assert not hidden.proto.expanded
    assert [i.proto.imgs[0].caption for i in hidden.image] == ["gradcam overlay (unreliable)"]
    assert [i.proto.imgs[0].caption for i in at.image] == ["gradcam overlay (unreliable)", "original"]
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) == 1 and len(hidden.get("plotly_chart")) == 1  # the one chart is inside the expander


def test_an_ungradable_image_in_a_worklist_shows_no_score_on_screen(app_env: Path) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (224, 224), (128, 128, 128)).save(buffer, "PNG")
    real = HAM / "images" / "ISIC_0024306.jpg"
    at = page("predict").run()
    at.file_uploader[0].set_value(
        [(real.name, real.read_bytes(), "image/jpeg"), ("grey.png", buffer.getvalue(), "image/png")]
    )
    at.run()
    assert_clean(at)
    table = at.dataframe[0].value.set_index("image")
    assert table.loc["grey.png", "tier"] == "ungradable"
    assert table.loc["grey.png", ["p_malignant", "top_diagnosis", "p_top_diagnosis"]].isna().all()
    assert not table.loc[real.name, ["p_malignant", "top_diagnosis"]].isna().any()


def test_predict_real_image_shows_tier_and_saliency(app_env: Path) -> None:
    at = page("predict").run()
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg")
    at.run()
    assert_clean(at)
    assert any("Triage tier:" in text for text in alerts(at)), alerts(at)
    assert len(at.image) >= 2  # original and overlay
    legend = [c.value for c in at.caption if c.value.startswith("akiec: ")]  # the chart's codes spelled out
    assert legend and "nv: melanocytic naevus" in legend[0] and legend[0].endswith("p(malignant) = akiec + bcc + mel.")
    labels = ["Report (HTML)", "Report (JSON)", "Overlay (PNG)"]
    assert [b.label for b in at.download_button] == labels
    at.selectbox(key="pred_method").set_value("eigencam")
    at.slider(key="pred_opacity").set_value(0.8)
    at.run()
    assert_clean(at)
    assert "eigencam overlay" in at.image[1].proto.imgs[0].caption


def test_predict_analyses_one_image_under_a_spinner_naming_it(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    import streamlit

    shown: list[str] = []
    spinner = streamlit.spinner

    @contextlib.contextmanager
    def recording(text: str = "", **kwargs: object):  # the spinner is gone once the run ends: record its text
        shown.append(text)
        with spinner(text, **kwargs):
            yield

    monkeypatch.setattr(streamlit, "spinner", recording)
    at = page("predict").run()
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg")
    at.run()
    assert_clean(at)
    assert shown == ["Analysing ISIC_0024306.jpg…"]


def test_predict_with_patient_context_shows_both_scores(app_env: Path) -> None:
    at = page("predict").run()
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg")
    at.run()
    plain = at.metric[0]
    assert plain.label == "p(malignant)"
    meta = json.loads(app_env.with_suffix(".json").read_text())
    image_cuts, context_cuts = meta["operating_points"], meta["context"]["operating_points"]
    cut_offs = [c.value for c in at.caption if c.value.startswith("Tier cut-offs: ")]
    assert cut_offs == [
        f"Tier cut-offs: refer at p ≥ {image_cuts['refer']['threshold']:.3f}, "
        f"urgent at p ≥ {image_cuts['urgent']['threshold']:.3f}."
    ]  # the image model's, beside its score
    used = weighted_fields(meta)
    assert "age" in used  # the tiny model's fitted weights; fields with weight 0 are not asked for
    at.number_input(key="pred_age").set_value(75)
    at.run()
    assert_clean(at)
    metric = at.metric[0]
    assert metric.label == "p(malignant), with context"
    cut_offs = [c.value for c in at.caption if c.value.startswith("Tier cut-offs: ")]
    assert cut_offs == [
        f"Tier cut-offs: refer at p ≥ {context_cuts['refer']['threshold']:.3f}, "
        f"urgent at p ≥ {context_cuts['urgent']['threshold']:.3f} (validated with patient context)."
    ]  # the context model's: those that decided the tier
    assert any(f"Image alone: {plain.value} · context used: age 75" in c.value for c in at.caption)
    assert any(
        c.value.startswith("Each field's effect on p(malignant) (with it minus without it): age ") for c in at.caption
    )
    unused = [n for n in ("age", "sex", "site") if n not in used]
    if unused:
        assert any(c.value.startswith(f"Not asked: {', '.join(unused)}") for c in at.caption)
    asked = [{"site": "body site"}.get(n, n) for n in ("age", "sex", "site") if n in used]
    assert [e.label for e in at.expander][0] == f"Patient context (optional): {', '.join(asked)}"  # only those asked


def test_predict_corrupt_upload_is_a_plain_message(app_env: Path) -> None:
    at = page("predict").run()
    at.file_uploader[0].upload("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg")
    at.run()
    assert_clean(at)
    assert at.error and at.error[0].value.startswith("Cannot analyse this file: broken.jpg")
    assert not at.image


def test_predict_takes_any_file_and_names_an_iphone_photo_it_cannot_read(app_env: Path) -> None:
    from tests.test_intake import HEIC

    at = page("predict").run()
    assert at.info[0].value.startswith("Upload a dermoscopy image (JPEG, PNG, BMP, TIFF or WEBP) ")
    assert list(at.file_uploader[0].proto.type) == []  # no silent refusal by the widget: intake says why
    at.file_uploader[0].upload("photo.heic", HEIC, "image/heif")
    at.run()
    assert_clean(at)
    assert [e.value for e in at.error] == [
        "Cannot analyse this file: photo.heic: HEIC is not supported; export it as JPEG or PNG"
    ]


def test_predict_several_uploads_make_a_worklist(app_env: Path) -> None:
    at = page("predict").run()
    names = ["ISIC_0024306.jpg", "ISIC_0025964.jpg", "ISIC_0024306.jpg"]
    files = [(n, (HAM / "images" / n).read_bytes(), "image/jpeg") for n in names]
    at.file_uploader[0].set_value([*files, ("broken.jpg", b"\xff\xd8\xff\xe0 not a jpeg", "image/jpeg")])
    at.run()
    assert_clean(at)
    assert at.subheader[0].value == "Worklist: 4 images, most urgent first"
    table = at.dataframe[0].value
    assert list(table["rank"]) == [1, 2, 3, 4] and table["tier"].iloc[-1] == "unreadable"
    assert list(table.columns[:4]) == ["rank", "image", "tier", "p_malignant"] and table.columns[-1] == "notes"
    assert table["notes"].iloc[-1].startswith("broken.jpg: ")
    assert table["p_malignant"].isna().iloc[-1] and at.dataframe[0].proto.placeholder == "—"  # not "None"
    assert set(table["image"]) == {"ISIC_0024306.jpg", "ISIC_0024306.jpg (2)", "ISIC_0025964.jpg", "broken.jpg"}
    twins = table.set_index("image").loc[["ISIC_0024306.jpg", "ISIC_0024306.jpg (2)"], "p_malignant"]
    assert twins.iloc[0] == twins.iloc[1]  # the same bytes score the same
    scored = table.iloc[:3]
    order = scored["tier"].map({"urgent": 0, "refer": 1, "ungradable": 2, "routine": 3})
    assert list(order) == sorted(order)
    counts = {m.label: int(m.value) for m in at.metric if m.label in {"Urgent", "Refer", "Routine", "Unreadable"}}
    assert sum(counts.values()) == 4 and counts["Unreadable"] == 1
    assert "Download worklist (CSV)" in [b.label for b in at.download_button]
    detail = at.selectbox(key="pred_detail")
    assert detail.value == table["image"].iloc[0] and detail.options[0] == f"#1 {detail.value} ({table['tier'][0]})"
    assert any("Triage tier:" in text for text in alerts(at)) and len(at.image) >= 2  # the first one in full
    detail.set_value("broken.jpg").run()
    assert_clean(at)
    assert any(e.value.startswith("Cannot analyse this file: broken.jpg") for e in at.error)


def test_dataset_filters_change_the_grid(app_env: Path) -> None:
    at = page("dataset").run()
    before = at.subheader[0].value
    at.multiselect(key="ds_dx").set_value(["df"])
    at.radio(key="ds_kind").set_value("benign")
    at.run()
    assert_clean(at)
    assert at.subheader[0].value != before and at.subheader[0].value.startswith("115 ")
    captions = [c for img in at.image for c in img.captions]
    grid = captions[: captions.index("lesion mask (green)") - 1]  # the detail view overlays the HAM10000 mask
    assert grid and all(" · df · " in c for c in grid)


def test_dataset_age_range_leaves_out_unknown_ages_once_narrowed(app_env: Path) -> None:
    at = page("dataset").run()
    at.multiselect(key="ds_sex").set_value(["unknown"]).run()
    everyone = int(at.subheader[0].value.split()[0])
    at.slider(key="ds_age").set_value((40, 45)).run()
    assert_clean(at)
    assert at.subheader[0].value == "2 images match"  # HAM10000: 47 of its unknown-sex images have no age either
    captions = [c for img in at.image for c in img.captions]
    assert captions and not any(c.endswith(" · ?/unknown") for c in captions)
    ages = at.slider(key="ds_age")
    ages.set_value((int(ages.min), int(ages.max))).run()
    assert at.subheader[0].value == f"{everyone} images match"  # the full range: unknown ages back


def test_dataset_filters_survive_a_visit_to_another_page(app_env: Path) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/dataset.py").run()
    at.multiselect(key="ds_dx").set_value(["df"])
    at.radio(key="ds_kind").set_value("benign")
    at.slider(key="ds_age").set_value((40, 70))
    at.run()
    matched = at.subheader[0].value
    at.number_input(key="ds_page").set_value(2).run()
    at.switch_page("pages/home.py").run()  # Streamlit drops the filters' widget state here
    at.switch_page("pages/dataset.py").run()
    assert_clean(at)
    assert at.multiselect(key="ds_dx").value == ["df"] and at.radio(key="ds_kind").value == "benign"
    assert at.slider(key="ds_age").value == (40, 70) and at.subheader[0].value == matched
    assert at.number_input(key="ds_page").value == 2  # the page of the grid that was being read
    assert not any("Session State" in w.value for w in at.warning)


def test_dataset_detail_shows_the_other_images_of_the_lesion(app_env: Path) -> None:
    at = page("dataset").run()  # lesion HAM_0000118 is ISIC_0027419 and ISIC_0025030 in the official metadata
    at.multiselect(key="ds_dx").set_value(["bkl"]).run()
    detail = at.selectbox(key="ds_detail")
    assert "ISIC_0027419" in detail.options or "ISIC_0025030" in detail.options
    chosen = "ISIC_0027419" if "ISIC_0027419" in detail.options else "ISIC_0025030"
    detail.set_value(chosen).run()
    assert_clean(at)
    other = {"ISIC_0027419": "ISIC_0025030", "ISIC_0025030": "ISIC_0027419"}[chosen]
    note = next(c.value for c in at.caption if "other image(s) of this lesion" in c.value)
    assert note.startswith("1 other image(s) of this lesion (split: ")
    assert at.image[-1].captions == [other]


@pytest.fixture
def json_only_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For pages that read only the weights' JSON (no model is trained): a weights file whose tensors are never
    read, a synthetic data folder whose ages run from 30.5 to 89.5, and an empty runs folder."""
    from tests.conftest import ham_rows, make_folder

    rows = ham_rows(n_lesions_per_dx=2, images_per_lesion=1)
    for i, row in enumerate(rows):
        row["age"] = 30.5 if i == 0 else 89.5 if i == len(rows) - 1 else 50.0
    make_folder(tmp_path / "data", rows)
    weights = tmp_path / "weights" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"never read")
    rewrite(weights.with_suffix(".json"), {"classes": ["mel", "nv"], "image_size": 32})
    monkeypatch.setenv("DERMAI_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DERMAI_WEIGHTS", str(weights))
    monkeypatch.setenv("DERMAI_RUNS", str(tmp_path / "runs"))
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(REPO)
    return weights


def rewrite(path: Path, payload: object) -> None:
    """Write bytes (or an object as JSON) with a modification time later than the file's last one: cached
    readers key on it, and two writes within one clock tick could otherwise share it."""
    import os

    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_bytes(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    stamp = max(time.time_ns(), before + 1_000_000_000)
    os.utime(path, ns=(stamp, stamp))


def test_dataset_age_range_holds_fractional_ages_and_follows_csv_edits(json_only_env: Path, tmp_path: Path) -> None:
    at = page("dataset").run()
    assert_clean(at)
    assert at.slider(key="ds_age").value == (30, 90)  # 89.5 is inside the range, not cut off at 89
    assert at.subheader[0].value == "14 images match"
    csv = tmp_path / "data" / "metadata.csv"
    lines = csv.read_text().splitlines()
    rewrite(csv, "\n".join([*lines[:4], *lines[-3:]]).encode() + b"\n")  # same ages, 6 images
    at.run()
    assert_clean(at)
    assert at.subheader[0].value == "6 images match"  # the edited CSV, not the cached folder


def folder_with_a_corrupt_image(tmp_path: Path) -> tuple[Path, Path]:
    """A small synthetic data folder (two images per lesion) whose first akiec image is not a JPEG: the folder
    and that file."""
    from tests.conftest import ham_rows, make_folder

    data = make_folder(tmp_path / "corrupt", ham_rows(n_lesions_per_dx=1, images_per_lesion=2))
    bad = data / "imgs" / "nested" / "I_akiec_0_0.jpg"
    bad.write_bytes(b"not a jpeg")
    return data, bad


def test_dataset_names_a_corrupt_image_file_and_shows_the_rest(json_only_env: Path, tmp_path: Path) -> None:
    """One file of the folder that is not an image: an error naming it in the grid, the detail view and the
    lesion's other images, never a traceback; the readable images still show."""
    data, bad = folder_with_a_corrupt_image(tmp_path)
    at = page("dataset")
    at.session_state["data_dir"] = str(data)
    at.run()
    at.multiselect(key="ds_dx").set_value(["akiec"]).run()
    assert_clean(at)
    assert any(e.value.startswith(f"{bad}: not a readable image") for e in at.error), alerts(at)
    at.selectbox(key="ds_detail").set_value("I_akiec_0_1").run()  # its lesion's other image is the bad one
    assert_clean(at)
    assert [e.value.split(":")[0] for e in at.error] == [str(bad)] * 2  # grid and sibling; the detail is fine
    assert any("I_akiec_0_1" in img.captions for img in at.image)


def test_home_and_sidebar_name_a_garbled_or_odd_weights_json(json_only_env: Path, tmp_path: Path) -> None:
    rewrite(json_only_env.with_suffix(".json"), b"[]")
    broken = tmp_path / "runs" / "broken" / "model.safetensors"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"x")
    rewrite(broken.with_suffix(".json"), b"\xff\xfe not utf-8")
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    assert_clean(at)
    assert "broken (unreadable JSON)" in at.sidebar.selectbox[0].options
    assert any("model.json: expected a JSON object, got a list" in text for text in alerts(at))
    odd = {"classes": ["mel", "nv"], "image_size": 32, "test_metrics": [0.9], "context": {"fields": 3}}
    rewrite(json_only_env.with_suffix(".json"), {**odd, "stages": ["pretrain"], "status": "finished"})
    at.run()
    assert_clean(at)
    texts = alerts(at)
    assert "The weights' JSON is not as expected: field 'test_metrics' is not an object: ignored." in texts
    assert any("field 'context.fields' is missing or not an object" in text for text in texts)
    assert any(text.startswith("Pretrain only — no trained classifier") for text in texts)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"stages": ["pretrain"], "status": "finished"}, "Pretrain only — no trained classifier"),
        (
            {"stages": ["pretrain", "finetune"], "status": "stopped", "val_metrics": {}},
            "Stopped before fine-tuning finished an epoch — no trained classifier",
        ),
    ],
)
def test_predict_refuses_weights_whose_classifier_never_trained(json_only_env: Path, record: dict, reason: str) -> None:
    rewrite(json_only_env.with_suffix(".json"), {"classes": ["mel", "nv"], "image_size": 32, **record})
    at = page("predict").run()
    assert_clean(at)
    assert at.error[0].value.startswith(reason) and "Fine-tune them first" in at.error[0].value
    assert not at.get("file_uploader")  # nothing to upload to: no probabilities from a random classifier
    at = page("evaluation").run()  # scoring them is allowed (research), with the reason said first
    assert_clean(at)
    assert at.warning[0].value.startswith(reason) and "never learned" in at.warning[0].value


def test_predict_keeps_uploads_and_context_across_pages(app_env: Path) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/predict.py").run()
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg")
    at.number_input(key="pred_age").set_value(75)
    at.run()
    assert_clean(at)
    score = at.metric[0].value
    at.switch_page("pages/home.py").run()  # Streamlit drops the Predict page's widget state here
    at.switch_page("pages/predict.py").run()
    assert_clean(at)
    assert "Showing the 1 image uploaded earlier in this session." in [i.value for i in at.info]
    assert at.number_input(key="pred_age").value == 75
    assert at.metric[0].label.endswith("with context") and at.metric[0].value == score
    assert any("Triage tier:" in text for text in alerts(at))
    at.selectbox(key="pred_method").set_value("eigencam").run()  # a rerun on the page keeps showing them
    assert "eigencam overlay" in at.image[1].proto.imgs[0].caption
    next(b for b in at.button if b.label == "Clear").click().run()
    assert_clean(at)
    assert not at.image and any(i.value.startswith("Upload a dermoscopy image") for i in at.info)


def test_predict_keeps_the_camera_shot_and_saliency_settings_across_pages(app_env: Path) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/predict.py").run()
    at.radio(key="pred_source").set_value("Camera").run()
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.camera_input(key="pred_camera").set_value(("shot.jpg", image.read_bytes(), "image/jpeg"))
    at.selectbox(key="pred_method").set_value("eigencam")
    at.selectbox(key="pred_target").set_value("malignant (summed)")
    at.slider(key="pred_opacity").set_value(0.8)
    at.checkbox(key="pred_tta").check()
    at.run()
    assert_clean(at)
    score, overlay = at.metric[0].value, at.image[1].proto.imgs[0].url
    at.switch_page("pages/home.py").run()  # Streamlit drops the shot and the settings' widget state here
    at.switch_page("pages/predict.py").run()
    assert_clean(at)
    assert at.radio(key="pred_source").value == "Camera"
    assert "Showing the photo taken earlier in this session." in [i.value for i in at.info]
    assert at.selectbox(key="pred_method").value == "eigencam"
    assert at.selectbox(key="pred_target").value == "malignant (summed)"
    assert at.slider(key="pred_opacity").value == 0.8
    assert at.checkbox(key="pred_tta").value is True
    assert at.metric[0].value == score and "eigencam overlay" in at.image[1].proto.imgs[0].caption
    assert at.image[1].proto.imgs[0].url == overlay  # the same overlay: same target and opacity
    next(b for b in at.button if b.label == "Clear").click().run()
    assert_clean(at)
    assert not at.image and any(i.value.startswith("Upload a dermoscopy image") for i in at.info)
    assert at.slider(key="pred_opacity").value == 0.8  # clearing the photo keeps the settings


def test_augmentation_preset_and_reseed(app_env: Path) -> None:
    at = page("augmentation").run()
    first = [img.proto.imgs[0].url for img in at.image]
    at.toggle(key="aug_simclr").set_value(True)
    at.run()
    assert_clean(at)
    assert at.slider(key="aug_simclr_rotation_degrees").value == 180.0
    next(b for b in at.button if b.label == "Reseed").click()
    at.run()
    assert_clean(at)
    assert at.caption and any("Seed 1" == c.value for c in at.caption)
    assert len(at.image) == 8 and [img.proto.imgs[0].url for img in at.image] != first  # 4 images, 2 cards each


def test_augmentation_lab_outlines_the_lesion_masks(app_env: Path) -> None:
    at = page("augmentation").run()
    assert [e.captions for e in at.image[:4]] == [["original", "augmented"]] * 4  # each above its original
    before = [e.proto.imgs[1].url for e in at.image[:4]]
    at.checkbox(key="aug_masks").set_value(True)
    at.run()
    assert_clean(at)
    assert [e.captions for e in at.image[:4]] == [["original", "augmented + mask"]] * 4
    assert [e.proto.imgs[1].url for e in at.image[:4]] != before
    squashed = [e.proto.imgs[1].url for e in at.image[:4]]
    at.radio(key="aug_shape").set_value("4:3")  # HAM10000's own shape, as a run with an image width trains
    at.run()
    assert_clean(at)
    assert [e.captions for e in at.image[:4]] == [["original", "augmented + mask"]] * 4
    assert [e.proto.imgs[1].url for e in at.image[:4]] != squashed


def test_augmentation_lab_keeps_its_settings_across_pages(app_env: Path) -> None:
    """Streamlit drops a widget's value when another page is shown: back in the lab, the controls still show
    what "Use for …" sent to Training (and the preset chosen), not the defaults."""
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/augmentation.py").run()
    at.slider(key="aug_paper_hair_p").set_value(0.3)
    at.slider(key="aug_paper_crop_scale").set_value((0.5, 0.9))
    next(b for b in at.button if b.label == "Use in training").click()
    at.run()
    at.toggle(key="aug_simclr").set_value(True).run()
    at.switch_page("pages/training.py").run()
    at.switch_page("pages/augmentation.py").run()
    assert_clean(at)
    assert at.toggle(key="aug_simclr").value is True
    at.toggle(key="aug_simclr").set_value(False).run()
    assert at.slider(key="aug_paper_hair_p").value == 0.3
    assert at.slider(key="aug_paper_crop_scale").value == (0.5, 0.9)
    next(b for b in at.button if b.label == "Use in training").click()
    at.run()
    assert at.session_state["train_augment"] == ["crop_scale=0.5,0.9", "hair_p=0.3"]


def test_augmentation_settings_are_sent_to_training(app_env: Path) -> None:
    at = page("augmentation").run()
    at.slider(key="aug_paper_hair_p").set_value(0.3)
    at.checkbox(key="aug_paper_color_constancy").set_value(True)
    next(b for b in at.button if b.label == "Use in training").click()
    at.run()
    assert_clean(at)
    assert at.session_state["train_augment"] == ["hair_p=0.3", "color_constancy=true"]
    assert any("hair_p=0.3, color_constancy=true" in s.value for s in at.success)
    at.toggle(key="aug_simclr").set_value(True)
    at.run()
    next(b for b in at.button if b.label == "Use in training").click()
    at.run()
    assert at.session_state["train_simclr_augment"] == []  # the SimCLR preset untouched: its defaults

    training = page("training")
    training.session_state["train_augment"] = ["hair_p=0.3", "color_constancy=true"]
    training.run()
    assert_clean(training)
    shown = [m.value for m in training.markdown]
    assert "Fine-tuning: `hair_p=0.3`, `color_constancy=true`" in shown and "SimCLR pretraining: the defaults" in shown


def test_evaluation_scores_the_tiny_model(app_env: Path) -> None:
    at = page("evaluation").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert [m.label for m in at.metric][:3] == ["AUROC (test)", "Bal. accuracy (test)", "ECE (test)"]
    assert len(at.get("plotly_chart")) >= 3
    assert "With patient context" in [h.value for h in at.subheader]  # the tiny model has a context model
    assert "Unreliable figures from this fit (not results)" in [e.label for e in at.expander]  # a weak fit's
    assert "Where it fails" in [h.value for h in at.subheader]
    assert "Download per-image predictions (CSV)" in [b.label for b in at.download_button]
    assert "By subgroup" in [h.value for h in at.subheader]
    groups = at.dataframe[0].value
    assert list(groups.columns[:3]) == ["group", "images", "malignant"] and groups["images"].sum() > 0
    assert at.dataframe[0].proto.placeholder == "—"  # a group too small to score: a dash, not "None"
    at.radio(key="eval_subgroup").set_value("sex").run()
    assert_clean(at)
    assert set(at.dataframe[0].value["group"]) <= {"male", "female", "unknown"}


def test_evaluation_keeps_its_settings_and_report_across_pages(app_env: Path) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/evaluation.py").run()
    assert at.radio(key="eval_split").value == "test" and at.number_input(key="eval_limit").value == 500
    at.radio(key="eval_split").set_value("val").run()
    at.number_input(key="eval_limit").set_value(100).run()
    at.radio(key="eval_proj").set_value("tsne").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert [m.label for m in at.metric][:1] == ["AUROC (val)"]
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/evaluation.py").run()  # Streamlit dropped the page's widget state on the way
    assert_clean(at)
    assert at.radio(key="eval_split").value == "val" and at.number_input(key="eval_limit").value == 100
    assert at.radio(key="eval_proj").value == "tsne"
    assert [m.label for m in at.metric][:1] == ["AUROC (val)"]  # the report asked for is still shown
    assert not any(i.value.startswith("Press Evaluate") for i in at.info)
    assert not at.warning or all("Session State" not in w.value for w in at.warning)


def test_evaluation_shows_the_images_behind_the_errors(app_env: Path) -> None:
    at = page("evaluation").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    choice = at.radio(key="eval_fail")
    assert choice.options == ["Missed malignant", "False alarms", "Confusions"]
    for kind in ("missed", "false_alarm"):
        choice.set_value(kind).run()
        assert_clean(at)
        counted = next(c.value for c in at.caption if c.value.endswith(" images."))
        shown, total = int(counted.split()[0]), int(counted.split()[2])
        assert 0 <= shown <= total
        captions = [i.caption for img in at.image for i in img.proto.imgs]
        assert len(captions) == min(shown, 12)
        noted = [c.value for c in at.caption if c.value.startswith("Showing 12 of ")]
        assert noted == ([evaluation_view.gallery_note(kind, shown, 12)] if shown > 12 else [])
        assert shown > 0 or any(s.value == "None in this split." for s in at.success)
    choice.set_value("confusion").run()
    assert_clean(at)
    pair = at.selectbox(key="eval_pair")
    dx, predicted = pair.value.split(" (")[0].split(" → ")
    captions = [i.caption for img in at.image for i in img.proto.imgs]
    assert captions and all(f" · {dx} → {predicted} · " in c for c in captions)


@pytest.mark.slow
def test_training_page_starts_and_stops_a_job(app_env: Path) -> None:
    runs = Path(jobs.runs_dir())
    at = page("training")
    at.session_state["train_augment"] = ["hair_p=0.3"]  # as the Augmentation lab's "Use for fine-tuning" sets it
    at.run()
    values = {
        "Pretrain epochs": 1,
        "Finetune epochs": 40,
        "Batch size": 16,
        "Image size (px)": 32,
        "Limit images (0 = all)": 64,
        "SWA epochs (0 = off)": 3,
        "Label smoothing": 0.1,
        "CutMix α (0 = off)": 1.0,
        "Focal loss γ (0 = off)": 2.0,
    }
    for widget in at.number_input:
        if widget.label in values:
            widget.set_value(values[widget.label])
    at.text_input[0].set_value("apptest")
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert_clean(at)
    assert any("Started run apptest" in s.value for s in at.success), alerts(at)
    run = runs / "apptest"
    try:
        deadline = time.time() + 150
        while not read_metrics(run) and time.time() < deadline:
            time.sleep(0.3)
        assert read_metrics(run), run_status.log_tail(run)
        train_cfg = json.loads((run / "config.json").read_text())["config"]["train"]
        assert (train_cfg["swa_epochs"], train_cfg["swa_lr"], train_cfg["label_smoothing"]) == (3, None, 0.1)
        assert (train_cfg["mixup_alpha"], train_cfg["cutmix_alpha"], train_cfg["focal_gamma"]) == (0.0, 1.0, 2.0)
        assert json.loads((run / "config.json").read_text())["config"]["augment"]["hair_p"] == 0.3
        at.run()  # a reload shows the job from the lock file and its metrics
        assert_clean(at)
        assert any("apptest" in p.proto.text for p in at.get("progress"))
        again = page("training")
        again.run()
        next(b for b in again.button if b.label == "Start training").click()
        again.run()
        assert any("already running: run 'apptest'" in e.value for e in again.error)
        jobs.stop_job(run)
        while jobs.current_job(runs) is not None and time.time() < deadline:
            time.sleep(0.3)
        assert run_status.run_status(run, runs).status in ("stopped", "finished")
        at.run()
        assert at.selectbox(key="train_run").value == "apptest"
        next(b for b in at.button if b.label == runs_view.USE_RUN_WEIGHTS).click()
        at.run()
        assert_clean(at)
        assert at.session_state["weights_path"] == str(run / "model.safetensors")
    finally:
        jobs.cancel_job(runs)


def test_training_page_says_a_run_was_resumed(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_jobs import stopped_run

    runs = Path(jobs.runs_dir())
    run = stopped_run(runs, "halfway")
    resumed = []

    def resume(run_dir: str, folder: Path) -> jobs.Job:  # no trainer launched: the page's message is the subject
        resumed.append(run_dir)
        return jobs.Job(4242, str(run_dir), "both", [], time.time())

    monkeypatch.setattr(jobs, "resume_job", resume)
    at = page("training").run()
    assert at.selectbox(key="train_run").value == "halfway"
    next(b for b in at.button if b.label == "Resume").click()
    at.run()  # the click, then the rerun that refreshes the runs table
    assert_clean(at)
    assert resumed == [str(run)]
    assert [s.value for s in at.success] == ["Resumed halfway (pid 4242)."]
    at.run()
    assert not at.success  # said once


def test_training_page_watches_a_command_line_run_and_starts_nothing_beside_it(app_env: Path) -> None:
    """A run training from a terminal in the runs folder shows as the current job, with its curves and a Stop
    that reaches it; Start training is refused while it runs, naming it."""
    from dermai.train import STOP_FILE
    from tests.test_jobs import held, stopped_run

    runs = Path(jobs.runs_dir())
    run = stopped_run(runs)
    holder = held(run)
    try:
        at = page("training").run()
        assert_clean(at)
        assert "No training job is running." not in alerts(at)
        assert f"Started from the command line (pid {holder.pid})" in " ".join(c.value for c in at.caption)
        assert any("cli-run: pretrain, epoch -" in p.proto.text for p in at.get("progress"))
        next(b for b in at.button if b.label == "Start training").click()
        at.run()
        assert any("run 'cli-run' is training from the command line" in e.value for e in at.error), alerts(at)
        next(b for b in at.button if b.label == "Stop").click()
        at.run()
        assert_clean(at)
        assert (run / STOP_FILE).exists()  # the trainer's own stop signal: it checkpoints and ends
        assert not any(p.name != "cli-run" for p in runs.iterdir() if p.is_dir())  # nothing else was started
    finally:
        holder.kill()
        holder.wait()
    at.run()
    assert "No training job is running." in alerts(at)


def test_training_page_offers_finished_runs_and_refuses_leaky_starts(app_env: Path) -> None:
    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    (runs / "tiny").symlink_to(app_env.parent, target_is_directory=True)  # a finished fine-tuning run
    at = page("training").run()
    assert_clean(at)
    start_from = at.selectbox(key="start_from")
    tiny = next(o for o in start_from.options if o.startswith("tiny (finetune"))
    start_from.set_value(tiny)
    next(w for w in at.number_input if w.label == "Seed").set_value(1)
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert_clean(at)
    assert any("Not started" in e.value and "another split (seed 0, this run 1)" in e.value for e in at.error)
    assert jobs.current_job(runs) is None

    # The lesion-mask loss beside CutMix is refused on the page, before any process starts.
    at.selectbox(key="start_from").set_value("random initialisation")
    for label, value in (("Lesion-mask loss weight (0 = off)", 0.5), ("CutMix α (0 = off)", 1.0)):
        next(w for w in at.number_input if w.label == label).set_value(value)
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert_clean(at)
    # in the form's words, not the trainer's field names
    assert any("Not started: “Lesion-mask loss weight” cannot be combined with MixUp" in e.value for e in at.error)
    assert jobs.current_job(runs) is None

    # A teacher (distillation) of another split is refused as well, and a teacher's share needs a teacher.
    for label in ("Lesion-mask loss weight (0 = off)", "CutMix α (0 = off)"):
        next(w for w in at.number_input if w.label == label).set_value(0.0)
    teacher = at.selectbox(key="distill_teacher")
    assert teacher.options[:2] == ["none", "shipped default model (weights/model.safetensors)"]
    teacher.set_value(next(o for o in teacher.options if o.startswith("tiny (finetune")))
    next(w for w in at.number_input if w.label == "Teacher's share w (0 = off)").set_value(0.5)
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert_clean(at)
    assert any("Not started: teacher" in e.value and "another split (seed 0, this run 1)" in e.value for e in at.error)
    at.selectbox(key="distill_teacher").set_value("none")
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    # the refusal's '>' is escaped for markdown (pages._common.plain_errors), shown as '>'
    assert any("Not started: “Teacher's share w” \\> 0 needs “Teacher”" in e.value for e in at.error), alerts(at)
    assert jobs.current_job(runs) is None
    next(w for w in at.number_input if w.label == "Teacher's share w (0 = off)").set_value(0.0)

    at.multiselect(key="ensemble_members").set_value([tiny])
    next(b for b in at.button if b.label == "Build ensemble").click()
    at.run()
    assert_clean(at)
    assert any("Not started: choose at least two runs" in e.value for e in at.error), alerts(at)


def test_training_page_compares_runs(app_env: Path) -> None:
    from tests.test_compare import make_run

    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    make_run(runs, "lr-high", 1e-3, [0.80, 0.86, 0.85])
    make_run(runs, "lr-low", 3e-4, [0.82, 0.84])
    at = page("training").run()
    assert_clean(at)
    at.multiselect(key="compare_runs").set_value(["lr-high", "lr-low"]).run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    summary = at.dataframe[1].value  # after the runs table
    assert list(summary["run"]) == ["lr-high", "lr-low"] and list(summary["best_val_auroc"]) == [0.86, 0.84]
    assert "1 setting differs:" in [c.value for c in at.caption]
    assert list(at.dataframe[2].value.index) == ["Learning rate"]  # the form's label (config key: train.lr)
    at.radio(key="compare_key").set_value("val_bacc").run()
    assert_clean(at)


def test_training_page_lists_a_damaged_run_without_a_traceback(app_env: Path) -> None:
    from tests.test_compare import make_run

    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    make_run(runs, "fine", 1e-3, [0.80, 0.86])
    with open(runs / "fine" / "metrics.jsonl", "a") as handle:
        handle.write('"oops"\n')  # a JSON line that is no record: skipped
    (runs / "broken").mkdir()
    (runs / "broken" / "config.json").write_bytes(b'{"config": \xff}')
    at = page("training").run()
    assert_clean(at)
    table = at.dataframe[0].value.set_index("name")
    assert table.loc["fine", "stage"] == "finetune" and table.loc["fine", "status"] != run_table.UNREADABLE
    assert table.loc["broken", "status"] == run_table.UNREADABLE
    assert table.loc["broken", "problem"].startswith(str(runs / "broken" / "config.json"))
    assert pd.isna(table.loc["broken", "best_val_auroc"]) and at.dataframe[0].proto.placeholder == "—"  # not "None"
    at.selectbox(key="train_run").set_value("broken").run()
    assert_clean(at)
    assert any(e.value.startswith("Cannot show run broken: ") and "config.json" in e.value for e in at.error)


def test_training_page_leaves_unknown_run_details_out_of_its_status_line(app_env: Path) -> None:
    from tests.test_compare import make_run

    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    make_run(runs, "known", 1e-3, [0.80])
    starting = runs / "starting"  # a config of another layout and a first record without a stage: running
    starting.mkdir()
    (starting / "config.json").write_text("{}")
    (starting / "metrics.jsonl").write_text(json.dumps({"kind": "step", "global_step": 0, "total_steps": 10}) + "\n")
    at = page("training").run()
    assert_clean(at)
    at.selectbox(key="train_run").set_value("starting").run()
    assert_clean(at)
    line = next(m.value for m in at.markdown if m.value.startswith("Status:"))
    assert line.startswith("Status: **running** · ") and line.endswith(" GB on disk")
    assert "None" not in line and "stage" not in line and "epochs" not in line and "input" not in line
    at.selectbox(key="train_run").set_value("known").run()
    line = next(m.value for m in at.markdown if m.value.startswith("Status:"))
    assert " · stage finetune · epochs 1/50 · input " in line


def test_training_page_with_a_runs_folder_that_is_a_file(app_env: Path) -> None:
    """A runs folder setting that names a file: the page (its live job panel included) renders, and Start
    says which folder cannot be used."""
    runs = Path(jobs.runs_dir())
    runs.parent.mkdir(parents=True, exist_ok=True)
    runs.write_text("not a folder")
    at = page("training").run()
    assert_clean(at)
    assert "No training job is running." in alerts(at)
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert_clean(at)
    assert any(e.value.startswith(f"Not started: runs folder {runs}: cannot be created") for e in at.error), alerts(at)
    assert runs.read_text() == "not a folder"


def start_named(field: str, name: str) -> tuple[AppTest, Path, str]:
    """The Training page after typing `name` in a run's or an ensemble's name `field` and pressing its button
    (a finished run "fine" lets the ensemble form show), with the runs folder and the field's word in errors."""
    from tests.test_compare import make_run

    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    make_run(runs, "fine", 1e-3, [0.8])  # the ensemble form shows once there is a run
    at = page("training").run()
    next(w for w in at.text_input if w.label == field).set_value(name)
    button = "Start training" if field.startswith("Run") else "Build ensemble"
    next(b for b in at.button if b.label == button).click()
    at.run()
    assert_clean(at)
    return at, runs, "run name" if field.startswith("Run") else "ensemble name"


@pytest.mark.parametrize("field", ["Run name (optional)", "Ensemble name (optional)"])
def test_training_page_refuses_a_name_outside_the_runs_folder(app_env: Path, field: str) -> None:
    at, runs, what = start_named(field, "../escape")
    assert any(e.value.startswith(f"Not started: {what} '../escape': use letters") for e in at.error), alerts(at)
    assert not (runs.parent / "escape").exists() and jobs.current_job(runs) is None


def running_ensemble_job(metrics: str | None = None) -> subprocess.Popen:
    """An ensemble job "ens" the app launched, in the runs folder: its config.json (and `metrics`, as
    metrics.jsonl, when given), the job lock, and a stand-in for `python -m dermai ensemble` (its command line
    names dermai, as the job check expects). The caller ends the process."""
    runs = Path(jobs.runs_dir())
    (runs / "ens").mkdir(parents=True)
    (runs / "ens" / "config.json").write_text(json.dumps({"members": ["a", "b"]}))
    if metrics is not None:
        (runs / "ens" / "metrics.jsonl").write_text(metrics)
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "dermai"], start_new_session=True)
    record = {"pid": process.pid, "run_dir": str(runs / "ens"), "stage": "ensemble", "command": [], "started": 0.0}
    (runs / jobs.LOCK_NAME).write_text(json.dumps(record))
    return process


def test_training_page_cancels_a_running_ensemble_rather_than_stopping_it(app_env: Path) -> None:
    process = running_ensemble_job()
    try:
        at = page("training").run()
        assert_clean(at)
        at.selectbox(key="train_run").set_value("ens").run()
        labels = [b.label for b in at.button]
        assert "Cancel this job" in labels and "Stop this run" not in labels
        next(b for b in at.button if b.label == "Cancel this job").click()
        at.run()
        assert_clean(at)
        assert process.wait(timeout=30) == -signal.SIGTERM
        assert not (Path(jobs.runs_dir()) / "ens" / "STOP").exists()
    finally:
        process.kill()
        process.wait()


def test_evaluation_compares_two_models_of_one_split(app_env: Path) -> None:
    import torch

    from dermai.weights import load_weights, save_weights

    loaded = load_weights(app_env)
    torch.manual_seed(3)
    with torch.no_grad():
        loaded.model.classifier.weight.add_(torch.randn_like(loaded.model.classifier.weight))
    challenger = Path(jobs.runs_dir()) / "challenger" / "model.safetensors"
    challenger.parent.mkdir(parents=True)
    save_weights(loaded.model, challenger, {k: v for k, v in loaded.meta.items() if k != "format"})
    at = page("evaluation").run()
    other = at.selectbox(key="cmp_other")
    # not A itself, nor the shipped weights, trained on another split than the tiny model
    assert other.options == ["challenger (finished)"]
    other.set_value(str(challenger))
    next(b for b in at.button if b.label == "Compare").click()
    at.run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    table = next(d.value for d in at.dataframe if "verdict" in d.value.columns)
    assert list(table["metric"]) == ["AUROC", "Bal. acc."]
    assert (table["B − A"] - (table["B"] - table["A"])).abs().max() < 1e-9
    verdicts = {"B is higher", "A is higher", "no clear difference (the interval spans 0)"}
    assert set(table["verdict"]) <= verdicts


def sited_weights(weights: Path, folder: Path) -> Path:
    """A copy of the tiny weights whose context model uses the body site, as if it had helped on validation."""
    import shutil

    sited = folder / "sited" / "model.safetensors"
    sited.parent.mkdir()
    shutil.copy(weights, sited)
    meta = json.loads(weights.with_suffix(".json").read_text())
    meta["context"]["fields"]["site"]["weight"] = 1.0
    sited.with_suffix(".json").write_text(json.dumps(meta))
    return sited


def test_worklist_asks_each_images_site_when_the_model_uses_sites(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DERMAI_WEIGHTS", str(sited_weights(app_env, tmp_path)))
    at = page("predict").run()
    names = ["ISIC_0024306.jpg", "ISIC_0025964.jpg"]
    at.file_uploader[0].set_value([(n, (HAM / "images" / n).read_bytes(), "image/jpeg") for n in names])
    at.run()
    assert_clean(at)
    assert "Body site per image (optional)" in [e.label for e in at.expander]
    sites = next(d.value for d in at.dataframe if list(d.value.columns) == ["image", "site"])
    assert list(sites["image"]) == names and (sites["site"] == "not given").all()  # nothing given yet
    site = at.selectbox(key="pred_site")
    face = next(o for o in site.options if o == "face")
    site.set_value(face).run()
    assert_clean(at)
    sites = next(d.value for d in at.dataframe if list(d.value.columns) == ["image", "site"])
    assert list(sites["site"]) == ["face", "face"]  # the shared site fills every row, to be changed per image
    table = next(d.value for d in at.dataframe if "rank" in d.value.columns)
    assert list(table["context"]) == ["site face", "site face"]


def sited_worklist(app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The whole app on its Predict page with a model that uses body sites and two uploads: a worklist with
    its per-image site editor."""
    monkeypatch.setenv("DERMAI_WEIGHTS", str(sited_weights(app_env, tmp_path)))
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/predict.py").run()
    names = ["ISIC_0024306.jpg", "ISIC_0025964.jpg"]
    at.file_uploader[0].set_value([(n, (HAM / "images" / n).read_bytes(), "image/jpeg") for n in names])
    return at.run()


def test_worklist_keeps_each_images_site_across_pages(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = sited_worklist(app_env, tmp_path, monkeypatch)
    editor = next(d for d in at.dataframe if list(d.value.columns) == ["image", "site"])
    at.session_state[editor.key] = {"edited_rows": {1: {"site": "face"}}, "added_rows": [], "deleted_rows": []}
    at.run()  # as if the clinician had picked "face" for the second image in the table
    assert_clean(at)
    contexts = next(d.value for d in at.dataframe if "rank" in d.value.columns).set_index("image")["context"]
    assert contexts.fillna("none").to_dict() == {"ISIC_0024306.jpg": "none", "ISIC_0025964.jpg": "site face"}
    at.selectbox(key="pred_detail").select_index(1).run()  # details of the second image in the worklist
    detail = at.selectbox(key="pred_detail").value
    at.switch_page("pages/home.py").run()  # Streamlit drops the table's edits here
    at.switch_page("pages/predict.py").run()
    assert_clean(at)
    assert at.selectbox(key="pred_detail").value == detail != at.selectbox(key="pred_detail").options[0]
    sites = next(d.value for d in at.dataframe if list(d.value.columns) == ["image", "site"])
    assert list(sites["site"]) == ["not given", "face"]  # the table starts from the kept sites
    contexts = next(d.value for d in at.dataframe if "rank" in d.value.columns).set_index("image")["context"]
    assert contexts.fillna("none").to_dict() == {"ISIC_0024306.jpg": "none", "ISIC_0025964.jpg": "site face"}
    editor = next(d for d in at.dataframe if list(d.value.columns) == ["image", "site"])
    at.session_state[editor.key] = {"edited_rows": {0: {"site": "back"}}, "added_rows": [], "deleted_rows": []}
    at.run()  # an edit after the return applies to the kept sites
    assert_clean(at)
    contexts = next(d.value for d in at.dataframe if "rank" in d.value.columns).set_index("image")["context"]
    assert contexts.to_dict() == {"ISIC_0024306.jpg": "site back", "ISIC_0025964.jpg": "site face"}


def test_training_page_shows_a_runs_served_figures_and_no_empty_curves(app_env: Path) -> None:
    from tests.test_compare import make_run

    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    serving = {
        "kind": "serving",
        "status": "fitted",
        "temperature": 1.2,
        "val_auroc": 0.9021,
        "val_bacc": 0.655,
        "val_ece_malignant_uncalibrated": 0.160,
        "val_ece_malignant": 0.026,
        "n_val": 1501,
    }
    member = make_run(runs, "member", 1e-3, [0.80, 0.86])
    with open(member / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(serving) + "\n")
    ensemble = runs / "pair"
    ensemble.mkdir()
    (ensemble / "config.json").write_text(json.dumps({"members": ["a.safetensors", "b.safetensors"]}))
    (ensemble / "metrics.jsonl").write_text(json.dumps({**serving, "val_auroc": 0.913}) + "\n")
    os.utime(ensemble / "config.json", (time.time() - 60, time.time() - 60))  # the member is the newest run
    at = page("training").run()
    assert_clean(at)
    assert at.dataframe[0].value.set_index("name").loc["member", "epochs"] == "2/50"  # of its config's fine-tuning
    assert at.selectbox(key="train_run").value == "member"
    shown = {m.label: m.value for m in at.metric}
    assert shown["val AUROC"] == "0.902" and shown["temperature"] == "1.20" and shown["ECE, malignant"] == "0.026"
    assert len(at.get("plotly_chart")) == 1  # the member's curves

    at.selectbox(key="train_run").set_value("pair").run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["val AUROC"] == "0.913"
    assert not at.get("plotly_chart")  # no empty axes for a run that trained nothing
    assert "An ensemble trains nothing: its members' runs have the training curves." in [c.value for c in at.caption]


def metric_colour(metric: Metric) -> str:
    """The colour name st.metric gave a metric's delta (GREEN, RED, GRAY)."""
    colours = metric.proto.DESCRIPTOR.fields_by_name["color"].enum_type
    return colours.values_by_number[metric.proto.color].name


def test_training_page_warns_when_calibration_ends_on_its_temperature_bound(app_env: Path) -> None:
    from dermai.calibration import TEMPERATURE_BOUNDS, fit_temperature
    from tests.test_compare import make_run

    rng = np.random.default_rng(0)  # a tiny validation set with confident, wrong logits drives T to the bound
    temperature = fit_temperature(rng.normal(size=(12, 7)) * 5, rng.integers(0, 7, 12))
    assert temperature == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-3)
    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    serving = {
        "kind": "serving",
        "status": "fitted",
        "temperature": temperature,
        "val_auroc": 0.5,
        "val_bacc": 0.2,
        "val_ece_malignant_uncalibrated": 0.176,
        "val_ece_malignant": 0.100,
        "n_val": 12,
    }
    tiny = make_run(runs, "tiny", 1e-3, [0.5])
    with open(tiny / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(serving) + "\n")
    at = page("training").run()
    assert_clean(at)
    warning = next(w.value for w in at.warning if "could not fit a temperature" in w.value)
    assert "(12 images)" in warning and "too small" in warning
    ece = next(m for m in at.metric if m.label == "ECE, malignant")
    assert ece.proto.delta == "-0.076 by calibration" and metric_colour(ece) == "GRAY"

    with open(tiny / "metrics.jsonl", "a") as handle:  # a later calibration that found a minimum: no warning
        handle.write(json.dumps({**serving, "temperature": 1.3}) + "\n")
    at.run()
    assert not any("could not fit a temperature" in w.value for w in at.warning)
    ece = next(m for m in at.metric if m.label == "ECE, malignant")
    assert metric_colour(ece) == "GREEN"  # a fitted calibration's drop in ECE is a gain


def test_training_form_fills_from_a_recipe_and_keeps_its_fields_across_pages(app_env: Path) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/training.py").run()
    assert at.number_input(key="train_image_size").value == 224  # the paper's default
    # Error messages name fields by these labels (training_form.in_form_words): they are the ones shown.
    for field, label in training_form.TRAIN_FORM_LABELS.items():
        widget = {
            "stage": lambda: at.selectbox(key="train_stage"),
            "distill_from": lambda: at.selectbox(key="distill_teacher"),
        }.get(field, lambda f=field: at.number_input(key=training_form.train_field_key(f)))()
        assert widget.label.startswith(label), (field, widget.label)
    quick = next(name for name in training_form.TRAIN_PRESETS if name.startswith("Quick check"))
    from dermai.inference import machine_compute

    shown = training_form.preset_label(quick, *machine_compute())  # with this machine's time
    assert shown in at.selectbox(key="train_preset").options and "about" in shown
    at.selectbox(key="train_preset").set_value(quick).run()
    assert_clean(at)
    assert at.number_input(key="train_image_size").value == 64
    assert at.number_input(key="train_limit").value == 300
    assert at.number_input(key="train_warmup_epochs").value == 0.5
    at.number_input(key="train_seed").set_value(7).run()
    at.text_input(key="train_run_name").set_value("qc1").run()
    at.switch_page("pages/augmentation.py").run()  # Streamlit drops the form's widget state here
    at.switch_page("pages/training.py").run()
    assert_clean(at)
    assert at.number_input(key="train_seed").value == 7 and at.text_input(key="train_run_name").value == "qc1"
    assert at.number_input(key="train_image_size").value == 64 and at.selectbox(key="train_stage").value == "both"
    paper = next(name for name in training_form.TRAIN_PRESETS if name.startswith("Paper"))
    at.selectbox(key="train_preset").set_value(paper).run()
    assert at.number_input(key="train_image_size").value == 224 and at.number_input(key="train_seed").value == 0


def test_training_form_keeps_its_start_and_teacher_across_pages(app_env: Path) -> None:
    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    (runs / "tiny").symlink_to(app_env.parent, target_is_directory=True)  # a finished fine-tuning run
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/training.py").run()
    tiny = next(o for o in at.selectbox(key="start_from").options if o.startswith("tiny (finetune"))
    at.selectbox(key="start_from").set_value(tiny).run()
    at.number_input(key="train_training_seed").set_value(11).run()
    at.checkbox(key="train_reset_classifier").check().run()
    teacher = at.selectbox(key="distill_teacher")
    shipped = next(o for o in teacher.options if o.startswith("shipped"))
    teacher.set_value(shipped).run()
    at.switch_page("pages/augmentation.py").run()  # Streamlit drops the form's widget state here
    at.switch_page("pages/training.py").run()
    assert_clean(at)
    assert at.selectbox(key="start_from").value == tiny
    assert at.number_input(key="train_training_seed").value == 11
    assert at.checkbox(key="train_reset_classifier").value is True
    assert at.selectbox(key="distill_teacher").value == shipped


def test_training_page_deletes_runs_and_forgets_their_weights(app_env: Path) -> None:
    from tests.test_compare import make_run

    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    kept = make_run(runs, "kept", 1e-3, [0.80, 0.86])
    chosen = make_run(runs, "chosen", 1e-3, [0.80, 0.86])
    (runs / "broken").mkdir()
    (runs / "broken" / "config.json").write_bytes(b'{"config": \xff}')
    for name, age_s in (("kept", 3690), ("chosen", 3660), ("broken", 3600)):  # the table lists the newest first
        then = time.time() - age_s  # quiet for an hour: not a trainer still writing, so deletable
        for file in ("config.json", "metrics.jsonl"):
            if (runs / name / file).exists():
                os.utime(runs / name / file, (then, then))
    at = page("training")
    at.session_state[sidebar_state.WEIGHTS_KEY] = str(chosen / "model.safetensors")
    at.run()
    assert_clean(at)
    assert at.selectbox(key="train_run").value == "broken"
    next(b for b in at.button if b.label == "Delete broken").click().run()  # a damaged run can be deleted too
    assert_clean(at)
    assert "Deleted run broken: 0.00 GB freed." in alerts(at) and not (runs / "broken").exists()
    assert at.session_state[sidebar_state.WEIGHTS_KEY] == str(chosen / "model.safetensors")
    assert at.selectbox(key="train_run").value == "chosen"  # the newest run left is shown

    next(b for b in at.button if b.label == "Delete chosen").click().run()
    assert_clean(at)
    assert not chosen.exists() and kept.exists()
    assert sidebar_state.WEIGHTS_KEY not in at.session_state  # every page falls back to the shipped weights
    assert at.dataframe[0].value["name"].tolist() == ["kept"] and at.selectbox(key="train_run").value == "kept"
    assert "1 run takes 0.0 GB" in " ".join(c.value for c in at.caption)


def test_training_page_shows_why_a_resume_failed_and_offers_it_again(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume that dies before its first step writes no status: the run no longer reads "stopped" as if
    nothing happened, but interrupted, with the job's log saying why, and Resume offered again."""
    from tests.test_jobs import status_record, stopped_run, wait_for

    runs = Path(jobs.runs_dir())
    run = stopped_run(runs, "halfway")
    status_record(run, "stopped", time.time() - 3000)
    error = "error: the split rebuilt from /data is not the one this run started on"
    failing = [sys.executable, "-c", f"import sys; sys.exit({error!r})"]
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: failing)
    jobs.resume_job(run, runs)
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the failing resume to end")
    at = page("training").run()
    assert_clean(at)
    assert at.dataframe[0].value.set_index("name").loc["halfway", "status"] == "interrupted"
    assert any(i.value.startswith("Its last job ended without finishing (the log below says why)") for i in at.info)
    assert at.code and at.code[-1].value.splitlines()[-1] == error
    assert "Resume" in [b.label for b in at.button]


def test_training_page_says_which_runs_deleting_a_run_affects(app_env: Path) -> None:
    from tests.test_jobs import status_record, stopped_run

    runs = Path(jobs.runs_dir())
    base = stopped_run(runs, "base", quiet_s=600)  # the newest run: the one shown
    for name, train, init in (
        ("student", {"distill_from": str(base / "model.safetensors"), "distill_weight": 0.5}, None),
        ("child", {}, str(base / "model.safetensors")),
    ):
        run = stopped_run(runs, name)
        (run / "config.json").write_text(
            json.dumps({"config": {"stage": "finetune", "train": train}, "init_weights": init})
        )
        status_record(run, "stopped", time.time() - 3000)
    at = page("training").run()
    assert_clean(at)
    assert at.selectbox(key="train_run").value == "base"
    warned = [w.value for w in at.warning if w.value.startswith("Other runs use its weights")]
    assert len(warned) == 1, alerts(at)
    assert "`child` (stopped) started from its weights" in warned[0] and "stay valid" in warned[0]
    assert "`student` (stopped) learns from it as its teacher" in warned[0]
    assert "can no longer resume" in warned[0]
    at.selectbox(key="train_run").set_value("child").run()
    assert not any(w.value.startswith("Other runs use its weights") for w in at.warning)


def test_training_page_offers_a_runs_weights_only_once_it_has_finished(app_env: Path) -> None:
    """The trainer saves model.safetensors ("finished" in its JSON) minutes before calibrating them: while it
    runs, they are not offered for prediction."""
    from dermai.train import run_lock
    from tests.test_jobs import status_record, stopped_run

    runs = Path(jobs.runs_dir())
    run = stopped_run(runs, "calibrating")
    (run / "model.safetensors").write_bytes(b"x")
    (run / "model.json").write_text(json.dumps({"status": "finished"}))
    with run_lock(run):
        at = page("training").run()
        assert_clean(at)
        assert at.dataframe[0].value.loc[0, "status"] == "running"
        assert runs_view.USE_RUN_WEIGHTS not in [b.label for b in at.button]
        said = "Its weights are offered for prediction once it has finished or stopped: they are calibrated last."
        assert said in [c.value for c in at.caption]
    status_record(run, "finished", time.time())
    at.run()
    assert runs_view.USE_RUN_WEIGHTS in [b.label for b in at.button]


def test_training_page_refuses_to_start_without_readable_data_in_the_apps_words(
    app_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no data folder the trainer would fail a minute in, telling the researcher to "pass --data DIR":
    Start refuses at once, in the sidebar's words; a metadata row it cannot read is named."""
    from tests.conftest import ham_rows, make_folder
    from tests.test_jobs import harmless

    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: harmless(0))  # launch nothing real
    monkeypatch.delenv("DERMAI_DATA")
    monkeypatch.setattr("dermai.data.candidate_roots", lambda explicit=None: [Path(explicit or tmp_path / "nowhere")])
    runs = Path(jobs.runs_dir())
    at = page("training").run()
    next(b for b in at.button if b.label == "Start training").click().run()
    assert_clean(at)
    refused = [e.value for e in at.error if e.value.startswith("Not started: data folder: no data folder found")]
    assert refused and refused[0].endswith(f"{tmp_path / 'nowhere'} (enter another data folder in the sidebar)")
    rows = ham_rows(n_lesions_per_dx=1, images_per_lesion=1)
    rows[2]["dx"] = "melanomaa"
    data = make_folder(tmp_path / "data", rows)
    at.session_state["data_dir"] = str(data)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert any(e.value.startswith(f"Not started: data folder: {data / 'metadata.csv'}, row 4: ") for e in at.error)
    assert jobs.current_job(runs) is None and not (runs.exists() and list(runs.iterdir()))


def test_training_page_cancel_while_preparing_data_reads_stopped_by_the_user(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_jobs import harmless, wait_for

    runs = Path(jobs.runs_dir())
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: harmless(60))  # a job preparing its data
    jobs.start_job("both", {}, runs, name="early")
    try:
        at = page("training").run()
        next(b for b in at.button if b.label == "Cancel").click().run()
        assert_clean(at)
        wait_for(lambda: jobs.current_job(runs) is None, 30, "the cancelled job to end")
    finally:
        jobs.cancel_job(runs)
    at.run()
    assert_clean(at)
    assert at.dataframe[0].value.set_index("name").loc["early", "status"] == "stopped"
    assert "Cancelled by the user before it saved a checkpoint: there is nothing to resume." in alerts(at)
    assert not at.code and "Resume" not in [b.label for b in at.button]  # no "error: interrupted", no checkpoint


def test_training_page_shows_a_calibration_fitted_without_some_figures(app_env: Path) -> None:
    """An older version's calibration record (no ECE before calibration), or one whose AUROC validation could
    not compute: fitted all the same, shown with dashes, never as "Calibration on validation failed: None"."""
    from tests.test_compare import make_run

    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    run = make_run(runs, "older", 1e-3, [0.80, 0.86])
    serving = {"kind": "serving", "status": "fitted", "temperature": 1.2, "val_auroc": None, "val_bacc": 0.655}
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({**serving, "val_ece_malignant": 0.026, "n_val": 1501}) + "\n")
    at = page("training").run()
    assert_clean(at)
    shown = {m.label: m.value for m in at.metric}
    assert shown["val AUROC"] == "—" and shown["temperature"] == "1.20" and shown["ECE, malignant"] == "0.026"
    assert not any("failed" in w.value for w in at.warning), alerts(at)
    assert any(c.value.startswith("The calibration was fitted, but its record lacks some figures") for c in at.caption)


def test_training_page_compares_only_runs_that_wrote_their_settings(app_env: Path) -> None:
    from tests.test_compare import make_run

    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    make_run(runs, "fine", 1e-3, [0.80, 0.86])
    (runs / "early").mkdir()  # a job that failed before its trainer wrote config.json
    (runs / "early" / jobs.LOG_NAME).write_text("error: cannot read the data folder\n")
    at = page("training").run()
    assert_clean(at)
    assert set(at.dataframe[0].value["name"]) == {"fine", "early"}
    assert at.multiselect(key="compare_runs").options == ["fine"]


def test_evaluation_says_the_cut_offs_were_chosen_on_the_validation_split(app_env: Path) -> None:
    at = page("evaluation").run()
    at.radio(key="eval_split").set_value("val").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    captions = [c.value for c in at.caption]
    assert any(c.startswith("The cut-offs as chosen on this split (val): these figures are the ones") for c in captions)
    assert "Validated cut-offs re-checked (not re-tuned) on this split" not in captions


def test_augmentation_lab_keeps_its_preview_choices_and_upload_across_pages(app_env: Path) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/augmentation.py").run()
    at.radio(key="aug_shape").set_value("4:3").run()
    at.select_slider(key="aug_size").set_value(96).run()
    at.selectbox(key="aug_dx").set_value("mel").run()
    at.slider(key="aug_count").set_value(2).run()
    at.text_input(key="aug_ids").set_value("ISIC_0024306").run()
    at.select_slider(key="aug_paper_crop_ratio").set_value((0.5, 1.5)).run()
    at.switch_page("pages/training.py").run()  # Streamlit drops the lab's widget state here
    at.switch_page("pages/augmentation.py").run()
    assert_clean(at)
    assert at.radio(key="aug_shape").value == "4:3" and at.select_slider(key="aug_size").value == 96
    assert at.selectbox(key="aug_dx").value == "mel" and at.slider(key="aug_count").value == 2
    assert at.text_input(key="aug_ids").value == "ISIC_0024306"
    assert at.select_slider(key="aug_paper_crop_ratio").value == (0.5, 1.5)

    at.radio(key="aug_source").set_value("Upload one").run()
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.file_uploader(key="aug_upload").upload(image.name, image.read_bytes(), "image/jpeg")
    at.run()
    assert sum(len(e.proto.imgs) for e in at.image) == 4  # before, after, and the two views
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/augmentation.py").run()
    assert_clean(at)
    assert at.radio(key="aug_source").value == "Upload one"
    assert "Showing ISIC_0024306.jpg, uploaded earlier in this session." in [i.value for i in at.info]
    assert sum(len(e.proto.imgs) for e in at.image) == 4
    next(b for b in at.button if b.label == "Clear").click().run()
    assert not at.image and "Upload an image to preview." in [i.value for i in at.info]


def test_augmentation_crop_ratio_returns_to_its_default(app_env: Path) -> None:
    """The default 3/4-4/3 is on the control's grid: moved and moved back, it sends no change (a slider in
    steps of 0.05 from 0.25 could only offer 1.30 or 1.35)."""
    at = page("augmentation").run()
    ratio = at.select_slider(key="aug_paper_crop_ratio")
    assert ratio.value == (0.75, 4 / 3)
    ratio.set_value((0.75, 1.35)).run()
    next(b for b in at.button if b.label == "Use in training").click().run()
    assert at.session_state["train_augment"] == ["crop_ratio=0.75,1.35"]
    at.select_slider(key="aug_paper_crop_ratio").set_value((0.75, 4 / 3)).run()
    next(b for b in at.button if b.label == "Use in training").click().run()
    assert_clean(at)
    assert at.session_state["train_augment"] == []


def test_the_other_weights_error_goes_once_other_weights_are_chosen(app_env: Path) -> None:
    from dermai.weights import DEFAULT_WEIGHTS

    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT)
    at.session_state["_other_weights_error"] = "Not used: /typo.safetensors: weights file not found"
    at.run()
    assert "Not used: /typo.safetensors: weights file not found" in [e.value for e in at.sidebar.error]
    at.sidebar.selectbox(key="_weights_widget").set_value(str(DEFAULT_WEIGHTS)).run()
    assert_clean(at)
    assert at.session_state["weights_path"] == str(DEFAULT_WEIGHTS)
    assert "_other_weights_error" not in at.session_state


def test_home_shows_the_tiers_test_figures_beside_the_validation_ones(json_only_env: Path) -> None:
    record = {
        "classes": ["mel", "nv"],
        "image_size": 32,
        "operating_points": {"refer": {"threshold": 0.1, "sensitivity": 0.952, "specificity": 0.688}},
        "test_operating_points": {"refer": {"sensitivity": 0.922, "specificity": 0.653}},
    }
    rewrite(json_only_env.with_suffix(".json"), record)
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    assert_clean(at)
    assert "re-checked once on test" in at.subheader[0].value
    table = at.table[0].value
    assert list(table.columns) == [
        "threshold",
        "sensitivity (val)",
        "specificity (val)",
        "sensitivity (test)",
        "specificity (test)",
    ]
    assert table.loc["refer"].tolist() == [0.1, 0.952, 0.688, 0.922, 0.653]


# ------------------------------------------------------------------------------------- Predict page (fixB)
def tta_fitted_weights(weights: Path, folder: Path) -> Path:
    """A copy of the tiny weights whose JSON says their cut-offs were fitted on TTA scores (`calibrate --tta`)."""
    import shutil

    copy = folder / "tta" / "model.safetensors"
    copy.parent.mkdir()
    shutil.copy(weights, copy)
    meta = json.loads(weights.with_suffix(".json").read_text())
    copy.with_suffix(".json").write_text(json.dumps({**meta, "serving": {**meta["serving"], "tta": True}}))
    return copy


TTA_DIFFERS = ":warning: Test-time augmentation is {}, but these weights' tier cut-offs were validated with it {}"


def tta_caption(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith(":warning: Test-time augmentation")]


def test_predict_starts_tta_as_the_tiers_were_validated_and_says_when_it_differs(app_env: Path, tmp_path: Path) -> None:
    at = page("predict").run()
    box = at.checkbox(key="pred_tta")
    assert box.value is False and "validated with it off, so it starts off" in box.proto.help
    assert tta_caption(at) == []
    box.check().run()
    assert_clean(at)
    assert [c.startswith(TTA_DIFFERS.format("on", "off") + ":") for c in tta_caption(at)] == [True]
    at.session_state["weights_path"] = str(tta_fitted_weights(app_env, tmp_path))  # as the sidebar sets it
    at.run()
    assert_clean(at)
    box = at.checkbox(key="pred_tta")
    assert box.value is True and "validated with it on, so it starts on" in box.proto.help  # other weights' own
    assert tta_caption(at) == []
    box.uncheck().run()
    assert [c.startswith(TTA_DIFFERS.format("off", "on") + ":") for c in tta_caption(at)] == [True]
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg").run()
    assert_clean(at)
    assert at.session_state["pred_last"]["prediction"].tta is False  # the choice made, not the default, is used


def test_evaluation_starts_tta_as_the_tiers_were_validated(app_env: Path, tmp_path: Path) -> None:
    """The Evaluation page's TTA box, like Predict's, starts at the setting the weights' cut-offs were validated
    with (their own, not Predict's box), and a caption says when it differs."""
    at = page("evaluation").run()
    assert_clean(at)
    assert at.checkbox(key="eval_tta").value is False and tta_caption(at) == []
    at.session_state["weights_path"] = str(tta_fitted_weights(app_env, tmp_path))
    at.run()
    box = at.checkbox(key="eval_tta")
    assert box.value is True and "validated with it on, so it starts on" in box.proto.help
    box.uncheck().run()
    assert_clean(at)
    assert [c.startswith(TTA_DIFFERS.format("off", "on") + ":") for c in tta_caption(at)] == [True]


def test_predict_says_a_model_error_is_not_an_unreadable_file(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dermai.predict import Predictor

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(Predictor, "predict", broken)
    at = page("predict").run()
    names = ["ISIC_0024306.jpg", "ISIC_0025964.jpg"]
    at.file_uploader[0].set_value([(n, (HAM / "images" / n).read_bytes(), "image/jpeg") for n in names])
    at.run()
    assert_clean(at)
    assert [e.value for e in at.error] == [
        "Cannot score the images (not a fault of the files): mat1 and mat2 shapes cannot be multiplied"
    ]
    assert not at.subheader and not at.dataframe  # no worklist of "unreadable" files
    at.file_uploader[0].set_value([(names[0], (HAM / "images" / names[0]).read_bytes(), "image/jpeg")]).run()
    assert_clean(at)
    assert [e.value for e in at.error] == [
        "Cannot score this image (not a fault of the file): mat1 and mat2 shapes cannot be multiplied"
    ]


def test_predict_caches_results_under_the_weights_time_its_model_was_loaded_at(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights re-saved while the page runs: the result of the model loaded at the top must not be cached as
    the new file's (it would be shown again, as the new model's, on the next run)."""
    readings: list[tuple[int, int]] = []

    def ticking(path: str) -> tuple[int, int]:  # every reading finds the file re-saved since the one before
        readings.append((len(readings), 0))
        return readings[-1]

    monkeypatch.setattr(sidebar_state, "weights_mtime", ticking)
    at = page("predict").run()
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg")
    first = len(readings)  # the page's first reading of this run: the one its model is loaded by
    at.run()
    assert_clean(at)
    assert at.session_state["pred_last"]["key"][2] == (first, 0)
    names = ["ISIC_0024306.jpg", "ISIC_0025964.jpg"]
    at.file_uploader[0].set_value([(n, (HAM / "images" / n).read_bytes(), "image/jpeg") for n in names])
    first = len(readings)
    at.run()
    assert_clean(at)
    assert {key[3] for key in at.session_state["pred_batch"]} == {(first, 0)}
    assert at.session_state["pred_last"]["key"][2] == (first, 0)  # the detail of #1, shown in full


def test_worklist_details_stay_on_the_chosen_image_when_the_ranking_changes(app_env: Path) -> None:
    at = page("predict").run()
    names = ["ISIC_0024306.jpg", "ISIC_0025964.jpg"]
    files = [(n, (HAM / "images" / n).read_bytes(), "image/jpeg") for n in names]
    broken = ("broken.jpg", b"\xff\xd8\xff\xe0 not a jpeg", "image/jpeg")
    at.file_uploader[0].set_value([*files, broken]).run()
    detail = at.selectbox(key="pred_detail")
    detail.set_value("broken.jpg").run()  # an image key, shown with its rank and tier
    assert_clean(at)
    assert at.selectbox(key="pred_detail").value == "broken.jpg"
    assert "#3 broken.jpg (unreadable)" in at.selectbox(key="pred_detail").options
    more = ("ISIC_0024307.jpg", (HAM / "images" / "ISIC_0024307.jpg").read_bytes(), "image/jpeg")
    at.file_uploader[0].set_value([*files, more, broken]).run()  # broken.jpg is #4 now
    assert_clean(at)
    assert at.selectbox(key="pred_detail").value == "broken.jpg"
    assert any(e.value.startswith("Cannot analyse this file: broken.jpg") for e in at.error)
    at.selectbox(key="pred_detail").set_value("ISIC_0025964.jpg").run()
    at.checkbox(key="pred_tta").check().run()  # re-scored, perhaps re-ranked: still the image chosen
    assert_clean(at)
    assert at.selectbox(key="pred_detail").value == "ISIC_0025964.jpg"
    assert at.session_state["pred_last"]["name"] == "ISIC_0025964.jpg"


def ood_weights(weights: Path, folder: Path, ood: dict | None) -> Path:
    """A copy of the tiny weights with their JSON's OOD block replaced (None: no OOD check stored)."""
    import shutil

    copy = folder / "ood" / "model.safetensors"
    copy.parent.mkdir()
    shutil.copy(weights, copy)
    meta = json.loads(weights.with_suffix(".json").read_text())
    meta = {k: v for k, v in meta.items() if k != "ood"} | ({"ood": ood} if ood else {})
    copy.with_suffix(".json").write_text(json.dumps(meta))
    return copy


def test_worklist_shows_an_unchecked_ood_verdict_as_a_dash_not_as_passed(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["ISIC_0024306.jpg", "ISIC_0025964.jpg"]
    files = [(n, (HAM / "images" / n).read_bytes(), "image/jpeg") for n in names]
    at = page("predict").run()
    at.file_uploader[0].set_value(files).run()
    checked = next(d for d in at.dataframe if "rank" in d.value.columns)
    assert set(checked.value["ood"]) <= {"yes", "no"} and checked.value["ood"].notna().all()
    monkeypatch.setenv("DERMAI_WEIGHTS", str(ood_weights(app_env, tmp_path, None)))
    at = page("predict").run()
    at.file_uploader[0].set_value(files).run()
    assert_clean(at)
    table = next(d for d in at.dataframe if "rank" in d.value.columns)
    assert table.value["ood"].isna().all() and table.proto.placeholder == "—"  # unknown, not an empty box
    assert json.loads(table.proto.columns)["ood"]["type_config"]["type"] == "text"


def test_a_flagged_image_gets_one_out_of_distribution_warning(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = json.loads(app_env.with_suffix(".json").read_text())
    monkeypatch.setenv("DERMAI_WEIGHTS", str(ood_weights(app_env, tmp_path, {**meta["ood"], "threshold": 0.0})))
    at = page("predict").run()
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg").run()
    assert_clean(at)
    assert any("Triage tier: UNGRADABLE" in text for text in alerts(at))
    said = [w.value for w in at.warning if "does not look like the dermoscopy images" in w.value]
    assert len(said) == 1 and said[0].startswith("**Out of distribution:**"), said


def test_home_and_predict_warn_when_the_weights_cut_offs_rest_on_few_validation_images(
    app_env: Path, tmp_path: Path
) -> None:
    """A quick training run's weights validate on a handful of images: Home and Predict say its tiers are not
    reliable, and say nothing of the kind for the same weights validated on enough images."""
    meta = json.loads(app_env.with_suffix(".json").read_text())
    for n_val, warned in ((16, True), (1500, False)):
        folder = tmp_path / f"n{n_val}"
        folder.mkdir()
        shutil.copy(app_env, folder / "model.safetensors")
        val = {**meta.get("val_metrics", {}), "val_auroc": 0.8, "n_val": n_val}
        (folder / "model.json").write_text(json.dumps({**meta, "val_metrics": val}))
        for name in ("home", "predict"):  # the model card, and where a clinician reads the tiers
            at = page(name)
            at.session_state["weights_path"] = str(folder / "model.safetensors")
            at.run()
            assert_clean(at)
            said = [w for w in alerts(at) if "not validated well enough for triage" in w]
            assert bool(said) == warned, (name, alerts(at))
            assert not warned or "only 16 validation images" in said[0]
