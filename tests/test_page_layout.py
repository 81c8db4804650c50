"""Labels and tables that fit an 800 px window: short metric labels that keep their split (the rest in their
help), the worklist's column order and widths, the site editor's "not given", and the Augmentation lab's cards
that keep each original with its augmented version."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.conftest import HAM
from tests.test_app_pages import app_env, assert_clean, page

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
