"""dermai.ui.predict_view: the Predict page's JSON report, worklist, download names and feature-gate note."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermai.data import DataError
from dermai.ui import evaluation_view, image_display, predict_view


def test_prediction_report_and_label_efficiency(tmp_path: Path) -> None:
    report = json.loads(predict_view.prediction_report({"p_malignant": np.float32(0.5)}, "x.jpg", "w"))
    assert report["prediction"]["p_malignant"] == 0.5 and "not a diagnosis" in report["disclaimer"]
    raw = {
        "probabilities": {"akiec": 0.18430744400080962, "nv": np.float32(0.81569255)},
        "p_malignant": 0.23456789,
        "tier": "refer",
        "ood_score": None,
        "elapsed_ms": 627.4686489999795,
        "context_effects": {"age": -0.012345678},
        "warnings": ["x.jpg: too small"],
    }
    text = predict_view.prediction_report(raw, "x.jpg", "w").decode()
    assert '"akiec": 0.1843,' in text and '"elapsed_ms": 627.5,' in text and "0.18430744" not in text
    assert json.loads(text)["prediction"] == {
        **raw,
        "probabilities": {"akiec": 0.1843, "nv": 0.8157},
        "p_malignant": 0.2346,
        "elapsed_ms": 627.5,
        "context_effects": {"age": -0.0123},
    }
    assert evaluation_view.read_label_efficiency(tmp_path) is None
    (tmp_path / "summary.csv").write_text("fraction,init\n0.1,simclr\n")
    with pytest.raises(DataError, match="missing columns"):
        evaluation_view.read_label_efficiency(tmp_path)
    header = "fraction,init,auroc_mean,auroc_sd,bacc_mean,bacc_sd\n"
    (tmp_path / "summary.csv").write_text(header)
    with pytest.raises(DataError, match="summary.csv: no rows"):
        evaluation_view.read_label_efficiency(tmp_path)
    (tmp_path / "summary.csv").write_text(header + "0.1,simclr,0.8,,0.5,0.01\n1,random,high,0.1,0.6,0.02\n")
    with pytest.raises(DataError, match=r"summary.csv, row 3: auroc_mean 'high' is not a number"):
        evaluation_view.read_label_efficiency(tmp_path)
    (tmp_path / "summary.csv").write_text(header + "0.1,simclr,0.8,,0.5,0.01\n")  # one seed: no SD, fine
    assert evaluation_view.read_label_efficiency(tmp_path)["auroc_mean"].tolist() == [0.8]
    assert image_display.png_bytes(np.zeros((4, 4, 3), np.uint8)).startswith(b"\x89PNG")


def test_two_uploads_of_one_name_download_under_distinct_file_names() -> None:
    names = predict_view.unique_names(["x.jpg", "y.png", "x.jpg", "x.jpg", "scan", "a.b.tif"])
    assert names == ["x.jpg", "y.png", "x.jpg (2)", "x.jpg (3)", "scan", "a.b.tif"]
    stems = [predict_view.download_stem(name) for name in names]
    assert stems == ["x", "y", "x_2", "x_3", "scan", "a.b"]
    assert predict_view.download_stem(".hidden") == ".hidden"  # a dot file's name is all stem


def test_the_worklist_shows_its_notes_last_and_drops_empty_optional_columns() -> None:
    from dermai.worklist import COLUMNS

    table = pd.DataFrame(
        [[1, "a.jpg", "refer", 0.4, "mel", 0.5, False, None, None, False, None]]
        + [[2, "b.jpg", "unreadable", None, None, None, None, None, None, None, "b.jpg: HEIC is not supported"]],
        columns=COLUMNS,
    )
    shown = predict_view.worklist_shown(table)
    assert list(shown.columns) == ["rank", "image", "tier", "p_malignant", "top_diagnosis", "p_top_diagnosis"] + [
        "ood",
        "tta",
        "notes",
    ]
    assert shown.loc[1, "notes"] == "b.jpg: HEIC is not supported"
    assert "notes" not in predict_view.worklist_shown(table.iloc[:1]).columns  # no image has a note


def test_the_worklist_on_screen_shows_no_score_for_an_ungradable_image_and_the_csv_keeps_it() -> None:
    from dermai.worklist import COLUMNS, worklist_csv

    table = pd.DataFrame(
        [[1, "a.jpg", "refer", 0.4, "mel", 0.5, False, 0.3, "age 50", False, None]]
        + [[2, "grey.jpg", "ungradable", 0.001, "nv", 0.94, True, 0.002, "age 50", False, "no colour"]],
        columns=COLUMNS,
    )
    shown = predict_view.worklist_shown(table)
    assert shown.loc[1, ["p_malignant", "top_diagnosis", "p_top_diagnosis", "p_malignant_image_only"]].isna().all()
    assert shown.loc[0, "p_malignant"] == 0.4 and shown.loc[0, "top_diagnosis"] == "mel"  # a graded row as it was
    assert list(shown["image"]) == ["a.jpg", "grey.jpg"] and shown["p_malignant"].dtype == float
    assert table.loc[1, "p_malignant"] == 0.001  # the table itself is not changed
    assert "grey.jpg,ungradable,0.0010,nv,0.9400" in worklist_csv(table).decode()  # the CLI's CSV keeps them


def test_the_feature_gate_is_named_only_when_the_distance_passed_its_cut_off() -> None:
    from types import SimpleNamespace

    def prediction(ood: bool | None, score: float | None, threshold: float | None) -> SimpleNamespace:
        return SimpleNamespace(ood=ood, ood_score=score, ood_threshold=threshold)

    assert predict_view.feature_gate_flagged(prediction(True, 60.0, 56.1))
    # flagged from its pixels (greyscale, blank, noise) at a distance inside the cut-off: not "60 > 56"
    assert not predict_view.feature_gate_flagged(prediction(True, 27.5, 56.1))
    assert not predict_view.feature_gate_flagged(prediction(False, 20.0, 56.1))
    assert not predict_view.feature_gate_flagged(prediction(None, None, None))  # weights without a gate
