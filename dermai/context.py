r"""Patient context — age, sex and body site — as evidence beside the image.

Why: the metadata HAM10000 records with each lesion carries information the pixels do not. Melanoma, basal
cell carcinoma and actinic keratosis are diseases of older skin, naevi of younger skin, and the body site
shifts the odds between diagnoses. A clinician knows these at the bedside, so the predictor can use them.

How: Bayes' rule, treating the image and each context field as independent evidence about the diagnosis y
(a "naive Bayes" combination of calibrated models, as in Kononenko 1991):

.. math::

    \log p(y \mid x, c) = \frac{z_y(x)}{T_c} + \log \pi_y
        + \sum_{f \in c} w_f \left[\log p(y \mid c_f) - \log p(y)\right] + \text{const}

where z are the image model's logits, π the training prior added back for a model trained on balanced
batches (`dermai.inference.calibrated_probs`), and each field's log-likelihood ratio
:math:`\log p(y \mid c_f) - \log p(y)` is estimated on the **training split** and stored as a lookup table:
sex and site as class counts smoothed toward the prior (rare sites stay near 0), age as a multinomial
logistic regression on (a, a², a³), tabulated per year of age. A field not given adds nothing, so a
prediction without context is exactly the image-only one. The weights :math:`w_f \ge 0` and the temperature
:math:`T_c` are fitted on the **validation split** by log-loss: they shrink a field whose evidence the image
already carries (or that the independence assumption double-counts). The operating points are then chosen on
validation with context, as `dermai.serving` does without it. Everything lives in the weights' JSON under
"context"; the test split is never used.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from dermai.config import is_number
from dermai.data import ID_COLUMNS, first_column, long_row_problem
from dermai.inference import class_log_prior, softmax_np
from dermai.weights import FEW_VALIDATION_IMAGES

FIELDS = ("age", "sex", "site")
SEXES = ("female", "male")
MAX_AGE = 120  # an age above this is a typing error, not a patient
SMOOTHING = 20.0  # pseudo-count pulling a category's class frequencies toward the prior
UNKNOWN = {"", "unknown", "nan", "none"}
# ISIC's general site names (anatom_site_general) for HAM10000's nearest ones; "head/neck" has no one match
SITE_SYNONYMS = {"torso": "trunk", "palms/soles": "acral", "oral/genital": "genital"}


AGE_BANDS: tuple[tuple[float, str], ...] = ((30, "under 30"), (50, "30-49"), (70, "50-69"), (math.inf, "70 and over"))


def age_band_order(band: str) -> int:
    """An age band's place in age order (`AGE_BANDS`, then "unknown"), for tables that list bands: largest first
    reads as a ranking. A band that is none of them comes last, shown rather than dropped."""
    order = [name for _, name in AGE_BANDS] + ["unknown"]
    return order.index(band) if band in order else len(order)


def age_band(age: float | None) -> str:
    """An age in years as its band (`AGE_BANDS`, the subgroups evaluation reports), or "unknown"."""
    if age is None or not np.isfinite(age):
        return "unknown"
    return next(name for upper, name in AGE_BANDS if age < upper)


class ContextError(ValueError):
    """A context value the model cannot use; the message names the field and what it accepts."""


@dataclass(frozen=True)
class PatientContext:
    """What is known about the patient and lesion; None means "not given" and adds no evidence."""

    age: float | None = None
    sex: str | None = None
    site: str | None = None

    def is_empty(self) -> bool:
        return self.age is None and self.sex is None and self.site is None

    def given(self) -> dict[str, Any]:
        """The fields that were given, by name."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def without(self, names: Sequence[str]) -> PatientContext:
        """The same context with the named fields not given."""
        return replace(self, **dict.fromkeys(names))


