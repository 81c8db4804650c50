"""The Runs table: one row per run folder of the runs folder (status, stage, epochs, input size, score, size on
disk), a damaged folder as an "unreadable" row, and the runs offered as start weights, teachers and for comparing.
Separate from job control and from a single run's status, which it reads."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dermai.data import same_file
from dermai.disk_space import folder_bytes
from dermai.jobs import ENSEMBLE_STAGE, LOG_NAME, JobError, _read_run_config, current_job, runs_dir
from dermai.preprocess import meta_input_size, size_label
from dermai.run_status import log_tail, run_status
from dermai.weights import DEFAULT_WEIGHTS

RUN_COLUMNS = [
    *("name", "status", "stage", "epochs", "input", "best_val_auroc", "started", "disk_gb", "weights", "path"),
    "problem",
    "note",  # RunStatus.note: what the status alone does not say (the Training page shows it)
]
# What the Runs table and `python -m dermai runs` show of `list_runs` (plus "problem" when a folder is damaged).
RUN_TABLE_COLUMNS = ["name", "status", "stage", "epochs", "input", "best_val_auroc", "started", "disk_gb"]
UNREADABLE = "unreadable"  # the status of a run folder whose files cannot be read; `problem` says which and why


def stage_epochs(stage: str, train: Mapping[str, Any], done: Mapping[str, int] | None = None) -> str:
    """The epochs a run of `stage` trains, as the Runs table shows them: with `done` (`completed_epochs`),
    completed/planned ("3/6"; "pretrain 2/2, finetune 0/6" for both stages), since planned epochs alone ("2 + 6")
    read as trained ones on a stopped run; else the planned ones. A fine-tuning run's config still holds the
    (unused) pretraining default, so only "both" shows two stages."""
    stages = ["pretrain", "finetune"] if stage == "both" else [stage]
    planned = {name: train[f"{name}_epochs"] for name in stages}
    if done is None:
        return " + ".join(str(planned[name]) for name in stages)
    if len(stages) == 1:
        return f"{done.get(stage, 0)}/{planned[stage]}"
    return ", ".join(f"{name} {done.get(name, 0)}/{planned[name]}" for name in stages)


def _run_row(run: Path, root: Path) -> dict[str, Any]:
    """The Runs table's row for one folder; a JobError naming the file when its config or metrics are damaged."""
    saved = _read_run_config(run / "config.json")
    try:
        status = run_status(run, root)
        started = datetime.fromtimestamp(status.started or (run / "config.json").stat().st_mtime)
    except (OSError, ValueError, TypeError, KeyError, OverflowError) as exc:
        raise JobError(f"{run / 'metrics.jsonl'}: cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        if "members" in saved:  # an ensemble run (`python -m dermai ensemble`)
            stage, epochs, size = ENSEMBLE_STAGE, f"{len(saved['members'])} members", ""
        else:
            config = saved["config"]
            stage = config["stage"]
            epochs = stage_epochs(stage, config["train"], status.epochs_done)
            size = f"{size_label(meta_input_size(config['train']))} px"
    except (KeyError, TypeError, ValueError):  # another layout (an older version's): what the metrics say
        stage, epochs, size = status.stage, "", ""
    return {
        "name": run.name,
        "status": status.status,
        "stage": stage,
        "epochs": epochs,
        "input": size,
        "best_val_auroc": status.best_val_auroc,
        "started": started.replace(microsecond=0),
        "disk_gb": folder_bytes(run) / 1e9,
        "weights": str(status.weights) if status.weights else None,
        "path": str(run),
        "problem": None,
        "note": status.note,
    }


def _unstarted_row(run: Path, root: Path) -> dict[str, Any]:
    """The row of a job folder whose trainer has written no config.json: starting, or failed before it
    could (a setting it refused, data it could not read). A failed one says why: its log's last line."""
    status = run_status(run, root)
    log = run / LOG_NAME
    row: dict[str, Any] = dict.fromkeys(RUN_COLUMNS)
    row.update(name=run.name, status=status.status, epochs="", input="", path=str(run), note=status.note)
    job = current_job(root)
    if job is not None and same_file(job.run_dir, run):  # its stage, from the lock, until its config is written
        row["stage"] = job.stage or None
    row["started"] = datetime.fromtimestamp(log.stat().st_mtime if log.exists() else run.stat().st_mtime).replace(
        microsecond=0
    )
    row["disk_gb"] = folder_bytes(run) / 1e9
    if status.status == "failed":
        lines = [line for line in log_tail(run, 50).splitlines() if line.strip()]
        row["problem"] = lines[-1].strip() if lines else "the job ended before writing anything (no log)"
    return row


def _unreadable_row(run: Path, problem: str) -> dict[str, Any]:
    """A damaged run folder's row: its name, where it is and what is wrong, nothing it cannot back."""
    try:
        started: datetime | None = datetime.fromtimestamp((run / "config.json").stat().st_mtime)
    except OSError:
        started = None
    row: dict[str, Any] = dict.fromkeys(RUN_COLUMNS)
    row.update(name=run.name, status=UNREADABLE, epochs="", input="", path=str(run), problem=problem)
    row["disk_gb"] = folder_bytes(run) / 1e9
    row["started"] = started.replace(microsecond=0) if started else None
    return row


def list_runs(runs: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """One row per run folder (newest first): name, status, stage, epochs, best val AUROC, started, the space it
    takes on disk. A damaged folder is one "unreadable" row whose `problem` names the file and why, so it never
    hides the others; a job that failed before its trainer wrote config.json is a "failed" row whose `problem`
    is its log's last line. Hidden folders (a run being deleted) are not runs."""
    root = runs_dir(runs)
    rows = [row for run in sorted(p for p in root.glob("[!.]*") if p.is_dir()) if (row := run_row(run, root))]
    return pd.DataFrame(rows, columns=RUN_COLUMNS).sort_values("started", ascending=False, ignore_index=True)


def run_row(run: str | os.PathLike[str], runs: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """One folder's `list_runs` row, read afresh (the Training page re-reads a running run's: its stage, epochs and
    size change as it trains), or None when the folder is no run (no config.json, no job log)."""
    run, root = Path(run), runs_dir(runs)
    try:
        if (run / "config.json").exists():
            return _run_row(run, root)
        if (run / LOG_NAME).exists():
            return _unstarted_row(run, root)
    except JobError as exc:
        return _unreadable_row(run, str(exc))
    except OSError as exc:  # the folder went away (deleted) while being listed
        return _unreadable_row(run, f"{run}: cannot be read ({exc})")
    return None


def shown_run_columns(table: pd.DataFrame) -> list[str]:
    """The `list_runs` columns to show: RUN_TABLE_COLUMNS, and "problem" when a folder is damaged (it says why)."""
    return [*RUN_TABLE_COLUMNS, "problem"] if table["problem"].notna().any() else list(RUN_TABLE_COLUMNS)


def finished_weights(
    runs: str | os.PathLike[str] | None = None,
    fine_tuned: bool = False,
    ensembles: bool = False,
    table: pd.DataFrame | None = None,
) -> dict[str, str]:
    """Runs whose weights can start a new run or join an ensemble, as {label: weights path}, newest first:
    finished or stopped, not ensembles (unless `ensembles`); with `fine_tuned`, only runs with a trained
    classifier. `table`: the `list_runs` table when the caller has read it (the Training page offers runs in
    three lists, and listing reads every run's config and metrics)."""
    table = list_runs(runs) if table is None else table
    usable = table["weights"].notna() & table["status"].isin(["finished", "stopped"])
    if not ensembles:
        usable &= table["stage"] != ENSEMBLE_STAGE
    if fine_tuned:
        usable &= table["stage"] != "pretrain"
    choices = {}
    for row in table[usable].itertuples():
        score = f", val AUROC {row.best_val_auroc:.3f}" if pd.notna(row.best_val_auroc) else ""
        choices[f"{row.name} ({row.stage}{score})"] = str(row.weights)
    return choices


def comparable_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The `list_runs` rows whose training can be compared (`dermai.compare` reads each one's config.json and
    metrics): not ensembles, not damaged folders, not jobs that failed or were cancelled before their trainer
    wrote a config (choosing one could only say that its config.json cannot be read)."""
    written = pd.Series([Path(path, "config.json").is_file() for path in table["path"]], index=table.index, dtype=bool)
    return table[(table["stage"] != ENSEMBLE_STAGE) & (table["status"] != UNREADABLE) & written]


def teacher_choices(runs: str | os.PathLike[str] | None = None, table: pd.DataFrame | None = None) -> dict[str, str]:
    """Models that can teach a fine-tuning run (`--distill-from`), as {label: weights path}: the shipped model,
    then finished or stopped runs with a trained classifier, ensembles included, newest first (`table`: as for
    `finished_weights`)."""
    shipped = {"shipped default model (weights/model.safetensors)": str(DEFAULT_WEIGHTS)}
    return {**shipped, **finished_weights(runs, fine_tuned=True, ensembles=True, table=table)}
