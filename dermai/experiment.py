"""The label-efficiency experiment: does SimCLR pretraining help when labels are scarce?

The paper claims it and never shows it. Here, per seed, one SimCLR pretraining run on every training image
(labels unused) is shared by all label fractions of that seed; each fraction is then fine-tuned from those
weights and from random initialisation with the same budget, split and seed. One manifest fixes the split for
every run (its settings kept in split.json: a rerun with other ones is refused); the seed picks the labelled
subset and the training randomness. Model selection uses validation only; validation and test scores are both
reported. Finished runs are skipped, interrupted ones resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from dermai.config import RunConfig, check_run_config, config_differences, run_config_from_dict, to_dict
from dermai.data import Dataset, load_dataset
from dermai.evaluate import score_rows
from dermai.plots import label_efficiency_figure
from dermai.safe_write import atomic_leftover, atomic_write_bytes, write_json_atomic
from dermai.splits import attach_splits, check_seed, read_manifest, summary_table
from dermai.train import clear_unsaved_run, foreign_entry, run_finished, train
from dermai.weights import load_weights

INITS: tuple[str, ...] = ("simclr", "random")


def run_config(base: RunConfig, manifest: Path, seed: int, fraction: float, stage: str) -> RunConfig:
    """One run of the grid: the shared split (manifest), this seed's labelled subset and training seed."""
    data = replace(base.data, manifest=str(manifest), limit=None, seed=seed, label_fraction=fraction)
    return replace(base, data=data, train=replace(base.train, seed=seed), stage=stage)


def _finished(run_dir: Path) -> bool:
    """Whether the run's final weights and their model.json say it finished. A crash inside `save_weights`
    (tensors first, JSON second) leaves the tensors alone: not finished, so the run is resumed, not an error."""
    return (run_dir / "model.safetensors").exists() and run_finished(run_dir)


