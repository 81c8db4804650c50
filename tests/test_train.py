"""Tiny real training runs (a few dozen HAM10000 images at 32 px)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from dermai.config import DataConfig, RunConfig, to_dict
from dermai.inference import calibrated_probs, forward_pixels, malignant_probability
from dermai.train import (
    STOP_FILE,
    Trainer,
    TrainingError,
    _torch_gen,
    cosine_factor,
    prepare_data,
    read_metrics,
    restore_advice,
    run_lock,
    run_lock_holder,
    split_mismatch,
    train,
    validation_scores,
)
from dermai.weights import load_weights


def tiny_config(ham_root: Path, **train_overrides: object) -> RunConfig:
    cfg = RunConfig()
    cfg.data.data_dir = str(ham_root)
    cfg.data.limit = 64
    cfg.train.image_size = 32
    cfg.train.batch_size = 16
    cfg.train.pretrain_epochs = 1
    cfg.train.finetune_epochs = 1
    cfg.train.precision = "fp32"
    cfg.train.log_every = 1
    for key, value in train_overrides.items():
        setattr(cfg.train, key, value)
    return cfg


def test_cosine_schedule_has_warmup_and_no_restart() -> None:
    factors = [cosine_factor(s, 100, 10) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in zip(factors[10:], factors[11:], strict=False))  # monotone decay
    assert factors[-1] < 0.01


def test_tiny_run_writes_a_complete_run_folder(ham_root: Path, tmp_path: Path) -> None:
    result = train(tiny_config(ham_root), tmp_path / "run")
    run = tmp_path / "run"
    assert result.status == "finished"
    for name in (
        "config.json",
        "manifest.csv",
        "metrics.jsonl",
        "model.safetensors",
        "model.json",
        "checkpoints/last.pt",
        "checkpoints/best.safetensors",
    ):
        assert (run / name).exists(), name
    records = read_metrics(run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(records) == len(lines)  # every line is JSON
    steps = [r for r in records if r["kind"] == "step"]
    assert {r["stage"] for r in steps} == {"pretrain", "finetune"}
    for r in steps:
        assert {"loss", "ntxent", "lr", "images_per_s", "eta_s", "global_step"} <= set(r)
    epochs = [r for r in records if r["kind"] == "epoch" and r["stage"] == "finetune"]
    assert 0.0 <= epochs[0]["val_auroc"] <= 1.0 and "train_acc" in epochs[0] and "val_bacc" in epochs[0]
    assert records[-1] == {**records[-1], "kind": "status", "status": "finished"}
    loaded = load_weights(run / "model.safetensors")
    assert loaded.meta["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert loaded.meta["image_size"] == 32 and len(loaded.meta["mean"]) == 3
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["train"]["image_size"] == 32 and config["manifest_sha256"]


def test_losses_fall_over_a_few_epochs(ham_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(ham_root, pretrain_epochs=6, finetune_epochs=6, lr=2e-3)
    train(cfg, tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    for stage in ("pretrain", "finetune"):
        losses = [r["loss"] for r in records if r["kind"] == "epoch" and r["stage"] == stage]
        assert np.mean(losses[-2:]) < losses[0], (stage, losses)


def test_stop_then_resume_equals_uninterrupted_run(ham_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(ham_root, pretrain_epochs=2, finetune_epochs=2)
    train(cfg, tmp_path / "straight")

    calls = {"steps": 0}

    def stop_after_five(record: dict) -> bool:
        calls["steps"] += record["kind"] == "step"
        return calls["steps"] < 5

    stopped = train(
        tiny_config(ham_root, pretrain_epochs=2, finetune_epochs=2), tmp_path / "resumed", callback=stop_after_five
    )
    assert stopped.status == "stopped"
    assert load_weights(tmp_path / "resumed" / "model.safetensors").meta["status"] == "stopped"  # usable
    steps_before = [r["global_step"] for r in read_metrics(tmp_path / "resumed") if r["kind"] == "step"]
    assert steps_before[-1] == 5

    resumed = train(RunConfig(), tmp_path / "resumed", resume=True)
    assert resumed.status == "finished"
    with pytest.raises(TrainingError, match="finished already"):  # a finished run is not trained again
        train(RunConfig(), tmp_path / "resumed", resume=True)
    steps_after = [r["global_step"] for r in read_metrics(tmp_path / "resumed") if r["kind"] == "step"]
    assert steps_after[len(steps_before)] == 6  # continues at the next step, none repeated or skipped
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "best.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "best.safetensors"))
    for key in a:
        assert np.allclose(a[key].numpy(), b[key].numpy(), atol=1e-5), key


def test_stop_file_ends_run_cleanly(ham_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"

    def create_stop_file(record: dict) -> None:
        if record["kind"] == "step":
            (run / STOP_FILE).touch()

    result = train(tiny_config(ham_root, pretrain_epochs=3), run, callback=create_stop_file)
    assert result.status == "stopped"
    assert (run / "checkpoints" / "last.pt").exists() and (run / "model.safetensors").exists()
    assert read_metrics(run)[-1]["status"] == "stopped"


def test_refuses_to_overwrite_or_resume_nothing(ham_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(tiny_config(ham_root), tmp_path / "empty", resume=True)
    train(tiny_config(ham_root), tmp_path / "run")
    with pytest.raises(TrainingError, match="holds a run already"):
        train(tiny_config(ham_root), tmp_path / "run")


def test_resuming_on_a_changed_data_folder_is_refused_not_trained_on_another_split(
    ham_root: Path, tmp_path: Path
) -> None:
    # The split is rebuilt from the data folder on resume; an edited metadata CSV (or another $DERMAI_DATA)
    # gives another split, whose validation images the stopped run may have trained on.
    import pandas as pd

    data = tmp_path / "data"
    data.mkdir()
    (data / "images").symlink_to(ham_root / "images", target_is_directory=True)
    metadata = pd.read_csv(ham_root / "HAM10000_metadata.csv")
    metadata.to_csv(data / "HAM10000_metadata.csv", index=False)
    cfg = tiny_config(data)
    run = tmp_path / "run"
    stopped = train(cfg, run, callback=lambda record: record["kind"] != "step")  # stops after its first step
    assert stopped.status == "stopped"
    metadata.drop(metadata.index[::10]).to_csv(data / "HAM10000_metadata.csv", index=False)  # a tenth dropped
    with pytest.raises(TrainingError, match=r"the split rebuilt from .* is not the one this run started on") as info:
        train(RunConfig(), run, resume=True)
    assert read_metrics(run)[-1]["status"] == "stopped"  # nothing trained on the other split
    # the advice is one that works: a resume keeps the saved data folder (another --data is refused)
    assert f"another --data is refused): restore {data} as it was when the run started" in str(info.value)


def test_resume_advice_names_the_recorded_data_folder_or_how_it_is_found() -> None:
    assert restore_advice(DataConfig(data_dir="/data/ham")).endswith("restore /data/ham as it was when the run started")
    relative = restore_advice(DataConfig(data_dir="../shared/ham", manifest="m.csv"))
    assert "restore ../shared/ham (relative to the folder the run started in: resume there) and the manifest m.csv" in (
        relative
    )
    default = restore_advice(DataConfig())
    assert "recorded no --data" in default and "set $DERMAI_DATA to the folder it started on" in default


def test_a_resume_needs_neither_its_start_weights_nor_its_teacher(ham_root: Path, tmp_path: Path) -> None:
    """The checkpoint holds the trained weights and the teacher's probabilities: a start-from run (and teacher)
    deleted since the run started used to make its resume fail, reloading both from their recorded paths."""
    source = tiny_config(ham_root)
    source.stage = "finetune"
    weights = train(source, tmp_path / "source").weights
    assert weights is not None
    cfg = tiny_config(ham_root, finetune_epochs=2, distill_from=str(weights), distill_weight=0.5)
    cfg.stage = "finetune"
    run = tmp_path / "student"
    stopped = train(cfg, run, init_weights=str(weights), callback=lambda record: record["kind"] != "step")
    assert stopped.status == "stopped"
    last = run / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    stored = ckpt["teacher_probs"]  # training images: the teacher's probabilities; the others NaN
    assert stored.shape[1] == 7 and torch.isfinite(stored).any() and torch.isnan(stored).any()
    shutil.rmtree(tmp_path / "source")
    # a checkpoint saved without them (an earlier version) needs the teacher: the error names it and the run
    torch.save({k: v for k, v in ckpt.items() if k != "teacher_probs"}, last)
    named = rf"distill_from: {re.escape(str(weights))}: .*; resuming {re.escape(str(run))}, whose checkpoint"
    with pytest.raises(TrainingError, match=named):
        train(RunConfig(), run, resume=True)
    torch.save(ckpt, last)
    assert train(RunConfig(), run, resume=True).status == "finished"


def test_start_weights_of_the_same_settings_on_other_data_are_refused(ham_root: Path, tmp_path: Path) -> None:
    """Seed, fractions and limit agree, but the metadata CSV lost a tenth of its rows: the images land on other
    sides, so the start weights may have trained on this run's validation or test images."""
    import pandas as pd

    data = tmp_path / "data"
    data.mkdir()
    (data / "images").symlink_to(ham_root / "images", target_is_directory=True)
    metadata = pd.read_csv(ham_root / "HAM10000_metadata.csv")
    metadata.drop(metadata.index[::10]).to_csv(data / "HAM10000_metadata.csv", index=False)
    source = tiny_config(data)
    source.stage = "finetune"
    weights = train(source, tmp_path / "source").weights
    assert weights is not None and len(load_weights(weights).meta["split_sha256"]) == 64
    cfg = tiny_config(ham_root)
    cfg.stage = "finetune"
    with pytest.raises(TrainingError, match=r"source/model.safetensors: trained on another split \(the same split"):
        train(cfg, tmp_path / "run", init_weights=str(weights))
    assert not (tmp_path / "run").exists()


