"""The auxiliary lesion-mask loss: its maths, masks warped exactly as their images, masks read (and refused)
by file, and the setting reaching training from the CLI and the job launcher — with the served model unchanged."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dermai import jobs
from dermai.augment import BatchAugmenter, preview_masks, preview_pairs
from dermai.cli import _run_config, build_parser
from dermai.config import AugmentConfig
from dermai.data import DataError, load_dataset
from dermai.losses import check_mask_weight, lesion_mask_loss
from dermai.model import LesionMaskHead, SimCLRResNet18
from dermai.pixel_cache import load_masks
from dermai.train import TrainingError, read_metrics, train
from dermai.weights import load_weights
from tests.conftest import ham_rows, make_folder
from tests.test_train import tiny_config


def test_the_loss_is_bce_against_the_share_of_each_cell_the_lesion_covers() -> None:
    masks = torch.zeros(1, 1, 4, 4)
    masks[..., :, :2] = 1.0  # lesion = left half
    masks[..., 0, 2] = 1.0  # and one pixel of the top-right cell: that cell is 1/4 lesion
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 0.0]]]])
    targets = [1.0, 0.25, 1.0, 0.0]
    sig = torch.sigmoid(logits.flatten()).tolist()
    by_hand = -sum(t * math.log(p) + (1 - t) * math.log(1 - p) for t, p in zip(targets, sig, strict=True)) / 4
    assert lesion_mask_loss(logits, masks).item() == pytest.approx(by_hand, rel=1e-6)
    # Knowing nothing (logit 0 everywhere) costs log 2 whatever the mask.
    assert lesion_mask_loss(torch.zeros(1, 1, 2, 2), masks).item() == pytest.approx(math.log(2), rel=1e-6)
    with pytest.raises(ValueError, match="lesion_mask_loss"):
        lesion_mask_loss(torch.zeros(2, 1, 2, 2), masks)


def test_bad_mask_weights_are_refused_naming_the_setting() -> None:
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="mask_weight must be"):
            check_mask_weight(bad)
    with pytest.raises(ValueError, match="MixUp or CutMix"):
        check_mask_weight(0.5, cutmix_alpha=1.0)
    check_mask_weight(0.0, mixup_alpha=0.2)  # off: mixing is fine


def test_masks_get_their_images_crop_flips_and_rotation() -> None:
    rng = np.random.default_rng(0)
    masks = torch.from_numpy((rng.random((5, 40, 40)) > 0.5).astype(np.uint8) * 255)
    pixels = masks.unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()  # images that are their masks, in grey
    geometry_only = AugmentConfig(
        brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
    )
    augmenter = BatchAugmenter(geometry_only, 24)
    images, warped = augmenter.with_masks(pixels, masks, torch.Generator().manual_seed(1))
    assert warped is not None and warped.shape == (5, 1, 24, 24)
    torch.testing.assert_close(warped[:, 0], images[:, 0])
    assert not torch.equal(warped[0], warped[1])  # each sample its own draw
    # The images are those the plain call draws: masks change no random draw.
    full = BatchAugmenter(AugmentConfig(hair_p=0.5, vignette_p=0.5), 24)
    plain = full(pixels, torch.Generator().manual_seed(2))
    with_masks, _ = full.with_masks(pixels, masks, torch.Generator().manual_seed(2))
    torch.testing.assert_close(with_masks, plain)
    with pytest.raises(ValueError, match="masks"):
        augmenter.with_masks(pixels, masks[:, :10], torch.Generator())


def test_feature_map_pooled_is_the_trunks_features() -> None:
    model = SimCLRResNet18(7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = model.feature_map(x)
        assert fmap.shape == (2, 512, 2, 2)
        torch.testing.assert_close(model.pool(fmap), model.trunk(x))
        assert LesionMaskHead()(fmap).shape == (2, 1, 2, 2)


def _folder_with_masks(root: Path, skip: str | None = None) -> Path:
    rows = ham_rows(n_lesions_per_dx=4, images_per_lesion=1)
    make_folder(root, rows)
    (root / "masks").mkdir()
    for i, row in enumerate(rows):
        if row["image_id"] == skip:
            continue
        mask = np.zeros((30, 40), np.uint8)
        mask[:, : 4 + i] = 255  # each image's lesion a different width, so the row order shows
        Image.fromarray(mask).save(root / "masks" / f"{row['image_id']}_segmentation.png")
    return root


def test_masks_load_in_row_order_and_a_missing_one_is_named(tmp_path: Path) -> None:
    dataset = load_dataset(_folder_with_masks(tmp_path / "ok"))
    masks = load_masks(dataset, 20)
    assert masks.shape == (len(dataset.meta), 20, 20) and masks.dtype == np.uint8
    written = [r["image_id"] for r in ham_rows(n_lesions_per_dx=4, images_per_lesion=1)]
    for k, image_id in enumerate(dataset.meta["image_id"]):
        width = int((masks[k, 10] >= 128).sum())  # a mask 40 px wide, resized to 20
        assert abs(width - (4 + written.index(image_id)) / 2) <= 1, image_id
    assert np.array_equal(load_masks(dataset, 20), masks)  # again, from the cache
    missing = load_dataset(_folder_with_masks(tmp_path / "gap", skip="I_mel_1_0"))
    with pytest.raises(DataError, match=r"I_mel_1_0_segmentation\.png: lesion mask not found \(1 of 28"):
        load_masks(missing, 20)


def test_fine_tuning_with_masks_adds_the_loss_and_saves_no_head(ham_root: Path, tmp_path: Path) -> None:
    cfg = _run_config(build_parser().parse_args(["finetune", "--out", "x", "--mask-weight", "0.5"]), "finetune")
    assert cfg.train.mask_weight == 0.5
    assert _run_config(build_parser().parse_args(["finetune", "--out", "x"]), "finetune").train.mask_weight == 0.0
    cfg = tiny_config(ham_root, mask_weight=0.5)
    cfg.stage = "finetune"
    assert train(cfg, tmp_path / "run").status == "finished"
    steps = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "step"]
    assert steps and all(0 < r["mask_loss"] < 5 for r in steps)
    first = steps[0]
    assert first["loss"] == pytest.approx(first["ce"] + 0.5 * first["ntxent"] + 0.5 * first["mask_loss"], rel=1e-4)
    assert "mask_head" in torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    served = load_weights(tmp_path / "run" / "model.safetensors")
    assert isinstance(served.model, SimCLRResNet18) and not hasattr(served.model, "mask_head")
    plain = tiny_config(ham_root)
    plain.stage = "finetune"
    train(plain, tmp_path / "plain")
    assert all("mask_loss" not in r for r in read_metrics(tmp_path / "plain") if r["kind"] == "step")


def test_missing_masks_and_mixing_are_refused_before_training(tmp_path: Path) -> None:
    folder = _folder_with_masks(tmp_path / "data", skip="I_bcc_0_0")
    cfg = tiny_config(folder, mask_weight=1.0)
    cfg.data.limit = None
    cfg.stage = "finetune"
    with pytest.raises(TrainingError, match=r"mask_weight 1.0: .*I_bcc_0_0_segmentation\.png: lesion mask not found"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "model.safetensors").exists()
    with pytest.raises(TrainingError, match="MixUp or CutMix"):
        train(tiny_config(folder, mask_weight=1.0, mixup_alpha=0.2), tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
    with pytest.raises(jobs.JobError, match="MixUp or CutMix"):
        jobs.start_job("finetune", {"mask_weight": 1.0, "cutmix_alpha": 1.0}, tmp_path / "runs")
    command = jobs.build_command("finetune", tmp_path / "r", {"mask_weight": 0.5})
    assert command[command.index("--mask-weight") + 1] == "0.5"


def test_the_preview_outlines_each_mask_where_its_augmented_image_shows_it() -> None:
    rng = np.random.default_rng(3)
    masks = np.zeros((3, 40, 40), np.uint8)
    for k in range(3):
        top, left = rng.integers(0, 20, 2)
        masks[k, top : top + 15, left : left + 15] = 255
    pixels = np.repeat(masks[..., None], 3, axis=-1)  # images that are their masks, in grey
    cfg = AugmentConfig(
        rotation_degrees=90.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, mean=(0, 0, 0), std=(1, 1, 1)
    )
    after = np.stack([a for _, a in preview_pairs(pixels, cfg, 24, seed=5)])
    warped = preview_masks(pixels, masks, cfg, 24, seed=5)
    assert warped.shape == (3, 24, 24) and warped.dtype == bool and warped.any()
    assert np.mean(warped != (after[..., 0] >= 128)) < 0.01  # only rounding at the boundary may differ
    assert not np.array_equal(warped, preview_masks(pixels, masks, cfg, 24, seed=6))
