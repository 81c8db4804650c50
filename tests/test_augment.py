"""Batched augmentation: shapes, determinism, every config field honoured, dermoscopy ops, previews."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from dermai.augment import (
    BatchAugmenter,
    add_hairs,
    adjust_hue,
    denormalize_to_uint8,
    gaussian_blur,
    grayscale,
    paper_transform,
    preview_pairs,
    preview_simclr_pairs,
    shades_of_gray,
    simclr_views,
    vignette,
)
from dermai.config import AugmentConfig, simclr_augment_config
from dermai.preprocess import eval_batch, to_float_batch

IMAGES = Path("/work/shared/data/ham10000/images")
ATOL = 1e-5


def identity_cfg(**overrides: object) -> AugmentConfig:
    """A config with every random op off; tests switch on one op at a time."""
    values: dict[str, object] = {
        "crop_scale": (1.0, 1.0),
        "crop_ratio": (1.0, 1.0),
        "hflip_p": 0.0,
        "vflip_p": 0.0,
        "rotation_degrees": 0.0,
        "brightness": 0.0,
        "contrast": 0.0,
        "saturation": 0.0,
        "hue": 0.0,
    }
    values.update(overrides)
    return AugmentConfig(**values)  # type: ignore[arg-type]


def all_on_cfg() -> AugmentConfig:
    return AugmentConfig(
        grayscale_p=0.5, blur_p=0.5, vignette_p=0.5, hair_p=0.5, color_constancy=True, rotation_degrees=180
    )


def run(cfg: AugmentConfig, pixels: torch.Tensor, seed: int = 0, out_size: int | None = None) -> torch.Tensor:
    augmenter = BatchAugmenter(cfg, out_size or pixels.shape[1])
    return augmenter(pixels, torch.Generator().manual_seed(seed))


def unit(x: torch.Tensor, cfg: AugmentConfig | None = None) -> torch.Tensor:
    """Undo the normalisation: back to [0, 1] intensities."""
    cfg = cfg or AugmentConfig()
    return x * torch.tensor(cfg.std).view(1, 3, 1, 1) + torch.tensor(cfg.mean).view(1, 3, 1, 1)


def random_pixels(n: int = 6, size: int = 32, low: int = 0, high: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, size, size, 3), dtype=torch.uint8, generator=g)


def solid_pixels(colour: tuple[int, int, int], n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8).expand(n, size, size, 3).contiguous()


def smooth_pixels(n: int = 6, size: int = 32) -> torch.Tensor:
    """Colourful but smooth images (low-pass noise), so bilinear resampling error stays small."""
    g = torch.Generator().manual_seed(1)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (fine.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# --------------------------------------------------------------------------------------------- output


@pytest.mark.parametrize("cfg", [AugmentConfig(), simclr_augment_config(), all_on_cfg()])
@pytest.mark.parametrize("out_size", [32, 24])
def test_shape_dtype_layout_and_range(cfg: AugmentConfig, out_size: int) -> None:
    out = run(cfg, random_pixels(), out_size=out_size)
    assert out.shape == (6, 3, out_size, out_size)
    assert out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    values = unit(out, cfg)
    assert values.min() >= -ATOL and values.max() <= 1 + ATOL
    assert values.std() > 0.05


def test_seed_reproduces_batch_and_different_seeds_differ() -> None:
    pixels = random_pixels()
    cfg = all_on_cfg()
    assert torch.equal(run(cfg, pixels, seed=3), run(cfg, pixels, seed=3))
    assert not torch.allclose(run(cfg, pixels, seed=3), run(cfg, pixels, seed=4))
    augmenter, g = BatchAugmenter(cfg, 32), torch.Generator().manual_seed(3)
    assert not torch.allclose(augmenter(pixels, g), augmenter(pixels, g))  # the generator advances


def test_every_image_of_a_large_batch_gets_its_own_augmentation() -> None:
    same = random_pixels(n=1).expand(20, 32, 32, 3).contiguous()  # spans several internal chunks
    out = run(AugmentConfig(), same).flatten(1)
    distances = torch.cdist(out, out)
    assert distances[~torch.eye(20, dtype=torch.bool)].min() > 1.0
    torch.testing.assert_close(run(AugmentConfig(), same, seed=1), run(AugmentConfig(), same, seed=1))


def test_rejects_float_pixels_and_out_of_range_hue() -> None:
    with pytest.raises(ValueError, match="uint8"):
        BatchAugmenter(AugmentConfig(), 32)(torch.zeros(2, 32, 32, 3))
    with pytest.raises(ValueError, match="hue"):
        BatchAugmenter(AugmentConfig(hue=0.6), 32)


# -------------------------------------------------------------------------------------- geometry


def test_identity_config_equals_eval_batch() -> None:
    pixels = random_pixels()
    torch.testing.assert_close(run(identity_cfg(), pixels), eval_batch(pixels), atol=ATOL, rtol=0)


def test_identity_config_at_another_size_is_a_plain_resize() -> None:
    pixels = smooth_pixels(size=64)
    resized = torch.nn.functional.interpolate(to_float_batch(pixels), size=(32, 32), mode="bilinear")
    torch.testing.assert_close(unit(run(identity_cfg(), pixels, out_size=32)), resized, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("field", "dim"), [("hflip_p", 3), ("vflip_p", 2)])
def test_flip_probability_one_flips_every_image(field: str, dim: int) -> None:
    pixels = random_pixels()
    out = run(identity_cfg(**{field: 1.0}), pixels)
    torch.testing.assert_close(out, torch.flip(eval_batch(pixels), dims=[dim]), atol=ATOL, rtol=0)


def test_flip_probability_half_flips_about_half() -> None:
    pixels = random_pixels(n=400, size=8)
    out = run(identity_cfg(hflip_p=0.5), pixels)
    flipped = (out - torch.flip(eval_batch(pixels), dims=[3])).abs().amax(dim=(1, 2, 3)) < ATOL
    assert 0.4 < flipped.float().mean() < 0.6


def test_rotation_turns_images_about_their_centre() -> None:
    size = 32
    coords = torch.linspace(-1, 1, size)
    disc = (coords.view(-1, 1) ** 2 + coords.view(1, -1) ** 2 < 0.4).to(torch.uint8) * 200
    symmetric = disc.view(1, size, size, 1).expand(8, size, size, 3).contiguous()
    rotated = run(identity_cfg(rotation_degrees=180), symmetric)
    assert (unit(rotated) - unit(eval_batch(symmetric))).abs().mean() < 0.03  # a disc is rotation-invariant
    ramp = smooth_pixels(n=8)
    changed = (run(identity_cfg(rotation_degrees=180), ramp) - eval_batch(ramp)).abs().mean(dim=(1, 2, 3))
    assert (changed > 0.05).float().mean() >= 0.75


def ramps(size: int = 64) -> torch.Tensor:
    """Red rises left → right, green top → bottom: output slopes measure the crop's width and height."""
    ramp = torch.linspace(0, 255, size)
    red = ramp.view(1, size).expand(size, size)
    green = ramp.view(size, 1).expand(size, size)
    image = torch.stack([red, green, torch.zeros(size, size)], dim=-1).round().to(torch.uint8)
    return image.expand(8, size, size, 3).contiguous()


