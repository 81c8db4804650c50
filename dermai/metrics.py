"""Honest classification metrics for malignancy triage.

The paper we replace reported accuracy on ~98%-benign data, where "everything is benign" already scores
~98%. Here every accuracy comes with the all-benign baseline, and the headline figures are threshold-free
(AUROC with a bootstrap interval, AUPRC) or tied to clinically meaningful operating points (sensitivity and
specificity with Wilson intervals, widened for lesions photographed more than once). All functions are pure:
numpy arrays in, JSON-ready dicts out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    roc_auc_score,
)

TIER_MEANINGS: dict[str, str] = {
    "urgent": (
        "High suspicion: the malignancy score is at or above the cut-off chosen for high specificity on "
        "validation data. Suggest prompt specialist review (e.g. a fast-track suspected-cancer pathway). "
        "A research and triage aid, not a diagnosis."
    ),
    "refer": (
        "Possible malignancy: the score is at or above the cut-off chosen to catch most malignant lesions "
        "(high sensitivity) on validation data. Suggest dermatology referral or specialist review. "
        "A research and triage aid, not a diagnosis."
    ),
    "ungradable": (
        "The image cannot be graded: it is blank, noise, greyscale, too small, or unlike the dermoscopy images the "
        "model was validated on, so no tier is given and its score is unreliable. Retake a dermoscopic photo, or have "
        "the lesion looked at in person. A research and triage aid, not a diagnosis."
    ),
    "routine": (
        "Below the referral cut-off. This is not an all-clear: a small share of malignant lesions scored "
        "this low on validation data. Continue usual clinical assessment and re-examine if it changes. "
        "A research and triage aid, not a diagnosis."
    ),
}


def _binary_inputs(y_true: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated (int 0/1 labels, float scores) of equal length, so later errors are not silent."""
    y = np.asarray(y_true).ravel()
    s = np.asarray(p, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true and p differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 (benign) and 1 (malignant)")
    if not np.isfinite(s).all():
        raise ValueError("p holds NaN or infinite values")
    return y.astype(int), s


def _both_classes(y: np.ndarray) -> None:
    if y.min() == y.max():
        raise ValueError("y_true needs both benign (0) and malignant (1) examples")


def wilson_interval(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n: unlike the normal approximation it stays inside [0, 1]
    and keeps sensible coverage for the small malignant counts of a test split. n = 0 gives (0, 1). k and n
    may be fractional: an effective sample size (`clustered_wilson_interval`)."""
    if n <= 0:
        return 0.0, 1.0
    phat = k / n
    denom = 1.0 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(0.0, phat * (1 - phat)) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def clustered_wilson_interval(hits: np.ndarray, group: np.ndarray | None, z: float = 1.96) -> tuple[float, float]:
    """Wilson interval for the share of `hits` (0/1 per image) when images come in clusters (`group`: lesion
    ids), so that five photos of one lesion do not count as five independent cases.

    With p = Σk_g / Σn_g over m groups (k_g hits among n_g images of group g), the ratio estimator's
    cluster-robust variance is  v = m / (m − 1) · Σ (k_g − p·n_g)² / (Σn_g)²,  the design effect is
    deff = v / (p(1 − p) / n) (at least 1), and the Wilson interval is taken at the effective sample size
    n / deff (Korn & Graubard 1998 do the same with Clopper-Pearson). Without groups this is the plain Wilson
    interval (one image per group: deff = n / (n − 1), nearly so); a single group counts as one case, and
    when every image (or none) is a hit, the m groups count as m cases (deff = n / m)."""
    hits = np.asarray(hits, dtype=float).ravel()
    n, k = hits.size, float(hits.sum())
    if group is None or n == 0:
        return wilson_interval(k, n, z)
    group = np.asarray(group).ravel()
    if group.shape != hits.shape:
        raise ValueError("group must have one entry per image")
    _, unit_of = np.unique(group, return_inverse=True)
    m = int(unit_of.max()) + 1
    p = k / n
    if m == 1:
        return wilson_interval(p, 1.0, z)
    k_g = np.bincount(unit_of, weights=hits, minlength=m)
    n_g = np.bincount(unit_of, minlength=m)
    v_cluster = m / (m - 1) * float(((k_g - p * n_g) ** 2).sum()) / n**2
    v_simple = p * (1 - p) / n
    # every image a hit (or none): the variances are 0 and say nothing of clustering, so count the m groups
    # as the cases (deff = n / m); 1 would count 50 photos of 2 lesions as 50 independent catches
    deff = max(1.0, v_cluster / v_simple) if v_simple > 0 else n / m
    return wilson_interval(k / deff, n / deff, z)


def _operating_table(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct cut-off (each observed score, plus one just above the maximum that flags nobody) with
    its sensitivity and specificity when `score >= cut-off` counts as positive: the ROC curve's points."""
    thr = np.unique(s)
    thr = np.append(thr, np.nextafter(thr[-1], np.inf))
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    sens = (pos.size - np.searchsorted(pos, thr, side="left")) / pos.size
    spec = np.searchsorted(neg, thr, side="left") / neg.size
    return thr, sens, spec


def check_fraction(name: str, target: float) -> float:
    """A sensitivity or specificity target as a fraction in (0, 1]: 95 (a percentage) would leave no
    cut-off to choose from, and 0 would refer nobody."""
    if not 0 < target <= 1:
        raise ValueError(f"{name} must be a fraction in (0, 1], e.g. 0.95; got {target}")
    return float(target)


def threshold_for_sensitivity(y_true: np.ndarray, p: np.ndarray, target: float) -> float:
    """The largest cut-off whose sensitivity on these data is >= target: the most specific rule that
    still catches the required share of malignant lesions."""
    check_fraction("sensitivity target", target)
    y, s = _binary_inputs(y_true, p)
    _both_classes(y)
    thr, sens, _ = _operating_table(y, s)
    return float(thr[sens >= target].max())


def threshold_for_specificity(y_true: np.ndarray, p: np.ndarray, target: float) -> float:
    """The smallest cut-off whose specificity on these data is >= target: the most sensitive rule that
    keeps false alarms among benign lesions within budget."""
    check_fraction("specificity target", target)
    y, s = _binary_inputs(y_true, p)
    _both_classes(y)
    thr, _, spec = _operating_table(y, s)
    return float(thr[spec >= target].min())


def _rate_interval(hits: np.ndarray, group: np.ndarray | None) -> list[float] | None:
    """`clustered_wilson_interval` of a rate as a list, None for a rate over no images (its figure is None)."""
    return list(clustered_wilson_interval(hits, group)) if hits.size else None


def _rates_at(y: np.ndarray, s: np.ndarray, threshold: float, group: np.ndarray | None = None) -> dict[str, Any]:
    """Sensitivity and specificity with 95% intervals (Wilson, widened for `group`'s clustering:
    `clustered_wilson_interval`), PPV and NPV at a cut-off. A figure whose denominator is empty (sensitivity
    without malignant images, specificity without benign ones) is None, and so is its interval: a (0, 1)
    interval beside no figure would read as a measurement."""
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    g = None if group is None else np.asarray(group).ravel()
    if g is not None and g.shape != y.shape:
        raise ValueError("group must have one entry per image")
    pos, neg = y == 1, y == 0
    return {
        "threshold": float(threshold),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "sensitivity_ci": _rate_interval(pred[pos], None if g is None else g[pos]),
        "specificity": tn / (tn + fp) if tn + fp else None,
        "specificity_ci": _rate_interval(1 - pred[neg], None if g is None else g[neg]),
        "ci_method": "Wilson" if g is None else "Wilson at the lesion-clustered effective sample size",
        "ppv": tp / (tp + fp) if tp + fp else None,
        "npv": tn / (tn + fn) if tn + fn else None,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def decision_rates(y_true: np.ndarray, flagged: np.ndarray, group: np.ndarray | None = None) -> dict[str, Any]:
    """Sensitivity/specificity (Wilson 95% intervals, widened for `group`'s clustering), PPV, NPV of yes/no
    decisions made with cut-offs that differ between images (e.g. with and without patient context);
    `threshold` is None."""
    y, s = _binary_inputs(y_true, np.asarray(flagged, dtype=float))
    return {**_rates_at(y, s, 0.5, group), "threshold": None}


def tier_rates(
    y_true: np.ndarray, p: np.ndarray, thresholds: Mapping[str, float], group: np.ndarray | None = None
) -> dict[str, dict[str, Any]]:
    """Each named cut-off's figures (`_rates_at`) on these images, with one class or both: an all-benign
    folder has no sensitivity at a cut-off but a well-defined specificity, and an all-malignant one the
    reverse, which `binary_metrics` (it needs both classes for its AUROC) would not give."""
    y, s = _binary_inputs(y_true, p)
    return {name: _rates_at(y, s, thr, group) for name, thr in thresholds.items()}


def _resamples(n: int, n_boot: int, seed: int, group: np.ndarray | None) -> Iterator[np.ndarray]:
    """Bootstrap index draws over n images: images, or whole groups (lesions) with replacement, so that
    several images of one lesion do not count as independent evidence."""
    units = np.arange(n) if group is None else np.asarray(group).ravel()
    if units.shape != (n,):
        raise ValueError("group must have one entry per image")
    _, unit_of = np.unique(units, return_inverse=True)
    n_units = int(unit_of.max()) + 1 if n else 0
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        draws = np.bincount(rng.integers(0, n_units, n_units), minlength=n_units)
        yield np.repeat(np.arange(n), draws[unit_of])


def _bootstrap_auroc(
    y: np.ndarray, s: np.ndarray, n_boot: int, seed: int, group: np.ndarray | None
) -> tuple[list[float] | None, int]:
    """Percentile 95% interval of AUROC over resamples of images or groups (`_resamples`). Resamples with
    one class are skipped; returns (interval or None, number of resamples used)."""
    aucs = [
        roc_auc_score(y[idx], s[idx]) for idx in _resamples(y.size, n_boot, seed, group) if y[idx].min() < y[idx].max()
    ]
    if not aucs:
        return None, 0
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return [float(lo), float(hi)], len(aucs)


def paired_bootstrap(
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    seed: int = 0,
    group: np.ndarray | None = None,
) -> dict[str, Any]:
    """Is model B better than model A on the same images? `metric(y, scores)` of each, and the difference
    B − A with a percentile 95% interval from resampling the images (or groups) *together* for both models,
    so that what the two share (the same hard images) cancels. `p_value` is the two-sided bootstrap
    probability of a difference of the other sign, counted as (k + 1) / (B + 1) over the B resamples used:
    B resamples cannot show a p below about 2 / (B + 1), so it is never 0, even when every resample agrees.
    Resamples where the metric is undefined (one class only) are skipped."""
    y, a, b = np.asarray(y), np.asarray(a), np.asarray(b)
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"scores for {len(a)} and {len(b)} images, labels for {len(y)}")
    diffs = []
    for idx in _resamples(len(y), n_boot, seed, group):
        if np.unique(y[idx]).size < 2:
            continue
        diffs.append(metric(y[idx], b[idx]) - metric(y[idx], a[idx]))
    value_a, value_b = float(metric(y, a)), float(metric(y, b))
    out: dict[str, Any] = {"a": value_a, "b": value_b, "difference": value_b - value_a, "resamples": len(diffs)}
    if diffs:
        d = np.asarray(diffs)
        lo, hi = np.percentile(d, [2.5, 97.5])
        out["difference_ci"] = [float(lo), float(hi)]
        other_sign = min(int((d <= 0).sum()), int((d >= 0).sum()))
        out["p_value"] = float(min(1.0, 2 * (other_sign + 1) / (d.size + 1)))
    else:
        out["difference_ci"], out["p_value"] = None, None
    return out


def binary_metrics(
    y_true: np.ndarray,
    p: np.ndarray,
    thresholds: Mapping[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    group: np.ndarray | None = None,
) -> dict[str, Any]:
    """Malignant-vs-benign metrics that stay honest under heavy class imbalance (see module docstring).

    `thresholds` maps names (e.g. "refer", "urgent") to cut-offs chosen elsewhere, typically on the
    validation split; `group` (e.g. lesion ids) makes the AUROC bootstrap resample lesions, not images, and
    widens the sensitivity/specificity intervals for lesions seen in several images.
    """
    y, s = _binary_inputs(y_true, p)
    _both_classes(y)
    auroc_ci, n_boot_used = _bootstrap_auroc(y, s, n_boot, seed, group)
    pred = (s >= 0.5).astype(int)
    all_benign = np.zeros_like(y)
    thr_sens = threshold_for_sensitivity(y, s, 0.95)
    thr_spec = threshold_for_specificity(y, s, 0.90)
    at_sens, at_spec = _rates_at(y, s, thr_sens), _rates_at(y, s, thr_spec)
    return {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "prevalence": float(y.mean()),
        "auroc": float(roc_auc_score(y, s)),
        "auroc_ci": auroc_ci,
        "auroc_ci_resamples": n_boot_used,
        "auprc": float(average_precision_score(y, s)),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "baseline_all_benign": {
            "accuracy": float(accuracy_score(y, all_benign)),
            "balanced_accuracy": float(balanced_accuracy_score(y, all_benign)),
        },
        "specificity_at_95_sensitivity": {
            "specificity": at_sens["specificity"],
            "sensitivity": at_sens["sensitivity"],
            "threshold": thr_sens,
        },
        "sensitivity_at_90_specificity": {
            "sensitivity": at_spec["sensitivity"],
            "specificity": at_spec["specificity"],
            "threshold": thr_spec,
        },
        "thresholds": tier_rates(y, s, thresholds or {}, group),
    }


SUBGROUP_MIN_PER_CLASS = 5  # below this many malignant or benign images a group's AUROC is noise: none is given


def subgroup_metrics(
    y_true: np.ndarray,
    p: np.ndarray,
    fields: Mapping[str, Sequence[str]],
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    group: np.ndarray | None = None,
    order: Mapping[str, Callable[[str], Any]] | None = None,
) -> list[dict[str, Any]]:
    """Malignant-vs-benign figures within each subgroup, so a model that ranks well overall cannot hide a group
    it fails. `fields` maps a field name (e.g. "sex") to each image's group label. Per group: its size, its
    malignant count, AUROC with a bootstrap 95% interval (over `group`, e.g. lesions) where both classes have
    at least SUBGROUP_MIN_PER_CLASS images, and sensitivity / specificity (Wilson intervals, widened for
    `group`'s clustering) at `threshold`
    (the refer cut-off). Rows come field by field, largest group first, or sorted by the field's key in
    `order` (age bands in age order)."""
    y, s = _binary_inputs(y_true, p)
    units = None if group is None else np.asarray(group)
    out = []
    for field, labels in fields.items():
        labels = np.asarray(labels, dtype=object).astype(str)
        if labels.shape != y.shape:
            raise ValueError(f"subgroup field {field!r}: {labels.size} labels for {y.size} images")
        values, counts = np.unique(labels, return_counts=True)
        ranked = values[np.argsort(-counts, kind="stable")]
        if order and field in order:
            ranked = sorted(ranked, key=order[field])
        for value in ranked:
            inside = labels == value
            yg, sg = y[inside], s[inside]
            n_pos = int(yg.sum())
            row: dict[str, Any] = {"field": field, "group": str(value), "n": int(inside.sum()), "n_malignant": n_pos}
            row["auroc"], row["auroc_ci"] = None, None
            if min(n_pos, yg.size - n_pos) >= SUBGROUP_MIN_PER_CLASS:
                row["auroc"] = float(roc_auc_score(yg, sg))
                row["auroc_ci"] = _bootstrap_auroc(yg, sg, n_boot, seed, None if units is None else units[inside])[0]
            if threshold is not None:
                rates = _rates_at(yg, sg, threshold, None if units is None else units[inside])
                for key in ("sensitivity", "sensitivity_ci", "specificity", "specificity_ci"):
                    row[key] = rates[key]
            out.append(row)
    return out


def multiclass_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Seven-class diagnosis metrics. Balanced accuracy (mean per-class recall of the argmax) is ISIC 2018's
    ranking metric and, unlike accuracy, is not dominated by the naevus class. AUROCs are one-vs-rest; a
    class absent from y_true (or the only class present) has no AUROC and is skipped with a note."""
    y = np.asarray(y_true).ravel().astype(int)
    probs = np.asarray(probs, dtype=float)
    k = len(classes)
    if probs.ndim != 2 or probs.shape != (y.size, k):
        raise ValueError(f"probs must be shaped ({y.size}, {k}), got {probs.shape}")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}")
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    support = cm.sum(axis=1)
    notes = []
    recall: dict[str, float | None] = {}
    auroc: dict[str, float | None] = {}
    for i, name in enumerate(classes):
        recall[name] = float(cm[i, i] / support[i]) if support[i] else None
        if 0 < support[i] < y.size:
            auroc[name] = float(roc_auc_score(y == i, probs[:, i]))
        else:
            auroc[name] = None
            notes.append(
                f"{name}: {'absent from' if support[i] == 0 else 'the only class in'} y_true, "
                "no AUROC; recall and balanced accuracy use the classes present"
            )
    scored = [v for v in auroc.values() if v is not None]
    with warnings.catch_warnings():  # sklearn warns about classes predicted but absent; noted above
        warnings.simplefilter("ignore", UserWarning)
        bacc = balanced_accuracy_score(y, pred)
    return {
        "n": int(y.size),
        "classes": list(classes),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(bacc),
        "macro_auroc": float(np.mean(scored)) if scored else None,
        "per_class_recall": recall,
        "per_class_auroc": auroc,
        "support": {name: int(c) for name, c in zip(classes, support, strict=True)},
        "confusion_matrix": cm.tolist(),
        "notes": notes,
    }


def choose_operating_points(
    y_true: np.ndarray, p: np.ndarray, refer_sensitivity: float = 0.95, urgent_specificity: float = 0.90
) -> dict[str, dict[str, float]]:
    """Triage cut-offs from the validation split: "refer" catches >= refer_sensitivity of malignant lesions,
    "urgent" keeps specificity >= urgent_specificity. Returns each with its achieved figures on these data
    (to be re-checked on the test split, never re-tuned there) and the malignant and benign counts they rest on,
    so that a page can say how sure they are (`predict.validation_figures`)."""
    check_fraction("refer sensitivity", refer_sensitivity)
    check_fraction("urgent specificity", urgent_specificity)
    y, s = _binary_inputs(y_true, p)
    points = {
        "refer": (threshold_for_sensitivity(y, s, refer_sensitivity), refer_sensitivity),
        "urgent": (threshold_for_specificity(y, s, urgent_specificity), urgent_specificity),
    }
    out = {}
    for name, (thr, target) in points.items():
        rates = _rates_at(y, s, thr)
        out[name] = {
            "threshold": thr,
            "sensitivity": rates["sensitivity"],
            "specificity": rates["specificity"],
            "target": float(target),
            "n_malignant": int(y.sum()),
            "n_benign": int(y.size - y.sum()),
        }
    return out


def assign_tier(p_malignant: float, operating_points: Mapping[str, Mapping[str, float]]) -> str:
    """The triage tier of one malignancy score: urgent (>= urgent cut-off), else refer (>= refer cut-off),
    else routine. Urgent is checked first, so the tiers stay nested even if the cut-offs cross."""
    if p_malignant >= operating_points["urgent"]["threshold"]:
        return "urgent"
    if p_malignant >= operating_points["refer"]["threshold"]:
        return "refer"
    return "routine"
