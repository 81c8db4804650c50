"""Helpers behind the Streamlit pages that hold no UI: settings defaults, weight choices, the model card's
figures, dataset filters, mask overlays, the embedding map and report payloads. Pages call these and only lay
out what they return, so everything here can be tested without Streamlit.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dermai.config import TrainConfig
from dermai.context import age_band_order, weak_fit
from dermai.data import (
    MALIGNANT,
    MASK_FOLDER,
    DataError,
    Dataset,
    attach_splits,
    decode_image,
    find_metadata_csv,
    lesion_mask_file,
    load_dataset,
    read_mask,
    resolve_data_root,
    same_file,
    weights_data_folder,
)
from dermai.ensemble import input_sizes_text
from dermai.evaluate import interval_text
from dermai.intake import READ_EXTENSIONS, IntakeError, read_image
from dermai.jobs import JobError, check_run_name, is_running, runs_dir
from dermai.metrics import SUBGROUP_MIN_PER_CLASS
from dermai.ood import beyond_cut_off
from dermai.predict import on_off, point_counts, validation_figures
from dermai.preprocess import InputSize, input_frame
from dermai.report import diagnosis_legend as diagnosis_legend  # the page's legend is the HTML report's
from dermai.report import score_text
from dermai.weights import (
    DEFAULT_WEIGHTS,
    WeightsError,
    failed_calibration,
    read_meta,
    resolve_weights_path,
    untrained_classifier,
    weak_validation,
)

MISSING = "—"  # a table's missing figure (st.dataframe's placeholder): Streamlit's own is the word "None"
DATA_KEY = "data_dir"  # session-state keys shared by the sidebar and the pages
WEIGHTS_KEY = "weights_path"
# The Augmentation lab's settings sent to the Training page, as `--augment` KEY=VALUE items per pipeline.
TRAIN_AUGMENT_KEYS = {"paper": "train_augment", "simclr": "train_simclr_augment"}
LICENCE = (
    "HAM10000 is licensed CC BY-NC-SA 4.0 (non-commercial, share-alike); models trained on it inherit these "
    "terms. Cite: Tschandl, P., Rosendahl, C. & Kittler, H. The HAM10000 dataset, a large collection of "
    "multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 (2018). "
    "doi:10.1038/sdata.2018.161. Lesion masks: Tschandl, P. et al. Human–computer collaboration for skin cancer "
    "recognition. Nat. Med. 26, 1229–1234 (2020)."
)


# ------------------------------------------------------------------------------------------- settings
def default_data_dir() -> str:
    """The data folder a fresh session uses ($DERMAI_DATA, ./data/ham10000, ../shared/data/ham10000), or ""."""
    try:
        return str(resolve_data_root())
    except DataError:
        return ""


def default_weights() -> str:
    """The weights a fresh session uses: $DERMAI_WEIGHTS, else the shipped weights/model.safetensors."""
    return os.environ.get("DERMAI_WEIGHTS") or str(DEFAULT_WEIGHTS)


def data_dir(state: Mapping[str, Any]) -> str:
    """The session's data folder (possibly "" when none was found)."""
    return str(state.get(DATA_KEY) or default_data_dir())


def weights_path(state: Mapping[str, Any]) -> str:
    """The session's weights file."""
    return str(state.get(WEIGHTS_KEY) or default_weights())


GONE_WEIGHTS_KEY = "weights_gone"  # the chosen weights last dropped because their run was deleted or removed


def forget_weights_in(state: MutableMapping[str, Any], folder: str | os.PathLike[str]) -> bool:
    """Drop the session's weights choice when it lies in `folder` (a run just deleted), so every page falls back
    to the default weights instead of failing on a missing file, and remember it (`gone_weights_notice`): a
    clinician must see that another model scores now. Whether it did."""
    chosen = state.get(WEIGHTS_KEY)
    if chosen and Path(chosen).absolute().is_relative_to(Path(folder).absolute()):
        state[GONE_WEIGHTS_KEY] = state.pop(WEIGHTS_KEY)
        return True
    return False


def forget_missing_weights(state: MutableMapping[str, Any]) -> bool:
    """Drop the session's weights choice when its file has gone (its run folder removed on disk), as
    `forget_weights_in` does for a run deleted from the Training page; the default weights, when they are
    the ones missing, stay chosen (the pages then say they cannot be loaded). Whether it did."""
    chosen = state.get(WEIGHTS_KEY)
    if chosen and chosen != default_weights() and not Path(chosen).exists():
        state[GONE_WEIGHTS_KEY] = state.pop(WEIGHTS_KEY)
        return True
    return False


def gone_weights_notice(state: Mapping[str, Any], runs: str | os.PathLike[str] | None = None) -> str | None:
    """What a page says while the default weights stand in for chosen ones that have gone: which run (or file)
    is missing and which model scores now; None when nothing has gone or other weights were chosen since."""
    gone = state.get(GONE_WEIGHTS_KEY)
    default = default_weights()
    if not gone or weights_path(state) != default:
        return None
    path, root = Path(gone), runs_dir(runs)
    inside = path.absolute().is_relative_to(root.absolute())
    where = path.absolute().parent.relative_to(root.absolute()) if inside else None
    what = f"run `{where}` (`{gone}`)" if where else f"`{gone}`"
    return (
        f"**The weights chosen earlier are gone:** {what} was deleted or its folder removed. The default model, "
        f"`{default}`, is in use now; choose other weights in the sidebar."
    )


SHIPPED_LABEL = "shipped model"  # weights/model.safetensors in the sidebar's Weights list


MetaReader = Callable[[str], dict[str, Any]]
"""Reads a weights file's JSON or raises WeightsError: `weights.read_meta`, or the pages' cached copy of it."""


def weight_choices(
    runs: str | os.PathLike[str] | None = None, current: str | None = None, read: MetaReader = read_meta
) -> dict[str, str]:
    """Weights file → label: the shipped weights, every run's model.safetensors below the runs folder, and the
    session's current choice, in that order. A run whose JSON cannot be read is listed as such (choosing it
    then shows why), and weights whose classifier never trained say so, so nobody predicts with them. A run
    still running is left out (unless it is the current choice, labelled "(running)"): its trainer saves the
    weights minutes before calibrating them, and an ensemble job its weights before fitting them. `read` reads
    each JSON: the pages pass their cache, so the sidebar and the Evaluation page's list read each run's once."""
    choices: dict[str, str] = {}
    shipped = DEFAULT_WEIGHTS
    # Short: the sidebar cut "shipped weights/model.safetensors" off; its help names the file.
    choices[str(shipped)] = SHIPPED_LABEL + ("" if shipped.exists() else " (missing)")
    root = runs_dir(runs)
    if root.is_dir():
        for path in sorted(root.rglob("model.safetensors")):
            where = path.parent.relative_to(root)
            if any(part.startswith(".") for part in where.parts):  # hidden: e.g. a run being deleted
                continue
            if not is_running(path.parent, root):
                choices[str(path)] = _run_label(str(where), path, read)
            elif str(path) == current:
                choices[str(path)] = f"{where} (running)"
    if current and current not in choices:
        choices[current] = f"{Path(current).parent.name}/{Path(current).name}"
        with contextlib.suppress(WeightsError):  # unreadable: the pages say why when it is used
            untrained = untrained_classifier(read(current))
            choices[current] += f" ({untrained})" if untrained else ""
    return choices


def feature_gate_flagged(prediction: Any) -> bool:
    """Whether a prediction's features lay beyond the OOD cut-off. An image flagged from its pixels alone
    (blank, noise, greyscale) is out of distribution too, but its distance may sit inside the cut-off: saying
    "score 27.46 > threshold 56.08" for it would be false; its note says why instead."""
    return bool(prediction.ood) and beyond_cut_off(prediction.ood_score, prediction.ood_threshold)


def typed_weights(text: str) -> str:
    """The weights file a typed path names (a .safetensors file, or a folder holding one) if its JSON can be
    read, else a WeightsError naming the file: checked when typed, so a mistyped path never joins the sidebar's
    list as if it were a choice, nor replaces weights that worked."""
    path = resolve_weights_path(text.strip())
    read_meta(path)
    return str(path)


