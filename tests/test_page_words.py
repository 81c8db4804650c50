"""Words on the clinician and researcher pages that a browser walk-through found wanting (AppTest and the
functions behind the pages)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from dermai.metrics import choose_operating_points
from dermai.predict import cut_off_validation, validation_figures
from dermai.report import prediction_html, score_text
from dermai.ui import predict_view, runs_view, weights_menu
from tests.conftest import HAM
from tests.test_app_pages import alerts, app_env, assert_clean, page  # noqa: F401 (fixture)
from tests.test_report import prediction

IMAGE = HAM / "images" / "ISIC_0029417.jpg"  # an akiec: the tiny model tiers it


def without_counts(weights: Path, folder: Path) -> Path:
    """A copy of `weights` whose operating points lack the counts, as weights calibrated before they were kept."""
    folder.mkdir()
    meta = json.loads(weights.with_suffix(".json").read_text())
    for points in (meta["operating_points"], meta["context"]["operating_points"]):
        for point in points.values():
            point.pop("n_malignant"), point.pop("n_benign")
    (folder / "model.safetensors").write_bytes(weights.read_bytes())
    (folder / "model.json").write_text(json.dumps(meta))
    return folder / "model.safetensors"


def test_operating_points_keep_the_counts_their_figures_rest_on() -> None:
    y = np.array([1] * 20 + [0] * 80)
    p = np.linspace(0, 1, 100)[::-1]
    points = choose_operating_points(y, p)
    assert {(v["n_malignant"], v["n_benign"]) for v in points.values()} == {(20, 80)}


def test_tier_figures_carry_their_interval_and_counts_on_page_and_report() -> None:
    """Predict and the report said "sensitivity 0.92, specificity 0.65" with no hint of how sure that is."""
    counts = {"malignant": 294, "benign": 1207}
    text = validation_figures(280 / 294, 830 / 1207, counts)
    assert text == (
        "sensitivity 0.95 (95% CI 0.92–0.97; 280 of 294 malignant), "
        "specificity 0.69 (95% CI 0.66–0.71; 830 of 1207 benign)"
    )
    shown = prediction(tier_sensitivity=280 / 294, tier_specificity=830 / 1207, tier_counts=counts)
    assert cut_off_validation(shown) == f"Cut-off validated at {text} on the validation split."
    report = prediction_html(shown, "a.jpg", "w", np.zeros((8, 8, 3), np.uint8))
    assert cut_off_validation(shown) in report
    bare = validation_figures(0.7, 0.9, None)  # older weights: the figures, and why no interval
    assert bare.startswith("sensitivity 0.70, specificity 0.90 (no interval: ")
    assert bare in prediction_html(prediction(), "a.jpg", "w", np.zeros((8, 8, 3), np.uint8))


def tier_captions(at: object) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("Cut-off ")]


def test_predict_and_home_quote_each_cut_off_with_its_interval(app_env: Path, tmp_path: Path) -> None:  # noqa: F811
    at = page("predict").run()
    at.file_uploader[0].upload(IMAGE.name, IMAGE.read_bytes(), "image/jpeg").run()
    assert_clean(at)
    said = tier_captions(at)
    assert len(said) == 1 and "(95% CI " in said[0] and " malignant), specificity " in said[0], said
    home = page("home").run()
    assert_clean(home)
    lines = [c.value for c in home.caption if "cut-off on the validation split" in c.value]
    assert [line.split(" ")[0] for line in lines] == ["Refer", "Urgent"] and all("95% CI" in x for x in lines)

    older = page("predict")
    older.session_state["weights_path"] = str(without_counts(app_env, tmp_path / "older"))
    older.run()
    older.file_uploader[0].upload(IMAGE.name, IMAGE.read_bytes(), "image/jpeg").run()
    assert_clean(older)
    said = tier_captions(older)
    assert len(said) == 1 and "(no interval: these weights do not record" in said[0], said
    assert not any("not as expected" in a for a in alerts(older))


def test_the_worklist_prints_a_tiny_score_as_the_single_image_view_does() -> None:
    """The worklist printed p(malignant) 0.0004 as "0.000" while the single-image view and report print "< 0.001"."""
    table = pd.DataFrame(
        {
            "rank": [1, 2, 3],
            "image": ["a", "b", "c"],
            "p_malignant": [0.5, 0.0004, np.nan],
            "p_top_diagnosis": [0.9, 0.5, np.nan],
        }
    )
    styled = predict_view.worklist_styled(table)
    assert styled.data["p_malignant"].dtype == float  # still numbers: the table sorts by score
    lines = styled.to_string().splitlines()
    assert lines[2].split()[-3:] == ["<", "0.001", "0.50"] and lines[3].split()[-2:] == ["—", "—"], lines


def shown_cells(at: object) -> pd.DataFrame:
    """The worklist's cells as the browser draws them: the Styler's display values Streamlit sends."""
    styler = at.dataframe[0].proto.arrow_data.styler
    return pa.ipc.open_stream(styler.display_values).read_pandas()


def test_predicts_worklist_shows_scores_in_the_reports_words(app_env: Path) -> None:  # noqa: F811
    at = page("predict").run()
    names = ["ISIC_0024306.jpg", "ISIC_0029417.jpg"]
    at.file_uploader[0].set_value([(n, (HAM / "images" / n).read_bytes(), "image/jpeg") for n in names]).run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert table["p_malignant"].dtype == float
    assert list(shown_cells(at)["p_malignant"]) == [score_text(p) for p in table["p_malignant"]]


def test_predict_and_report_explain_the_overlay_colours_in_the_same_words(app_env: Path) -> None:  # noqa: F811
    """Predict never said what the Grad-CAM colours mean, and captioned the overlay unlike the report."""
    from dermai.saliency import OVERLAY_LEGEND

    at = page("predict").run()
    at.file_uploader[0].upload(IMAGE.name, IMAGE.read_bytes(), "image/jpeg").run()
    assert_clean(at)
    caption = at.image[1].proto.imgs[0].caption
    assert caption == "gradcam overlay"
    assert OVERLAY_LEGEND in [c.value for c in at.caption]
    assert "not where the lesion is malignant" in OVERLAY_LEGEND and "Bright colours" in OVERLAY_LEGEND
    image = np.zeros((8, 8, 3), np.uint8)
    report = prediction_html(prediction(), "a.jpg", "w", image, image, "gradcam")
    assert f"<figcaption>{caption}</figcaption>" in report and OVERLAY_LEGEND in report
    assert OVERLAY_LEGEND not in prediction_html(prediction(), "a.jpg", "w", image)  # no overlay: no legend


def test_the_runs_list_names_the_button_that_ends_a_job_preparing_its_data(
    app_env: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a job prepared its data the runs list said "stop it under Current job" beside a button labelled
    "Cancel"."""
    from dermai import jobs
    from tests.test_jobs import harmless

    runs = Path(jobs.runs_dir())
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: harmless(60))  # a job preparing its data
    jobs.start_job("both", {}, runs, name="early")
    try:
        at = page("training").run()
        assert_clean(at)
        assert "Cancel" in [b.label for b in at.button]
        assert "It is the current job: cancel it with “Cancel” under “Current job” above." in [
            c.value for c in at.caption
        ]
    finally:
        jobs.cancel_job(runs)
    assert runs_view.current_job_control(ensemble=False, trained=True, outside=True) == "Stop"
    assert runs_view.current_job_control(ensemble=True, trained=False, outside=False) == "Cancel this job"
    assert runs_view.current_job_control(ensemble=True, trained=False, outside=True) is None


