"""The Training page as a researcher uses it: the recipe selector, one stop control per run, the weights it
hands to Predict, the curves and Compare runs (pages/training.py, dermai/plots.py, dermai/compare.py)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dermai import jobs
from dermai.ui import runs_view, sidebar_state, training_form, weights_menu
from tests import test_app_pages
from tests.test_app_pages import REPO, TIMEOUT, assert_clean, copy_tiny_run, page

app_env = test_app_pages.app_env  # the fixture: data, tiny weights and an empty runs folder

QUICK = next(name for name in training_form.TRAIN_PRESETS if name.startswith("Quick check"))


def test_preset_edits_name_the_fields_that_no_longer_match_the_recipe() -> None:
    state: dict = {}
    training_form.apply_train_preset(state, QUICK)
    assert training_form.preset_edits(state, QUICK) == []
    assert training_form.preset_edit_note(state, QUICK) is None
    assert training_form.preset_edit_note(state, None) is None  # no recipe chosen: nothing to differ from
    state["train_finetune_epochs"] = 5
    state["train_image_size"] = 96
    state["train_warmup_epochs"] = 0.5  # the recipe's own value, set again: not an edit
    assert training_form.preset_edits(state, QUICK) == ["Finetune epochs", "Image size"]
    note = training_form.preset_edit_note(state, QUICK)
    assert note is not None and note.endswith("no longer is that recipe: Finetune epochs, Image size.")


def test_training_page_says_when_the_form_no_longer_is_the_chosen_recipe(app_env: Path) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/training.py").run()
    at.selectbox(key="train_preset").set_value(QUICK).run()
    assert_clean(at)
    assert not any("no longer is that recipe" in c.value for c in at.caption)
    at.number_input(key="train_pretrain_epochs").set_value(7).run()
    at.number_input(key="train_image_size").set_value(96).run()
    assert_clean(at)
    notes = [c.value for c in at.caption if "no longer is that recipe" in c.value]
    assert notes == [training_form.preset_edit_note(at.session_state, QUICK)]
    assert notes[0].endswith(": Pretrain epochs, Image size.")
    at.selectbox(key="train_preset").set_value(next(iter(training_form.TRAIN_PRESETS))).run()  # another recipe
    assert not any("no longer is that recipe" in c.value for c in at.caption)


STOPS = ("Stop", "Stop this run", "Cancel", "Cancel this job")  # every control that ends a running job


def test_a_running_run_has_one_stop_control_whichever_view_shows_it(app_env: Path) -> None:
    """The live view's Stop and the runs list's "Stop this run" both showed for the running run (the newest,
    so the one chosen): the list now points to the live view, whose Stop reaches the trainer."""
    from dermai.train import STOP_FILE, run_lock
    from tests.test_jobs import stopped_run

    runs = Path(jobs.runs_dir())
    run = stopped_run(runs, "training")
    with run_lock(run):
        at = page("training").run()
        assert_clean(at)
        assert at.selectbox(key="train_run").value == "training"
        assert [b.label for b in at.button if b.label in STOPS] == ["Stop"]
        assert "It is the current job: stop it under “Current job” above." in [c.value for c in at.caption]
        next(b for b in at.button if b.label == "Stop").click().run()
        assert_clean(at)
        assert (run / STOP_FILE).exists()


def test_a_running_run_the_live_view_does_not_show_keeps_its_own_stop(app_env: Path) -> None:
    """Two runs training from terminals: the live view shows the first; the second, chosen in the runs list,
    is stopped from there."""
    from dermai.train import STOP_FILE, run_lock
    from tests.test_jobs import stopped_run

    runs = Path(jobs.runs_dir())
    first, second = stopped_run(runs, "a-first"), stopped_run(runs, "b-second")
    with run_lock(first), run_lock(second):
        at = page("training").run()
        at.selectbox(key="train_run").set_value("b-second").run()
        assert_clean(at)
        assert sorted(b.label for b in at.button if b.label in STOPS) == ["Stop", "Stop this run"]
        next(b for b in at.button if b.label == "Stop this run").click().run()
        assert (second / STOP_FILE).exists() and not (first / STOP_FILE).exists()


def test_a_running_ensemble_is_cancelled_not_stopped_even_once_it_wrote_its_metrics(app_env: Path) -> None:
    """An ensemble job reads no STOP file: its live view offers Cancel this job (ending its process) however
    far it got, and the runs list points there."""
    process = test_app_pages.running_ensemble_job(json.dumps({"kind": "serving", "status": "fitted"}) + "\n")
    try:
        at = page("training").run()
        assert_clean(at)
        assert [b.label for b in at.button if b.label in STOPS] == ["Cancel this job"]
        next(b for b in at.button if b.label == "Cancel this job").click().run()
        assert_clean(at)
        assert process.wait(timeout=30) == -signal.SIGTERM
        assert not (Path(jobs.runs_dir()) / "ens" / "STOP").exists()
    finally:
        process.kill()


def test_the_default_model_is_named_as_the_session_falls_back_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DERMAI_WEIGHTS", raising=False)
    assert weights_menu.default_model_label() == "the shipped model (weights/model.safetensors)"
    monkeypatch.setenv("DERMAI_WEIGHTS", "/models/site.safetensors")
    assert weights_menu.default_model_label() == "the default model (/models/site.safetensors, from DERMAI_WEIGHTS)"
    assert runs_view.uses_weights({}, "/models/site.safetensors")  # no choice yet: the default
    chosen = {sidebar_state.WEIGHTS_KEY: "runs/a/model.safetensors"}
    assert runs_view.uses_weights(chosen, Path.cwd() / "runs/a/model.safetensors")
    assert runs_view.uses_weights(chosen, "runs/b/../a/model.safetensors")  # the "Predict uses these" caption
    assert not runs_view.uses_weights(chosen, "/models/site.safetensors")


def test_using_a_runs_weights_says_what_changed_and_offers_the_way_back(app_env: Path) -> None:
    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    copy_tiny_run(app_env, runs / "tiny")
    at = page("training").run()
    assert at.selectbox(key="train_run").value == "tiny"
    assert runs_view.USE_DEFAULT_WEIGHTS not in [b.label for b in at.button]  # the default is in use
    next(b for b in at.button if b.label == runs_view.USE_RUN_WEIGHTS).click().run()
    assert_clean(at)
    chosen = at.session_state[sidebar_state.WEIGHTS_KEY]
    assert Path(chosen).parent == runs / "tiny"
    said = [s.value for s in at.success]
    assert said == [runs_view.weights_used_note("tiny", chosen)]
    assert f"run tiny's weights ({chosen})" in said[0] and f"the default model ({app_env}" in said[0]
    assert "Predict uses these weights." in [c.value for c in at.caption]
    assert runs_view.USE_RUN_WEIGHTS not in [b.label for b in at.button]
    next(b for b in at.button if b.label == runs_view.USE_DEFAULT_WEIGHTS).click().run()
    assert_clean(at)
    assert at.session_state[sidebar_state.WEIGHTS_KEY] == str(app_env)
    assert [s.value for s in at.success] == [weights_menu.default_weights_note()]
    assert runs_view.USE_RUN_WEIGHTS in [b.label for b in at.button]
    at.run()
    assert not at.success  # said once


def test_pretrainings_loss_is_drawn_once_as_the_nt_xent_loss_it_is() -> None:
    """The trainer logs pretraining's loss and its NT-Xent loss, the same number: two lines drawn on top of
    each other. Fine-tuning's loss (cross-entropy + λ·NT-Xent) keeps its parts."""
    from dermai.plots import training_curves_figure

    pretrain = [{"kind": "step", "stage": "pretrain", "step": s, "loss": 5.0 - s, "ntxent": 5.0 - s} for s in range(3)]
    finetune = [
        {"kind": "step", "stage": "finetune", "step": s, "loss": 2.0 - s / 2, "ce": 1.5 - s / 2, "ntxent": 1.0}
        for s in range(3)
    ]
    fig = training_curves_figure([*pretrain, *finetune])
    names = [t.name for t in fig.data]
    assert names == ["pretrain loss (= ntxent)", "finetune loss", "finetune ce", "finetune ntxent"]
    assert list(fig.data[0].y) == [5.0, 4.0, 3.0]
    # A loss that matches its part at some steps only is two lines: they part somewhere.
    pretrain[1]["loss"] = 4.5
    assert [t.name for t in training_curves_figure(pretrain).data] == ["pretrain loss", "pretrain ntxent"]
    # With λ = 0 fine-tuning's loss is its cross-entropy: one line again.
    ce_only = [{**r, "loss": r["ce"], "ntxent": 0.9} for r in finetune]
    assert [t.name for t in training_curves_figure(ce_only).data] == ["finetune loss (= ce)", "finetune ntxent"]