def same_split_choices(choices: Mapping[str, str], current: str, read: MetaReader = read_meta) -> dict[str, str]:
    """The `weight_choices` other than `current` that were trained on its split (the same manifest checksum),
    the only ones a paired comparison can score on the same images; weights whose split is unknown (an
    unreadable JSON, or none recorded) stay, and comparing them says why. `read` as for `weight_choices`."""
    try:
        mine = read(current).get("manifest_sha256")
    except WeightsError:
        mine = None
    out = {}
    for path, label in choices.items():
        if path == current:
            continue
        try:
            theirs = read(path).get("manifest_sha256")
        except WeightsError:
            theirs = None
        if mine is None or theirs is None or theirs == mine:
            out[path] = label
    return out


def compare_choices(
    choices: Mapping[str, str], current: str, split: str, read: MetaReader = read_meta
) -> dict[str, str]:
    """The weights Evaluation offers as B for Compare's `split`: on "all" (an external folder, scored less the
    images either model saw: `evaluate.unseen_rows`) every `weight_choices` but `current`, whatever its split;
    on val or test only those of `current`'s split (`same_split_choices`), whose held-out images are A's."""
    if split == "all":
        return {path: label for path, label in choices.items() if path != current}
    return same_split_choices(choices, current, read)


def no_comparison_hint(meta: Mapping[str, Any], split: str = "val") -> str:
    """What Evaluation says when `compare_choices` offers no B: on val or test, which run can be compared (the
    same data folder, Seed and Limit images, so the same manifest: `same_split_choices`), since "train a run"
    sent users to a Quick check, whose 300-image split never matches the shipped model's; on all (an external
    folder), where any split is offered, only that there are no other weights."""
    if split == "all":
        return (
            "No other weights to compare with: train a run on the Training page, or choose other weights in the "
            "sidebar."
        )
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    seed, limit = data.get("seed"), data.get("limit")
    if isinstance(seed, int) and (limit is None or isinstance(limit, int)):
        limited = f"Limit images {limit}" if limit else "Limit images 0 (every image)"
        needed = f"{TRAIN_FORM_LABELS['seed']} {seed} and {limited}"
    else:
        needed = f"the same {TRAIN_FORM_LABELS['seed']} and {TRAIN_FORM_LABELS['limit']} as these weights"
    return (
        "No other weights of this split to compare with. Only a run on the same split can be compared: one "
        f"trained on this data folder with {needed} (a Quick check, limited to 300 images, never is). Or choose "
        "other weights in the sidebar."
    )


def _run_label(name: str, path: Path, read: MetaReader = read_meta) -> str:
    """ "name (status)", "name (status, pretrain only — no trained classifier)" or "name (unreadable JSON)"."""
    try:
        meta = read(str(path))
    except WeightsError:
        return f"{name} (unreadable JSON)"
    status = str(meta.get("status", "?"))
    untrained = untrained_classifier(meta)
    return f"{name} ({status}, {untrained})" if untrained else f"{name} ({status})"


def untrained_advice(reason: str) -> str:
    """What to tell a clinician about weights whose classifier never trained (`untrained_classifier`)."""
    return (
        f"{reason[0].upper()}{reason[1:]}: its probabilities would mean nothing, so Predict refuses these weights."
        " Fine-tune them first: resume the run, or on the Training page start a run with stage finetune from"
        " them (“Start from a finished run”); or choose fine-tuned weights in the sidebar."
    )


def weights_cautions(meta: Mapping[str, Any]) -> list[str]:
    """The banners Home, Predict and Evaluation show above anything read from these weights: validated on too
    few images or no better than chance (`weights.weak_validation`), and a calibration that found no
    temperature (`weights.failed_calibration`); [] for weights validated and calibrated as they should be.
    One function, so that no page says less than another about the same weights."""
    cautions = []
    if weak := weak_validation(dict(meta)):
        cautions.append(
            f"**These weights are not validated well enough for triage:** {weak}. Choose other weights in the sidebar."
        )
    if failed := failed_calibration(dict(meta)):
        cautions.append(f"**Calibration failed:** {failed}.")
    return cautions


def current_job_control(ensemble: bool, trained: bool, outside: bool) -> str | None:
    """The label of the one button that ends the job under Training's "Current job": "Cancel this job" for an
    ensemble, "Stop" once training has begun (its STOP file reaches a command-line run too), "Cancel" while its
    data is still being prepared; None where the app cannot end it (a command-line job it did not start)."""
    if ensemble:
        return None if outside else "Cancel this job"
    if trained:
        return "Stop"
    return None if outside else "Cancel"


def current_job_hint(control: str | None) -> str:
    """What the Runs list says of the run that is the current job, naming the button that `current_job_control`
    put under "Current job" (it said "stop it" beside a button labelled "Cancel" while data was prepared)."""
    if control == "Stop":
        return "It is the current job: stop it under “Current job” above."
    if control is None:
        return "It is the current job, started from the command line: “Current job” above says how to end it."
    return f"It is the current job: cancel it with “{control}” under “Current job” above."


def tier_table_title(meta: Mapping[str, Any], tested: bool) -> str:
    """The heading of Home's tier table. Weakly validated weights' (`weights.weak_validation`: a quick run's) must
    not call their cut-offs validated: the banner just above says they are not reliable."""
    if weak_validation(dict(meta)):
        return "Triage tiers (cut-offs set on validation; not reliable for these weights)"
    if tested:
        return "Triage tiers (cut-offs set on validation, re-checked once on test)"
    return "Triage tiers (validated on the validation split)"


def unused_fields_text(unused: Mapping[str, str]) -> str:
    """The context fields a model does not ask for, each with its reason (`context.unused_fields`): "sex (its
    weight … is 0 …)" for one, not "sex (sex: …)", which named it twice; "sex, site (sex: …; site: …)" for more."""
    if len(unused) == 1:
        ((name, reason),) = unused.items()
        return f"{name} ({reason})"
    return f"{', '.join(unused)} ({'; '.join(f'{name}: {reason}' for name, reason in unused.items())})"


def weights_mtime(path: str) -> tuple[int, int]:
    """A cache key part that changes when weights are re-saved (e.g. calibrated): the modification times of
    the .safetensors file a path (file or folder) resolves to and of its JSON; (0, 0) when missing."""
    try:
        weights = resolve_weights_path(path)
        return weights.stat().st_mtime_ns, weights.with_suffix(".json").stat().st_mtime_ns
    except (WeightsError, OSError):
        return 0, 0


def metadata_stamp(root: str | os.PathLike[str]) -> tuple[str, int] | None:
    """A cache key part that changes when a data folder's metadata CSV is edited or replaced: its path and
    modification time; None when there is none (loading the folder then says why)."""
    try:
        csv = find_metadata_csv(Path(root))
        return str(csv), csv.stat().st_mtime_ns
    except (DataError, OSError):
        return None


# ---------------------------------------------------------------------------------------- predict state
# Streamlit forgets a keyed widget's value (an uploader's files, a camera shot, a data editor's edits too) when a
# run does not draw it, i.e. as soon as the clinician opens another page. Predict keeps its uploads, camera shot,
# per-image body sites and settings under these plain keys, in the session's memory only, and offers them again
# on return.
KEPT_UPLOADS = "pred_kept_uploads"  # [(name, bytes), …] of the last upload
SHOWING_KEPT = "pred_showing_kept"  # True while the kept uploads stand in for an empty uploader
UPLOADS = (KEPT_UPLOADS, SHOWING_KEPT)  # the uploader's slot: (kept images key, showing-them key)
CAMERA = ("pred_kept_shot", "pred_showing_shot")  # the camera's slot, kept apart so each source keeps its own
KEPT_WIDGETS = "pred_kept_widgets"  # widget key → last value
KEPT_ROWS = "pred_kept_rows"  # {data editor key: (rows it started from, rows it last showed)}, the last editor only


def uploads_to_show(
    state: MutableMapping[str, Any],
    uploaded: list[tuple[str, bytes]],
    reopened: bool,
    slot: tuple[str, str] = UPLOADS,
) -> list[tuple[str, bytes]]:
    """The (name, bytes) images Predict analyses: this run's uploads (or camera shot: `slot` CAMERA), which are
    kept; else, when the page was just reopened (`reopened`: the widget had no state yet), those kept from
    earlier in the session, until cleared or replaced. A widget emptied by the clinician on the page forgets
    them."""
    kept, showing = slot
    if uploaded:
        state[kept], state[showing] = list(uploaded), False
        return list(uploaded)
    if reopened and state.get(kept):
        state[showing] = True
    if state.get(showing):
        return list(state[kept])
    state.pop(kept, None)
    return []