def describe(given: Mapping[str, Any]) -> str:
    """Given fields as text for people: "age 75, site face" (ages without a trailing .0)."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in given.items())


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip().lower() in UNKNOWN


def normalise_site(site: Any) -> str:
    """A body site in lower case, with ISIC's general names mapped to HAM10000's (SITE_SYNONYMS)."""
    text = str(site).strip().lower()
    return SITE_SYNONYMS.get(text, text)


def parse_context(
    age: Any = None, sex: Any = None, site: Any = None, sites: Sequence[str] | None = None
) -> PatientContext:
    """Checked context from user input (CLI flags, form fields): blanks and "unknown" mean not given; a bad
    value raises ContextError naming the field. `sites` (the model's known body sites) checks the site."""
    parsed_age = None
    if isinstance(age, str) and age.strip().lower() == "nan":  # typed "nan": no age, and not a blank either
        raise ContextError(f"age: {age!r} is not a number of years")
    if not _blank(age):
        try:
            parsed_age = float(age)
        except (TypeError, ValueError):
            raise ContextError(f"age: {age!r} is not a number of years") from None
        if not 0 <= parsed_age <= MAX_AGE:
            raise ContextError(f"age: {parsed_age:g} is outside 0–{MAX_AGE} years")
    parsed_sex = None
    if not _blank(sex):
        parsed_sex = str(sex).strip().lower()
        if parsed_sex not in SEXES:
            raise ContextError(f"sex: {sex!r} is not one of {', '.join(SEXES)}")
    parsed_site = None
    if not _blank(site):
        parsed_site = normalise_site(site)
        if sites is not None and parsed_site not in sites:
            raise ContextError(f"site: {site!r} is not a body site this model knows ({', '.join(sites)})")
    return PatientContext(parsed_age, parsed_sex, parsed_site)


def contexts_from_rows(rows: pd.DataFrame) -> list[PatientContext]:
    """Each dataset row's recorded context (columns age, sex, localization; "unknown" and NaN → not given).
    Values are taken as recorded: a site outside the model's tables simply adds no evidence."""
    out = []
    for age, sex, site in zip(rows["age"], rows["sex"], rows["localization"], strict=True):
        age = None if _blank(age) or not 0 <= float(age) <= MAX_AGE else float(age)
        sex = None if _blank(sex) or str(sex).strip().lower() not in SEXES else str(sex).strip().lower()
        out.append(PatientContext(age, sex, None if _blank(site) else normalise_site(site)))
    return out


AGE_COLUMNS = ("age", "age_approx")
SITE_COLUMNS = ("site", "localization", "anatom_site_general_challenge", "anatom_site_general")


def read_context_csv(path: str | os.PathLike[str]) -> dict[str, PatientContext]:
    """Per-image context from a metadata CSV (HAM10000's or ISIC's columns; labels not needed), by image id.
    A bad age or sex raises ContextError naming the file, row and field; sites are kept as written. An image
    on two rows is refused, naming both: which row holds the patient's real age and sex cannot be guessed."""
    return {image_id: context for image_id, (_, context) in read_context_rows(path).items()}


def unknown_site_warnings(path: str | os.PathLike[str], sites: Sequence[str]) -> list[str]:
    """One line per row of a context CSV whose site is not in `sites` (the model's): sites are kept as written,
    as datasets name them their own way (ISIC's "head/neck"), and such a site is left out of that image's
    prediction; a malformed age or sex is refused instead (`read_context_rows`). Each line names the file and
    row, where the prediction's own note names neither."""
    return [
        f"{path}, row {row}: site {context.site!r} is not a body site this model knows ({', '.join(sites)}); "
        f"image {image_id!r} is scored without its site"
        for image_id, (row, context) in read_context_rows(path).items()
        if context.site is not None and context.site not in sites
    ]


def read_context_rows(path: str | os.PathLike[str]) -> dict[str, tuple[int, PatientContext]]:
    """`read_context_csv` with each image's row (1-based, the header is row 1), for messages naming it."""
    csv_path = Path(path)
    try:
        if problem := long_row_problem(csv_path):
            raise ContextError(problem)
        raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as exc:
        raise ContextError(f"{csv_path}: not a readable CSV ({exc})") from exc
    raw.columns = [c.strip().lower() for c in raw.columns]
    id_col = first_column(raw, ID_COLUMNS)
    if id_col is None:
        raise ContextError(f"{csv_path}: no image id column (need one of {', '.join(ID_COLUMNS)})")
    age_col, site_col = first_column(raw, AGE_COLUMNS), first_column(raw, SITE_COLUMNS)
    contexts: dict[str, tuple[int, PatientContext]] = {}
    rows: dict[str, int] = {}  # image id → its row (1-based, after the header)
    for i, rec in enumerate(raw.to_dict("records")):
        image_id = str(rec[id_col]).strip()
        if image_id and image_id in rows:
            raise ContextError(
                f"{csv_path}, rows {rows[image_id]} and {i + 2}: image {image_id!r} is on both; keep one row per image"
            )
        rows[image_id] = i + 2
        try:
            contexts[image_id] = (
                i + 2,
                parse_context(
                    rec.get(age_col) if age_col else None, rec.get("sex"), rec.get(site_col) if site_col else None
                ),
            )
        except ContextError as exc:
            raise ContextError(f"{csv_path}, row {i + 2}: {exc}") from None
    return contexts


# ----------------------------------------------------------------------------------------- fitting tables
def category_table(values: Sequence[str | None], labels: np.ndarray, n_classes: int) -> dict[str, list[float]]:
    """log p(y | value) − log p(y) per category seen in training, counts smoothed toward the prior by
    SMOOTHING pseudo-images (so a site seen 7 times barely moves the odds)."""
    known = np.array([v is not None for v in values])
    y = labels[known]
    seen = np.array([v for v in values if v is not None], dtype=object)
    prior = np.exp(np.asarray(class_log_prior(y, n_classes)))
    table = {}
    for value in sorted(set(seen)):
        counts = np.bincount(y[seen == value], minlength=n_classes)
        p = (counts + SMOOTHING * prior) / (counts.sum() + SMOOTHING)
        table[value] = (np.log(p) - np.log(prior)).tolist()
    return table


def _age_features(ages: np.ndarray) -> np.ndarray:
    a = np.asarray(ages, dtype=float) / 100.0
    return np.stack([a, a**2, a**3], axis=1)


def age_table(ages: Sequence[float | None], labels: np.ndarray, n_classes: int) -> dict[str, list[float]]:
    """log p(y | age) − log p(y) per whole year from the youngest to the oldest training age: a multinomial
    logistic regression on (a, a², a³), smooth where the 5-year bins of HAM10000 are sparse. Classes the
    training images with an age never show get the floor of the others."""
    known = np.array([a is not None for a in ages])
    x = np.array([a for a in ages if a is not None], dtype=float)
    y = labels[known]
    years = np.arange(math.floor(x.min()), math.ceil(x.max()) + 1)
    model = LogisticRegression(C=1.0, max_iter=5000).fit(_age_features(x), y)
    probs = np.full((len(years), n_classes), 1e-6)
    probs[:, model.classes_] = np.maximum(model.predict_proba(_age_features(years)), 1e-6)
    ratios = np.log(probs / probs.sum(axis=1, keepdims=True)) - np.asarray(class_log_prior(y, n_classes))
    return {str(int(year)): row.tolist() for year, row in zip(years, ratios, strict=True)}


def fit_tables(contexts: Sequence[PatientContext], labels: np.ndarray, n_classes: int) -> dict[str, dict]:
    """Each field's lookup table from training contexts; a field no training image records is left out."""
    labels = np.asarray(labels, dtype=int)
    tables: dict[str, dict] = {}
    ages = [c.age for c in contexts]
    if sum(a is not None for a in ages) >= n_classes:
        tables["age"] = age_table(ages, labels, n_classes)
    for name in ("sex", "site"):
        values = [getattr(c, name) for c in contexts]
        if any(v is not None for v in values):
            tables[name] = category_table(values, labels, n_classes)
    return tables


# ------------------------------------------------------------------------------------------ lookups
def lookup(table: Mapping[str, Sequence[float]], name: str, value: Any) -> np.ndarray | None:
    """A field value's log-likelihood ratios, or None when the table has no row for it. Ages are rounded
    to the year and held inside the table's range (older patients use its oldest age)."""
    if name == "age":
        years = [int(k) for k in table]
        key = str(int(min(max(round(float(value)), min(years)), max(years))))
        return np.asarray(table[key], dtype=float)
    row = table.get(str(value))
    return None if row is None else np.asarray(row, dtype=float)


def field_terms(
    contexts: Sequence[PatientContext], tables: Mapping[str, Mapping[str, Sequence[float]]], n_classes: int
) -> dict[str, np.ndarray]:
    """(N, K) log-likelihood ratios per field; zero rows where the field is not given or not in its table."""
    terms = {}
    for name, table in tables.items():
        term = np.zeros((len(contexts), n_classes))
        for i, context in enumerate(contexts):
            value = getattr(context, name)
            row = None if value is None else lookup(table, name, value)
            if row is not None:
                term[i] = row
        terms[name] = term
    return terms


def context_logits(
    logits: np.ndarray, meta: Mapping[str, Any], contexts: Sequence[PatientContext]
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated log-probabilities (up to a constant) with context, and a mask of the rows that used it.

    Rows with no usable context (`usable_context`) are served image-only (the weights' own temperature),
    exactly as a prediction without context is; the others use the context temperature and field weights."""
    block = meta.get("context")
    if not block:
        raise ContextError("these weights carry no context model (run `python -m dermai context`)")
    z = np.asarray(logits, dtype=np.float64)
    log_prior = np.asarray(meta["log_prior"]) if meta.get("log_prior") else np.zeros(z.shape[1])
    contexts = [usable_context(meta, c)[0] for c in contexts]
    used = np.array([not c.is_empty() for c in contexts], dtype=bool)
    fields = block["fields"]
    terms = field_terms(contexts, {k: v["table"] for k, v in fields.items()}, z.shape[1])
    evidence = sum((fields[k]["weight"] * t for k, t in terms.items()), np.zeros_like(z))
    with_context = z / float(block["temperature"]) + log_prior + evidence
    image_only = z / float(meta.get("temperature") or 1.0) + log_prior
    return np.where(used[:, None], with_context, image_only), used


def context_probs(
    logits: np.ndarray, meta: Mapping[str, Any], contexts: Sequence[PatientContext]
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities a user sees with context (see `context_logits`), and the rows that used it."""
    z, used = context_logits(logits, meta, contexts)
    return softmax_np(z), used


# --------------------------------------------------------------------------------- fitting the weights
def _nll(z: np.ndarray, labels: np.ndarray) -> float:
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_weights(
    logits: np.ndarray,
    labels: np.ndarray,
    terms: Mapping[str, np.ndarray],
    log_prior: Sequence[float] | None,
) -> tuple[float, dict[str, float]]:
    """Temperature and one weight ≥ 0 per field minimising validation log-loss (L-BFGS-B), on the rows some
    field has evidence for: a row without context is served image-only, with the weights' own temperature
    (`context_logits`), so it must not pull the context temperature toward that one."""
    names = list(terms)
    with_evidence = np.any([np.any(terms[n] != 0, axis=1) for n in names], axis=0) if names else []
    if not np.any(with_evidence):
        raise ValueError("no validation image has context the tables can score: nothing to fit")
    z = np.asarray(logits, dtype=np.float64)[with_evidence]
    labels = np.asarray(labels, dtype=int)[with_evidence]
    terms = {n: np.asarray(terms[n])[with_evidence] for n in names}
    bias = np.asarray(log_prior) if log_prior else np.zeros(z.shape[1])

    def loss(params: np.ndarray) -> float:
        evidence = sum((w * terms[n] for w, n in zip(params[1:], names, strict=True)), np.zeros_like(z))
        return _nll(z / params[0] + bias + evidence, labels)

    start = np.array([1.0] + [1.0] * len(names))
    bounds = [(0.05, 20.0)] + [(0.0, 5.0)] * len(names)
    result = minimize(loss, start, method="L-BFGS-B", bounds=bounds)
    return float(result.x[0]), {n: float(w) for n, w in zip(names, result.x[1:], strict=True)}


def unknown_fields(meta: Mapping[str, Any], context: PatientContext) -> list[str]:
    """Given fields the context model cannot use (no table for the field, or a value its table lacks)."""
    fields = (meta.get("context") or {}).get("fields", {})
    out = []
    for name, value in context.given().items():
        table = fields.get(name, {}).get("table")
        if table is None or lookup(table, name, value) is None:
            out.append(name)
    return out


def weighted_fields(meta: Mapping[str, Any]) -> list[str]:
    """The fields the context model uses: those with a table and a fitted weight above 0."""
    fields = (meta.get("context") or {}).get("fields", {})
    return [name for name in FIELDS if name in fields and fields[name]["weight"] > 0]


def usable_context(meta: Mapping[str, Any], context: PatientContext) -> tuple[PatientContext, list[str]]:
    """The part of a context the model can use, and a note for each field left out: one whose value its
    table lacks (e.g. an ISIC site name), or one whose fitted weight is 0. Prediction and evaluation both
    serve an image whose usable context is empty image-only."""
    unknown = unknown_fields(meta, context)
    notes = [f"{name} {getattr(context, name)!r} is not in this model's context tables: not used" for name in unknown]
    used = weighted_fields(meta)
    unweighted = [name for name in context.given() if name not in unknown and name not in used]
    notes += [f"{name} is not used by this model (its weight, fitted on validation, is 0)" for name in unweighted]
    return context.without(unknown + unweighted), notes


NOT_RECORDED = "not recorded in the training data"
WEIGHT_ZERO = "its weight, fitted on validation, is 0: no help beyond the image and the other fields"


def unused_fields(meta: Mapping[str, Any]) -> dict[str, str]:
    """Each context field the model does not use, with the reason that holds for it: no table (`fit_tables`
    leaves out a field no training image records) or a fitted weight of 0 (`fit_weights`); {} without a
    context model. A form that does not ask for a field says which reason, not both as maybes."""
    if not meta.get("context"):
        return {}
    fields = meta["context"].get("fields", {})
    used = weighted_fields(meta)
    return {name: WEIGHT_ZERO if name in fields else NOT_RECORDED for name in FIELDS if name not in used}


def fields_text(names: Sequence[str]) -> str:
    """Field names as a phrase for people: "age", "age and site", "age, sex and site"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}" if names else "no field"


def weak_fit(meta: Mapping[str, Any]) -> str | None:
    """Why the context model's figures cannot be trusted, or None: its field weights and temperature were fitted
    on fewer than `FEW_VALIDATION_IMAGES` validation images. A quick run's 46 gave sex a weight of 3.7 from the
    2 to 7 training images of each rare diagnosis, and a test balanced accuracy of 0.024, far below the 0.143 of
    one diagnosis for all, which read as a bug rather than as a fit on too little. None without a context model
    or where the fit's size is not recorded."""
    block = meta.get("context")
    val = block.get("val_metrics") if isinstance(block, dict) else None
    if not isinstance(val, dict):
        return None
    n_val = val.get("n_val_with_context", val.get("n_val"))
    if not is_number(n_val) or n_val >= FEW_VALIDATION_IMAGES:
        return None
    return (
        f"the patient-context model was fitted on only {int(n_val)} validation images, so its figures are not "
        "reliable: a rare diagnosis's evidence rests on a handful of images"
    )


def known_values(meta: Mapping[str, Any], name: str) -> list[str]:
    """The values a categorical field's table knows (for forms and error messages); [] if absent."""
    field = (meta.get("context") or {}).get("fields", {}).get(name)
    return sorted(field["table"]) if field else []


def age_range(meta: Mapping[str, Any]) -> tuple[int, int] | None:
    """The youngest and oldest age the age table holds, or None without one."""
    field = (meta.get("context") or {}).get("fields", {}).get("age")
    if not field:
        return None
    years = [int(k) for k in field["table"]]
    return min(years), max(years)
