"""Out-of-distribution gate: how far an image's trunk features lie from the training images'.

A Mahalanobis distance (Lee et al. 2018) under a Ledoit-Wolf shrunk covariance — 512 dimensions and a few
thousand images make the sample covariance singular, shrinkage keeps its inverse stable. By default features
are L2-normalised first ("Mahalanobis++", Mueller & Hein 2025): feature norms vary with contrast and exposure
more than with content and stretch the in-distribution cloud; `l2=False` keeps raw features for comparison.
The cut-off is a percentile of validation distances, so about (100 - percentile)% of in-distribution images
are flagged by design.

A uniform image carries no information yet can sit near the feature mean of a weakly trained model, so
`is_blank` catches it from the pixels: every HAM10000 image has a channel standard deviation above 7 at 32 px.
Random noise is the opposite case, all texture and no structure, and can land just inside the feature cut-off
(uniform noise scored 36.507 against a cut-off of 36.514 on the single model shipped at commit 01908a1, and fp32
against bf16 flipped its verdict), so `is_noise` catches it from the pixels too: neighbouring pixels of a
photograph are strongly correlated, those of noise are not.

A greyscale image holds the lesion's shape but not its colours, which carry much of the diagnostic signal,
and the classifier was fine-tuned on colour dermoscopy only. Greyscale copies of the first 40 HAM10000
melanomas fell to "routine" by their scores in 24 cases (18 of them from "urgent"), and 20 of the 40 passed the
feature gate (`python scripts/colour_spread.py --melanomas 40`), so `is_colourless` catches them from the
pixels: in every HAM10000 image at 96 px, 1% of pixels differ by 21 or more between their largest and smallest
channel; in a greyscale photo saved as a colour JPEG, none differ at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.covariance import LedoitWolf

METHODS = ("mahalanobis-l2", "mahalanobis")  # L2-normalised features, raw features
BLANK_STD = 2.0  # max per-channel pixel standard deviation (0-255) below which an image counts as blank
NOISE_SIZE = 64  # images are compared at this size, whatever the model's input size
# Correlation of horizontally and vertically adjacent grey levels at 64 px below which an image counts as noise:
# every HAM10000 image is at or above 0.73, uniform and Gaussian noise frames at about 0.39.
NOISE_CORRELATION = 0.55
# An image whose 99th percentile of per-pixel channel spread (max − min of R, G, B, 0-255) is below this has no
# colour: HAM10000's lowest is 21 at 96 px (`python scripts/colour_spread.py`), a greyscale JPEG's 0.
GREY_SPREAD = 8.0


@dataclass
class OODStats:
    """Training-feature mean and shrunk precision matrix, plus the distance cut-off."""

    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D)
    threshold: float
    percentile: float
    method: str = METHODS[0]

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Extra tensors for `dermai.weights.save_weights(extra=...)`."""
        return {
            "ood_mean": torch.from_numpy(self.mean.astype(np.float32)),
            "ood_precision": torch.from_numpy(self.precision.astype(np.float32)),
        }

    def to_meta(self) -> dict[str, Any]:
        """The JSON part, stored under the weights metadata key "ood"."""
        return {"threshold": float(self.threshold), "percentile": float(self.percentile), "method": self.method}

    @classmethod
    def from_weights(cls, extra: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> OODStats | None:
        """Statistics from a loaded weights file (its extra tensors and full JSON), or None if it has none."""
        ood = meta.get("ood")
        if not ood or "ood_mean" not in extra or "ood_precision" not in extra:
            return None
        method = ood.get("method", METHODS[0])
        if method not in METHODS:
            raise ValueError(f"unknown OOD method {method!r} (this version reads {', '.join(METHODS)})")
        return cls(
            mean=extra["ood_mean"].double().numpy(),
            precision=extra["ood_precision"].double().numpy(),
            threshold=float(ood["threshold"]),
            percentile=float(ood.get("percentile", float("nan"))),
            method=method,
        )


def _prepare(features: np.ndarray, method: str) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be shaped (N, D), got {x.shape}")
    if method == "mahalanobis-l2":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def _distances(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    centred = x - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, precision, centred), 0.0))


MIN_PERCENTILE = 50.0  # below the median of held-out distances, most real lesions would be flagged