def forget_uploads(state: MutableMapping[str, Any], slot: tuple[str, str] = UPLOADS) -> None:
    """Drop the kept uploads or camera shot (the "Clear" button)."""
    state.pop(slot[0], None)
    state[slot[1]] = False


def restore_widgets(state: MutableMapping[str, Any], options: Mapping[str, Sequence[Any] | None]) -> None:
    """Give each widget key that has no state (its page was not shown) its kept value, when that value is
    still one of its `options` (None: any value), e.g. a body site the current model still knows."""
    kept = state.get(KEPT_WIDGETS) or {}
    for key, allowed in options.items():
        if key not in state and key in kept and (allowed is None or kept[key] in allowed):
            state[key] = kept[key]


def widget_value(state: Mapping[str, Any], key: str, default: Any) -> Any:
    """The value to give a widget that must be given one (a select_slider's value makes it a range): its own,
    else the one kept before another page was shown, else `default`. Unlike `restore_widgets` this sets no
    Session State: Streamlit warns, with a stack trace in the app's log, about a widget given a value both ways."""
    return state.get(key, (state.get(KEPT_WIDGETS) or {}).get(key, default))


def restore_choices(state: MutableMapping[str, Any], options: Mapping[str, Sequence[Any]]) -> None:
    """`restore_widgets` for multiselects: the current choices, else those kept from before another page was
    shown, less any no longer offered (another data folder may lack some diagnoses or sites)."""
    kept = state.get(KEPT_WIDGETS) or {}
    for key, allowed in options.items():
        chosen = state.get(key, kept.get(key))
        if isinstance(chosen, list | tuple):
            state[key] = [value for value in chosen if value in allowed]


def restore_range(state: MutableMapping[str, Any], key: str, low: float, high: float) -> tuple[float, float]:
    """The (low, high) a range slider shows: the kept or current range clipped to the slider's bounds (they
    move with the data folder), else the whole span. Set in `state`, so the slider is given no default."""
    kept = state.get(key, (state.get(KEPT_WIDGETS) or {}).get(key))
    lo, hi = (low, high) if not isinstance(kept, list | tuple) or len(kept) != 2 else kept
    lo, hi = min(max(lo, low), high), min(max(hi, low), high)
    state[key] = (lo, hi) if lo <= hi else (low, high)
    return state[key]


def keep_widgets(state: MutableMapping[str, Any], keys: Sequence[str]) -> None:
    """Remember the current value of each widget key that has one, for `restore_widgets`."""
    state[KEPT_WIDGETS] = {**(state.get(KEPT_WIDGETS) or {}), **{k: state[k] for k in keys if k in state}}


def editor_rows(state: MutableMapping[str, Any], key: str, fresh: list[Any]) -> list[Any]:
    """The rows a keyed st.data_editor starts from: `fresh` at first; once its edits were dropped with the page
    (`key` has no state), the rows it last showed, so they come back; otherwise the same rows as the run before,
    so its edits apply to the rows they were made on."""
    start, shown = (state.get(KEPT_ROWS) or {}).get(key, (fresh, fresh))
    if key not in state:
        start = shown
    state[KEPT_ROWS] = {key: (start, shown)}
    return list(start)


def keep_rows(state: MutableMapping[str, Any], key: str, shown: list[Any]) -> None:
    """Remember the rows the editor `key` shows now (its start with the edits), for `editor_rows`."""
    start, _ = (state.get(KEPT_ROWS) or {}).get(key, (shown, shown))
    state[KEPT_ROWS] = {key: (start, list(shown))}


# ------------------------------------------------------------------------------------- training form
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


# Compare runs' settings (`compare.run_settings`: config.json's dotted keys) that the Training form sets, by the
# form's labels; other settings (augmentation, a config file's) keep their key.
SETTING_LABELS: dict[str, str] = {
    "stage": TRAIN_FORM_LABELS["stage"],
    "data.seed": TRAIN_FORM_LABELS["seed"],
    "data.limit": TRAIN_FORM_LABELS["limit"],
    "data.label_fraction": TRAIN_FORM_LABELS["label_fraction"],
    **{
        f"train.{field}": label
        for field, label in TRAIN_FORM_LABELS.items()
        if field not in ("stage", "seed", "limit", "label_fraction")
    },
    "train.seed": "Training seed (blank = Seed)",
    "start.init_weights": "Start from",
    "start.reset_classifier": "Fresh classifier",
}
SETTING_KEY_COLUMN = "config key"


def labelled_differences(differences: pd.DataFrame) -> pd.DataFrame:
    """`compare.setting_differences` as Compare runs shows it: each setting by the Training form's label where
    the form has it (“Learning rate”, not train.lr), else by its key; the key stays in a last column, as
    config.json names it."""
    table = differences.copy()
    table[SETTING_KEY_COLUMN] = list(differences.index)
    table.index = pd.Index([SETTING_LABELS.get(key, key) for key in differences.index], name="setting")
    return table


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


# The Training page's two buttons that hand weights to Predict: short, so they show whole in a narrow window
# ("Use these weights for prediction" was cut even at 1280 px); their help says the rest.
USE_RUN_WEIGHTS = "Use for Predict"
USE_DEFAULT_WEIGHTS = "Use default model"


def default_model_label() -> str:
    """The default model in words, as the Training page names where “Use default model” goes: the
    shipped model, or the file $DERMAI_WEIGHTS names (which the sidebar's list no longer offers once another
    is chosen)."""
    default = default_weights()
    if same_file(default, DEFAULT_WEIGHTS):
        return f"the {SHIPPED_LABEL} (weights/model.safetensors)"
    return f"the default model ({default}, from DERMAI_WEIGHTS)"


def run_weights(row: pd.Series) -> str | None:
    """A `jobs.list_runs` row's weights file, or None for a run that saved none (cancelled before its first
    checkpoint, failed at its start). pandas stores that missing path as NaN, a float that is truthy, once another
    row has weights: read as a path it crashed the Training page below the run's status, its Delete button too."""
    weights = row.get("weights")
    return weights if isinstance(weights, str) and weights else None


def uses_weights(state: Mapping[str, Any], path: str | os.PathLike[str]) -> bool:
    """Whether the session's weights (what Predict uses) are the file `path`, however either path is written."""
    return same_file(weights_path(state), path)


def weights_used_note(run: str, path: str | os.PathLike[str]) -> str:
    """The confirmation after `USE_RUN_WEIGHTS`: which weights the pages now use, and how to go back, since the
    change outlives the Training page (every page and the sidebar follow it). The page shows it above the
    buttons, so the way back is "below"."""
    return (
        f"Predict, Evaluation and Home now use run {run}'s weights ({path}); the sidebar's Weights list shows "
        f"them. To go back to {default_model_label()}, press “{USE_DEFAULT_WEIGHTS}” below, or choose it in "
        "the sidebar."
    )


def _known(value: Any) -> bool:
    """Whether a run-table field says something: a run still starting (or from another layout) has no stage,
    epochs or input size yet, and "stage None · epochs ·" read as a broken page."""
    return value is not None and not (isinstance(value, float) and value != value) and str(value).strip() != ""


def status_line(row: Mapping[str, Any]) -> str:
    """A `jobs.list_runs` row as the Training page's one-line summary of the chosen run: its status, then only
    the stage, epochs (completed/planned, `jobs.stage_epochs`) and input size it knows, and its size on disk."""
    parts = [f"Status: **{row['status']}**"]
    parts += [
        f"{label} {row[key]}"
        for label, key in (("stage", "stage"), ("epochs", "epochs"), ("input", "input"))
        if _known(row[key])
    ]
    parts.append(f"{row['disk_gb']:.2f} GB on disk")
    return " · ".join(parts)


# The compared figures as Evaluation's compare table names them: short, so that its columns fit an 800 px window
# ("Balanced accuracy (7-class)" took a quarter of it and pushed the interval and the verdict off); the column's
# help says what each is.
COMPARED_METRICS = {"auroc": "AUROC", "balanced_accuracy": "Bal. acc."}


