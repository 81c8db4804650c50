"""dermai.ui.evaluation_view: the embedding map, subgroup table and failure gallery; and `tiny_weights`, the small
calibrated model the app and browser tests share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermai.ui import evaluation_view
from tests.conftest import HAM


def tiny_weights(base: Path) -> Path:
    """A finetuned-for-one-epoch 32 px model on 64 HAM images, calibrated (tiers and OOD); built once per
    pytest session under `base`."""
    from dermai.config import RunConfig
    from dermai.serving import fit_context, fit_serving
    from dermai.train import train

    run = base / "tiny_run"
    weights = run / "model.safetensors"
    if weights.exists() and "context" in json.loads(weights.with_suffix(".json").read_text()):
        return weights
    cfg = RunConfig(stage="finetune")
    cfg.data.data_dir, cfg.data.limit = str(HAM), 64
    cfg.train.image_size, cfg.train.batch_size, cfg.train.finetune_epochs = 32, 16, 1
    train(cfg, run, progress=False)
    fit_serving(weights, manifest=run / "manifest.csv")
    fit_context(weights, manifest=run / "manifest.csv")
    return weights


def test_embedding_map_on_tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    weights = tiny_weights(tmp_path_factory.getbasetemp())
    points = evaluation_view.embedding_map(weights, None, "test", limit=10, method="pca")
    assert len(points) <= 10 and {"image_id", "path", "dx", "x", "y"} <= set(points.columns)
    assert np.isfinite(points[["x", "y"]].to_numpy()).all()


def test_embedding_map_of_weights_without_a_split_names_their_json(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    copy = tmp_path_factory.mktemp("no_split")
    for file in tiny_weights(tmp_path_factory.getbasetemp()).parent.glob("model.*"):
        (copy / file.name).write_bytes(file.read_bytes())
    meta = json.loads((copy / "model.json").read_text())
    del meta["manifest_sha256"]
    (copy / "model.json").write_text(json.dumps(meta))
    from dermai.evaluate import EvaluationError

    with pytest.raises(EvaluationError, match=rf"^{copy / 'model.json'}: the weights' JSON has no training config"):
        evaluation_view.embedding_map(copy / "model.safetensors", None, "test", limit=10)


def test_subgroup_table_shows_one_field_with_its_interval_as_text() -> None:
    subgroups = [
        {"field": "sex", "group": "male", "n": 50, "n_malignant": 9, "auroc": 0.9, "auroc_ci": [0.8, 0.97]},
        {"field": "age", "group": "under 30", "n": 9, "n_malignant": 1, "auroc": None, "auroc_ci": None},
    ]
    subgroups[0] |= {"sensitivity": 0.95, "specificity": 0.6}
    table = evaluation_view.subgroup_table(subgroups, "sex")
    assert table.to_dict("records") == [
        {
            "group": "male",
            "images": 50,
            "malignant": 9,
            "AUROC": "0.900 (0.80–0.97)",
            "refer sens.": "0.950",
            "refer spec.": "0.600",
        }
    ]
    young = evaluation_view.subgroup_table(subgroups, "age").iloc[0]
    assert young["AUROC"] == "too few (< 5 per class)"
    assert pd.isna(young["refer sens."])


def test_the_failure_gallery_says_when_it_shows_only_some_and_which() -> None:
    assert (
        evaluation_view.gallery_note("missed", 12, 12) is None
        and evaluation_view.gallery_note("confusion", 3, 12) is None
    )
    assert evaluation_view.gallery_note("missed", 23, 12) == (
        "Showing 12 of 23 (the most confidently missed: lowest p(malignant) first). The per-image predictions CSV "
        "below lists every image with its tier and scores."
    )
    from dermai.review import REVIEW_KINDS

    assert set(evaluation_view.GALLERY_ORDER) == set(REVIEW_KINDS)  # an order said for every kind the page shows
