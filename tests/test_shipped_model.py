"""The shipped default model (weights/): loads with its metadata, predicts real lesions, and its OOD gate
flags non-dermoscopy images while passing the test split's lesions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermai.cli import main
from dermai.data import DIAGNOSES
from dermai.evaluate import weights_dataset
from dermai.inference import forward_pixels
from dermai.ood import OODStats, ood_scores
from dermai.pixel_cache import load_pixels
from dermai.predict import Predictor
from dermai.weights import DEFAULT_WEIGHTS, load_weights

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped weights in weights/")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_weights()


def test_metadata_is_complete() -> None:
    meta = load_weights().meta
    assert meta["classes"] == list(DIAGNOSES)
    for key in (
        "image_size",
        "mean",
        "std",
        "temperature",
        "operating_points",
        "ood",
        "manifest_sha256",
        "recipe",
        "config",
        "test_metrics",
    ):
        assert key in meta, key
    assert DEFAULT_WEIGHTS.stat().st_size < 50 * 2**20
    assert (DEFAULT_WEIGHTS.parent / "MODEL_CARD.md").read_text().count("CC BY-NC-SA 4.0") >= 1


def test_predicts_a_real_lesion(predictor: Predictor, ham_root: Path) -> None:
    result = predictor.predict(ham_root / "images" / "ISIC_0024306.jpg")
    assert set(result.probabilities) == set(DIAGNOSES)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.tier in {"routine", "refer", "urgent"} and result.ood is False


def test_patient_context_moves_risk_with_age_and_is_validated(predictor: Predictor, ham_root: Path) -> None:
    """Malignant diagnoses in HAM10000 are diseases of older skin: the same image scores higher at 80 than at
    20, and the context model's fields, tiers and test figures are recorded."""
    block = load_weights().meta["context"]
    assert block["fitted_on"]["tables"] == "train" and block["fitted_on"]["weights"] == "val"
    assert block["operating_points"]["refer"]["sensitivity"] >= 0.95
    assert block["fields"]["age"]["weight"] > 0
    assert "back" in predictor.context_sites and "lower extremity" in predictor.context_sites
    image = ham_root / "images" / "ISIC_0024306.jpg"
    plain = predictor.predict(image)
    old = predictor.predict(image, context=predictor.parse_context(age=80))
    young = predictor.predict(image, context=predictor.parse_context(age=20))
    assert young.p_malignant < old.p_malignant
    assert old.p_malignant_image_only == pytest.approx(plain.p_malignant)
    assert load_weights().meta["test_metrics"]["context"]["auroc"] > 0.5


def test_ood_flags_non_dermoscopy_photos(predictor: Predictor) -> None:
    from skimage import data as skdata

    photos = [
        skdata.astronaut(),
        skdata.coffee(),
        skdata.chelsea(),
        skdata.rocket(),
        np.stack([skdata.camera()] * 3, axis=-1),
    ]
    frames = [np.full((150, 200, 3), v, np.uint8) for v in (0, 128, 255)]
    frames.append(np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8))
    flagged = [bool(predictor.predict(Image.fromarray(img)).ood) for img in photos + frames]
    assert all(flagged[len(photos) :])  # flat and noise frames
    assert sum(flagged[: len(photos)]) >= len(photos) - 1  # nearly all photos


def test_ood_passes_test_split_lesions(ham_root: Path) -> None:
    loaded = load_weights()
    rows = weights_dataset(loaded.meta, ham_root).meta
    test = rows[rows["split"] == "test"]
    pixels = load_pixels(list(test["path"]), int(loaded.meta["image_size"]))
    _, features = forward_pixels(loaded.model, pixels, with_features=True)
    stats = OODStats.from_weights(loaded.extra, loaded.meta)
    assert (ood_scores(features, stats) <= stats.threshold).mean() >= 0.97


def test_predict_cli_uses_shipped_weights(ham_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(ham_root / "images" / "ISIC_0024306.jpg"), "--json"]) == 0
    assert '"tier"' in capsys.readouterr().out
