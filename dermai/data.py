"""Dermoscopy folders: metadata, labels, leakage-free splits, label subsets, sampler weights, pixel cache.

A folder holds images (found by id anywhere below it) and one metadata CSV. Three dialects are read:
HAM10000 (`lesion_id,image_id,dx,...`), ISIC 2020 (`isic_id`/`image_name`, `benign_malignant`/`target`,
`patient_id`) and a plain CSV with `image_id` plus `dx` and/or `benign_malignant`. Labels come from the CSV
only; images are decoded once into a uint8 cache that training reads instead of JPEGs.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from dermai.intake import READ_EXTENSIONS, IntakeError, orientation_transpose, read_image
from dermai.preprocess import InputSize, input_frame, landscape, resize_input

DIAGNOSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
MALIGNANT: frozenset[str] = frozenset({"mel", "bcc", "akiec"})
# What HAM10000's codes stand for (Tschandl et al. 2018), for the pages a clinician reads.
DIAGNOSIS_NAMES: dict[str, str] = {
    "akiec": "actinic keratosis / Bowen's disease",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic naevus",
    "vasc": "vascular lesion",
}
BINARY_CLASSES: tuple[str, ...] = ("benign", "malignant")
SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_EXTENSIONS: frozenset[str] = READ_EXTENSIONS  # every format intake reads (TIFF and WebP too)
DX_SYNONYMS: dict[str, str] = {"ak": "akiec", "melanoma": "mel", "nevus": "nv", "bowen": "akiec"}
SEX_SYNONYMS: dict[str, str] = {"m": "male", "f": "female", "": "unknown"}  # ISIC exports and clinic CSVs write M/F


class DataError(ValueError):
    """Bad or missing data; the message names the file, row or field."""


class PreparationStopped(Exception):
    """Raised when the caller's `should_stop` says so while images are decoded into a cache: a run asked to
    stop (its STOP file) before it trained ends then, not only after the minutes a first decode takes."""


StopCheck = Callable[[], bool]


@dataclass
class Dataset:
    """One folder's images and labels, one row per image.

    `meta` columns: image_id, path, dx (None in binary mode), malignant (0/1), label (index into
    `classes`), group (patient_id, else lesion_id, else image_id), lesion_id, patient_id, age, sex,
    localization; after `attach_splits` also split and labelled.
    """

    root: Path
    meta: pd.DataFrame
    classes: tuple[str, ...]
    mode: str  # "multiclass" or "binary"
    csv_path: Path

    @property
    def group_key(self) -> str:
        """Which column the groups came from, for reports."""
        return str(self.meta.attrs.get("group_key", "group"))


# --------------------------------------------------------------------------------------------- data root
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout: commands recorded in it name paths from here


def candidate_roots(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where a data folder is looked for, in order of precedence: the default folders from the current folder,
    then from the project's, so a command run elsewhere finds the same data."""
    if explicit:
        return [Path(explicit)]
    roots: list[Path] = []
    if os.environ.get("DERMAI_DATA"):
        roots.append(Path(os.environ["DERMAI_DATA"]))
    defaults = [Path("data/ham10000"), Path("../shared/data/ham10000")]
    return roots + defaults + [PROJECT_ROOT / p for p in defaults]


def same_file(a: str | os.PathLike[str] | None, b: str | os.PathLike[str] | None) -> bool:
    """Whether two paths name one file or folder however each is written (relative, with "..", through a link,
    or a hard link to it); None, no path, is no file. The one comparison every "is this the run / the weights /
    the data in use" question asks, so none of them disagrees with another."""
    if a is None or b is None:
        return False
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def recorded_folder(path: str | os.PathLike[str]) -> Path:
    """A folder path recorded in a run's config (as typed, e.g. ../shared/data/ham10000): from the current
    folder where it is there, else from the project's, where the recorded commands ran."""
    given = Path(path)
    if given.is_absolute() or given.is_dir():
        return given
    from_project = PROJECT_ROOT / given
    return from_project if from_project.is_dir() else given


def weights_data_folder(meta: Mapping[str, Any]) -> Path | None:
    """The data folder a weights JSON's config records they were trained on (`recorded_folder`), or None when it
    records none: where Evaluation tells the weights' own folder from an external one, and where the CLI finds
    the data folder whose files no output may replace."""
    config = meta.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    recorded = data.get("data_dir") if isinstance(data, dict) else None
    return recorded_folder(recorded) if isinstance(recorded, str) and recorded else None


