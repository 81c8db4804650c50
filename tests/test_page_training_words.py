"""The Training page in its own words: refusals that name the form's fields, the buttons that hand a run's weights
to Predict, a run's completed epochs and ETA, and Compare runs' labels (pages/training.py, dermai/ui/,
dermai/jobs.py, dermai/run_status.py, dermai/run_table.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from dermai import jobs, run_status, run_table
from dermai.train import read_metrics
from dermai.ui import runs_view, sidebar_state, training_form
from tests import test_app_pages
from tests.test_app_pages import REPO, TIMEOUT, assert_clean, copy_tiny_run

app_env = test_app_pages.app_env  # the fixture: data, tiny weights and an empty runs folder

QUICK = next(name for name in training_form.TRAIN_PRESETS if name.startswith("Quick check"))


def test_a_split_refusal_names_the_forms_training_seed_not_command_line_flags() -> None:
    from dermai.train import split_mismatch

    message = split_mismatch({"config": {"data": {"seed": 0}}}, {"seed": 1})
    assert message is not None and training_form.SPLIT_ADVICE in message  # the trainer's advice, in CLI words
    shown = training_form.in_form_words(message)
    assert "--" not in shown and "manifest" not in shown
    assert "vary “Training seed (blank = Seed)” under “Start from a finished run” instead" in shown
    assert shown.startswith("trained on another split (seed 0, this run 1)")


def test_the_training_page_refuses_weights_of_another_split_in_the_forms_words(app_env: Path) -> None:
    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    (runs / "tiny").symlink_to(app_env.parent, target_is_directory=True)  # fine-tuned on seed 0, 64 images
    at = AppTest.from_file(str(REPO / "pages" / "training.py"), default_timeout=TIMEOUT).run()
    at.selectbox(key="train_preset").set_value(QUICK).run()
    at.selectbox(key="train_stage").set_value("finetune").run()
    at.number_input(key="train_seed").set_value(1).run()
    at.number_input(key="train_limit").set_value(64).run()
    start = next(option for option in at.selectbox(key="start_from").options if option.startswith("tiny "))
    at.selectbox(key="start_from").set_value(start).run()
    next(b for b in at.button if b.label == "Start training").click().run()
    assert_clean(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Not started: ") and "(seed 0, this run 1)" in errors[0]
    assert "“Training seed (blank = Seed)”" in errors[0]
    assert "--" not in errors[0] and "manifest" not in errors[0]
    assert jobs.current_job(runs) is None  # nothing was launched


def _top_level(at: AppTest) -> list[tuple[str, str]]:
    """The page's top-level elements in the order shown, as (type, text): a success message's value, a
    button's label."""
    shown = []
    for node in at.main.children.values():
        text = getattr(node, "label", None) or getattr(node, "value", None)
        shown.append((node.type, text if isinstance(text, str) else ""))
    return shown


def test_the_way_back_to_the_default_model_is_where_the_message_says(app_env: Path) -> None:
    """The message after choosing a run's weights said "“Back to the default model” below" with the button
    above it; the buttons' labels were cut ("Use these weights for pre…")."""
    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    copy_tiny_run(app_env, runs / "tiny")
    at = AppTest.from_file(str(REPO / "pages" / "training.py"), default_timeout=TIMEOUT).run()
    use = next(b for b in at.button if b.label == runs_view.USE_RUN_WEIGHTS)
    assert "Predict, Evaluation and Home use run tiny's weights" in use.help
    use.click().run()
    assert_clean(at)
    note = runs_view.weights_used_note("tiny", at.session_state[sidebar_state.WEIGHTS_KEY])
    assert f"press “{runs_view.USE_DEFAULT_WEIGHTS}” below" in note
    shown = _top_level(at)
    said = shown.index(("success", note))
    back = next(i for i, (kind, text) in enumerate(shown) if kind == "button" and text == runs_view.USE_DEFAULT_WEIGHTS)
    assert said < back  # "below", as the message says
    assert max(len(runs_view.USE_RUN_WEIGHTS), len(runs_view.USE_DEFAULT_WEIGHTS)) <= 17  # short labels


