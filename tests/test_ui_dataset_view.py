"""dermai.ui.dataset_view: the Dataset page's browsing, filters and image details."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dermai.ui import dataset_view
from tests.conftest import ham_rows, make_folder


def test_filter_meta_combines_filters() -> None:
    meta = pd.DataFrame(
        {
            "dx": ["mel", "nv", "nv", "bcc"],
            "malignant": [1, 0, 0, 1],
            "split": ["train", "val", "test", "train"],
            "age": [40.0, np.nan, 70.0, 55.0],
            "sex": ["male", "female", "male", "female"],
            "localization": ["back", "face", "back", "face"],
        }
    )
    assert len(dataset_view.filter_meta(meta)) == 4
    assert list(dataset_view.filter_meta(meta, malignant="malignant")["dx"]) == ["mel", "bcc"]
    assert list(dataset_view.filter_meta(meta, dx=["nv"], age=(60, 80), include_unknown_age=False)["age"]) == [70.0]
    assert list(dataset_view.filter_meta(meta, sexes=["female"], sites=["face"], splits=["train"])["dx"]) == ["bcc"]
    # Unknown ages: kept while the range spans every recorded age (no age filter), left out once it is narrowed.
    assert (
        len(dataset_view.filter_meta(meta, age=(40, 70))) == 4 and len(dataset_view.filter_meta(meta, age=(0, 90))) == 4
    )
    assert list(dataset_view.filter_meta(meta, age=(40, 69))["age"]) == [40.0, 55.0]
    assert list(dataset_view.filter_meta(meta, age=(41, 70))["age"]) == [70.0, 55.0]
    assert len(dataset_view.filter_meta(meta, age=(40, 69), include_unknown_age=True)) == 3  # asked for: kept


def test_browse_dataset_small_folder_gets_split_all(tmp_path: Path) -> None:
    make_folder(tmp_path, ham_rows(n_lesions_per_dx=1, images_per_lesion=1))
    data = dataset_view.browse_dataset(tmp_path)
    assert set(data.meta["split"]) == {"all"} and len(data.meta) == 7


def test_dataset_detail_shows_an_unrecorded_age_as_a_dash() -> None:
    row = pd.Series({"image_id": "ISIC_1", "age": np.nan, "sex": "unknown", "malignant": 0, "dx": None})
    assert dataset_view.detail_values(row, ["image_id", "age", "sex", "malignant", "dx"]).to_dict() == {
        "image_id": "ISIC_1",
        "age": "—",
        "sex": "unknown",
        "malignant": "0",
        "dx": "—",
    }
    assert dataset_view.detail_values(pd.Series({"age": 45.0}), ["age"])["age"] == "45"
    assert dataset_view.detail_values(pd.Series({"age": 89.5}), ["age"])["age"] == "89.5"