def resolve_data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data folder in use: explicit > $DERMAI_DATA > ./data/ham10000 > ../shared/data/ham10000 (from here,
    then from the project folder)."""
    tried = candidate_roots(explicit)
    for root in tried:
        if root.is_dir():
            return root.resolve()
    listed = ", ".join(str(p) for p in tried)
    raise DataError(f"no data folder found; tried: {listed} (pass --data DIR or set DERMAI_DATA)")


CACHE_LIMIT_GB = 8.0  # default bound on the pixel cache ($DERMAI_CACHE_GB): a few image sizes of HAM10000
CACHE_FILE_PREFIXES = ("pixels-", "masks-")
# A cache temporary untouched this long was left by a writer killed outright (SIGKILL, out of memory): a live
# decode writes to its file every few seconds and ends within the hour, so a younger one may be in use (unless
# its name says its writer is gone: `dead_writer`).
ABANDONED_TEMPORARY_SECONDS = 24 * 3600


def cache_limit_bytes() -> int:
    """The pixel cache's bound in bytes: $DERMAI_CACHE_GB, else CACHE_LIMIT_GB; a DataError naming the variable
    when it is not a number ≥ 0."""
    text = os.environ.get("DERMAI_CACHE_GB", "").strip()
    try:
        limit = float(text) if text else CACHE_LIMIT_GB
    except ValueError:
        limit = -1.0
    if not limit >= 0:  # also NaN
        raise DataError(f"DERMAI_CACHE_GB={text!r}: give the pixel cache's size bound in GB, a number ≥ 0")
    return int(limit * 1e9)


def prune_cache(folder: Path, keep: Path, limit: int) -> list[Path]:
    """Delete the least recently used cache files in `folder` (never `keep`, the one just used) until the rest
    take at most `limit` bytes, so caches at many image sizes or subsets cannot fill the disk; the deleted
    files. A process still reading a deleted file keeps its memory map (the data goes when it closes it).
    Temporaries abandoned by a killed writer go first, whatever the bound (`abandoned_cache_temporaries`)."""
    removed = []
    for path in abandoned_cache_temporaries(folder):
        with suppress(OSError):  # removed meanwhile, or a read-only cache
            path.unlink()
            removed.append(path)
    files = []
    for path in folder.glob("*.npy"):
        if path.name.startswith(CACHE_FILE_PREFIXES) and path != keep:
            try:
                stat = path.stat()
            except OSError:  # removed meanwhile
                continue
            files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files) + (keep.stat().st_size if keep.exists() else 0)
    for _, size, path in sorted(files):  # oldest use first
        if total <= limit:
            break
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        removed.append(path)
    return removed


def abandoned_cache_temporaries(folder: Path, now: float | None = None) -> list[Path]:
    """The cache's write temporaries (".pixels-….npy.PID@HOST.XXXX.tmp", hundreds of MB each) that a process
    killed outright left behind: no clean-up ran. One another process is writing right now must never be
    deleted: a temporary whose writer is gone from this host (`dead_writer`) is abandoned at once, so a decode
    killed and rerun does not leave it for a day; any other (another host's, an older version's name) only once
    untouched for `ABANDONED_TEMPORARY_SECONDS`."""
    cutoff = (time.time() if now is None else now) - ABANDONED_TEMPORARY_SECONDS
    found = []
    for path in folder.glob(".*.tmp"):
        if not (atomic_leftover(path.name) and path.name[1:].startswith(CACHE_FILE_PREFIXES)):
            continue
        with suppress(OSError):  # removed meanwhile: its writer finished
            if dead_writer(path.name) or path.stat().st_mtime < cutoff:
                found.append(path)
    return found


def default_cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Caches live outside the data folder, which may be read-only."""
    if explicit:
        return Path(explicit)
    if os.environ.get("DERMAI_CACHE"):
        return Path(os.environ["DERMAI_CACHE"])
    return Path.home() / ".cache" / "dermai"


# ------------------------------------------------------------------------------------------- metadata
def files_below(root: Path) -> list[Path]:
    """Every file anywhere below `root`, in a fixed order (folders and names sorted), following linked
    folders (a data set often links its images folder from elsewhere) but never into a loop of links."""
    found: list[Path] = []
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree, or a second link to one folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found += [Path(folder) / name for name in sorted(names)]
    return [path for path in found if path.is_file()]


