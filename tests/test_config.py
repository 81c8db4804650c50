"""Config overrides from the command line and the app: KEY=VALUE items for an augmentation pipeline, read as
each field's type, checked as a whole, and refused with a message naming the flag, item and field."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from dermai import cli
from dermai.config import (
    AugmentConfig,
    RunConfig,
    augment_overrides,
    check_run_config,
    config_differences,
    override_augment,
    run_config_from_dict,
    simclr_augment_config,
    to_dict,
)


def test_overrides_are_read_as_each_fields_type() -> None:
    cfg = override_augment(AugmentConfig(), ["hair_p=0.2", "crop_scale=0.5, 1.0", "color_constancy=true"])
    assert (cfg.hair_p, cfg.crop_scale, cfg.color_constancy) == (0.2, (0.5, 1.0), True)
    assert cfg.hue == AugmentConfig().hue  # untouched fields keep their defaults
    assert override_augment(cfg, ["color_constancy=off"]).color_constancy is False


@pytest.mark.parametrize("base", [AugmentConfig(), simclr_augment_config()])
def test_the_apps_items_rebuild_the_same_config(base: AugmentConfig) -> None:
    changed = override_augment(base, ["rotation_degrees=90", "blur_sigma=0.2,1.5", "vignette_p=0.35", "hue=0"])
    items = augment_overrides(changed, base)
    assert items == ["rotation_degrees=90.0", "hue=0.0", "blur_sigma=0.2,1.5", "vignette_p=0.35"]
    assert override_augment(base, items) == changed
    assert augment_overrides(base, base) == []


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("hair_p=1.5", "hair_p must be a probability in \\[0, 1\\], got 1.5"),
        ("hairp=0.2", "'hairp=0.2': unknown field 'hairp'"),
        ("hair_p", "'hair_p': expected KEY=VALUE"),
        ("hair_p=lots", "hair_p is a number, got 'lots'"),
        ("crop_scale=0.5", "crop_scale takes 2 comma-separated numbers"),
        ("crop_scale=0.9,0.5", "crop_scale must be two numbers 0 < low ≤ high"),
        ("crop_scale=0.5,1.5", "crop_scale is a fraction of the image area"),
        ("color_constancy=maybe", "color_constancy is true or false"),
        ("hue=0.7", "hue must be in \\[0, 0.5\\]"),
        ("brightness=-1", "brightness must be 0 or more"),
        ("brightness=nan", "brightness must be finite"),
        ("std=0.2,0,0.2", "std above 0"),
    ],
)
def test_bad_overrides_are_refused_by_name(item: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        override_augment(AugmentConfig(), [item], "--augment")


def test_the_cli_applies_each_pipelines_overrides_and_refuses_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli.build_parser().parse_args(
        ["train", "--out", str(tmp_path), "--augment", "hair_p=0.3", "--simclr-augment", "grayscale_p=0"]
    )
    cfg = cli._run_config(args, "both")
    assert cfg.augment.hair_p == 0.3 and cfg.simclr_augment.grayscale_p == 0.0
    assert cfg.simclr_augment.rotation_degrees == simclr_augment_config().rotation_degrees
    assert cli.main(["finetune", "--out", str(tmp_path / "run"), "--simclr-augment", "blur_p=2"]) == 2
    assert "--simclr-augment: blur_p must be a probability" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def _train_config(stage: str = "both", **train: object) -> RunConfig:
    cfg = RunConfig(stage=stage)
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@pytest.mark.parametrize(
    ("stage", "train", "message"),
    [
        ("both", {"temperature": 0.0}, "temperature must be a number above 0"),
        ("both", {"temperature": -0.5}, "temperature must be a number above 0"),
        ("both", {"temperature": float("nan")}, "temperature must be a number above 0"),
        ("both", {"lr": 0.0}, "lr must be a number above 0"),
        ("both", {"lr": float("inf")}, "lr must be a number above 0"),
        ("both", {"weight_decay": -1e-4}, "weight_decay must be a number ≥ 0"),
        ("both", {"warmup_epochs": -1.0}, "warmup_epochs must be a number ≥ 0"),
        ("both", {"lambda_ntxent": -0.5}, r"lambda_ntxent \(--lambda\) must be a number ≥ 0"),
        ("both", {"lambda_ntxent": True}, r"lambda_ntxent \(--lambda\) must be a number ≥ 0 \(0 = off\), got True"),
        ("both", {"label_smoothing": 1.5}, r"label_smoothing must be in \[0, 1\)"),
        ("both", {"label_smoothing": -0.1}, r"label_smoothing must be in \[0, 1\)"),
        ("both", {"early_stopping_patience": -1}, r"early_stopping_patience \(--patience\) must be a whole number ≥ 0"),
        ("both", {"num_workers": -2}, "num_workers must be a whole number ≥ 0"),
        ("both", {"seed": -1}, r"train.seed \(--train-seed, else --seed\) must be a whole number ≥ 0, got -1"),
        ("both", {"batch_size": 1}, "batch_size must be a whole number ≥ 2"),
        ("both", {"image_size": 0}, "image_size must be a whole number ≥ 1"),
        ("both", {"precision": "fp16"}, "precision must be one of auto, bf16, fp32"),
        ("finetune", {"finetune_epochs": 0}, "finetune_epochs must be a whole number ≥ 1 when the stage is finetune"),
        ("both", {"finetune_epochs": 0}, "finetune_epochs must be a whole number ≥ 1 when the stage is both"),
        ("pretrain", {"pretrain_epochs": 0}, "pretrain_epochs must be a whole number ≥ 1 when the stage is pretrain"),
        ("both", {"pretrain_epochs": 0}, "pretrain_epochs must be a whole number ≥ 1 when the stage is both"),
        ("pretrain", {"finetune_epochs": -1}, "finetune_epochs must be a whole number ≥ 0"),
        ("finetune", {"finetune_epochs": 3, "swa_epochs": 4}, "swa_epochs must be between 0 and finetune_epochs"),
        ("finetune", {"swa_lr": 0.0}, "swa_lr must be a number above 0"),
        ("distill", {}, "unknown stage 'distill'"),
        (
            "finetune",
            {"finetune_epochs": 2, "warmup_epochs": 2.0},
            r"warmup_epochs \(2\) must be shorter than finetune_epochs \(2\): the learning rate would only rise",
        ),
        ("both", {"pretrain_epochs": 3, "warmup_epochs": 5.0}, r"warmup_epochs \(5\) must be shorter than pretrain"),
    ],
)
def test_bad_training_settings_are_refused_by_name(stage: str, train: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_run_config(_train_config(stage, **train))


def test_a_negative_split_seed_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = RunConfig()
    cfg.data.seed = -1
    with pytest.raises(ValueError, match=r"^data.seed \(--seed\) must be a whole number ≥ 0 \(it seeds the split\)"):
        check_run_config(cfg)
    # the command line says so before reading any data (the folder need not exist), and so does a saved config
    assert cli.main(["finetune", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "run"), "--seed", "-1"]) == 2
    assert "error: data.seed (--seed) must be a whole number ≥ 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("stage", "train"),
    [
        ("both", {}),  # the paper's defaults
        ("finetune", {"pretrain_epochs": 0}),  # a stage the run does not run may be 0 (the app sends both)
        ("pretrain", {"finetune_epochs": 0}),
        ("finetune", {"pretrain_epochs": 2, "finetune_epochs": 10, "warmup_epochs": 5.0}),  # only the stage run counts
        ("both", {"pretrain_epochs": 3, "finetune_epochs": 3, "warmup_epochs": 2.5}),
        ("both", {"lambda_ntxent": 0.0, "weight_decay": 0.0, "label_smoothing": 0.2, "early_stopping_patience": 5}),
    ],
)
def test_sound_training_settings_pass(stage: str, train: dict) -> None:
    cfg = _train_config(stage, **train)
    assert check_run_config(cfg) is cfg


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "0"], r"temperature must be a number above 0 \(the NT-Xent τ .*\), got 0\.0"),
        (["--patience", "-1"], r"early_stopping_patience \(--patience\) must be a whole number ≥ 0"),
        (["--label-smoothing", "1.5"], r"label_smoothing must be in \[0, 1\)"),
        (["--finetune-epochs", "0"], "finetune_epochs must be a whole number ≥ 1 when the stage is both"),
        (["--lr", "-0.001"], "lr must be a number above 0"),
        (["--num-workers", "-1"], "num_workers must be a whole number ≥ 0"),
    ],
)
def test_the_cli_refuses_bad_training_settings_in_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", "--out", str(run), "--data", str(tmp_path / "no-data"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and re.search(message, err), err
    assert not run.exists()  # refused before the folder (or any data: --data does not exist) was touched


def test_config_differences_name_each_field_with_both_values() -> None:
    saved, given = to_dict(RunConfig()), to_dict(RunConfig())
    given["train"]["finetune_epochs"], saved["train"]["finetune_epochs"] = 80, 30
    given["augment"]["crop_scale"] = (0.5, 1.0)
    saved_json = json.loads(json.dumps(saved))  # as read back from config.json: tuples are lists
    fields = ["train.finetune_epochs", "augment.crop_scale", "augment.hair_p", "train.lr"]
    assert config_differences(saved_json, given, fields) == [
        "train.finetune_epochs: saved 30, given 80",
        "augment.crop_scale: saved [0.8, 1.0], given [0.5, 1.0]",
    ]
    assert config_differences(saved_json, given, ["train.lr"]) == []


def _saved_run(run: Path, stage: str = "both", **train: object) -> None:
    """A run folder as the trainer leaves it: config.json (and a checkpoint to resume from)."""
    cfg = _train_config(stage, **train)
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    record = {"config": to_dict(cfg), "init_weights": None, "reset_classifier": False, "command": "python -m dermai"}
    (run / "config.json").write_text(json.dumps(record))


def _resume_check(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    args.argv = argv
    stage = "both" if args.command == "train" else args.command
    cli._check_resume(args, cli._run_config(args, stage))


def test_resume_refuses_options_that_differ_from_the_saved_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _saved_run(run, finetune_epochs=30, lr=2e-3)
    base = ["train", "--resume", "--out", str(run)]
    with pytest.raises(ValueError, match=r"train\.finetune_epochs: saved 30, given 80") as refused:
        _resume_check([*base, "--finetune-epochs", "80", "--lr", "0.002"])  # lr agrees: not listed
    assert "train.lr" not in str(refused.value) and "drop those options" in str(refused.value)
    with pytest.raises(ValueError, match=r"train\.finetune_epochs: saved 30, given 50"):
        _resume_check([*base, "--finetune-epochs", "50"])  # the default, typed: still a contradiction
    with pytest.raises(ValueError, match=r"augment\.hair_p: saved 0\.0, given 0\.3"):
        _resume_check([*base, "--augment", "hair_p=0.3"])
    with pytest.raises(ValueError, match=r"train\.early_stopping_patience: saved 0, given 4"):
        _resume_check([*base, "--patience=4"])
    with pytest.raises(ValueError, match=r"stage: saved 'both', given 'finetune'"):
        _resume_check(["finetune", *base[1:]])
    with pytest.raises(ValueError, match=r"data\.seed: saved 0, given 3; train\.seed: saved 0, given 3"):
        _resume_check([*base, "--seed", "3"])
    with pytest.raises(ValueError, match=r"init_weights: saved None, given 'w\.safetensors'"):
        _resume_check([*base, "--init-weights", "w.safetensors"])
    _resume_check([*base, "--finetune-epochs", "30", "--quiet"])  # agreeing options pass


def test_resume_compares_the_teacher_as_a_file_not_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same teacher typed another way (relative, or through ./) is the same teacher; another file is not."""
    run = tmp_path / "run"
    teacher = tmp_path / "teacher.safetensors"
    _saved_run(run, "finetune", distill_from=str(teacher), distill_weight=0.5)
    monkeypatch.chdir(tmp_path)
    base = ["finetune", "--resume", "--out", str(run), "--distill-weight", "0.5"]
    _resume_check([*base, "--distill-from", "teacher.safetensors"])
    _resume_check([*base, "--distill-from", "./sub/../teacher.safetensors"])
    with pytest.raises(
        ValueError, match=r"train\.distill_from: saved '.*teacher\.safetensors', given 'other\.safetensors'"
    ):
        _resume_check([*base, "--distill-from", "other.safetensors"])


