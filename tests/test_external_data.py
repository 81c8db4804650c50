"""Scoring an external dermoscopy folder (ISIC 2020 style, or a plain CSV) with weights trained elsewhere: the
images the weights saw are left out and said, figures that cannot be computed say why, and the Evaluation page
scores such a folder rather than failing on a split it does not have."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dermai import app_support
from tests.conftest import make_folder
from tests.test_app_pages import alerts, app_env, assert_clean, page  # noqa: F401  (app_env is a fixture)


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
    assert app_support.evaluation_splits(meta, str(own)) == ["test", "val"]
    assert app_support.evaluation_splits(meta, "") == ["test", "val"]  # the weights' config folder
    assert app_support.evaluation_splits(meta, str(tmp_path)) == ["all"]
    assert app_support.evaluation_splits({}, str(own)) == ["all"]  # no recorded folder: no split to rebuild


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
    assert at.radio(key="eval_split").options == ["all"]
    at.button[0].click().run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    assert any("14 images scored; 2 left out" in text for text in alerts(at)), alerts(at)
