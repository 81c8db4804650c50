"""Score weights on the split they were trained against, and report it honestly.

The split is the weights' own: a manifest, or the split rebuilt from the weights' config, whose sha256 must
equal the one stored at training time — otherwise a "test" score could include training images. An external
folder (`split="all"`, named with `data_dir`) is scored less the images the weights were trained or tuned on
(`unseen_rows`; the weights' own training folder is refused), and the report's `external` block says how many
were left out or that the overlap could not be checked. Every figure comes with the all-benign baseline, AUROC
with a lesion-grouped bootstrap interval, calibration, and the validated operating points re-checked (never
re-tuned) on these data. The metric functions live in `dermai.metrics` and `dermai.calibration`.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from dermai import calibration, context, metrics
from dermai.config import run_config_from_dict
from dermai.context import MAX_AGE, age_band, age_band_order
from dermai.data import DataError, Dataset, load_dataset, recorded_folder
from dermai.inference import (
    calibrated_probs,
    default_device,
    forward_pixels,
    malignant_probability,
    normalisation,
    softmax_np,
)
from dermai.pixel_cache import MASK_FOLDER, lesion_mask_file, load_pixels, read_mask
from dermai.predict import tta_mismatch, validated_tta
from dermai.preprocess import landscape, meta_input_size
from dermai.safe_write import atomic_target, spreadsheet_csv
from dermai.splits import attach_splits, manifest_checksum
from dermai.weights import LoadedWeights, load_weights

SCORED_SPLITS: tuple[str, ...] = ("train", "val", "test", "all")


def subgroup_fields(rows: pd.DataFrame) -> dict[str, list[str]]:
    """Each image's sex, age band and body site, from the columns a data folder has ("unknown" where blank, or
    an age outside 0–MAX_AGE years): the groups the model card's limits are about."""
    fields: dict[str, list[str]] = {}
    for field, column in (("sex", "sex"), ("site", "localization")):
        if column in rows:
            text = rows[column].astype("string").str.strip().fillna("").replace("", "unknown")
            fields[field] = text.tolist()
    if "age" in rows:
        ages = pd.to_numeric(rows["age"], errors="coerce").astype(float)
        ages = ages.where(ages.between(0, MAX_AGE))  # -5 or 200 is a typing error, as the context model reads it
        fields["age"] = [age_band(a) for a in ages]
    return fields


class EvaluationError(ValueError):
    """The requested evaluation cannot be done faithfully; the message says why and what to pass."""


def weights_dataset(
    meta: dict[str, Any],
    data_dir: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
) -> Dataset:
    """The dataset split exactly as when the weights were trained: from `manifest`, else rebuilt from the
    weights' config (seed, fractions, limit, label fraction), checked against meta["manifest_sha256"].
    `json_path`, the weights' JSON file, is named when it cannot describe the split."""
    where = f"{json_path}: " if json_path else ""
    if "config" not in meta or not meta.get("manifest_sha256"):
        raise EvaluationError(
            f"{where}the weights' JSON has no training config or manifest_sha256; cannot rebuild their split"
        )
    try:
        data = run_config_from_dict(meta["config"]).data
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise EvaluationError(f"{where}the weights' JSON field 'config' describes no usable split ({exc})") from None
    if data_dir is None and data.data_dir and recorded_folder(data.data_dir).is_dir():
        data_dir = recorded_folder(data.data_dir)
    source = manifest or data.manifest
    dataset = attach_splits(
        load_dataset(data_dir),
        seed=data.seed,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        label_fraction=data.label_fraction,
        manifest=source,
        limit=None if source else data.limit,
    )
    checksum = manifest_checksum(dataset)
    if checksum != meta["manifest_sha256"]:
        how = f"manifest {source}" if source else f"the weights' config (seed {data.seed}, limit {data.limit})"
        raise EvaluationError(
            f"split mismatch: the split from {how} on {dataset.root} has sha256 {checksum[:12]}…, but the weights "
            f"were trained on {meta['manifest_sha256'][:12]}…; pass the run's manifest.csv with --manifest and "
            "the data folder it was trained on"
        )
    return dataset


def _own_split(meta: dict[str, Any], dataset: Dataset, model: str = "") -> Dataset | str:
    """The split these weights were trained on, rebuilt (`weights_dataset`), or why it cannot be. Their training
    folder itself is refused as an external folder: its held-out images are their test split. `model` ("A",
    "B") names one of two compared models of different splits, which share no held-out images there."""
    try:
        own = weights_dataset(meta)
    except (EvaluationError, DataError) as exc:
        return str(exc)
    if own.root.resolve() == dataset.root.resolve():
        if not model:
            raise EvaluationError(
                f"{dataset.root} is the folder these weights were trained on: score its held-out images with "
                "--split test (or val), not --split all"
            )
        raise EvaluationError(
            f"{dataset.root} is the folder model {model} was trained on: models of different splits share no "
            "held-out images there; compare them on another (external) folder with --split all"
        )
    return own