def test_random_resized_crop_honours_scale_and_ratio() -> None:
    pixels = ramps()
    out = unit(run(identity_cfg(crop_scale=(0.25, 0.25), crop_ratio=(2.0, 2.0)), pixels))
    slope = 1.0 / 63
    x_slope = (out[:, 0, :, -2] - out[:, 0, :, 1]).mean(dim=1) / 61
    y_slope = (out[:, 1, -2, :] - out[:, 1, 1, :]).mean(dim=1) / 61
    # area 1/4 of the image at aspect 2: width √(1/4·2) ≈ 0.71, height √(1/4/2) ≈ 0.35 of the image
    torch.testing.assert_close(x_slope / slope, torch.full((8,), 0.5**0.5), atol=0.02, rtol=0)
    torch.testing.assert_close(y_slope / slope, torch.full((8,), 0.125**0.5), atol=0.02, rtol=0)
    offsets = out[:, 0, :, 0].mean(dim=1)
    assert offsets.std() > 0.01  # the crop lands at random places


def test_crop_that_cannot_fit_falls_back_to_whole_image() -> None:
    pixels = random_pixels()
    out = run(identity_cfg(crop_ratio=(2.0, 2.0)), pixels)  # area 1 at aspect 2 never fits
    torch.testing.assert_close(out, eval_batch(pixels), atol=ATOL, rtol=0)


# -------------------------------------------------------------------------------------- colour


def test_brightness_scales_each_image_by_one_factor() -> None:
    pixels = random_pixels(low=20, high=128)  # dark enough that ×1.5 never clips
    ratio = unit(run(identity_cfg(brightness=0.5), pixels)) / unit(eval_batch(pixels))
    per_image = ratio.mean(dim=(1, 2, 3))
    assert ratio.std(dim=(1, 2, 3)).max() < 1e-3
    assert per_image.min() >= 0.5 - 1e-4 and per_image.max() <= 1.5 + 1e-4
    assert per_image.std() > 0.05


