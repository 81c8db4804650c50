"""What a walk through the app in a browser, as a clinician and as a researcher, found wrong (AppTest)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dermai import jobs, run_status
from dermai.ui import weights_menu
from tests.conftest import HAM
from tests.test_app_pages import alerts, app_env, assert_clean, copy_tiny_run, page  # noqa: F401 (fixture)


def cancelled_before_a_checkpoint(app_env: Path, name: str) -> Path:  # noqa: F811 (the fixture's value)
    """A run the user cancelled before it saved anything: a config, a manifest and a log, no weights or metrics."""
    run = copy_tiny_run(app_env, Path(jobs.runs_dir()) / name)
    for leftover in ("model.safetensors", "model.json", "metrics.jsonl"):
        (run / leftover).unlink(missing_ok=True)
    now = time.time()
    (run / jobs.LOG_NAME).write_text(
        f"--- dermai app: job {jobs.STARTED} 2026-12-07 15:23:21 (t={now - 20:.3f}) ---\n"
        f"--- dermai app: job {jobs.CANCELLED} 2026-12-07 15:23:34 (t={now - 10:.3f}) ---\n"
        "error: interrupted\n"
    )
    return run


def test_a_run_cancelled_before_its_weights_can_be_viewed_and_deleted(app_env: Path) -> None:  # noqa: F811
    copy_tiny_run(app_env, Path(jobs.runs_dir()) / "done")  # beside a finished run, as on a real runs folder
    run = cancelled_before_a_checkpoint(app_env, "cut")
    at = page("training").run()
    at.selectbox(key="train_run").set_value("cut").run()
    assert_clean(at)
    assert run_status.run_status(run).status == "stopped"
    assert "Cancelled by the user before it saved a checkpoint: there is nothing to resume." in alerts(at)
    labels = [b.label for b in at.button]
    assert "Delete cut" in labels  # the Delete popover's button: the only way to clear the run from the page
    assert not any("Predict" in label for label in labels), labels  # no weights: nothing to predict with
    next(b for b in at.button if b.label == "Delete cut").click()
    at.run()
    assert_clean(at)
    assert not run.exists()
    assert any(s.startswith("Deleted run cut") for s in alerts(at)), alerts(at)


IMAGE = HAM / "images" / "ISIC_0029417.jpg"  # an akiec: the tiny model tiers it


def validated_copy(app_env: Path, folder: Path) -> Path:  # noqa: F811 (the fixture's value)
    """The tiny weights, recorded as validated on enough images (the shipped model's case)."""
    meta = json.loads(app_env.with_suffix(".json").read_text())
    (folder / "model.safetensors").write_bytes(app_env.read_bytes())
    val = {**meta["val_metrics"], "val_auroc": 0.9, "n_val": 1500}
    (folder / "model.json").write_text(json.dumps({**meta, "val_metrics": val}))
    return folder / "model.safetensors"


def cut_off_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("Cut-off ")]


def test_predict_does_not_call_weakly_validated_cut_offs_validated(app_env: Path, tmp_path: Path) -> None:  # noqa: F811
    """Under the tier the page said "Cut-off validated at sensitivity …" even for weights whose banner at the top
    says their tiers and sensitivity are not reliable (a quick training run's): the two contradicted each other."""
    at = page("predict").run()
    at.file_uploader[0].upload(IMAGE.name, IMAGE.read_bytes(), "image/jpeg").run()
    assert_clean(at)
    assert any("not validated well enough for triage" in a for a in alerts(at))
    said = cut_off_captions(at)
    assert len(said) == 1 and said[0].startswith("Cut-off set at sensitivity "), said
    assert "not reliable" in said[0] and "validated" not in said[0], said

    good = page("predict")
    good.session_state["weights_path"] = str(validated_copy(app_env, tmp_path))
    good.run()
    good.file_uploader[0].upload(IMAGE.name, IMAGE.read_bytes(), "image/jpeg").run()
    assert_clean(good)
    assert not any("not validated well enough" in a for a in alerts(good))
    said = cut_off_captions(good)
    assert len(said) == 1 and said[0].startswith("Cut-off validated at sensitivity "), said
    assert said[0].endswith("on the validation split."), said


def test_predict_names_a_field_it_does_not_ask_for_once(app_env: Path) -> None:  # noqa: F811
    """The shipped model's context form said "Not asked: sex (sex: its weight, …)": the field's name twice."""
    from dermai.context import NOT_RECORDED, WEIGHT_ZERO
    from dermai.weights import DEFAULT_WEIGHTS

    at = page("predict")
    at.session_state["weights_path"] = str(DEFAULT_WEIGHTS)
    at.run()
    assert_clean(at)
    said = [c.value for c in at.caption if c.value.startswith("Not asked: ")]
    assert said == [f"Not asked: sex ({WEIGHT_ZERO})."], said
    two = weights_menu.unused_fields_text({"sex": WEIGHT_ZERO, "site": NOT_RECORDED})
    assert two == f"sex, site (sex: {WEIGHT_ZERO}; site: {NOT_RECORDED})"


