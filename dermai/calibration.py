"""Calibration: does a predicted 30% malignancy risk mean 30%?

A triage tool's probabilities are read as risks, so they must be checked (ECE, Brier, reliability bins)
and, if over-confident, fixed with temperature scaling fitted on the validation split. Pure numpy/scipy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import brier_score_loss


def _bins(y_true: np.ndarray, p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of [0, 1]: count, sum of predictions, sum of outcomes. Bins are (lo, hi] (the
    first also holds 0), as in sklearn's calibration_curve."""
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true and p differ in length: {y.shape[0]} vs {p.shape[0]}")
    if p.size == 0:
        raise ValueError("no predictions to bin")
    if p.min() < 0 or p.max() > 1:
        raise ValueError("p must be probabilities in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], p)
    count = np.bincount(idx, minlength=n_bins)
    return count, np.bincount(idx, weights=p, minlength=n_bins), np.bincount(idx, weights=y, minlength=n_bins)


def expected_calibration_error(y_true: np.ndarray, p: np.ndarray, n_bins: int = 15) -> float:
    """Binary ECE on p_malignant: the count-weighted mean gap |mean prediction - observed rate| over
    equal-width bins. 0 means predicted risks match observed frequencies."""
    count, sum_p, sum_y = _bins(y_true, p, n_bins)
    return float(np.abs(sum_p - sum_y).sum() / count.sum())


def multiclass_ece(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: calibration of the confidence in the predicted (argmax) diagnosis."""
    probs = np.asarray(probs, dtype=float)
    correct = probs.argmax(axis=1) == np.asarray(y_true).ravel()
    return expected_calibration_error(correct, probs.max(axis=1), n_bins)


def brier_score(y_true: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the predicted probabilities (a proper score: rewards calibration and
    discrimination together). 1-D p: binary, in [0, 1]; (N, K) p: multiclass, summed over classes,
    in [0, 2]."""
    p = np.asarray(p, dtype=float)
    if p.ndim == 1:
        return float(brier_score_loss(y_true, p, pos_label=1))
    # Computed here rather than by sklearn, whose (N, 2) case returns the one-column (binary) score instead.
    labels = np.asarray(y_true).ravel().astype(int)
    if p.ndim != 2 or len(labels) != len(p) or labels.min(initial=0) < 0 or labels.max(initial=0) >= p.shape[1]:
        raise ValueError(f"brier_score needs (N, K) probabilities and N labels in [0, K), got {p.shape}")
    return float(np.mean(np.sum((p - np.eye(p.shape[1])[labels]) ** 2, axis=1)))


def reliability_bins(y_true: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict[str, Any]]:
    """The reliability diagram's data: per equal-width bin, its edges, mean prediction, observed positive
    fraction (None for empty bins) and count."""
    count, sum_p, sum_y = _bins(y_true, p, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return [
        {
            "bin_lo": float(edges[i]),
            "bin_hi": float(edges[i + 1]),
            "mean_pred": float(sum_p[i] / count[i]) if count[i] else None,
            "frac_pos": float(sum_y[i] / count[i]) if count[i] else None,
            "count": int(count[i]),
        }
        for i in range(n_bins)
    ]


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) over the last axis: T > 1 softens over-confident probabilities."""
    return softmax(np.asarray(logits, dtype=float) / temperature, axis=-1)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0, bias: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / T + bias)."""
    z = np.asarray(logits, dtype=float) / temperature
    logp = log_softmax(z if bias is None else z + np.asarray(bias, dtype=float), axis=-1)
    return float(-logp[np.arange(logp.shape[0]), np.asarray(y).ravel()].mean())


# The range `fit_temperature` searches: a fit that ends on either bound found no minimum inside it (on a tiny
# or one-class validation set, say), and the app warns rather than serving it as a calibration.
TEMPERATURE_BOUNDS = (0.01, 100.0)


def fit_temperature(logits: np.ndarray, y: np.ndarray, bias: np.ndarray | None = None) -> float:
    """The temperature T > 0 minimising validation NLL (Guo et al. 2017). One scalar keeps the argmax, hence
    accuracy and AUROC, unchanged while fixing over- or under-confidence. Binary models: pass (N, 2) logits.
    Searched over log T in [log 0.01, log 100] (TEMPERATURE_BOUNDS)."""
    logits = np.asarray(logits, dtype=float)
    if logits.ndim != 2 or logits.shape[0] != np.asarray(y).size:
        raise ValueError(f"logits must be shaped (N, K) with N = len(y), got {logits.shape}")
    result = minimize_scalar(
        lambda log_t: nll(logits, y, float(np.exp(log_t)), bias),
        bounds=(np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))