def test_split_mismatch_compares_the_images_sides_when_both_are_known() -> None:
    data = to_dict(DataConfig())
    meta = {"config": {"data": data}, "split_sha256": "a" * 64}
    assert split_mismatch(meta, data, "a" * 64) is None
    assert split_mismatch(meta, {**data, "label_fraction": 0.1}, "a" * 64) is None  # same sides, fewer labels
    assert split_mismatch(meta, {**data, "manifest": "m.csv"}, "a" * 64) is None  # that manifest holds this split
    assert "the same split settings, but its images are not" in str(split_mismatch(meta, data, "b" * 64))
    assert "(seed 0, this run 1)" in str(split_mismatch(meta, {**data, "seed": 1}, "b" * 64))
    older = {"config": {"data": data}}  # weights from before split_sha256 (the shipped ones): the settings decide
    assert split_mismatch(older, data, "b" * 64) is None
    assert "(seed 0, this run 1)" in str(split_mismatch(older, {**data, "seed": 1}, "b" * 64))
    assert split_mismatch(meta, {**data, "seed": 1}) is not None  # no data read yet (the app): the settings


def test_resuming_a_run_whose_config_json_is_damaged_names_the_file_and_field(ham_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")  # never read: the config is refused first
    (run / "config.json").write_text(json.dumps({"config": {"train": {"finetune_epochs": "3"}}}))
    with pytest.raises(
        TrainingError,
        match=r"config.json: not a readable run configuration \(config field "
        r"train.finetune_epochs must be a whole number, got '3'\)",
    ):
        train(tiny_config(ham_root), run, resume=True)


def test_label_fraction_finetunes_on_fewer_images(ham_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(ham_root, pretrain_epochs=0)
    cfg.data.label_fraction = 0.5
    cfg.data.limit = 200
    cfg.stage = "finetune"
    train(cfg, tmp_path / "run")
    import pandas as pd

    manifest = pd.read_csv(tmp_path / "run" / "manifest.csv")
    train_rows = manifest[manifest["split"] == "train"]
    assert 0.3 < train_rows["labelled"].mean() < 0.7


def test_training_on_cuda_autocasts_in_bf16_where_the_gpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # fp16 without a gradient scaler underflows gradients: training uses bf16 where the GPU has it, else fp32.
    import warnings

    from dermai import inference

    cuda = torch.device("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available" on CPU machines: only the dtype is checked
        monkeypatch.setattr(inference, "cuda_bf16", lambda: True)
        assert inference.autocast_for(cuda, "auto").fast_dtype == torch.bfloat16
        assert inference.autocast_for(cuda, "auto", training=True).fast_dtype == torch.bfloat16
        monkeypatch.setattr(inference, "cuda_bf16", lambda: False)  # a T4 or V100
        assert inference.autocast_for(cuda, "auto").fast_dtype == torch.float16  # inference: fp16 is fine
        assert inference.autocast_dtype("cuda", "auto", training=True) is None  # training: fp32
        assert isinstance(inference.autocast_for(cuda, "auto", training=True), contextlib.nullcontext)
        assert inference.autocast_for(cuda, "bf16").fast_dtype == torch.bfloat16
    assert inference.autocast_dtype("cuda", "fp32") is None and inference.autocast_dtype("cpu", "fp32") is None
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: True)
    assert inference.autocast_dtype("cpu", "auto", training=True) == torch.bfloat16
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: False)
    assert inference.autocast_dtype("cpu", "auto", training=True) is None
    assert inference.autocast_dtype("cpu", "bf16", training=True) == torch.bfloat16


def test_batch_generators_are_seeded_by_their_parts() -> None:
    draw = lambda *parts: torch.rand(4, generator=_torch_gen(*parts, device="cpu"))  # noqa: E731
    assert torch.equal(draw(0, 1, 2, 3), draw(0, 1, 2, 3))
    assert not torch.equal(draw(0, 1, 2, 3), draw(0, 1, 2, 4))
    assert _torch_gen(1, device="cpu").device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_run_on_cuda_trains_with_augmentation_on_the_gpu(ham_root: Path, tmp_path: Path) -> None:
    result = train(tiny_config(ham_root, precision="auto"), tmp_path / "run")
    assert result.status == "finished"
    steps = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "step"]
    assert all(np.isfinite(r["loss"]) for r in steps)


