"""Model weights on disk: `<name>.safetensors` (tensors, no pickle) beside `<name>.json` (what is needed to
use them: classes, input size, normalisation, temperature, thresholds, OOD threshold, provenance).

Both files are written to temporary names and renamed, so a crash never leaves half a model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dermai.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from dermai.data import atomic_target, write_json_atomic
from dermai.ensemble import EnsembleModel, is_image_size
from dermai.model import SimCLRResNet18

FORMAT = "dermai-weights/1"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "model.safetensors"
EXTRA_PREFIX = "extra."  # non-model tensors (e.g. OOD statistics) stored beside the model's
# The JSON's "model" fields that describe an ensemble or provenance rather than a ModelConfig.
ENSEMBLE_MODEL_FIELDS = ("init_checkpoint", "members", "member_image_sizes", "member_color_constancy")


class WeightsError(ValueError):
    """Missing, unreadable or inconsistent weights; the message names the file."""


@dataclass
class LoadedWeights:
    """A ready model plus its metadata and extra tensors."""

    model: SimCLRResNet18 | EnsembleModel
    meta: dict[str, Any]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    path: Path = DEFAULT_WEIGHTS


def resolve_weights_path(path: str | os.PathLike[str] | None = None) -> Path:
    """A .safetensors file from a file or folder path; default: the shipped `weights/model.safetensors`."""
    candidate = Path(path) if path else DEFAULT_WEIGHTS
    if candidate.is_dir():
        files = sorted(candidate.glob("*.safetensors"))
        if not files:
            raise WeightsError(f"{candidate}: no .safetensors file in this folder")
        candidate = files[0] if len(files) == 1 else candidate / "model.safetensors"
    if not candidate.is_file():
        raise WeightsError(f"{candidate}: weights file not found")
    return candidate


def save_weights(
    model: SimCLRResNet18 | EnsembleModel,
    path: str | os.PathLike[str],
    meta: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
    half: bool = False,
) -> Path:
    """Write model tensors (+ extra tensors) and the JSON metadata atomically."""
    target = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    for key, value in (extra or {}).items():
        tensors[EXTRA_PREFIX + key] = value.detach().cpu().float().contiguous()
    with atomic_target(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    write_json_atomic(target.with_suffix(".json"), {"format": FORMAT, **meta})
    return target


def read_meta(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON beside a weights file."""
    weights = resolve_weights_path(path)
    meta_path = weights.with_suffix(".json")
    try:
        return json.loads(meta_path.read_text())
    except FileNotFoundError as exc:
        raise WeightsError(f"{meta_path}: metadata JSON not found beside the weights") from exc
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{meta_path}: not valid JSON ({exc})") from exc


def load_weights(path: str | os.PathLike[str] | None = None) -> LoadedWeights:
    """Model in eval mode + metadata + extra tensors, read with safetensors (never torch.load)."""
    weights = resolve_weights_path(path)
    meta = read_meta(weights)
    for key in ("classes", "image_size"):
        if key not in meta:
            raise WeightsError(f"{weights.with_suffix('.json')}: missing field {key!r}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{weights}: unreadable safetensors file ({exc})") from exc
    extra = {k[len(EXTRA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    model_fields = meta.get("model", {})
    model_cfg = ModelConfig(**{k: v for k, v in model_fields.items() if k not in ENSEMBLE_MODEL_FIELDS})
    members = int(model_fields.get("members", 1))
    sizes = model_fields.get("member_image_sizes")
    if sizes is not None and (
        not isinstance(sizes, list) or len(sizes) != members or not all(is_image_size(s) for s in sizes)
    ):
        raise WeightsError(
            f"{weights.with_suffix('.json')}: field 'model.member_image_sizes' must list one positive size per"
            f" member ({members}), got {sizes!r}"
        )
    constancy = model_fields.get("member_color_constancy") or [model_cfg.color_constancy] * members
    if not isinstance(constancy, list) or len(constancy) != members or not all(isinstance(c, bool) for c in constancy):
        raise WeightsError(
            f"{weights.with_suffix('.json')}: field 'model.member_color_constancy' must list true or false per"
            f" member ({members}), got {constancy!r}"
        )
    mean, std = meta.get("mean") or IMAGENET_MEAN, meta.get("std") or IMAGENET_STD
    networks = [
        SimCLRResNet18(len(meta["classes"]), replace(model_cfg, color_constancy=c), mean, std) for c in constancy
    ]
    model: SimCLRResNet18 | EnsembleModel = EnsembleModel(networks, sizes) if members > 1 else networks[0]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{weights}: tensors do not fit the model described in its JSON ({exc})") from exc
    model.eval()
    return LoadedWeights(model, meta, extra, weights)