def _ids(own: Dataset, splits: Sequence[str]) -> set[str]:
    """The image ids of some splits of a rebuilt split."""
    return set(own.meta.loc[own.meta["split"].isin(splits), "image_id"])


def unseen_rows(
    meta: dict[str, Any], dataset: Dataset, other: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An external folder's rows (split "all") without the images these weights were trained or tuned on.

    External sets often share images with the training data (ISIC 2019 holds all of HAM10000 under the same
    ids); scoring those would report memory as generalisation. The weights' own split is rebuilt to find them:
    the training folder itself is refused (its held-out images are the test split), train and validation ids
    are dropped and counted, and its test images kept but counted (`n_own_test`): unseen, yet from the training
    folder, so not evidence of generalisation to other clinics. When the weights' split cannot be rebuilt (no
    config, folder gone), the report says the overlap was not checked.

    `other` is a second model's meta (`compare_weights`' B, trained on another split than A, `meta`): the rows
    kept are those neither saw, so that both are scored on images new to each; `n_excluded` counts that union
    and `n_excluded_each` each model's share of it ({"A": …, "B": …}). Where either split cannot be rebuilt
    the comparison is refused, since its fairness rests on leaving out both."""
    rows = dataset.meta.assign(split="all")
    metas = {"": meta} if other is None else {"A": meta, "B": other}
    owns: dict[str, Dataset] = {}
    for model, model_meta in metas.items():
        own = _own_split(model_meta, dataset, model)
        if isinstance(own, str) and not model:
            return rows, {"overlap_checked": False, "reason": own, "n_excluded": 0}
        if isinstance(own, str):  # a model of another split may have trained on any of the other's images
            raise EvaluationError(
                f"model {model}'s training images cannot be found ({own}), so models of different splits cannot "
                "be compared fairly on this folder: compare models of one split"
            )
        owns[model] = own
    seen = {model: _ids(own, ["train", "val"]) for model, own in owns.items()}
    kept = rows[~rows["image_id"].isin(set().union(*seen.values()))].reset_index(drop=True)
    if kept.empty:
        who = "these weights" if other is None else "one of these models"
        raise EvaluationError(f"every image of {dataset.root} was used to train or tune {who}")
    held_out = set().union(*(_ids(own, ["test"]) for own in owns.values()))
    report = {
        "overlap_checked": True,
        "training_data": " and ".join(dict.fromkeys(str(own.root) for own in owns.values())),  # each folder once
        "n_excluded": len(rows) - len(kept),
        "n_own_test": int(kept["image_id"].isin(held_out).sum()),  # scored, but from the training folder
    }
    if other is not None:
        report["n_excluded_each"] = {model: int(rows["image_id"].isin(ids).sum()) for model, ids in seen.items()}
    return kept, report


def score(
    loaded: LoadedWeights,
    paths: Sequence[str],
    tta: bool = False,
    with_features: bool = False,
    precision: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 2,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (and trunk features) for image files, resized and normalised exactly as for prediction.

    The images are decoded through the pixel cache (`cache_dir`, default the data's). The forward runs on
    `device`, by default the GPU when there is one, on a copy of the model: the loaded one stays on the CPU,
    where saving and Grad-CAM expect it (a trainer's calibration on a borrowed GPU otherwise scored thousands of
    images on the CPU, side by side with other runs, for longer than the fine-tuning itself)."""
    meta = loaded.meta
    pixels = load_pixels(list(paths), meta_input_size(meta), cache_dir, workers)
    device = device if device is not None else default_device()
    mean, std = normalisation(meta)
    logits, features = forward_pixels(
        loaded.model if device.type == "cpu" else copy.deepcopy(loaded.model).to(device),
        pixels,
        mean=mean,
        std=std,
        with_features=with_features,
        tta=tta,
        precision=precision,
    )
    return logits.astype(np.float64), features  # float64: probabilities that sum to 1 for sklearn's checks


def probability_column(name: str) -> str:
    """The predictions column holding a class's probability: its name, except a binary model's, which are
    prefixed so they do not clash with the label column."""
    return name if name not in ("benign", "malignant") else f"p_{name}"