def test_contrast_keeps_mean_grey_and_scales_spread() -> None:
    pixels = random_pixels(low=80, high=176)
    before, after = unit(eval_batch(pixels)), unit(run(identity_cfg(contrast=0.5), pixels))
    mean = grayscale(before).mean(dim=(1, 2, 3))
    torch.testing.assert_close(grayscale(after).mean(dim=(1, 2, 3)), mean, atol=1e-4, rtol=0)
    factor = (after - mean.view(-1, 1, 1, 1)).std(dim=(1, 2, 3)) / (before - mean.view(-1, 1, 1, 1)).std(dim=(1, 2, 3))
    assert factor.min() >= 0.5 - 1e-3 and factor.max() <= 1.5 + 1e-3 and factor.std() > 0.05


def test_saturation_keeps_grey_and_luma() -> None:
    cfg = identity_cfg(saturation=0.5)
    grey = solid_pixels((120, 120, 120))
    torch.testing.assert_close(run(cfg, grey), eval_batch(grey), atol=ATOL, rtol=0)
    pixels = random_pixels(low=90, high=166)  # mid-range so the colour change never clips
    before, after = unit(eval_batch(pixels)), unit(run(cfg, pixels))
    torch.testing.assert_close(grayscale(after), grayscale(before), atol=1e-4, rtol=0)
    assert (after - before).abs().mean() > 0.01


def test_hue_keeps_grey_value_and_chroma() -> None:
    cfg = identity_cfg(hue=0.5)
    grey = solid_pixels((120, 120, 120))
    torch.testing.assert_close(run(cfg, grey), eval_batch(grey), atol=ATOL, rtol=0)
    pixels = random_pixels()
    before, after = unit(eval_batch(pixels)), unit(run(cfg, pixels))
    for stat in (lambda t: t.amax(dim=1), lambda t: t.amax(dim=1) - t.amin(dim=1)):
        torch.testing.assert_close(stat(after), stat(before), atol=1e-4, rtol=0)
    assert (after - before).abs().mean() > 0.05


@pytest.mark.parametrize("shift", [-0.5, -0.2, -0.03, 0.0, 0.1, 0.5])
def test_adjust_hue_matches_torchvision(shift: float) -> None:
    x = to_float_batch(random_pixels(n=3, size=16))
    x[0, :, :4] = 0.5  # grey pixels, where hue is undefined
    x[1, :, :, :4] = x[1, 0:1, :, :4]  # ties between channels
    ours = adjust_hue(x, torch.full((3,), shift))
    torch.testing.assert_close(ours, TF.adjust_hue(x, shift), atol=ATOL, rtol=0)


def test_adjust_hue_shifts_each_image_by_its_own_amount() -> None:
    x = to_float_batch(random_pixels(n=2, size=8))
    shifts = torch.tensor([0.2, -0.4])
    expected = torch.cat([TF.adjust_hue(x[:1], 0.2), TF.adjust_hue(x[1:], -0.4)])
    torch.testing.assert_close(adjust_hue(x, shifts), expected, atol=ATOL, rtol=0)


def test_grayscale_probability_one_gives_equal_channels() -> None:
    pixels = random_pixels()
    out = unit(run(identity_cfg(grayscale_p=1.0), pixels))
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=ATOL, rtol=0)
    torch.testing.assert_close(out[:, 1], out[:, 2], atol=ATOL, rtol=0)
    assert not torch.allclose(run(identity_cfg(grayscale_p=0.0), pixels)[:, 0], out[:, 1])


# ----------------------------------------------------------------------------------------- blur


def total_variation(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean())


def test_blur_smooths_noise_and_keeps_flat_images() -> None:
    pixels = random_pixels()
    cfg = identity_cfg(blur_p=1.0, blur_sigma=(1.5, 2.0))
    assert total_variation(unit(run(cfg, pixels))) < 0.3 * total_variation(unit(eval_batch(pixels)))
    flat = solid_pixels((200, 150, 120))
    torch.testing.assert_close(run(cfg, flat), eval_batch(flat), atol=ATOL, rtol=0)


def test_gaussian_blur_tiny_sigma_is_identity_and_mass_is_kept() -> None:
    x = to_float_batch(random_pixels()).contiguous()
    torch.testing.assert_close(gaussian_blur(x, torch.full((6,), 0.05), 5), x, atol=ATOL, rtol=0)
    blurred = gaussian_blur(x, torch.linspace(0.5, 2.0, 6), 9)
    torch.testing.assert_close(blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=5e-3, rtol=0)


