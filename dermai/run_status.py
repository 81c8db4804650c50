"""A run folder's status as the app shows it: running, finished, stopped, interrupted or failed, its progress,
ETA and note, read from its metrics stream, its job.log and its locks. Separate from job control (`dermai.jobs`):
it starts and stops nothing, and reads a run started from the command line as one started here."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dermai import file_cache
from dermai.data import same_file
from dermai.jobs import (
    CANCELLED,
    ENSEMBLE_STAGE,
    JOB_EVENT,
    LOG_NAME,
    STARTED,
    JobError,
    _read_run_config,
    current_job,
    resumable,
)
from dermai.train import OWNER_FILE, STOPPED_UNTRAINED, parse_metrics, run_lock_holder

EXTERNAL_QUIET_S = 300  # no end record, no lock held, written this recently: a trainer without the lock (older)
# A log without the app's JOB_EVENT lines (an older version's) this much newer than the end: a later job.
LEGACY_LOG_GRACE_S = 60


@dataclass
class RunStatus:
    """A run folder's state, read from its metrics stream (and whether its job is alive)."""

    run_dir: Path
    status: str  # running | finished | stopped | interrupted | failed | not started
    stage: str | None
    epoch: int | None
    progress: float  # 0..1 of all optimiser steps
    eta_s: float | None
    best_val_auroc: float | None
    weights: Path | None
    started: float | None
    note: str | None = None  # what the status alone does not say: cancelled by the user, a resume that died
    epochs_done: dict[str, int] = field(default_factory=dict)  # per stage, the epochs it completed


def recorded_stage(run_dir: str | os.PathLike[str]) -> str | None:
    """The stage a run folder's config.json records (ENSEMBLE_STAGE for an ensemble's), or None while there is
    none to read (a trainer not yet that far, a damaged file): the Training page's live view of a run started
    from the command line has no lock record to name its stage, and must know an ensemble, which reads no STOP."""
    try:
        saved = _read_run_config(Path(run_dir) / "config.json")
    except JobError:
        return None
    if "members" in saved:  # as _run_row tells an ensemble run
        return ENSEMBLE_STAGE
    config = saved.get("config")
    stage = config.get("stage") if isinstance(config, dict) else None
    return stage if isinstance(stage, str) and stage else None


def planned_epochs(run_dir: str | os.PathLike[str], stage: str) -> int | None:
    """The epochs a run folder's config.json plans for `stage` ("pretrain" or "finetune"), or None where it says
    none (not yet written, an ensemble, another layout): the live view's "epoch 2 of 6" needs the 6."""
    try:
        saved = _read_run_config(Path(run_dir) / "config.json")
    except JobError:
        return None
    config = saved.get("config")
    train = config.get("train") if isinstance(config, dict) else None
    planned = train.get(f"{stage}_epochs") if isinstance(train, dict) else None
    return planned if isinstance(planned, int) and not isinstance(planned, bool) else None


def _events_in(text: str) -> tuple[tuple[str, float], ...]:
    """The app's own lines in a job.log text, as (event, time), oldest first."""
    return tuple((m[1], float(m[2])) for line in text.splitlines() if (m := JOB_EVENT.match(line)))


def _job_events(run: Path) -> tuple[tuple[str, float], ...]:
    """The app's own lines in a run's job.log (parsed once per version of the log); none without a log."""
    try:
        return file_cache.parsed(run / LOG_NAME, _events_in)
    except OSError:
        return ()


def is_running(run_dir: str | os.PathLike[str], runs: str | os.PathLike[str] | None = None) -> bool:
    """Whether a process works in the run folder now: the app's job, or a trainer holding the folder's lock
    (also one started from the command line), however long since it last wrote. Its weights may be written
    but not yet calibrated (the trainer calibrates after saving them, an ensemble after packing them)."""
    run = Path(run_dir)
    job = current_job(runs)
    if job is not None and same_file(job.run_dir, run):
        return True  # also while a resumed run has only its earlier "stopped" record
    return run_lock_holder(run) is not None


def _lock_taken(run: Path) -> float | None:
    """When a trainer last took the run folder's lock (`train.run_lock` writes its pid into OWNER_FILE as it
    does), or None: the only trace a trainer started from the command line leaves before its first record."""
    try:
        return (run / OWNER_FILE).stat().st_mtime
    except OSError:
        return None


