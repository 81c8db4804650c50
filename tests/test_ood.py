"""OOD gate: Mahalanobis distances under a shrunk covariance, a validation-percentile cut-off, and a lossless
trip through the weights file's tensors and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dermai.model import SimCLRResNet18
from dermai.ood import (
    GREY_SPREAD,
    NOISE_CORRELATION,
    OODStats,
    colour_spread,
    fit_ood,
    is_blank,
    is_colourless,
    is_noise,
    neighbour_correlation,
    ood_scores,
    pixel_verdict,
)
from dermai.preprocess import resize_input
from dermai.weights import load_weights, save_weights

D = 64


def features(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Non-negative, correlated 'trunk features' (like pooled ReLU outputs) around a fixed direction."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(D, D)) / np.sqrt(D)
    centre = np.random.default_rng(98).uniform(1.0, 3.0, D)
    return np.abs(centre + shift + rng.normal(size=(n, D)) @ mix * 0.3)


@pytest.mark.parametrize("l2", [True, False])
def test_percentile_threshold_passes_in_distribution_and_flags_far_points(l2: bool) -> None:
    stats = fit_ood(features(2000, 0), features(1000, 1), percentile=99.0, l2=l2)
    test = ood_scores(features(2000, 2), stats)
    assert 0.975 <= np.mean(test <= stats.threshold) <= 1.0  # about 99% pass, by construction
    far = np.random.default_rng(3).uniform(0, 6, size=(200, D))  # another distribution altogether
    assert np.mean(ood_scores(far, stats) > stats.threshold) >= 0.99
    assert stats.method == ("mahalanobis-l2" if l2 else "mahalanobis")


def test_l2_ignores_feature_norm_and_raw_does_not() -> None:
    train, val = features(500, 0), features(300, 1)
    scaled = features(100, 2) * 3.0  # same directions, three times the norm (e.g. a higher-contrast photo)
    l2, raw = fit_ood(train, val), fit_ood(train, val, l2=False)
    assert np.allclose(ood_scores(scaled, l2), ood_scores(scaled / 3.0, l2))
    assert (ood_scores(scaled, raw) > raw.threshold).all()


def test_threshold_follows_percentile_and_shrinkage_handles_few_samples() -> None:
    train, val = features(40, 0), features(200, 1)  # fewer samples than dimensions: singular sample covariance
    low, high = fit_ood(train, val, percentile=50.0), fit_ood(train, val, percentile=99.0)
    assert np.isfinite(low.precision).all()
    assert low.threshold < high.threshold
    assert np.mean(ood_scores(val, low) <= low.threshold) == pytest.approx(0.5, abs=0.01)
    for fraction in (0.0, 0.99):  # 0.99 is a fraction, not a percentile: it would flag ~99% of lesions
        with pytest.raises(ValueError, match="not a fraction"):
            fit_ood(train, val, percentile=fraction)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        ood_scores(np.zeros(D), low)


def test_round_trip_through_weights_file(tmp_path) -> None:
    stats = fit_ood(features(300, 0), features(100, 1), percentile=97.5)
    path = save_weights(
        SimCLRResNet18(7),
        tmp_path / "m.safetensors",
        {"classes": list("abcdefg"), "image_size": 32, "ood": stats.to_meta()},
        extra=stats.to_tensors(),
    )
    assert json.loads(path.with_suffix(".json").read_text())["ood"]["percentile"] == 97.5
    loaded = load_weights(path)
    again = OODStats.from_weights(loaded.extra, loaded.meta)
    assert again is not None and again.method == stats.method and again.threshold == stats.threshold
    probe = features(50, 5)
    assert np.allclose(ood_scores(probe, again), ood_scores(probe, stats), rtol=1e-4)
    assert OODStats.from_weights({}, {"classes": []}) is None  # weights without OOD statistics
    assert set(stats.to_tensors()) == {"ood_mean", "ood_precision"}
    assert all(t.dtype == torch.float32 for t in stats.to_tensors().values())
    with pytest.raises(ValueError, match="unknown OOD method"):
        OODStats.from_weights(loaded.extra, {"ood": {**stats.to_meta(), "method": "knn"}})


def test_blank_images() -> None:
    assert is_blank(np.full((32, 32, 3), (200, 150, 130), np.uint8))
    assert is_blank(
        np.full((32, 32, 3), 128, np.uint8) + np.random.default_rng(0).integers(0, 2, (32, 32, 3)).astype(np.uint8)
    )
    assert not is_blank(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def test_noise_frames_are_told_from_dermoscopy_photos(ham_root: Path) -> None:
    rng = np.random.default_rng(0)
    noise = [
        rng.integers(0, 256, (150, 200, 3), dtype=np.uint8),
        rng.normal(128, 40, (150, 200, 3)).clip(0, 255).astype(np.uint8),
        rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
    ]
    assert all(is_noise(img) for img in noise)
    assert not is_noise(np.full((96, 96, 3), 128, np.uint8))  # flat is is_blank's case, not noise
    paths = sorted((ham_root / "images").glob("*.jpg"))[::50]  # 200 lesions, at the shipped model's 96 px
    correlations = [neighbour_correlation(resize_input(Image.open(p), 96)) for p in paths]
    assert len(correlations) >= 150 and min(correlations) > NOISE_CORRELATION + 0.1


def test_greyscale_photos_are_told_from_dermoscopy_photos(ham_root: Path) -> None:
    import io

    paths = sorted((ham_root / "images").glob("*.jpg"))[::50]  # 200 lesions, at the shipped model's 96 px
    spreads = [colour_spread(resize_input(Image.open(p), 96)) for p in paths]
    assert len(spreads) >= 150 and min(spreads) > GREY_SPREAD + 10  # all of HAM10000: 21 or more
    for path in paths[:20]:  # greyscale copies, saved as colour JPEGs as an export would
        buffer = io.BytesIO()
        Image.open(path).convert("L").convert("RGB").save(buffer, "JPEG", quality=90)
        grey = resize_input(Image.open(buffer), 96)
        assert is_colourless(grey) and pixel_verdict(grey) == "colourless"
    assert pixel_verdict(resize_input(Image.open(paths[0]), 96)) is None