def test_cli_refuses_a_zero_image_or_batch_size_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    from dermai.cli import main

    for flag in ("--image-size", "--batch-size"):
        with pytest.raises(SystemExit) as exited:
            main(["train", "--out", "unused", flag, "0"])
        assert exited.value.code == 2
        assert f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err


def test_colour_constancy_for_fine_tuning_is_part_of_the_served_model(ham_root: Path, tmp_path: Path) -> None:
    """`--augment color_constancy=true` must reach validation, evaluation and prediction, not only the
    training views: the served model itself applies Shades of Grey to every input it reads."""
    from dermai.preprocess import eval_batch, normalize, shades_of_gray, to_float_batch

    cfg = tiny_config(ham_root)
    cfg.stage, cfg.augment.color_constancy = "finetune", True
    cfg.augment.mean, cfg.augment.std = (0.6, 0.5, 0.4), (0.25, 0.2, 0.15)  # its own normalisation, undone first
    train(cfg, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["model"]["color_constancy"] is True
    loaded = load_weights(tmp_path / "run" / "model.safetensors")
    model, meta = loaded.model, loaded.meta
    assert meta["model"]["color_constancy"] is True and model.color_constancy
    pixels = (np.random.default_rng(0).random((2, 32, 32, 3)) * np.array([255, 180, 120])).astype(np.uint8)
    with torch.no_grad():
        served = model.features(eval_batch(pixels, meta["mean"], meta["std"]))
        corrected = model.trunk(normalize(shades_of_gray(to_float_batch(pixels)), meta["mean"], meta["std"]))
        uncorrected = model.trunk(eval_batch(pixels, meta["mean"], meta["std"]))
    torch.testing.assert_close(served, corrected, atol=1e-4, rtol=1e-4)
    assert (served - uncorrected).abs().max() > 1e-2  # the bug this guards against: trained with it, served without
    assert Trainer(tiny_config(ham_root), tmp_path / "plain").cfg.model.color_constancy is False  # off by default


def test_a_second_trainer_is_refused_while_the_first_owns_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dermai.cli import main

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"config": to_dict(RunConfig())}))
    with run_lock(run):  # the first trainer, however quiet
        assert run_lock_holder(run) == f"pid {os.getpid()}"
        assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 2
        assert f"another trainer (pid {os.getpid()}) is running in this folder" in capsys.readouterr().err
        with pytest.raises(TrainingError, match="another trainer"):
            Trainer(RunConfig(), tmp_path / "run", resume=True).run()
    assert not (run / "metrics.jsonl").exists()  # refused before it wrote anything
    assert run_lock_holder(run) is None
    with run_lock(run):  # released on the way out: the folder can be owned again
        pass