def comparison_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """`evaluate.compare_weights`' result as Evaluation's table: per figure A, B, B − A, its 95% interval, p and
    the verdict in words; a figure the result lacks (too few images of a class) is left out."""
    from dermai.evaluate import comparison_verdict  # as score is: torch's import only where scoring is shown

    rows = []
    for name, label in COMPARED_METRICS.items():
        if paired := result.get(name):
            low, high = paired.get("difference_ci") or [None, None]
            rows.append(
                {
                    "metric": label,
                    "A": paired["a"],
                    "B": paired["b"],
                    "B − A": paired["difference"],
                    "95% CI low": low,
                    "95% CI high": high,
                    "p": paired.get("p_value"),
                    "verdict": comparison_verdict(dict(paired)),
                }
            )
    return pd.DataFrame(rows, columns=["metric", "A", "B", "B − A", "95% CI low", "95% CI high", "p", "verdict"])


def epoch_words(stage: str, epoch: int | None, planned: int | None = None) -> str:
    """Where a running job is, for people: "finetune, epoch 1 of 6" while its first epoch trains. `epoch` is
    the trainer's 0-based index (metrics.jsonl keeps it), so it is shown plus one, as the curves'
    x-axis and the Runs table's completed/planned ("finetune 0/6") count; a dash while no step has been logged."""
    if epoch is None:
        return f"{stage}, epoch -"
    return f"{stage}, epoch {epoch + 1}" + (f" of {planned}" if planned else "")


def shown_run_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """`compare.compare_runs`' summary as Compare runs shows it: the best epoch numbered from 1, as the curves
    beside it are (`plots.one_based_epochs`); the summary itself keeps metrics.jsonl's 0-based index."""
    return summary.assign(best_epoch=summary["best_epoch"] + 1)


def default_weights_note() -> str:
    """The confirmation after `USE_DEFAULT_WEIGHTS`."""
    return f"Predict, Evaluation and Home use {default_model_label()} again."


