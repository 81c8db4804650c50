"""Configuration: one dataclass per concern.

Defaults are the paper's values (SimCLR ResNet-18, CE + NT-Xent joint loss) unless a comment says why not.
Every field can be overridden from the CLI and the app; `to_dict`/`from_dict` round-trip them through JSON
so a run folder's `config.json` reproduces the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class ModelConfig:
    """SimCLR ResNet-18: trunk, projection head 512→512→128, classifier on the 512-d trunk features."""

    arch: str = "resnet18"
    feature_dim: int = 512
    projection_hidden: int = 512
    projection_dim: int = 128
    init_checkpoint: str | None = None  # a local torchvision-format resnet18 state dict (optional)


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