def find_metadata_csv(root: Path) -> Path:
    """The folder's one metadata CSV (a file named *metadata*.csv wins over other CSVs)."""
    csvs = sorted(p for p in files_below(root) if p.suffix.lower() == ".csv")
    if not csvs:
        raise DataError(f"{root}: no metadata CSV found")
    preferred = [p for p in csvs if "metadata" in p.name.lower()]
    pool = preferred or csvs
    if len(pool) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in pool)
        raise DataError(f"{root}: several metadata CSVs ({names}); keep one")
    return pool[0]


def index_images(root: Path) -> dict[str, Path]:
    """Image id (file stem) → path, for every image file anywhere below root (`files_below`: linked folders
    too); of two files with one id, the first in that fixed order."""
    found: dict[str, Path] = {}
    for path in files_below(root):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.stem not in found:
            found[path.stem] = path
    return found


ID_COLUMNS = ("image_id", "isic_id", "image_name", "image")  # HAM10000, ISIC archive, ISIC 2020, plain


def first_column(df: pd.DataFrame, names: Sequence[str]) -> str | None:
    """The first of `names` that is a column of `df`, or None."""
    for name in names:
        if name in df.columns:
            return name
    return None


def _normalise_dx(value: object, csv_path: Path, row: int) -> str:
    dx = str(value).strip().lower()
    dx = DX_SYNONYMS.get(dx, dx)
    if dx not in DIAGNOSES:
        raise DataError(f"{csv_path}, row {row}: unknown dx value {value!r} (expected one of {', '.join(DIAGNOSES)})")
    return dx


def _normalise_malignant(value: object, csv_path: Path, row: int, column: str) -> int:
    text = str(value).strip().lower()
    if text in {"malignant", "1", "1.0", "true"}:
        return 1
    if text in {"benign", "0", "0.0", "false"}:
        return 0
    raise DataError(f"{csv_path}, row {row}: unknown {column} value {value!r} (expected benign/malignant or 0/1)")


def normalise_sex(value: object) -> str:
    """A recorded sex in HAM10000's words (male, female, unknown), whatever its case or abbreviation (M/F), so
    that "M" and "male" are one subgroup and the patient-context model reads both; other values kept as written
    (lower case)."""
    text = str(value).strip().lower()
    return SEX_SYNONYMS.get(text, text)