def trained_this_job(run_dir: str | os.PathLike[str], records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the trainer now holding the run folder has trained: a step or epoch record stamped since it took
    the folder's lock (`_lock_taken`; the trainer logs the first step it takes). A resumed run's earlier jobs'
    records do not count: it prepares its data again first (minutes at a new image size), and a STOP then ends it
    before it trains, with no new checkpoint. Nor does anything while no trainer holds the lock (a job whose
    process is still starting: the lock's time is then an earlier trainer's)."""
    run = Path(run_dir)
    taken = _lock_taken(run)
    if taken is None or run_lock_holder(run) is None:
        return False
    return any(
        record.get("kind") in ("step", "epoch")
        and isinstance(stamp := record.get("time"), int | float)
        and stamp >= taken
        for record in records
    )


def _since_end(run: Path, end: Mapping[str, Any] | None, trained_after_end: bool) -> str | None:
    """What happened after the run's last status record: "cancelled" (the user cancelled the last job before
    it wrote a status of its own), "stopped untrained" (a STOP ended the new run's job before it trained: the
    trainer's job.log line), "continued" (a later job trained on or was launched, and wrote none: it
    died), "continued outside" (a trainer the app did not launch, a command-line resume, took the folder's lock
    after it and wrote none), or None (the record stands). The app's job.log lines say when each job started
    and was cancelled; a log without them (an older version's) counts as a later job when written well after
    the record. A cancel stands only if no trainer took the folder after it (its job's own trainer took it
    before)."""
    events = _job_events(run)
    taken = _lock_taken(run)
    by_user = None
    if events and (taken is None or taken <= events[-1][1]):
        by_user = {CANCELLED: "cancelled", STOPPED_UNTRAINED: "stopped untrained"}.get(events[-1][0])
    if end is None:
        return by_user
    end_time = end.get("time")
    end_time = end_time if isinstance(end_time, int | float) else None
    launches = [t for event, t in events if event == STARTED]
    if launches and end_time is not None and end_time < launches[-1]:
        return by_user or "continued"
    # A finished run is never resumed (the trainer refuses it before taking the lock), so file times after its
    # record prove nothing: a plain `cp -r` of the run stamps its lock and log with the time of the copy.
    finished = end.get("status") == "finished"
    if taken is not None and end_time is not None and end_time < taken and not finished:
        return by_user or "continued outside"
    if trained_after_end:
        return by_user or "continued"
    log = run / LOG_NAME
    if not launches and end_time is not None and log.exists() and not finished:
        return "continued" if log.stat().st_mtime > end_time + LEGACY_LOG_GRACE_S else None
    return None


def _note(run: Path, since_end: str | None) -> str | None:
    """The `RunStatus.note` for what happened after the last status record."""
    if since_end == "cancelled":
        if resumable(run):
            return "Cancelled by the user; Resume continues from its last checkpoint."
        return "Cancelled by the user before it saved a checkpoint: there is nothing to resume."
    if since_end == "stopped untrained":
        return "Stopped by the user while it prepared its data: nothing was trained. Start it again by its name."
    if since_end == "continued":
        return (
            "Its last job ended without finishing (the log below says why); the run's checkpoint is as that job "
            "left it. Resume tries again."
        )
    if since_end == "continued outside":
        return (
            "A trainer started outside the app (from a terminal, say) ended without finishing; its own output "
            "says why. The run's checkpoint is as that trainer left it. Resume tries again."
        )
    return None


def completed_epochs(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The epochs each stage completed: its distinct epoch records (the trainer writes one as each epoch ends,
    none for an epoch a stop cut short), so a stopped run is not read as having trained its planned epochs."""
    done: dict[str, set[Any]] = {}
    for record in records:
        if record.get("kind") == "epoch" and isinstance(record.get("stage"), str):
            done.setdefault(record["stage"], set()).add(record.get("epoch"))
    return {stage: len(epochs) for stage, epochs in done.items()}


def running_eta(records: Sequence[Mapping[str, Any]]) -> float | None:
    """The running job's estimated seconds left: the last step record's, since the last status record. Only
    step records carry one: read from the last record alone it was lost at every epoch record (the live view
    flipped to "ETA unknown" and back), and a step before the last status record is an earlier job's."""
    for record in reversed(records):
        if record.get("kind") == "status":
            return None
        eta = record.get("eta_s")
        if record.get("kind") == "step" and isinstance(eta, int | float) and not isinstance(eta, bool):
            return float(eta)
    return None


@dataclass(frozen=True)
class MetricsDigest:
    """What `run_status` reads of a run's metrics.jsonl: a few fields, kept per version of the file
    (`metrics_digest`) instead of its thousands of records; none depends on whether the run's process lives."""

    has_records: bool
    last: Mapping[str, Any]  # the last step or epoch record ({} before the first): stage, epoch, progress
    end: Mapping[str, Any] | None  # the last status record
    trained_after_end: bool  # a step or epoch record after it: a later job trained on
    best_val_auroc: Any  # the highest best_val_auroc of the records, None without one
    started: Any  # the first record's time
    eta_s: float | None  # `running_eta`: shown only while the run runs
    epochs_done: Mapping[str, int]  # `completed_epochs`


def digest(records: Sequence[Mapping[str, Any]]) -> MetricsDigest:
    """The `MetricsDigest` of a run's records."""
    end_index = next((i for i in reversed(range(len(records))) if records[i].get("kind") == "status"), None)
    steps = [r for r in records if r.get("kind") in ("step", "epoch")]
    best = [r["best_val_auroc"] for r in records if r.get("best_val_auroc") is not None]
    return MetricsDigest(
        has_records=bool(records),
        last=steps[-1] if steps else {},
        end=records[end_index] if end_index is not None else None,
        trained_after_end=end_index is not None
        and any(r.get("kind") in ("step", "epoch") for r in records[end_index + 1 :]),
        best_val_auroc=max(best) if best else None,
        started=records[0].get("time") if records else None,
        eta_s=running_eta(records),
        epochs_done=completed_epochs(records),
    )


def _digest_text(text: str) -> MetricsDigest:
    """The `MetricsDigest` of a metrics.jsonl text (`file_cache` keeps it, shared by every caller)."""
    return digest(parse_metrics(text))


def metrics_digest(run_dir: str | os.PathLike[str]) -> MetricsDigest:
    """The `MetricsDigest` of a run's metrics.jsonl (as `train.read_metrics` reads it), parsed once per version of
    the file: the Runs table reads every run's on each click, the live view a running run's every 2 s."""
    try:
        return file_cache.parsed(Path(run_dir) / "metrics.jsonl", _digest_text)
    except FileNotFoundError:  # none yet, or the folder deleted while the app polls it
        return digest(())


def run_status(run_dir: str | os.PathLike[str], runs: str | os.PathLike[str] | None = None) -> RunStatus:
    """What a run folder says about itself: running while its job is alive or a trainer holds the folder's
    lock (also one started from the command line); "stopped" when the user cancelled its job (or stopped it before
    it trained); else what its last status record says, unless a later job trained on or was launched, or a
    trainer from the command line took the folder's lock, and wrote no status of its own (a resume that failed
    at its start or part-way): that run is "interrupted", as is one that never wrote one."""
    run = Path(run_dir)
    metrics = metrics_digest(run)  # what the files say, parsed once per version; whether it runs is asked below
    last, end = metrics.last, metrics.end
    metrics_path = run / "metrics.jsonl"
    since_end = _since_end(run, end, metrics.trained_after_end)
    if is_running(run, runs):
        status, since_end = "running", None
    elif since_end in ("cancelled", "stopped untrained"):
        status = "stopped"  # by the user
    elif end is not None and since_end is None:
        status = str(end.get("status"))
    elif (
        not (run / OWNER_FILE).exists()  # a trainer that locks its folder is running only while it holds the lock
        and metrics_path.exists()
        and time.time() - metrics_path.stat().st_mtime < EXTERNAL_QUIET_S
    ):
        status, since_end = "running", None  # still writing, from a trainer that takes no lock (an older version)
    elif metrics.has_records:
        status = "interrupted"  # killed or crashed: resumable from its checkpoint
    else:
        status = "failed" if (run / LOG_NAME).exists() else "not started"
    total = last.get("total_steps") or 0
    progress = 1.0 if status == "finished" else (min(1.0, last.get("global_step", 0) / total) if total else 0.0)
    weights = run / "model.safetensors"
    return RunStatus(
        run_dir=run,
        status=status,
        stage=last.get("stage"),
        epoch=last.get("epoch"),
        progress=progress,
        eta_s=metrics.eta_s if status == "running" else None,
        best_val_auroc=metrics.best_val_auroc if metrics.best_val_auroc is not None else (end or {}).get("best_score"),
        weights=weights if weights.exists() else None,
        started=metrics.started,
        note=_note(run, since_end),
        epochs_done=dict(metrics.epochs_done),
    )


def log_tail(run_dir: str | os.PathLike[str], lines: int = 20) -> str:
    """The last lines of a run's job.log (the process's stdout and stderr)."""
    path = Path(run_dir) / LOG_NAME
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
