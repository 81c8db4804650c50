"""Leakage-free train/val/test splits of a `Dataset`, label subsets, the split manifest and sampler weights.

Apart from `data`, which reads a folder: a split is computed, written, read back and checksummed on its own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dermai.data import DataError, Dataset
from dermai.safe_write import atomic_write_bytes

SPLITS: tuple[str, ...] = ("train", "val", "test")


def _group_strata(meta: pd.DataFrame) -> pd.DataFrame:
    """One row per group: its image count and stratum (the group's most frequent label)."""
    size = meta.groupby("group", sort=True).size()
    counts = meta.groupby(["group", "label"], sort=True).size().rename("n").reset_index()
    # Most frequent label first, ties to the lowest label: one row per group (vectorised; a per-group lambda
    # took seconds on HAM10000, which the app pays before launching a run).
    first = counts.sort_values(["group", "n", "label"], ascending=[True, False, True], kind="stable")
    stratum = first.drop_duplicates("group").set_index("group")["label"].astype(int)
    return pd.DataFrame({"size": size, "stratum": stratum.reindex(size.index)})


def subsample(meta: pd.DataFrame, limit: int, seed: int, min_groups_per_class: int = 3) -> pd.DataFrame:
    """About `limit` images, whole groups, stratified by class, each class with at least
    `min_groups_per_class` groups (so it can appear on every side of a split)."""
    if limit >= len(meta):
        return meta
    rng = np.random.default_rng(seed)
    groups = _group_strata(meta)
    keep: list[str] = []
    for _stratum, members in groups.groupby("stratum", sort=True):
        quota = max(1, round(limit * members["size"].sum() / len(meta)))
        order = members.index.to_numpy()[rng.permutation(len(members))]
        taken = 0
        for count, group in enumerate(order):
            if taken >= quota and count >= min_groups_per_class:
                break
            keep.append(group)
            taken += int(members.loc[group, "size"])
    return meta[meta["group"].isin(set(keep))].reset_index(drop=True)


def assign_splits(
    meta: pd.DataFrame, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> pd.Series:
    """train/val/test per image, grouped (no group on two sides) and stratified by class.

    Within each stratum the groups are shuffled with the seed; the first three go one to each side (so every
    class with three groups appears everywhere), then each group joins the side furthest below its target
    image count. Deterministic for a seed.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"split fractions val={val_fraction}, test={test_fraction} must be in (0, 1), sum < 1")
    targets = {"test": test_fraction, "val": val_fraction, "train": 1 - val_fraction - test_fraction}
    rng = np.random.default_rng(seed)
    groups = _group_strata(meta)
    side: dict[str, str] = {}
    for _stratum, members in groups.groupby("stratum", sort=True):
        order = members.index.to_numpy()[rng.permutation(len(members))]
        total = float(members["size"].sum())
        counts = dict.fromkeys(targets, 0.0)
        for i, group in enumerate(order):
            if i < 3:
                chosen = ("test", "val", "train")[i]
            else:
                chosen = max(targets, key=lambda s: targets[s] * total - counts[s])
            side[group] = chosen
            counts[chosen] += members.loc[group, "size"]
    return meta["group"].map(side).rename("split")


def assign_labelled(meta: pd.DataFrame, fraction: float, seed: int = 0) -> pd.Series:
    """Which training images keep their label: a stratified share of training groups (at least one per
    class). The rest stay available, unlabelled, for self-supervised pretraining."""
    if not 0 < fraction <= 1:
        raise DataError(f"label fraction {fraction} must be in (0, 1]")
    labelled = meta["split"] != "train"
    if fraction >= 1:
        return pd.Series(True, index=meta.index, name="labelled")
    rng = np.random.default_rng(seed + 1)
    train = meta[meta["split"] == "train"]
    groups = _group_strata(train)
    keep: set[str] = set()
    for _stratum, members in groups.groupby("stratum", sort=True):
        order = members.index.to_numpy()[rng.permutation(len(members))]
        n_keep = max(1, int(round(fraction * len(order))))
        keep.update(order[:n_keep])
    return (labelled | meta["group"].isin(keep)).rename("labelled")


def check_splits(dataset: Dataset, manifest: str | os.PathLike[str] | None = None) -> None:
    """Every class on every side; no group on two sides. A split read from a `manifest` file that lacks a class
    on a side names the file: the usual cause is rows missing from it (cut short, edited), not too few images."""
    meta = dataset.meta
    sides = meta.groupby("group")["split"].nunique()
    if (sides > 1).any():
        raise DataError(f"group {sides[sides > 1].index[0]!r} is on more than one side of the split")
    for split in SPLITS:
        present = set(meta.loc[meta["split"] == split, "label"])
        for index, name in enumerate(dataset.classes):
            if index not in present and index in set(meta["label"]):
                if manifest:
                    raise DataError(
                        f"{manifest}: class {name!r} is absent from the {split} split in this manifest (rows may be "
                        f"missing from it: a manifest cut short or edited); write a whole one with `data split`"
                    )
                raise DataError(f"class {name!r} is absent from the {split} split (too few images or groups)")


def attach_splits(
    dataset: Dataset,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    label_fraction: float = 1.0,
    manifest: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> Dataset:
    """The dataset with `split` and `labelled` columns, from a manifest file or computed from the seed. A
    manifest names its images itself: `limit` applies to a computed split only (as `evaluate` rebuilds one),
    rather than dropping manifest images and then blaming the folder for lacking them."""
    check_seed(seed)
    meta = dataset.meta
    if limit and not manifest:
        meta = subsample(meta, limit, seed)
    meta = meta.copy()
    meta.attrs = dict(dataset.meta.attrs)
    if manifest:
        table = read_manifest(manifest)
        meta = meta[meta["image_id"].isin(table.index)].reset_index(drop=True)
        missing = set(table.index) - set(meta["image_id"])
        if missing:
            first = sorted(missing, key=str)[0]
            row = table.index.get_loc(first) + 2  # the header is row 1
            raise DataError(f"{manifest}, row {row}: image {first!r} is not in the data folder {dataset.root}")
        meta["split"] = meta["image_id"].map(table["split"])
        if "labelled" in table.columns and label_fraction == 1:  # else assign_labelled (which checks the fraction)
            meta["labelled"] = meta["image_id"].map(table["labelled"]).astype(bool)
        else:
            meta["labelled"] = assign_labelled(meta, label_fraction, seed)
    else:
        meta["split"] = assign_splits(meta, seed, val_fraction, test_fraction)
        meta["labelled"] = assign_labelled(meta, label_fraction, seed)
    result = Dataset(dataset.root, meta, dataset.classes, dataset.mode, dataset.csv_path)
    check_splits(result, manifest)
    return result


def check_seed(seed: int) -> int:
    """A split seed as numpy's generators take it, a whole number ≥ 0; else a DataError naming the seed, where
    numpy would say only "expected non-negative integer" (`data split --seed -1`)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"split seed (--seed, data.seed in a config) must be a whole number ≥ 0, got {seed!r}")
    return int(seed)


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A split manifest (image_id,split[,labelled]) indexed by image id, checked."""
    try:
        table = pd.read_csv(path, dtype={"image_id": str, "split": str, "labelled": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read manifest ({exc})") from exc
    for column in ("image_id", "split"):
        if column not in table.columns:
            raise DataError(f"{path}: manifest has no {column!r} column")
    if table.empty:  # else an empty split: "Empty DataFrame", a 0-image manifest, a run failing on 0 images
        raise DataError(f"{path}: no rows (only a header): a manifest lists each image and its split")
    blank = table["image_id"].isna() | (table["image_id"].str.strip() == "")
    if blank.any():  # else NaN ids: a TypeError from sorting them, or "image nan is not in the data folder"
        raise DataError(f"{path}, row {blank.to_numpy().argmax() + 2}: image_id is blank")
    bad = table[~table["split"].isin(SPLITS)]
    if len(bad):
        raise DataError(f"{path}, row {bad.index[0] + 2}: split {bad['split'].iloc[0]!r} is not train/val/test")
    if table["image_id"].duplicated().any():
        raise DataError(f"{path}: image {table['image_id'][table['image_id'].duplicated()].iloc[0]!r} twice")
    if "labelled" in table.columns:
        table["labelled"] = [
            _manifest_labelled(value, split, path, row)
            for row, (value, split) in enumerate(zip(table["labelled"], table["split"], strict=True), start=2)
        ]
    return table.set_index("image_id")


LABELLED_VALUES = {"true": True, "1": True, "false": False, "0": False}


def _manifest_labelled(value: object, split: str, path: str | os.PathLike[str], row: int) -> bool:
    """One manifest row's `labelled` cell: true/false/1/0 in any case, or blank on a val/test row (those are
    always labelled); anything else is a DataError naming the file, row and value, since guessing False
    would silently train on fewer labels than asked."""
    text = "" if pd.isna(value) else str(value).strip()
    if not text and split != "train":
        return True
    if text.lower() in LABELLED_VALUES:
        return LABELLED_VALUES[text.lower()]
    shown = "blank" if not text else repr(value)
    raise DataError(f"{path}, row {row}: labelled is {shown} (expected true/false or 1/0)")


def manifest_frame(dataset: Dataset) -> pd.DataFrame:
    """What a manifest file holds: enough to reproduce the split and audit it."""
    columns = ["image_id", "split", "labelled", "group", "malignant"] + (["dx"] if dataset.mode == "multiclass" else [])
    return dataset.meta[columns].copy()


def write_manifest(dataset: Dataset, out: str | os.PathLike[str]) -> Path:
    """Write the split manifest atomically."""
    frame = manifest_frame(dataset)
    return atomic_write_bytes(Path(out), frame.to_csv(index=False).encode())


def manifest_checksum(dataset: Dataset) -> str:
    """sha256 of the manifest's CSV text: identifies the split a model was trained and tested on."""
    return hashlib.sha256(manifest_frame(dataset).to_csv(index=False).encode()).hexdigest()


def split_checksum(dataset: Dataset) -> str:
    """sha256 of each image's side alone (image_id, split; in id order): equal for two runs that hold out the
    same images, whatever share of their training images kept labels, which `manifest_checksum` also covers.
    Weights trained on a split whose checksum differs may have seen this one's validation or test images."""
    frame = dataset.meta[["image_id", "split"]].sort_values("image_id", kind="stable")
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def summary_table(dataset: Dataset) -> pd.DataFrame:
    """Image counts per class (rows) and split (columns), with totals."""
    names = dataset.meta["label"].map(dict(enumerate(dataset.classes)))
    table = pd.crosstab(names, dataset.meta["split"], margins=True, margins_name="total")
    return table.reindex(columns=[*[s for s in SPLITS if s in table.columns], "total"])


# ---------------------------------------------------------------------------------------------- sampler
def class_balanced_weights(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-sample weights 1/count(class): a WeightedRandomSampler over them draws classes equally often."""
    labels = np.asarray(labels, dtype=int)
    counts = np.bincount(labels)
    return (1.0 / counts[labels]).astype(np.float64)
