"""MixUp and CutMix on fine-tuning batches: labels follow the pixels, both SimCLR views of an image get the
same partner and weight, every draw comes from the step's generator, and bad settings are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dermai.cli import _run_config, build_parser
from dermai.losses import joint_loss
from dermai.mixing import check_mixing, cutmix_box, mix_views
from dermai.train import TrainingError, read_metrics, train
from tests.test_train import tiny_config

K = 7


def constant_views(n: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """View a of image i is the constant i, view b the constant i + 100; image i has class i."""
    values = torch.arange(n, dtype=torch.float32)
    views = torch.cat([values, values + 100]).view(2 * n, 1, 1, 1).expand(2 * n, 3, size, size).clone()
    return views, torch.arange(n)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_without_mixing_the_batch_is_untouched_and_nothing_is_drawn() -> None:
    views, labels = constant_views(5)
    g = gen()
    mixed, targets = mix_views(views, labels, K, 0.0, 0.0, g)
    assert mixed is views
    torch.testing.assert_close(targets, torch.eye(K)[labels])
    assert torch.equal(g.get_state(), gen().get_state())  # runs without mixing keep their random stream


def test_mixup_blends_pixels_and_labels_by_the_same_weight_and_keeps_the_views_paired() -> None:
    n = 6
    views, labels = constant_views(n)
    mixed, targets = mix_views(views, labels, K, 0.4, 0.0, gen(1))
    assert torch.allclose(targets.sum(1), torch.ones(n))
    for i in range(n):
        weights = targets[i]
        own = float(weights[i])
        partner = int(torch.argmax(torch.where(torch.arange(K) == i, -1.0, weights)))
        if own == 1.0:  # drew itself as partner
            partner = i
        expected_a = own * i + (1 - own) * partner
        torch.testing.assert_close(mixed[i], torch.full_like(mixed[i], expected_a))
        torch.testing.assert_close(mixed[n + i], torch.full_like(mixed[i], expected_a + 100))  # same mix, view b
    assert not torch.equal(mixed, views)


def test_cutmix_pastes_one_box_from_the_partner_and_labels_it_by_its_area() -> None:
    n, size = 6, 16
    views, labels = constant_views(n, size)
    mixed, targets = mix_views(views, labels, K, 0.0, 1.0, gen(3))
    pasted_share = None
    for i in range(n):
        own_pixels = (mixed[i] == i).float().mean()
        partner = int(torch.argmax(torch.where(torch.arange(K) == i, -1.0, targets[i])))
        if targets[i, i] == 1.0:
            continue  # drew itself or an empty box: nothing pasted
        torch.testing.assert_close(float(targets[i, i]), float(own_pixels))  # label share = pixel share
        assert set(mixed[i].unique().tolist()) == {float(i), float(partner)}
        assert torch.equal(mixed[n + i] - 100, mixed[i])  # view b got the same box from the same partner
        share = float(1 - own_pixels)
        assert pasted_share is None or share == pytest.approx(pasted_share)  # one box for the whole batch
        pasted_share = share
    assert pasted_share is not None


def test_cutmix_boxes_are_clipped_to_the_image() -> None:
    for seed in range(20):
        top, bottom, left, right = cutmix_box(10, 12, 0.3, gen(seed))
        assert 0 <= top <= bottom <= 10 and 0 <= left <= right <= 12
    top, bottom, left, right = cutmix_box(10, 12, 1.0, gen())
    assert (bottom - top) * (right - left) == 0  # λ = 1: nothing pasted


def test_mixing_is_reproducible_from_the_generator_and_both_methods_are_used() -> None:
    views, labels = constant_views(6)
    first = mix_views(views, labels, K, 0.4, 1.0, gen(7))
    again = mix_views(views, labels, K, 0.4, 1.0, gen(7))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    kinds = set()
    for seed in range(12):
        mixed, _ = mix_views(views, labels, K, 0.4, 1.0, gen(seed))
        # MixUp leaves each constant image constant; CutMix leaves two values in the images it pasted into
        kinds.add("cutmix" if any(len(m.unique()) == 2 for m in mixed) else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_soft_one_hot_targets_give_the_same_joint_loss_as_class_indices() -> None:
    torch.manual_seed(0)
    logits_a, logits_b, labels = torch.randn(4, K), torch.randn(4, K), torch.tensor([0, 3, 6, 3])
    ntx = torch.tensor(1.5)
    by_index = joint_loss(logits_a, logits_b, labels, ntx, 0.5, None, 0.1)
    by_probability = joint_loss(logits_a, logits_b, torch.eye(K)[labels], ntx, 0.5, None, 0.1)
    torch.testing.assert_close(by_index, by_probability)


@pytest.mark.parametrize(("mixup", "cutmix", "name"), [(-0.1, 0.0, "mixup_alpha"), (0.0, float("nan"), "cutmix_alpha")])
def test_bad_alphas_are_refused_by_name(mixup: float, cutmix: float, name: str, ham_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=name):
        check_mixing(mixup, cutmix)
    cfg = tiny_config(ham_root, mixup_alpha=mixup, cutmix_alpha=cutmix)
    with pytest.raises(TrainingError, match=name):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before any work


def test_cli_passes_mixing_settings_and_a_mixed_fine_tune_trains(ham_root: Path, tmp_path: Path) -> None:
    args = build_parser().parse_args(["finetune", "--out", "x", "--mixup-alpha", "0.2", "--cutmix-alpha", "1"])
    cfg = _run_config(args, "finetune")
    assert (cfg.train.mixup_alpha, cfg.train.cutmix_alpha) == (0.2, 1.0)
    defaults = _run_config(build_parser().parse_args(["finetune", "--out", "x"]), "finetune")
    assert (defaults.train.mixup_alpha, defaults.train.cutmix_alpha) == (0.0, 0.0)  # the paper uses neither

    losses = {}
    for name, alphas in (("plain", (0.0, 0.0)), ("mixed", (0.2, 1.0))):
        cfg = tiny_config(ham_root, mixup_alpha=alphas[0], cutmix_alpha=alphas[1])
        cfg.stage = "finetune"
        result = train(cfg, tmp_path / name)
        assert result.weights is not None and result.weights.exists()
        losses[name] = [r["ce"] for r in read_metrics(tmp_path / name) if r["kind"] == "step"]
    assert losses["plain"][0] != losses["mixed"][0]  # same seed, same images: only the mixing differs
