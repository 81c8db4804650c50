"""Labels and tables that fit an 800 px window: short metric labels that keep their split (the rest in their
help), the worklist's column order and widths, the site editor's "not given", and the Augmentation lab's cards
that keep each original with its augmented version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import HAM
from tests.test_app_pages import app_env, assert_clean, page, sited_worklist

__all__ = ["app_env"]  # the fixture, imported for pytest

SHORT = 20  # characters a metric label may have: about what an 800 px window shows of it beside its help icon


def metric_labels(at: AppTest) -> dict[str, str]:
    """Each metric's label and its help text."""
    return {m.label: m.proto.help for m in at.metric}


def test_home_metrics_have_short_labels_that_keep_the_split(app_env: Path) -> None:
    at = page("home").run()
    assert_clean(at)
    labels = metric_labels(at)
    (auroc,) = [label for label in labels if label.startswith("AUROC")]
    split = auroc.removeprefix("AUROC (").removesuffix(")")
    assert split in ("test", "val") and f"on the {split} split" in labels[auroc]
    assert "Input size" in labels and next(m for m in at.metric if m.label == "Input size").value.endswith(" px")
    assert all(len(label) <= SHORT for label in labels), list(labels)


def test_evaluation_metrics_have_short_labels_that_keep_the_split(app_env: Path) -> None:
    at = page("evaluation").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    labels = [m.label for m in at.metric]
    assert labels[:4] == ["AUROC (test)", "Bal. accuracy (test)", "ECE (test)", "Images"]
    helps = [m.proto.help for m in at.metric]
    assert "Malignant vs benign on the test split" in helps[0] and "7 diagnoses on the test split" in helps[1]
    assert "p(malignant) on the test split" in helps[2]
    assert all(len(label) <= SHORT for label in labels), labels


def test_predict_score_label_is_short_and_its_help_says_what_it_is(app_env: Path) -> None:
    at = page("predict").run()
    assert at.checkbox(key="pred_tta").label == "TTA"
    assert at.checkbox(key="pred_tta").proto.help.startswith("Test-time augmentation. ")
    image = HAM / "images" / "ISIC_0024306.jpg"
    at.file_uploader[0].upload(image.name, image.read_bytes(), "image/jpeg")
    at.run()
    assert_clean(at)
    score = at.metric[0]
    assert score.label == "p(malignant)" and score.proto.help.startswith("Malignancy score: ")
    at.number_input(key="pred_age").set_value(75).run()
    assert_clean(at)
    score = at.metric[0]
    assert score.label == "p(malignant), with context"
    assert score.proto.help.startswith("Malignancy score: ") and score.proto.help.endswith("age 75")


def worklist_columns(at: AppTest) -> tuple[list[str], dict[str, dict]]:
    """The worklist's columns in order, and the column config Streamlit draws them with."""
    table = next(d for d in at.dataframe if "rank" in d.value.columns)
    return list(table.value.columns), json.loads(table.proto.columns)


def test_worklist_keeps_the_key_columns_first_and_the_long_text_readable(app_env: Path) -> None:
    at = page("predict").run()
    names = ["ISIC_0024306.jpg", "ISIC_0025964.jpg"]
    files = [(n, (HAM / "images" / n).read_bytes(), "image/jpeg") for n in names]
    at.file_uploader[0].set_value([*files, ("notes.jpg", b"not an image", "image/jpeg")])
    at.number_input(key="pred_age").set_value(55)
    at.run()
    assert_clean(at)
    order, config = worklist_columns(at)
    assert order[:4] == ["rank", "image", "tier", "p_malignant"]
    assert order[-2:] == ["context", "notes"]
    assert config["rank"]["pinned"] and config["image"]["pinned"]  # in view while the table scrolls sideways
    assert config["context"]["width"] >= 240 and config["notes"]["width"] >= 600  # "age 5…" before
    assert config["ood"]["help"].startswith("Out of distribution")  # its plain header: test_plain_words.py
    assert config["p_top_diagnosis"]["width"] <= 110  # the probability and OOD verdict near the front
    assert config["p_malignant"]["help"].startswith("Malignancy score")


def test_site_editor_says_not_given_and_that_means_no_site(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = sited_worklist(app_env, tmp_path, monkeypatch)
    editor = next(d for d in at.dataframe if list(d.value.columns) == ["image", "site"])
    assert list(editor.value["site"]) == ["not given", "not given"]  # the shared field's words, not "None"
    site = json.loads(editor.proto.columns)["site"]
    assert site["type_config"]["options"][0] == "not given"
    at.session_state[editor.key] = {"edited_rows": {1: {"site": "face"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "rank" in d.value.columns).set_index("image")
    assert table["context"].isna()["ISIC_0024306.jpg"] and table.loc["ISIC_0025964.jpg", "context"] == "site face"
    editor = next(d for d in at.dataframe if list(d.value.columns) == ["image", "site"])
    at.session_state[editor.key] = {"edited_rows": {1: {"site": "not given"}}, "added_rows": [], "deleted_rows": []}
    at.run()  # picked back: no site, not a site called "not given"
    assert_clean(at)
    table = next(d.value for d in at.dataframe if "rank" in d.value.columns)
    assert "context" not in table and not at.error  # no image has any context: the column is left out


def test_augmentation_lab_keeps_each_original_with_its_augmented_version(app_env: Path) -> None:
    at = page("augmentation").run()
    assert_clean(at)
    before, views = at.image[:4], at.image[4:]
    assert [e.captions for e in before] == [["original", "augmented"]] * 4  # one card per image
    assert [e.captions for e in views] == [["view a", "view b"]] * 4
    for card in at.image:  # both versions in a card are of one image
        names = {img.alt.split(", ")[0] for img in card.proto.imgs}
        assert len(names) == 1, [img.alt for img in card.proto.imgs]
    button = next(b for b in at.button if b.label == "Use in training")
    assert "fine-tuning augmentation" in button.proto.help
    at.toggle(key="aug_simclr").set_value(True).run()
    button = next(b for b in at.button if b.label == "Use in training")
    assert "SimCLR pretraining augmentation" in button.proto.help
