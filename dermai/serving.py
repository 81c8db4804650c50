"""Fit what serving needs beside the network, on validation data only, and store it in the weights.

Temperature scaling, the refer/urgent operating points and the OOD threshold are all choices; making them on
the test split would leave nothing honest to report. So they come from the validation split (OOD reference
statistics from training images), are written into the weights' JSON and extra tensors, and the test split is
scored later, once, by `dermai.evaluate`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from dermai import calibration, metrics
from dermai.data import recorded_folder
from dermai.evaluate import score, weights_dataset
from dermai.inference import calibrated_probs, class_log_prior, malignant_probability, softmax_np
from dermai.ood import check_percentile, fit_ood
from dermai.safe_write import write_json_atomic
from dermai.weights import FORMAT, WeightsError, load_weights, save_weights, untrained_classifier

MAX_OOD_TRAIN_IMAGES = 3000


def _stored_half(path: Path) -> bool:
    """Whether the file keeps float tensors in fp16, so re-saving keeps its size."""
    with safe_open(str(path), "pt") as handle:
        return any(handle.get_slice(key).get_dtype() == "F16" for key in handle.keys())


def pixel_cache(meta: dict[str, Any], cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The pixel cache folder to score with: `cache_dir` if given, else the one the weights' run trained with
    (its --cache-dir, recorded in the config), so calibration reuses the pixels training decoded rather than
    decoding them again into the default cache, which the run's owner chose not to fill. None: the default."""
    if cache_dir is not None:
        return str(cache_dir)
    config = meta.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    recorded = data.get("cache_dir") if isinstance(data, dict) else None
    return str(recorded_folder(recorded)) if isinstance(recorded, str) and recorded else None


