"""The Dataset browser's filters and words: the metadata it shows, filtered and captioned, images picked by id
and their masks. dermai.data reads the folder; the page lays these out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermai.data import MALIGNANT, DataError, Dataset, load_dataset
from dermai.intake import READ_EXTENSIONS
from dermai.pixel_cache import MASK_FOLDER, lesion_mask_file
from dermai.splits import attach_splits
from dermai.ui.formatting import MISSING
from dermai.ui.sidebar_state import SIDEBAR_ADVICE, data_folder_problem, sidebar_words

LICENCE = (
    "HAM10000 is licensed CC BY-NC-SA 4.0 (non-commercial, share-alike); models trained on it inherit these "
    "terms. Cite: Tschandl, P., Rosendahl, C. & Kittler, H. The HAM10000 dataset, a large collection of "
    "multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 (2018). "
    "doi:10.1038/sdata.2018.161. Lesion masks: Tschandl, P. et al. Human–computer collaboration for skin cancer "
    "recognition. Nat. Med. 26, 1229–1234 (2020)."
)


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
