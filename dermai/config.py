"""Configuration: one dataclass per concern.

Defaults are the paper's values (SimCLR ResNet-18, CE + NT-Xent joint loss) unless a comment says why not.
Every field can be overridden from the CLI and the app; `to_dict`/`from_dict` round-trip them through JSON
so a run folder's `config.json` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# The compute precisions (`dermai.inference.autocast_for`): auto = bf16 on CPUs that have it, AMP on CUDA.
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class DataConfig:
    """Where the images are and how they are split."""

    data_dir: str | None = None  # None: DERMAI_DATA > ./data/ham10000 > ../shared/data/ham10000
    manifest: str | None = None  # a split manifest CSV (image_id,split); None: computed from the seed
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    label_fraction: float = 1.0  # share of training labels kept (label-efficiency regime)
    limit: int | None = None  # use only this many images (stratified), for quick runs and tests
    cache_dir: str | None = None  # None: DERMAI_CACHE or ~/.cache/dermai


@dataclass
class AugmentConfig:
    """The paper's supervised augmentation pipeline (torchvision semantics)."""

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333333333333)
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    rotation_degrees: float = 30.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.2
    grayscale_p: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    # Dermoscopy-specific options (probabilities; 0 = off).
    vignette_p: float = 0.0
    hair_p: float = 0.0
    # Shades-of-Grey colour constancy. For fine-tuning it is also part of the model (ModelConfig), so that
    # validation, evaluation and prediction see it too; SimCLR views get it from the augmenter alone.
    color_constancy: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def simclr_augment_config() -> AugmentConfig:
    """SimCLR two-view augmentation tuned for dermoscopy: stronger crops, both flips, rotations,
    modest hue (colour carries diagnostic signal), optional grayscale and blur."""
    return AugmentConfig(
        crop_scale=(0.3, 1.0),
        hue=0.05,
        brightness=0.4,
        contrast=0.4,
        saturation=0.3,
        grayscale_p=0.1,
        blur_p=0.2,
        rotation_degrees=180.0,
        vignette_p=0.2,
        hair_p=0.1,
    )


def check_off_or_positive(name: str, value: float) -> None:
    """Refuse a loss or mixing strength that is negative, NaN or infinite, naming the setting (0 = off)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a number ≥ 0 (0 = off), got {value!r}")


def check_augment(cfg: AugmentConfig) -> AugmentConfig:
    """Refuse settings the augmenter cannot apply, naming the field (probabilities outside [0, 1], a range
    whose low end is above its high end, …); returns `cfg` unchanged."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        numbers = value if isinstance(value, tuple) else (value,)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
            raise ValueError(f"{f.name} must be finite numbers, got {value}")
        if f.name.endswith("_p") and not 0.0 <= value <= 1.0:
            raise ValueError(f"{f.name} must be a probability in [0, 1], got {value}")
        if f.name in ("crop_scale", "crop_ratio", "blur_sigma"):
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ValueError(f"{f.name} must be two numbers 0 < low ≤ high, got {value}")
    if cfg.crop_scale[1] > 1.0:
        raise ValueError(f"crop_scale is a fraction of the image area, at most 1, got {cfg.crop_scale}")
    for name in ("brightness", "contrast", "saturation", "rotation_degrees"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be 0 or more, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5] (a fraction of the colour wheel), got {cfg.hue}")
    if len(cfg.mean) != 3 or len(cfg.std) != 3 or min(cfg.std) <= 0:
        raise ValueError(f"mean and std need three values each, std above 0; got {cfg.mean}, {cfg.std}")
    return cfg