def fit_serving(
    weights_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    refer_sensitivity: float = 0.95,
    urgent_specificity: float = 0.90,
    ood_percentile: float = 99.0,
    tta: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Fit temperature, operating points and OOD statistics on the weights' validation split (OOD reference
    from ≤ 3000 seeded training images) and re-save the weights in place; returns what was stored. Pixels
    are decoded through `cache_dir` (default: the run's own, `pixel_cache`).

    A patient-context model stored before is refitted too: its cut-offs and logits (TTA or not) follow the
    image model's, so keeping the old block would tier context predictions by the old settings."""
    metrics.check_fraction("refer sensitivity", refer_sensitivity)  # before minutes of scoring, not after
    metrics.check_fraction("urgent specificity", urgent_specificity)
    check_percentile(ood_percentile)
    loaded = load_weights(weights_path)
    untrained = untrained_classifier(loaded.meta)
    if untrained:  # its cut-offs would be validated figures of a classifier that never learned
        raise WeightsError(f"{weights_path}: {untrained}; fine-tune it before calibrating")
    dataset = weights_dataset(loaded.meta, data_dir, manifest, loaded.path.with_suffix(".json"))
    cache = pixel_cache(loaded.meta, cache_dir)
    rows = dataset.meta
    classes = list(loaded.meta["classes"])
    val = rows[rows["split"] == "val"]
    train = rows[rows["split"] == "train"]
    log_prior = training_log_prior(loaded.meta, train, len(classes))
    if len(train) > MAX_OOD_TRAIN_IMAGES:
        train = train.sample(n=MAX_OOD_TRAIN_IMAGES, random_state=0)

    val_logits, val_features = score(loaded, val["path"], tta=tta, with_features=True, cache_dir=cache)
    labels, y_mal = val["label"].to_numpy(), val["malignant"].to_numpy().astype(int)
    temperature = calibration.fit_temperature(val_logits, labels, log_prior)
    raw_p = malignant_probability(softmax_np(val_logits), classes)
    probs = calibrated_probs(val_logits, {"temperature": temperature, "log_prior": log_prior})
    p_mal = malignant_probability(probs, classes)
    points = metrics.choose_operating_points(y_mal, p_mal, refer_sensitivity, urgent_specificity)
    val_metrics = {
        "val_auroc": metrics.binary_metrics(y_mal, p_mal, n_boot=0)["auroc"],
        "val_bacc": metrics.multiclass_metrics(labels, softmax_np(val_logits), classes)["balanced_accuracy"],
        "val_nll_uncalibrated": calibration.nll(val_logits, labels),
        "val_nll": calibration.nll(val_logits, labels, temperature, log_prior),
        "val_ece_malignant_uncalibrated": calibration.expected_calibration_error(y_mal, raw_p),
        "val_ece_malignant": calibration.expected_calibration_error(y_mal, p_mal),
        "n_val": len(val),
    }

    meta = {k: v for k, v in loaded.meta.items() if k not in ("format", "context")}
    had_context = bool(loaded.meta.get("context"))  # an empty block is none (weights.check_serving_fields)
    meta.update(
        temperature=temperature,
        log_prior=log_prior,
        operating_points=points,
        val_metrics={**meta.get("val_metrics", {}), **val_metrics},
        serving={"fitted_on": "val", "tta": tta, "manifest_sha256": meta["manifest_sha256"], "n_val": len(val)},
    )
    extra: dict[str, torch.Tensor] = dict(loaded.extra)
    _, train_features = score(loaded, train["path"], tta=tta, with_features=True, cache_dir=cache)
    stats = fit_ood(train_features, val_features, percentile=ood_percentile)
    meta["ood"] = stats.to_meta()
    meta["serving"]["n_train_ood"] = len(train)
    extra.update(stats.to_tensors())
    save_weights(loaded.model, loaded.path, meta, extra=extra, half=_stored_half(loaded.path))
    fitted = {
        "weights": str(loaded.path),
        "temperature": temperature,
        "operating_points": points,
        "ood": meta.get("ood"),
        "val_metrics": val_metrics,
        "serving": meta["serving"],
    }
    if had_context:
        fitted["context"] = fit_context_if_possible(loaded.path, data_dir, manifest, cache_dir)
    return fitted


def training_log_prior(meta: dict[str, Any], train: Any, n_classes: int) -> list[float] | None:
    """log class frequencies of the labelled training images, for logits that carry a uniform prior; None for
    weights without a training config (how their loss treated the classes is unknown).

    `dermai.train` fine-tunes either on class-balanced batches (balanced_sampling) or, without them, with a
    cross-entropy weighted by 1 / class frequency: both losses are minimised by the uniform-prior posterior,
    so both need the prior added back, and no setting turns off both."""
    if not meta.get("config", {}).get("train"):
        return None
    labelled = train[train["labelled"]] if "labelled" in train.columns else train
    return class_log_prior(labelled["label"].to_numpy(), n_classes)


# What a calibration can fail with short of a bug: a bad split or weights (ValueError: DataError, WeightsError,
# EvaluationError), a disk that is full or read-only (OSError), a device out of memory (RuntimeError).
CALIBRATION_FAILURES = (ValueError, OSError, RuntimeError)


def calibrate_run(weights: Path | None, status: str, stages: Sequence[str]) -> dict[str, Any]:
    """The trainer's last step: fit serving fields on a run's final weights when its fine-tuning finished,
    using the run folder's manifest and pixel cache. Returns a metrics.jsonl record; a failure, a bad split
    or a full disk alike, is reported there instead of failing a finished run (the weights stay usable and
    `python -m dermai calibrate` can be rerun), so the run still ends with its status record."""
    record: dict[str, Any] = {"kind": "serving"}
    if weights is None or status != "finished" or "finetune" not in stages:
        return {**record, "status": "skipped"}
    manifest = weights.parent / "manifest.csv"
    found = manifest if manifest.exists() else None
    try:
        fitted = fit_serving(weights, manifest=found)
    except CALIBRATION_FAILURES as exc:
        return {**record, "status": "failed", "error": str(exc)}
    record.update(status="fitted", temperature=fitted["temperature"], **fitted["val_metrics"])
    try:
        context = fit_context_if_possible(weights, manifest=found)
    except CALIBRATION_FAILURES as exc:  # the image model is calibrated and complete without it
        context = {"status": "failed", "reason": str(exc)}
    return {**record, "context": context}


def fit_context_if_possible(
    weights: Path,
    data_dir: str | os.PathLike[str] | None = None,
    manifest: Path | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Fit the patient-context model after serving when the data record context; a folder without age, sex
    or site (or too few images) is reported, not raised: the image-only model is complete without it."""
    try:
        fitted = fit_context(weights, data_dir, manifest=manifest, cache_dir=cache_dir)
    except ValueError as exc:
        return {"status": "skipped", "reason": str(exc)}
    return {"status": "fitted", "val_auroc": fitted["val_metrics"]["val_auroc"], "unreliable": fitted["unreliable"]}


def fit_context(
    weights_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    precision: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Fit the patient-context model (`dermai.context`) beside calibrated weights and store it in their JSON:
    field tables from the training split's metadata, field weights, temperature and operating points from the
    validation split. The tensors are not touched. Returns what was stored, and `unreliable`: why its figures
    are no result (`context.weak_fit`), else None. Pixels are decoded through
    `cache_dir` (default: the run's own, `pixel_cache`)."""
    from dermai import context as ctx

    loaded = load_weights(weights_path)
    meta = {k: v for k, v in loaded.meta.items() if k != "format"}
    points = meta.get("operating_points")
    if not points:
        raise ValueError(f"{loaded.path}: calibrate these weights first (`python -m dermai calibrate`)")
    rows = weights_dataset(meta, data_dir, manifest, loaded.path.with_suffix(".json")).meta
    classes = list(meta["classes"])
    train, val = rows[rows["split"] == "train"], rows[rows["split"] == "val"]
    if "labelled" in train.columns:
        train = train[train["labelled"]]
    tables = ctx.fit_tables(ctx.contexts_from_rows(train), train["label"].to_numpy(), len(classes))
    if not tables:
        raise ValueError(f"the training images of {loaded.path}'s split record no age, sex or site")

    tta = bool((meta.get("serving") or {}).get("tta", False))
    val_logits, _ = score(loaded, val["path"], tta=tta, precision=precision, cache_dir=pixel_cache(meta, cache_dir))
    val_contexts = ctx.contexts_from_rows(val)
    labels, y_mal = val["label"].to_numpy(), val["malignant"].to_numpy().astype(int)
    terms = ctx.field_terms(val_contexts, tables, len(classes))
    temperature, weights = ctx.fit_weights(val_logits, labels, terms, meta.get("log_prior"))
    block: dict[str, Any] = {
        "fields": {name: {"weight": weights[name], "table": table} for name, table in tables.items()},
        "temperature": temperature,
        "smoothing": ctx.SMOOTHING,
    }
    z, used = ctx.context_logits(val_logits, {**meta, "context": block}, val_contexts)
    probs = softmax_np(z)
    p_mal = malignant_probability(probs, classes)
    image_only = malignant_probability(calibrated_probs(val_logits, meta), classes)
    block["operating_points"] = metrics.choose_operating_points(
        y_mal, p_mal, points["refer"].get("target", 0.95), points["urgent"].get("target", 0.90)
    )
    balanced = softmax_np(z - np.asarray(meta["log_prior"])) if meta.get("log_prior") else probs  # argmax p/prior
    block["val_metrics"] = {
        "val_auroc": metrics.binary_metrics(y_mal, p_mal, n_boot=0)["auroc"],
        "val_auroc_image_only": metrics.binary_metrics(y_mal, image_only, n_boot=0)["auroc"],
        "val_bacc": metrics.multiclass_metrics(labels, balanced, classes)["balanced_accuracy"],
        "val_nll": float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean()),
        "val_ece_malignant": calibration.expected_calibration_error(y_mal, p_mal),
        "n_val": len(val),
        "n_val_with_context": int(used.sum()),
    }
    block["fitted_on"] = {"tables": "train", "weights": "val", "n_train": len(train), "tta": tta}
    meta["context"] = block
    write_json_atomic(loaded.path.with_suffix(".json"), {"format": FORMAT, **meta})
    return {
        "weights": str(loaded.path),
        **{k: v for k, v in block.items() if k != "fields"},
        "weights_per_field": weights,
        "unreliable": ctx.weak_fit(meta),  # why its figures are no result (too few validation images), else None
    }
