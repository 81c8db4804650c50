"""MixUp and CutMix for fine-tuning batches, kept consistent across the two SimCLR views.

Both blend each image with a partner image j (a random permutation of the batch) and its label with the
partner's, with a weight λ ~ Beta(α, α) drawn once per batch:

    MixUp  (Zhang et al. 2018):  x̃_i = λ·x_i + (1 − λ)·x_j
    CutMix (Yun et al. 2019):    x̃_i = x_i with a box of area ≈ (1 − λ)·H·W replaced by the same box of x_j;
                                 λ is then recomputed as 1 − (box area)/(H·W) after clipping to the image
    target:                      ỹ_i = λ·onehot(y_i) + (1 − λ)·onehot(y_j)

When both are on, each batch uses one of them, chosen with probability ½ (timm's default switch).

The joint loss needs both views of image i to remain a positive pair for NT-Xent. So view a of image i is
mixed with view a of image j and view b of i with view b of j, with the same λ and the same box: the two
views still show the same (mixed) content. Every random choice comes from the step's generator, so a run
is reproducible from its seed and resumes exactly; with both α at 0 nothing is drawn and training is
unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dermai.config import check_off_or_positive


def check_mixing(mixup_alpha: float, cutmix_alpha: float) -> None:
    """Refuse α values Beta(α, α) cannot use, naming the setting (0 turns a method off)."""
    check_off_or_positive("mixup_alpha", mixup_alpha)
    check_off_or_positive("cutmix_alpha", cutmix_alpha)


def _beta(alpha: float, gen: torch.Generator) -> float:
    """One draw of Beta(α, α), seeded from `gen` (torch has no generator-aware Beta sampler)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def cutmix_box(height: int, width: int, lam: float, gen: torch.Generator) -> tuple[int, int, int, int]:
    """A box (top, bottom, left, right) of about (1 − λ) of the image's area, centred uniformly at random and
    clipped to the image (so it may be smaller near an edge)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (1,), generator=gen, device=gen.device).item())
    cx = int(torch.randint(0, width, (1,), generator=gen, device=gen.device).item())
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, width)
    return top, bottom, left, right


def mix_views(
    views: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a fine-tuning batch. `views` is (2n, C, H, W): view a of n images, then view b of the same n;
    `labels` (n,) class indices. Returns the mixed views and (n, num_classes) soft targets. With both α 0
    the inputs come back with one-hot targets and nothing is drawn from `gen`."""
    n = len(labels)
    if views.shape[0] != 2 * n:
        raise ValueError(f"expected 2 views of {n} images, got a batch of {views.shape[0]}")
    targets = torch.nn.functional.one_hot(labels, num_classes).float()
    check_mixing(mixup_alpha, cutmix_alpha)
    methods = [name for name, alpha in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if alpha > 0]
    if not methods or n < 2:
        return views, targets
    if len(methods) == 2:
        method = methods[int(torch.randint(0, 2, (1,), generator=gen, device=gen.device).item())]
    else:
        method = methods[0]
    partner = torch.randperm(n, generator=gen, device=gen.device).to(views.device)
    both = torch.cat([partner, partner + n])  # view a pairs with view a, view b with view b
    if method == "mixup":
        lam = _beta(mixup_alpha, gen)
        mixed = lam * views + (1.0 - lam) * views[both]
    else:
        lam = _beta(cutmix_alpha, gen)
        height, width = views.shape[-2:]
        top, bottom, left, right = cutmix_box(height, width, lam, gen)
        mixed = views.clone()
        mixed[:, :, top:bottom, left:right] = views[both][:, :, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    partner = partner.to(targets.device)
    return mixed, lam * targets + (1.0 - lam) * targets[partner]