# ----------------------------------------------------------------------------------------- model card
def model_card(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The figures the home page shows: AUROC (with interval and where it was measured), tier cut-offs with
    their validated sensitivity/specificity (and the test split's, `test_*`, where the weights record them, so
    the validation figures are not read as a promise), each tier's validation figures in Predict's words
    (`tier_validation`: with intervals and counts where recorded), training status, image size, and why the
    classifier is untrained (None when it is trained). A JSON block that is missing
    is left out; one of the wrong shape (hand-edited, another tool's) is left out too and named in
    `problems`, so the page says so in words instead of failing."""
    problems: list[str] = []
    auroc, ci, source = None, None, None
    for key, prefix in (("test_metrics", ""), ("val_metrics", "val_")):
        block = _block(meta, key, problems)
        name = f"{prefix}auroc" if f"{prefix}auroc" in block else "auroc"
        value = _number(block, name, f"{key}.{name}", problems)
        if value is not None:
            auroc, source = value, key.split("_")[0]
            interval = block.get(f"{name}_ci")
            if isinstance(interval, list) and len(interval) == 2 and all(_is_number(v) for v in interval):
                ci = interval
            elif interval is not None:
                problems.append(f"field '{key}.{name}_ci' is not a pair of numbers: ignored")
            break
    tiers, validation = [], {}
    rechecked = _block(meta, "test_operating_points", problems)  # the same cut-offs, scored once on test
    for tier, point in _block(meta, "operating_points", problems).items():
        if not isinstance(point, dict):
            problems.append(f"field 'operating_points.{tier}' is not an object: ignored")
            continue
        figures = ("threshold", "sensitivity", "specificity")
        where = f"operating_points.{tier}"
        row = {"tier": tier, **{f: _number(point, f, f"{where}.{f}", problems) for f in figures}}
        if row["sensitivity"] is not None and row["specificity"] is not None:
            validation[tier] = validation_figures(row["sensitivity"], row["specificity"], point_counts(point))
        test = rechecked.get(tier)
        if isinstance(test, dict):
            for f in ("sensitivity", "specificity"):
                row[f"test_{f}"] = _number(test, f, f"test_operating_points.{tier}.{f}", problems)
        elif test is not None:
            problems.append(f"field 'test_operating_points.{tier}' is not an object: ignored")
        tiers.append(row)
    classes = meta.get("classes", [])
    if not isinstance(classes, list):
        problems.append("field 'classes' is not a list: ignored")
        classes = []
    fields = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    sizes = fields.get("member_image_sizes")
    shape = {k: meta[k] for k in ("image_size", "image_width") if k in meta} | {"model": {"member_image_sizes": sizes}}
    try:
        context = context_summary(meta)
    except ValueError as exc:
        problems.append(f"{exc}: the patient-context model is not described")
        context = None
    return {
        "auroc": auroc,
        "auroc_ci": ci,
        "auroc_split": source,
        "tiers": tiers,
        "tier_validation": validation,
        "classes": [str(c) for c in classes],
        "image_size": meta.get("image_size"),
        "input_sizes": input_sizes_text(shape if isinstance(sizes, list | None) else {}),
        "status": meta.get("status"),
        "temperature": meta.get("temperature") if _is_number(meta.get("temperature")) else None,
        "ood": bool(meta.get("ood")),
        "context": context,
        "untrained": untrained_classifier(dict(meta)),
        "problems": problems,
    }


SERVING_FIGURES = (
    "val_auroc",
    "val_bacc",
    "temperature",
    "val_ece_malignant_uncalibrated",
    "val_ece_malignant",
    "n_val",
)


def serving_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The last calibration a run fitted on validation (its "serving" metrics record: the trainer's last step
    after fine-tuning, or an ensemble's), as {"status", "error", "complete", and SERVING_FIGURES}: these are
    the figures the weights are served with, whereas the per-epoch curves score the network alone. `complete`
    says every figure is a number (a record from an older version may lack some). None when the run fitted
    none (pretraining only, stopped, or still running)."""
    fitted = [r for r in records if r.get("kind") == "serving" and r.get("status") in ("fitted", "failed")]
    if not fitted:
        return None
    last = fitted[-1]
    figures = {k: last.get(k) for k in SERVING_FIGURES}
    complete = all(_is_number(v) for v in figures.values())
    return {"status": last["status"], "error": last.get("error"), "complete": complete, **figures}


def context_summary(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The patient-context model in brief: each field's fitted weight, and its AUROC (test if scored, else
    validation; None when neither was recorded) beside the image-only one, and `unreliable` only for a fit on
    too few validation images (`context.weak_fit`); None without one. Raises ValueError naming the field when
    the block is of the wrong shape."""
    block = meta.get("context")
    if not block:
        return None
    fields = block.get("fields") if isinstance(block, dict) else None
    if not isinstance(fields, dict):
        raise ValueError("field 'context.fields' is missing or not an object")
    weights = {}
    for name, entry in fields.items():
        weight = entry.get("weight") if isinstance(entry, dict) else None
        if not _is_number(weight):
            raise ValueError(f"field 'context.fields.{name}.weight' is missing or not a number")
        weights[name] = weight
    test_block = meta.get("test_metrics") if isinstance(meta.get("test_metrics"), dict) else {}
    test = test_block.get("context") if isinstance(test_block.get("context"), dict) else {}
    val = block.get("val_metrics") if isinstance(block.get("val_metrics"), dict) else {}
    if _is_number(test.get("auroc")) and _is_number(test_block.get("auroc")):
        auroc, image_only, split, n = test["auroc"], test_block["auroc"], "test", test.get("n_with_context")
    else:
        auroc, image_only, split = val.get("val_auroc"), val.get("val_auroc_image_only"), "val"
        n = val.get("n_val_with_context", val.get("n_val"))
    summary = {
        "weights": weights,
        "auroc": auroc if _is_number(auroc) else None,
        "auroc_image_only": image_only if _is_number(image_only) else None,
        "split": split,
        "n": n if _is_number(n) else None,
    }
    if unreliable := weak_fit(meta):  # too few validation images: its AUROC is no result (`context_caption`)
        summary["unreliable"] = unreliable
    return summary


def context_caption(summary: Mapping[str, Any]) -> str:
    """Home's line on a patient-context model (`context_summary`): the fields it uses and its AUROC beside the
    image-only one. On validation those figures are in-sample (the field weights, temperature and cut-offs
    were fitted on the same images), so they are said to be optimistic rather than read as a result; on
    test they are the check. A fit on too few validation images (`context.weak_fit`) gets no figure at all."""

    def figure(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    used = ", ".join(f"{k} (weight {w:.2f})" for k, w in summary["weights"].items() if w > 0)
    offered = f"Optional patient context on the Predict page: {used or 'no field helped'}."
    if summary.get("unreliable"):  # a weak fit's AUROC would read as a result beside the image-only one
        return f"{offered} No AUROC is quoted for it: {summary['unreliable']}."
    text = (
        f"{offered} AUROC on the "
        f"{summary['split']} split {figure(summary['auroc_image_only'])} from the image alone, "
        f"{figure(summary['auroc'])} with the recorded context"
    )
    if summary["split"] != "val":
        return f"{text}."
    images = f"the same {summary['n']} validation images" if summary.get("n") else "the same validation images"
    return (
        f"{text}: fitted and measured on {images}, so optimistic (in-sample), not a check; `python -m dermai "
        "evaluate` scores it on the test split."
    )


def _is_number(value: Any) -> bool:
    """A JSON number (true/false are not figures)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _block(meta: Mapping[str, Any], key: str, problems: list[str]) -> Mapping[str, Any]:
    """meta[key] when it is an object; {} when absent, and also when of another type (noted in `problems`)."""
    value = meta.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"field '{key}' is not an object: ignored")
        return {}
    return value


def _number(block: Mapping[str, Any], key: str, where: str, problems: list[str]) -> float | None:
    """block[key] when it is a number; None when absent, and also when not a number (noted in `problems`)."""
    value = block.get(key)
    if value is None or _is_number(value):
        return value
    problems.append(f"field '{where}' is not a number: ignored")
    return None


# ------------------------------------------------------------------------------------------------ data
SIDEBAR_ADVICE = "enter another data folder in the sidebar"  # the app's advice; the CLI's is --data DIR
CLI_ADVICE = "(pass --data DIR or set DERMAI_DATA)"  # dermai.data's advice, which the app's user cannot follow


def data_folder_problem(root: str | os.PathLike[str]) -> str | None:
    """Why a data folder (as typed in the sidebar) cannot be read: it does not exist, is a file, or holds no one
    metadata CSV; None when it can. Checked when typed, so the sidebar says so before a page fails."""
    path = Path(root)
    if not path.exists():
        return f"{root}: no such folder"
    if not path.is_dir():
        return f"{root}: not a folder"
    try:
        find_metadata_csv(path)
    except DataError as exc:
        return str(exc)
    except OSError as exc:
        return f"{root}: cannot be read ({exc.strerror or exc})"
    return None


def sidebar_words(message: str) -> str:
    """A data error's message with the command line's advice ("pass --data DIR or set DERMAI_DATA") replaced by
    the app's: the data folder is set in the sidebar."""
    return message.replace(CLI_ADVICE, f"({SIDEBAR_ADVICE})")


MANIFEST_ADVICE = "pass the run's manifest.csv with --manifest and the data folder it was trained on"  # evaluate's


def evaluation_words(message: str) -> str:
    """`sidebar_words` for the Evaluation page, whose user has no --manifest to pass either: a split that does
    not match the weights' asks for the folder they were trained on, entered in the sidebar."""
    return sidebar_words(message).replace(MANIFEST_ADVICE, "enter the data folder they were trained on in the sidebar")


def evaluation_splits(meta: Mapping[str, Any], data: str | os.PathLike[str] | None) -> list[str]:
    """The splits the Evaluation page offers: test and val of the weights' own folder; for another folder "all"
    first (an external set has no split of these weights: asking it for one failed with a split mismatch or
    "class absent from the train split"), which scores it less the images the weights were trained or tuned on.
    Test and val stay offered there while the weights record a split, since the folder may be a copy of the
    training data at another path (./data/ham10000 here, ../shared/… where they were trained): its split is
    rebuilt and checked against their checksum."""
    own = weights_data_folder(meta)
    if not data or (own is not None and same_file(data, own)):
        return ["test", "val"]
    return ["all", "test", "val"] if meta.get("manifest_sha256") else ["all"]


def external_note(report: Mapping[str, Any]) -> tuple[str, str] | None:
    """("info" or "warning", words) saying what an external folder's score left out as seen in training, or
    that the overlap could not be checked; None for the weights' own split."""
    external = report.get("external")
    if not external:
        return None
    from dermai.evaluate import external_line

    line = external_line(external)  # the CLI's words: what was left out, or that the overlap was not checked
    if not external.get("overlap_checked"):
        return "warning", line[0].upper() + line[1:]
    words = f"External folder: {report.get('n_images')} images scored; {line}."
    return ("warning" if external.get("n_own_test") else "info"), words


def notes_below(report: Mapping[str, Any]) -> list[str]:
    """An evaluation's notes as the Evaluation page lists them below its figures: all but the weak context fit's,
    which the page already shows as a warning above the context figures (`context.weak_fit`), so it is not
    said twice."""
    unreliable = (report.get("context") or {}).get("unreliable")
    return [note for note in report.get("notes", []) if not (unreliable and note.startswith(unreliable))]


def unreliable_context_figures(ctx: Mapping[str, Any]) -> pd.DataFrame:
    """A weak patient-context fit's figures (`context.weak_fit`: its field weights and cut-offs rest on a few
    dozen validation images) as a plain table, each figure's name saying "(unreliable)": the Evaluation page
    shows them only in a collapsed expander, never as headline metrics beside the image-only ones, where they
    read as results. Missing figures are a dash."""

    def text(value: Any) -> str:
        return f"{value:.3f}" if _is_number(value) else MISSING

    rows = [("AUROC", text(ctx.get("auroc"))), ("ECE", text(ctx.get("ece_malignant")))]
    for tier, rates in (ctx.get("thresholds") or {}).items():
        rows += [(f"{tier} {name}", text(rates.get(name))) for name in ("sensitivity", "specificity")]
    rows.append(("images with some context", str(ctx.get("n_with_context", MISSING))))
    return pd.DataFrame(
        {"figure": [f"{name} (unreliable)" for name, _ in rows[:-1]] + [rows[-1][0]], "value": [v for _, v in rows]}
    )


TIER_FIGURES = ("threshold", "sensitivity", "specificity", "ppv", "npv")


def tier_table(report: Mapping[str, Any]) -> pd.DataFrame | None:
    """Each tier's cut-off and figures on the scored images, as the Evaluation page tables them (a row per tier);
    None without validated cut-offs. A folder of one class still has its rows: the rate it cannot give (an
    all-benign folder's sensitivity) is None, and the report's notes say why."""
    tiers = report.get("thresholds") or {}
    if not tiers:
        return None
    rows = [{"tier": name, **{figure: rates[figure] for figure in TIER_FIGURES}} for name, rates in tiers.items()]
    return pd.DataFrame(rows).set_index("tier")


def browse_dataset(root: str | os.PathLike[str] | None) -> Dataset:
    """A folder's dataset with the default split (seed 0) attached; a folder too small to split gets
    split "all" so it can still be browsed. A folder that cannot be read raises a DataError in the app's words
    (`data_folder_problem`)."""
    if root and (problem := data_folder_problem(root)):
        raise DataError(f"{problem} ({SIDEBAR_ADVICE})")
    try:
        dataset = load_dataset(root or None)
    except DataError as exc:
        raise DataError(sidebar_words(str(exc))) from exc
    try:
        return attach_splits(dataset)
    except DataError:
        meta = dataset.meta.assign(split="all", labelled=True)
        return Dataset(dataset.root, meta, dataset.classes, dataset.mode, dataset.csv_path)


def filter_meta(
    meta: pd.DataFrame,
    dx: Sequence[str] = (),
    malignant: str = "all",
    splits: Sequence[str] = (),
    age: tuple[float, float] | None = None,
    sexes: Sequence[str] = (),
    sites: Sequence[str] = (),
    include_unknown_age: bool | None = None,
) -> pd.DataFrame:
    """Rows matching every filter; an empty selection means no filter on that column. Images with no recorded
    age pass the age filter when `include_unknown_age` says so; by default (None) only while `age` spans every
    recorded age (the slider's full range, no age filter): a narrowed range (40-45) asks for those ages, and
    images of unknown age among them read as a filter that does not work."""
    keep = pd.Series(True, index=meta.index)
    if dx:
        keep &= meta["dx"].isin(dx)
    if malignant in ("benign", "malignant"):
        keep &= meta["malignant"] == int(malignant == "malignant")
    if splits:
        keep &= meta["split"].isin(splits)
    if age is not None:
        in_range = meta["age"].between(age[0], age[1])
        if include_unknown_age is None:
            known = meta["age"].dropna()
            include_unknown_age = known.empty or (age[0] <= known.min() and age[1] >= known.max())
        keep &= in_range | (meta["age"].isna() & include_unknown_age)
    if sexes:
        keep &= meta["sex"].isin(sexes)
    if sites:
        keep &= meta["localization"].isin(sites)
    return meta[keep]


def no_match_words(meta: pd.DataFrame, dx: Sequence[str], malignant: str) -> str:
    """What the Dataset browser says where its filtered views would be when no image matches. Diagnoses that
    cannot be of the chosen kind (df with "malignant" only: df is benign) are named as the reason, read from
    the folder's own labels, so the user sees which filter to change rather than an empty page."""
    words = "No image matches these filters"
    if not dx or malignant not in ("benign", "malignant"):
        return words + "."
    wanted = int(malignant == "malignant")
    labels = meta.groupby(meta["dx"].astype(object))["malignant"].agg(set)  # the labels each diagnosis has here
    other = [d for d in dx if wanted not in labels.get(d, {int(d in MALIGNANT)})]  # MALIGNANT: none in the folder
    if len(other) != len(dx):  # one of them can be of that kind: the other filters rule it out
        return words + "."
    kind = "malignant" if wanted == 0 else "benign"
    names = ", ".join(other[:-1]) + f" and {other[-1]}" if len(other) > 1 else other[0]
    return f"{words}: {names} {'are' if len(other) > 1 else 'is'} {kind}."


def with_class_names(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with a diagnosis for every image: a folder that records only benign or malignant (binary mode,
    no dx) gets those words, so the Dataset browser's class distribution is drawn for it too, not left out."""
    names = rows["malignant"].map({0: "benign", 1: "malignant"})
    return rows.assign(dx=rows["dx"].astype(object).where(rows["dx"].notna(), names))


def detail_values(row: Mapping[str, Any], fields: Sequence[str]) -> pd.Series:
    """One image's metadata as the Dataset browser's detail table shows it, as text: a missing value (an age the
    CSV does not record) is MISSING rather than "nan" or "None", and a whole number has no ".0" (age 45)."""

    def text(value: Any) -> str:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return MISSING
        if isinstance(value, float | np.floating) and float(value).is_integer():
            return str(int(value))
        return str(value)

    return pd.Series({field: text(row.get(field)) for field in fields}, name="value")


def caption(row: Mapping[str, Any]) -> str:
    """One grid caption: id, diagnosis, age/sex."""
    age = "?" if pd.isna(row.get("age")) else f"{row['age']:.0f}"
    label = row.get("dx") or ("malignant" if row["malignant"] else "benign")
    return f"{row['image_id']} · {label} · {age}/{row['sex']}"


IMAGE_SUFFIXES = tuple(sorted(READ_EXTENSIONS))  # a file name pasted for its image id ("ISIC_0024306.jpg")


def _image_id(given: str, known: set[str], folded: Mapping[str, str]) -> str | None:
    """The folder's image id that `given` names: itself, its file name's stem, or either in another case
    ("isic_0024306"); None when none is in the folder."""
    stem = given[: -len(Path(given).suffix)] if given.lower().endswith(IMAGE_SUFFIXES) else given
    exact = next((name for name in (given, stem) if name in known), None)
    return exact or folded.get(given.casefold()) or folded.get(stem.casefold())


def images_by_id(meta: pd.DataFrame, text: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows of the image ids in `text` (typed or pasted: commas, semicolons, spaces or line breaks between
    them; a file name stands for its id, case aside) in the order given, each once, and the ids the folder does
    not have, so the Augmentation lab can name them rather than drop them unsaid."""
    known = set(meta["image_id"])
    folded = {name.casefold(): name for name in known}
    found: list[str] = []
    missing: list[str] = []
    for given in re.split(r"[,;\s]+", text.strip()):
        image_id = _image_id(given, known, folded) if given else None
        if image_id is not None and image_id not in found:
            found.append(image_id)
        elif image_id is None and given and given not in missing:
            missing.append(given)
    rows = meta.set_index("image_id", drop=False).loc[found].reset_index(drop=True)
    return rows, missing


def read_images(paths: Sequence[str], size: InputSize) -> tuple[list[int], list[np.ndarray], list[str]]:
    """The image files decoded in the input frame `size`, each on its own: the positions of those read, their
    pixels, and a message naming each file that could not be (damaged, gone since the folder was read). One bad
    file among the Augmentation lab's choice then costs only its own preview."""
    read: list[int] = []
    pixels: list[np.ndarray] = []
    problems: list[str] = []
    for i, path in enumerate(paths):
        try:
            pixels.append(decode_image(path, size))
            read.append(i)
        except (DataError, OSError) as exc:
            problems.append(str(exc))
    return read, pixels, problems


SQUASH_NOTED = 1.5  # an upload whose long:short ratio is this far from the input's is said to be squashed
UPSAMPLE_NOTED = 0.25  # an upload with under this share of the input's pixels is said to be upsampled


def resize_note(image_size: tuple[int, int], size: InputSize) -> str | None:
    """What the Augmentation lab says under the preview of an upload (width, height) that `resize_input`
    squashes far out of shape (1000×20 into a square) or blows up from a few pixels (1×1): the preview is then
    of a distorted or empty image, and nothing else shows why. None for an ordinary photo (HAM10000's 4:3 into
    a square is how the paper trains)."""
    width, height = image_size
    frame_h, frame_w = input_frame(size)  # landscape, as resize_input turns a portrait upload
    ratio, frame_ratio = max(width, height) / min(width, height), frame_w / frame_h
    squashed = max(ratio / frame_ratio, frame_ratio / ratio) > SQUASH_NOTED
    upsampled = width * height < UPSAMPLE_NOTED * frame_w * frame_h
    if not (squashed or upsampled):
        return None
    if upsampled:
        text = f"The uploaded image is upsampled from {width}×{height} px" + (" and squashed" if squashed else "")
    else:
        text = f"The uploaded image ({width}×{height} px) is squashed"
    shape = f" (its shape {ratio:.3g}:1, the input's {frame_ratio:.3g}:1)" if squashed else ""
    return f"{text} to the {frame_w}×{frame_h} px input size{shape}."


def mask_path(root: str | os.PathLike[str], image_id: str) -> Path | None:
    """`<data>/masks/<id>_segmentation.png` when it exists."""
    path = lesion_mask_file(root, image_id)
    return path if path.exists() else None


def missing_masks_note(image_ids: Sequence[str], mask_files: Sequence[Path | None], named: int = 5) -> str | None:
    """What the Augmentation lab says in place of its "Outline the lesion masks" box when some chosen images have
    no mask file (`mask_path` None): which ones (the first `named`), so the missing box is not a silent mystery.
    None when every image has its mask."""
    missing = [i for i, f in zip(image_ids, mask_files, strict=True) if f is None]
    if not missing:
        return None
    if len(missing) == len(image_ids):
        whom = "this image has" if len(missing) == 1 else f"these {len(missing)} images have"
        return f"No lesion masks to outline: {whom} no lesion mask in the data folder's {MASK_FOLDER}/ folder."
    names = ", ".join(missing[:named]) + (f" and {len(missing) - named} more" if len(missing) > named else "")
    return (
        f"No lesion masks to outline: {len(missing)} of these {len(image_ids)} images "
        f"{'has' if len(missing) == 1 else 'have'} no lesion mask "
        f"({names}). Choose images that all have one to outline them."
    )


def mask_overlay(image_path: str | os.PathLike[str], mask: str | os.PathLike[str], alpha: float = 0.4) -> np.ndarray:
    """The image (decoded as training reads it: `intake.read_image`) with its lesion mask (≥ 128; oriented as
    its image by `data.read_mask`) tinted green and outlined, uint8 (H, W, 3)."""
    try:
        rgb = np.asarray(read_image(image_path, str(image_path)).image, dtype=np.float32)
    except IntakeError as exc:  # an IntakeError's message starts with the path, said once here
        reason = str(exc).removeprefix(f"{image_path}: ")
        raise DataError(f"{image_path}: cannot overlay mask {mask} ({reason})") from exc
    grey = read_mask(mask, image_path)  # a DataError naming the mask when it is unreadable or cannot be oriented
    binary = np.asarray(grey.resize(rgb.shape[1::-1], Image.Resampling.NEAREST)) >= 128
    tint = np.array([0.0, 255.0, 0.0], dtype=np.float32)
    out = rgb.copy()
    out[binary] = (1 - alpha) * rgb[binary] + alpha * tint
    return outline_mask(out.clip(0, 255).astype(np.uint8), binary)


def outline_mask(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of uint8 (H, W, 3) pixels with the boundary of a boolean (H, W) mask drawn in green."""
    if mask.shape != pixels.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the image {pixels.shape[:2]}")
    out = np.array(pixels, dtype=np.uint8, copy=True)
    out[mask ^ _erode(mask)] = (0, 255, 0)
    return out


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    return padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


# ---------------------------------------------------------------------------------------------- export
DISPLAY_MAX_SIDE = 1600  # px: a phone's 12-48 MP photo shown, overlaid and put in a report at full size took 9-25 s


def display_image(image: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """An image as shown on the page and in its report: shrunk (aspect kept) so that no side exceeds `max_side`;
    the model always scores the full image."""
    if max(image.size) <= max_side:
        return np.asarray(image)
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))


GALLERY_MAX_SIDE = 800  # px: a data folder's image in a tile or the detail view (HAM10000's are 600×450)


def gallery_image(path: str) -> np.ndarray:
    """A data folder's image as the Dataset and Evaluation pages show it: decoded as training reads it
    (`intake.read_image`: EXIF orientation, 16-bit and float data scaled, transparency on white, CMYK and
    colour profiles converted), which a browser handed the file could not always do (a TIFF, 16-bit data), and
    shrunk for the page. Raises DataError naming the file and what is wrong."""
    try:
        return display_image(read_image(path, name=path).image, GALLERY_MAX_SIDE)
    except IntakeError as exc:  # its message starts with the name given, here the path
        raise DataError(f"{path}: not a readable image ({str(exc).removeprefix(f'{path}: ')})") from exc


def png_bytes(pixels: np.ndarray | Image.Image) -> bytes:
    """An image as PNG bytes (for download buttons)."""
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


REPORT_DIGITS = 4  # probabilities and scores in the JSON report: 0.1843, not 0.18430744400080962
MS_DIGITS = 1  # timings ("…_ms"): 627.5, not 627.4686489999795


def _rounded(value: Any, key: str = "") -> Any:
    """A report payload with every float rounded for people reading it (timings to MS_DIGITS, other figures to
    REPORT_DIGITS), in nested dicts and lists too; numpy scalars become plain numbers on the way."""
    if isinstance(value, Mapping):
        return {k: _rounded(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v, key) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isfinite(value):
        return round(value, MS_DIGITS if key.endswith("_ms") else REPORT_DIGITS)
    return value


TTA_STARTED_FOR = "{key}_for"  # per checkbox: the (weights, validated setting) it last started from


def default_tta(state: MutableMapping[str, Any], key: str, weights: str, validated: bool) -> None:
    """Start the TTA checkbox `key` at the setting the weights' tier cut-offs were validated with, on first use
    and whenever other (or recalibrated) weights are chosen, so a tier means what its validated figures say; a
    choice made for these weights stays, across pages too."""
    marker = TTA_STARTED_FOR.format(key=key)
    if state.get(marker) != (weights, validated):
        state[key] = validated
        state[marker] = (weights, validated)


def tta_help(validated: bool, has_tiers: bool) -> str:
    """The TTA checkbox's help: what it does and, truthfully, which setting these weights' tiers hold for."""
    text = (
        "Average the model's scores over the 8 flips/rotations of the image (8 passes: about 4× the time of a "
        "plain prediction on a CPU, docs/benchmarks.md)."
    )
    if not has_tiers:
        return text + " These weights have no validated tier cut-offs."
    return (
        f"{text} These weights' tier cut-offs were validated with it {on_off(validated)}, so it starts "
        f"{on_off(validated)}: with the other setting a tier and its sensitivity and specificity describe another "
        "score."
    )


def prediction_report(prediction: Any, filename: str, weights: str, method: str | None = None) -> bytes:
    """The downloadable JSON report: the prediction (figures rounded, `_rounded`) plus what produced it."""
    payload = _rounded(prediction.to_dict() if hasattr(prediction, "to_dict") else dict(prediction))
    report = {
        "file": filename,
        "weights": weights,
        "saliency_method": method,
        "prediction": payload,
        "disclaimer": "A research and triage aid, not a diagnosis.",
    }
    return json.dumps(report, indent=2, default=_json_default).encode()


def unique_names(names: Sequence[str]) -> list[str]:
    """File names made distinct for the worklist ("a.jpg", "a.jpg (2)"): two uploads may share one."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


WORKLIST_OPTIONAL = ("p_malignant_image_only", "context", "notes")  # shown only when some image has one


UNGRADABLE = "ungradable"  # the tier `dermai.predict` gives an image the model cannot read
UNRELIABLE_SCORES = ("p_malignant", "top_diagnosis", "p_top_diagnosis", "p_malignant_image_only")
NO_SCORE_HELP = (
    "No score: the image is ungradable (out of distribution, blank, noise, greyscale or too small), so the "
    "model's output says nothing about the lesion. A person needs to look at it."
)


def blank_ungradable(table: pd.DataFrame) -> pd.DataFrame:
    """The worklist with an ungradable row's scores and top diagnosis blank (the table's dash): its numbers are
    the model's output on an image it cannot read. The order is kept; the CSV (`worklist_csv`, the CLI's too)
    keeps the numbers, with the tier beside them."""
    rows = table["tier"] == UNGRADABLE
    columns = [c for c in UNRELIABLE_SCORES if c in table]
    if not rows.any() or not columns:
        return table
    shown = table.copy()
    for column in columns:  # a number column keeps its type (NaN), a text one gets None
        shown.loc[rows, column] = None
    return shown


def without_note(notes: Any, note: str) -> Any:
    """A worklist row's notes ("; "-joined warnings) without one warning the page already shows once above the
    table (the weak-weights caveat, `predict.weak_weights_note`); None when nothing else is left."""
    if not isinstance(notes, str):
        return notes
    kept = notes.replace(f"{note}; ", "").replace(f"; {note}", "")
    return None if kept == note else kept


# What markdown (with Streamlit's "$…$" formulas and ":red[…]" colours) acts on anywhere in a line: escaped always.
# "_" only where it can open or close emphasis (not between two letters or digits, as in ISIC_0024306), so ids and
# paths read as typed in the page's words and its tests; "&" would turn "&lt;" into "<".
MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>$~|&])|(?<![^\W_])_|_(?![^\W_])")
MARKDOWN_LINE_START = re.compile(r"^(\d+(?=[.)])|(?=[#>+=-]))")  # a heading, quote, list or rule at a line's start


def markdown_plain(text: str) -> str:
    """`text` shown as itself in Streamlit markdown: a file name such as "__scan__.jpg", "$5 lesion.png" or
    "[x](javascript:…)" read as bold, a formula or a link. Each character markdown would act on is escaped, and
    line breaks become spaces (a name after them could start a heading or a list): one name, one line."""
    one_line = " ".join(text.splitlines())
    escaped = MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), one_line)
    return MARKDOWN_LINE_START.sub(lambda m: m.group(0) + "\\", escaped)  # "1. x" → "1\. x"


