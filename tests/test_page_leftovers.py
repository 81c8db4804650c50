"""Small defects left from earlier walk-throughs of the pages: what the Dataset browser says when no image
matches, what the Augmentation lab says of odd uploads and mask-less images, and the Training page's live view of
a run started from the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
from PIL import Image
from streamlit.testing.v1 import AppTest

from dermai import jobs, run_status
from dermai.ui import dataset_view, image_display
from tests import test_app_pages
from tests.conftest import ham_rows, make_folder
from tests.test_app_pages import alerts, assert_clean, page
from tests.test_jobs import held

app_env = test_app_pages.app_env  # the fixture: data, tiny weights and an empty runs folder


def test_no_match_words_name_a_diagnosis_that_cannot_be_of_the_chosen_kind() -> None:
    meta = pd.DataFrame({"dx": ["df", "nv", "mel", "bcc"], "malignant": [0, 0, 1, 1]})
    assert dataset_view.no_match_words(meta, ["df"], "malignant") == "No image matches these filters: df is benign."
    assert (
        dataset_view.no_match_words(meta, ["df", "nv"], "malignant")
        == "No image matches these filters: df and nv are benign."
    )
    assert (
        dataset_view.no_match_words(meta, ["mel", "bcc"], "benign")
        == "No image matches these filters: mel and bcc are malignant."
    )
    # One diagnosis can be of that kind, or no kind is chosen: other filters ruled the images out.
    assert dataset_view.no_match_words(meta, ["df", "mel"], "malignant") == "No image matches these filters."
    assert dataset_view.no_match_words(meta, ["df"], "all") == "No image matches these filters."
    assert dataset_view.no_match_words(meta, [], "malignant") == "No image matches these filters."


def test_dataset_page_keeps_the_whole_folder_table_when_no_image_matches(app_env: Path) -> None:
    at = page("dataset").run()
    at.multiselect(key="ds_dx").set_value(["df"])
    at.radio(key="ds_kind").set_value("malignant")
    at.run()
    assert_clean(at)
    assert at.subheader[0].value == "0 images match"
    words = "No image matches these filters: df is benign."
    assert [i.value for i in at.info] == [words] * 3  # the grid, the distribution chart and the detail view
    assert [s.value for s in at.subheader] == ["0 images match", "Distributions", "One image in detail"]
    assert "Whole folder: images per class and split" in [c.value for c in at.caption]
    assert len(at.table) == 1 and not at.image
    at.radio(key="ds_kind").set_value("benign").run()  # the filters that match: grid and detail back
    assert_clean(at)
    assert not at.info or "No image matches" not in " ".join(alerts(at))
    assert at.image and at.selectbox(key="ds_detail").value


def test_resize_note_says_when_an_upload_is_squashed_or_upsampled() -> None:
    assert image_display.resize_note((1000, 20), 128) == (
        "The uploaded image (1000×20 px) is squashed to the 128×128 px input size (its shape 50:1, the input's 1:1)."
    )
    assert image_display.resize_note((20, 1000), (96, 128)).startswith("The uploaded image (20×1000 px) is squashed")
    assert (
        image_display.resize_note((1, 1), 128)
        == "The uploaded image is upsampled from 1×1 px to the 128×128 px input size."
    )
    assert image_display.resize_note((40, 2), 128).startswith(
        "The uploaded image is upsampled from 40×2 px and squashed"
    )
    # An ordinary photo: HAM10000's 4:3 squashed into a square is how the paper trains, nothing to say.
    assert image_display.resize_note((600, 450), 128) is None
    assert image_display.resize_note((600, 450), (96, 128)) is None


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (180, 120, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_augmentation_lab_says_an_odd_upload_is_squashed_or_upsampled(app_env: Path) -> None:
    from dermai.intake import read_image

    at = page("augmentation").run()
    at.radio(key="aug_source").set_value("Upload one").run()
    at.file_uploader(key="aug_upload").upload("strip.png", png(1000, 20), "image/png").run()
    assert_clean(at)
    assert sum(len(e.proto.imgs) for e in at.image) == 4  # still previewed
    too_small = list(read_image(png(1000, 20), "strip.png").warnings)  # intake's "too small to grade", as Predict
    assert [w.value for w in at.warning] == [*too_small, image_display.resize_note((1000, 20), 128)]
    at.file_uploader(key="aug_upload").upload("dot.png", png(1, 1), "image/png").run()
    assert_clean(at)
    assert [w.value for w in at.warning][-1] == image_display.resize_note((1, 1), 128)
    at.file_uploader(key="aug_upload").upload("photo.png", png(600, 450), "image/png").run()
    assert_clean(at)
    assert not at.warning and sum(len(e.proto.imgs) for e in at.image) == 4


def test_augmentation_lab_says_what_reading_an_upload_found(app_env: Path) -> None:
    """Predict says a cut-out's transparency was put on white (intake's notes); the lab showed the same upload
    without a word, its preview on white as if that were the photo."""
    from dermai.intake import read_image

    cut_out = Image.new("RGBA", (600, 450), (180, 120, 90, 255))
    cut_out.paste((0, 0, 0, 0), (0, 0, 300, 450))
    buffer = io.BytesIO()
    cut_out.save(buffer, format="PNG")
    at = page("augmentation").run()
    at.radio(key="aug_source").set_value("Upload one").run()
    at.file_uploader(key="aug_upload").upload("cut.png", buffer.getvalue(), "image/png").run()
    assert_clean(at)
    said = read_image(buffer.getvalue(), "cut.png").warnings
    assert said and "transparent" in said[0]
    assert [w.value for w in at.warning] == list(said)


def test_missing_masks_note_names_the_images_without_a_mask() -> None:
    files = [Path("m/a_segmentation.png"), None, None]
    assert dataset_view.missing_masks_note(["a", "b", "c"], files) == (
        "No lesion masks to outline: 2 of these 3 images have no lesion mask (b, c). Choose images that all "
        "have one to outline them."
    )
    assert dataset_view.missing_masks_note(["b"], [None]) == (
        "No lesion masks to outline: this image has no lesion mask in the data folder's masks/ folder."
    )
    assert dataset_view.missing_masks_note(["a"], files[:1]) is None
    many = dataset_view.missing_masks_note([f"i{k}" for k in range(8)], [None] * 8)
    assert many.startswith("No lesion masks to outline: these 8 images have no lesion mask")


def test_augmentation_lab_says_which_images_have_no_lesion_mask(app_env: Path, tmp_path: Path) -> None:
    data = make_folder(tmp_path / "data", ham_rows(n_lesions_per_dx=1, images_per_lesion=1))
    (data / "masks").mkdir()
    Image.new("L", (40, 30), 255).save(data / "masks" / "I_mel_0_0_segmentation.png")
    at = page("augmentation")
    at.session_state["data_dir"] = str(data)
    at.run()
    at.text_input(key="aug_ids").set_value("I_mel_0_0, I_nv_0_0, I_df_0_0").run()
    assert_clean(at)
    note = "No lesion masks to outline: 2 of these 3 images have no lesion mask (I_nv_0_0, I_df_0_0)."
    assert any(c.value.startswith(note) for c in at.caption), [c.value for c in at.caption]
    assert "aug_masks" not in [c.key for c in at.checkbox]
    at.text_input(key="aug_ids").set_value("I_mel_0_0").run()  # its mask is there: the box, no note
    assert_clean(at)
    assert "aug_masks" in [c.key for c in at.checkbox]
    assert not any(c.value.startswith("No lesion masks") for c in at.caption)


def test_recorded_stage_reads_a_runs_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert run_status.recorded_stage(run) is None  # no config yet
    (run / "config.json").write_text("{not json")
    assert run_status.recorded_stage(run) is None
    (run / "config.json").write_text(json.dumps({"config": {"stage": "finetune", "train": {}}}))
    assert run_status.recorded_stage(run) == "finetune"
    (run / "config.json").write_text(json.dumps({"members": ["a", "b"], "command": "x"}))
    assert run_status.recorded_stage(run) == jobs.ENSEMBLE_STAGE
    (run / "config.json").write_text(json.dumps({"config": {"train": {}}}))  # another layout: no stage
    assert run_status.recorded_stage(run) is None


def progress_texts(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def test_live_view_names_the_stage_of_a_command_line_run_before_its_first_step(app_env: Path) -> None:
    runs = Path(jobs.runs_dir())
    holder = held(runs / "cli-early")
    try:
        at = page("training").run()
        assert_clean(at)
        assert any(t.startswith("cli-early: stage not yet recorded, epoch -") for t in progress_texts(at))
        (runs / "cli-early" / "config.json").write_text(json.dumps({"config": {"stage": "finetune", "train": {}}}))
        at.run()
        assert_clean(at)
        assert any(t.startswith("cli-early: finetune, epoch -") for t in progress_texts(at)), progress_texts(at)
    finally:
        holder.kill()
        holder.wait()


def test_live_view_of_a_command_line_ensemble_offers_no_stop_and_says_how_to_end_it(app_env: Path) -> None:
    runs = Path(jobs.runs_dir())
    holder = held(runs / "cli-ens")
    (runs / "cli-ens" / "config.json").write_text(json.dumps({"members": ["a", "b"], "command": "ensemble"}))
    try:
        at = page("training").run()
        assert_clean(at)
        assert any(t.startswith("cli-ens: ensemble, epoch -") for t in progress_texts(at)), progress_texts(at)
        labels = [b.label for b in at.button]
        assert "Stop" not in labels and "Cancel this job" not in labels and "Cancel" not in labels
        captions = [c.value for c in at.caption]
        assert any(
            c.startswith("An ensemble reads no STOP file and this one was not started here")
            and c.endswith(f"press Ctrl+C in its terminal or run `kill {holder.pid}`; its half-made files are removed.")
            for c in captions
        ), captions
        assert not any(c.startswith("Preparing data") for c in captions)
    finally:
        holder.kill()
        holder.wait()