def check_percentile(percentile: float) -> None:
    """Refuse an OOD cut-off percentile outside [50, 100], naming it: 0.99 (a fraction) would flag ~99% of
    real lesions."""
    if not MIN_PERCENTILE <= percentile <= 100:
        why = (
            "no percentile lies above 100 (the largest validation distance is the 100th)"
            if percentile > 100
            else "a lower cut-off would flag most in-distribution images"
        )
        raise ValueError(
            f"OOD percentile must lie in [{MIN_PERCENTILE:g}, 100] (a percentile such as 99, not a fraction), "
            f"got {percentile}: {why}"
        )


def fit_ood(
    train_features: np.ndarray, val_features: np.ndarray, percentile: float = 99.0, l2: bool = True
) -> OODStats:
    """Fit mean and shrunk covariance on training features; the cut-off is the `percentile` of validation
    distances (held-out images, since training images sit closer to their own mean than new ones do)."""
    check_percentile(percentile)
    method = METHODS[0] if l2 else METHODS[1]
    train, val = _prepare(train_features, method), _prepare(val_features, method)
    if len(train) < 2 or len(val) < 1:
        raise ValueError("fit_ood needs at least 2 training and 1 validation feature vectors")
    lw = LedoitWolf().fit(train)
    threshold = float(np.percentile(_distances(val, lw.location_, lw.precision_), percentile))
    return OODStats(lw.location_, lw.precision_, threshold, float(percentile), method)


def ood_scores(features: np.ndarray, stats: OODStats) -> np.ndarray:
    """Mahalanobis distances (N,); above `stats.threshold` means out of distribution."""
    return _distances(_prepare(features, stats.method), stats.mean, stats.precision)


def beyond_cut_off(score: float | None, threshold: float | None) -> bool:
    """Whether an image's feature distance passed the cut-off. An image flagged from its pixels alone (blank,
    noise, greyscale) is out of distribution too, but its distance may sit inside the cut-off, so what is said
    about it must not read "score > threshold"."""
    return score is not None and threshold is not None and score > threshold


def is_blank(pixels: np.ndarray) -> bool:
    """True for a (H, W, 3) uint8 image of (nearly) one colour: nothing a model could assess."""
    return float(np.asarray(pixels, dtype=np.float32).reshape(-1, 3).std(axis=0).max()) < BLANK_STD


def neighbour_correlation(pixels: np.ndarray) -> float:
    """The smaller of the horizontal and vertical correlations of adjacent grey levels of a (H, W, 3) uint8
    image, resized to NOISE_SIZE square: near 1 for photographs, near 0 for independent noise."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("L")
    grey = np.asarray(image.resize((NOISE_SIZE, NOISE_SIZE), Image.Resampling.BICUBIC), dtype=np.float64)
    pairs = ((grey[:, :-1], grey[:, 1:]), (grey[:-1, :], grey[1:, :]))
    values = []
    for a, b in pairs:
        a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
        denom = np.sqrt((a * a).sum() * (b * b).sum())
        values.append(float((a * b).sum() / denom) if denom > 0 else 1.0)  # flat: no noise (is_blank's case)
    return min(values)


def is_noise(pixels: np.ndarray) -> bool:
    """True for a (H, W, 3) uint8 image whose neighbouring pixels barely correlate: noise, not a photograph."""
    return neighbour_correlation(pixels) < NOISE_CORRELATION


def colour_spread(pixels: np.ndarray) -> float:
    """The 99th percentile over pixels of (largest − smallest channel) of a (H, W, 3) uint8 image: 0 for a
    greyscale image, 21 or more for every HAM10000 photo."""
    values = np.asarray(pixels, dtype=np.int16).reshape(-1, 3)
    return float(np.percentile(values.max(axis=1) - values.min(axis=1), 99))


def is_colourless(pixels: np.ndarray) -> bool:
    """True for a (H, W, 3) uint8 image without colour (greyscale, or nearly): the model reads colour."""
    return colour_spread(pixels) < GREY_SPREAD


def pixel_verdict(pixels: np.ndarray) -> str | None:
    """ "blank", "noise" or "colourless" for an image the model cannot assess, whatever its features say;
    None otherwise."""
    if is_blank(pixels):
        return "blank"
    if is_noise(pixels):
        return "noise"
    return "colourless" if is_colourless(pixels) else None
