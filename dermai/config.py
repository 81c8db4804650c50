"""Configuration: one dataclass per concern.

Defaults are the paper's values (SimCLR ResNet-18, CE + NT-Xent joint loss) unless a comment says why not.
The training commands (`dermai/cli.py`) set every DataConfig field and every TrainConfig field but `log_every`,
and any augmentation field with `--augment` / `--simclr-augment KEY=VALUE`; ModelConfig has no flags (its
`color_constancy` follows the stage's augmentation). The app's Training page sets a subset of those flags
(`dermai.jobs`). `to_dict` and `run_config_from_dict` round-trip a RunConfig through JSON, so a run folder's
`config.json` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# The compute precisions (`dermai.inference.autocast_dtype`): auto = bf16 where the CPU or GPU has it; on an
# older GPU, fp16 for inference and fp32 for training (fp16 training would need a gradient scaler).
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
    # Shades-of-Grey colour constancy. It is also part of the model (ModelConfig) while the stage using this
    # pipeline trains (`dermai.train.stage_color_constancy`): the fine-tuning setting is what validation,
    # evaluation and prediction see; the SimCLR setting governs pretraining alone.
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


def is_number(value: Any) -> bool:
    """A finite int or float (a bool is not a number here: `True` is a typo, not 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_off_or_positive(name: str, value: float) -> None:
    """Refuse a loss or mixing strength that is negative, NaN or infinite, naming the setting (0 = off)."""
    if not (is_number(value) and value >= 0):
        raise ValueError(f"{name} must be a number ≥ 0 (0 = off), got {value!r}")


def check_positive(name: str, value: float, why: str = "") -> None:
    """Refuse a setting that only means something above 0 (a learning rate, a temperature), naming it:
    0 or less would train on NaNs or invert the objective instead of failing."""
    if not (is_number(value) and value > 0):
        raise ValueError(f"{name} must be a number above 0{why}, got {value!r}")


def check_count(name: str, value: int, minimum: int = 0, why: str = "") -> None:
    """Refuse a count (epochs, workers, patience) that is not a whole number ≥ `minimum`, naming it."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{name} must be a whole number ≥ {minimum}{why}, got {value!r}")


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
    # Shades-of-Grey colour constancy on every input, inside the model: the trainer sets it from each stage's
    # augmentation's `color_constancy` (the run's last stage's is saved), so no path (validation, evaluation,
    # prediction, Grad-CAM, OOD) can forget it.
    color_constancy: bool = False


@dataclass
class TrainConfig:
    """Optimisation for both stages. Paper: AdamW lr 1e-3, wd 1e-4, batch 64, λ=0.5, τ=0.5, 224 px."""

    image_size: int = 224
    # Input width in pixels; None = image_size (a square, as the paper: every image squashed to it). HAM10000's
    # images are 4:3 landscape, so e.g. image_size 120 with image_width 160 keeps their shape.
    image_width: int | None = None
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
    # Knowledge distillation in fine-tuning (Hinton et al. 2015): each image's cross-entropy target becomes
    # (1 − w)·its label + w·the teacher's class probabilities (softmax of its raw logits, which like the
    # student's assume balanced classes), so a cheaper model can learn what a costlier ensemble knows. The
    # teacher (`distill_from`, a weights file of the same split) scores the training images once, un-augmented,
    # at its own input size. 0 = off (the paper has no teacher).
    distill_weight: float = 0.0
    distill_from: str | None = None
    balanced_sampling: bool = True
    early_stopping_patience: int = 0  # epochs without val AUROC improvement; 0 = off
    # Stochastic weight averaging (Izmailov et al. 2018): average the weights at the end of each of the last
    # `swa_epochs` fine-tuning epochs; the average competes with the best epoch on validation AUROC.
    swa_epochs: int = 0  # 0 = off
    swa_lr: float | None = None  # constant lr of those epochs; None = the cosine schedule runs on through them
    num_workers: int = 2  # threads decoding images into the pixel cache (first run at a size); 0 counts as 1
    precision: str = "auto"  # auto | bf16 | fp32 (auto: bf16 where supported, else fp32 for training)
    seed: int = 0
    log_every: int = 10  # steps between metric lines


def input_size(height: int, width: int | None) -> int | tuple[int, int]:
    """An input frame as one value: `height` for a square (no width, or the same), else (height, width). The
    one rule for a run's config, a weights JSON (`dermai.preprocess.meta_input_size`) and the tables."""
    return height if width is None or width == height else (height, width)


def train_input_size(t: TrainConfig) -> int | tuple[int, int]:
    """The input frame a run trains at: `image_size` for a square, else (image_size, image_width)."""
    return input_size(t.image_size, t.image_width)


@dataclass
class RunConfig:
    """Everything a run needs, written to the run folder as config.json."""

    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    simclr_augment: AugmentConfig = field(default_factory=simclr_augment_config)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stage: str = "both"  # pretrain | finetune | both


RUN_STAGES: tuple[str, ...] = ("pretrain", "finetune", "both")


def check_run_config(cfg: RunConfig) -> RunConfig:
    """Refuse training settings that cannot train what they promise, naming the field, before any data is
    read (a bad value otherwise surfaces as NaN weights, a silent one-epoch run, or a torch error at the first
    fine-tuning step). Loss-specific settings (mixing, focal γ, mask weight) are checked by their own modules.
    Returns `cfg` unchanged."""
    if cfg.stage not in RUN_STAGES:
        raise ValueError(f"unknown stage {cfg.stage!r} (pretrain, finetune or both)")
    t = cfg.train
    check_count("image_size", t.image_size, 1)
    if t.image_width is not None:
        check_count("image_width", t.image_width, 1, " (or none: a square of image_size)")
    check_count("batch_size", t.batch_size, 2, " (NT-Xent contrasts the images of a batch)")
    check_positive("lr", t.lr)
    check_off_or_positive("weight_decay", t.weight_decay)
    check_off_or_positive("warmup_epochs", t.warmup_epochs)
    check_off_or_positive("lambda_ntxent (--lambda)", t.lambda_ntxent)
    check_positive("temperature", t.temperature, " (the NT-Xent τ divides the similarities)")
    if not (is_number(t.label_smoothing) and 0 <= t.label_smoothing < 1):
        raise ValueError(f"label_smoothing must be in [0, 1) (0 = off), got {t.label_smoothing!r}")
    check_count("early_stopping_patience (--patience)", t.early_stopping_patience, 0, " (0 = off)")
    check_count("num_workers", t.num_workers, 0)
    # numpy's generators take no negative seed and would say only "expected non-negative integer"
    check_count("data.seed (--seed)", cfg.data.seed, 0, " (it seeds the split)")
    check_count("train.seed (--train-seed, else --seed)", t.seed, 0)
    if t.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    pretrains, finetunes = cfg.stage in ("pretrain", "both"), cfg.stage in ("finetune", "both")
    # 0 epochs of a stage the run claims would save untrained weights labelled with that stage, as finished.
    why_pre = f" when the stage is {cfg.stage} (to skip pretraining, run the finetune stage)" if pretrains else ""
    check_count("pretrain_epochs", t.pretrain_epochs, 1 if pretrains else 0, why_pre)
    why_fine = f" when the stage is {cfg.stage} (0 would ship an untrained classifier)" if finetunes else ""
    check_count("finetune_epochs", t.finetune_epochs, 1 if finetunes else 0, why_fine)
    # A warm-up as long as a stage only ever raises the learning rate: the cosine decay never comes.
    for stage, epochs, runs in (("pretrain", t.pretrain_epochs, pretrains), ("finetune", t.finetune_epochs, finetunes)):
        if runs and t.warmup_epochs >= epochs:
            raise ValueError(
                f"warmup_epochs ({t.warmup_epochs:g}) must be shorter than {stage}_epochs ({epochs}): the learning "
                "rate would only rise and never decay"
            )
    for section in ("augment", "simclr_augment"):  # else a bad fine-tuning pipeline fails after pretraining
        try:
            check_augment(getattr(cfg, section))
        except ValueError as exc:
            raise ValueError(f"{section}: {exc}") from None
    check_count("swa_epochs", t.swa_epochs, 0, " (0 = off)")
    if not (is_number(t.distill_weight) and 0 <= t.distill_weight <= 1):
        raise ValueError(f"distill_weight must be in [0, 1] (0 = off), got {t.distill_weight!r}")
    if t.distill_weight > 0 and not t.distill_from:
        raise ValueError("distill_weight > 0 needs distill_from, the teacher's weights (--distill-from)")
    if t.distill_from and t.distill_weight == 0:
        raise ValueError("distill_from is set but distill_weight is 0: give --distill-weight (0 < w ≤ 1)")
    if t.distill_weight > 0 and (t.mixup_alpha > 0 or t.cutmix_alpha > 0):
        raise ValueError("distill_weight cannot be combined with MixUp or CutMix (a mixed image has no one teacher)")
    if t.swa_epochs > t.finetune_epochs:
        raise ValueError(f"swa_epochs must be between 0 and finetune_epochs ({t.finetune_epochs}), got {t.swa_epochs}")
    if t.swa_lr is not None:
        check_positive("swa_lr", t.swa_lr, " (or None: the cosine schedule runs on)")
    return cfg


def config_differences(saved: dict[str, Any], given: dict[str, Any], fields: Iterable[str]) -> list[str]:
    """Each dotted field (`train.finetune_epochs`) whose value differs between two `to_dict` configs, as
    "field: saved X, given Y": a resume names these instead of silently keeping the saved values."""
    out = []
    for name in fields:
        old, new = _dotted(saved, name), _dotted(given, name)
        if _plain(old) != _plain(new):
            out.append(f"{name}: saved {_plain(old)!r}, given {_plain(new)!r}")
    return out


def _dotted(values: dict[str, Any], name: str) -> Any:
    for part in name.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def _plain(value: Any) -> Any:
    """JSON's view of a value: tuples are lists, so a saved (0.8, 1.0) equals a given [0.8, 1.0]."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def _build(cls: type, values: Any, where: str = "") -> Any:
    """`cls` from a JSON dict, each value checked against its field's type and named by its dotted path
    (`train.finetune_epochs`): a hand-edited or damaged config.json fails here, with the field, instead of
    deep in training or as a split silently rebuilt from a string seed."""
    if not isinstance(values, dict):
        raise ValueError(f"config field {where or cls.__name__} must be a JSON object, got {values!r}")
    kwargs: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ValueError(f"unknown config field {path} (in {cls.__name__})")
        nested = _NESTED.get(cls.__name__, {}).get(key)
        kwargs[key] = _build(nested, value, path) if nested is not None else _checked_value(path, value, hints[key])
    return cls(**kwargs)


def _checked_value(path: str, value: Any, hint: Any) -> Any:
    """`value` if JSON's value fits the field's annotation (a list becomes the tuple the field holds), else a
    ValueError naming `path`. Ints pass for floats (JSON writes 1.0 as 1 in some tools); bools never pass for
    numbers (`true` for an epoch count is a typo, not 1)."""
    args = typing.get_args(hint)
    nullable = type(None) in args
    if nullable:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"config field {path} must be a list of {len(args)} numbers, got {value!r}")
        return tuple(_checked_value(f"{path}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    wanted = {
        bool: (lambda v: isinstance(v, bool), "true or false"),
        int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
        float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
        str: (lambda v: isinstance(v, str), "text"),
    }
    fits, what = wanted[hint]
    if not fits(value):
        raise ValueError(f"config field {path} must be {what}{' or null' if nullable else ''}, got {value!r}")
    return value


_NESTED: dict[str, dict[str, type]] = {
    "RunConfig": {
        "data": DataConfig,
        "augment": AugmentConfig,
        "simclr_augment": AugmentConfig,
        "model": ModelConfig,
        "train": TrainConfig,
    }
}


def train_config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a dict of its fields, each type-checked as in `run_config_from_dict` (the app's
    form options go through here)."""
    return _build(TrainConfig, values)


def run_config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `to_dict` output; unknown keys are an error naming the field."""
    return _build(RunConfig, values)
