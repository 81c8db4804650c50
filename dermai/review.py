"""Which evaluated images to look at first: the errors that matter for triage, and the diagnoses confused.

An AUROC says how often the model is wrong, not where. A researcher improving it (or a clinician deciding
whether to trust it) needs the cases behind the numbers: malignant lesions that the refer cut-off sent home,
benign ones flagged urgent, and which diagnosis is mistaken for which. Each function takes the per-image
predictions of `dermai.evaluate` (columns image_id, p_malignant, dx, malignant, tier, predicted, path) and
returns every such row, worst first.
"""

from __future__ import annotations

import pandas as pd

from dermai.evaluate import probability_column

REVIEW_KINDS = {
    "missed": "Missed malignant: malignant lesions below the refer cut-off (tier routine), lowest score first",
    "false_alarm": "False alarms: benign lesions at or above the urgent cut-off, highest score first",
    "confusion": "Confusions: images of one diagnosis given another by the balanced decision rule",
}


def missed_malignant(predictions: pd.DataFrame) -> pd.DataFrame:
    """Malignant images in the routine tier, the most confidently missed (lowest p_malignant) first."""
    rows = predictions[(predictions["malignant"] == 1) & (predictions["tier"] == "routine")]
    return rows.sort_values(["p_malignant", "image_id"])


def false_alarms(predictions: pd.DataFrame) -> pd.DataFrame:
    """Benign images in the urgent tier, the most confidently flagged (highest p_malignant) first."""
    rows = predictions[(predictions["malignant"] == 0) & (predictions["tier"] == "urgent")]
    return rows.sort_values(["p_malignant", "image_id"], ascending=[False, True])


def confusion_pairs(predictions: pd.DataFrame) -> pd.DataFrame:
    """(dx, predicted, n) for every wrong diagnosis, the most frequent first; empty without diagnoses."""
    empty = pd.DataFrame(columns=["dx", "predicted", "n"])
    if "predicted" not in predictions:
        return empty
    known = predictions.dropna(subset=["predicted"])
    wrong = known[known["dx"] != known["predicted"]]
    if wrong.empty:
        return empty
    pairs = wrong.groupby(["dx", "predicted"]).size().reset_index(name="n")
    return pairs.sort_values(["n", "dx", "predicted"], ascending=[False, True, True]).reset_index(drop=True)


def confused(predictions: pd.DataFrame, dx: str, predicted: str) -> pd.DataFrame:
    """Images of diagnosis `dx` predicted as `predicted`, the most confident (highest probability of the
    predicted class) first."""
    rows = predictions[(predictions["dx"] == dx) & (predictions["predicted"] == predicted)]
    column = probability_column(predicted)
    order = rows[column] if column in rows else rows["p_malignant"]
    return rows.assign(_order=order).sort_values(["_order", "image_id"], ascending=[False, True]).drop(columns="_order")


def caption(row: pd.Series) -> str:
    """One gallery caption: id, true diagnosis, what the model said, and its malignancy score."""
    said = f" → {row['predicted']}" if isinstance(row.get("predicted"), str) else ""
    return f"{row['image_id']} · {row['dx']}{said} · p {row['p_malignant']:.3f} · {row['tier']}"
