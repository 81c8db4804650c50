"""Dermoscopy folders: metadata, labels and split groups, read into a `Dataset`.

A folder holds images (found by id anywhere below it) and one metadata CSV. Three dialects are read:
HAM10000 (`lesion_id,image_id,dx,...`), ISIC 2020 (`isic_id`/`image_name`, `benign_malignant`/`target`,
`patient_id`) and a plain CSV with `image_id` plus `dx` and/or `benign_malignant`. Labels come from the CSV
only. Splits are `splits`' job, decoded pixels `pixel_cache`'s, writing files `safe_write`'s.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dermai.intake import READ_EXTENSIONS

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

IMAGE_EXTENSIONS: frozenset[str] = READ_EXTENSIONS  # every format intake reads (TIFF and WebP too)

DX_SYNONYMS: dict[str, str] = {"ak": "akiec", "melanoma": "mel", "nevus": "nv", "bowen": "akiec"}

SEX_SYNONYMS: dict[str, str] = {"m": "male", "f": "female", "": "unknown"}  # ISIC exports and clinic CSVs write M/F


class DataError(ValueError):
    """Bad or missing data; the message names the file, row or field."""


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
