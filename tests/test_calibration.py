import numpy as np
import pytest
from scipy.special import softmax
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from dermai.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    multiclass_ece,
    nll,
    reliability_bins,
)


def _calibrated_binned() -> tuple[np.ndarray, np.ndarray]:
    """Twenty images at each of p = 0.05, 0.25, ..., 0.85 with exactly that fraction malignant."""
    p, y = [], []
    for q in (0.05, 0.25, 0.45, 0.65, 0.85):
        p += [q] * 20
        k = round(q * 20)
        y += [1] * k + [0] * (20 - k)
    return np.array(y), np.array(p)


def test_ece_zero_when_perfectly_calibrated():
    y, p = _calibrated_binned()
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.0, abs=1e-12)


def test_ece_large_for_overconfident_toy():
    y = np.array([0, 1] * 50)
    assert expected_calibration_error(y, np.full(100, 0.9)) == pytest.approx(0.4)
    # Two bins: 0.1 predicted but 50% observed, 0.9 predicted but 50% observed.
    p = np.where(np.arange(100) < 50, 0.1, 0.9)
    assert expected_calibration_error(y, p) == pytest.approx(0.4)


def test_ece_rejects_non_probabilities():
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error(np.array([0, 1]), np.array([0.5, 1.5]))


def test_reliability_bins_match_sklearn_calibration_curve():
    rng = np.random.default_rng(0)
    p = rng.random(500) ** 2
    y = (rng.random(500) < p).astype(int)
    bins = reliability_bins(y, p, n_bins=10)
    assert len(bins) == 10
    assert bins[0]["bin_lo"] == 0.0 and bins[-1]["bin_hi"] == 1.0
    assert sum(b["count"] for b in bins) == 500
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    filled = [b for b in bins if b["count"]]
    assert [b["frac_pos"] for b in filled] == pytest.approx(list(prob_true))
    assert [b["mean_pred"] for b in filled] == pytest.approx(list(prob_pred))


def test_reliability_bins_empty_bins_and_edges():
    bins = reliability_bins(np.array([0, 1, 1]), np.array([0.0, 0.5, 1.0]), n_bins=4)
    assert [b["count"] for b in bins] == [1, 1, 0, 1]  # 0.5 sits on an edge: bins are (lo, hi]
    assert bins[2]["mean_pred"] is None and bins[2]["frac_pos"] is None
    assert bins[3] == {"bin_lo": 0.75, "bin_hi": 1.0, "mean_pred": 1.0, "frac_pos": 1.0, "count": 1}


def test_multiclass_ece_top_label():
    probs = np.tile([0.8, 0.1, 0.1], (10, 1))
    y = np.array([0] * 8 + [1] * 2)  # 80% confident, 80% right
    assert multiclass_ece(y, probs) == pytest.approx(0.0, abs=1e-12)
    assert multiclass_ece(np.ones(10, dtype=int), probs) == pytest.approx(0.8)


def test_brier_binary_and_multiclass():
    rng = np.random.default_rng(1)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(int)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    assert brier_score(y, p) == pytest.approx(np.mean((p - y) ** 2))
    probs = rng.dirichlet(np.ones(4), size=200)
    labels = rng.integers(0, 3, size=200)  # class 3 never occurs
    expected = np.mean(np.sum((probs - np.eye(4)[labels]) ** 2, axis=1))
    assert brier_score(labels, probs) == pytest.approx(expected)
    two = np.stack([1 - p, p], axis=1)  # a binary model's (N, 2) probabilities: summed, twice the 1-D score
    assert brier_score(y, two) == pytest.approx(2 * brier_score(y, p))
    with pytest.raises(ValueError, match="labels in"):
        brier_score(np.full(200, 4), probs)


def _calibrated_logits(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated at T = 1."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, k))
    probs = softmax(logits, axis=1)
    y = np.array([rng.choice(k, p=row) for row in probs])
    return logits, y


@pytest.mark.parametrize("k", [2, 7])
def test_temperature_recovers_overconfidence(k):
    logits, y = _calibrated_logits(4000, k, seed=k)
    overconfident = logits * 5
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(5.0, rel=0.1)
    assert nll(overconfident, y, t) < nll(overconfident, y) - 0.5
    t_raw = fit_temperature(logits, y)
    assert t_raw == pytest.approx(1.0, rel=0.1)
    assert t / t_raw == pytest.approx(5.0, rel=1e-3)  # scaling logits by 5 scales the optimum by 5


def test_apply_temperature_and_nll():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    probs = apply_temperature(logits, 2.0)
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert (probs.argmax(axis=1) == logits.argmax(axis=1)).all()
    assert probs == pytest.approx(softmax(logits / 2.0, axis=1))
    y = np.array([0, 2])
    assert nll(logits, y, 2.0) == pytest.approx(-np.mean(np.log(probs[[0, 1], [0, 2]])))


def test_fit_temperature_rejects_1d_logits():
    with pytest.raises(ValueError, match="shaped"):
        fit_temperature(np.array([0.1, 0.2]), np.array([0, 1]))