def _parse_value(text: str, default: Any, name: str) -> Any:
    """One override's value, read as the type of the field's default."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(f"{name} is true or false, got {text!r}")
        return lowered in ("true", "1", "yes", "on")
    if isinstance(default, tuple):
        parts = [part for part in text.replace(" ", "").split(",") if part]
        if len(parts) != len(default):
            raise ValueError(f"{name} takes {len(default)} comma-separated numbers, got {text!r}")
        return tuple(_parse_value(part, default[0], name) for part in parts)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} is a number, got {text!r}") from None


def override_augment(cfg: AugmentConfig, items: list[str] | tuple[str, ...], flag: str = "--augment") -> AugmentConfig:
    """`cfg` with KEY=VALUE overrides applied (`hair_p=0.2`, `crop_scale=0.5,1.0`, `color_constancy=true`),
    checked as a whole. Errors name the flag and the item, so a typo never trains with a silent default."""
    defaults = to_dict(cfg)
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not text.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE, e.g. hair_p=0.2")
        if key not in defaults:
            raise ValueError(f"{flag} {item!r}: unknown field {key!r}; fields: {', '.join(defaults)}")
        try:
            changes[key] = _parse_value(text, getattr(cfg, key), key)
        except ValueError as exc:
            raise ValueError(f"{flag} {item!r}: {exc}") from None
    try:
        return check_augment(dataclasses.replace(cfg, **changes))
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def augment_overrides(cfg: AugmentConfig, base: AugmentConfig) -> list[str]:
    """The KEY=VALUE items that turn `base` into `cfg` (what the app passes to `--augment`), fields in order."""
    items = []
    for f in dataclasses.fields(cfg):
        value, default = getattr(cfg, f.name), getattr(base, f.name)
        if value != default:
            text = ",".join(repr(float(v)) for v in value) if isinstance(value, tuple) else str(value).lower()
            items.append(f"{f.name}={text}")
    return items


@dataclass
class ModelConfig:
    """SimCLR ResNet-18: trunk, projection head 512→512→128, classifier on the 512-d trunk features."""

    arch: str = "resnet18"
    feature_dim: int = 512
    projection_hidden: int = 512
    projection_dim: int = 128
    init_checkpoint: str | None = None  # a local torchvision-format resnet18 state dict (optional)
    # Shades-of-Grey colour constancy on every input, inside the model: the trainer sets it from the
    # fine-tuning augmentation's `color_constancy`, so no path (validation, evaluation, prediction, Grad-CAM,
    # OOD) can forget it.
    color_constancy: bool = False


@dataclass
class TrainConfig:
    """Optimisation for both stages. Paper: AdamW lr 1e-3, wd 1e-4, batch 64, λ=0.5, τ=0.5, 224 px."""

    image_size: int = 224
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pretrain_epochs: int = 100
    finetune_epochs: int = 50
    warmup_epochs: float = 0.0
    lambda_ntxent: float = 0.5
    temperature: float = 0.5
    label_smoothing: float = 0.0
    focal_gamma: float = 0.0  # focal loss γ in fine-tuning (dermai.losses.focal_cross_entropy); 0 = the paper's CE
    # Weight of the auxiliary lesion-mask loss in fine-tuning (dermai.losses.lesion_mask_loss), which needs
    # <data>/masks/<image_id>_segmentation.png for every image; 0 = off (the paper uses no masks).
    mask_weight: float = 0.0
    # MixUp / CutMix on fine-tuning batches (dermai.mixing): Beta(α, α) mixing weights; 0 = off (the paper
    # uses neither). Both on: each batch uses one of them at random.
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    balanced_sampling: bool = True
    early_stopping_patience: int = 0  # epochs without val AUROC improvement; 0 = off
    # Stochastic weight averaging (Izmailov et al. 2018): average the weights at the end of each of the last
    # `swa_epochs` fine-tuning epochs; the average competes with the best epoch on validation AUROC.
    swa_epochs: int = 0  # 0 = off
    swa_lr: float | None = None  # constant lr of those epochs; None = the cosine schedule runs on through them
    num_workers: int = 0
    precision: str = "auto"  # auto | bf16 | fp32 (auto: bf16 on CPUs that support it, AMP on CUDA)
    seed: int = 0
    log_every: int = 10  # steps between metric lines


@dataclass
class RunConfig:
    """Everything a run needs, written to the run folder as config.json."""

    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    simclr_augment: AugmentConfig = field(default_factory=simclr_augment_config)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stage: str = "both"  # pretrain | finetune | both


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def _build(cls: type, values: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"unknown config field {cls.__name__}.{key}")
        default = getattr(cls(), key) if key not in _NESTED.get(cls.__name__, {}) else None
        nested = _NESTED.get(cls.__name__, {}).get(key)
        if nested is not None:
            kwargs[key] = _build(nested, value)
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


_NESTED: dict[str, dict[str, type]] = {
    "RunConfig": {
        "data": DataConfig,
        "augment": AugmentConfig,
        "simclr_augment": AugmentConfig,
        "model": ModelConfig,
        "train": TrainConfig,
    }
}


def run_config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `to_dict` output; unknown keys are an error naming the field."""
    return _build(RunConfig, values)