def name_refusal(name: str, field: str) -> str | None:
    """Why a typed run or ensemble name cannot name a new run (`jobs.check_run_name`), escaped for the page's
    markdown (`markdown_plain`): the refusal repeats the name, and "$x$ **b**" would read as a formula and bold
    type. None for a name it takes."""
    try:
        check_run_name(name, field)
    except JobError as exc:
        return markdown_plain(str(exc))
    return None


def worklist_notes(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(image, note) for each worklist row with notes, each note whole and without the image's name it repeats
    ("notes.jpg: not an image …"): the table's notes column is cut at its width, so Predict lists them below it,
    where why a file could not be scored can be read."""
    if "notes" not in table:
        return []
    noted = table[table["notes"].map(lambda notes: isinstance(notes, str) and bool(notes.strip()))]
    pairs = zip(noted["image"], noted["notes"], strict=True)
    return [(str(image), str(note).removeprefix(f"{image}: ")) for image, note in pairs]


def worklist_shown(table: pd.DataFrame, shown_above: str | None = None) -> pd.DataFrame:
    """The worklist as Predict shows it: an ungradable row's scores blank (`blank_ungradable`) and the optional
    columns no image has a value in left out, in the CSV's order (`worklist.COLUMNS`): image, tier and
    p(malignant) first and the wide notes last, so that in a narrow window the notes, not the score, are cut off
    (before, the notes sat beside the tier and pushed p(malignant) off an 800 px screen). `shown_above`: a
    warning the page shows once in a banner, left out of each row's notes (the CSV keeps it)."""
    table = blank_ungradable(table)
    if shown_above and "notes" in table:
        table = table.assign(notes=table["notes"].map(lambda notes: without_note(notes, shown_above)))
    return table.drop(columns=[c for c in WORKLIST_OPTIONAL if c in table and table[c].isna().all()])


WORKLIST_FORMATS = {"p_malignant": score_text, "p_malignant_image_only": score_text, "p_top_diagnosis": "{:.2f}"}


def worklist_styled(shown: pd.DataFrame) -> Any:
    """The shown worklist (`worklist_shown`) as a pandas Styler whose scores read as the single-image view and
    the report print them (`report.score_text`: "< 0.001", not "0.000", which reads as no chance at all),
    while the cells stay numbers, so the table still sorts by score (the CSV download keeps exact numbers).
    A missing score reads as the table's dash."""
    formats = {column: f for column, f in WORKLIST_FORMATS.items() if column in shown}
    return shown.style.format(formats, na_rep=MISSING)


UNSAFE_IN_FILE_NAMES = re.compile(r'[<>:"|?*\x00-\x1f\x7f]')  # refused by Windows, or control characters


def download_stem(name: str) -> str:
    """The start of a result's download file names: the upload's name without its extension, with the number
    `unique_names` gave a second upload of the same name ("a.jpg (2)" → "a_2"), so that its report does not
    take the first one's file name ("a_dermai.html") in the downloads folder. Only the name's last part: an
    upload named "../../x/a.jpg" or "C:\\scans\\a.jpg" (some browsers send the path) downloads as "a_…", and a
    character a file name cannot hold is "_"; "image" when nothing is left."""
    match = re.fullmatch(r"(.*) \((\d+)\)", name)
    base, number = (match.group(1), match.group(2)) if match else (name, None)
    base = UNSAFE_IN_FILE_NAMES.sub("_", re.split(r"[/\\]", base)[-1]).strip() or "image"
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    return f"{stem}_{number}" if number else stem


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


TOO_FEW = f"too few (< {SUBGROUP_MIN_PER_CLASS} per class)"  # short: the AUROC column's help says which


SUBGROUP_HELP = {  # the Evaluation page's column help: the labels stay short for an 800 px table
    "images": "Images of this group in the split",
    "malignant": "Malignant images among them: the count the sensitivity rests on",
    "AUROC": f"Malignant vs benign within the group, with its 95% interval (lesion-grouped bootstrap); only where "
    f"the group has at least {SUBGROUP_MIN_PER_CLASS} malignant and {SUBGROUP_MIN_PER_CLASS} benign images",
    "refer sens.": "Sensitivity at the validated refer cut-off: the share of the group's malignant images referred, "
    "with its 95% interval (Wilson, widened where a lesion has several images); a dash without malignant images",
    "refer spec.": "Specificity at the validated refer cut-off: the share of the group's benign images (images − "
    "malignant) not referred, with its 95% interval (Wilson, widened where a lesion has several images); a dash "
    "without benign images",
}


def subgroup_table(subgroups: Sequence[Mapping[str, Any]], field: str) -> pd.DataFrame:
    """One field's rows of an evaluation's `subgroups` as the Evaluation page shows them: a group per row, its
    counts, and its AUROC and the refer cut-off's rates each with its 95% interval as text, since "refer
    sensitivity 1.000" on 4 malignant images read as a certainty (`evaluate.interval_text`). A group too small
    to score says so in the AUROC's cell, since an empty cell alone reads as a missing figure. Age bands come in
    age order (`context.age_band_order`), as `evaluate` lists them now, also for a report written before it did."""
    chosen = [row for row in subgroups if row["field"] == field]
    if field == "age":
        chosen.sort(key=lambda row: age_band_order(row["group"]))
    rows = []
    for row in chosen:
        auroc = interval_text(row["auroc"], row.get("auroc_ci"))
        rows.append(
            {
                "group": row["group"],
                "images": row["n"],
                "malignant": row["n_malignant"],
                "AUROC": TOO_FEW if auroc is None else auroc,
                "refer sens.": interval_text(row.get("sensitivity"), row.get("sensitivity_ci")),
                "refer spec.": interval_text(row.get("specificity"), row.get("specificity_ci")),
            }
        )
    return pd.DataFrame(rows)


GALLERY_ORDER = {  # the order review.py sorts each kind of failure in, as the Evaluation gallery says it
    "missed": "the most confidently missed: lowest p(malignant) first",
    "false_alarm": "the most confidently flagged: highest p(malignant) first",
    "confusion": "the most confident first",
}


def gallery_note(kind: str, total: int, shown: int) -> str | None:
    """What the Evaluation page's failure gallery says when it shows only `shown` of `total` images: which ones
    and where the rest are, so "23 of 294 malignant images" beside 12 pictures is not read as all of them;
    None when it shows them all."""
    if total <= shown:
        return None
    return (
        f"Showing {shown} of {total} ({GALLERY_ORDER[kind]}). The per-image predictions CSV below lists every "
        "image with its tier and scores."
    )


def read_label_efficiency(folder: str | os.PathLike[str]) -> pd.DataFrame | None:
    """An experiment folder's summary.csv (fraction, init, auroc_mean, …), or None when the folder has none. The
    path of the summary.csv itself is taken too (else "No summary.csv in …/summary.csv"); a folder that does not
    exist raises, naming it, rather than reading as an experiment not run yet."""
    path = Path(folder)
    if not path.is_file():
        if not path.is_dir():
            raise DataError(f"{path}: no such folder")
        path = path / "summary.csv"
        if not path.exists():
            return None
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from exc
    missing = {"fraction", "init", "auroc_mean", "auroc_sd", "bacc_mean", "bacc_sd"} - set(table.columns)
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(sorted(missing))}")
    if table.empty:  # else an empty table and a blank plot, with nothing saying why
        raise DataError(f"{path}: no rows")
    for column in ("fraction", "auroc_mean", "auroc_sd", "bacc_mean", "bacc_sd"):  # else a plot of nonsense
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna()  # a blank cell (e.g. one seed: no SD) is allowed
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise DataError(f"{path}, row {row + 2}: {column} {table[column].iloc[row]!r} is not a number")
        table[column] = values
    return table


