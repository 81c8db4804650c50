"""The one resize and normalisation shared by the pixel cache, training, evaluation and prediction.

Keeping this in one place is what makes a prediction see exactly what training saw: the whole image is
turned to landscape if it is taller than wide, then resized to the model's input frame — a square of `size`
pixels (squashing a 4:3 photo), or `(height, width)` for a model trained at the images' own aspect —
dermoscopy lesions are centred and a centre crop would cut the border that holds the lesion's edge — then
scaled to [0, 1] and normalised with mean/std.

Why turn: squashing narrows a 4:3 landscape image's lesion to 3/4 of its width, and a model trained on such
images (HAM10000's are all 200×150) has only seen lesions narrowed that way. A portrait photo squashed as it is
comes out narrowed along the other axis: on the validation split turned to portrait, the shipped model lost
0.003 AUROC and 0.07 seven-class balanced accuracy (`scripts/aspect_probe.py`). Dermoscopy has no canonical
orientation (the dermatoscope meets the skin at any angle), so a quarter turn loses nothing and restores the
training geometry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from dermai.config import IMAGENET_MEAN, IMAGENET_STD, input_size


def landscape(image: Image.Image) -> Image.Image:
    """The image turned a quarter clockwise when it is taller than wide, else itself (see the module's
    docstring); lesion masks go through it too, so they stay on their images."""
    return image.transpose(Image.Transpose.ROTATE_270) if image.height > image.width else image


InputSize = int | tuple[int, int]
"""A model's input frame: `size` for a square of size × size pixels, or `(height, width)`."""


def input_frame(size: InputSize | Sequence[int]) -> tuple[int, int]:
    """(height, width) of an input size: an int is a square; a pair (e.g. read back from JSON as a list) is
    (height, width). Anything else is a ValueError naming it."""
    if isinstance(size, int | np.integer) and not isinstance(size, bool) and size > 0:
        return int(size), int(size)
    if isinstance(size, tuple | list) and len(size) == 2:
        height, width = size
        if all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0 for v in (height, width)):
            return int(height), int(width)
    raise ValueError(f"an input size is a positive integer or (height, width) of positive integers, got {size!r}")


def meta_input_size(meta: dict) -> InputSize:
    """The input frame a weights JSON (or a run config's `train` block) declares: `image_size` (height), and
    `image_width` when it differs (a model trained at the images' own aspect). Validated by
    `dermai.weights.load_weights`."""
    width = meta.get("image_width")
    return input_size(int(meta["image_size"]), None if width is None else int(width))


def size_label(size: InputSize | Sequence[int]) -> str:
    """'96' for a square input, '120×160' (height × width) for another, as shown to users and in file names."""
    height, width = input_frame(size)
    return str(height) if height == width else f"{height}×{width}"


def to_image_orientation(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """A model-frame array (a Grad-CAM heatmap, (H, W) or (H, W, C)) turned back into the orientation of the
    width × height image it was made from: the inverse of `landscape`."""
    return np.ascontiguousarray(np.rot90(array, k=1)) if height > width else array


def resize_input(image: Image.Image, size: InputSize) -> np.ndarray:
    """An RGB PIL image as an (H, W, 3) uint8 array in the input frame `size` (`input_frame`): turned to
    landscape (`landscape`), then resized with antialiasing."""
    height, width = input_frame(size)
    if image.mode != "RGB":
        image = image.convert("RGB")
    image = landscape(image)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(image, dtype=np.uint8).copy()


def to_float_batch(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) → float32 (B, 3, H, W) in [0, 1], channels_last memory."""
    x = torch.as_tensor(np.array(pixels, copy=True)) if isinstance(pixels, np.ndarray) else pixels
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 pixels shaped (B, H, W, 3), got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] → normalised with per-channel mean/std."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def eval_batch(
    pixels: np.ndarray | torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Cached uint8 pixels → the model's input for evaluation and prediction (no augmentation)."""
    return normalize(to_float_batch(pixels), mean, std)


def shades_of_gray(x: torch.Tensor, p: int = 6) -> torch.Tensor:
    """Shades-of-Grey colour constancy (Finlayson & Trezzi 2004) on (B, 3, H, W) in [0, 1]: estimate the
    illuminant per channel as the Minkowski p-norm mean and rescale channels so it becomes neutral grey (a
    grey image is unchanged). Dermoscopes and cameras differ in colour cast; this removes a global one."""
    illuminant = x.clamp_min(0.0).pow(p).mean(dim=(2, 3), keepdim=True).pow(1.0 / p)  # (B, 3, 1, 1)
    norm = illuminant.norm(dim=1, keepdim=True)
    gain = norm / (math.sqrt(3.0) * illuminant.clamp_min(1e-6))
    return (x * gain).clamp(0.0, 1.0)
