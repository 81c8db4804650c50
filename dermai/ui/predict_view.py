"""The Predict page's words and tables: the TTA help, the JSON report, the worklist shown and styled and the
download names. dermai.predict scores the images; the page lays these out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dermai.ood import beyond_cut_off
from dermai.plots import finite_number
from dermai.predict import on_off
from dermai.report import score_text
from dermai.ui.formatting import MISSING


def feature_gate_flagged(prediction: Any) -> bool:
    """Whether a prediction's features lay beyond the OOD cut-off. An image flagged from its pixels alone
    (blank, noise, greyscale) is out of distribution too, but its distance may sit inside the cut-off: saying
    "score 27.46 > threshold 56.08" for it would be false; its note says why instead."""
    return bool(prediction.ood) and beyond_cut_off(prediction.ood_score, prediction.ood_threshold)


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


def probabilities_summary(probabilities: Mapping[str, float]) -> str:
    """The Predict page's probability bars as a sentence (their text alternative): every diagnosis, most likely
    first, at the bars' own "12.3%"; NaN or missing figures are said as such, not dropped."""
    if not probabilities:
        return "No diagnosis probabilities."
    ranked = sorted(probabilities.items(), key=lambda item: -item[1] if finite_number(item[1]) is not None else np.inf)
    said = ", ".join(f"{k} {v:.1%}" if finite_number(v) is not None else f"{k} not available" for k, v in ranked)
    return f"Diagnosis probabilities, most likely first: {said}."
