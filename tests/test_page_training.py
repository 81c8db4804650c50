"""The Training page as a researcher uses it: the recipe selector, one stop control per run, the weights it
hands to Predict, the curves and Compare runs (pages/training.py, dermai/plots.py, dermai/compare.py)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from dermai import app_support
from tests import test_app_pages
from tests.test_app_pages import REPO, TIMEOUT, assert_clean

app_env = test_app_pages.app_env  # the fixture: data, tiny weights and an empty runs folder

QUICK = next(name for name in app_support.TRAIN_PRESETS if name.startswith("Quick check"))


def test_preset_edits_name_the_fields_that_no_longer_match_the_recipe() -> None:
    state: dict = {}
    app_support.apply_train_preset(state, QUICK)
    assert app_support.preset_edits(state, QUICK) == []
    assert app_support.preset_edit_note(state, QUICK) is None
    assert app_support.preset_edit_note(state, None) is None  # no recipe chosen: nothing to differ from
    state["train_finetune_epochs"] = 5
    state["train_image_size"] = 96
    state["train_warmup_epochs"] = 0.5  # the recipe's own value, set again: not an edit
    assert app_support.preset_edits(state, QUICK) == ["Finetune epochs", "Image size"]
    note = app_support.preset_edit_note(state, QUICK)
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
    assert notes == [app_support.preset_edit_note(at.session_state, QUICK)]
    assert notes[0].endswith(": Pretrain epochs, Image size.")
    at.selectbox(key="train_preset").set_value(next(iter(app_support.TRAIN_PRESETS))).run()  # another recipe
    assert not any("no longer is that recipe" in c.value for c in at.caption)
