"""dermai.ui.image_display: images shown shrunk, and lesion masks overlaid or outlined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermai.data import DataError
from dermai.ui import image_display


def test_mask_overlay_tints_the_lesion(tmp_path: Path) -> None:
    Image.fromarray(np.full((20, 30, 3), 100, np.uint8)).save(tmp_path / "a.jpg")
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = image_display.mask_overlay(tmp_path / "a.jpg", tmp_path / "m.png")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    original = np.asarray(Image.open(tmp_path / "a.jpg"))
    assert out[10, 15, 1] > out[10, 15, 0] and tuple(out[0, 0]) == tuple(original[0, 0])
    with pytest.raises(DataError):
        image_display.mask_overlay(tmp_path / "missing.jpg", tmp_path / "m.png")


def test_outline_mask_draws_only_the_boundary_in_green() -> None:
    pixels = np.full((10, 12, 3), 50, np.uint8)
    mask = np.zeros((10, 12), bool)
    mask[2:8, 3:9] = True
    out = image_display.outline_mask(pixels, mask)
    green = (out == (0, 255, 0)).all(axis=-1)
    assert green[2, 3:9].all() and green[7, 3:9].all() and green[2:8, 3].all() and green[2:8, 8].all()
    assert not green[3:7, 4:8].any() and not green[~mask].any()  # inside and outside untouched
    assert (pixels == 50).all()  # a copy
    with pytest.raises(ValueError, match="does not match"):
        image_display.outline_mask(pixels, mask[:5])


def test_a_camera_size_photo_is_shown_shrunk_and_a_small_one_as_it_is() -> None:
    photo = Image.new("RGB", (4000, 3000), (180, 120, 100))
    shown = image_display.display_image(photo)
    assert shown.shape == (1200, 1600, 3) and shown.dtype == np.uint8  # the long side capped, 4:3 kept
    portrait = image_display.display_image(Image.new("RGB", (900, 4500)))
    assert portrait.shape == (1600, 320, 3)
    small = Image.new("RGB", (200, 150), (10, 20, 30))
    assert np.array_equal(image_display.display_image(small), np.asarray(small))
