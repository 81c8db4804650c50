"""Several runs side by side: which settings differ between them, and what each reached on validation.

Tuning a recipe is a string of "what did I change, and did it help?". The runs' own files answer it:
`config.json` for the settings (shown only where the runs differ, so the change is not buried under sixty
equal values) and `metrics.jsonl` for the validation figures per epoch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dermai.plots import swa_label
from dermai.train import read_metrics

MISSING = "—"  # a setting one run has and another lacks (e.g. from an older version)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level with dotted keys ("train.lr"); lists become text so they compare by
    value and show in a table."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = ", ".join(map(str, value)) if isinstance(value, list | tuple) else value
    return flat


def run_settings(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's settings from its config.json, flattened: a training run's config plus where it started;
    an ensemble's members and sizes. Raises ValueError naming the file when it is missing or unreadable."""
    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the run's settings ({exc})") from exc
    if "members" in saved:
        return flatten({"ensemble": {"members": saved["members"], "image_sizes": saved.get("image_sizes")}})
    settings = dict(saved.get("config", {}))
    settings["start"] = {"init_weights": saved.get("init_weights"), "reset_classifier": saved.get("reset_classifier")}
    return flatten(settings)


def setting_differences(settings: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per setting whose value is not the same in every run (index: setting; one column per run),
    in the order the settings first appear. Empty when the runs agree everywhere."""
    keys = list(dict.fromkeys(k for flat in settings.values() for k in flat))
    rows = {}
    for key in keys:
        values = [flat.get(key, MISSING) for flat in settings.values()]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            rows[key] = [str(v) if v is not None else "None" for v in values]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(settings))
    table.index.name = "setting"
    return table


def epoch_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The per-epoch records of a metrics stream (validation figures live there)."""
    return [r for r in records if r.get("kind") == "epoch"]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def run_summary(name: str, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What a run reached: per stage, the best validation AUROC, its epoch and the balanced accuracy there,
    the epochs run, and the median training speed, then the stage's weight average if it made one (`swa_row`).
    Stages without validation figures are left out."""
    rows = []
    for stage in dict.fromkeys(r.get("stage", "train") for r in records):
        mine = [r for r in epoch_records(records) if r.get("stage", "train") == stage]
        epochs = [r for r in mine if _finite(r.get("val_auroc"))]  # NaN (one class in validation) ranks nothing
        if not epochs:
            continue
        best = max(epochs, key=lambda r: r["val_auroc"])
        speeds = sorted(
            r["images_per_s"]
            for r in records
            if r.get("stage", "train") == stage and r.get("kind", "step") == "step" and r.get("images_per_s")
        )
        rows.append(
            {
                "run": name,
                "stage": stage,
                "best_val_auroc": float(best["val_auroc"]),
                "best_epoch": int(best.get("epoch", 0)),
                "val_bacc_at_best": best.get("val_bacc"),
                "epochs_run": len(epochs),
                "images_per_s": speeds[len(speeds) // 2] if speeds else None,
            }
        )
        rows += [swa_row(name, r) for r in records if r.get("kind") == "swa" and r.get("stage", "train") == stage]
    return rows


def swa_row(name: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """A summary row for a stochastic weight average (a "swa" record, written after the stage's last epoch):
    it belongs to no epoch, and when kept it is the run's weights, so comparing runs by their best epoch alone
    would hide the figure the run is served with."""
    auroc = record.get("val_auroc")
    return {
        "run": name,
        "stage": swa_label(str(record.get("stage", "train")), record),
        "best_val_auroc": float(auroc) if _finite(auroc) else None,
        "best_epoch": None,
        "val_bacc_at_best": record.get("val_bacc"),
        "epochs_run": None,
        "images_per_s": None,
    }


def compare_runs(
    run_dirs: Mapping[str, str | os.PathLike[str]], records: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, differences) for runs given as {name: folder}: one summary row per run and stage with
    validation figures (and one per stochastic weight average, after its stage's), and the settings that differ
    between the runs. `records` are the runs' metrics streams when the caller has read them already (to draw
    them too); otherwise they are read here."""
    if records is None:
        records = {name: read_metrics(path) for name, path in run_dirs.items()}
    summaries = [row for name in run_dirs for row in run_summary(name, records[name])]
    columns = ["run", "stage", "best_val_auroc", "best_epoch", "val_bacc_at_best", "epochs_run", "images_per_s"]
    summary = pd.DataFrame(summaries, columns=columns)
    for column in ("best_epoch", "epochs_run"):  # a weight average's row has none: a gap, not 4.0 beside it
        summary[column] = summary[column].astype("Int64")
    differences = setting_differences({name: run_settings(path) for name, path in run_dirs.items()})
    return summary, differences
