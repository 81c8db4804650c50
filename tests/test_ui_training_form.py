"""dermai.ui.training_form: the Training form's recipes, defaults, kept fields and error words."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermai.ui import training_form, widget_state


@pytest.mark.parametrize("preset", list(training_form.TRAIN_PRESETS))
def test_each_training_recipe_fills_a_form_the_trainer_accepts(preset: str) -> None:
    from dermai import jobs
    from dermai.config import check_run_config

    state: dict = {"train_seed": 5, "other": "kept"}
    training_form.apply_train_preset(state, preset)
    defaults = training_form.train_form_defaults()
    assert state["other"] == "kept" and set(state) == {"other", *(f"train_{k}" for k in defaults)}
    for field, default in defaults.items():
        assert type(state[f"train_{field}"]) is type(default), field  # a float field never gets an int
    changes = training_form.TRAIN_PRESETS[preset]
    assert all(state[f"train_{k}"] == v for k, v in changes.items())
    assert state["train_seed"] == defaults["seed"]  # a recipe starts from the defaults, not from the last run
    stage, options = training_form.train_form_options(state)
    check_run_config(jobs.form_config(stage, options))  # raises on a setting the trainer would refuse


def test_training_form_restores_kept_fields_else_defaults() -> None:
    state: dict = {}
    training_form.init_train_form(state)
    assert state["train_image_size"] == 224 and state["train_stage"] == "both"
    state["train_image_size"] = 96
    training_form.keep_train_form(state)
    fresh = {widget_state.KEPT_WIDGETS: state[widget_state.KEPT_WIDGETS]}  # the page was left: widget state dropped
    training_form.init_train_form(fresh)
    assert fresh["train_image_size"] == 96 and fresh["train_lr"] == 1e-3


def test_the_training_form_width_zero_trains_a_square_and_a_width_reaches_the_trainer(tmp_path: Path) -> None:
    from dermai import jobs
    from dermai.config import train_input_size

    state: dict = {}
    training_form.init_train_form(state)
    assert state["train_image_width"] == 0  # the paper's square by default
    state["train_image_size"], state["train_image_width"] = 120, 160
    stage, options = training_form.train_form_options(state)
    assert train_input_size(jobs.form_config(stage, options).train) == (120, 160)
    command = jobs.build_command(stage, tmp_path / "run", options)
    assert command[command.index("--image-size") + 1] == "120" and command[command.index("--image-width") + 1] == "160"
    state["train_image_width"] = 0
    stage, options = training_form.train_form_options(state)
    assert options["image_width"] is None and train_input_size(jobs.form_config(stage, options).train) == 120
    assert "--image-width" not in jobs.build_command(stage, tmp_path / "run", options)


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (
            "warmup_epochs (2) must be shorter than pretrain_epochs (2): the learning rate would only rise",
            "“Warm-up epochs” (2) must be shorter than “Pretrain epochs” (2): the learning rate would only rise",
        ),
        (
            "distill_from is set but distill_weight is 0: give --distill-weight (0 < w ≤ 1)",
            "“Teacher” is set but “Teacher's share w” is 0: give “Teacher's share w” (0 < w ≤ 1)",
        ),
        ("lambda_ntxent (--lambda) must be a number ≥ 0 (0 = off), got -1", "“λ (NT-Xent weight)” must be a number"),
        # plain words stay words; a field's name inside a path stays the path
        ("when the stage is both", "when the stage is both"),
        ("data folder: /data/mask_weight/metadata.csv: no such file", "/data/mask_weight/metadata.csv"),
    ],
)
def test_training_form_errors_name_the_forms_fields_not_the_trainers(message: str, shown: str) -> None:
    assert shown in training_form.in_form_words(message)