def _write_records(run: Path, records: list[dict]) -> None:
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _stopped_in_finetune(runs: Path) -> Path:
    """A "both" run of 2 + 6 planned epochs that the user stopped in fine-tuning's first epoch, as the trainer
    leaves it: both pretraining epochs recorded, fine-tuning steps but no fine-tuning epoch record."""
    run = runs / "qa1"
    run.mkdir(parents=True)
    train = {"pretrain_epochs": 2, "finetune_epochs": 6, "image_size": 64}
    (run / "config.json").write_text(json.dumps({"config": {"stage": "both", "train": train}}))
    step = {"kind": "step", "total_steps": 40, "time": time.time() - 60}
    records = [
        *({**step, "stage": "pretrain", "epoch": e, "global_step": 5 * e + 5, "eta_s": 70.0} for e in range(2)),
        *({"kind": "epoch", "stage": "pretrain", "epoch": e, "global_step": 5 * e + 5} for e in range(2)),
        {**step, "stage": "finetune", "epoch": 0, "global_step": 12, "eta_s": 50.0},
        {"kind": "status", "status": "stopped", "weights": None, "best_score": None, "time": time.time() - 50},
    ]
    _write_records(run, records)
    return run


def test_a_stopped_runs_status_says_the_epochs_it_completed_of_those_planned(tmp_path: Path) -> None:
    """qa1 stopped in fine-tuning's first epoch read "stopped · stage both · epochs 2 + 6" (the plan)."""
    runs = tmp_path / "runs"
    run = _stopped_in_finetune(runs)
    assert run_status.completed_epochs(read_metrics(run)) == {"pretrain": 2}
    row = run_table.list_runs(runs).iloc[0]
    assert row["epochs"] == "pretrain 2/2, finetune 0/6"
    assert runs_view.status_line(row) == (
        "Status: **stopped** · stage both · epochs pretrain 2/2, finetune 0/6 · input 64 px · "
        f"{row['disk_gb']:.2f} GB on disk"
    )
    train = {"pretrain_epochs": 100, "finetune_epochs": 15}
    assert run_table.stage_epochs("finetune", train, {"finetune": 9}) == "9/15"  # an early stop: 9 of 15
    assert run_table.stage_epochs("pretrain", train, {}) == "0/100"
    assert run_table.stage_epochs("both", train) == "100 + 15"  # without records: the plan alone


def test_the_eta_is_the_last_steps_whichever_record_came_last() -> None:
    """Epoch records carry no ETA: read from the last record alone, the live view flipped to "ETA unknown" at
    each one."""
    step = {"kind": "step", "stage": "finetune", "eta_s": 80.0}
    epoch = {"kind": "epoch", "stage": "finetune", "val_auroc": 0.7}
    assert run_status.running_eta([step]) == 80.0
    assert run_status.running_eta([step, epoch]) == 80.0
    assert run_status.running_eta([step, epoch, {**step, "eta_s": 60}]) == 60.0
    assert run_status.running_eta([epoch]) is None  # no step yet: unknown
    stopped = {"kind": "status", "status": "stopped"}
    assert run_status.running_eta([step, stopped]) is None  # an earlier job's estimate is not the resumed job's
    assert run_status.running_eta([step, stopped, epoch, {**step, "eta_s": 12}, epoch]) == 12.0


def test_a_running_run_ending_an_epoch_keeps_its_eta_and_shows_its_progress(tmp_path: Path) -> None:
    from dermai.train import run_lock

    runs = tmp_path / "runs"
    run = _stopped_in_finetune(runs)
    records = read_metrics(run)[:-1]  # resumed: no stop record, and a fine-tuning epoch just ended
    _write_records(run, [*records, {"kind": "epoch", "stage": "finetune", "epoch": 0, "global_step": 15}])
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"\0" * 3_000_000)
    with run_lock(run):
        status = run_status.run_status(run, runs)
        assert status.status == "running" and status.eta_s == 50.0
        row = run_table.run_row(run, runs)
    assert row is not None and row["epochs"] == "pretrain 2/2, finetune 1/6"
    assert row["disk_gb"] >= 0.003  # the folder as it is now, checkpoint included