def recipe_changes(cfg: RunConfig, run_dir: Path) -> list[str]:
    """How the run already in `run_dir` was trained differently from `cfg` (training settings, both
    augmentations, stage, split seed, label fraction), as "field: saved X, given Y"; [] for a new folder."""
    path = run_dir / "config.json"
    if not path.exists():
        return []
    try:
        saved = to_dict(run_config_from_dict(json.loads(path.read_text())["config"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable run configuration ({exc})") from None
    given = to_dict(cfg)
    fields = ["stage", "data.seed", "data.label_fraction"]
    fields += [f"{section}.{name}" for section in ("train", "augment", "simclr_augment") for name in given[section]]
    return config_differences(saved, given, fields)


def _train_once(cfg: RunConfig, run_dir: Path, init_weights: Path | None, command: str, progress: bool) -> Path:
    """The run's final weights: reused when finished, resumed from its checkpoint, else trained. A run made
    with other settings is refused: reusing or resuming it would mix budgets in one table without a word."""
    changes = recipe_changes(cfg, run_dir)
    if changes:
        raise ValueError(
            f"{run_dir}: trained with other settings than this experiment's ({'; '.join(changes)}); rerun with "
            "the original settings or use another --out folder"
        )
    if not _finished(run_dir):
        resume = (run_dir / "checkpoints" / "last.pt").exists()
        if not resume and clear_unsaved_run(run_dir):  # interrupted in its first epoch: nothing saved to keep
            print(f"note: {run_dir}: stopped before its first checkpoint; training it again", file=sys.stderr)
        if not resume and foreign_entry(run_dir) is not None:
            raise RuntimeError(  # the trainer refuses to start over files it did not just write
                f"{run_dir}: this run stopped before its first checkpoint, so it cannot be resumed; delete that "
                "folder and rerun the experiment to train it again"
            )
        result = train(
            cfg,
            run_dir,
            resume=resume,
            command=command,
            progress=progress,
            init_weights=str(init_weights) if init_weights else None,
        )
        if result.status != "finished":
            raise RuntimeError(f"{run_dir}: run {result.status}; rerun the experiment to resume it")
    return run_dir / "model.safetensors"


def _check_all_labelled(path: Path) -> None:
    """Refuse a shared manifest whose `labelled` column leaves training images out. Each run reads it, and
    `attach_splits` keeps that column at fraction 1, so its "1.0" runs trained on the base manifest's fraction
    (folders made before the shared manifest kept image_id,split only could hold one)."""
    table = read_manifest(path)
    if "labelled" in table.columns and not table["labelled"].all():
        n, total = int(table["labelled"][table["split"] == "train"].sum()), int((table["split"] == "train").sum())
        raise ValueError(
            f"{path}: labelled column keeps {n} of {total} training images, so this folder's fraction-1 runs "
            "trained on fewer labels than they say; use another --out folder"
        )


SPLIT_SETTINGS = "split.json"
SETTING_NAMES = {
    "manifest": "data.manifest",
    "seed": "data.seed (--split-seed)",
    "val_fraction": "data.val_fraction",
    "test_fraction": "data.test_fraction",
    "limit": "data.limit (--limit)",
}


# What `label_efficiency` writes into its --out folder, beside its seedN run folders.
EXPERIMENT_FILES = (
    "manifest.csv",
    SPLIT_SETTINGS,
    "results.csv",
    "summary.csv",
    "label_efficiency.html",
    "label_efficiency.md",
)


def check_experiment_out(out: Path) -> None:
    """Refuse an --out folder holding anything but an experiment's own files (`EXPERIMENT_FILES`, seedN run
    folders, a temporary an atomic write left), naming the first such entry: the experiment writes results.csv,
    manifest.csv… over whatever bears those names. A new or empty folder, or an experiment's to resume, is fine."""
    entry = foreign_entry(out, _experiment_entry)
    if entry is not None:
        raise ValueError(
            f"{entry}: exists already, and is not a file of this experiment; choose another --out folder "
            "(a new or empty one, or an experiment's to resume)"
        )


def _experiment_entry(name: str) -> bool:
    """Whether an entry of an experiment's --out folder is its own: `EXPERIMENT_FILES`, a seedN run folder, or
    a temporary an atomic write left."""
    own = name in EXPERIMENT_FILES or re.fullmatch(r"seed\d+", name) is not None
    return own or atomic_leftover(name)


def split_settings(base: RunConfig) -> dict[str, Any]:
    """The settings that make the shared split: a base manifest (its path and the sha256 of its text), else
    the split seed, the validation and test fractions and the image limit (a manifest ignores those)."""
    d = base.data
    if d.manifest:
        try:
            digest = hashlib.sha256(Path(d.manifest).read_bytes()).hexdigest()
        except OSError as exc:
            raise ValueError(f"{d.manifest}: cannot read the base manifest (data.manifest) ({exc})") from None
        return {"manifest": str(Path(d.manifest).resolve()), "manifest_sha256": digest}
    return {
        "seed": check_seed(d.seed),
        "val_fraction": float(d.val_fraction),
        "test_fraction": float(d.test_fraction),
        "limit": int(d.limit) if d.limit else None,
    }


def _shown(settings: dict[str, Any], key: str) -> str:
    """One split setting as an error message shows it; a base manifest with the start of its checksum."""
    if settings.get(key) is None:
        return "none"
    if key == "manifest":
        return f"{settings['manifest']} (sha256 {str(settings.get('manifest_sha256'))[:12]})"
    return str(settings[key])


def split_changes(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """How `given` split settings differ from `saved` ones, as "setting: saved X, given Y"; a base manifest
    counts as the same when its text is (wherever it now lies)."""
    if "manifest" in saved or "manifest" in given:
        same = saved.get("manifest_sha256") == given.get("manifest_sha256")
        return [] if same else [f"data.manifest: saved {_shown(saved, 'manifest')}, given {_shown(given, 'manifest')}"]
    keys = [k for k in SETTING_NAMES if k != "manifest" and saved.get(k) != given.get(k)]
    return [f"{SETTING_NAMES[k]}: saved {_shown(saved, k)}, given {_shown(given, k)}" for k in keys]


def _read_split_settings(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not readable split settings ({exc})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: not readable split settings (expected a JSON object)")
    return saved


def _check_split_settings(out: Path, given: dict[str, Any]) -> None:
    """Refuse to reuse the shared split for other split settings: the runs would use the old split while the
    report's command shows the new flags. A folder from before `split.json` is accepted and given one."""
    path = out / SPLIT_SETTINGS
    if not path.exists():
        write_json_atomic(path, given)
        return
    changes = split_changes(_read_split_settings(path), given)
    if changes:
        raise ValueError(
            f"{path}: the shared split was made with other settings ({'; '.join(changes)}); rerun with the "
            "original settings or use another --out folder"
        )


def _shared_split(base: RunConfig, out: Path) -> tuple[Path, Dataset]:
    """The one manifest every run uses (written once, reused on resume) and the dataset it splits. It holds
    image_id,split only: each run picks its own labelled subset, so a `labelled` column from a base manifest
    (written at some label fraction) must not travel into it. The settings that made it are kept beside it
    (split.json, written first) and a rerun with other ones is refused."""
    path = out / "manifest.csv"
    given = split_settings(base)
    folder = load_dataset(base.data.data_dir)
    if path.exists():
        _check_all_labelled(path)
        _check_split_settings(out, given)
    else:
        write_json_atomic(out / SPLIT_SETTINGS, given)
        dataset = attach_splits(
            folder,
            seed=base.data.seed,
            val_fraction=base.data.val_fraction,
            test_fraction=base.data.test_fraction,
            manifest=base.data.manifest,
            limit=None if base.data.manifest else base.data.limit,
        )
        split = dataset.meta[["image_id", "split"]].to_csv(index=False)
        atomic_write_bytes(path, split.encode())
    return path, attach_splits(folder, manifest=path)


def _scores(weights: Path, dataset: Dataset) -> dict[str, float | None]:
    """Validation and test AUROC (malignant) and seven-class balanced accuracy of one run."""
    loaded = load_weights(weights)
    out: dict[str, float | None] = {}
    for split in ("val", "test"):
        rows = dataset.meta[dataset.meta["split"] == split].reset_index(drop=True)
        report, _ = score_rows(loaded, rows, dataset.classes, n_boot=0)
        out[f"{split}_auroc"], out[f"{split}_bacc"] = report["auroc"], report["balanced_accuracy"]
    return out


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± SD over seeds of the test scores, per labelled fraction and initialisation."""
    grouped = results.groupby(["fraction", "init"], sort=True)
    return grouped.agg(
        auroc_mean=("test_auroc", "mean"),
        auroc_sd=("test_auroc", "std"),
        bacc_mean=("test_bacc", "mean"),
        bacc_sd=("test_bacc", "std"),
        val_auroc_mean=("val_auroc", "mean"),
        n_labelled=("n_labelled", "mean"),
        n_seeds=("seed", "nunique"),
    ).reset_index()


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.3f} ± {sd:.3f}" if pd.notna(sd) else f"{mean:.3f}"


def markdown_report(summary: pd.DataFrame, dataset: Dataset, base: RunConfig, command: str) -> str:
    """The summary as a markdown table, with the design and the exact command that produced it."""
    counts = summary_table(dataset).loc["total"]
    t = base.train
    lines = [
        "# Label efficiency: SimCLR pretraining vs random initialisation",
        "",
        "Per seed, one SimCLR pretraining run on all training images (labels unused); per labelled fraction, "
        "fine-tuning from it (`simclr`) and from random initialisation (`random`) with the same budget, split "
        "and seed. Model selection uses validation AUROC only; test scores are mean ± SD over seeds.",
        "",
        f"Split (shared by every run): {counts.get('train', 0)} train / {counts.get('val', 0)} val / "
        f"{counts.get('test', 0)} test images, grouped by {dataset.group_key}. Image size {t.image_size} px, "
        f"{t.pretrain_epochs} pretraining and {t.finetune_epochs} fine-tuning epochs.",
        "",
        "| labelled fraction | labelled images | init | test AUROC | test balanced accuracy | val AUROC | seeds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in summary.itertuples():
        lines.append(
            f"| {r.fraction:g} | {r.n_labelled:.0f} | {r.init} | {_pm(r.auroc_mean, r.auroc_sd)} | "
            f"{_pm(r.bacc_mean, r.bacc_sd)} | {r.val_auroc_mean:.3f} | {r.n_seeds} |"
        )
    lines += ["", "Command:", "", "```", command, "```", ""]
    return "\n".join(lines)


def label_efficiency(
    base: RunConfig,
    out: str | os.PathLike[str],
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: int = 3,
    command: str = "",
    progress: bool = False,
    log: Callable[[str], Any] = lambda _line: None,
) -> pd.DataFrame:
    """Run (or resume) the grid seeds × fractions × {simclr, random} into `out`; writes manifest.csv and
    split.json (the shared split and its settings), results.csv, summary.csv, label_efficiency.html and
    label_efficiency.md there and returns the summary."""
    check_run_config(replace(base, stage="both"))  # every seed pretrains and fine-tunes: refuse 0 epochs now
    if seeds < 1:  # checked before any run: nothing trains, then the empty table fails to summarise
        raise ValueError(f"seeds: need at least 1, got {seeds}")
    if not fractions or any(not 0 < f <= 1 for f in fractions):  # a bad one would fail only after others trained
        raise ValueError(f"fractions: each must be in (0, 1], got {' '.join(f'{f:g}' for f in fractions) or 'none'}")
    out = Path(out)
    check_experiment_out(out)
    manifest, dataset = _shared_split(base, out)
    rows: list[dict[str, Any]] = []
    for seed in range(seeds):
        seed_dir = out / f"seed{seed}"
        pretrained = _train_once(
            run_config(base, manifest, seed, 1.0, "pretrain"), seed_dir / "pretrain", None, command, progress
        )
        for fraction in fractions:
            for init in INITS:
                run_dir = seed_dir / f"frac{fraction:g}" / init
                cfg = run_config(base, manifest, seed, fraction, "finetune")
                weights = _train_once(cfg, run_dir, pretrained if init == "simclr" else None, command, progress)
                split = read_manifest(run_dir / "manifest.csv")
                n_labelled = int((split["labelled"] & (split["split"] == "train")).sum())
                row = {"fraction": fraction, "init": init, "seed": seed, "n_labelled": n_labelled}
                row.update(_scores(weights, dataset), run_dir=str(run_dir))
                rows.append(row)
                log(
                    f"seed {seed} fraction {fraction:g} {init}: val AUROC {row['val_auroc']:.3f}, "
                    f"test AUROC {row['test_auroc']:.3f}"
                )
                atomic_write_bytes(out / "results.csv", pd.DataFrame(rows).to_csv(index=False).encode())
    summary = summarize(pd.DataFrame(rows))
    atomic_write_bytes(out / "summary.csv", summary.to_csv(index=False).encode())
    html = label_efficiency_figure(summary).to_html(include_plotlyjs=True, full_html=True)
    atomic_write_bytes(out / "label_efficiency.html", html.encode())
    atomic_write_bytes(out / "label_efficiency.md", markdown_report(summary, dataset, base, command).encode())
    return summary
