"""Training augmentation on batched tensors.

Training reads cached uint8 pixels (B, H, W, 3), so augmentation runs on whole batches: one affine warp
(`affine_grid` + `grid_sample`) does random-resized-crop, rotation and flips for every sample at once, and
the colour and dermoscopy operations are per-sample tensor arithmetic. On a 2-core CPU this replaces the
per-image PIL pipeline (`paper_transform`, kept as the reference and benchmark baseline), which would
otherwise take longer than the model step. All randomness comes from one `torch.Generator`, so a seed
reproduces a batch exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms

from dermai.config import AugmentConfig, check_augment
from dermai.preprocess import InputSize, input_frame, normalize, shades_of_gray, to_float_batch

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 times before falling back
# Images augmented together: the ~20 elementwise passes then stay in CPU cache instead of streaming the
# whole batch through memory each time (measured 1.5× faster at 64 px, 3× at 224 px than whole batches).
_CHUNK = 8


def _uniform(
    low: float, high: float, shape: Sequence[int], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator, device=device)


def _bernoulli(p: float, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) < p


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    """(B,) → (B, 1, 1, 1) for broadcasting over (B, C, H, W)."""
    return v.view(-1, 1, 1, 1)


def _apply_where(mask: torch.Tensor, x: torch.Tensor, op: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """In place: replace the samples where `mask` is set by `op` of them (ops are per-sample)."""
    if bool(mask.any()):
        x[mask] = op(x[mask])


# ----------------------------------------------------------------------------------------------------
# Pure per-sample operations on float (B, 3, H, W) in [0, 1]
# ----------------------------------------------------------------------------------------------------


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma (B, 1, H, W) of an RGB batch."""
    w = torch.tensor(_GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale intensities by a per-sample factor (B,), as torchvision."""
    return (x * _per_sample(factor)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean grey level by a per-sample factor (B,), as torchvision."""
    f = _per_sample(factor)
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return (x * f).add_((1 - f) * mean).clamp_(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its grayscale version by a per-sample factor (B,), as torchvision."""
    f = _per_sample(factor)
    return (x * f).add_(grayscale(x).mul_(1 - f)).clamp_(0.0, 1.0)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift hue by a per-sample `shift` (B,) in torchvision units (fraction of the wheel, |shift| ≤ 0.5).

    Same result as torchvision's RGB → HSV → RGB, written to keep value (max) and chroma (max - min) and
    only re-place the channels: channel n ∈ {R: 5, G: 3, B: 1} becomes max - chroma·clamp(min(k, 4 - k), 0, 1)
    with k = (n + 6·hue) mod 6. The hue search runs on single-channel planes and avoids max-with-indices
    and remainder, which are slow on CPU.
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    maxc = x.amax(dim=1, keepdim=True)
    chroma = maxc - x.amin(dim=1, keepdim=True)
    inv = 1.0 / chroma.clamp_min(1e-12)
    hue6 = torch.where(
        r == maxc, (g - b) * inv, torch.where(g == maxc, (b - r) * inv + 2.0, (r - g) * inv + 4.0)
    )  # hue in sixths of the wheel, in [-1, 5)
    hue6 = hue6.add_(6.0 * _per_sample(shift) + 6.0)  # ≥ 0, so fmod below is a true modulo
    n = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = torch.fmod(n + hue6, 6.0)
    return maxc - chroma * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (B,): one grouped conv per axis, reflect padding."""
    batch, channels, height, width = x.shape
    half = kernel_size // 2
    t = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma.view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    groups = batch * channels
    y = x.reshape(1, groups, height, width)
    y = F.conv2d(F.pad(y, (half, half, 0, 0), mode="reflect"), kernel.view(groups, 1, 1, -1), groups=groups)
    y = F.conv2d(F.pad(y, (0, 0, half, half), mode="reflect"), kernel.view(groups, 1, -1, 1), groups=groups)
    return y.view(batch, channels, height, width)


def vignette(
    x: torch.Tensor, strength: torch.Tensor, radius: float | torch.Tensor = 1.0, softness: float = 0.15
) -> torch.Tensor:
    """Dermoscope field-of-view vignette: darken outside a centred circle by `strength` (B,) in [0, 1].

    `radius` is in half-heights (1.0 touches the top and bottom edges; a square's corners are at √2); the
    edge ramps from no darkening to full `strength` over `softness`, like the soft black rim of a contact
    dermoscope. The circle is round in pixels, also in a non-square frame.
    """
    _, _, height, width = x.shape
    ys = torch.linspace(-1.0, 1.0, height, dtype=x.dtype, device=x.device).view(height, 1)
    xs = torch.linspace(-1.0, 1.0, width, dtype=x.dtype, device=x.device).view(1, width) * (width / height)
    dist = torch.sqrt(xs**2 + ys**2)  # (H, W)
    radius_t = torch.as_tensor(radius, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    ramp = ((dist - radius_t) / softness).clamp(0.0, 1.0)
    return x * (1.0 - _per_sample(strength).clamp(0.0, 1.0) * ramp)


def add_hairs(
    x: torch.Tensor, generator: torch.Generator | None = None, n_hairs: int = 6, thickness: int = 1
) -> torch.Tensor:
    """Draw `n_hairs` thin dark curved hairs (quadratic Bézier curves) on every image.

    Points along each curve are splatted into a mask (dense enough to leave no gaps), optionally thickened
    with a max-pool of odd size `thickness`, then the image is blended towards a dark brown hair colour.
    Only darkens; positions, shapes and darkness come from `generator`.
    """
    if thickness < 1 or thickness % 2 == 0:
        raise ValueError(f"thickness must be a positive odd number of pixels, got {thickness}")
    batch, _, height, width = x.shape
    dev = x.device
    n_points = 2 * max(height, width)
    centre = _uniform(-1.0, 1.0, (batch, n_hairs, 2), generator, dev)
    angle = _uniform(0.0, math.pi, (batch, n_hairs), generator, dev)
    length = _uniform(0.5, 1.5, (batch, n_hairs, 1), generator, dev)
    bend = _uniform(-0.3, 0.3, (batch, n_hairs, 1), generator, dev) * length
    darkness = _uniform(0.6, 0.95, (batch, n_hairs), generator, dev)
    direction = torch.stack([angle.cos(), angle.sin()], dim=-1)
    normal = torch.stack([-angle.sin(), angle.cos()], dim=-1)
    p0, p2 = centre - 0.5 * length * direction, centre + 0.5 * length * direction
    p1 = centre + bend * normal
    t = torch.linspace(0.0, 1.0, n_points, dtype=x.dtype, device=dev).view(1, 1, -1, 1)
    pts = (1 - t) ** 2 * p0.unsqueeze(2) + 2 * (1 - t) * t * p1.unsqueeze(2) + t**2 * p2.unsqueeze(2)
    col = ((pts[..., 0] + 1) * 0.5 * width - 0.5).round().long()
    row = ((pts[..., 1] + 1) * 0.5 * height - 0.5).round().long()
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    sample = torch.arange(batch, device=dev).view(-1, 1, 1).expand_as(col)
    values = darkness.unsqueeze(-1).expand_as(col)
    mask = torch.zeros(batch, height * width, dtype=x.dtype, device=dev)
    mask.index_put_((sample[inside], (row * width + col)[inside]), values[inside], accumulate=False)
    mask = mask.view(batch, 1, height, width)
    if thickness > 1:
        mask = F.max_pool2d(mask, thickness, stride=1, padding=thickness // 2)
    hair_colour = torch.tensor([0.10, 0.07, 0.05], dtype=x.dtype, device=dev).view(1, 3, 1, 1)
    return torch.lerp(x, hair_colour.expand_as(x), mask)


# ----------------------------------------------------------------------------------------------------
# The batched augmenter
# ----------------------------------------------------------------------------------------------------


class BatchAugmenter:
    """The configured augmentation applied to a whole batch of cached uint8 pixels at once.

    Order: colour constancy (whole image; a model fine-tuned with it also applies it itself to every input,
    so validation, evaluation and prediction see it too) → one affine warp (random resized
    crop, flips, rotation about the crop centre; reflection padding so rotated corners show skin, not
    black) → hairs → vignette (artefacts in the scene, so they get colour-jittered too) → brightness,
    contrast, saturation, hue → grayscale → blur → normalise. Output is float32 (B, 3, H, W) in the input
    frame `out_size` (an int: a square), normalised with cfg.mean/std, channels_last. The warp samples
    bilinearly without antialiasing, so the cache should be at (or near) the training size and aspect.
    """

    def __init__(self, cfg: AugmentConfig, out_size: InputSize) -> None:
        self.cfg = check_augment(cfg)
        self.out_size = out_size
        self.out_height, self.out_width = input_frame(out_size)
        short = min(self.out_height, self.out_width)
        sigma_max = max(cfg.blur_sigma)
        self.blur_kernel = min(2 * math.ceil(3.0 * sigma_max) + 1, 2 * ((short - 1) // 2) + 1)
        self.hair_thickness = 1 + 2 * (short // 160)  # ~1 px at 64/128 px, 3 px at 224 px

    def _crop_boxes(
        self, batch: int, height: int, width: int, generator: torch.Generator | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample crop width/height (fractions of the image) and centre (normalised coordinates).

        torchvision RandomResizedCrop semantics: area fraction uniform in crop_scale, aspect ratio
        log-uniform in crop_ratio, up to 10 tries for a box that fits, otherwise the whole image; the box
        position is uniform over the places it fits. The ratio is relative to the output's aspect (width /
        height), so a square output draws torchvision's boxes and a 4:3 one boxes around 4:3.
        """
        cfg = self.cfg
        shape = (batch, _CROP_ATTEMPTS)
        area = _uniform(cfg.crop_scale[0], cfg.crop_scale[1], shape, generator, device)
        log_ratio = _uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), shape, generator, device)
        ratio = log_ratio.exp() * (self.out_width / self.out_height)
        w = torch.sqrt(area * ratio * height / width)
        h = torch.sqrt(area / ratio * width / height)
        fits = (w <= 1.0) & (h <= 1.0)
        first = fits.int().argmax(dim=1, keepdim=True)
        found = fits.any(dim=1)
        ones = torch.ones(batch, dtype=w.dtype, device=device)
        w = torch.where(found, w.gather(1, first).squeeze(1), ones)
        h = torch.where(found, h.gather(1, first).squeeze(1), ones)
        cx = (1.0 - w) * _uniform(-1.0, 1.0, (batch,), generator, device)
        cy = (1.0 - h) * _uniform(-1.0, 1.0, (batch,), generator, device)
        return w, h, cx, cy

    def _warp(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Crop, flip and rotate every sample (all its channels) with one affine_grid + grid_sample.

        theta maps output to input coordinates: input = centre + S · F · A⁻¹ · R · A · output, i.e. the crop
        (scale S) is resized to the output, flipped (F), then rotated (R), as the torchvision pipeline. A
        scales the normalised coordinates to the output's aspect (width / height, 1 for a square), so a
        non-square frame rotates as pixels do, not as the [-1, 1]² square they are indexed by.
        """
        cfg = self.cfg
        batch, _, height, width = x.shape
        dev = x.device
        w, h, cx, cy = self._crop_boxes(batch, height, width, generator, dev)
        angle = torch.deg2rad(_uniform(-cfg.rotation_degrees, cfg.rotation_degrees, (batch,), generator, dev))
        fx = 1.0 - 2.0 * _bernoulli(cfg.hflip_p, batch, generator, dev).to(x.dtype)
        fy = 1.0 - 2.0 * _bernoulli(cfg.vflip_p, batch, generator, dev).to(x.dtype)
        cos, sin = angle.cos(), angle.sin()
        aspect = self.out_width / self.out_height
        theta = torch.stack(
            [
                torch.stack([w * fx * cos, -w * fx * sin / aspect, cx], dim=1),
                torch.stack([h * fy * sin * aspect, h * fy * cos, cy], dim=1),
            ],
            dim=1,
        )
        frame = [batch, x.shape[1], self.out_height, self.out_width]
        grid = F.affine_grid(theta, frame, align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _jitter(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """ColorJitter with per-sample factors (fixed order brightness → contrast → saturation → hue)."""
        cfg = self.cfg
        batch, dev = x.shape[0], x.device
        for amount, op in (
            (cfg.brightness, adjust_brightness),
            (cfg.contrast, adjust_contrast),
            (cfg.saturation, adjust_saturation),
        ):
            if amount > 0:
                x = op(x, _uniform(max(0.0, 1.0 - amount), 1.0 + amount, (batch,), generator, dev))
        if cfg.hue > 0:
            x = adjust_hue(x, _uniform(-cfg.hue, cfg.hue, (batch,), generator, dev))
        return x

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (B, H, W, 3) → augmented, normalised float32 (B, 3, out H, out W), channels_last."""
        return self.with_masks(pixels, None, generator)[0]

    def with_masks(
        self, pixels: torch.Tensor, masks: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As `__call__`, and each image's lesion mask, uint8 (B, H, W), given the same crop, flips and
        rotation: (images, masks float32 (B, 1, out, out) in [0, 1], or None without masks). The random draws
        are the same with or without masks, so the images are too."""
        if pixels.dtype != torch.uint8:
            raise ValueError(f"expected uint8 pixels, got {pixels.dtype}")
        if masks is not None and (masks.dtype != torch.uint8 or masks.shape != pixels.shape[:3]):
            raise ValueError(
                f"expected uint8 masks shaped {tuple(pixels.shape[:3])}, got {masks.dtype} {tuple(masks.shape)}"
            )
        # A GPU wants the whole batch in each kernel; a CPU wants cache-sized chunks.
        chunk = max(1, _CHUNK if pixels.device.type == "cpu" else len(pixels))
        mask_parts = masks.split(chunk) if masks is not None else [None] * len(pixels.split(chunk))
        parts = [self._augment(part, generator, m) for part, m in zip(pixels.split(chunk), mask_parts, strict=True)]
        out = torch.cat([x for x, _ in parts]).contiguous(memory_format=torch.channels_last)
        return out, (torch.cat([m for _, m in parts]) if masks is not None else None)

    def _augment(
        self, pixels: torch.Tensor, generator: torch.Generator | None, masks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.cfg
        x = to_float_batch(pixels).contiguous()  # grid_sample is faster on NCHW than channels_last
        batch, dev = x.shape[0], x.device
        if cfg.color_constancy:
            x = shades_of_gray(x)
        if masks is not None:  # a fourth channel through the same warp, split off before any colour operation
            x = torch.cat([x, masks.unsqueeze(1).to(x.dtype).div_(255.0)], dim=1)
        x = self._warp(x, generator)
        warped_masks = None
        if masks is not None:
            x, warped_masks = x[:, :3].contiguous(), x[:, 3:].contiguous()
        if cfg.hair_p > 0:
            hairy = _bernoulli(cfg.hair_p, batch, generator, dev)
            _apply_where(hairy, x, lambda s: add_hairs(s, generator, thickness=self.hair_thickness))
        if cfg.vignette_p > 0:
            dark = _bernoulli(cfg.vignette_p, batch, generator, dev)
            strength = _uniform(0.6, 1.0, (batch,), generator, dev)
            radius = _uniform(0.9, 1.3, (batch,), generator, dev)
            _apply_where(dark, x, lambda s: vignette(s, strength[dark], radius[dark]))
        x = self._jitter(x, generator)
        if cfg.grayscale_p > 0:
            gray = _bernoulli(cfg.grayscale_p, batch, generator, dev)
            _apply_where(gray, x, lambda s: grayscale(s).expand(-1, 3, -1, -1))
        if cfg.blur_p > 0:
            blurred = _bernoulli(cfg.blur_p, batch, generator, dev)
            sigma = _uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], (batch,), generator, dev)
            _apply_where(blurred, x, lambda s: gaussian_blur(s, sigma[blurred], self.blur_kernel))
        return normalize(x, cfg.mean, cfg.std), warped_masks


def simclr_views(
    pixels: torch.Tensor, augmenter: BatchAugmenter, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of each image (the SimCLR positive pair)."""
    return augmenter(pixels, generator), augmenter(pixels, generator)


# ----------------------------------------------------------------------------------------------------
# The paper's per-image reference pipeline and previews for the app
# ----------------------------------------------------------------------------------------------------


def paper_transform(cfg: AugmentConfig, out_size: InputSize) -> transforms.Compose:
    """The paper's per-image PIL pipeline (slow reference / benchmark baseline for BatchAugmenter)."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(out_size, scale=cfg.crop_scale, ratio=cfg.crop_ratio),
            transforms.RandomHorizontalFlip(cfg.hflip_p),
            transforms.RandomVerticalFlip(cfg.vflip_p),
            transforms.RandomRotation(cfg.rotation_degrees),
            transforms.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue),
            transforms.ToTensor(),
            transforms.Normalize(cfg.mean, cfg.std),
        ]
    )


def denormalize_to_uint8(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised float (B, 3, H, W) → displayable uint8 (B, H, W, 3)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    unit = (x * s + m).clamp(0.0, 1.0)
    return (unit * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def preview_pairs(
    pixels: np.ndarray, cfg: AugmentConfig, out_size: InputSize, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(original (H, W, 3), augmented (out, out, 3)) uint8 pairs, reproducible from `seed`."""
    augmenter = BatchAugmenter(cfg, out_size)
    generator = torch.Generator().manual_seed(seed)
    after = denormalize_to_uint8(augmenter(torch.tensor(pixels), generator), cfg.mean, cfg.std)
    return [(before, aug) for before, aug in zip(pixels, after, strict=True)]


def preview_masks(
    pixels: np.ndarray, masks: np.ndarray, cfg: AugmentConfig, out_size: InputSize, seed: int
) -> np.ndarray:
    """Lesion masks uint8 (B, H, W) warped as `preview_pairs` with the same seed warps their images: boolean
    (B, out, out), what the lesion-mask loss (`--mask-weight`) asks the model to find in each augmented image."""
    augmenter = BatchAugmenter(cfg, out_size)
    generator = torch.Generator().manual_seed(seed)
    _, warped = augmenter.with_masks(torch.tensor(pixels), torch.tensor(masks), generator)
    assert warped is not None
    return (warped[:, 0] >= 0.5).numpy()


def preview_simclr_pairs(
    pixels: np.ndarray, cfg: AugmentConfig, out_size: InputSize, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(view a, view b) uint8 (out, out, 3) pairs — what SimCLR treats as the same image."""
    augmenter = BatchAugmenter(cfg, out_size)
    generator = torch.Generator().manual_seed(seed)
    view_a, view_b = simclr_views(torch.tensor(pixels), augmenter, generator)
    a = denormalize_to_uint8(view_a, cfg.mean, cfg.std)
    b = denormalize_to_uint8(view_b, cfg.mean, cfg.std)
    return list(zip(a, b, strict=True))
