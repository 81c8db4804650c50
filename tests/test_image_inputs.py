"""Unusual but real image files, as users hand them to intake (`dermai.intake.read_image`, which the CLI, the
Predictor, the Predict page, the Augmentation lab and the data loader all decode through): each becomes the
image a viewer shows, or one plain message naming the file."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from dermai.intake import read_image


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_a_float_tiff_with_nan_or_infinite_pixels_keeps_its_picture() -> None:
    values = np.linspace(0.0, 1.0, 1600, dtype=np.float32).reshape(40, 40)  # float data in 0-1, as usual
    values[0, 0], values[0, 1], values[0, 2] = np.nan, np.inf, -np.inf  # a masked-out pixel, an overflow
    out = np.asarray(read_image(encode(Image.fromarray(values, mode="F"), "TIFF"), "scan.tif").image)
    expected = np.rint(np.linspace(0.0, 1.0, 1600).reshape(40, 40) * 255)
    assert np.array_equal(out[1:, :, 0], expected[1:])  # read as the 0-1 data it is, not blacked out
    assert out[0, :3, 0].tolist() == [0, 255, 0]  # no number: the darkest; +inf the brightest, -inf the darkest
