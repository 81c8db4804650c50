"""Batched forward passes over cached pixels: logits and trunk features, in eval mode, no gradients.

Shared by validation during training, the evaluator and the OOD statistics so that all of them see the
same preprocessing (`dermai.preprocess.eval_batch`) and precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import torch

from dermai.config import IMAGENET_MEAN, IMAGENET_STD
from dermai.preprocess import eval_batch


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 (AVX512-BF16 or AMX), where bf16 autocast is ~3× fp32."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_bf16() -> bool:
    """True when the current CUDA device computes in bf16 (Ampere and newer)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def machine_compute() -> tuple[str | None, bool]:
    """(the GPU's name or None, whether the CPU has native bf16): what sets how fast training runs here."""
    return (torch.cuda.get_device_name() if torch.cuda.is_available() else None), cpu_supports_bf16()


def autocast_dtype(device_type: str, precision: str = "auto", training: bool = False) -> torch.dtype | None:
    """The autocast dtype for a device type and precision choice (auto | bf16 | fp32), None for fp32.

    On CUDA, "auto" means bf16 where the GPU has it. Without it (T4, V100) inference may use fp16, but
    training stays fp32: fp16 gradients underflow without a gradient scaler, and the trainer has none."""
    if precision == "fp32":
        return None
    if device_type == "cuda":
        if precision == "bf16" or cuda_bf16():
            return torch.bfloat16
        return None if training else torch.float16
    if precision == "bf16" or (precision == "auto" and cpu_supports_bf16()):
        return torch.bfloat16
    return None


def autocast_for(
    device: torch.device, precision: str = "auto", training: bool = False
) -> contextlib.AbstractContextManager:
    """The autocast context for a device and precision choice (see `autocast_dtype`); `training` for steps
    that compute gradients."""
    dtype = autocast_dtype(device.type, precision, training)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def normalisation(meta: Mapping) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a model's input is normalised with: the weights' own, else ImageNet's, as `load_weights`
    builds the network with. One rule for predict, evaluate and saliency, so none of them fails (or scores
    differently) on weights whose JSON leaves them out."""
    return tuple(meta.get("mean") or IMAGENET_MEAN), tuple(meta.get("std") or IMAGENET_STD)


@torch.no_grad()
def forward_pixels(
    model: torch.nn.Module,
    pixels: np.ndarray,
    batch_size: int = 128,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    precision: str = "auto",
    with_features: bool = False,
    tta: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (N, K) float32, and trunk features (N, 512) when asked, for uint8 pixels (N, H, W, 3).

    With `tta`, logits are averaged over the eight flips/90° rotations of each image (dermoscopy has no
    canonical orientation).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits_out, feats_out = [], []
    for start in range(0, len(pixels), batch_size):
        x = eval_batch(np.asarray(pixels[start : start + batch_size]), mean, std).to(device)
        views = dihedral_views(x) if tta else [x]
        with autocast_for(device, precision):
            logit_sum = None
            for i, view in enumerate(views):
                feats = model.features(view)
                logits = model.classifier(feats).float()
                logit_sum = logits if logit_sum is None else logit_sum + logits
                if with_features and i == 0:
                    feats_out.append(feats.float().cpu().numpy())
        logits_out.append((logit_sum / len(views)).cpu().numpy())
    model.train(was_training)
    logits = np.concatenate(logits_out) if logits_out else np.zeros((0, 0), np.float32)
    features = np.concatenate(feats_out) if with_features and feats_out else None
    return logits, features


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and 90° rotations of a (B, C, H, W) batch."""
    rotations = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    return rotations + [torch.flip(r, dims=(3,)) for r in rotations]


def softmax_np(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, computed stably."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def calibrated_probs(logits: np.ndarray, meta: dict) -> np.ndarray:
    """The probabilities a user sees: softmax(logits / T + log prior).

    A model trained with class-balanced sampling estimates p(dx | image) as if every diagnosis were equally
    common; adding the log of the training prior (`meta["log_prior"]`, Menon et al. 2021's post-hoc logit
    adjustment) restores the real base rates, and T (fitted on validation with that term) fixes confidence.
    """
    z = np.asarray(logits, dtype=np.float64) / float(meta.get("temperature") or 1.0)
    log_prior = meta.get("log_prior")
    return softmax_np(z + np.asarray(log_prior) if log_prior else z)


def class_log_prior(labels: np.ndarray, n_classes: int) -> list[float]:
    """log class frequencies of training labels (a class with none counts as one image): the term
    `calibrated_probs` adds to the logits of a model trained on class-balanced batches or a class-weighted
    loss, whose logits otherwise assume every class equally common."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(float)
    return np.log(np.maximum(counts, 1.0) / counts.sum()).tolist()


def malignant_probability(probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """p_malignant: the summed probability of mel, bcc and akiec, or a binary model's 'malignant'."""
    malignant = {"mel", "bcc", "akiec", "malignant"}
    columns = [i for i, name in enumerate(classes) if name in malignant]
    return np.clip(probs[:, columns].sum(axis=1), 0.0, 1.0)  # a sum of three may round past 1
