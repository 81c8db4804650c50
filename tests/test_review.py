"""Error review: which evaluated images are shown, and in which order."""

from __future__ import annotations

import pandas as pd

from dermai.review import caption, confused, confusion_pairs, false_alarms, missed_malignant

ROWS = [
    # image_id, dx, malignant, tier, predicted, p_malignant, mel, nv, bkl
    ("a", "mel", 1, "routine", "nv", 0.05, 0.05, 0.90, 0.05),
    ("b", "mel", 1, "routine", "nv", 0.02, 0.02, 0.95, 0.03),
    ("c", "mel", 1, "refer", "mel", 0.20, 0.20, 0.70, 0.10),
    ("d", "nv", 0, "urgent", "mel", 0.60, 0.60, 0.30, 0.10),
    ("e", "nv", 0, "urgent", "mel", 0.80, 0.80, 0.15, 0.05),
    ("f", "bkl", 0, "routine", "nv", 0.01, 0.01, 0.60, 0.39),
    ("g", "nv", 0, "routine", "nv", 0.01, 0.01, 0.98, 0.01),
    ("h", "mel", 1, "urgent", "mel", 0.90, 0.90, 0.05, 0.05),
]


def predictions() -> pd.DataFrame:
    columns = ["image_id", "dx", "malignant", "tier", "predicted", "p_malignant", "mel", "nv", "bkl"]
    return pd.DataFrame(ROWS, columns=columns).assign(path=lambda t: "/x/" + t["image_id"] + ".jpg")


def test_missed_and_false_alarms_worst_first() -> None:
    assert list(missed_malignant(predictions())["image_id"]) == ["b", "a"]
    assert list(false_alarms(predictions())["image_id"]) == ["e", "d"]


def test_confusion_pairs_count_only_errors_most_frequent_first() -> None:
    pairs = confusion_pairs(predictions())
    assert pairs.to_dict("records") == [
        {"dx": "mel", "predicted": "nv", "n": 2},
        {"dx": "nv", "predicted": "mel", "n": 2},
        {"dx": "bkl", "predicted": "nv", "n": 1},
    ]
    assert list(confused(predictions(), "mel", "nv")["image_id"]) == ["b", "a"]  # p(nv) 0.95 before 0.90
    assert list(confused(predictions(), "nv", "mel")["image_id"]) == ["e", "d"]


def test_without_diagnoses_there_are_no_confusions() -> None:
    binary = predictions().assign(predicted=None)
    assert confusion_pairs(binary).empty and list(confusion_pairs(binary).columns) == ["dx", "predicted", "n"]
    assert confusion_pairs(predictions().drop(columns="predicted")).empty


def test_caption_names_the_case() -> None:
    row = predictions().iloc[0]
    assert caption(row) == "a · mel → nv · p 0.050 · routine"
    assert caption(row.drop("predicted")) == "a · mel · p 0.050 · routine"


def test_a_binary_models_confusions_order_by_its_own_probability_column() -> None:
    rows = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "dx": ["benign"] * 3,
            "malignant": [0, 0, 0],
            "predicted": ["malignant"] * 3,
            "p_malignant": [0.6, 0.9, 0.7],
            "p_benign": [0.4, 0.1, 0.3],
        }
    )
    assert list(confused(rows, "benign", "malignant")["image_id"]) == ["b", "c", "a"]  # not by the label column
