"""NT-Xent (SimCLR's contrastive loss) and the paper's joint loss, with two views per image.

The paper's code fed one view per image, so each sample had no positive: this one takes both views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dermai.config import check_off_or_positive


def nt_xent(
    z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.5, ids: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Normalised temperature-scaled cross-entropy (Chen et al. 2020, eq. 1).

    z_a[i] and z_b[i] are projections of two views of image i. With the 2N vectors
    :math:`z = [z_a; z_b]`, L2-normalised, and :math:`s_{ij} = z_i^\top z_j / \tau`, the loss of sample i
    whose other view is j(i) is

    .. math::  \ell_i = -\log \frac{\exp(s_{i,j(i)})}{\sum_{k \ne i,\, k \notin D(i)} \exp(s_{ik})}

    i.e. a classification of the positive among the other views, and the loss is the mean of :math:`\ell_i`
    over all 2N samples. D(i) holds the views of other copies of i's image: class-balanced fine-tuning batches
    are drawn with replacement, so one image can fill several rows, and its copies are no negatives (counted
    as such, the loss would push an image away from itself). `ids` (N,) names each row's image; without it
    every row is a different image and D(i) is empty. Computed in float32 even under bf16 autocast (the
    softmax over similarities loses too much precision in bf16).
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(f"nt_xent needs two (N, D) tensors of one shape, got {tuple(z_a.shape)}, {tuple(z_b.shape)}")
    n = z_a.shape[0]
    with torch.autocast(device_type=z_a.device.type, enabled=False):
        z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
        sim = z @ z.T / temperature
        sim.fill_diagonal_(float("-inf"))  # a sample is never its own negative
        positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        if ids is not None:
            sim = sim.masked_fill(_copies(ids, ids, positives), float("-inf"))
        return F.cross_entropy(sim, positives)


def _copies(local_ids: torch.Tensor, all_ids: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """(2n, 2N) mask of the views of the same image as each local view, its own positive excepted."""
    rows = torch.cat([local_ids, local_ids]).to(positives.device)
    columns = torch.cat([all_ids, all_ids]).to(positives.device)
    same = rows[:, None] == columns[None, :]
    same[torch.arange(len(rows), device=positives.device), positives] = False
    return same


def nt_xent_global(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    all_a: torch.Tensor,
    all_b: torch.Tensor,
    offset: int,
    temperature: float,
    ids: torch.Tensor | None = None,
    all_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """NT-Xent for one rank's samples against negatives gathered from every rank.

    z_a/z_b: this rank's N projections; all_a/all_b: every rank's (gathered with gradients); offset: where
    this rank's rows start in the gathered tensors; ids/all_ids: the images of this rank's and of every rank's
    rows (copies of one image are no negatives, as in `nt_xent`). Equals `nt_xent(all_a, all_b, ids=all_ids)`
    once averaged over ranks.
    """
    n, total = z_a.shape[0], all_a.shape[0]
    with torch.autocast(device_type=z_a.device.type, enabled=False):
        local = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
        bank = F.normalize(torch.cat([all_a, all_b]).float(), dim=1)
        sim = local @ bank.T / temperature
        rows = torch.arange(n, device=z_a.device)
        own = torch.cat([rows + offset, rows + offset + total])
        sim[torch.arange(2 * n, device=z_a.device), own] = float("-inf")
        positives = torch.cat([rows + offset + total, rows + offset])
        if ids is not None and all_ids is not None:
            sim = sim.masked_fill(_copies(ids, all_ids, positives), float("-inf"))
        return F.cross_entropy(sim, positives)


def check_focal_gamma(gamma: float) -> None:
    """Refuse a focal γ the loss cannot use (negative, NaN or infinite), naming the setting (0 = off)."""
    check_off_or_positive("focal_gamma", gamma)


def focal_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    r"""Focal loss (Lin et al. 2017), multi-class: cross-entropy scaled down on examples already learnt.

    With :math:`p` the softmax of the logits and :math:`y` the (one-hot, smoothed or mixed) target,
    :math:`p_t = \sum_k y_k p_k` is the probability the model gives the target, and

    .. math::  \ell_i = (1 - p_{t,i})^\gamma \, \mathrm{CE}_i

    so a well-classified image (p_t → 1) adds almost nothing and the hard ones — often the rare classes
    the balanced accuracy counts — drive the gradient. γ = 0 is plain cross-entropy (the same reduction:
    with class weights, the weighted mean). The factor carries no gradient of its own (it is detached),
    which keeps the loss's gradient a re-weighted cross-entropy one.
    """
    check_focal_gamma(gamma)
    ce = F.cross_entropy(logits, targets, weight=class_weights, label_smoothing=label_smoothing, reduction="none")
    if gamma > 0:
        probs = logits.detach().softmax(1)
        if targets.ndim == 1:
            p_t = probs.gather(1, targets[:, None]).squeeze(1)
        else:
            p_t = (probs * targets).sum(1)
        ce = (1.0 - p_t).clamp(min=0.0).pow(gamma) * ce
    if class_weights is not None and targets.ndim == 1:
        return ce.sum() / class_weights[targets].sum()
    return ce.mean()


def distill_targets(labels: torch.Tensor, teacher_probs: torch.Tensor, weight: float) -> torch.Tensor:
    r"""Knowledge-distillation targets (Hinton et al. 2015) as soft labels for the cross-entropy:

    .. math::  y = (1 - w)\,\mathrm{onehot}(label) + w\,p_{teacher}

    so w = 0 is the plain label and w = 1 the teacher alone. The teacher's probabilities carry what it learnt
    about how alike the classes look (a melanoma that resembles a naevus), which a one-hot label cannot."""
    onehot = F.one_hot(labels, teacher_probs.shape[1]).to(teacher_probs.dtype)
    return (1.0 - weight) * onehot + weight * teacher_probs


def check_mask_weight(weight: float, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
    """Refuse a lesion-mask loss weight that is negative, NaN or infinite, naming the setting (0 = off), or
    one set beside MixUp or CutMix (a mixed image has no one mask)."""
    check_off_or_positive("mask_weight", weight)
    if weight > 0 and (mixup_alpha > 0 or cutmix_alpha > 0):
        raise ValueError("mask_weight cannot be combined with MixUp or CutMix (a mixed image has no one mask)")


def lesion_mask_loss(mask_logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    r"""Auxiliary segmentation loss: binary cross-entropy of per-cell lesion logits against the share of
    each cell the lesion mask covers.

    `mask_logits` (B, 1, h, w) come from `LesionMaskHead` on the trunk's last feature map; `masks`
    (B, 1, H, W) in [0, 1] are the augmented lesion masks at the input's size. The target of cell c is
    :math:`m_c`, the mean of the mask over the input pixels c covers (adaptive area pooling: the input split
    evenly into h × w windows, which are the trunk's 32-pixel cells at sizes that are multiples of 32, such as
    96; at other sizes, e.g. 144 px → 5 × 5 cells, a window is off its cell by up to half a cell; kept so
    recorded runs repeat), so

    .. math::  \ell = -\frac{1}{B h w} \sum_c m_c \log \sigma(s_c) + (1 - m_c) \log (1 - \sigma(s_c))

    Soft targets keep the border cells honest at a coarse (3×3 at 96 px) resolution. Float32 even under
    bf16 autocast."""
    if mask_logits.ndim != 4 or masks.ndim != 4 or mask_logits.shape[:2] != masks.shape[:2]:
        raise ValueError(
            f"lesion_mask_loss needs (B, 1, h, w) logits and (B, 1, H, W) masks, got {tuple(mask_logits.shape)}, "
            f"{tuple(masks.shape)}"
        )
    with torch.autocast(device_type=mask_logits.device.type, enabled=False):
        target = F.adaptive_avg_pool2d(masks.float(), mask_logits.shape[-2:])
        return F.binary_cross_entropy_with_logits(mask_logits.float(), target)


def joint_loss(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    labels: torch.Tensor,
    ntxent: torch.Tensor,
    lambda_ntxent: float = 0.5,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's joint objective: CE (on both views) + λ·NT-Xent. Returns (total, ce).

    `labels` are class indices (n,) or, for mixed batches (dermai.mixing), class probabilities (n, K).
    `focal_gamma` > 0 swaps the CE for the focal loss (`focal_cross_entropy`); 0 is the paper's CE."""
    logits = torch.cat([logits_a, logits_b]).float()
    targets = torch.cat([labels, labels])
    ce = focal_cross_entropy(logits, targets, focal_gamma, class_weights, label_smoothing)
    return ce + lambda_ntxent * ntxent, ce
