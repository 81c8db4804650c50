"""Model weights on disk: `<name>.safetensors` (tensors, no pickle) beside `<name>.json` (what is needed to
use them: classes, input size, normalisation, temperature, thresholds, OOD threshold, provenance).

Both files are written to temporary names and renamed, so a crash never leaves half a model. The two renames
are still two steps: a crash between them leaves new tensors beside the old JSON (old classes, temperature,
thresholds, OOD statistics). So each save stamps one fresh pair id into both the safetensors header and the
JSON, and loading refuses a pair whose ids differ. A file from before pair ids (no id in it, e.g. the
committed weights) skips the check and loads as it always did.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from dermai.calibration import TEMPERATURE_BOUNDS
from dermai.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, is_number
from dermai.ensemble import EnsembleModel, is_image_size, is_input_size
from dermai.model import SimCLRResNet18
from dermai.safe_write import atomic_write_bytes, write_json_atomic

FORMAT = "dermai-weights/1"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "model.safetensors"
PAIR_ID = "pair_id"  # key of the id shared by a save's tensors header and JSON
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
        named = candidate / "model.safetensors"
        if len(files) > 1 and not named.is_file():  # else "FOLDER/model.safetensors: weights file not found"
            listed = ", ".join(f.name for f in files)
            raise WeightsError(
                f"{candidate}: holds several weights files ({listed}) and no model.safetensors; name the one to use"
            )
        candidate = files[0] if len(files) == 1 else named
    if not candidate.is_file():
        raise WeightsError(f"{candidate}: weights file not found")
    if candidate.suffix != ".safetensors":  # else "metadata JSON not found beside the weights" for a CSV
        raise WeightsError(f"{candidate}: not a weights file (name a .safetensors file, or a folder holding one)")
    return candidate


def save_weights(
    model: SimCLRResNet18 | EnsembleModel,
    path: str | os.PathLike[str],
    meta: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
    half: bool = False,
) -> Path:
    """Write model tensors (+ extra tensors) and the JSON metadata atomically, tensors first, both stamped with
    one fresh pair id so that a crash between the two renames is caught on load (see `check_pair`). Any
    `pair_id` in `meta` (e.g. from re-saving loaded weights) is replaced: reusing it would make new tensors
    look like they belong to the JSON they replace."""
    target = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    for key, value in (extra or {}).items():
        tensors[EXTRA_PREFIX + key] = value.detach().cpu().float().contiguous()
    pair_id = uuid.uuid4().hex
    # Serialised here and written by Python: safetensors' own writer reports a full disk as a SafetensorError,
    # which is no OSError, so the command printed a traceback instead of naming the file.
    atomic_write_bytes(target, save(tensors, metadata={"format": FORMAT, PAIR_ID: pair_id}))
    rest = {k: v for k, v in meta.items() if k != PAIR_ID}
    write_json_atomic(target.with_suffix(".json"), {"format": FORMAT, PAIR_ID: pair_id, **rest})
    return target


def tensors_pair_id(weights: Path) -> str | None:
    """The pair id in a safetensors file's header, or None for files saved before pair ids. Reads the header
    only, so checking a pair never loads the tensors a second time."""
    try:
        with safe_open(str(weights), "pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{weights}: unreadable safetensors file ({exc})") from exc
    return header.get(PAIR_ID)


def check_pair(weights: Path, meta: dict[str, Any]) -> None:
    """Refuse a JSON that was not saved together with these tensors (a save interrupted between its two
    renames leaves new tensors beside the old JSON, which would otherwise be served silently). Skipped
    when either side has no id: files written before pair ids, or a JSON rewritten by hand."""
    json_id = meta.get(PAIR_ID)
    if json_id is None:
        return
    tensors_id = tensors_pair_id(weights)
    if tensors_id is not None and tensors_id != json_id:
        raise WeightsError(
            f"{weights.with_suffix('.json')}: does not belong to {weights} (pair ids {json_id!r} and"
            f" {tensors_id!r} differ: a save was interrupted between the two files?); re-save or restore both"
            " files together"
        )


def read_meta(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON object beside a weights file; anything else (missing, not UTF-8, not JSON, not an object)
    is a WeightsError naming the file, so callers never meet a bare decoding error."""
    weights = resolve_weights_path(path)
    meta_path = weights.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except FileNotFoundError as exc:
        raise WeightsError(f"{meta_path}: metadata JSON not found beside the weights") from exc
    except OSError as exc:
        raise WeightsError(f"{meta_path}: unreadable ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise WeightsError(f"{meta_path}: not UTF-8 text ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise WeightsError(f"{meta_path}: expected a JSON object, got {_json_kind(meta)}")
    return meta


def _json_kind(value: Any) -> str:
    """A JSON value's type as the file's author would call it."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return kinds.get(type(value), "a number")


def model_fields(meta: dict[str, Any], meta_path: Path) -> tuple[ModelConfig, int]:
    """The network description of a weights JSON: its `model` block as a ModelConfig, and the member count.
    A block that is not an object, names a field ModelConfig lacks (e.g. from another tool or a newer
    version) or gives a non-integer member count is a WeightsError naming the file and the field."""
    block = meta.get("model", {})
    if not isinstance(block, dict):
        raise WeightsError(f"{meta_path}: field 'model' must be an object, got {_json_kind(block)}")
    known = {f.name for f in dataclasses.fields(ModelConfig)} | set(ENSEMBLE_MODEL_FIELDS)
    unknown = sorted(set(block) - known)
    if unknown:
        raise WeightsError(f"{meta_path}: unknown field 'model.{unknown[0]}' (known: {', '.join(sorted(known))})")
    members = block.get("members", 1)
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise WeightsError(f"{meta_path}: field 'model.members' must be a positive integer, got {members!r}")
    return ModelConfig(**{k: v for k, v in block.items() if k not in ENSEMBLE_MODEL_FIELDS}), members


def untrained_classifier(meta: dict[str, Any]) -> str | None:
    """Why these weights' classifier never learned from labels, or None when it did (or the JSON cannot
    tell). Trainer-written JSON records the planned `stages` and, once a fine-tuning epoch has been
    validated, that epoch's record (`stage`: finetune) in `val_metrics`: a pretraining-only run, or a run
    stopped before its first fine-tuning epoch finished, has a randomly drawn classifier whose probabilities
    mean nothing. JSON without `stages` (hand-made, older tools) is given the benefit of the doubt."""
    stages = meta.get("stages")
    if not isinstance(stages, list) or meta.get("ensemble"):
        return None  # an ensemble's members were each checked when it was built (`ensemble.check_members`)
    if "finetune" not in stages:
        return "pretrain only — no trained classifier"
    val = meta.get("val_metrics")
    if meta.get("status") == "stopped" and not (isinstance(val, dict) and val.get("stage") == "finetune"):
        return "stopped before fine-tuning finished an epoch — no trained classifier"
    return None


# Below this many validation images, tier cut-offs and their sensitivity/specificity are too rough to quote
# without saying so: at 200 images with HAM10000's 20% malignant, a sensitivity's 95% interval is about ±0.07.
FEW_VALIDATION_IMAGES = 200


def weak_validation(meta: dict[str, Any]) -> str | None:
    """Why these weights' validated figures (tier cut-offs, their sensitivity and specificity, calibration)
    should not be trusted, or None: a validation AUROC no better than chance, or too few validation images
    (`FEW_VALIDATION_IMAGES`; a quick training run validates on a handful). Read from `val_metrics`; JSON that
    does not record them (hand-made, older tools) gives None, as `untrained_classifier` does."""
    val = meta.get("val_metrics")
    if not isinstance(val, dict):
        return None
    auroc, n_val = val.get("val_auroc"), val.get("n_val")
    reasons = []
    if is_number(auroc) and auroc <= 0.5:
        reasons.append(f"their validation AUROC is {auroc:.3f}, no better than chance")
    if is_number(n_val) and n_val < FEW_VALIDATION_IMAGES:
        reasons.append(f"their cut-offs were set on only {int(n_val)} validation images")
    if not reasons:
        return None
    return "; ".join(reasons) + ", so their tiers and the sensitivity and specificity quoted for them are not reliable"


def temperature_at_bound(temperature: Any) -> bool:
    """Whether a fitted temperature sits on an end of the range calibration searches
    (`calibration.TEMPERATURE_BOUNDS`): it found no minimum (a tiny validation set, say), so the temperature
    and the ECE change it made mean nothing."""
    return is_number(temperature) and any(math.isclose(temperature, b, rel_tol=1e-3) for b in TEMPERATURE_BOUNDS)


def calibration_failure(temperature: Any, n_val: Any = None) -> str | None:
    """Why a calibration is none (its temperature on a search bound, with the validation images it had when
    known), or None when the temperature is inside the range; the one wording of Training, Home, Predict and
    Evaluation."""
    if not temperature_at_bound(temperature):
        return None
    images = f" ({n_val} images)" if isinstance(n_val, int) and not isinstance(n_val, bool) else ""
    return (
        "Calibration could not fit a temperature: it ended on the bound of its search "
        f"({TEMPERATURE_BOUNDS[0]:g} to {TEMPERATURE_BOUNDS[1]:g}). The validation set{images} may be too small"
    )


def failed_calibration(meta: dict[str, Any]) -> str | None:
    """`calibration_failure` of the weights' served temperature, with what it means for a reader of their
    scores; None when it was fitted (or the JSON records no temperature)."""
    val = meta.get("val_metrics") if isinstance(meta.get("val_metrics"), dict) else {}
    failure = calibration_failure(meta.get("temperature"), val.get("n_val"))
    if failure is None:
        return None
    return f"{failure}; p(malignant) and the probabilities are not calibrated: read them as a ranking, not as chances"


def _check_operating_points(points: Any, field: str, meta_path: Path) -> None:
    if points is None:
        return
    if not isinstance(points, dict) or not all(
        isinstance(points.get(name), dict) and is_number(points[name].get("threshold")) for name in ("refer", "urgent")
    ):
        raise WeightsError(
            f"{meta_path}: field {field!r} must hold 'refer' and 'urgent', each with a numeric 'threshold',"
            f" got {str(points)[:120]}"
        )


def check_serving_fields(meta: dict[str, Any], meta_path: Path) -> None:
    """Refuse, naming the field, a JSON whose serving settings (written by calibration, or by hand) would
    otherwise fail deep inside a prediction: temperature, log prior, operating points, OOD and context blocks.
    An empty `ood` or `context` block ({} or null) is no block, not an error: every reader (prediction, OOD
    checks, the context model, evaluate, the app's model card, recalibration) serves such weights without one,
    and calibration never writes one empty (it writes a full block or none)."""
    n = len(meta["classes"])
    temperature = meta.get("temperature")
    if temperature is not None and not (is_number(temperature) and temperature > 0):
        raise WeightsError(f"{meta_path}: field 'temperature' must be a number above 0, got {temperature!r}")
    prior = meta.get("log_prior")
    if prior is not None and not (isinstance(prior, list) and len(prior) == n and all(is_number(v) for v in prior)):
        raise WeightsError(
            f"{meta_path}: field 'log_prior' must list one number per class ({n}), got {str(prior)[:120]}"
        )
    _check_operating_points(meta.get("operating_points"), "operating_points", meta_path)
    ood = meta.get("ood")
    if ood and not (isinstance(ood, dict) and is_number(ood.get("threshold"))):
        raise WeightsError(f"{meta_path}: field 'ood' must hold a numeric 'threshold', got {str(ood)[:120]}")
    context = meta.get("context")
    if context:
        fields = context.get("fields") if isinstance(context, dict) else None
        if not (
            isinstance(fields, dict)
            and all(isinstance(f, dict) and isinstance(f.get("table"), dict) for f in fields.values())
            and all(is_number(f.get("weight")) for f in fields.values())
            and is_number(context.get("temperature"))
            and context["temperature"] > 0
        ):
            raise WeightsError(
                f"{meta_path}: field 'context' must hold 'fields' (each with a 'table' and a numeric 'weight') and"
                f" a 'temperature' above 0, got {str(context)[:120]}"
            )
        _check_operating_points(context.get("operating_points"), "context.operating_points", meta_path)


def load_weights(path: str | os.PathLike[str] | None = None) -> LoadedWeights:
    """Model in eval mode + metadata + extra tensors, read with safetensors (never torch.load). A JSON from
    another save than the tensors (pair ids differ) is a WeightsError naming both files."""
    weights = resolve_weights_path(path)
    meta = read_meta(weights)
    meta_path = weights.with_suffix(".json")
    check_pair(weights, meta)
    for key in ("classes", "image_size"):
        if key not in meta:
            raise WeightsError(f"{meta_path}: missing field {key!r}")
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise WeightsError(f"{meta_path}: field 'classes' must list the class names, got {classes!r}")
    if not is_image_size(meta["image_size"]):
        raise WeightsError(f"{meta_path}: field 'image_size' must be a positive integer, got {meta['image_size']!r}")
    if "image_width" in meta and not is_image_size(meta["image_width"]):
        raise WeightsError(
            f"{meta_path}: field 'image_width' must be a positive integer (the input's width),"
            f" got {meta['image_width']!r}"
        )
    check_serving_fields(meta, meta_path)
    model_cfg, members = model_fields(meta, meta_path)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{weights}: unreadable safetensors file ({exc})") from exc
    extra = {k[len(EXTRA_PREFIX) :]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    block = meta.get("model", {})
    sizes = block.get("member_image_sizes")
    if sizes is not None and (
        not isinstance(sizes, list) or len(sizes) != members or not all(is_input_size(s) for s in sizes)
    ):
        raise WeightsError(
            f"{meta_path}: field 'model.member_image_sizes' must list one positive size (or [height, width]) per"
            f" member ({members}), got {sizes!r}"
        )
    constancy = block.get("member_color_constancy") or [model_cfg.color_constancy] * members
    if not isinstance(constancy, list) or len(constancy) != members or not all(isinstance(c, bool) for c in constancy):
        raise WeightsError(
            f"{meta_path}: field 'model.member_color_constancy' must list true or false per"
            f" member ({members}), got {constancy!r}"
        )
    mean, std = meta.get("mean") or IMAGENET_MEAN, meta.get("std") or IMAGENET_STD
    try:
        networks = [SimCLRResNet18(len(classes), replace(model_cfg, color_constancy=c), mean, std) for c in constancy]
    except (TypeError, ValueError, RuntimeError) as exc:  # e.g. "arch": "vgg16", "feature_dim": "wide"
        raise WeightsError(f"{meta_path}: fields 'model', 'mean' or 'std' describe no usable network ({exc})") from exc
    model: SimCLRResNet18 | EnsembleModel = EnsembleModel(networks, sizes) if members > 1 else networks[0]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 300 else detail[:300] + "…"  # torch lists every key otherwise
        raise WeightsError(f"{weights}: tensors do not fit the model described in its JSON ({detail})") from exc
    model.eval()
    return LoadedWeights(model, meta, extra, weights)