def swa_run(root: Path, name: str, aurocs: list[float], average: float, kept: bool) -> Path:
    """A fine-tuning run that averaged its last two epochs, as the trainer writes it: the epochs, then a "swa"
    record (train.Trainer._finish_swa) with the average's validation figures and whether it was kept."""
    from tests.test_compare import make_run

    run = make_run(root, name, 1e-3, aurocs)
    record = {"kind": "swa", "stage": "finetune", "epochs_averaged": 2, "val_auroc": average, "val_bacc": 0.7}
    record.update(val_acc=0.75, best_val_auroc=max(average, *aurocs), kept=kept)
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    return run


def test_compare_runs_shows_a_weight_averages_result_beside_the_best_epoch(tmp_path: Path) -> None:
    """Compare runs read epoch records only: an SWA run's average (its weights, when kept) was missing."""
    from dermai.compare import compare_runs
    from dermai.plots import compare_runs_figure
    from dermai.train import read_metrics
    from tests.test_compare import make_run

    runs = {
        "plain": make_run(tmp_path, "plain", 1e-3, [0.80, 0.84]),
        "swa": swa_run(tmp_path, "swa", [0.80, 0.83, 0.82], average=0.86, kept=True),
    }
    summary, _ = compare_runs(runs)
    assert list(summary["stage"]) == [
        "finetune",
        "finetune",
        "finetune: weight average of 2 epochs (kept as the run's weights)",
    ]
    assert list(summary["run"]) == ["plain", "swa", "swa"]
    average = summary.iloc[2]
    assert average["best_val_auroc"] == 0.86 and average["val_bacc_at_best"] == 0.7
    assert pd.isna(average["best_epoch"]) and pd.isna(average["epochs_run"])  # it belongs to no epoch
    assert list(summary["best_epoch"].iloc[:2]) == [1, 1] and str(summary["best_epoch"].dtype) == "Int64"
    fig = compare_runs_figure({name: read_metrics(path) for name, path in runs.items()}, "val_bacc")
    star = fig.data[-1]
    assert star.name == "swa: finetune: weight average of 2 epochs (kept as the run's weights)"
    assert list(star.x) == [3.5] and list(star.y) == [0.7]
    assert [t.name for t in fig.data[:2]] == ["plain", "swa"]


def test_training_page_compares_an_swa_run_with_others(app_env: Path) -> None:
    from tests.test_compare import make_run

    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    make_run(runs, "plain", 1e-3, [0.80, 0.84])
    swa_run(runs, "swa", [0.80, 0.83], average=0.81, kept=False)
    at = page("training").run()
    at.multiselect(key="compare_runs").set_value(["plain", "swa"]).run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    summary = at.dataframe[1].value  # after the runs table
    assert list(summary["stage"])[-1] == "finetune: weight average of 2 epochs (not kept)"
    assert list(summary["best_val_auroc"]) == [0.84, 0.83, 0.81]