def test_resume_compares_the_init_weights_as_a_file_not_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The starting weights typed another way (relative, through a link, a hard link to the file) are the same
    weights; another file is not."""
    run = tmp_path / "run"
    _saved_run(run, "finetune")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    record = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**record, "init_weights": str(weights)}))
    (tmp_path / "linked.safetensors").symlink_to(weights)
    os.link(weights, tmp_path / "hard.safetensors")
    (tmp_path / "other.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    base = ["finetune", "--resume", "--out", str(run)]
    for spelling in ("w.safetensors", "./sub/../w.safetensors", "linked.safetensors", "hard.safetensors"):
        _resume_check([*base, "--init-weights", spelling])
    with pytest.raises(ValueError, match=r"init_weights: saved '.*w\.safetensors', given 'other\.safetensors'"):
        _resume_check([*base, "--init-weights", "other.safetensors"])


def test_resume_as_the_app_builds_it_passes_whatever_the_saved_settings(tmp_path: Path) -> None:
    from dermai import jobs

    run = tmp_path / "run"
    _saved_run(run, "finetune", finetune_epochs=7, temperature=0.1, balanced_sampling=False)
    command = jobs.build_command("finetune", run, {}, resume=True)
    _resume_check(command[3:])  # after `python -m dermai`: no options, so nothing to contradict


def test_the_cli_prints_one_error_line_for_a_contradicting_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    _saved_run(run, finetune_epochs=30)
    assert cli.main(["train", "--resume", "--out", str(run), "--finetune-epochs", "80"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.finetune_epochs: saved 30, given 80" in err
    assert not (run / "metrics.jsonl").exists()


def test_a_saved_config_round_trips_through_json_with_every_type_kept() -> None:
    saved = json.loads(json.dumps(to_dict(RunConfig())))
    rebuilt = run_config_from_dict(saved)
    assert rebuilt == RunConfig()
    assert isinstance(rebuilt.augment.crop_scale, tuple)  # JSON's list is the field's tuple again
    saved["train"]["lr"] = 1  # a whole number is a fine float
    saved["data"]["limit"] = None
    assert run_config_from_dict(saved).train.lr == 1


@pytest.mark.parametrize(
    ("section", "name", "value", "message"),
    [
        ("data", "seed", "3", "data.seed must be a whole number, got '3'"),
        ("data", "limit", True, "data.limit must be a whole number or null, got True"),
        ("train", "finetune_epochs", 2.5, "train.finetune_epochs must be a whole number, got 2.5"),
        ("train", "lr", "0.1", "train.lr must be a number, got '0.1'"),
        ("train", "swa_lr", [0.1], r"train.swa_lr must be a number or null, got \[0.1\]"),
        ("augment", "crop_scale", [0.5], r"augment.crop_scale must be a list of 2 numbers, got \[0.5\]"),
        ("augment", "crop_scale", ["a", 1.0], r"augment.crop_scale\[0\] must be a number, got 'a'"),
        ("model", "color_constancy", 1, "model.color_constancy must be true or false, got 1"),
        ("train", "precision", None, "train.precision must be text, got None"),
        ("train", "epochs", 3, r"unknown config field train.epochs \(in TrainConfig\)"),
    ],
)
def test_a_damaged_saved_config_is_refused_naming_the_field(
    section: str, name: str, value: object, message: str
) -> None:
    saved = json.loads(json.dumps(to_dict(RunConfig())))
    saved[section][name] = value
    with pytest.raises(ValueError, match=f"config field {message}" if "unknown" not in message else message):
        run_config_from_dict(saved)


def test_a_saved_config_section_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match=r"config field train must be a JSON object, got \[1\]"):
        run_config_from_dict({"train": [1]})


@pytest.mark.parametrize("section", ["augment", "simclr_augment"])
def test_both_augmentation_pipelines_are_checked_before_any_stage_runs(section: str) -> None:
    # A saved config.json is checked as a whole: a bad fine-tuning pipeline failed only after pretraining.
    import dataclasses

    cfg = RunConfig()
    setattr(cfg, section, dataclasses.replace(getattr(cfg, section), hflip_p=1.5))
    with pytest.raises(ValueError, match=rf"^{section}: hflip_p must be a probability in \[0, 1\], got 1.5"):
        check_run_config(cfg)
