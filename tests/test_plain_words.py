"""Figures and headers a person reads without hovering: the worklist's columns in plain words, and a patient-context
fit on too few validation images kept out of the headline figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dermai.cli import _print_prediction
from dermai.predict import Prediction
from tests.conftest import HAM
from tests.test_app_pages import app_env, assert_clean, page  # noqa: F401  (app_env: a fixture)


def prediction(ood: bool | None) -> Prediction:
    probs = {"mel": 0.7, "nv": 0.3}
    return Prediction(probs, 0.7, "urgent", "meaning", 0.95, 0.6, ood, 1.0, 2.0, [])


def test_the_worklist_headers_say_in_words_what_p_top_and_ood_were(app_env: Path) -> None:  # noqa: F811
    at = page("predict").run()
    names = ["ISIC_0024306.jpg", "ISIC_0025964.jpg"]
    at.file_uploader[0].set_value([(n, (HAM / "images" / n).read_bytes(), "image/jpeg") for n in names])
    at.run()
    assert_clean(at)
    table = next(d for d in at.dataframe if "rank" in d.value.columns)
    config = json.loads(table.proto.columns)
    assert config["p_top_diagnosis"]["label"] == "diagnosis probability"  # was "p(top)"
    assert config["ood"]["label"] == "unlike training images"  # was "OOD"
    assert config["ood"]["help"].startswith("Out of distribution (OOD): yes, the image is unlike")
    assert "top diagnosis's probability" in config["p_top_diagnosis"]["help"]
    assert set(table.value["ood"]) <= {"yes", "no", None}  # the verdict reads as an answer to the header


@pytest.mark.parametrize(("ood", "said"), [(True, "YES"), (False, "no"), (None, "n/a")])
def test_the_terminal_table_heads_the_ood_column_as_the_page_does(
    ood: bool | None, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _print_prediction("a.jpg", prediction(ood), {"cam": None, "report": None}, header=True)
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[-3:] == ["UNLIKE", "TRAINING", "IMAGES"] and " OOD" not in header
    assert row.split()[-1] == said and "mel 0.70" in row


def weak_report(unreliable: bool) -> dict:
    """An evaluation report whose patient-context figures come from a fit on 46 validation images (`unreliable`)
    or from a sound fit."""
    ctx = {"n_with_context": 46, "auroc": 0.8, "auroc_ci": None, "balanced_accuracy": None, "ece_malignant": 0.1}
    ctx["thresholds"] = {"refer": {"sensitivity": 0.9, "specificity": 0.4}}
    if unreliable:
        ctx["unreliable"] = "the patient-context model was fitted on only 46 validation images, so …"
    else:
        ctx["balanced_accuracy"] = 0.3
    return {
        "split": "test",
        "n_images": 46,
        "weights": "w",
        "auroc": 0.5,
        "auroc_ci": None,
        "balanced_accuracy": 0.16,
        "baseline_all_benign": {"accuracy": 0.8},
        "calibration": {"ece_malignant": 0.02, "temperature": 2.0},
        "context": ctx,
        "notes": [],
    }


def test_the_terminal_marks_every_figure_of_a_weak_context_fit_unreliable() -> None:
    from dermai.evaluate import summary_text

    lines = summary_text(weak_report(unreliable=True)).splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("with patient context"))
    head, refer = lines[start], lines[start + 1]
    assert "UNRELIABLE fit, these figures are not results (see note)" in head
    assert "AUROC 0.800 (unreliable)" in head and "ECE 0.100 (unreliable)" in head
    assert "balanced accuracy withheld" in head
    assert refer == "  refer (unreliable): sensitivity 0.900, specificity 0.400"  # was unmarked
    sound = summary_text(weak_report(unreliable=False))
    assert "unreliable" not in sound.lower()
    assert "AUROC 0.800, balanced accuracy 0.300, ECE 0.100" in sound and "  refer: sensitivity 0.900" in sound


def test_home_quotes_no_auroc_for_a_weak_context_fit() -> None:
    from dermai.ui.weights_menu import context_caption, context_summary
    from tests.test_context_checks import context_meta

    weak = context_summary(context_meta(46))
    assert "fitted on only 46 validation images" in weak["unreliable"]
    caption = context_caption(weak)
    assert caption.startswith("Optional patient context on the Predict page: sex (weight 3.70). No AUROC is quoted")
    assert "0.92" not in caption and "AUROC on the" not in caption  # its val AUROC, 0.920, was quoted
    sound = context_summary(context_meta(1500))
    assert "unreliable" not in sound and "0.920 with the recorded context" in context_caption(sound)


def test_the_evaluation_page_keeps_a_weak_context_fits_figures_out_of_its_headline(app_env: Path) -> None:  # noqa: F811
    at = page("evaluation").run()
    next(b for b in at.button if b.label == "Evaluate").click()
    at.run()
    assert_clean(at)
    assert "With patient context" in [h.value for h in at.subheader]  # the tiny model's fit: a few dozen images
    labels = [m.label for m in at.metric]
    assert labels == ["AUROC (test)", "Bal. accuracy (test)", "ECE (test)", "Images"], labels  # image-only only
    hidden = next(e for e in at.expander if e.label == "Unreliable figures from this fit (not results)")
    assert not hidden.proto.expanded
    figures = hidden.table[0].value
    assert list(figures.index[:2]) == ["AUROC (unreliable)", "ECE (unreliable)"]
    assert "refer sensitivity (unreliable)" in figures.index
    assert not any(c.value.startswith("Each image with the") for c in at.caption)  # its tiers' table, shown before


def test_the_context_fits_json_says_a_weak_fit_is_unreliable(tmp_path: Path, app_env: Path) -> None:  # noqa: F811
    from dermai.serving import fit_context

    copy = tmp_path / "model.safetensors"
    for suffix in (".safetensors", ".json"):
        shutil.copy(app_env.with_suffix(suffix), copy.with_suffix(suffix))
    answer = fit_context(copy, manifest=app_env.parent / "manifest.csv")
    assert "fitted on only" in answer["unreliable"] and answer["val_metrics"]["val_auroc"] is not None