def saliency_plausibility(loaded: LoadedWeights, rows: pd.DataFrame, root: Path, limit: int) -> dict[str, Any]:
    """Does the model look at the lesion? Mean Grad-CAM mass inside the lesion mask (beside the mask's area
    share, what a uniform heatmap would score) and pointing-game hit rate, over a seeded sample of the split.
    Images without a mask are left out, and so are those whose mask cannot be read or oriented as its image
    (`pixel_cache.read_mask`), each named under `masks_left_out`."""
    try:
        from dermai.saliency import SaliencyExplainer, cam_mass_in_mask, pointing_game_hit
    except ImportError as exc:
        return {"skipped": f"dermai.saliency is not available ({exc})"}
    rows = rows.sample(n=min(limit, len(rows)), random_state=0) if limit else rows
    files = {i: lesion_mask_file(root, i) for i in rows["image_id"]}
    rows = rows[[files[i].exists() for i in rows["image_id"]]]
    if rows.empty:
        return {"skipped": f"no lesion masks found under {root / MASK_FOLDER}"}
    masks, left_out = {}, []
    for image_id, path in zip(rows["image_id"], rows["path"], strict=True):
        try:  # the heatmap is in the model's frame, as the cached pixels are: turned to landscape
            masks[image_id] = landscape(read_mask(files[image_id], path))
        except DataError as exc:
            left_out.append(str(exc))
    rows = rows[[i in masks for i in rows["image_id"]]]
    if rows.empty:
        return {"skipped": f"no lesion mask could be read: {left_out[0]}", "masks_left_out": left_out}
    meta = loaded.meta
    mean, std = normalisation(meta)
    explainer = SaliencyExplainer(
        loaded.model,
        classes=meta["classes"],
        temperature=float(meta.get("temperature") or 1.0),
        log_prior=meta.get("log_prior"),  # so "the predicted class" is the one a user would be shown
        mean=mean,
        std=std,
    )
    pixels = load_pixels(list(rows["path"]), meta_input_size(meta))
    mass, area, hits, blank = [], [], [], 0
    for image_id, image in zip(rows["image_id"], pixels, strict=True):
        heatmap = explainer.heatmap(np.asarray(image))  # the served top class's Grad-CAM
        blank += int(heatmap.max() <= 0)  # e.g. a 1×1 last block at small image sizes: no localisation at all
        mask = masks[image_id]
        mass.append(cam_mass_in_mask(heatmap, mask))
        area.append(cam_mass_in_mask(np.ones_like(heatmap), mask))
        hits.append(pointing_game_hit(heatmap, mask))
    return {
        "method": explainer.method,
        "n_images": len(mass),
        "n_blank_heatmaps": blank,
        "mean_cam_mass_in_mask": float(np.mean(mass)),
        "mean_mask_area_share": float(np.mean(area)),
        "pointing_game_hit_rate": float(np.mean(hits)),
    } | ({"masks_left_out": left_out} if left_out else {})


