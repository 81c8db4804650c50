"""Several images → one triage worklist, most urgent first.

A clinician with a batch (one patient's lesions, or a day's referrals) needs to see which image to look at
first. The order is the tier (urgent, refer, ungradable, routine; then images with no validated tier, then
files that could not be read), and within a tier the malignancy score, highest first. An image the model
cannot grade (out of distribution, blank, noise, greyscale, too small) comes before the routine ones: it still needs a
person to look at the lesion, so it must not sink silently to the bottom.
A file that cannot be read gets a row with its error instead of stopping the batch: nothing is dropped.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from dermai.context import PatientContext, describe
from dermai.data import files_below
from dermai.intake import READ_EXTENSIONS, IntakeError
from dermai.safe_write import spreadsheet_csv

if TYPE_CHECKING:  # the model's module loads torch: not needed to sort or write a worklist
    from dermai.intake import IntakeResult
    from dermai.predict import Predictor

# What a folder's worklist lists: what intake reads, a GIF (which it reads too), and an iPhone's HEIC photos, which it
# refuses saying what to do. Each is then scored or is a row saying why; skipped, it would go unsaid.
PHOTO_EXTENSIONS = READ_EXTENSIONS | {".gif", ".heic", ".heif"}
NOT_SCORED = "not scored"  # a stopped batch's images it never reached (`unscored`)
TIER_ORDER = ("urgent", "refer", "ungradable", "routine", "unavailable", "unreadable", NOT_SCORED)
COLUMNS = [
    "rank",
    "image",
    "tier",
    "p_malignant",
    "top_diagnosis",
    "p_top_diagnosis",
    "ood",
    "p_malignant_image_only",
    "context",
    "tta",
    "notes",
]
# The words a person reads for two columns whose CSV names (`COLUMNS`) are for scripts: "p(top)" and "OOD" were
# explained only in a hover help, so a clinician scanning the table could not tell what they meant. The Predict
# page's table and `predict`'s terminal table use these; the CSV keeps its names, which README maps to them.
TOP_PROBABILITY = "diagnosis probability"  # the top diagnosis's: read alone, not only beside its column
UNLIKE_TRAINING = "unlike training images"  # the OOD verdict: yes, no, or a dash when not checked


def image_files(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The files to score: each path as given, and for a folder the image files anywhere below it (by
    extension, sorted). Raises ValueError naming a path that does not exist or a folder with no images."""
    files: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(str(p) for p in files_below(path) if p.suffix.lower() in PHOTO_EXTENSIONS)
            if not found:
                raise ValueError(f"{path}: no image files in this folder ({', '.join(sorted(PHOTO_EXTENSIONS))})")
            files += found
        elif not path.exists():
            raise ValueError(f"{path}: no such file or folder")
        else:
            files.append(str(raw))
    return files


def distinct_names(images: Sequence[str]) -> list[tuple[str, str]]:
    """(name to show, stem for written files) of each image, distinct across the batch: the file name and
    stem where no other image shares them, else the path below the images' common folder (with "/" and "."
    as "_" in the stem), so that p1/lesion.jpg and p2/lesion.jpg, or good.jpg and good.png, neither read as
    one image nor overwrite each other's report."""
    paths = [Path(image) for image in images]
    names, stems = Counter(p.name for p in paths), Counter(p.stem for p in paths)  # a folder may hold thousands
    common = os.path.commonpath([str(p.absolute().parent) for p in paths]) if paths else ""
    out: list[tuple[str, str]] = []
    taken: set[str] = set()
    for path in paths:
        below = os.path.relpath(path.absolute(), common) if common else str(path)
        shown = path.name if names[path.name] == 1 else below
        written = path.stem if stems[path.stem] == 1 else below.replace(os.sep, "_").replace(".", "_")
        base, n = written, 2
        while written in taken:  # a clash left by the replacements (a_b.jpg beside a/b.jpg)
            written, n = f"{base}-{n}", n + 1
        taken.add(written)
        out.append((shown, written))
    return out