def test_evaluation_says_which_run_can_be_compared(app_env: Path) -> None:  # noqa: F811
    """With nothing of its split to compare with, Evaluation said "train a run": a Quick check run never shares
    the shipped model's split, so following that hint never made a comparison possible."""
    at = page("evaluation").run()
    assert_clean(at)
    seed = json.loads(app_env.with_suffix(".json").read_text())["config"]["data"]["seed"]
    hint = [i.value for i in at.info if i.value.startswith("No other weights of this split")]
    assert hint == [weights_menu.no_comparison_hint({"config": {"data": {"seed": seed, "limit": 64}}})]
    assert f"Seed {seed} and Limit images 64" in hint[0] and "Quick check" in hint[0] and "train a run" not in hint[0]
    shipped = weights_menu.no_comparison_hint({"config": {"data": {"seed": 0, "limit": None}}})
    assert "with Seed 0 and Limit images 0 (every image)" in shipped
    assert "the same Seed and Limit images as these weights" in weights_menu.no_comparison_hint({})


def test_roc_pr_and_reliability_legends_sit_below_their_plots() -> None:
    """At 800 px the ROC and PR legends covered the curves in Evaluation's half-width columns."""
    from dermai.plots import pr_figure, reliability_figure, roc_figure

    y, p = np.array([0, 0, 1, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    bins = [{"count": 3, "mean_pred": 0.2, "frac_pos": 0.3}]
    for fig in (roc_figure(y, p, {"refer": {"threshold": 0.3}}), pr_figure(y, p), reliability_figure(bins)):
        legend = fig.layout.legend
        assert legend.orientation == "h" and legend.yanchor == "top" and legend.y < 0, fig.layout.title.text
