"""Scoring an external dermoscopy folder (ISIC 2020 style, or a plain CSV) with weights trained elsewhere: the
images the weights saw are left out and said, figures that cannot be computed say why, and the Evaluation page
scores such a folder rather than failing on a split it does not have."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dermai.context import contexts_from_rows
from dermai.data import DataError, load_dataset
from dermai.evaluate import evaluate, subgroup_fields, summary_text
from dermai.ui import evaluation_view
from tests.conftest import HAM, make_folder
from tests.test_app_pages import alerts, app_env, assert_clean, page  # noqa: F401  (app_env is a fixture)
from tests.test_ui_evaluation_view import tiny_weights


def isic2020_rows(n: int, n_malignant: int, prefix: str = "EXT") -> list[dict]:
    """ISIC-2020-style metadata rows: image_name, patient_id, sex, age_approx, site, benign_malignant, target."""
    return [
        {
            "image_name": f"{prefix}_{i:04d}",
            "patient_id": f"IP_{i // 2:04d}",
            "sex": "male" if i % 2 else "female",
            "age_approx": 45.0,
            "anatom_site_general_challenge": "torso",
            "benign_malignant": "malignant" if i < n_malignant else "benign",
            "target": int(i < n_malignant),
        }
        for i in range(n)
    ]


def test_evaluation_splits_offer_all_for_a_folder_other_than_the_weights_own(tmp_path: Path) -> None:
    own = tmp_path / "ham"
    own.mkdir()
    meta = {"config": {"data": {"data_dir": str(own)}}}
    assert evaluation_view.evaluation_splits(meta, str(own)) == ["test", "val"]
    assert evaluation_view.evaluation_splits(meta, "") == ["test", "val"]  # the weights' config folder
    assert evaluation_view.evaluation_splits(meta, str(tmp_path)) == ["all"]  # no split recorded: none to rebuild
    assert evaluation_view.evaluation_splits({}, str(own)) == ["all"]
    meta["manifest_sha256"] = "a7794d5c"  # a copy of the training folder elsewhere may rebuild the split
    assert evaluation_view.evaluation_splits(meta, str(tmp_path)) == ["all", "test", "val"]
    assert evaluation_view.evaluation_splits(meta, str(own)) == ["test", "val"]


def test_evaluation_page_scores_an_external_folder_and_says_what_it_left_out(
    app_env: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = pd.read_csv(app_env.parent / "manifest.csv")
    trained_on = seen.loc[seen["split"] == "train", "image_id"].head(2).tolist()
    rows = isic2020_rows(16, 6)
    for row, image_id in zip(rows[-2:], trained_on, strict=True):  # two images the weights were trained on
        row["image_name"] = image_id
    monkeypatch.setenv("DERMAI_DATA", str(make_folder(tmp_path / "ext", rows, id_column="image_name")))
    at = page("evaluation").run()
    assert_clean(at)
    assert at.radio(key="eval_split").options == ["all", "test", "val"]  # "all" chosen
    at.button[0].click().run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    said = "External folder: 14 images scored; left out 2 images the weights were trained or tuned on."
    assert said in alerts(at), alerts(at)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny 32 px HAM10000 weights of tests/test_ui_evaluation_view.py (trained once per session)."""
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    return tiny_weights(tmp_path_factory.getbasetemp())


def external(tmp_path: Path, rows: list[dict], name: str = "ext") -> Path:
    """An ISIC-2020-style external folder of synthetic images."""
    return make_folder(tmp_path / name, rows, id_column="image_name", csv_name="train.csv")


def test_one_malignant_image_gets_no_auroc_interval_and_says_why(tiny: Path, tmp_path: Path) -> None:
    report, _ = evaluate(tiny, external(tmp_path, isic2020_rows(12, 1)), split="all", n_boot=50)
    assert report["auroc"] is not None and report["auroc_ci"] is None and report["binary"]["auroc_ci"] is None
    assert any(note.startswith("only 1 malignant case") for note in report["notes"]), report["notes"]
    text = summary_text(report)
    auroc_line = next(line for line in text.splitlines() if line.startswith("AUROC malignant"))
    assert "95% CI" not in auroc_line and "note: only 1 malignant case" in text


def test_binary_labels_skip_the_diagnosis_figures_and_their_baseline(tiny: Path, tmp_path: Path) -> None:
    report, predictions = evaluate(tiny, external(tmp_path, isic2020_rows(12, 5)), split="all", n_boot=20)
    assert report["multiclass"] is None and report["balanced_accuracy"] is None
    assert predictions["predicted"].isna().all() and predictions["dx"].isna().all()
    text = summary_text(report)
    assert "balanced accuracy (diagnosis) n/a" in text and "1/7" not in text
    assert "note: the folder's labels (benign, malignant) are not the model's: binary metrics only" in text


def test_unusual_sex_and_age_values_fall_in_the_groups_they_mean(tmp_path: Path) -> None:
    rows = isic2020_rows(6, 3)
    sexes, ages = ["M", "F", "Male", "female", "", "unknown"], ["45.0", "-5", "200", "", "70", "x"]
    for row, sex, age in zip(rows, sexes, ages, strict=True):
        row["sex"], row["age_approx"] = sex, age
    dataset = load_dataset(external(tmp_path, rows))
    assert dataset.meta["sex"].tolist() == ["male", "female", "male", "female", "unknown", "unknown"]
    fields = subgroup_fields(dataset.meta)
    assert fields["sex"] == dataset.meta["sex"].tolist()
    assert fields["age"] == ["30-49", "unknown", "unknown", "unknown", "70 and over", "unknown"]
    assert [c.sex for c in contexts_from_rows(dataset.meta)] == ["male", "female", "male", "female", None, None]