def test_a_stop_written_while_the_trainer_starts_is_honoured_once(ham_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / STOP_FILE).touch()  # Stop clicked before the process got to its first step
    assert train(tiny_config(ham_root), run).status == "stopped"
    assert os.listdir(run) == []  # ended before training (tests/test_stop_preparing.py): nothing written
    assert run_lock_holder(run) is None  # the STOP consumed; the folder is free
    assert train(tiny_config(ham_root), run).status == "finished"  # the honoured STOP does not end it again


def test_read_metrics_keeps_only_records(tmp_path: Path) -> None:
    lines = [b'{"kind": "step"}', b'"oops"', b"3", b"null", b'\xff{"kind": "x"}', b'{"kind": "epoch"}', b'{"t']
    (tmp_path / "metrics.jsonl").write_bytes(b"\n".join(lines))  # a string, a number, null, bad bytes, a torn line
    assert read_metrics(tmp_path) == [{"kind": "step"}, {"kind": "epoch"}]


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # two images, seven classes
def test_validation_ranks_by_p_malignant_as_served_with_the_training_prior() -> None:
    """Two images whose malignancy ranking flips once the training prior is added (as serving adds it): the
    raw softmax ranks the benign one higher, the served probabilities the malignant one."""
    classes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    prior = np.log([0.033, 0.051, 0.11, 0.011, 0.111, 0.67, 0.014]).tolist()
    logits = np.full((2, 7), -10.0)
    logits[0, [4, 5]] = [2.0, 0.0]  # benign naevus: mel 2 vs nv 0, but naevi are 6× commoner
    logits[1, [1, 3]] = [1.5, 0.0]  # malignant bcc: bcc 1.5 vs df 0, and df is rarer still
    labels, malignant = np.array([5, 1]), np.array([0, 1])
    assert validation_scores(logits, labels, malignant, classes, prior)["val_auroc"] == 1.0
    assert validation_scores(logits, labels, malignant, classes, None)["val_auroc"] == 0.0  # the old ranking
    diverged = np.array(logits, dtype=float)
    diverged[1, 2] = np.nan
    with pytest.raises(TrainingError, match="not finite for 1 of .* validation images: training diverged"):
        validation_scores(diverged, labels, malignant, classes, prior)
    served = calibrated_probs(logits, {"log_prior": prior})
    assert malignant_probability(served, classes)[1] > malignant_probability(served, classes)[0]


