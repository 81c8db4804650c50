"""Stochastic weight averaging at the end of fine-tuning, and starting a run from fine-tuned weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dermai.cli import _run_config, build_parser
from dermai.config import RunConfig
from dermai.train import Trainer, TrainingError, cosine_factor, read_metrics, stage_lr, train
from dermai.weights import load_weights
from tests.test_train import tiny_config


def swa_config(ham_root: Path, **overrides: object) -> RunConfig:
    cfg = tiny_config(ham_root, **{"finetune_epochs": 3, "swa_epochs": 2, "swa_lr": 4e-4, **overrides})
    cfg.stage = "finetune"
    return cfg


def test_stage_lr_is_one_cosine_then_the_constant_swa_rate() -> None:
    total, swa_start, warmup = 100, 60, 5
    lrs = [stage_lr(s, total, warmup, 1e-3, swa_start, 2e-4) for s in range(total)]
    assert lrs[:swa_start] == [1e-3 * cosine_factor(s, swa_start, warmup) for s in range(swa_start)]
    assert lrs[swa_start - 1] < 1e-5  # the cosine has decayed by the time averaging starts
    assert set(lrs[swa_start:]) == {2e-4}
    # Averaging from the first step (a run continuing a trained model) still warms up to the SWA rate.
    warm = [stage_lr(s, total, warmup, 1e-3, 0, 2e-4) for s in range(7)]
    assert warm == pytest.approx([2e-4 * (s + 1) / 5 for s in range(5)] + [2e-4, 2e-4])
    # Without an SWA rate the cosine runs over the whole stage, as in a run without SWA.
    assert [stage_lr(s, total, warmup, 1e-3, swa_start, None) for s in range(total)] == [
        1e-3 * cosine_factor(s, total, warmup) for s in range(total)
    ]


def test_swa_averages_the_last_epochs_at_the_swa_rate(ham_root: Path, tmp_path: Path) -> None:
    result = train(swa_config(ham_root), tmp_path / "run")
    assert result.status == "finished"
    records = read_metrics(tmp_path / "run")
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r.get("swa_averaged") for r in epochs] == [None, 1, 2]
    steps = [r for r in records if r["kind"] == "step"]
    assert {r["lr"] for r in steps if r["epoch"] >= 1} == {4e-4}
    assert all(r["lr"] != 4e-4 for r in steps if r["epoch"] == 0)
    (swa,) = [r for r in records if r["kind"] == "swa"]
    assert swa["epochs_averaged"] == 2
    assert 0.0 <= swa["val_auroc"] <= 1.0 and isinstance(swa["kept"], bool)
    assert swa["best_val_auroc"] == max(r["val_auroc"] for r in [*epochs, swa])
    # The run's weights are whichever scored best on validation: the average or the best epoch.
    chosen = load_weights(tmp_path / "run" / "checkpoints" / "best.safetensors").meta["val_metrics"]
    assert chosen["val_auroc"] == swa["best_val_auroc"] and chosen["kind"] == ("swa" if swa["kept"] else "epoch")


def _score_average(monkeypatch: pytest.MonkeyPatch, epoch_score: float, average_score: float) -> None:
    """Make validation rank the average against the epochs as the test needs (real scores are noise here)."""

    def fake_validate(self: Trainer, model: torch.nn.Module | None = None) -> dict[str, float]:
        return {"val_auroc": epoch_score if model is None else average_score}

    monkeypatch.setattr(Trainer, "_validate", fake_validate)


def test_the_average_is_kept_when_it_scores_best(
    ham_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _score_average(monkeypatch, epoch_score=0.6, average_score=0.9)
    train(swa_config(ham_root, swa_epochs=1), tmp_path / "run")
    (swa,) = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "swa"]
    assert swa["kept"] is True
    shipped = load_file(str(tmp_path / "run" / "model.safetensors"))
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    # One averaged epoch: the weights are that epoch's; batch-norm statistics were recomputed for them.
    for key in ("trunk.conv1.weight", "trunk.layer4.1.conv2.weight", "classifier.weight"):
        assert torch.equal(shipped[key], last[key]), key
    assert not torch.allclose(shipped["trunk.bn1.running_mean"], last["trunk.bn1.running_mean"])
    assert load_weights(tmp_path / "run" / "checkpoints" / "best.safetensors").meta["val_metrics"]["kind"] == "swa"


def test_the_best_epoch_is_kept_when_the_average_scores_worse(
    ham_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _score_average(monkeypatch, epoch_score=0.8, average_score=0.7)
    train(swa_config(ham_root), tmp_path / "run")
    (swa,) = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "swa"]
    assert swa["kept"] is False and swa["best_val_auroc"] == 0.8
    meta = load_weights(tmp_path / "run" / "checkpoints" / "best.safetensors").meta
    assert meta["val_metrics"]["kind"] == "epoch" and meta["val_metrics"]["epoch"] == 0  # the first best epoch


def test_stop_and_resume_during_swa_equals_an_uninterrupted_run(ham_root: Path, tmp_path: Path) -> None:
    train(swa_config(ham_root), tmp_path / "straight")
    steps_per_epoch = len([r for r in read_metrics(tmp_path / "straight") if r["kind"] == "step" and r["epoch"] == 0])
    stop_at = 2 * steps_per_epoch + 1  # inside the second averaged epoch
    seen = {"steps": 0}

    def stop(record: dict) -> bool:
        seen["steps"] += record["kind"] == "step"
        return seen["steps"] < stop_at

    assert train(swa_config(ham_root), tmp_path / "resumed", callback=stop).status == "stopped"
    assert train(RunConfig(), tmp_path / "resumed", resume=True).status == "finished"
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    for key in a:
        assert np.allclose(a[key].numpy(), b[key].numpy(), atol=1e-5), key
    swa = [r for r in read_metrics(tmp_path / "resumed") if r["kind"] == "swa"]
    assert [r["epochs_averaged"] for r in swa] == [2]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"swa_epochs": 4}, "swa_epochs must be between 0 and finetune_epochs"), ({"swa_lr": 0.0}, "swa_lr")],
)
def test_bad_swa_settings_are_refused_before_any_work(
    ham_root: Path, tmp_path: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(TrainingError, match=message):
        train(swa_config(ham_root, **overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_passes_swa_settings_into_the_run_config() -> None:
    args = build_parser().parse_args(["finetune", "--out", "x", "--swa-epochs", "5", "--swa-lr", "3e-4"])
    cfg = _run_config(args, "finetune")
    assert (cfg.train.swa_epochs, cfg.train.swa_lr) == (5, 3e-4)
    defaults = _run_config(build_parser().parse_args(["finetune", "--out", "x"]), "finetune")
    assert (defaults.train.swa_epochs, defaults.train.swa_lr) == (0, None)