def long_row_problem(csv_path: Path) -> str | None:
    """What is wrong with the first row holding more fields than the header names, or None. pandas reads such a
    CSV by making the extra leading fields the row's index, shifting every value one column over (an age read as
    the diagnosis) instead of failing, so each CSV reader asks this first and raises it in its own error."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        for fields in reader:
            if len(fields) > len(header):
                return (
                    f"{csv_path}, row {reader.line_num}: {len(fields)} fields but the header names {len(header)} "
                    f"columns ({', '.join(header)}); column {len(header) + 1} ({fields[len(header)]!r}) has no "
                    "name: remove the extra fields or name them in the header"
                )
    return None


def read_metadata(csv_path: Path) -> pd.DataFrame:
    """A metadata CSV in any supported dialect → the normalised columns (paths not yet attached)."""
    try:
        if problem := long_row_problem(csv_path):
            raise DataError(problem)
        raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: not a readable CSV ({exc})") from exc
    raw.columns = [c.strip().lower() for c in raw.columns]
    id_col = first_column(raw, ID_COLUMNS)
    if id_col is None:
        raise DataError(f"{csv_path}: no image id column (need image_id, isic_id or image_name)")
    dx_col = first_column(raw, ["dx"])
    bm_col = first_column(raw, ["benign_malignant", "target"])
    if dx_col is None and bm_col is None:
        raise DataError(f"{csv_path}: no label column (need dx, benign_malignant or target)")
    if raw.empty:
        raise DataError(f"{csv_path}: no rows (only a header): the metadata CSV lists no image")

    rows = []
    for i, rec in enumerate(raw.to_dict("records")):
        line = i + 2  # 1-based, after the header
        image_id = str(rec[id_col]).strip()
        if not image_id:
            raise DataError(f"{csv_path}, row {line}: empty {id_col}")
        dx = _normalise_dx(rec[dx_col], csv_path, line) if dx_col else None
        if bm_col and str(rec[bm_col]).strip():
            malignant = _normalise_malignant(rec[bm_col], csv_path, line, bm_col)
            if dx is not None and malignant != int(dx in MALIGNANT):
                raise DataError(f"{csv_path}, row {line}: dx {dx!r} contradicts {bm_col} {rec[bm_col]!r}")
        elif dx is not None:
            malignant = int(dx in MALIGNANT)
        else:
            raise DataError(f"{csv_path}, row {line}: empty {bm_col}")
        age = rec.get("age", rec.get("age_approx", ""))
        rows.append(
            {
                "image_id": image_id,
                "dx": dx,
                "malignant": malignant,
                "lesion_id": str(rec.get("lesion_id", "")).strip() or None,
                "patient_id": str(rec.get("patient_id", "")).strip() or None,
                "age": pd.to_numeric(age, errors="coerce"),
                "sex": normalise_sex(rec.get("sex", "")),
                "localization": str(rec.get("localization", rec.get("anatom_site_general_challenge", ""))).strip()
                or "unknown",
            }
        )
    meta = pd.DataFrame(rows)
    if meta.empty:
        raise DataError(f"{csv_path}: no rows")
    dupes = meta["image_id"][meta["image_id"].duplicated(keep=False)]
    if len(dupes):
        first = dupes.iloc[0]
        rows = [str(i + 2) for i in dupes.index[dupes == first]]  # 1-based, after the header
        others = dupes.nunique() - 1
        more = f"; {others} more image id{'s' if others > 1 else ''} repeated" if others else ""
        raise DataError(
            f"{csv_path}: image id {first!r} appears more than once (rows {', '.join(rows)}){more}: which row's "
            "label holds cannot be guessed; keep one row per image"
        )
    return meta


def missing_images_message(csv_path: Path, root: Path, missing: Sequence[tuple[int, str]], n_rows: int) -> str:
    """The error for CSV rows whose image is not in the folder: the first row, and how many more (with a few
    ids), so a folder missing many images is fixed in one go, not one rerun per image."""
    row, image_id = missing[0]
    message = f"{csv_path}, row {row}: image {image_id!r} not found under {root}"
    if len(missing) > 1:
        more = ", ".join(repr(i) for _, i in missing[1:4]) + (", …" if len(missing) > 4 else "")
        message += f" (nor are {len(missing) - 1} more: {more}; {len(missing)} of {n_rows} rows)"
    return f"{message}: add the images, or remove their rows from the CSV"


def load_dataset(root: str | os.PathLike[str] | None = None, metadata: pd.DataFrame | None = None) -> Dataset:
    """Read a dermoscopy folder: metadata, labels, groups and image paths (nothing is decoded). `metadata`: its
    CSV as `read_metadata` read it, when the caller already has (a new run's checks), so it is not read twice."""
    data_root = resolve_data_root(root)
    csv_path = find_metadata_csv(data_root)
    meta = read_metadata(csv_path) if metadata is None else metadata.copy()
    images = index_images(data_root)
    missing = [(i + 2, image_id) for i, image_id in enumerate(meta["image_id"]) if image_id not in images]
    if missing:
        raise DataError(missing_images_message(csv_path, data_root, missing, len(meta)))
    meta["path"] = [str(images[image_id]) for image_id in meta["image_id"]]

    multiclass = meta["dx"].notna().all()
    classes = DIAGNOSES if multiclass else BINARY_CLASSES
    if multiclass:
        meta["label"] = meta["dx"].map({c: i for i, c in enumerate(DIAGNOSES)}).astype(int)
    else:
        meta["dx"] = None
        meta["label"] = meta["malignant"].astype(int)

    meta["group"], group_key = split_groups(meta)
    meta.attrs["group_key"] = group_key
    return Dataset(data_root, meta, classes, "multiclass" if multiclass else "binary", csv_path)


def split_groups(meta: pd.DataFrame) -> tuple[pd.Series, str]:
    """Each row's split group and what it is: the patient, else the lesion, else the image itself.

    When the ids are only partly filled in, rows that share a patient or a lesion id are joined (connected
    components), so one blank cell cannot put two views of a lesion, or one patient's lesions, on two sides.
    Each joined group is named by its first row's patient, else lesion, else image id.
    """
    patient, lesion = meta["patient_id"], meta["lesion_id"]
    if patient.notna().all():
        return patient, "patient_id"
    if patient.isna().all() and lesion.notna().all():
        return lesion, "lesion_id"
    if patient.isna().all() and lesion.isna().all():
        return meta["image_id"], "image_id"
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def given(ids: pd.Series) -> list[str | None]:
        return [str(v) if pd.notna(v) else None for v in ids]

    rows = list(zip(meta["image_id"], given(patient), given(lesion), strict=True))
    for image_id, patient_id, lesion_id in rows:
        for other in (f"P:{patient_id}" if patient_id else None, f"L:{lesion_id}" if lesion_id else None):
            if other is not None:
                parent[root(f"I:{image_id}")] = root(other)
    names: dict[str, str] = {}
    groups = []
    for image_id, patient_id, lesion_id in rows:
        component = root(f"I:{image_id}")
        groups.append(names.setdefault(component, patient_id or lesion_id or image_id))
    used = [name for name, ids in (("patient_id", patient), ("lesion_id", lesion)) if ids.notna().any()]
    if (patient.isna() & lesion.isna()).any():
        used.append("image_id")
    return pd.Series(groups, index=meta.index, dtype=object), ", else ".join(used)


# --------------------------------------------------------------------------------------------- splits
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


# ------------------------------------------------------------------------------------------ pixel cache
def make_folder(path: Path) -> Path:
    """`mkdir -p` whose error names what is in the way (a file where a folder is needed) or why the folder
    cannot be made, instead of errno text such as "File exists" about a parent."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise NotADirectoryError(f"cannot create folder {path}: {blocker} is a file, not a folder") from None
        raise OSError(f"cannot create folder {path} ({exc.strerror or exc})") from None
    return path


# Names Windows keeps for devices, with any extension ("CON", "nul.txt"): a file or folder so named could not be
# copied to, or shared with, a Windows machine. A trailing "." Windows drops, so "a." would be "a" there.
WINDOWS_DEVICE = re.compile(r"(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\..*)?", re.IGNORECASE)


def windows_name_problem(name: str) -> str | None:
    """Why a new file or folder `name` (one name, no folders) could not be copied to Windows as it is, else None:
    one rule for the app's run names (`jobs.check_run_name`) and the command line's outputs (`cli`)."""
    if WINDOWS_DEVICE.fullmatch(name):
        return "a device name on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9); pick another"
    if name.endswith("."):
        return f"ends in '.', which Windows drops (it would be {name.rstrip('.')!r} there)"
    return None


def check_writable(path: Path) -> None:
    """Refuse a place a file cannot be written (a folder there, a read-only file there, a file in the way of its
    folder, a folder that cannot be made or written), naming `path`; its folder is made. Called before long
    work whose result goes there, so the error comes first, not after minutes of scoring. The folder is tried
    with a real temporary file: permission bits do not bind root, nor tell a read-only or special file system.
    A file made read-only is refused though root could replace it: someone made it so to keep it."""
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; name a file")
    if path.is_file() and not path.stat().st_mode & 0o222:
        raise PermissionError(f"cannot write {path}: the file is read-only; make it writable or name another file")
    make_folder(path.parent)
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"cannot write {path}: its folder is not writable")
    try:
        fd, probe = _temporary_beside(path)
    except OSError as exc:
        raise OSError(f"cannot write {path} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def _fsync(path: str | os.PathLike[str]) -> None:
    """Flush a file's (or a folder's) contents to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` only when the block succeeds, so
    readers never see a half-written file and a failure leaves nothing behind. A folder at `path` or an
    unwritable place is refused before the block runs, with an error naming `path`, not the temporary."""
    check_writable(path)
    try:
        fd, tmp = _temporary_beside(path)
    except OSError as exc:
        raise OSError(f"cannot write {path} ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        _fsync(tmp)  # the data on disk before the name: a crash after the rename never leaves an empty file
        os.replace(tmp, path)
        with suppress(OSError):  # the rename itself durable too, where the file system lets a folder be synced
            _fsync(path.parent)
    except WriteFailure:  # a nested atomic write's, naming its own file
        raise
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES:
            raise
        raise write_failure(path, exc) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


# A full disk, a quota, a file too large, a read-only disk: errnos that say why the file itself could not be
# written, whatever else the block did (an image it failed to read has another errno, and its own message).
WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class WriteFailure(OSError):
    """A file that could not be written, named with the cause (`write_failure`)."""


def write_failure(path: Path, exc: OSError, replaced: bool = True) -> WriteFailure:
    """An OSError naming the file that could not be written and why ("cannot write x.json (No space left on
    device)"), errno kept: Python's says only "[Errno 28] No space left on device", or names the temporary. It
    is raised once the temporary is gone, so an older file at `path` is the one the user had (`replaced`: an
    atomic write's; an append's file is not kept as it was)."""
    kept = "; the file there before is kept as it was" if replaced and path.exists() else ""
    error = WriteFailure(f"cannot write {path} ({exc.strerror or exc}){kept}")
    error.errno = exc.errno  # not strerror: with both set, str() would be errno text again
    return error


def atomic_leftover(name: str) -> bool:
    """Whether a file name is a temporary `atomic_target` makes (".NAME.PID@HOST.XXXX.tmp"; ".NAME.XXXX.tmp"
    from older versions): one is left behind only when its process was killed mid-write (SIGKILL, out of
    memory), and is the writer's own, not a file of the user's."""
    return name.startswith(".") and name.endswith(".tmp")


WRITER_TAG = re.compile(r"\.(\d+)@([A-Za-z0-9-]+)\.[^.]+\.tmp$")  # the writer a temporary's name records


def _host() -> str:
    """Where this process's pid means this process, as a temporary's name records it: the machine's name and,
    where /proc tells it, its pid namespace (two containers of one host can share a name and a cache folder, and
    neither sees the other's pids). Letters, digits and '-' only: '.' separates the name's parts."""
    try:
        space = "-" + str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        space = ""
    return (re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host") + space


TEMPORARY_NAME_CHARS = 150  # of the file's name in its temporary's: with the tag (~70), under 255


def _temporary_beside(path: Path) -> tuple[int, str]:
    """A new temporary file beside `path` (mkstemp: its descriptor and name), named ".NAME.PID@HOST.XXXX.tmp"
    (`atomic_leftover`): the writer's pid and host let a later process tell a killed writer's leftover from
    a write in progress (`dead_writer`). The one naming scheme of every atomic write and writability probe.
    NAME is cut to TEMPORARY_NAME_CHARS: with the writer's tag, a long file name (a report named after a long
    upload) would pass the file system's 255-character limit and the write would fail "File name too long"."""
    name = path.name[:TEMPORARY_NAME_CHARS]
    return tempfile.mkstemp(dir=path.parent, prefix=f".{name}.{os.getpid()}@{_host()}.", suffix=".tmp")


def dead_writer(name: str) -> bool:
    """Whether an atomic temporary's writer is known to be gone: its name records this host and a pid that no
    process has now. A temporary of another host (a shared cache) or without a recorded writer (an older
    version's) is not known to be abandoned, nor one whose pid runs again (reused: left to the age rule)."""
    match = WRITER_TAG.search(name)
    if match is None or match[2] != _host():
        return False
    try:
        os.kill(int(match[1]), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # another user's process (EPERM), or no pid at all
        return False
    return False


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula (OWASP's list)


def csv_safe(value: Any) -> Any:
    """A text cell a spreadsheet will show rather than run: one starting like a formula (an uploaded file
    named "=HYPERLINK(…).jpg") gets a leading single quote; anything else (a number too) is returned as it is."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def spreadsheet_csv(table: pd.DataFrame, **options: Any) -> bytes:
    """`table` as UTF-8 CSV bytes for a person to open in Excel (a worklist, per-image predictions): its text
    cells through `csv_safe`, its number columns as they are; `options` go to `DataFrame.to_csv`. Lines end in
    CRLF (RFC 4180), so a carriage return inside a file name is quoted instead of splitting its row. Not for a
    CSV the program reads back (a split manifest): its ids would come back with the quote."""
    text = table.select_dtypes(include=["object", "string"]).columns
    safe = table.assign(**{str(column): table[column].map(csv_safe) for column in text})
    return safe.to_csv(index=False, lineterminator="\r\n", **options).encode()


def atomic_write_bytes(path: Path, payload: bytes) -> Path:
    """Write a file so readers never see it half-written."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(payload)
    return path


def _size_tag(size: InputSize) -> str:
    """A cache file's size tag: '96' for a square input (the tag every cache had before non-square inputs),
    '120x160' (height x width) for another."""
    height, width = input_frame(size)
    return str(height) if height == width else f"{height}x{width}"


def cache_key(paths: Iterable[str], size: InputSize) -> str:
    """Changes whenever an image is added, removed, reordered or modified, or the size changes."""
    # v2: decoded by intake.read_image; v3: portrait turned; v4: 16-bit/float rescaled by value, ICC to sRGB;
    # v5: an alpha channel that is 0 everywhere read as unused, not as hiding the picture; v6: CMYK through its
    # embedded CMYK profile
    digest = hashlib.sha256(f"v6:{_size_tag(size)}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"|{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def decode_image(path: str, size: InputSize) -> np.ndarray:
    """One image file → (H, W, 3) uint8 in the input frame `size`, or a DataError naming the file.

    Decoded by `intake.read_image`, as a prediction's upload is (EXIF orientation applied, transparency on
    white, 16-bit scaled, oversized files refused), so training and evaluation see what prediction sees."""
    try:
        return resize_input(read_image(path, name=path).image, size)
    except IntakeError as exc:  # its message starts with the name given, here the path
        raise DataError(f"{path}: unreadable image ({str(exc).removeprefix(f'{path}: ')})") from exc


def _open_cache(target: Path) -> np.ndarray | None:
    """A cache file as a read-only memmap, or None when it cannot be read as one (truncated by a full disk or
    a crash, overwritten, not an array): the file is removed, with a note on stderr naming it, so that the
    caller decodes the images again. The cache is derived data; a damaged file must cost time, never a run."""
    try:
        return np.load(target, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        reason = str(exc).split(". ")[0]  # numpy's advice about allow_pickle does not apply to a cache
        print(f"note: cache file {target} is unreadable ({reason}); decoding the images again", file=sys.stderr)
        with suppress(OSError):  # a read-only cache: the rewrite names the place when it cannot write
            target.unlink()
        return None


def _allocate(path: Path) -> None:
    """Give the (sparse) cache file its disk blocks before it is written through a memory map: a map written
    past the free space kills the process with SIGBUS (no message, its temporary left behind), where this
    fails with ENOSPC. A file system that cannot allocate ahead (EOPNOTSUPP, EINVAL) is written as before."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in WRITE_FAILURES:
            raise
    finally:
        os.close(fd)


@contextmanager
def _cache_write(target: Path) -> Iterator[Path]:
    """`atomic_target` for a cache file, whose write failure also says where the cache is chosen: the user
    did not name this file, and may not know where it goes."""
    try:
        with atomic_target(target) as tmp:
            yield tmp
    except WriteFailure as exc:
        failure = WriteFailure(f"{exc}; it is the pixel cache, whose folder $DERMAI_CACHE (or --cache-dir) sets")
        failure.errno = exc.errno
        raise failure from None


def _cached_decode(
    paths: Sequence[str],
    shape: tuple[int, ...],
    decode: Callable[[str], np.ndarray],
    target: Path,
    workers: int,
    should_stop: StopCheck | None = None,
) -> np.ndarray:
    """Every file decoded into one read-only (N, *shape) uint8 memmap at `target`, written once (to a temp
    file, then renamed, so an interrupted decode never leaves a half-written cache). A hit marks the file as
    used now; a new file first makes room under the cache's bound (`prune_cache`). The bound is read first, so
    a bad $DERMAI_CACHE_GB is named by every run that uses the cache, not only by one that writes to it.
    `should_stop` is asked before each image is stored: True ends the decode with PreparationStopped, its
    temporary removed."""
    limit = cache_limit_bytes()
    if target.exists():
        cached = _open_cache(target)
        if cached is not None and cached.shape == (len(paths), *shape) and cached.dtype == np.uint8:
            with suppress(OSError):  # a read-only cache still serves; it only cannot record the use
                os.utime(target)
            return cached
    if target.parent.is_dir():
        prune_cache(target.parent, target, max(0, limit - len(paths) * int(np.prod(shape))))
    with _cache_write(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *shape))
        _allocate(tmp)
        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        try:
            for i, pixels in enumerate(pool.map(decode, paths)):
                if should_stop is not None and should_stop():
                    raise PreparationStopped(f"{target}: stopped after {i} of {len(paths)} images")
                out[i] = pixels
        finally:  # on an error or an interrupt, drop the images not yet decoded rather than wait for them all
            pool.shutdown(wait=True, cancel_futures=True)
        out.flush()
        del out
    return np.load(target, mmap_mode="r")


def load_pixels(
    paths: Sequence[str],
    size: InputSize,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 2,
    should_stop: StopCheck | None = None,
) -> np.ndarray:
    """All images as a read-only (N, H, W, 3) uint8 memmap in the input frame `size` (an int: a square),
    decoded once and cached on disk; `should_stop` may end a first decode early (`_cached_decode`).

    The cache file is keyed by the image files and the size, so changed data gets a new key.
    """
    folder = default_cache_dir(cache_dir)
    target = folder / f"pixels-{cache_key(paths, size)}-{_size_tag(size)}px.npy"
    return _cached_decode(paths, (*input_frame(size), 3), lambda p: decode_image(p, size), target, workers, should_stop)


MASK_FOLDER = "masks"  # HAM10000 / ISIC 2018 task 1 layout: <data>/masks/<image_id>_segmentation.png


def lesion_mask_file(root: str | os.PathLike[str], image_id: str) -> Path:
    """Where an image's lesion mask lives (whether or not it exists)."""
    return Path(root) / MASK_FOLDER / f"{image_id}_segmentation.png"


def read_mask(mask: str | os.PathLike[str], image: str | os.PathLike[str]) -> Image.Image:
    """A lesion-mask file as a grey ('L') image in the frame its image is read in, or a DataError naming the file.
    Every reader of masks (training's cache, the Dataset page's overlay, the Augmentation lab, saliency
    plausibility) comes here, so a mask lines up with its image wherever it is used.

    `intake.read_image` applies the image's EXIF orientation (a phone photo stored sideways with orientation 6);
    a mask is a bare pixel map, read as stored. The rule, by size:

    - the image has no EXIF orientation (or 1, as every HAM10000 image): the mask as stored, whatever its size
      (callers resize it onto the image);
    - the mask is the size of the image as stored: it was drawn on the stored pixels and gets the image's turn
      or flip (so does a square image's, or a flipped one's, whose stored and displayed sizes are the same);
    - the mask is the size of the image as displayed (turned a quarter): it is already upright, used as it is;
    - any other size: which way it was drawn cannot be told, so it is refused, naming both files and sizes.
    """
    try:
        with Image.open(mask) as opened:
            grey = opened.convert("L")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{mask}: unreadable lesion mask ({exc})") from exc
    try:
        with Image.open(image) as opened:  # the header: its size and EXIF, as `read_image` reads them
            stored = opened.size
            orientation, transpose = orientation_transpose(opened)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{mask}: its image {image} is unreadable ({exc})") from exc
    if transpose is None or grey.size == stored:
        return grey if transpose is None else grey.transpose(transpose)
    shown = stored[::-1] if orientation >= 5 else stored  # 5-8 turn a quarter, 2-4 flip in place
    if grey.size == shown:
        return grey
    raise DataError(
        f"{mask}: the lesion mask is {_px(grey.size)} but its image {image} is stored {_px(stored)} and shown "
        f"{_px(shown)} (EXIF orientation {orientation}), so which way the mask lies cannot be told: save the mask "
        "at the image's stored or shown size"
    )


def _px(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]} px"


def decode_mask(path: str, image: str, size: InputSize) -> np.ndarray:
    """One lesion-mask file → (H, W) uint8 (255 = lesion) in the input frame `size`, oriented (`read_mask`),
    turned and resized as its image is, or a DataError naming the file."""
    height, width = input_frame(size)
    grey = landscape(read_mask(path, image))
    if grey.size != (width, height):
        grey = grey.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(grey, dtype=np.uint8).copy()


def load_masks(
    dataset: Dataset,
    size: InputSize,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 2,
    should_stop: StopCheck | None = None,
) -> np.ndarray:
    """Every image's lesion mask as a read-only (N, H, W) uint8 memmap in `dataset.meta`'s row order,
    cached like the pixels (`should_stop` as there). A missing mask is a DataError naming it (and how many
    more are missing)."""
    paths = [str(lesion_mask_file(dataset.root, i)) for i in dataset.meta["image_id"]]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise DataError(
            f"{missing[0]}: lesion mask not found ({len(missing)} of {len(paths)} images have none; masks are "
            f"read from <data>/{MASK_FOLDER}/<image_id>_segmentation.png)"
        )
    images = dict(zip(paths, map(str, dataset.meta["path"]), strict=True))
    folder = default_cache_dir(cache_dir)
    # keyed by the images too: their EXIF orientation turns the masks (`read_mask`)
    target = folder / f"masks-{cache_key([*paths, *images.values()], size)}-{_size_tag(size)}px.npy"
    return _cached_decode(
        paths, input_frame(size), lambda p: decode_mask(p, images[p], size), target, workers, should_stop
    )


def append_json_lines(path: Path, records: Sequence[object]) -> None:
    """Append one JSON line per record to a log (a run's metrics.jsonl). A last line left torn by a full disk
    or a kill is ended first, so the first record appended after it is not glued onto it and lost to readers
    (which skip a line that is not JSON); a failed write names the log (`write_failure`)."""
    text = "".join(json.dumps(record) + "\n" for record in records)
    try:
        with open(path, "ab+") as handle:  # appends go to the end whatever the position read from
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    text = "\n" + text
            handle.write(text.encode())
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES:
            raise
        raise write_failure(path, exc, replaced=False) from None


def write_json_atomic(path: Path, payload: object) -> Path:
    """JSON written atomically (used for configs, reports, metadata)."""
    return atomic_write_bytes(path, json.dumps(payload, indent=2, default=str).encode())