def test_a_csv_listing_missing_images_names_how_many_are_missing(tmp_path: Path) -> None:
    folder = external(tmp_path, isic2020_rows(10, 3))
    for image_id in ("EXT_0002", "EXT_0005", "EXT_0006"):
        (folder / "imgs" / "nested" / f"{image_id}.jpg").unlink()
    with pytest.raises(DataError) as caught:
        load_dataset(folder)
    assert str(caught.value) == (
        f"{folder / 'train.csv'}, row 4: image 'EXT_0002' not found under {folder.resolve()} (nor are 2 more: "
        "'EXT_0005', 'EXT_0006'; 3 of 10 rows): add the images, or remove their rows from the CSV"
    )


def test_a_folder_of_one_diagnosis_gets_no_balanced_accuracy_but_its_recall(tiny: Path, tmp_path: Path) -> None:
    rows = [{"image_id": f"M{i}", "dx": "mel"} for i in range(8)]
    report, _ = evaluate(tiny, make_folder(tmp_path / "mel", rows, csv_name="labels.csv"), split="all", n_boot=20)
    recall = report["multiclass"]["per_class_recall"]["mel"]
    assert report["balanced_accuracy"] is report["multiclass"]["balanced_accuracy_calibrated_argmax"] is None
    assert (
        f"only one diagnosis (mel) in these images: no balanced accuracy, which needs two or more; mel recall "
        f"{recall:.3f}" in report["notes"]
    )
    assert "balanced accuracy (diagnosis) n/a" in summary_text(report)


def test_a_folder_recording_no_patient_context_gets_no_context_figures(tiny: Path, tmp_path: Path) -> None:
    rows = [{"image_id": f"P{i}", "dx": dx} for i, dx in enumerate(["mel", "bcc", "nv", "bkl"] * 3)]
    report, predictions = evaluate(tiny, make_folder(tmp_path / "plain", rows), split="all", n_boot=20)
    assert report["context"] is None and "p_malignant_context" not in predictions
    assert "no image records an age, sex or body site: no figures with patient context" in report["notes"]
    assert "with patient context (" not in summary_text(report)


def test_the_training_folders_own_test_images_in_an_external_folder_are_counted_and_said(
    tiny: Path, tmp_path: Path
) -> None:
    manifest = pd.read_csv(tiny.parent / "manifest.csv")
    rows = isic2020_rows(12, 5)
    own = [
        *manifest.loc[manifest["split"] == "train", "image_id"][:2],
        *manifest.loc[manifest["split"] == "test", "image_id"][:3],
    ]
    for row, image_id in zip(rows[-5:], own, strict=True):
        row["image_name"] = image_id
    report, _ = evaluate(tiny, external(tmp_path, rows), split="all", n_boot=20)
    assert (report["n_images"], report["external"]["n_excluded"], report["external"]["n_own_test"]) == (10, 2, 3)
    assert "; 3 of the images scored are the weights' own test images (same ids as in " in summary_text(report)
    assert evaluation_view.external_note(report) == (
        "warning",
        "External folder: 10 images scored; left out 2 images the weights were trained or tuned on; 3 of the "
        f"images scored are the weights' own test images (same ids as in {report['external']['training_data']}), "
        "not external ones.",
    )


def test_a_csv_listing_an_image_twice_names_the_rows(tmp_path: Path) -> None:
    rows = isic2020_rows(6, 2)
    folder = external(tmp_path, rows)
    pd.DataFrame([*rows, rows[1], rows[4], rows[1]]).to_csv(folder / "train.csv", index=False)
    with pytest.raises(DataError) as caught:
        load_dataset(folder)
    assert str(caught.value) == (
        f"{folder / 'train.csv'}: image id 'EXT_0001' appears more than once (rows 3, 8, 10); 1 more image id "
        "repeated: which row's label holds cannot be guessed; keep one row per image"
    )


def test_the_embedding_map_of_an_external_folder_leaves_out_the_images_the_weights_saw(
    tiny: Path, tmp_path: Path
) -> None:
    """Split "all" maps the same rows `evaluate` scores: the folder less its train/validation images."""
    manifest = pd.read_csv(tiny.parent / "manifest.csv")
    rows = isic2020_rows(12, 5)
    seen = list(manifest.loc[manifest["split"] == "train", "image_id"][:2])
    for row, image_id in zip(rows[-2:], seen, strict=True):
        row["image_name"] = image_id
    points = evaluation_view.embedding_map(tiny, external(tmp_path, rows), "all", limit=50)
    assert len(points) == 10 and not set(seen) & set(points["image_id"])


def test_an_unchecked_overlap_is_said_in_the_commands_words() -> None:
    report = {"n_images": 4, "external": {"overlap_checked": False, "reason": "no config", "n_excluded": 0}}
    assert evaluation_view.external_note(report) == (
        "warning",
        "Overlap with the training images NOT checked: no config",
    )