# --------------------------------------------------------------------------------------- embedding map
def embedding_map(
    weights: str | os.PathLike[str] | None,
    data: str | os.PathLike[str] | None,
    split: str = "test",
    limit: int = 1000,
    method: str = "pca",
    seed: int = 0,
) -> pd.DataFrame:
    """2-D projection (PCA or t-SNE) of the trunk features of ≤ `limit` images of the weights' own split (or,
    for split "all", of an external folder less its seen images): one row per image with image_id, path, dx,
    malignant, x, y."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from dermai.evaluate import score, split_rows
    from dermai.weights import load_weights

    loaded = load_weights(weights)
    _, rows, _ = split_rows(loaded, split, data or None)  # the rows `evaluate` scores for this split
    if len(rows) > limit:
        rows = rows.sample(n=limit, random_state=seed)
    if len(rows) < 3:
        raise ValueError(f"the {split} split has {len(rows)} images; need at least 3 for a map")
    _, features = score(loaded, rows["path"], with_features=True)
    assert features is not None
    if method == "tsne":
        xy = TSNE(n_components=2, perplexity=min(30.0, len(rows) - 1.0), init="pca", random_state=seed)
        coords = xy.fit_transform(features)
    elif method == "pca":
        coords = PCA(n_components=2, random_state=seed).fit_transform(features)
    else:
        raise ValueError(f"unknown projection {method!r} (pca or tsne)")
    out = rows[["image_id", "path", "dx", "malignant"]].reset_index(drop=True)
    out["dx"] = out["dx"].fillna(out["malignant"].map({0: "benign", 1: "malignant"}))
    out["x"], out["y"] = coords[:, 0], coords[:, 1]
    return out
