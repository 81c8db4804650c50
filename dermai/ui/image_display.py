"""Images as the pages show them: read at the input size, shrunk for display, masks overlaid and PNG bytes for
downloads. Kept apart as the Dataset, Augmentation and Predict pages all show images.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from dermai.data import DataError
from dermai.intake import IntakeError, read_image
from dermai.pixel_cache import decode_image, read_mask
from dermai.preprocess import InputSize, input_frame


def read_images(paths: Sequence[str], size: InputSize) -> tuple[list[int], list[np.ndarray], list[str]]:
    """The image files decoded in the input frame `size`, each on its own: the positions of those read, their
    pixels, and a message naming each file that could not be (damaged, gone since the folder was read). One bad
    file among the Augmentation lab's choice then costs only its own preview."""
    read: list[int] = []
    pixels: list[np.ndarray] = []
    problems: list[str] = []
    for i, path in enumerate(paths):
        try:
            pixels.append(decode_image(path, size))
            read.append(i)
        except (DataError, OSError) as exc:
            problems.append(str(exc))
    return read, pixels, problems


SQUASH_NOTED = 1.5  # an upload whose long:short ratio is this far from the input's is said to be squashed
UPSAMPLE_NOTED = 0.25  # an upload with under this share of the input's pixels is said to be upsampled


def resize_note(image_size: tuple[int, int], size: InputSize) -> str | None:
    """What the Augmentation lab says under the preview of an upload (width, height) that `resize_input`
    squashes far out of shape (1000×20 into a square) or blows up from a few pixels (1×1): the preview is then
    of a distorted or empty image, and nothing else shows why. None for an ordinary photo (HAM10000's 4:3 into
    a square is how the paper trains)."""
    width, height = image_size
    frame_h, frame_w = input_frame(size)  # landscape, as resize_input turns a portrait upload
    ratio, frame_ratio = max(width, height) / min(width, height), frame_w / frame_h
    squashed = max(ratio / frame_ratio, frame_ratio / ratio) > SQUASH_NOTED
    upsampled = width * height < UPSAMPLE_NOTED * frame_w * frame_h
    if not (squashed or upsampled):
        return None
    if upsampled:
        text = f"The uploaded image is upsampled from {width}×{height} px" + (" and squashed" if squashed else "")
    else:
        text = f"The uploaded image ({width}×{height} px) is squashed"
    shape = f" (its shape {ratio:.3g}:1, the input's {frame_ratio:.3g}:1)" if squashed else ""
    return f"{text} to the {frame_w}×{frame_h} px input size{shape}."


def mask_overlay(image_path: str | os.PathLike[str], mask: str | os.PathLike[str], alpha: float = 0.4) -> np.ndarray:
    """The image (decoded as training reads it: `intake.read_image`) with its lesion mask (≥ 128; oriented as
    its image by `pixel_cache.read_mask`) tinted green and outlined, uint8 (H, W, 3)."""
    try:
        rgb = np.asarray(read_image(image_path, str(image_path)).image, dtype=np.float32)
    except IntakeError as exc:  # an IntakeError's message starts with the path, said once here
        reason = str(exc).removeprefix(f"{image_path}: ")
        raise DataError(f"{image_path}: cannot overlay mask {mask} ({reason})") from exc
    grey = read_mask(mask, image_path)  # a DataError naming the mask when it is unreadable or cannot be oriented
    binary = np.asarray(grey.resize(rgb.shape[1::-1], Image.Resampling.NEAREST)) >= 128
    tint = np.array([0.0, 255.0, 0.0], dtype=np.float32)
    out = rgb.copy()
    out[binary] = (1 - alpha) * rgb[binary] + alpha * tint
    return outline_mask(out.clip(0, 255).astype(np.uint8), binary)


def outline_mask(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of uint8 (H, W, 3) pixels with the boundary of a boolean (H, W) mask drawn in green."""
    if mask.shape != pixels.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the image {pixels.shape[:2]}")
    out = np.array(pixels, dtype=np.uint8, copy=True)
    out[mask ^ _erode(mask)] = (0, 255, 0)
    return out


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    return padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


DISPLAY_MAX_SIDE = 1600  # px: a phone's 12-48 MP photo shown, overlaid and put in a report at full size took 9-25 s


def display_image(image: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """An image as shown on the page and in its report: shrunk (aspect kept) so that no side exceeds `max_side`;
    the model always scores the full image."""
    if max(image.size) <= max_side:
        return np.asarray(image)
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))


GALLERY_MAX_SIDE = 800  # px: a data folder's image in a tile or the detail view (HAM10000's are 600×450)


def gallery_image(path: str) -> np.ndarray:
    """A data folder's image as the Dataset and Evaluation pages show it: decoded as training reads it
    (`intake.read_image`: EXIF orientation, 16-bit and float data scaled, transparency on white, CMYK and
    colour profiles converted), which a browser handed the file could not always do (a TIFF, 16-bit data), and
    shrunk for the page. Raises DataError naming the file and what is wrong."""
    try:
        return display_image(read_image(path, name=path).image, GALLERY_MAX_SIDE)
    except IntakeError as exc:  # its message starts with the name given, here the path
        raise DataError(f"{path}: not a readable image ({str(exc).removeprefix(f'{path}: ')})") from exc


def png_bytes(pixels: np.ndarray | Image.Image) -> bytes:
    """An image as PNG bytes (for download buttons)."""
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