# ---------------------------------------------------------------------------------- dermoscopy ops


def test_vignette_darkens_corners_not_centre() -> None:
    x = torch.full((2, 3, 32, 32), 0.8)
    out = vignette(x, torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(out[:, :, 12:20, 12:20], x[:, :, 12:20, 12:20])
    assert out[0, :, 0, 0].max() < 0.01  # full strength: black corner
    assert 0.35 < out[1, :, 0, 0].mean() < 0.45  # half strength: half as bright
    torch.testing.assert_close(vignette(x, torch.zeros(2)), x)


def test_add_hairs_draws_thin_dark_lines_only() -> None:
    x = torch.tensor([0.85, 0.65, 0.55]).view(1, 3, 1, 1).expand(4, 3, 64, 64).contiguous()
    out = add_hairs(x, torch.Generator().manual_seed(0), n_hairs=5)
    assert (out <= x + ATOL).all()  # hairs only darken
    dark = grayscale(out)[:, 0] < 0.3
    per_image = dark.float().mean(dim=(1, 2))
    assert (per_image > 0.005).all() and (per_image < 0.2).all()  # visible but thin
    again = add_hairs(x, torch.Generator().manual_seed(0), n_hairs=5)
    assert torch.equal(out, again)
    thick = add_hairs(x, torch.Generator().manual_seed(0), n_hairs=5, thickness=3)
    assert (grayscale(thick)[:, 0] < 0.3).float().mean() > per_image.mean()


def test_shades_of_gray_removes_a_colour_cast() -> None:
    texture = to_float_batch(random_pixels(n=2))
    cast = texture * torch.tensor([0.9, 0.6, 0.4]).view(1, 3, 1, 1)
    means = shades_of_gray(cast).mean(dim=(2, 3))
    spread = (means.max(dim=1).values - means.min(dim=1).values) / means.mean(dim=1)
    assert (spread < 0.05).all()
    grey = torch.full((1, 3, 8, 8), 0.5)
    torch.testing.assert_close(shades_of_gray(grey), grey)


def test_augmenter_dermoscopy_options() -> None:
    pixels = solid_pixels((210, 160, 140))
    plain = unit(eval_batch(pixels))
    vignetted = unit(run(identity_cfg(vignette_p=1.0), pixels))
    assert (vignetted[:, :, 0, 0] < plain[:, :, 0, 0] - 0.2).all()
    torch.testing.assert_close(vignetted[:, :, 14:18, 14:18], plain[:, :, 14:18, 14:18], atol=ATOL, rtol=0)
    hairy = unit(run(identity_cfg(hair_p=1.0), pixels))
    assert (hairy <= plain + ATOL).all() and (grayscale(hairy) < 0.3).any(dim=(1, 2, 3)).all()
    cast = random_pixels()
    constant = unit(run(identity_cfg(color_constancy=True), cast))
    torch.testing.assert_close(constant, shades_of_gray(to_float_batch(cast)), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------- simclr, previews


def test_simclr_views_are_two_different_augmentations() -> None:
    pixels = random_pixels()
    augmenter = BatchAugmenter(simclr_augment_config(), 24)
    a, b = simclr_views(pixels, augmenter, torch.Generator().manual_seed(0))
    assert a.shape == b.shape == (6, 3, 24, 24)
    assert (a - b).abs().mean(dim=(1, 2, 3)).min() > 0.01


def test_denormalize_inverts_eval_batch_exactly() -> None:
    pixels = random_pixels()
    cfg = AugmentConfig()
    restored = denormalize_to_uint8(eval_batch(pixels, cfg.mean, cfg.std), cfg.mean, cfg.std)
    assert restored.dtype == np.uint8
    np.testing.assert_array_equal(restored, pixels.numpy())


def test_preview_pairs_are_uint8_before_and_after() -> None:
    pixels = random_pixels(n=3).numpy()
    pixels.setflags(write=False)  # as np.asarray(PIL image) gives
    pairs = preview_pairs(pixels, AugmentConfig(), 24, seed=5)
    assert len(pairs) == 3
    for (before, after), original in zip(pairs, pixels, strict=True):
        assert before.dtype == after.dtype == np.uint8
        assert before.shape == (32, 32, 3) and after.shape == (24, 24, 3)
        np.testing.assert_array_equal(before, original)
    again = preview_pairs(pixels, AugmentConfig(), 24, seed=5)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(pairs, again, strict=True))


def test_preview_simclr_pairs_are_two_views() -> None:
    pixels = random_pixels(n=3).numpy()
    pairs = preview_simclr_pairs(pixels, simclr_augment_config(), 24, seed=0)
    assert len(pairs) == 3
    for a, b in pairs:
        assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape == (24, 24, 3)
        assert not np.array_equal(a, b)


def test_paper_transform_on_a_real_image() -> None:
    if not IMAGES.is_dir():
        pytest.skip(f"{IMAGES} not available")
    path = next(IMAGES.glob("ISIC_*.jpg"), None)
    if path is None:
        pytest.skip(f"no ISIC images in {IMAGES}")
    cfg = AugmentConfig()
    transform = paper_transform(cfg, 64)
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    torch.manual_seed(0)
    first = transform(rgb)
    torch.manual_seed(0)
    assert torch.equal(first, transform(rgb))
    assert first.shape == (3, 64, 64) and first.dtype == torch.float32
    values = unit(first.unsqueeze(0), cfg)
    assert values.min() >= -ATOL and values.max() <= 1 + ATOL and values.std() > 0.01


# ------------------------------------------------------------------------------ non-square frames


def disc_in_frame(height: int, width: int, radius: float, n: int = 16) -> torch.Tensor:
    """n copies of a white disc of `radius` pixels centred in a black height × width frame."""
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1) - (height - 1) / 2
    cols = torch.arange(width, dtype=torch.float32).view(1, -1) - (width - 1) / 2
    disc = ((rows**2 + cols**2) <= radius**2).to(torch.uint8) * 255
    return disc.view(1, height, width, 1).expand(n, height, width, 3).contiguous()


