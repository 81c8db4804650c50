"""The Training page's form: its defaults, presets and their speed notes, field labels and the refusals it
words in them. The page lays the form out; dermai.jobs starts the run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from dermai.config import TrainConfig
from dermai.jobs import JobError, check_run_name
from dermai.ui.formatting import markdown_plain
from dermai.ui.widget_state import keep_widgets, restore_widgets


def train_form_defaults() -> dict[str, Any]:
    """The Training form's fields (the option names `jobs.start_job` takes) with their defaults: the
    paper's values, from TrainConfig."""
    d = TrainConfig()
    return {
        "stage": "both",
        "pretrain_epochs": d.pretrain_epochs,
        "finetune_epochs": d.finetune_epochs,
        "batch_size": d.batch_size,
        "image_size": d.image_size,
        "image_width": d.image_width or 0,
        "label_fraction": 1.0,
        "lambda_ntxent": d.lambda_ntxent,
        "temperature": d.temperature,
        "lr": d.lr,
        "seed": d.seed,
        "limit": 0,
        "weight_decay": d.weight_decay,
        "warmup_epochs": d.warmup_epochs,
        "label_smoothing": d.label_smoothing,
        "focal_gamma": d.focal_gamma,
        "mask_weight": d.mask_weight,
        "mixup_alpha": d.mixup_alpha,
        "cutmix_alpha": d.cutmix_alpha,
        "distill_weight": d.distill_weight,
        "swa_epochs": d.swa_epochs,
        "swa_lr": d.swa_lr or 0.0,
    }


# Starting points for the Training form, each a set of changes to the paper's defaults. The CPU ones are the
# steps of the shipped model's recipe (weights/MODEL_CARD.md).
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "Paper defaults (224 px, 100 + 50 epochs: GPU scale)": {},
    "CPU 1 · SimCLR pretraining: 64 px, 40 epochs": {
        "stage": "pretrain",
        "image_size": 64,
        "pretrain_epochs": 40,
        "warmup_epochs": 1.0,
    },
    "CPU 2 · fine-tuning from step 1: 96 px, 30 epochs": {
        "stage": "finetune",
        "image_size": 96,
        "finetune_epochs": 30,
        "warmup_epochs": 1.0,
    },
    "Quick check: 300 images, 64 px, 2 + 2 epochs": {
        "stage": "both",
        "image_size": 64,
        "pretrain_epochs": 2,
        "finetune_epochs": 2,
        "limit": 300,
        "warmup_epochs": 0.5,
    },
}

# How long each CPU recipe took on this project's 2-core CPU, in seconds: under bf16 (docs/training_runs: 94 s per
# pretraining epoch at 64 px, 67 s per fine-tuning epoch at 96 px), and in fp32 where measured. The quick check
# took 22 s under bf16 and 29 s in fp32 on a CPU without bf16 (`python -m dermai train` with its settings, an
# idle machine, 2026-12-07): at 64 px on 300 images, start-up, data and calibration outweigh the arithmetic
# that bf16 speeds up.
PRESET_SECONDS: dict[str, tuple[float, float | None]] = {
    "CPU 1 · SimCLR pretraining: 64 px, 40 epochs": (65 * 60, None),
    "CPU 2 · fine-tuning from step 1: 96 px, 30 epochs": (35 * 60, None),
    "Quick check: 300 images, 64 px, 2 + 2 epochs": (22, 29),
}

# Fine-tuning at 96 px ran at 40 images/s in fp32 against 108 under bf16 on that CPU (the two runs named in
# `training_speed_note`); bench/run_throughput.py reads both. A recipe without an fp32 time takes this factor.
FP32_SLOWDOWN = 2.7


def _about(seconds: float) -> str:
    """A rough duration: "about 22 s", "about 3 min", "about 1.6 h"."""
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60):.0f} min"
    return f"about {seconds / 3600:.1f} h"