def score_rows(
    loaded: LoadedWeights,
    rows: pd.DataFrame,
    data_classes: Sequence[str],
    tta: bool = False,
    n_boot: int = 1000,
    precision: str = "auto",
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics and per-image predictions for dataset rows (image_id, path, dx, malignant, label, group, split)
    whose labels index `data_classes`; multiclass metrics only when those are the model's classes."""
    meta = loaded.meta
    classes = list(meta["classes"])
    temperature = float(meta.get("temperature") or 1.0)  # null: uncalibrated, as every other reader takes it
    logits, _ = score(loaded, rows["path"], tta=tta, precision=precision)
    probs = calibrated_probs(logits, meta)
    p_mal = malignant_probability(probs, classes)
    y_mal = rows["malignant"].to_numpy().astype(int)
    points = meta.get("operating_points")
    notes: list[str] = []
    if not points:
        notes.append("weights carry no validated operating points (run `python -m dermai calibrate`): no tiers")

    predictions = pd.DataFrame(
        {"image_id": rows["image_id"].to_numpy(), "split": rows["split"].to_numpy(), "p_malignant": p_mal}
    )
    for column, values in zip(map(probability_column, classes), probs.T, strict=True):
        predictions[column] = values
    predictions["dx"] = rows["dx"].to_numpy()
    predictions["malignant"] = y_mal
    predictions["tier"] = [metrics.assign_tier(p, points) for p in p_mal] if points else None
    predictions["predicted"] = None  # the decision rule's diagnosis, when the folder's classes are the model's
    predictions["path"] = rows["path"].astype(str).to_numpy()

    binary = None
    group = rows["group"].to_numpy()
    # each tier's sensitivity and specificity wherever its denominator has images: an all-benign folder's
    # specificity is well defined without the AUROC, which needs both classes
    tier_rates = metrics.tier_rates(y_mal, p_mal, {name: op["threshold"] for name, op in (points or {}).items()}, group)
    if 0 < y_mal.sum() < len(y_mal):
        binary = metrics.binary_metrics(y_mal, p_mal, n_boot=n_boot, group=group)
        binary["thresholds"] = tier_rates
        notes += few_cases_check(binary, y_mal, group)
    else:
        notes.append(one_class_note(y_mal, bool(points)))
    multiclass = None
    labels = rows["label"].to_numpy()
    if list(data_classes) == classes:
        # Decisions for balanced accuracy use the class-balanced logits (argmax p/prior), the rule that
        # minimises balanced error; the calibrated probabilities' own argmax is reported beside it.
        multiclass = metrics.multiclass_metrics(labels, softmax_np(logits), classes)
        predictions["predicted"] = np.asarray(classes)[logits.argmax(axis=1)]
        multiclass["decision_rule"] = "argmax of class-balanced logits (= argmax p/prior)"
        multiclass["balanced_accuracy_calibrated_argmax"] = metrics.multiclass_metrics(labels, probs, classes)[
            "balanced_accuracy"
        ]
        notes += single_diagnosis_check(multiclass)
    else:
        notes.append(f"the folder's labels ({', '.join(data_classes)}) are not the model's: binary metrics only")
    calib: dict[str, Any] = {
        "temperature": temperature,
        "ece_malignant": calibration.expected_calibration_error(y_mal, p_mal),
        "brier_malignant": calibration.brier_score(y_mal, p_mal),
        "reliability_malignant": calibration.reliability_bins(y_mal, p_mal),
    }
    if multiclass is not None:
        calib["ece_multiclass"] = calibration.multiclass_ece(labels, probs)
        calib["brier_multiclass"] = calibration.brier_score(labels, probs)
    subgroups = None
    fields = subgroup_fields(rows)
    if binary is not None and fields:
        refer = ((points or {}).get("refer") or {}).get("threshold")
        subgroups = metrics.subgroup_metrics(
            y_mal, p_mal, fields, refer, n_boot=n_boot, group=rows["group"].to_numpy(), order={"age": age_band_order}
        )
    context_report = None
    if meta.get("context") and binary is not None and {"age", "sex", "localization"} <= set(rows.columns):
        context_report = _score_with_context(logits, meta, rows, labels if multiclass else None, n_boot)
        if context_report["n_with_context"]:
            predictions["p_malignant_context"] = context_report.pop("p_malignant")
            predictions["tier_context"] = context_report.pop("tiers")
            if context_report.get("unreliable"):
                notes.append(f"{context_report['unreliable']}; no balanced accuracy with context is given")
        else:  # its figures would repeat the image-only ones under a "with patient context" heading
            context_report = None
            notes.append("no image records an age, sex or body site: no figures with patient context")
    report: dict[str, Any] = {
        "n_images": len(rows),
        "tta": tta,
        "auroc": binary["auroc"] if binary else None,
        "auroc_ci": binary["auroc_ci"] if binary else None,
        "balanced_accuracy": multiclass["balanced_accuracy"] if multiclass else None,
        "baseline_all_benign": {"accuracy": float((y_mal == 0).mean()), "balanced_accuracy": 0.5},
        "operating_points": points,
        "thresholds": tier_rates,
        "binary": binary,
        "multiclass": multiclass,
        "calibration": calib,
        "context": context_report,
        "subgroups": subgroups,
        "notes": notes,
    }
    return report, predictions


def one_class_note(y_mal: np.ndarray, has_tiers: bool) -> str:
    """Why a folder of one class (all benign or all malignant) has no AUROC, and which of each tier's figures it
    still has: specificity counts benign images, sensitivity malignant ones."""
    present, absent, kept, missing = (
        ("malignant", "benign", "sensitivity", "specificity")
        if y_mal.min() == 1
        else ("benign", "malignant", "specificity", "sensitivity")
    )
    note = f"only {present} images, no {absent} one: no AUROC, which needs both"
    if has_tiers:
        note += f"; at the cut-offs {kept} is given, but no {missing}, which counts {absent} images"
    return note


def single_diagnosis_check(multiclass: dict[str, Any]) -> list[str]:
    """A note, and no headline balanced accuracy, when the folder holds a single diagnosis: the mean recall over
    the diagnoses present is then that one's recall (a folder of melanomas showed "balanced accuracy 0.750"
    beside the 1/7 = 0.143 of guessing one diagnosis), which is no balanced accuracy. Its recall stays in
    `per_class_recall`."""
    present = [name for name, n in multiclass["support"].items() if n]
    if len(present) != 1:
        return []
    recall = multiclass["balanced_accuracy"]
    multiclass["balanced_accuracy"] = multiclass["balanced_accuracy_calibrated_argmax"] = None
    return [
        f"only one diagnosis ({present[0]}) in these images: no balanced accuracy, which needs two or more; "
        f"{present[0]} recall {recall:.3f}"
    ]


def few_cases_check(binary: dict[str, Any], y_mal: np.ndarray, group: np.ndarray) -> list[str]:
    """Notes when malignant or benign cases are too few for the AUROC to mean much. Below 2 cases (a patient
    or lesion counts once) of a class every bootstrap resample holds the same one, so the interval shows only
    the other class's variation (one melanoma among 60 naevi gave "0.950 (95% CI 0.914–1.000)"): it is
    removed. Below `metrics.SUBGROUP_MIN_PER_CLASS` the figure is kept with a warning."""
    notes = []
    for name, value in (("malignant", 1), ("benign", 0)):
        cases = len(set(group[y_mal == value]))
        if cases < 2:
            binary["auroc_ci"] = None
            notes.append(
                f"only {cases} {name} case (patient or lesion): the AUROC is where it ranks among the other class; "
                "no interval, since a bootstrap cannot resample a single case"
            )
        elif cases < metrics.SUBGROUP_MIN_PER_CLASS:
            notes.append(
                f"only {cases} {name} cases (patients or lesions): the AUROC and its interval rest on these few "
                "and are unreliable"
            )
    return notes


def _score_with_context(
    logits: np.ndarray, meta: dict[str, Any], rows: pd.DataFrame, labels: np.ndarray | None, n_boot: int
) -> dict[str, Any]:
    """The same images scored with each one's recorded patient context (`dermai.context`), as `predict` would
    with those fields given: images with no recorded context are scored image-only, with the image-only
    tiers. Figures beside the image-only ones in the report, never instead of them. A context model fitted on
    too few validation images (`context.weak_fit`) is marked "unreliable", with no balanced accuracy."""
    contexts = context.contexts_from_rows(rows)
    z, used = context.context_logits(logits, meta, contexts)
    probs = softmax_np(z)
    classes = list(meta["classes"])
    p_mal = malignant_probability(probs, classes)
    y_mal = rows["malignant"].to_numpy().astype(int)
    points = {"image": meta.get("operating_points"), "context": meta["context"].get("operating_points")}
    row_points = [points["context" if u else "image"] for u in used]
    tiers = [metrics.assign_tier(p, pts) if pts else None for p, pts in zip(p_mal, row_points, strict=True)]
    binary = metrics.binary_metrics(y_mal, p_mal, n_boot=n_boot, group=rows["group"].to_numpy())
    few_cases_check(binary, y_mal, rows["group"].to_numpy())  # its note is the image-only figures' one
    out: dict[str, Any] = {
        "fields": {name: field["weight"] for name, field in meta["context"]["fields"].items()},
        "n_with_context": int(used.sum()),
        "auroc": binary["auroc"],
        "auroc_ci": binary["auroc_ci"],
        "operating_points": points["context"],
        "thresholds": {},
        "ece_malignant": calibration.expected_calibration_error(y_mal, p_mal),
        "balanced_accuracy": None,
        "p_malignant": p_mal,
        "tiers": tiers,
    }
    if unreliable := context.weak_fit(meta):  # only then: a sound fit's report reads as before
        out["unreliable"] = unreliable
    if all(t is not None for t in tiers):
        flagged = {"refer": [t in ("refer", "urgent") for t in tiers], "urgent": [t == "urgent" for t in tiers]}
        groups = rows["group"].to_numpy()
        out["thresholds"] = {name: metrics.decision_rates(y_mal, np.array(f), groups) for name, f in flagged.items()}
    if labels is not None and not unreliable:  # a weak fit's argmax over rare diagnoses is noise
        log_prior = np.asarray(meta["log_prior"]) if meta.get("log_prior") else 0.0
        out["balanced_accuracy"] = metrics.multiclass_metrics(labels, softmax_np(z - log_prior), classes)[
            "balanced_accuracy"
        ]
    return out


def split_rows(
    loaded: LoadedWeights,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    other: dict[str, Any] | None = None,
) -> tuple[Dataset, pd.DataFrame, dict[str, Any] | None]:
    """The dataset and rows a split scores, and for split "all" the report's `external` block: "all" is the
    external folder `data_dir` less the images these weights were trained or tuned on (`unseen_rows`; also
    those `other`, a compared model of another split, was), any other split the weights' own
    (`weights_dataset`). One rule for `evaluate`, `compare_weights` and the Evaluation page."""
    external = None
    if split == "all":
        if data_dir is None:
            raise EvaluationError("--split all scores an external folder: name it with --data")
        dataset = load_dataset(data_dir)
        rows, external = unseen_rows(loaded.meta, dataset, other)
    else:
        dataset = weights_dataset(loaded.meta, data_dir, manifest, loaded.path.with_suffix(".json"))
        rows = dataset.meta[dataset.meta["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise EvaluationError(f"the {split} split of {dataset.root} is empty")
    return dataset, rows, external


def evaluate(
    weights_path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "test",
    manifest: str | os.PathLike[str] | None = None,
    tta: bool | None = None,
    n_boot: int = 1000,
    saliency: bool = False,
    saliency_limit: int = 200,
    precision: str = "auto",
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score one split of the weights' own data (or, with split="all", an external folder less its seen images);
    returns the JSON-ready report and one prediction row per image. `tta` None scores as the weights' cut-offs
    were validated (`dermai.predict.validated_tta`), so the re-checked operating points describe the score
    they were fitted on. `precision` "fp32" gives figures that repeat to float rounding on any CPU; "auto"
    computes in bf16 where the CPU has it (faster, not equal)."""
    if split not in SCORED_SPLITS:
        raise EvaluationError(f"unknown split {split!r} (one of {', '.join(SCORED_SPLITS)})")
    loaded = load_weights(weights_path)
    validated = validated_tta(loaded.meta)
    mismatch = tta_mismatch(loaded.meta, tta)
    tta = validated if tta is None else bool(tta)
    dataset, rows, external = split_rows(loaded, split, data_dir, manifest)
    checksum = None if split == "all" else loaded.meta["manifest_sha256"]
    scored, predictions = score_rows(loaded, rows, dataset.classes, tta=tta, n_boot=n_boot, precision=precision)
    report = {
        "weights": str(loaded.path),
        "data": str(dataset.root),
        "split": split,
        "manifest_sha256": checksum,
        **scored,
        "tta_validated": validated,
    }
    if mismatch:
        report["notes"] = [*scored["notes"], mismatch]
    if external is not None:
        report["external"] = external
    if saliency:
        report["saliency"] = saliency_plausibility(loaded, rows, dataset.root, saliency_limit)
    return report, predictions


def predictions_csv(predictions: pd.DataFrame) -> bytes:
    """The per-image predictions file, one for `evaluate --predictions` and the Evaluation page's download, so
    the same model and split give the same file from both. Full precision: researchers re-analyse it, and a
    score rounded to 4 places moves ties at the cut-offs. Opened in Excel too: an image named "=…" is no
    formula (`safe_write.spreadsheet_csv`)."""
    return spreadsheet_csv(predictions)


def write_outputs(
    report: dict[str, Any],
    predictions: pd.DataFrame,
    report_path: str | os.PathLike[str],
    predictions_path: str | os.PathLike[str],
) -> None:
    """Report JSON and predictions CSV, written together: both are written (and both places checked) before
    either is renamed into place, so an unwritable one leaves neither file behind. Each is written inside its
    own atomic write only, so a full disk is reported against the file whose write failed."""
    with atomic_target(Path(report_path)) as report_tmp:
        report_tmp.write_text(json.dumps(report, indent=2, default=str))
        with atomic_target(Path(predictions_path)) as predictions_tmp:
            predictions_tmp.write_bytes(predictions_csv(predictions))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


RATE_COUNTS = {"sensitivity": "malignant", "specificity": "benign"}  # the images each rate is a share of


def interval_text(value: float | None, ci: Sequence[float] | None) -> str | None:
    """A figure with its 95% interval for a table cell, "1.000 (0.51–1.00)", or None without a figure: a
    subgroup's sensitivity of 1.000 from 4 malignant images read as a certainty until its interval showed."""
    if value is None:
        return None
    return f"{value:.3f}" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else "")


def _rate_text(rates: dict[str, Any], rate: str) -> str:
    """A tier's sensitivity or specificity with its 95% interval, or why there is none (no images of the class
    it counts)."""
    value, ci = rates[rate], rates.get(f"{rate}_ci")
    if value is None:
        return f"n/a (no {RATE_COUNTS[rate]} images)"
    return f"{value:.3f}" + (f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def external_text(external: dict[str, Any]) -> str:
    """What an external folder's score left out as seen in training, and how many of the images it kept are
    the training folder's own held-out ones (same ids: an ISIC 2019 copy holds HAM10000's test split)."""
    each = external.get("n_excluded_each")  # two models of different splits (`unseen_rows`)
    if each:
        text = (
            f"left out {external['n_excluded']} images either model was trained or tuned on "
            f"({each['A']} of A's, {each['B']} of B's)"
        )
    else:
        text = f"left out {external['n_excluded']} images the weights were trained or tuned on"
    if external.get("n_own_test"):
        whose = "the models'" if each else "the weights'"
        text += (
            f"; {external['n_own_test']} of the images scored are {whose} own test images (same ids as in "
            f"{external['training_data']}), not external ones"
        )
    return text


def external_line(external: dict[str, Any]) -> str:
    """An external folder's line in the terminal summary: what was left out (`external_text`), or that the
    overlap with the training images could not be checked, and why."""
    if external["overlap_checked"]:
        return external_text(external)
    return f"overlap with the training images NOT checked: {external['reason']}"


def context_lines(ctx: dict[str, Any], n_images: int) -> list[str]:
    """The terminal's lines on the figures with patient context. A fit on too few validation images
    (`context.weak_fit`) is no result: its line says so before any figure and each figure is marked
    "(unreliable)", so that neither a reader nor a grep for "AUROC" takes it for a measurement."""
    mark = " (unreliable)" if ctx.get("unreliable") else ""
    ci = ctx["auroc_ci"]
    ci_text = f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
    head = f"with patient context ({ctx['n_with_context']} of {n_images} images have some)"
    if mark:
        figures = (
            f"UNRELIABLE fit, these figures are not results (see note): AUROC {_fmt(ctx['auroc'])}{mark}, "
            f"ECE {ctx['ece_malignant']:.3f}{mark}, balanced accuracy withheld"
        )
    else:
        figures = (
            f"AUROC {_fmt(ctx['auroc'])}{ci_text}, balanced accuracy {_fmt(ctx['balanced_accuracy'])}, "
            f"ECE {ctx['ece_malignant']:.3f}"
        )
    lines = [f"{head}: {figures}"]
    for name, rates in ctx["thresholds"].items():
        lines.append(
            f"  {name}{mark}: sensitivity {_fmt(rates['sensitivity'])}, specificity {_fmt(rates['specificity'])}"
        )
    return lines


def summary_text(report: dict[str, Any]) -> str:
    """A few lines for the terminal: the headline figures next to what they must beat."""
    ci = report["auroc_ci"]
    ci_text = f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
    base = report["baseline_all_benign"]
    calib = report["calibration"]
    lines = [
        f"{report['split']} split: {report['n_images']} images ({report['weights']})",
        f"AUROC malignant {_fmt(report['auroc'])}{ci_text}",
        f"balanced accuracy (diagnosis) {_fmt(report['balanced_accuracy'])}",
    ]
    if report.get("external"):
        lines.insert(1, external_line(report["external"]))
    for name, rates in (report.get("thresholds") or {}).items():
        lines.append(
            f"{name}: threshold {rates['threshold']:.3f}, sensitivity {_rate_text(rates, 'sensitivity')}, "
            f"specificity {_rate_text(rates, 'specificity')}"
        )
    lines.append(f"ECE malignant {calib['ece_malignant']:.3f}, temperature {calib['temperature']:.3f}")
    if report.get("context"):
        lines += context_lines(report["context"], report["n_images"])
    baseline = f"all-benign baseline: accuracy {base['accuracy']:.3f}, balanced accuracy 0.500 (malignant vs benign)"
    if report.get("balanced_accuracy") is not None:  # no diagnosis figure (binary labels): no baseline for one
        baseline += "; one diagnosis for every image: balanced accuracy (diagnosis) 1/7 = 0.143"
    lines.append(baseline)
    if report.get("subgroups"):
        lines.append(
            f"by subgroup (n, malignant, AUROC where both classes have {metrics.SUBGROUP_MIN_PER_CLASS}+, refer "
            "sensitivity / specificity with 95% CI):"
        )
        for row in report["subgroups"]:
            rates = ""
            if "sensitivity" in row:
                sens = interval_text(row["sensitivity"], row.get("sensitivity_ci")) or "n/a"
                spec = interval_text(row["specificity"], row.get("specificity_ci")) or "n/a"
                rates = f", {sens} / {spec}"
            lines.append(
                f"  {row['field']} {row['group']}: {row['n']}, {row['n_malignant']}, {_fmt(row['auroc'])}{rates}"
            )
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def _balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall over the diagnoses present, of the argmax (here of class-balanced probabilities)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample may lack a rare diagnosis that a model still predicts
        return float(balanced_accuracy_score(labels, probs.argmax(axis=1)))


def compare_weights(
    weights_a: str | os.PathLike[str] | None,
    weights_b: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "val",
    tta: bool = False,
    n_boot: int = 1000,
    manifest: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Two models scored on the same images: each one's malignant-vs-benign AUROC and 7-class balanced
    accuracy, and the paired differences B − A with lesion-grouped 95% intervals (`metrics.paired_bootstrap`).
    A difference whose interval spans 0 is within noise. `manifest` is the runs' split manifest, for a split
    that cannot be rebuilt from A's config (as `evaluate`). split="all" scores the external folder `data_dir`
    less the images either model was trained or tuned on (`split_rows`), and the result's `external` block says
    how many, as `evaluate`'s does: so models of different splits are compared there. On their val or test
    split they are refused: one of them would have trained on some of the other's held-out images."""
    if split not in ("val", "test", "all"):
        raise EvaluationError(
            f"compare models on their val or test split, not {split!r} (or on all of an external folder: split all)"
        )
    a, b = load_weights(weights_a), load_weights(weights_b)
    same_split = a.meta.get("manifest_sha256") == b.meta.get("manifest_sha256")
    if not same_split and split != "all":
        raise EvaluationError(
            f"{b.path} was trained on another split than {a.path} (manifest sha256 "
            f"{str(b.meta.get('manifest_sha256'))[:12]}… vs {str(a.meta.get('manifest_sha256'))[:12]}…): "
            f"their {split} images differ, so they cannot be compared on them. Compare them on an external folder "
            "instead (--split all --data FOLDER): it is scored less the images either model was trained or tuned on"
        )
    dataset, rows, external = split_rows(a, split, data_dir, manifest, None if same_split else b.meta)
    y_mal, group = rows["malignant"].to_numpy().astype(int), rows["group"].to_numpy()
    p_mal, balanced = {}, {}
    for name, loaded in (("a", a), ("b", b)):
        logits, _ = score(loaded, rows["path"], tta=tta)
        p_mal[name] = malignant_probability(calibrated_probs(logits, loaded.meta), list(loaded.meta["classes"]))
        balanced[name] = softmax_np(logits)  # the balanced decision rule: argmax of p / prior
    auroc = metrics.paired_bootstrap(y_mal, p_mal["a"], p_mal["b"], roc_auc_score, n_boot, group=group)
    result: dict[str, Any] = {
        "a": str(a.path),
        "b": str(b.path),
        "split": split,
        "n_images": len(rows),
        "tta": tta,
        "auroc": auroc,
        "balanced_accuracy": None,
    }
    if external is not None:
        result |= {"data": str(dataset.root), "external": external}
    if list(a.meta["classes"]) == list(b.meta["classes"]) == list(dataset.classes):
        labels = rows["label"].to_numpy()
        result["balanced_accuracy"] = metrics.paired_bootstrap(
            labels, balanced["a"], balanced["b"], _balanced_accuracy, n_boot, group=group
        )
    return result


def comparison_verdict(paired: dict[str, Any]) -> str:
    """A paired difference in words: which model is higher, or that the interval spans 0."""
    ci = paired.get("difference_ci")
    if not ci:
        return "no interval (too few resamples)"
    if ci[0] > 0:
        return "B is higher"
    if ci[1] < 0:
        return "A is higher"
    return "no clear difference (the interval spans 0)"


def comparison_text(result: dict[str, Any]) -> str:
    """The comparison for the terminal: one line per metric, with B − A and its interval."""
    lines = [f"{result['split']} split, {result['n_images']} images; A = {result['a']}, B = {result['b']}"]
    if result.get("external"):
        lines.append(external_line(result["external"]))
    for name, label in (("auroc", "AUROC malignant"), ("balanced_accuracy", "balanced accuracy (diagnosis)")):
        r = result.get(name)
        if not r:
            continue
        ci = r["difference_ci"]
        ci_text = f" (95% CI {ci[0]:+.3f} to {ci[1]:+.3f}, p {r['p_value']:.3f})" if ci else ""
        lines.append(
            f"{label}: A {r['a']:.4f}, B {r['b']:.4f}, B − A {r['difference']:+.4f}{ci_text}: {comparison_verdict(r)}"
        )
    lines.append("Intervals resample lesions together for both models; one that spans 0 is within noise.")
    return "\n".join(lines)