def test_a_non_square_frame_rotates_as_pixels_do_and_keeps_its_shape() -> None:
    """A 4:3 input (`--image-width`) is rotated in pixels, not in the [-1, 1]² square its coordinates index: a
    disc stays a disc of its size at any angle (rotating the normalised square would make an ellipse 4/3 as
    wide as high at a quarter turn)."""
    pixels = disc_in_frame(60, 80, radius=15)
    out = run(identity_cfg(rotation_degrees=180), pixels, out_size=(60, 80))
    assert out.shape == (16, 3, 60, 80) and out.is_contiguous(memory_format=torch.channels_last)
    rows = torch.arange(60, dtype=torch.float32).view(-1, 1) - 29.5
    cols = torch.arange(80, dtype=torch.float32).view(1, -1) - 39.5
    central = rows**2 + cols**2 < 25**2  # rotated corners reflect skin in from the edges; look at the middle
    inside = (unit(out)[:, 0] >= 0.5) & central
    for mask in inside:
        rows, cols = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
        extent = (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1)
        assert abs(extent[0] - 31) <= 2 and abs(extent[1] - 31) <= 2, extent
    # no rotation, whole-image crop: the 4:3 cache comes through as it is, masks with it
    augmenter = BatchAugmenter(identity_cfg(), (60, 80))
    masks = pixels[..., 0].contiguous()
    images, warped = augmenter.with_masks(pixels, masks, torch.Generator().manual_seed(0))
    torch.testing.assert_close(images, eval_batch(pixels), atol=1e-4, rtol=0)  # 4/3 in the crop box: float rounding
    assert warped is not None and warped.shape == (16, 1, 60, 80)
    torch.testing.assert_close(warped[:, 0], masks.float() / 255, atol=1e-4, rtol=0)


def test_crops_of_a_non_square_frame_keep_its_aspect_on_average() -> None:
    """crop_ratio is relative to the output's aspect: ratio (1, 1) cuts 4:3 boxes from a 4:3 image, so the
    content keeps its proportions (a square box stretched to 4:3 would widen every lesion by a third)."""
    height, width = 48, 64
    red = torch.linspace(0, 255, width).view(1, width).expand(height, width)
    green = torch.linspace(0, 255, height).view(height, 1).expand(height, width)
    image = torch.stack([red, green, torch.zeros(height, width)], dim=-1).round().to(torch.uint8)
    pixels = image.expand(8, height, width, 3).contiguous()
    out = unit(run(identity_cfg(crop_scale=(0.25, 0.25)), pixels, out_size=(height, width)))
    x_share = (out[:, 0, :, -2] - out[:, 0, :, 1]).mean(dim=1) * (width - 1) / (width - 3)
    y_share = (out[:, 1, -2, :] - out[:, 1, 1, :]).mean(dim=1) * (height - 1) / (height - 3)
    torch.testing.assert_close(x_share, torch.full((8,), 0.5), atol=0.02, rtol=0)  # half the width …
    torch.testing.assert_close(y_share, torch.full((8,), 0.5), atol=0.02, rtol=0)  # … and half the height
