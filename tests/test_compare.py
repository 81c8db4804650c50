"""Comparing runs: the settings that differ, each run's best epoch, and the curves figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dermai.compare import MISSING, compare_runs, flatten, run_settings, setting_differences
from dermai.config import RunConfig, to_dict
from dermai.plots import compare_runs_figure


def make_run(root: Path, name: str, lr: float, aurocs: list[float], init: str | None = None) -> Path:
    """A run folder as the trainer writes it: config.json and a metrics stream (steps and epochs)."""
    run = root / name
    run.mkdir()
    config = RunConfig()
    config.train.lr = lr
    config.stage = "finetune"
    saved = {"config": to_dict(config), "command": ["finetune"], "init_weights": init, "reset_classifier": False}
    (run / "config.json").write_text(json.dumps(saved))
    lines = []
    for epoch, auroc in enumerate(aurocs):
        for speed in (40.0, 44.0, 48.0):
            lines.append({"kind": "step", "stage": "finetune", "epoch": epoch, "images_per_s": speed, "loss": 1.0})
        record = {"kind": "epoch", "stage": "finetune", "epoch": epoch, "val_auroc": auroc, "val_bacc": auroc - 0.2}
        lines.append(record)
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    return run


def test_flatten_dots_nested_keys_and_joins_lists() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [0.4, 1.0]}}, "e": None}) == {"a.b": 1, "a.c.d": "0.4, 1.0", "e": None}


def test_only_differing_settings_are_listed(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", 1e-3, [0.8, 0.85])
    b = make_run(tmp_path, "b", 3e-4, [0.82, 0.84, 0.83], init="runs/x/model.safetensors")
    table = setting_differences({"a": run_settings(a), "b": run_settings(b)})
    assert list(table.index) == ["train.lr", "start.init_weights"]
    assert table.loc["train.lr"].tolist() == ["0.001", "0.0003"]
    assert table.loc["start.init_weights"].tolist() == ["None", "runs/x/model.safetensors"]
    assert setting_differences({"a": run_settings(a), "a again": run_settings(a)}).empty
    older = {k: v for k, v in run_settings(a).items() if k != "train.swa_epochs"}  # a setting added later
    added = setting_differences({"old": older, "new": run_settings(a)})
    assert added.loc["train.swa_epochs"].tolist() == [MISSING, "0"]


def test_summary_takes_each_runs_best_epoch(tmp_path: Path) -> None:
    runs = {"a": make_run(tmp_path, "a", 1e-3, [0.8, 0.85]), "b": make_run(tmp_path, "b", 3e-4, [0.82, 0.84, 0.83])}
    summary, differences = compare_runs(runs)
    rows = summary.set_index("run")
    assert rows.loc["a", "best_val_auroc"] == 0.85 and rows.loc["a", "best_epoch"] == 1
    assert rows.loc["b", "best_epoch"] == 1 and rows.loc["b", "epochs_run"] == 3
    assert rows.loc["b", "val_bacc_at_best"] == pytest.approx(0.64)
    assert rows.loc["a", "images_per_s"] == 44.0  # the median step speed
    assert list(differences.index) == ["train.lr"]


def test_an_epoch_without_a_validation_auroc_is_not_the_best(tmp_path: Path) -> None:
    """An epoch whose validation held one class records NaN (json writes it): max() would keep whichever came
    first, so it is left out, as a missing figure is."""
    runs = {"a": make_run(tmp_path, "a", 1e-3, [float("nan"), 0.8, 0.85, 0.7])}
    row = compare_runs(runs)[0].set_index("run").loc["a"]
    assert row["best_val_auroc"] == 0.85 and row["best_epoch"] == 2 and row["epochs_run"] == 3


def test_unreadable_settings_name_the_file(tmp_path: Path) -> None:
    run = tmp_path / "broken"
    run.mkdir()
    (run / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken/config\.json: cannot read"):
        run_settings(run)


def test_figure_has_one_line_per_run(tmp_path: Path) -> None:
    from dermai.train import read_metrics

    runs = {"a": make_run(tmp_path, "a", 1e-3, [0.8, 0.85]), "b": make_run(tmp_path, "b", 3e-4, [0.82, 0.84, 0.83])}
    fig = compare_runs_figure({name: read_metrics(path) for name, path in runs.items()}, "val_bacc")
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[1].y) == pytest.approx([0.62, 0.64, 0.63]) and list(fig.data[1].x) == [1, 2, 3]
