"""Deleting a run folder, and what depends on it: the runs that started from its weights or learn from them as
their teacher. Separate from the Runs table, which only reads the runs folder: this module removes run folders."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dermai.data import same_file
from dermai.disk_space import folder_bytes
from dermai.jobs import (
    LOG_NAME,
    OPTION_FLAGS,
    JobError,
    _describe,
    _keeps_teacher,
    _read_run_config,
    _refuse_if_owned,
    _teacher_needed,
    current_job,
    recorded_weights,
    runs_dir,
)
from dermai.run_status import run_status
from dermai.run_table import UNREADABLE

DELETING_PREFIX = ".deleting-"  # a run folder being deleted: hidden, so a deletion cut short lists no half-run


def is_listed_run(run: Path) -> bool:
    """Whether `list_runs` lists the folder as a run: a visible folder with a run's config.json, or with a job's
    log (a job that failed before its trainer wrote one). Only such a folder may be deleted as a run: any other
    in the runs folder is someone's own."""
    visible = run.is_dir() and not run.name.startswith(".")
    return visible and ((run / "config.json").exists() or (run / LOG_NAME).exists())


@dataclass
class Dependent:
    """A run of the runs folder whose settings name weights inside another run's folder: it started from them
    (`--init-weights`, role "start") or learns from them as its teacher (`--distill-from`, role "teacher")."""

    name: str
    role: str
    status: str
    pending: bool = False  # its job has not written its config yet: it has not read those weights
    keeps_teacher: bool = False  # its checkpoint stores the teacher's probabilities: it resumes without them

    @property
    def breaks(self) -> bool:
        """Whether deleting the other run leaves this one unable to go on: a job still starting, or a student that
        has not finished and would need its teacher's file to resume."""
        if self.pending:
            return True
        return self.role == "teacher" and self.status != "finished" and not self.keeps_teacher

    def consequence(self) -> str:
        """What deleting the other run does to this one (Markdown)."""
        who = f"`{self.name}` ({self.status})"
        if self.pending:
            use = "its teacher" if self.role == "teacher" else "the weights it starts from"
            return f"{who} is starting and has not read {use} yet: it fails if this run is deleted now."
        if self.role == "start":
            return (
                f"{who} started from its weights: it trains its own copy, so its weights and checkpoints stay valid "
                "without them."
            )
        if self.status == "finished":
            return f"{who} learned from it as its teacher: its own weights keep working."
        if self.keeps_teacher:
            return f"{who} learns from it as its teacher: its checkpoint keeps the teacher's scores, so it can resume."
        return (
            f"{who} learns from it as its teacher: its checkpoint predates stored teacher scores, so it re-reads the "
            "teacher when it resumes; once this run is deleted it can no longer resume."
        )


def dependent_runs(run_dir: str | os.PathLike[str], runs: str | os.PathLike[str] | None = None) -> list[Dependent]:
    """The runs of the runs folder that started from, or learn from, weights in `run_dir` (their config.json's
    `init_weights` and `train.distill_from`; for the job now starting, its command line), by name: what deleting
    `run_dir` would affect. A folder whose config cannot be read is skipped (it trains nothing)."""
    root = runs_dir(runs)
    target = Path(run_dir).resolve()
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    found = []
    for folder in folders:
        if folder.resolve() == target:
            continue
        try:
            roles = _roles_towards(folder, target)
        except JobError:
            continue
        pending = False
        if not (folder / "config.json").exists():
            roles = _starting_roles_towards(folder, root, target)
            pending = bool(roles)
        if roles:
            status = _status_or_unreadable(folder, root)
            keeps = "teacher" in roles and status != "finished" and _keeps_teacher(folder)
            found += [Dependent(folder.name, role, status, pending, keeps) for role in roles]
    return found


def _status_or_unreadable(run: Path, root: Path) -> str:
    """A run's status, or "unreadable" when its metrics are damaged (the Runs table's row says why)."""
    try:
        return run_status(run, root).status
    except (OSError, ValueError, TypeError, KeyError, OverflowError):
        return UNREADABLE


def _inside(recorded: Any, folder: Path) -> bool:
    """Whether a weights path recorded in a run's settings lies in `folder` (links followed)."""
    if not isinstance(recorded, str) or not recorded:
        return False
    try:
        return recorded_weights(recorded).resolve().is_relative_to(folder)
    except (OSError, RuntimeError):  # a path that cannot be resolved (a link loop) is no folder's
        return False


def _roles_towards(run: Path, target: Path) -> list[str]:
    """How `run`'s saved settings use weights in the folder `target`: "start", "teacher", both or neither."""
    if not (run / "config.json").exists():
        return []
    saved = _read_run_config(run / "config.json")
    config = saved.get("config") if isinstance(saved.get("config"), dict) else {}
    roles = ["start"] if _inside(saved.get("init_weights"), target) else []
    return roles + (["teacher"] if _inside(_teacher_needed(config), target) else [])


def _starting_roles_towards(run: Path, root: Path, target: Path) -> list[str]:
    """`_roles_towards` for the app's job now starting in `run`, from its command line: its trainer has not
    written config.json yet (nor read the weights)."""
    job = current_job(root)
    if job is None or job.pid <= 0 or Path(job.run_dir).resolve() != run.resolve():
        return []
    given = dict(zip(job.command, job.command[1:], strict=False))
    roles = ["start"] if _inside(given.get(OPTION_FLAGS["init_weights"]), target) else []
    return roles + (["teacher"] if _inside(given.get(OPTION_FLAGS["distill_from"]), target) else [])


def delete_run(run_dir: str | os.PathLike[str], runs: str | os.PathLike[str] | None = None) -> int:
    """Delete a run folder that no job or trainer is using, and return the bytes it freed. Only a folder
    directly in the runs folder that `list_runs` lists (`is_listed_run`) is deleted (never a link, nor anything
    it points to). The folder is renamed to
    a hidden name first, so a deletion cut short leaves no half-run in the Runs table; leftovers of such a
    deletion are removed on the next one. An ensemble packs its members' weights, so deleting a member never
    breaks an ensemble built from it; `dependent_runs` lists the runs that started from or learn from it."""
    root = runs_dir(runs)
    run = Path(run_dir)
    if run.is_symlink() or not is_listed_run(run) or run.resolve().parent != root.resolve():
        raise JobError(f"{run}: not a run folder of the runs folder {root}")
    job = current_job(root)
    if job is not None and job.pid <= 0:
        raise JobError("a job is starting; delete the run once it has started")
    if job is not None and same_file(job.run_dir, run):
        raise JobError(f"run {run.name!r} is running ({_describe(job)}); stop it first")
    _refuse_if_owned(run)
    size = folder_bytes(run)
    trash = root / f"{DELETING_PREFIX}{run.name}-{time.time_ns()}"
    try:
        run.rename(trash)
    except OSError as exc:
        raise JobError(f"{run}: cannot be deleted ({exc.strerror or exc})") from None
    for leftover in root.glob(f"{DELETING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return size