def _spy(monkeypatch: pytest.MonkeyPatch, name: str, calls: list) -> None:
    """Record each call's arguments to dermai.train's `name`, then call it."""
    from dermai import train as train_module

    real = getattr(train_module, name)

    def spy(*args: object, **kwargs: object) -> object:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, name, spy)


def _stage_flags(cfg: RunConfig, run: Path) -> tuple[Trainer, dict[str, set]]:
    """Train `cfg`, returning the trainer and the model's colour-constancy flag seen at each stage's steps."""
    flags: dict[str, set] = {}

    def note(record: dict) -> None:
        if record["kind"] == "step":
            flags.setdefault(record["stage"], set()).add(trainer.model.color_constancy)

    trainer = Trainer(cfg, run, callback=note)
    assert trainer.run().status == "finished"
    return trainer, flags


def test_each_stage_trains_with_its_own_colour_constancy_workers_and_served_selection(
    ham_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dermai.serving import training_log_prior

    cfg = tiny_config(ham_root, num_workers=3)
    cfg.augment.color_constancy, cfg.simclr_augment.color_constancy = True, False
    autocasts: list = []
    decodes: list = []
    _spy(monkeypatch, "autocast_for", autocasts)
    _spy(monkeypatch, "load_pixels", decodes)
    trainer, flags = _stage_flags(cfg, tmp_path / "run")

    # Colour constancy: off for the SimCLR views, on for fine-tuning and in the served model.
    assert flags == {"pretrain": {False}, "finetune": {True}}
    meta = load_weights(tmp_path / "run" / "model.safetensors").meta
    assert meta["model"]["color_constancy"] is True
    # Training steps autocast as training (fp32 on a GPU without bf16); --num-workers decodes the pixels.
    assert autocasts and all(kwargs.get("training") is True for _, kwargs in autocasts)
    assert [args[3] for args, _ in decodes] == [3]
    # Selection scores p_malignant as serving does: with the labelled training split's log prior.
    rows = trainer.dataset.meta
    assert trainer.val_log_prior == pytest.approx(training_log_prior(meta, rows[rows["split"] == "train"], 7))
    aug = cfg.augment
    pixels = trainer.pixels[trainer.val_idx]
    logits, _ = forward_pixels(trainer.model, pixels, mean=aug.mean, std=aug.std, precision="fp32")
    served = malignant_probability(calibrated_probs(logits, {"log_prior": trainer.val_log_prior}), meta["classes"])
    y = rows["malignant"].to_numpy()[trainer.val_idx]
    expected = roc_auc_score(y, served) if len(set(y)) == 2 else float("nan")
    epoch = next(r for r in read_metrics(tmp_path / "run") if r["kind"] == "epoch" and r["stage"] == "finetune")
    assert epoch["val_auroc"] == pytest.approx(expected, nan_ok=True)


def test_a_pretraining_run_keeps_the_simclr_colour_constancy(ham_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(ham_root)
    cfg.stage, cfg.augment.color_constancy, cfg.simclr_augment.color_constancy = "pretrain", False, True
    _, flags = _stage_flags(cfg, tmp_path / "run")
    assert flags == {"pretrain": {True}}
    assert load_weights(tmp_path / "run" / "model.safetensors").meta["model"]["color_constancy"] is True


def test_bad_settings_are_refused_before_any_data_is_read(tmp_path: Path) -> None:
    cfg = RunConfig()
    cfg.data.data_dir = str(tmp_path / "no-data")  # reading it would fail with another message
    cfg.train.temperature = 0.0
    with pytest.raises(TrainingError, match="temperature must be a number above 0"):
        train(cfg, tmp_path / "run")
    cfg.train.temperature, cfg.stage, cfg.train.finetune_epochs = 0.5, "finetune", 0
    with pytest.raises(TrainingError, match="finetune_epochs must be a whole number ≥ 1 when the stage is finetune"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_init_weights_keep_a_fine_tuned_classifier_and_redraw_a_pretrained_one(ham_root: Path, tmp_path: Path) -> None:
    """(Replaces test_swa's version, which fine-tuned for 0 epochs: that is refused now.)"""
    runs = {}
    for stage in ("finetune", "pretrain"):
        cfg = tiny_config(ham_root)
        cfg.stage = stage
        runs[stage] = train(cfg, tmp_path / stage).weights
    source = load_file(str(runs["finetune"]))
    for init, keeps in ((runs["finetune"], True), (runs["pretrain"], False)):
        cfg = tiny_config(ham_root)
        cfg.stage = "finetune"
        trainer = Trainer(cfg, tmp_path / f"from-{init.parent.name}", init_weights=str(init))
        trainer.dataset = prepare_data(trainer.cfg)[0]
        state = trainer._build_model(len(trainer.dataset.classes)).state_dict()
        init_tensors = load_file(str(init))
        assert torch.equal(state["trunk.conv1.weight"], init_tensors["trunk.conv1.weight"])  # trunk always kept
        assert torch.equal(state["classifier.weight"], source["classifier.weight"]) is keeps


def test_unusable_init_weights_fail_before_the_run_folder_gets_a_config(ham_root: Path, tmp_path: Path) -> None:
    """config.json and manifest.csv used to be written first: a folder that looked like a started run."""
    cfg = tiny_config(ham_root)
    cfg.stage = "finetune"
    with pytest.raises(ValueError, match="model.json"):
        train(cfg, tmp_path / "run", init_weights=str(Path(__file__).parent.parent / "weights" / "model.json"))
    assert not (tmp_path / "run").exists()  # nor the folder the run created, nor its lone lock file
    (tmp_path / "mine").mkdir()  # a folder the user made stays, empty
    with pytest.raises(ValueError, match="model.json"):
        train(cfg, tmp_path / "mine", init_weights=str(Path(__file__).parent.parent / "weights" / "model.json"))
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())


def test_a_run_at_a_non_square_frame_trains_validates_and_records_its_width(ham_root: Path, tmp_path: Path) -> None:
    """`--image-width` trains at height × width (HAM10000's 4:3 shape, not squashed to a square): the weights'
    JSON records the width, so evaluation and prediction resize as training did, and a bad width is refused
    by name before any work."""
    from dermai.cli import main
    from dermai.data import load_dataset
    from dermai.evaluate import score
    from dermai.predict import Predictor

    cfg = tiny_config(ham_root, image_size=24, image_width=32)
    cfg.stage = "finetune"
    result = train(cfg, tmp_path / "run")
    assert result.status == "finished" and result.best_score is not None and np.isfinite(result.best_score)
    loaded = load_weights(tmp_path / "run" / "model.safetensors")
    assert (loaded.meta["image_size"], loaded.meta["image_width"]) == (24, 32)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["train"]["image_width"] == 32
    assert Predictor(loaded).input_size == (24, 32)
    logits, _ = score(loaded, list(load_dataset(ham_root).meta["path"].head(3)))
    assert logits.shape == (3, len(loaded.meta["classes"])) and np.isfinite(logits).all()
    square = tiny_config(ham_root, image_size=24, image_width=24)
    square.stage = "finetune"
    train(square, tmp_path / "square")
    assert "image_width" not in load_weights(tmp_path / "square" / "model.safetensors").meta  # 24 by 24: a square

    cfg.train.image_width = 0
    with pytest.raises(TrainingError, match="image_width must be a whole number ≥ 1"):
        train(cfg, tmp_path / "bad")
    with pytest.raises(SystemExit) as exited:
        main(["finetune", "--out", str(tmp_path / "cli"), "--image-width", "0"])
    assert exited.value.code == 2
