"""The data pages (Dataset browser, Augmentation lab, Evaluation) and their helpers in dermai.ui: image ids
that are not in the folder are named, age bands read in age order, and no widget is given a value both ways."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dermai.data import DataError
from dermai.ui import dataset_view, evaluation_view, image_display
from tests import test_app_pages
from tests.test_app_pages import REPO, TIMEOUT, alerts, assert_clean, page

app_env = test_app_pages.app_env  # the pages' fixtures: HAM10000, tiny weights and an empty runs folder
json_only_env = test_app_pages.json_only_env  # a synthetic data folder and weights that are never read


def _meta(*ids: str) -> pd.DataFrame:
    return pd.DataFrame({"image_id": list(ids), "path": [f"/data/{i}.jpg" for i in ids]})


def test_images_by_id_keeps_the_order_given_and_names_the_ids_not_found() -> None:
    meta = _meta("ISIC_1", "ISIC_2", "ISIC_3")
    rows, missing = dataset_view.images_by_id(meta, " ISIC_3, ISIC_9;ISIC_1\nISIC_3  nope , ,")
    assert list(rows["image_id"]) == ["ISIC_3", "ISIC_1"]
    assert list(rows["path"]) == ["/data/ISIC_3.jpg", "/data/ISIC_1.jpg"]
    assert missing == ["ISIC_9", "nope"]


def test_images_by_id_takes_a_file_name_for_its_id_and_nothing_for_blank_text() -> None:
    meta = _meta("ISIC_1", "ISIC_2")
    rows, missing = dataset_view.images_by_id(meta, "ISIC_2.JPG, ISIC_7.jpg")
    assert list(rows["image_id"]) == ["ISIC_2"] and missing == ["ISIC_7.jpg"]
    rows, missing = dataset_view.images_by_id(meta, " , ")
    assert rows.empty and missing == []


def test_images_by_id_takes_an_id_in_another_case() -> None:
    meta = _meta("ISIC_1", "ISIC_2")
    rows, missing = dataset_view.images_by_id(meta, "isic_2, Isic_1.jpg, isic_3")
    assert list(rows["image_id"]) == ["ISIC_2", "ISIC_1"] and missing == ["isic_3"]


def test_augmentation_lab_names_the_ids_it_did_not_find_and_previews_the_rest(app_env: Path) -> None:
    at = page("augmentation").run()
    at.text_input(key="aug_ids").set_value("ISIC_0024306, ISIC_9999999,typo").run()
    assert_clean(at)
    assert [w.value for w in at.warning] == ["Not in the data folder, so not shown: ISIC_9999999, typo"]
    assert at.image[0].captions == ["original", "augmented"]  # ISIC_0024306 is still previewed
    assert [img.alt for e in at.image for img in e.proto.imgs] == [
        f"ISIC_0024306, {view}" for view in ("original", "augmented", "SimCLR view a", "SimCLR view b")
    ]  # alt text: a caption never becomes it
    at.text_input(key="aug_ids").set_value("typo").run()
    assert [e.value for e in at.error] == ["None of these ids is in the data folder: typo"]
    assert not at.image


def _group(field: str, group: str, n: int) -> dict:
    return {"field": field, "group": group, "n": n, "n_malignant": 1, "auroc": None, "auroc_ci": None}


def test_subgroup_table_lists_age_bands_in_age_order_and_other_fields_largest_first() -> None:
    # evaluate lists each field's groups largest first, as HAM10000's test split has them
    ages = [("50-69", 700), ("30-49", 500), ("70 and over", 300), ("under 30", 120), ("unknown", 10)]
    subgroups = [_group("sex", "male", 900), _group("sex", "female", 700)] + [_group("age", g, n) for g, n in ages]
    table = evaluation_view.subgroup_table(subgroups, "age")
    assert list(table["group"]) == ["under 30", "30-49", "50-69", "70 and over", "unknown"]
    assert list(table["images"]) == [120, 500, 700, 300, 10]
    assert list(evaluation_view.subgroup_table(subgroups, "sex")["group"]) == ["male", "female"]


def test_evaluation_page_shows_age_bands_in_age_order(app_env: Path) -> None:
    at = page("evaluation").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    assert at.radio(key="eval_subgroup").value == "age"
    bands = list(at.dataframe[0].value["group"])
    order = ["under 30", "30-49", "50-69", "70 and over", "unknown"]
    assert len(bands) >= 3 and bands == [b for b in order if b in bands]


@pytest.fixture
def values_set_both_ways(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of widgets created with a default value while Session State also set their value: what
    `streamlit run` logs as a warning with a stack trace (once per server). Streamlit checks only under its
    runtime, which AppTest lacks, so the check is switched on here and records every such key."""
    from streamlit.elements.lib import policies

    keys: list[str] = []
    check = policies.check_session_state_rules

    def every_time(*args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(policies, "_shown_default_value_warning", False)  # Streamlit says it once per server
        check(*args, **kwargs)

    monkeypatch.setattr(policies, "runtime", SimpleNamespace(exists=lambda: True))
    monkeypatch.setattr(policies, "_LOGGER", SimpleNamespace(warning=lambda message, key, **_: keys.append(key)))
    monkeypatch.setattr(policies, "check_session_state_rules", every_time)
    return keys


def test_the_data_pages_never_give_a_widget_its_value_both_ways(app_env: Path, values_set_both_ways: list) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/augmentation.py").run()
    at.select_slider(key="aug_paper_crop_ratio").set_value((0.5, 1.5)).run()
    at.toggle(key="aug_simclr").set_value(True).run()
    at.switch_page("pages/dataset.py").run()
    at.slider(key="ds_age").set_value((30, 60)).run()
    at.number_input(key="ds_page").set_value(2).run()
    at.switch_page("pages/evaluation.py").run()
    at.checkbox(key="eval_tta").set_value(True).run()
    at.number_input(key="eval_limit").set_value(100).run()
    for name in ("augmentation", "dataset", "evaluation", "augmentation"):  # each page's kept values come back
        at.switch_page(f"pages/{name}.py").run()
        assert_clean(at)
    at.toggle(key="aug_simclr").set_value(False).run()
    assert_clean(at)
    assert at.select_slider(key="aug_paper_crop_ratio").value == (0.5, 1.5)  # kept, and still a range
    assert values_set_both_ways == []


def test_augmentation_lab_says_why_an_upload_is_unusable_and_not_to_upload_one(app_env: Path) -> None:
    at = page("augmentation").run()
    at.radio(key="aug_source").set_value("Upload one").run()
    assert [i.value for i in at.info] == ["Upload an image to preview."]
    at.file_uploader(key="aug_upload").upload("lesion.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg")
    at.run()
    assert_clean(at)
    assert [e.value.split(":")[:2] for e in at.error] == [["Cannot use this file", " lesion.jpg"]]
    assert not at.info and not at.image  # the file was uploaded: no "Upload an image", no seed for no preview
    assert "Reseed" not in [b.label for b in at.button]


def test_read_images_names_a_damaged_file_and_reads_the_others(tmp_path: Path) -> None:
    from tests.conftest import ham_rows, make_folder

    data = make_folder(tmp_path / "data", ham_rows(n_lesions_per_dx=1, images_per_lesion=2)[:3])
    paths = sorted(str(p) for p in (data / "imgs" / "nested").glob("*.jpg"))
    Path(paths[1]).write_bytes(b"not a jpeg")
    read, pixels, problems = image_display.read_images([*paths, str(tmp_path / "gone.jpg")], 32)
    assert read == [0, 2] and [p.shape for p in pixels] == [(32, 32, 3)] * 2
    assert len(problems) == 2
    assert problems[0].startswith(f"{paths[1]}: unreadable image")
    assert problems[1].startswith(f"{tmp_path / 'gone.jpg'}: unreadable image")


def test_augmentation_lab_names_a_damaged_image_of_the_folder_and_previews_the_others(
    json_only_env: Path, tmp_path: Path
) -> None:
    data, bad = test_app_pages.folder_with_a_corrupt_image(tmp_path)
    at = page("augmentation")
    at.session_state["data_dir"] = str(data)
    at.run()
    at.text_input(key="aug_ids").set_value("I_akiec_0_0, I_akiec_0_1").run()
    assert_clean(at)
    assert len(at.error) == 1 and at.error[0].value.startswith(f"Not previewed: {bad}: unreadable image")
    assert at.image[0].captions == ["original", "augmented"] and len(at.image) == 2  # I_akiec_0_1 is still previewed
    at.text_input(key="aug_ids").set_value("I_akiec_0_0").run()
    assert_clean(at)
    assert len(at.error) == 1 and not at.image and "Reseed" not in [b.label for b in at.button]


def test_read_label_efficiency_takes_the_summary_itself_and_names_a_missing_folder(tmp_path: Path) -> None:
    summary = tmp_path / "summary.csv"
    summary.write_text("fraction,init,auroc_mean,auroc_sd,bacc_mean,bacc_sd\n0.1,random,0.8,,0.5,\n")
    assert evaluation_view.read_label_efficiency(summary)["auroc_mean"].tolist() == [0.8]
    assert evaluation_view.read_label_efficiency(tmp_path)["auroc_mean"].tolist() == [0.8]
    with pytest.raises(DataError, match=f"^{tmp_path / 'nope'}: no such folder$"):
        evaluation_view.read_label_efficiency(tmp_path / "nope")


def test_evaluation_label_efficiency_box_says_what_it_needs(app_env: Path, tmp_path: Path) -> None:
    at = page("evaluation").run()
    at.text_input(key="eval_le").set_value("  ").run()
    assert_clean(at)
    assert "Enter the folder of a label-efficiency experiment (its summary.csv is read)." in alerts(at)
    at.text_input(key="eval_le").set_value(str(tmp_path / "typo")).run()
    assert f"Cannot read the experiment: {tmp_path / 'typo'}: no such folder" in [e.value for e in at.error]


def _binary_folder(root: Path) -> Path:
    """A data folder that records benign or malignant but no diagnosis (binary mode)."""
    from tests.conftest import ham_rows, make_folder

    rows = ham_rows(n_lesions_per_dx=2, images_per_lesion=1)
    for row in rows:
        row["benign_malignant"] = "malignant" if row.pop("dx") in ("mel", "bcc") else "benign"
    return make_folder(root, rows)


def test_with_class_names_fills_benign_or_malignant_only_where_there_is_no_diagnosis() -> None:
    rows = pd.DataFrame({"dx": ["mel", None, None], "malignant": [1, 1, 0]})
    assert dataset_view.with_class_names(rows)["dx"].tolist() == ["mel", "malignant", "benign"]
    assert rows["dx"].isna().tolist() == [False, True, True]  # the caller's rows are left as they were


def test_dataset_draws_a_binary_folders_class_distribution(json_only_env: Path, tmp_path: Path) -> None:
    at = page("dataset")
    at.session_state["data_dir"] = str(_binary_folder(tmp_path / "binary"))
    at.run()
    assert_clean(at)
    assert at.multiselect(key="ds_dx").disabled and at.multiselect(key="ds_dx").options == []
    (chart,) = at.get("plotly_chart")
    assert '"x":["benign","malignant"]' in chart.proto.spec.replace(" ", "")


def test_evaluation_scores_another_folder_as_external_and_words_a_mismatch_for_the_app(
    app_env: Path, tmp_path: Path
) -> None:
    at = page("evaluation")
    at.session_state["data_dir"] = str(_binary_folder(tmp_path / "other"))  # not what the tiny model trained on
    at.run()
    assert at.radio(key="eval_split").options == ["all", "test", "val"]  # "all" first: scored as external
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    at.radio(key="eval_split").set_value("test").run()  # its own split asked of another folder
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    (error,) = at.error
    assert error.value.startswith("Cannot evaluate: split mismatch: ")
    assert error.value.endswith("; enter the data folder they were trained on in the sidebar")
    assert "--manifest" not in error.value


def test_augmentation_lab_previews_at_most_sixteen_pasted_ids_and_says_so(app_env: Path) -> None:
    from tests.conftest import HAM

    ids = pd.read_csv(HAM / "HAM10000_metadata.csv")["image_id"].head(20).tolist()
    at = page("augmentation").run()
    at.text_input(key="aug_ids").set_value(" ".join(ids)).run()  # a pasted column
    assert_clean(at)
    assert "Showing the first 16 of the 20 images found: each is augmented four times." in [c.value for c in at.caption]
    assert [e.captions for e in at.image] == [["original", "augmented"]] * 16 + [["view a", "view b"]] * 16


def test_dataset_images_carry_alt_text_naming_them(app_env: Path) -> None:
    at = page("dataset").run()
    assert_clean(at)
    shown = [img for element in at.image for img in element.proto.imgs]
    alts = {img.caption: img.alt for img in shown}  # a caption is never the alt text
    detail = at.selectbox(key="ds_detail").value
    assert alts.pop("lesion mask (green)") == f"Lesion mask of {detail} in green"
    assert alts and all(alt == f"Dermoscopy image {caption}" for caption, alt in alts.items())