def preset_label(preset: str, gpu_name: str | None, cpu_bf16: bool) -> str:
    """A recipe's name with how long it takes on this machine: its time measured under bf16 on a CPU that has
    it; on a CPU without, its measured fp32 time, else about 2.7 times the bf16 one; none on a GPU (far faster,
    not measured per recipe)."""
    times = PRESET_SECONDS.get(preset)
    if times is None or gpu_name:
        return preset
    bf16, fp32 = times
    if cpu_bf16:
        return f"{preset} ({_about(bf16)})"
    return f"{preset} ({_about(fp32 if fp32 is not None else bf16 * FP32_SLOWDOWN)} here, in fp32)"


def training_speed_note(gpu_name: str | None, cpu_bf16: bool) -> str:
    """What this machine's hardware means for the CPU recipes' times above, which were measured under bf16 on
    a CPU that has it: a researcher on a CPU without native bf16 waits about 2.7 times as long, and should know
    before starting a run that the label says takes an hour."""
    if gpu_name:
        return f"This machine trains on its GPU ({gpu_name}): far faster than the CPU recipes' times."
    if cpu_bf16:
        return "This machine's CPU has native bf16: training runs under bf16, as the recipes' times were measured."
    return (
        "This machine's CPU has no native bf16 (AVX512-BF16 or AMX), so training runs in fp32: the CPU recipes take "
        f"about {FP32_SLOWDOWN}× their bf16 times (fine-tuning at 96 px ran at 40 images/s in fp32 against 108 "
        "under bf16; docs/training_runs/cpu-ensemble-2026-11-27, cpu-lambda-tau-2026-11-29)."
    )


# The Training form's label for each field and option, as the page shows it (without its "(0 = off)" notes): an
# error from the trainer's checks names fields and CLI flags, which the form's user never sees.
TRAIN_FORM_LABELS: dict[str, str] = {
    "stage": "Stage",
    "pretrain_epochs": "Pretrain epochs",
    "finetune_epochs": "Finetune epochs",
    "batch_size": "Batch size",
    "image_size": "Image size",
    "image_width": "Image width",
    "label_fraction": "Label fraction",
    "lambda_ntxent": "λ (NT-Xent weight)",
    "temperature": "Temperature τ",
    "lr": "Learning rate",
    "seed": "Seed",
    "limit": "Limit images",
    "weight_decay": "Weight decay",
    "warmup_epochs": "Warm-up epochs",
    "label_smoothing": "Label smoothing",
    "focal_gamma": "Focal loss γ",
    "mask_weight": "Lesion-mask loss weight",
    "mixup_alpha": "MixUp α",
    "cutmix_alpha": "CutMix α",
    "swa_epochs": "SWA epochs",
    "swa_lr": "SWA learning rate",
    "distill_from": "Teacher",
    "distill_weight": "Teacher's share w",
}


# The trainer's advice when the weights a run starts from were trained on another split (`train.split_mismatch`),
# and the same advice in the Training form's words: the form has no --manifest, and its training seed is the
# "Training seed" field under “Start from a finished run”.
SPLIT_ADVICE = "keep the split (--seed, --manifest) and vary --train-seed instead"
FORM_SPLIT_ADVICE = (
    "keep the split (the same “Seed” and “Limit images”) and vary “Training seed (blank = Seed)” under “Start from "
    "a finished run” instead"
)


