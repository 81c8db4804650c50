"""The Evaluation page's words and tables: the splits offered, notes below the report, the tier, subgroup and
label-efficiency tables and the embedding map. The figures come from dermai.evaluate; the page lays them out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dermai.context import age_band_order
from dermai.data import DataError, same_file, weights_data_folder
from dermai.evaluate import interval_text
from dermai.metrics import SUBGROUP_MIN_PER_CLASS
from dermai.ui.formatting import MISSING, is_number
from dermai.ui.sidebar_state import sidebar_words

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
        return f"{value:.3f}" if is_number(value) else MISSING

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
