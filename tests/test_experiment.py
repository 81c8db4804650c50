"""The label-efficiency experiment on a tiny grid: 2 fractions × 1 seed × {simclr, random}, ~120 images, 16 px."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from dermai.config import RunConfig, to_dict
from dermai.data import load_dataset
from dermai.experiment import _shared_split, _train_once, label_efficiency, recipe_changes, run_config
from dermai.splits import attach_splits, write_manifest
from tests.conftest import ham_rows, make_folder


def test_label_efficiency_writes_results_summary_and_report_for_both_inits(ham_root: Path, tmp_path: Path) -> None:
    base = RunConfig()
    base.data.data_dir, base.data.limit = str(ham_root), 120
    # 32 px, not smaller: at 16 px ResNet-18's last maps are 1×1 and a one-epoch run on 120 images now and
    # then diverged to non-finite outputs (the trainer stops such a run with a TrainingError).
    base.train.image_size, base.train.batch_size = 32, 32
    base.train.pretrain_epochs = base.train.finetune_epochs = 1
    out = tmp_path / "exp"
    command = "python -m dermai experiment label-efficiency --fractions 0.3 1.0 --seeds 1"
    summary = label_efficiency(base, out, fractions=(0.3, 1.0), seeds=1, command=command)

    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4 and set(results["init"]) == {"simclr", "random"}
    assert {"fraction", "init", "seed", "n_labelled", "val_auroc", "val_bacc", "test_auroc", "test_bacc"} <= set(
        results.columns
    )
    assert results[["val_auroc", "test_auroc", "test_bacc"]].apply(lambda c: c.between(0, 1)).all().all()
    labelled = results.groupby("fraction")["n_labelled"].first()
    assert labelled[0.3] < labelled[1.0]

    table = pd.read_csv(out / "summary.csv")
    assert list(table.columns[:6]) == ["fraction", "init", "auroc_mean", "auroc_sd", "bacc_mean", "bacc_sd"]
    assert len(table) == len(summary) == 4
    markdown = (out / "label_efficiency.md").read_text()
    assert "| labelled fraction |" in markdown and command in markdown and "simclr" in markdown
    assert (out / "label_efficiency.html").stat().st_size > 0

    # SimCLR fine-tunes start from their seed's pretraining run; random ones from nothing; one split for all.
    pretrained = out / "seed0" / "pretrain" / "model.safetensors"
    for fraction in ("0.3", "1"):
        simclr = json.loads((out / "seed0" / f"frac{fraction}" / "simclr" / "config.json").read_text())
        random = json.loads((out / "seed0" / f"frac{fraction}" / "random" / "config.json").read_text())
        assert simclr["init_weights"] == str(pretrained) and random["init_weights"] is None
        assert simclr["config"]["train"]["finetune_epochs"] == random["config"]["train"]["finetune_epochs"]
    splits = [pd.read_csv(p)[["image_id", "split"]] for p in sorted(out.rglob("manifest.csv"))]
    assert len(splits) == 6 and all(s.equals(splits[0]) for s in splits)

    # Resumable: a second call reuses every finished run.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    label_efficiency(base, out, fractions=(0.3, 1.0), seeds=1, command=command)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")} == stamps

    # A crash between a run's final tensors and its model.json: that run is resumed, not an error.
    torn = out / "seed0" / "frac1" / "random"
    (torn / "model.json").unlink()
    label_efficiency(base, out, fractions=(0.3, 1.0), seeds=1, command=command)
    assert json.loads((torn / "model.json").read_text())["status"] == "finished"
    assert {p: t for p, t in stamps.items() if p.parent != torn} == {
        p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors") if p.parent != torn
    }


def test_a_grid_run_made_with_other_settings_is_refused_not_reused(tmp_path: Path) -> None:
    """Rerunning the experiment with another budget must not silently reuse or resume the old runs."""
    base = RunConfig()
    base.train.finetune_epochs = 30
    cfg = run_config(base, tmp_path / "manifest.csv", 0, 0.1, "finetune")
    run_dir = tmp_path / "seed0" / "frac0.1" / "simclr"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": to_dict(cfg)}))
    assert recipe_changes(cfg, run_dir) == []
    assert recipe_changes(cfg, tmp_path / "new") == []  # nothing there yet
    longer_base = replace(base, train=replace(base.train, finetune_epochs=80))
    longer = run_config(longer_base, tmp_path / "manifest.csv", 0, 0.1, "finetune")
    assert recipe_changes(longer, run_dir) == ["train.finetune_epochs: saved 30, given 80"]
    with pytest.raises(ValueError, match=r"frac0\.1/simclr: trained with other settings .*saved 30, given 80"):
        _train_once(longer, run_dir, None, "", False)


def test_a_zero_epoch_budget_is_refused_before_the_split_is_written(tmp_path: Path) -> None:
    base = RunConfig()
    base.train.pretrain_epochs = 0
    with pytest.raises(ValueError, match="pretrain_epochs must be a whole number ≥ 1"):
        label_efficiency(base, tmp_path / "exp", fractions=(1.0,), seeds=1)
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize(
    ("fractions", "seeds", "message"),
    [((0.5, 2.0), 1, r"fractions: each must be in \(0, 1\]"), ((0.0,), 1, "fractions"), ((1.0,), 0, "seeds")],
)
def test_a_bad_fraction_or_seed_count_is_refused_before_the_split_is_written(
    tmp_path: Path, fractions: tuple[float, ...], seeds: int, message: str
) -> None:
    """--fractions 2 used to train as 1.0, --fractions 0 failed after a run, --seeds 0 ended in a KeyError."""
    with pytest.raises(ValueError, match=message):
        label_efficiency(RunConfig(), tmp_path / "exp", fractions=fractions, seeds=seeds)
    assert not (tmp_path / "exp").exists()


def _labelled_train(root: Path, manifest: Path, fraction: float) -> int:
    """Labelled training images of a grid run at `fraction` (as `run_config` points it at the shared split)."""
    meta = attach_splits(load_dataset(root), seed=0, label_fraction=fraction, manifest=manifest).meta
    return int((meta["labelled"] & (meta["split"] == "train")).sum())


def test_the_shared_split_drops_a_base_manifests_labelled_column(tmp_path: Path) -> None:
    """A base manifest written at label fraction 0.3 made every "1.0" run train on 30% of the labels."""
    root = make_folder(tmp_path / "data", ham_rows(n_lesions_per_dx=10), size=(8, 8))
    user = tmp_path / "user.csv"
    write_manifest(attach_splits(load_dataset(root), seed=0, label_fraction=0.3), user)
    base = RunConfig()
    base.data.data_dir, base.data.manifest = str(root), str(user)
    shared, dataset = _shared_split(base, tmp_path / "exp")

    assert list(pd.read_csv(shared).columns) == ["image_id", "split"]
    n_train = int((dataset.meta["split"] == "train").sum())
    assert _labelled_train(root, shared, 1.0) == n_train > _labelled_train(root, shared, 0.3)
    assert _shared_split(base, tmp_path / "exp")[0] == shared  # reused on resume

    # A folder made before: its shared manifest kept the base's column, so its "1.0" runs are wrong.
    write_manifest(attach_splits(load_dataset(root), seed=0, label_fraction=0.3), shared)
    with pytest.raises(ValueError, match=rf"exp/manifest\.csv: labelled column keeps \d+ of {n_train} training"):
        _shared_split(base, tmp_path / "exp")


def test_a_rerun_with_other_split_settings_is_refused_not_run_on_the_old_split(tmp_path: Path) -> None:
    """out/manifest.csv used to be reused whatever --split-seed, --limit or manifest a rerun gave, while the
    report's command showed the new flags."""
    root = make_folder(tmp_path / "data", ham_rows(n_lesions_per_dx=10), size=(8, 8))
    base = RunConfig()
    base.data.data_dir = str(root)
    out = tmp_path / "exp"
    shared, _ = _shared_split(base, out)
    saved = json.loads((out / "split.json").read_text())
    assert saved == {"seed": 0, "val_fraction": 0.15, "test_fraction": 0.15, "limit": None}
    assert _shared_split(base, out)[0] == shared  # the same settings: reused

    other_seed = replace(base, data=replace(base.data, seed=7))
    with pytest.raises(ValueError, match=r"exp/split\.json: .*data\.seed \(--split-seed\): saved 0, given 7"):
        label_efficiency(other_seed, out, fractions=(1.0,), seeds=1)
    limited = replace(base, data=replace(base.data, limit=60, test_fraction=0.2))
    message = r"test_fraction: saved 0\.15, given 0\.2; data\.limit \(--limit\): saved none, given 60"
    with pytest.raises(ValueError, match=message):
        _shared_split(limited, out)
    user = tmp_path / "user.csv"
    pd.read_csv(shared).to_csv(user, index=False)
    with pytest.raises(ValueError, match=r"data\.manifest: saved none, given .*user\.csv \(sha256 [0-9a-f]{12}\)"):
        _shared_split(replace(base, data=replace(base.data, manifest=str(user))), out)
    assert not (out / "seed0").exists() and json.loads((out / "split.json").read_text()) == saved

    # A folder from before split.json: accepted, and its settings written from then on.
    (out / "split.json").unlink()
    _shared_split(other_seed, out)
    assert json.loads((out / "split.json").read_text())["seed"] == 7


def test_a_base_manifest_counts_as_the_same_split_by_its_text(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", ham_rows(n_lesions_per_dx=10), size=(8, 8))
    first, moved = tmp_path / "a.csv", tmp_path / "b.csv"
    write_manifest(attach_splits(load_dataset(root), seed=0), first)
    moved.write_bytes(first.read_bytes())
    base = RunConfig()
    base.data.data_dir, base.data.manifest = str(root), str(first)
    _shared_split(base, tmp_path / "exp")
    _shared_split(replace(base, data=replace(base.data, manifest=str(moved))), tmp_path / "exp")  # same text

    write_manifest(attach_splits(load_dataset(root), seed=3), first)
    with pytest.raises(ValueError, match=r"data\.manifest: saved .*a\.csv \(sha256 \w{12}\), given .*a\.csv"):
        _shared_split(base, tmp_path / "exp")