def in_form_words(message: str) -> str:
    """A trainer check's message in the Training form's words: each field name with an underscore
    (`warmup_epochs`; plain words such as "stage" stay words) and each CLI flag (`--distill-weight`) becomes the
    form's label in quotes, and a flag in brackets after a field is dropped. Names inside paths are left. Advice
    that names flags the form lacks (`SPLIT_ADVICE`) becomes the form's own (`FORM_SPLIT_ADVICE`)."""
    message = message.replace(SPLIT_ADVICE, FORM_SPLIT_ADVICE)
    flags = {"--" + field.replace("_", "-"): field for field in TRAIN_FORM_LABELS} | {"--lambda": "lambda_ntxent"}
    names = [field for field in TRAIN_FORM_LABELS if "_" in field] + list(flags)
    text = re.sub(r"(\b[a-z_]+) \(--[a-z-]+\)", r"\1", message)
    words = "|".join(re.escape(w) for w in sorted(names, key=len, reverse=True))
    return re.sub(
        rf"(?<![\w./\\-])({words})(?![\w/\\-])",
        lambda m: f"“{TRAIN_FORM_LABELS[flags.get(m.group(1), m.group(1))]}”",
        text,
    )


def train_field_key(field: str) -> str:
    """The session-state key of a Training form field's widget."""
    return f"train_{field}"


def apply_train_preset(state: MutableMapping[str, Any], preset: str) -> None:
    """Set the Training form's widget state to the paper's defaults changed by `preset`, each value of its
    default's type (a number field refuses an int where it holds floats)."""
    for field, value in preset_values(preset).items():
        state[train_field_key(field)] = value


def preset_values(preset: str) -> dict[str, Any]:
    """Every Training form field's value as `preset` sets it: the paper's defaults changed by the recipe, each of
    its default's type (a number field refuses an int where it holds floats)."""
    changes = TRAIN_PRESETS[preset]
    return {field: type(default)(changes.get(field, default)) for field, default in train_form_defaults().items()}


def preset_edits(state: Mapping[str, Any], preset: str) -> list[str]:
    """The form's labels of the fields whose value is no longer the one `preset` set (in the form's order): the
    selector keeps showing the recipe's name after an edit, and the form then no longer is that recipe."""
    edited = []
    for field, value in preset_values(preset).items():
        current = state.get(train_field_key(field), value)
        same = current == value or (isinstance(value, float) and math.isclose(float(current), value, rel_tol=1e-9))
        if not same:
            edited.append(TRAIN_FORM_LABELS[field])
    return edited


def preset_edit_note(state: Mapping[str, Any], preset: str | None) -> str | None:
    """What the page says under the recipe selector when the form was edited after the recipe filled it (None
    when no recipe is chosen or the form is still the recipe): which fields now differ from it."""
    edited = preset_edits(state, preset) if preset in TRAIN_PRESETS else []
    if not edited:
        return None
    return f"Edited after the recipe filled the form, so it no longer is that recipe: {', '.join(edited)}."


def init_train_form(state: MutableMapping[str, Any]) -> None:
    """Give each Training form field that has no state its kept value (from before another page was shown),
    else its default, so the form keeps what the researcher set while they visit the Augmentation lab."""
    defaults = train_form_defaults()
    restore_widgets(state, {train_field_key(field): None for field in defaults})
    for field, default in defaults.items():
        state.setdefault(train_field_key(field), default)


def train_form_options(state: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The stage and the `jobs.start_job` options the Training form's fields hold; 0 means "off" for the
    image limit, the image width (a square) and the SWA learning rate, which the trainer takes as None."""
    options = {field: state[train_field_key(field)] for field in train_form_defaults()}
    stage = options.pop("stage")
    options["limit"] = options["limit"] or None
    options["image_width"] = options.get("image_width") or None
    options["swa_lr"] = options["swa_lr"] or None
    return stage, options


def keep_train_form(state: MutableMapping[str, Any]) -> None:
    """Remember the Training form's values for `init_train_form`."""
    keep_widgets(state, [train_field_key(field) for field in train_form_defaults()])


def name_refusal(name: str, field: str) -> str | None:
    """Why a typed run or ensemble name cannot name a new run (`jobs.check_run_name`), escaped for the page's
    markdown (`markdown_plain`): the refusal repeats the name, and "$x$ **b**" would read as a formula and bold
    type. None for a name it takes."""
    try:
        check_run_name(name, field)
    except JobError as exc:
        return markdown_plain(str(exc))
    return None
