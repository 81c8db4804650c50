"""The Training page in its own words: refusals that name the form's fields, the buttons that hand a run's weights
to Predict, a run's completed epochs and ETA, and Compare runs' labels (pages/training.py, dermai/app_support.py,
dermai/jobs.py)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from dermai import app_support, jobs
from tests import test_app_pages
from tests.test_app_pages import REPO, TIMEOUT, assert_clean

app_env = test_app_pages.app_env  # the fixture: data, tiny weights and an empty runs folder

QUICK = next(name for name in app_support.TRAIN_PRESETS if name.startswith("Quick check"))


def test_a_split_refusal_names_the_forms_training_seed_not_command_line_flags() -> None:
    from dermai.train import split_mismatch

    message = split_mismatch({"config": {"data": {"seed": 0}}}, {"seed": 1})
    assert message is not None and app_support.SPLIT_ADVICE in message  # the trainer's advice, in CLI words
    shown = app_support.in_form_words(message)
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
    (runs / "tiny").symlink_to(app_env.parent, target_is_directory=True)
    at = AppTest.from_file(str(REPO / "pages" / "training.py"), default_timeout=TIMEOUT).run()
    use = next(b for b in at.button if b.label == app_support.USE_RUN_WEIGHTS)
    assert "Predict, Evaluation and Home use run tiny's weights" in use.help
    use.click().run()
    assert_clean(at)
    note = app_support.weights_used_note("tiny", at.session_state[app_support.WEIGHTS_KEY])
    assert f"press “{app_support.USE_DEFAULT_WEIGHTS}” below" in note
    shown = _top_level(at)
    said = shown.index(("success", note))
    back = next(
        i for i, (kind, text) in enumerate(shown) if kind == "button" and text == app_support.USE_DEFAULT_WEIGHTS
    )
    assert said < back  # "below", as the message says
    assert max(len(app_support.USE_RUN_WEIGHTS), len(app_support.USE_DEFAULT_WEIGHTS)) <= 17  # short labels
