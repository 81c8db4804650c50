"""Evaluation's patient-context and subgroup figures say how much they rest on: a context model fitted on a
handful of validation images is flagged rather than quoted, and each subgroup rate carries its interval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dermai.context import weak_fit
from dermai.data import DIAGNOSES
from dermai.evaluate import _score_with_context, summary_text
from dermai.weights import FEW_VALIDATION_IMAGES
from tests.test_app_pages import alerts, app_env, assert_clean, page  # noqa: F401  (app_env: a fixture)
from tests.test_plain_words import weak_report

CLASSES = list(DIAGNOSES)


def context_meta(n_val: int) -> dict:
    """Weights with a sex-only context model fitted on `n_val` validation images."""
    male = [0.5, 0.1, -0.2, 0.5, -0.2, 0.0, -1.9]
    return {
        "classes": CLASSES,
        "log_prior": np.log([0.03, 0.05, 0.12, 0.01, 0.11, 0.67, 0.01]).tolist(),
        "context": {
            "fields": {"sex": {"weight": 3.7, "table": {"male": male, "female": [-v for v in male]}}},
            "temperature": 1.5,
            "val_metrics": {"val_auroc": 0.92, "n_val": n_val, "n_val_with_context": n_val},
        },
    }


def scored_rows(n: int = 40) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % len(CLASSES)
    rows = pd.DataFrame(
        {
            "age": 50.0,
            "sex": np.where(np.arange(n) % 2, "male", "female"),
            "localization": "back",
            "malignant": np.isin(labels, [0, 1, 4]).astype(int),
            "group": [f"lesion{i}" for i in range(n)],
        }
    )
    return rng.normal(size=(n, len(CLASSES))), rows, labels


def test_a_context_model_fitted_on_few_validation_images_is_said_to_be_unreliable() -> None:
    assert "fitted on only 46 validation images" in weak_fit(context_meta(46))
    assert weak_fit(context_meta(FEW_VALIDATION_IMAGES)) is None
    assert weak_fit({"classes": CLASSES}) is None  # no context model: nothing to flag
    assert weak_fit({"context": {"fields": {}}}) is None  # a fit whose size is not recorded


def test_evaluation_gives_no_context_balanced_accuracy_for_a_weak_fit() -> None:
    logits, rows, labels = scored_rows()
    weak = _score_with_context(logits, context_meta(46), rows, labels, n_boot=0)
    assert weak["balanced_accuracy"] is None
    assert "fitted on only 46 validation images" in weak["unreliable"]
    sound = _score_with_context(logits, context_meta(1500), rows, labels, n_boot=0)
    assert "unreliable" not in sound and 0 <= sound["balanced_accuracy"] <= 1


def test_the_terminal_summary_says_a_weak_context_fit_is_not_reliable() -> None:
    report = weak_report(unreliable=True)
    line = next(x for x in summary_text(report).splitlines() if x.startswith("with patient context"))
    assert "balanced accuracy withheld" in line and "AUROC 0.800 (unreliable)" in line  # more: test_plain_words.py


def test_the_evaluation_page_warns_that_the_tiny_models_context_figures_are_unreliable(app_env: Path) -> None:  # noqa: F811
    at = page("evaluation").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    assert "With patient context" in [h.value for h in at.subheader]
    assert any("patient-context model was fitted on only" in a and "not reliable" in a for a in alerts(at))
    assert len([m for m in at.metric if m.label.startswith("Bal. accuracy")]) == 1  # the context's: none
    said = [c.value for c in at.caption if "patient-context model was fitted on only" in c.value]
    assert said == [], said  # the warning says it once; the notes below did again


def test_subgroup_rates_carry_their_interval_in_the_table_and_the_terminal() -> None:
    from dermai.ui.evaluation_view import SUBGROUP_HELP, subgroup_table

    young = {"field": "age", "group": "under 30", "n": 30, "n_malignant": 4, "auroc": None, "auroc_ci": None}
    young |= {"sensitivity": 1.0, "sensitivity_ci": [0.51, 1.0], "specificity": 0.5, "specificity_ci": [0.31, 0.69]}
    benign = {"field": "age", "group": "30-49", "n": 9, "n_malignant": 0, "auroc": None, "auroc_ci": None}
    benign |= {"sensitivity": None, "sensitivity_ci": None, "specificity": 0.8, "specificity_ci": [0.49, 0.94]}
    table = subgroup_table([young, benign], "age")
    assert list(table.columns) == ["group", "images", "malignant", "AUROC", "refer sens.", "refer spec."]
    assert set(SUBGROUP_HELP) <= set(table.columns)  # every column the help names is in the table
    first, second = table.to_dict("records")
    assert first["malignant"] == 4 and first["refer sens."] == "1.000 (0.51–1.00)"
    assert first["refer spec."] == "0.500 (0.31–0.69)" and first["AUROC"] == "too few (< 5 per class)"
    assert pd.isna(second["refer sens."]) and second["refer spec."] == "0.800 (0.49–0.94)"  # no malignant: no rate

    report = {
        "split": "test",
        "n_images": 39,
        "weights": "w",
        "auroc": 0.5,
        "auroc_ci": None,
        "balanced_accuracy": None,
        "baseline_all_benign": {"accuracy": 0.9},
        "calibration": {"ece_malignant": 0.02, "temperature": 2.0},
        "subgroups": [young, benign],
        "notes": [],
    }
    lines = summary_text(report).splitlines()
    assert "  age under 30: 30, 4, n/a, 1.000 (0.51–1.00) / 0.500 (0.31–0.69)" in lines
    assert "  age 30-49: 9, 0, n/a, n/a / 0.800 (0.49–0.94)" in lines


def test_the_evaluation_pages_subgroup_table_shows_intervals(app_env: Path) -> None:  # noqa: F811
    at = page("evaluation").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    groups = at.dataframe[0].value
    assert list(groups.columns) == ["group", "images", "malignant", "AUROC", "refer sens.", "refer spec."]
    rates = [cell for cell in groups["refer spec."] if pd.notna(cell)]
    assert rates and all(cell.endswith(")") and "–" in cell for cell in rates)  # "0.650 (0.52–0.76)"
