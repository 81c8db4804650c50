"""Helpers behind the Streamlit pages that hold no UI: settings defaults, weight choices, the model card's
figures, dataset filters, mask overlays, the embedding map and report payloads. Pages call these and only lay
out what they return, so everything here can be tested without Streamlit.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from dermai.data import DataError, Dataset, attach_splits, lesion_mask_file, load_dataset, resolve_data_root
from dermai.ensemble import input_sizes_text
from dermai.jobs import runs_dir
from dermai.weights import DEFAULT_WEIGHTS, WeightsError, read_meta

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


def weight_choices(runs: str | os.PathLike[str] | None = None, current: str | None = None) -> dict[str, str]:
    """Weights file → label: the shipped weights, every run's model.safetensors below the runs folder, and the
    session's current choice, in that order."""
    choices: dict[str, str] = {}
    shipped = DEFAULT_WEIGHTS
    choices[str(shipped)] = "shipped weights/model.safetensors" + ("" if shipped.exists() else " (missing)")
    root = runs_dir(runs)
    if root.is_dir():
        for path in sorted(root.rglob("model.safetensors")):
            try:
                status = read_meta(path).get("status", "?")
            except (WeightsError, OSError):
                continue
            choices[str(path)] = f"{path.parent.relative_to(root)} ({status})"
    if current and current not in choices:
        choices[current] = f"{Path(current).parent.name}/{Path(current).name}"
    return choices


def weights_mtime(path: str) -> float:
    """A cache key part that changes when weights are re-saved (e.g. calibrated); 0 when missing."""
    try:
        return Path(path).stat().st_mtime + Path(path).with_suffix(".json").stat().st_mtime
    except OSError:
        return 0.0


# ----------------------------------------------------------------------------------------- model card
def model_card(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The figures the home page shows: AUROC (with interval and where it was measured), tier cut-offs with
    their validated sensitivity/specificity, training status and image size."""
    auroc, ci, source = None, None, None
    for key, prefix in (("test_metrics", ""), ("val_metrics", "val_")):
        block = meta.get(key) or {}
        value = block.get(f"{prefix}auroc", block.get("auroc"))
        if value is not None:
            auroc, ci, source = value, block.get(f"{prefix}auroc_ci", block.get("auroc_ci")), key.split("_")[0]
            break
    tiers = [
        {
            "tier": name,
            "threshold": point.get("threshold"),
            "sensitivity": point.get("sensitivity"),
            "specificity": point.get("specificity"),
        }
        for name, point in (meta.get("operating_points") or {}).items()
    ]
    return {
        "auroc": auroc,
        "auroc_ci": ci,
        "auroc_split": source,
        "tiers": tiers,
        "classes": list(meta.get("classes", [])),
        "image_size": meta.get("image_size"),
        "input_sizes": input_sizes_text(meta),
        "status": meta.get("status"),
        "temperature": meta.get("temperature"),
        "ood": bool(meta.get("ood")),
        "context": context_summary(meta),
    }


def context_summary(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The patient-context model in brief: each field's fitted weight, and its AUROC (test if scored, else
    validation) beside the image-only one; None without one."""
    block = meta.get("context")
    if not block:
        return None
    test = (meta.get("test_metrics") or {}).get("context")
    val = block.get("val_metrics") or {}
    return {
        "weights": {name: field["weight"] for name, field in block["fields"].items()},
        "auroc": test["auroc"] if test else val.get("val_auroc"),
        "auroc_image_only": meta["test_metrics"]["auroc"] if test else val.get("val_auroc_image_only"),
        "split": "test" if test else "val",
    }


# ------------------------------------------------------------------------------------------------ data
def browse_dataset(root: str | os.PathLike[str] | None) -> Dataset:
    """A folder's dataset with the default split (seed 0) attached; a folder too small to split gets
    split "all" so it can still be browsed."""
    dataset = load_dataset(root or None)
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
    include_unknown_age: bool = True,
) -> pd.DataFrame:
    """Rows matching every filter; an empty selection means no filter on that column."""
    keep = pd.Series(True, index=meta.index)
    if dx:
        keep &= meta["dx"].isin(dx)
    if malignant in ("benign", "malignant"):
        keep &= meta["malignant"] == int(malignant == "malignant")
    if splits:
        keep &= meta["split"].isin(splits)
    if age is not None:
        in_range = meta["age"].between(age[0], age[1])
        keep &= in_range | (meta["age"].isna() & include_unknown_age)
    if sexes:
        keep &= meta["sex"].isin(sexes)
    if sites:
        keep &= meta["localization"].isin(sites)
    return meta[keep]


def caption(row: Mapping[str, Any]) -> str:
    """One grid caption: id, diagnosis, age/sex."""
    age = "?" if pd.isna(row.get("age")) else f"{row['age']:.0f}"
    label = row.get("dx") or ("malignant" if row["malignant"] else "benign")
    return f"{row['image_id']} · {label} · {age}/{row['sex']}"


def mask_path(root: str | os.PathLike[str], image_id: str) -> Path | None:
    """`<data>/masks/<id>_segmentation.png` when it exists."""
    path = lesion_mask_file(root, image_id)
    return path if path.exists() else None


def mask_overlay(image_path: str | os.PathLike[str], mask: str | os.PathLike[str], alpha: float = 0.4) -> np.ndarray:
    """The image with its lesion mask (≥ 128) tinted green and outlined, uint8 (H, W, 3)."""
    try:
        with Image.open(image_path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
        with Image.open(mask) as m:
            binary = np.asarray(m.convert("L").resize(rgb.shape[1::-1], Image.Resampling.NEAREST)) >= 128
    except OSError as exc:
        raise DataError(f"{image_path}: cannot overlay mask {mask} ({exc})") from exc
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
def png_bytes(pixels: np.ndarray | Image.Image) -> bytes:
    """An image as PNG bytes (for download buttons)."""
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def prediction_report(prediction: Any, filename: str, weights: str, method: str | None = None) -> bytes:
    """The downloadable JSON report: the prediction plus what produced it."""
    payload = prediction.to_dict() if hasattr(prediction, "to_dict") else dict(prediction)
    report = {
        "file": filename,
        "weights": weights,
        "saliency_method": method,
        "prediction": payload,
        "disclaimer": "A research and triage aid, not a diagnosis.",
    }
    return json.dumps(report, indent=2, default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def read_label_efficiency(folder: str | os.PathLike[str]) -> pd.DataFrame | None:
    """An experiment folder's summary.csv (fraction, init, auroc_mean, …), or None when absent."""
    path = Path(folder) / "summary.csv"
    if not path.exists():
        return None
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from exc
    missing = {"fraction", "init", "auroc_mean", "auroc_sd", "bacc_mean", "bacc_sd"} - set(table.columns)
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(sorted(missing))}")
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
    """2-D projection (PCA or t-SNE) of the trunk features of ≤ `limit` images of the weights' own split:
    one row per image with image_id, path, dx, malignant, x, y."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from dermai.evaluate import score, weights_dataset
    from dermai.weights import load_weights

    loaded = load_weights(weights)
    dataset = weights_dataset(loaded.meta, data or None)
    rows = dataset.meta[dataset.meta["split"] == split]
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
