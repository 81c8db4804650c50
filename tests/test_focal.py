"""Focal loss for fine-tuning: γ = 0 is exactly the paper's cross-entropy (weights, smoothing and mixed labels
included), γ > 0 follows (1 − p_t)^γ · CE, the setting reaches the trainer from the CLI, and a bad γ is refused
before any work."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dermai.cli import _run_config, build_parser
from dermai.losses import focal_cross_entropy, joint_loss
from dermai.train import TrainingError, read_metrics, train
from tests.test_train import tiny_config

K = 7


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, K, generator=g) * 2, torch.tensor([0, 3, 6, 3, 1, 5])


@pytest.mark.parametrize(
    ("weighted", "smoothing", "soft"), [(False, 0.0, False), (True, 0.0, False), (True, 0.1, False), (True, 0.1, True)]
)
def test_gamma_zero_is_the_papers_cross_entropy(weighted: bool, smoothing: float, soft: bool) -> None:
    logits, labels = batch()
    weights = torch.linspace(0.5, 2.0, K) if weighted else None
    targets = torch.eye(K)[labels] * 0.7 + torch.eye(K)[labels.roll(1)] * 0.3 if soft else labels
    expected = F.cross_entropy(logits, targets, weight=weights, label_smoothing=smoothing)
    torch.testing.assert_close(focal_cross_entropy(logits, targets, 0.0, weights, smoothing), expected)


def test_each_image_is_scaled_by_one_minus_its_label_probability_to_the_gamma() -> None:
    logits, labels = batch(1)
    p_t = logits.softmax(1)[torch.arange(6), labels]
    by_hand = ((1 - p_t) ** 2 * -p_t.log()).mean()
    assert focal_cross_entropy(logits, labels, 2.0).item() == pytest.approx(by_hand.item(), rel=1e-5)
    # For a mixed label, p_t is the probability the model gives the label's mixture.
    mixed = torch.eye(K)[labels] * 0.6 + torch.eye(K)[labels.roll(1)] * 0.4
    probs = logits.softmax(1)
    p_mix = (probs * mixed).sum(1)
    by_hand = ((1 - p_mix) ** 2 * -(mixed * probs.log()).sum(1)).mean()
    assert focal_cross_entropy(logits, mixed, 2.0).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_an_image_already_learnt_counts_far_less_than_a_hard_one() -> None:
    logits = torch.tensor([[6.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # image 0 learnt (p ≈ 0.995), image 1 unsure (1/3)
    labels = torch.tensor([0, 0])
    per_image = [focal_cross_entropy(logits[i : i + 1], labels[i : i + 1], 2.0).item() for i in range(2)]
    plain = [F.cross_entropy(logits[i : i + 1], labels[i : i + 1]).item() for i in range(2)]
    assert per_image[1] / per_image[0] > 1000 * plain[1] / plain[0]
    assert per_image[1] == pytest.approx((2 / 3) ** 2 * math.log(3), rel=1e-5)


def test_the_focal_factor_passes_no_gradient_of_its_own() -> None:
    logits, labels = batch(2)
    leaf = logits.clone().requires_grad_(True)
    focal_cross_entropy(leaf, labels, 2.0).backward()
    p_t = logits.softmax(1)[torch.arange(6), labels]  # a constant here, as in the loss
    expected_leaf = logits.clone().requires_grad_(True)
    (((1 - p_t) ** 2) * F.cross_entropy(expected_leaf, labels, reduction="none")).mean().backward()
    torch.testing.assert_close(leaf.grad, expected_leaf.grad)


def test_joint_loss_uses_the_focal_term_when_asked() -> None:
    logits, labels = batch(3)
    ntx = torch.tensor(1.5)
    total, ce = joint_loss(logits, logits, labels, ntx, 0.5, focal_gamma=2.0)
    both = torch.cat([labels, labels])
    assert ce.item() == pytest.approx(focal_cross_entropy(torch.cat([logits, logits]), both, 2.0).item(), rel=1e-6)
    assert total.item() == pytest.approx(ce.item() + 0.75, rel=1e-6)
    assert ce.item() < joint_loss(logits, logits, labels, ntx, 0.5)[1].item()


def test_a_negative_gamma_is_refused_before_any_work(ham_root: Path, tmp_path: Path) -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="focal_gamma"):
            focal_cross_entropy(*batch(), bad)
    with pytest.raises(TrainingError, match="focal_gamma"):
        train(tiny_config(ham_root, focal_gamma=-0.5), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_passes_focal_gamma_and_it_changes_the_training_loss(ham_root: Path, tmp_path: Path) -> None:
    cfg = _run_config(build_parser().parse_args(["finetune", "--out", "x", "--focal-gamma", "2"]), "finetune")
    assert cfg.train.focal_gamma == 2.0
    assert _run_config(build_parser().parse_args(["finetune", "--out", "x"]), "finetune").train.focal_gamma == 0.0
    losses = {}
    for name, gamma in (("plain", 0.0), ("focal", 2.0)):
        cfg = tiny_config(ham_root, focal_gamma=gamma)
        cfg.stage = "finetune"
        assert train(cfg, tmp_path / name).status == "finished"
        losses[name] = [r["ce"] for r in read_metrics(tmp_path / name) if r["kind"] == "step"]
    assert losses["focal"][0] < losses["plain"][0]  # same seed and images: the first step differs by the factor only