@dataclass
class WorklistEntry:
    """One file of a batch: its prediction (a `dermai.predict.Prediction`), or why it could not be read."""

    image: str
    prediction: Any | None = None
    error: str | None = None
    reached: bool = True  # False: the batch stopped before this file (`unscored`)


def unscored(image: str) -> WorklistEntry:
    """A row for a file a stopped batch never reached, so a partial worklist shows which are missing rather
    than reading as the whole batch."""
    return WorklistEntry(image, error="the batch stopped before this image: rerun to score it", reached=False)


def _no_context(name: str) -> PatientContext | None:
    return None


def score_images(
    predictor: Predictor,
    images: Iterable[tuple[str, str | os.PathLike[str] | bytes]],
    tta: bool | None = None,
    context: Callable[[str], PatientContext | None] = _no_context,
    keep_going: bool = True,
    lock: contextlib.AbstractContextManager[Any] | None = None,
) -> Iterator[tuple[WorklistEntry, IntakeResult | None]]:
    """Each (name, path or bytes) image's worklist entry, with its intake for a saliency map or report (None
    when unreadable), scored in turn under `lock`; `context(name)` gives its patient context. The one rule of
    the CLI and the Predict page: only a file that cannot be read as an image (IntakeError) is the file's fault,
    so with `keep_going` it becomes an "unreadable" row and the batch goes on (else the error is raised). Any
    other error (a bad context, the model or its weights) is raised: listing it as every file's fault would hide
    it behind a column of "unreadable" rows."""
    for name, source in images:
        try:
            intake = predictor.read(source, name)
        except IntakeError as exc:
            if not keep_going:
                raise
            yield WorklistEntry(name, error=str(exc)), None
            continue
        given = context(name)
        with lock or contextlib.nullcontext():
            prediction = predictor.predict(intake, tta=tta, context=given)
        yield WorklistEntry(name, prediction), intake  # outside the lock: the caller may explain the image


def _row(entry: WorklistEntry) -> dict[str, Any]:
    p = entry.prediction
    if p is None:
        tier = "unreadable" if entry.reached else NOT_SCORED
        return {"image": entry.image, "tier": tier, "notes": entry.error or "could not be read"}
    top = max(p.probabilities, key=p.probabilities.__getitem__)
    context = describe(p.context) if p.context else None
    return {
        "image": entry.image,
        "tier": p.tier,
        "p_malignant": float(p.p_malignant),
        "top_diagnosis": top,
        "p_top_diagnosis": float(p.probabilities[top]),
        "ood": p.ood,
        "p_malignant_image_only": p.p_malignant_image_only,
        "context": context,
        "tta": bool(p.tta),  # how the score was made: with or without the 8 flips/rotations
        "notes": "; ".join(p.warnings) or None,
    }


def worklist(entries: Sequence[WorklistEntry]) -> pd.DataFrame:
    """The batch as a table sorted by urgency (`TIER_ORDER`, then p_malignant descending, then file name),
    with a 1-based `rank` column; columns as in `COLUMNS`."""
    table = pd.DataFrame([_row(e) for e in entries], columns=[c for c in COLUMNS if c != "rank"])
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    tier_rank = table["tier"].map({t: i for i, t in enumerate(TIER_ORDER)}).fillna(len(TIER_ORDER))
    score = -table["p_malignant"].astype(float).fillna(0.0)
    order = pd.DataFrame({"tier": tier_rank, "p": score, "name": table["image"]})
    table = table.loc[order.sort_values(["tier", "p", "name"], kind="stable").index].reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def tier_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many rows each tier has, in `TIER_ORDER`, tiers with no rows left out."""
    counts = table["tier"].value_counts() if len(table) else pd.Series(dtype=int)
    return {tier: int(counts[tier]) for tier in TIER_ORDER if tier in counts}


def worklist_csv(table: pd.DataFrame) -> bytes:
    """The worklist as UTF-8 CSV bytes, scores to 4 decimals (for a download button or `predict --csv`), text
    cells escaped by `safe_write.csv_safe` (the on-screen table keeps the real names), lines ending in CRLF
    (`safe_write.spreadsheet_csv`)."""
    return spreadsheet_csv(table, float_format="%.4f")