def test_the_confusion_matrix_labels_every_class_at_800_px() -> None:
    """At 800 px the Evaluation page's confusion matrix is narrow, and plotly thinned its category ticks to
    every other class (akiec, bkl, mel, vasc): which predicted column is which could not be read."""
    from dermai.plots import confusion_figure

    classes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    fig = confusion_figure([[1] * 7 for _ in classes], classes)
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        assert (axis.tickmode, list(axis.tickvals), list(axis.ticktext)) == ("array", classes, classes)


def tier_titles(at: AppTest) -> list[str]:
    return [s.value for s in at.subheader if s.value.startswith("Triage tiers")]


def test_home_does_not_call_weakly_validated_tiers_validated(app_env: Path, tmp_path: Path) -> None:  # noqa: F811
    """Home's model card headed a quick run's tiers "Triage tiers (validated on the validation split)" right under
    its banner saying those tiers are not reliable."""
    at = page("home").run()
    assert_clean(at)
    assert any("not validated well enough for triage" in a for a in alerts(at))
    (title,) = tier_titles(at)
    assert "not reliable" in title and "validated" not in title, title

    good = page("home")
    good.session_state["weights_path"] = str(validated_copy(app_env, tmp_path))
    good.run()
    assert_clean(good)
    (title,) = tier_titles(good)
    assert "not reliable" not in title and ("validated" in title or "re-checked" in title), title


def test_the_weak_weights_banner_reads_as_one_sentence(app_env: Path) -> None:  # noqa: F811
    """The banner read "These weights are not validated well enough for triage: its cut-offs were set on only 46
    validation images: its tiers and their sensitivity and specificity are not reliable.": "these weights … its",
    and a second colon where a reason meets its consequence."""
    at = page("home").run()
    assert_clean(at)
    (banner,) = [a for a in alerts(at) if "not validated well enough for triage" in a]
    assert " its " not in banner, banner
    assert "their cut-offs were set on only " in banner and ", so their tiers " in banner, banner
    assert banner.count(":") == 1, banner  # the bold lead's, only


def test_starting_a_run_shows_that_run_below(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """After "Start training" the page said "Started run second" while the run shown under Runs stayed the one
    chosen before, so its status, buttons and curves read as the new run's."""
    runs = Path(jobs.runs_dir())
    copy_tiny_run(app_env, runs / "done")
    started = []

    def start(stage: str, options: dict, folder: Path, name: str | None = None) -> jobs.Job:
        """No trainer: a run folder the user has just launched, as the Runs table lists it."""
        started.append(name)
        run = cancelled_before_a_checkpoint(app_env, name or "unnamed")
        return jobs.Job(4242, str(run), stage, [], time.time())

    monkeypatch.setattr(jobs, "start_job", start)
    at = page("training").run()
    assert at.selectbox(key="train_run").value == "done"
    at.text_input[0].set_value("second")
    next(b for b in at.button if b.label == "Start training").click()
    at.run()
    assert_clean(at)
    assert started == ["second"]
    assert [s.value for s in at.success] == ["Started run second (pid 4242)."]
    assert at.selectbox(key="train_run").value == "second"
    at.selectbox(key="train_run").set_value("done").run()  # the user may still look at another run
    assert at.selectbox(key="train_run").value == "done"


NAEVUS = HAM / "images" / "ISIC_0024306.jpg"  # an nv the shipped model scores p(malignant) 0.0004


def test_a_tiny_score_is_not_shown_as_zero(app_env: Path) -> None:  # noqa: F811
    """The shipped model scores this naevus 0.0004: page and report said "p(malignant) 0.000", which reads as no
    chance at all, beside a routine tier whose text says it is never an all-clear."""
    from html import unescape

    from PIL import Image

    from dermai.predict import Predictor
    from dermai.report import prediction_html, score_text
    from dermai.weights import DEFAULT_WEIGHTS

    assert (score_text(0.0004), score_text(0.0), score_text(0.0005), score_text(0.4761)) == (
        "< 0.001",
        "< 0.001",
        "0.001",
        "0.476",
    )
    at = page("predict")
    at.session_state["weights_path"] = str(DEFAULT_WEIGHTS)
    at.run()
    at.file_uploader[0].upload(NAEVUS.name, NAEVUS.read_bytes(), "image/jpeg").run()
    assert_clean(at)
    assert [(m.label, m.value) for m in at.metric] == [("p(malignant)", "< 0.001")]
    p = Predictor.from_weights(DEFAULT_WEIGHTS).predict(str(NAEVUS))
    assert p.p_malignant < 0.0005
    html = unescape(prediction_html(p, NAEVUS.name, str(DEFAULT_WEIGHTS), Image.open(NAEVUS)))
    assert "<th>Malignancy score p(malignant)</th><td>< 0.001</td>" in html
