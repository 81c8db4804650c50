"""Knowledge distillation in fine-tuning: the targets blend the label with the teacher's probabilities, the
settings reach the trainer from the CLI and are checked before any work, the teacher must share the run's split
and classes, and a teacher changes what the student learns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dermai.cli import _run_config, build_parser
from dermai.config import check_run_config
from dermai.losses import distill_targets
from dermai.train import Trainer, TrainingError, prepare_data, read_metrics, train
from tests.test_train import tiny_config


def test_targets_blend_the_label_with_the_teacher() -> None:
    labels = torch.tensor([0, 2])
    teacher = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    torch.testing.assert_close(distill_targets(labels, teacher, 0.0), torch.eye(3)[labels])
    torch.testing.assert_close(distill_targets(labels, teacher, 1.0), teacher)
    blended = distill_targets(labels, teacher, 0.25)
    torch.testing.assert_close(blended, torch.tensor([[0.875, 0.075, 0.05], [0.025, 0.025, 0.95]]))
    torch.testing.assert_close(blended.sum(1), torch.ones(2))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"distill_weight": 1.5, "distill_from": "t"}, "distill_weight must be in"),
        ({"distill_weight": float("nan"), "distill_from": "t"}, "distill_weight must be in"),
        ({"distill_weight": 0.5}, "needs distill_from"),
        ({"distill_from": "t"}, "distill_weight is 0"),
        ({"distill_weight": 0.5, "distill_from": "t", "mixup_alpha": 0.2}, "cannot be combined with MixUp"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(ham_root: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_run_config(tiny_config(ham_root, **overrides))


def test_cli_sets_both_fields() -> None:
    args = ["finetune", "--out", "x", "--distill-from", "ens.safetensors", "--distill-weight", "0.5"]
    cfg = _run_config(build_parser().parse_args(args), "finetune")
    assert (cfg.train.distill_from, cfg.train.distill_weight) == ("ens.safetensors", 0.5)
    plain = _run_config(build_parser().parse_args(["finetune", "--out", "x"]), "finetune").train
    assert (plain.distill_from, plain.distill_weight) == (None, 0.0)


def fine_tuned(ham_root: Path, out: Path, **overrides: object) -> Path:
    cfg = tiny_config(ham_root, **overrides)
    cfg.stage = "finetune"
    result = train(cfg, out)
    assert result.status == "finished" and result.weights is not None
    return result.weights


def test_a_teacher_changes_the_students_loss_and_is_recorded(ham_root: Path, tmp_path: Path) -> None:
    teacher = fine_tuned(ham_root, tmp_path / "teacher", seed=5)
    fine_tuned(ham_root, tmp_path / "plain")
    fine_tuned(ham_root, tmp_path / "student", distill_from=str(teacher), distill_weight=1.0)
    steps = {name: [r for r in read_metrics(tmp_path / name) if r["kind"] == "step"] for name in ("plain", "student")}
    first = {name: rows[0] for name, rows in steps.items()}
    assert first["student"]["ntxent"] == pytest.approx(first["plain"]["ntxent"])  # same seed, images and views
    assert first["student"]["ce"] != pytest.approx(first["plain"]["ce"], abs=1e-4)  # only the targets differ
    saved = json.loads((tmp_path / "student" / "config.json").read_text())["config"]["train"]
    assert saved["distill_from"] == str(teacher) and saved["distill_weight"] == 1.0


def test_teacher_probabilities_cover_the_training_images_only(ham_root: Path, tmp_path: Path) -> None:
    teacher = fine_tuned(ham_root, tmp_path / "teacher", seed=5)
    cfg = tiny_config(ham_root, distill_from=str(teacher), distill_weight=0.5)
    cfg.stage = "finetune"
    trainer = Trainer(cfg, tmp_path / "student")
    trainer.dataset, _ = prepare_data(trainer.cfg)
    split = trainer.dataset.meta["split"].to_numpy()
    trainer.train_idx = np.flatnonzero(split == "train")
    probs = trainer._teacher_probs(str(teacher))
    assert probs.shape == (len(split), len(trainer.dataset.classes))
    assert np.allclose(probs[split == "train"].sum(1), 1.0) and np.isnan(probs[split != "train"]).all()


def test_a_teacher_of_another_split_or_none_at_all_is_refused(ham_root: Path, tmp_path: Path) -> None:
    other = tiny_config(ham_root)
    other.stage = "finetune"
    other.data.seed = 1  # another split: it has seen this run's validation and test images
    teacher = train(other, tmp_path / "other").weights
    assert teacher is not None
    with pytest.raises(TrainingError, match=f"{teacher}: trained on another split"):
        fine_tuned(ham_root, tmp_path / "student", distill_from=str(teacher), distill_weight=0.5)
    assert not (tmp_path / "student" / "config.json").exists()
    with pytest.raises(TrainingError, match="distill_from: .*nowhere.safetensors"):
        fine_tuned(ham_root, tmp_path / "s2", distill_from=str(tmp_path / "nowhere.safetensors"), distill_weight=0.5)