def test_a_job_started_here_shows_its_stage_before_its_trainer_writes_a_config(app_env: Path) -> None:
    """A job just started here listed as "running · — · (blank)": its stage is in the lock record."""
    runs = Path(jobs.runs_dir())
    run = runs / "fresh"
    run.mkdir(parents=True)
    (run / jobs.LOG_NAME).write_text("")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "dermai"], start_new_session=True)
    record = {"pid": process.pid, "run_dir": str(run), "stage": "finetune", "command": [], "started": time.time()}
    (runs / jobs.LOCK_NAME).write_text(json.dumps(record))
    try:
        row = run_table.run_row(run, runs)
        assert row is not None and (row["status"], row["stage"]) == ("running", "finetune")
        at = AppTest.from_file(str(REPO / "pages" / "training.py"), default_timeout=TIMEOUT).run()
        assert_clean(at)
        assert at.dataframe[0].value.set_index("name").loc["fresh", "stage"] == "finetune"
        line = next(m.value for m in at.markdown if m.value.startswith("Status:"))
        assert line.startswith("Status: **running** · stage finetune · ")
    finally:
        process.kill()
        process.wait()


def test_setting_differences_are_named_by_the_forms_labels_and_keep_their_keys(tmp_path: Path) -> None:
    from dermai.compare import flatten, run_settings, setting_differences
    from dermai.config import RunConfig, to_dict
    from tests.test_compare import make_run

    known = {*flatten(to_dict(RunConfig())), "start.init_weights", "start.reset_classifier"}
    assert set(runs_view.SETTING_LABELS) <= known  # every labelled key is one a run's settings have
    a = make_run(tmp_path, "a", 1e-3, [0.8])
    b = make_run(tmp_path, "b", 3e-4, [0.8], init="runs/x/model.safetensors")
    settings = {"a": run_settings(a), "b": {**run_settings(b), "train.finetune_epochs": 6, "augment.hue": 0.1}}
    table = runs_view.labelled_differences(setting_differences(settings))
    assert table.index.name == "setting"
    assert dict(zip(table[runs_view.SETTING_KEY_COLUMN], table.index, strict=True)) == {
        "train.finetune_epochs": "Finetune epochs",
        "train.lr": "Learning rate",
        "augment.hue": "augment.hue",  # no form field: its key, in both places
        "start.init_weights": "Start from",
    }
    assert table.loc["Learning rate", ["a", "b"]].tolist() == ["0.001", "0.0003"]
    seeds = runs_view.labelled_differences(setting_differences({"a": {"data.seed": 0}, "b": {"data.seed": 1}}))
    assert list(seeds.index) == ["Seed"]  # the split's seed, not "Training seed"


def test_compare_runs_shows_the_forms_labels_and_readable_columns(app_env: Path) -> None:
    from tests.test_compare import make_run

    runs = Path(jobs.runs_dir())
    runs.mkdir(parents=True)
    make_run(runs, "a", 1e-3, [0.80, 0.84])
    make_run(runs, "b", 3e-4, [0.82, 0.83])
    at = AppTest.from_file(str(REPO / "pages" / "training.py"), default_timeout=TIMEOUT).run()
    at.multiselect(key="compare_runs").set_value(["a", "b"]).run()
    assert_clean(at)
    summary, differences = at.dataframe[1], at.dataframe[2]  # after the runs table
    shown = json.loads(summary.proto.columns)
    assert shown["best_epoch"]["label"] == "best epoch" and shown["epochs_run"]["label"] == "epochs validated"
    assert list(differences.value.index) == ["Learning rate"]
    assert list(differences.value[runs_view.SETTING_KEY_COLUMN]) == ["train.lr"]
