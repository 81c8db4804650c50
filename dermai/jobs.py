"""Training jobs for the app: launch `python -m dermai …` in its own process, one at a time per runs folder.

The registry is one lock file, `<runs>/.job.json` (pid, run folder, stage, command, start time), created
exclusively so two sessions cannot both start a job. Everything the app shows about a run comes from that
file and the run folder (metrics.jsonl, job.log), never from a browser session, so a reloaded page still
sees the job. A lock whose process has gone is stale and is cleared on the next read. The lock names the run
and command before the process starts (pid 0) and its pid once started: an app killed in between leaves a
trainer that the lock still finds, by the run folder it owns (`current_job`). Stop writes the run's
STOP file: the trainer ends cleanly after the current step with a checkpoint, and Resume continues from it.
Each trainer also holds its run folder's own OS lock (`train.run_lock`) while it lives, wherever it was started
(here or the command line), and so does an ensemble build (`ensemble.build_ensemble`): while it is held the run
reads as running and is neither started nor resumed again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dermai.config import DataConfig, RunConfig, check_run_config, run_config_from_dict, to_dict, train_config_from_dict
from dermai.data import (
    DataError,
    Dataset,
    find_metadata_csv,
    read_metadata,
    resolve_data_root,
    same_file,
    windows_name_problem,
    write_json_atomic,
)
from dermai.ensemble import EnsembleError, ensemble_meta, image_sizes_arg, member_reference
from dermai.losses import check_mask_weight
from dermai.preprocess import InputSize, meta_input_size, size_label
from dermai.train import (
    JOB_LOG,
    OWNER_FILE,
    STOP_FILE,
    STOPPED_UNTRAINED,
    foreign_entry,
    job_event_line,
    read_metrics,
    run_lock_holder,
    split_dataset,
    split_mismatch,
    weights_split_problem,
)
from dermai.weights import DEFAULT_WEIGHTS, WeightsError, read_meta, resolve_weights_path

LOCK_NAME = ".job.json"
LOG_NAME = JOB_LOG
EXTERNAL_QUIET_S = 300  # no end record, no lock held, written this recently: a trainer without the lock (older)
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # one plain folder name: no "..", no "/", not hidden
RUN_NAME_MAX = 100
REPO_ROOT = Path(__file__).resolve().parent.parent
STAGE_COMMANDS: dict[str, str] = {"both": "train", "pretrain": "pretrain", "finetune": "finetune"}
# Form field → CLI flag; None values are left out so the CLI's defaults (the paper's) apply.
OPTION_FLAGS: dict[str, str] = {
    "data": "--data",
    "pretrain_epochs": "--pretrain-epochs",
    "finetune_epochs": "--finetune-epochs",
    "batch_size": "--batch-size",
    "image_size": "--image-size",
    "image_width": "--image-width",
    "label_fraction": "--label-fraction",
    "lambda_ntxent": "--lambda",
    "temperature": "--temperature",
    "lr": "--lr",
    "weight_decay": "--weight-decay",
    "warmup_epochs": "--warmup-epochs",
    "label_smoothing": "--label-smoothing",
    "focal_gamma": "--focal-gamma",
    "mask_weight": "--mask-weight",
    "swa_epochs": "--swa-epochs",
    "swa_lr": "--swa-lr",
    "mixup_alpha": "--mixup-alpha",
    "cutmix_alpha": "--cutmix-alpha",
    "distill_from": "--distill-from",
    "distill_weight": "--distill-weight",
    "seed": "--seed",
    "limit": "--limit",
    "init_weights": "--init-weights",
    "train_seed": "--train-seed",
}
BOOL_FLAGS: dict[str, str] = {"reset_classifier": "--reset-classifier"}  # a flag given only when True
LIST_FLAGS: dict[str, str] = {"augment": "--augment", "simclr_augment": "--simclr-augment"}  # once per item
# A run writes ~0.2 GB (model, best and last checkpoints); its first epoch at a new image size also writes the
# pixel cache (0.1-1.5 GB). Below this much free space a job is refused rather than left to die mid-way.
MIN_FREE_BYTES = 1 << 30
DELETING_PREFIX = ".deleting-"  # a run folder being deleted: hidden, so a deletion cut short lists no half-run
STARTING = "(starting)"  # run_dir of a job whose lock is taken but whose process is not yet known
START_GRACE_S = 10  # a lock naming no live process reads as a starting job this long after it was written
ENSEMBLE_STAGE = "ensemble"  # a job that combines finished runs (`python -m dermai ensemble`); it never trains
_CHILDREN: dict[int, subprocess.Popen] = {}  # processes started here, polled so they never linger as zombies
# The app's own lines in a run's job.log: when each job it launched started, when the user cancelled one, and
# (the trainer's) when a STOP ended a new run before it trained. `run_status` reads them: a job launched after the
# run's last status record that wrote none of its own failed or was killed (a resume that died), and a cancelled
# job, or one stopped before it trained, was stopped by the user, not a failure.
STARTED, CANCELLED = "started", "cancelled by the user"
JOB_EVENT = re.compile(
    rf"^--- dermai app: job ({STARTED}|{CANCELLED}|{STOPPED_UNTRAINED}) .* \(t=(\d+(?:\.\d+)?)\) ---$"
)
LEGACY_LOG_GRACE_S = 60  # a log without those lines (an older version's) this much newer than the end: a later job


class JobError(RuntimeError):
    """A job that cannot be started, stopped or resumed; the message says why."""


@dataclass
class Job:
    """The running job, as recorded in the lock file."""

    pid: int
    run_dir: str
    stage: str
    command: list[str]
    started: float

    @property
    def name(self) -> str:
        return Path(self.run_dir).name


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


def runs_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The runs folder: explicit > $DERMAI_RUNS > ./runs (relative to the repository)."""
    if explicit:
        return Path(explicit)
    if os.environ.get("DERMAI_RUNS"):
        return Path(os.environ["DERMAI_RUNS"])
    return REPO_ROOT / "runs"


def _pid_alive(pid: int, command: Sequence[str] | None = None) -> bool:
    """Whether a process runs under pid (a zombie counts as dead; our own children are reaped). With the job's
    recorded `command`, the process must be running exactly it: a pid reused by another process, even another
    `dermai` command, is not our job (Cancel would otherwise signal that process's group)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        _CHILDREN.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return True  # no /proc: trust os.kill
    if state in ("Z", "X"):
        return False
    if command:
        return cmdline.split(b"\0")[:-1] == [os.fsencode(part) for part in command]
    return b"dermai" in cmdline  # a reused pid is not our job


def _read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's record; None when there is none ({} while unreadable, e.g. half-written). A runs folder
    that is a file, or lies below one, holds no lock: NotADirectoryError is "none", not a starting job."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (json.JSONDecodeError, OSError):
        return {}


def current_job(runs: str | os.PathLike[str] | None = None) -> Job | None:
    """The job holding the lock, or None; a stale lock (its process gone) is removed. A lock that names its run
    but no pid yet is the job of the trainer owning that run folder (`_started_trainer`), else a starting job
    for START_GRACE_S, then stale: its starter died before starting a trainer, or before recording one that
    has ended since."""
    path = runs_dir(runs) / LOCK_NAME
    record = _read_lock(path)
    if record is None:
        return None
    try:
        job = Job(
            int(record["pid"]),
            str(record["run_dir"]),
            str(record["stage"]),
            list(record["command"]),
            float(record["started"]),
        )
    except (KeyError, TypeError, ValueError):
        job = None
    if job is not None and job.pid > 0 and _pid_alive(job.pid, job.command):
        return job
    if job is not None and job.pid <= 0 and (started := _started_trainer(path, record, job)) is not None:
        return started
    try:
        if (record == {} or (job is not None and job.pid <= 0)) and time.time() - path.stat().st_mtime < START_GRACE_S:
            return Job(-1, STARTING, "", [], path.stat().st_mtime)  # its process is not started (or known) yet
    except FileNotFoundError:
        return None
    if _read_lock(path) == record:  # still the stale record, not a lock another caller just took
        path.unlink(missing_ok=True)
    return None


def _started_trainer(path: Path, record: dict[str, Any], job: Job) -> Job | None:
    """The job of a lock written before its process started (pid 0), when the process holding its run folder's
    lock (`run_lock_holder`, a trainer's pid) runs the lock's command: its starter (the app) was killed before
    recording the pid. The pid is recorded now, so that the page shows, stops and cancels it as any job."""
    holder = run_lock_holder(job.run_dir) or ""
    pid = int(holder.removeprefix("pid ")) if holder.removeprefix("pid ").isdigit() else 0
    if pid <= 0 or not _pid_alive(pid, job.command):
        return None
    started = dataclasses.replace(job, pid=pid)
    if _read_lock(path) == record:  # still that record, not a lock another caller just took
        with contextlib.suppress(OSError):  # unrecorded (a read-only runs folder), it is found again next read
            write_json_atomic(path, asdict(started))
    return started


def build_command(stage: str, run_dir: Path, options: Mapping[str, Any], resume: bool = False) -> list[str]:
    """The `python -m dermai …` argument list for a stage and form options."""
    if stage not in STAGE_COMMANDS:
        raise JobError(f"unknown stage {stage!r} (pretrain, finetune or both)")
    command = [sys.executable, "-m", "dermai", STAGE_COMMANDS[stage], "--out", str(run_dir), "--quiet"]
    if resume:
        return [*command, "--resume"]
    for key, value in options.items():
        if key in BOOL_FLAGS:
            command += [BOOL_FLAGS[key]] if value else []
        elif key in LIST_FLAGS:
            command += [part for item in value or [] for part in (LIST_FLAGS[key], str(item))]
        elif key not in OPTION_FLAGS:
            raise JobError(f"unknown training option {key!r}")
        elif value is not None and value != "":
            command += [OPTION_FLAGS[key], str(value)]
    return command


def _describe(job: Job) -> str:
    if job.pid <= 0:
        return "a job that is starting now"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.started))
    return f"run {job.name!r} ({job.stage}, pid {job.pid}, started {since})"


def command_line_runs(runs: str | os.PathLike[str] | None = None) -> list[tuple[Path, str]]:
    """Run folders of the runs folder that a trainer owns but no job of this app started (`python -m dermai`
    from a terminal), each with its holder ("pid N"), by name. They share this machine's CPU as a job does."""
    root = runs_dir(runs)
    job = current_job(root)
    ours = Path(job.run_dir).resolve() if job is not None and job.pid > 0 else None
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # no runs folder yet, or one that is a file: no runs at all
        return []
    found = []
    for folder in folders:
        holder = run_lock_holder(folder)
        if holder is not None and folder.resolve() != ours:
            found.append((folder, holder))
    return found


def _refuse_if_running(runs: Path) -> None:
    """A JobError naming the job that holds the runs folder's lock, or else a command-line run training in the
    runs folder, if there is one: one training process at a time on this machine."""
    running = current_job(runs)
    if running is not None:
        raise JobError(f"a training job is already running: {_describe(running)}")
    outside = command_line_runs(runs)
    if outside:
        folder, holder = outside[0]
        raise JobError(
            f"run {folder.name!r} is training from the command line ({holder}, {folder}); one job at a time on "
            "this machine: stop it or wait for it to end"
        )


def _launch(stage: str, run_dir: Path, command: list[str], runs: Path) -> Job:
    """Take the lock, start the process, record it; a second caller gets a JobError naming the job."""
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file, below a file, read-only: say which folder, not just an errno
        raise JobError(f"runs folder {runs}: cannot be created or used ({exc.strerror or exc})") from None
    check_free_space(runs)
    _refuse_if_running(runs)  # resume_job's way in, and a command-line run started since the caller's check
    lock = runs / LOCK_NAME
    for _attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            _refuse_if_running(runs)
    else:
        raise JobError(f"{lock}: cannot take the job lock")
    try:
        _write_starting(fd, lock, Job(0, str(run_dir), stage, command, time.time()))
        run_dir.mkdir(parents=True, exist_ok=True)
        # A STOP left from an earlier run would end this one before it trains; one written from now on is
        # honoured (the trainer no longer clears it when it starts).
        (run_dir / STOP_FILE).unlink(missing_ok=True)
        with open(run_dir / LOG_NAME, "ab") as log:
            log.write(job_event_line(STARTED))
            log.flush()  # before the process's own output
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
    except BaseException:
        lock.unlink(missing_ok=True)
        raise
    _CHILDREN[process.pid] = process
    job = Job(process.pid, str(run_dir), stage, command, time.time())
    try:
        write_json_atomic(lock, asdict(job))
    except BaseException as exc:  # a full disk, a Ctrl-C: a trainer the lock does not name cannot be tracked
        _stop_unrecorded(process, run_dir)
        lock.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            reason = exc.strerror or exc
            raise JobError(f"{lock}: cannot record the job ({reason}); its trainer was stopped at its start") from None
        raise
    return job


def _write_starting(fd: int, lock: Path, job: Job) -> None:
    """Fill the lock just taken (`fd`, closed here) with the job before its process starts (pid 0): an app
    killed before recording the pid leaves a lock that names the run, whose trainer `current_job` then finds.
    A write cut short reads as unfilled, a starting job for START_GRACE_S."""
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(job), handle, indent=2)
    except OSError as exc:
        raise JobError(f"{lock}: cannot record the job ({exc.strerror or exc})") from None


def _stop_unrecorded(process: subprocess.Popen, run_dir: Path) -> None:
    """End a trainer just started whose job could not be recorded in the lock: left running, it would train
    with no page able to show, stop or cancel it, and hold the machine. SIGTERM to its group (the trainer's
    clean-up runs), SIGKILL if it has not ended within seconds; the run's log says why it ended."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    _CHILDREN.pop(process.pid, None)
    with contextlib.suppress(OSError), open(run_dir / LOG_NAME, "ab") as log:
        log.write(b"error: the app could not record this job in its lock file; the run was stopped at its start\n")


def start_job(
    stage: str, options: Mapping[str, Any], runs: str | os.PathLike[str] | None = None, name: str | None = None
) -> Job:
    """Start a training run in a new folder under the runs folder (refused while another job runs)."""
    root = runs_dir(runs)
    run_dir = _new_run_dir(root, name or f"{time.strftime('%Y%m%d-%H%M%S')}-{stage}", "run name")
    _refuse_if_running(root)
    try:  # what the trainer would refuse, refused here before a process starts
        check_run_config(form_config(stage, options))
        check_mask_weight(
            float(options.get("mask_weight") or 0),
            float(options.get("mixup_alpha") or 0),
            float(options.get("cutmix_alpha") or 0),
        )
    except ValueError as exc:
        raise JobError(str(exc)) from None
    data_root, metadata = _checked_data_root(options.get("data"))
    options = {**options, "data": str(data_root)}
    _check_read_weights(options, metadata)
    return _launch(stage, run_dir, build_command(stage, run_dir, options), root)


def _checked_data_root(data: Any) -> tuple[Path, pd.DataFrame]:
    """The data folder a new run will read (the given one, else the default the trainer would find) and its
    metadata CSV, read row by row: a folder that is missing or has no readable metadata is refused now, naming
    the file and row, not in a run that fails a minute later. The trainer is given this folder explicitly; the
    metadata goes on to the weights' split check (`_run_split`), which would otherwise read the CSV again."""
    try:
        root = resolve_data_root(str(data) if data else None)
        metadata = read_metadata(find_metadata_csv(root))
    except DataError as exc:
        raise JobError(f"data folder: {exc}") from None
    except OSError as exc:  # a folder that cannot be listed or a CSV that cannot be opened
        raise JobError(f"data folder: {exc.filename or data}: cannot be read ({exc.strerror or exc})") from None
    return root, metadata


def form_config(stage: str, options: Mapping[str, Any]) -> RunConfig:
    """The run configuration a form's options give (the training fields only; the CLI's defaults elsewhere),
    so its numbers can be checked before a process starts."""
    cfg = RunConfig(stage=stage)
    train_fields = {f.name for f in dataclasses.fields(cfg.train)}
    given = {key: value for key, value in options.items() if value is not None and value != "" and key in train_fields}
    try:  # each value of its field's type, as a saved config.json is read: 2.7 epochs is refused, not cut to 2
        cfg.train = train_config_from_dict({**to_dict(cfg.train), **given})
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix("config field ")) from None
    return cfg


def start_ensemble_job(
    members: list[str],
    runs: str | os.PathLike[str] | None = None,
    name: str | None = None,
    data: str | None = None,
    image_sizes: list[InputSize] | None = None,
) -> Job:
    """Combine finished fine-tuned runs' weights into an ensemble run, calibrated on validation, as a job
    (it scores the validation and training images, minutes on a CPU). Members are checked here first,
    so a mismatch is refused with a message naming the file before any process starts (`ensemble_meta`, the
    check the ensemble command itself makes). `image_sizes`: each member's input size (default: its own)."""
    root = runs_dir(runs)
    if name:
        check_run_name(name, "ensemble name")
    _refuse_if_running(root)
    if len(members) < 2:
        raise JobError("choose at least two runs to combine")
    try:
        ensemble_meta([read_meta(m) for m in members], members, "", image_sizes)
    except (WeightsError, EnsembleError) as exc:
        raise JobError(str(exc)) from None
    run_dir = _new_run_dir(root, name or f"{time.strftime('%Y%m%d-%H%M%S')}-{ENSEMBLE_STAGE}", "ensemble name")
    command = [sys.executable, "-m", "dermai", ENSEMBLE_STAGE, *members, "--out", str(run_dir)]
    command += ["--data", data] if data else []
    command += ["--image-sizes", image_sizes_arg(image_sizes)] if image_sizes else []
    return _launch(ENSEMBLE_STAGE, run_dir, command, root)


def check_run_name(name: str, field: str = "run name") -> str:
    """`name` if it is one plain folder name; else a JobError naming `field`. A name such as "..", "/abs" or
    "grp/run1" would write outside the runs folder, or a nested run the Runs table never lists; "CON" or "a."
    could not be copied to Windows as it is (`data.windows_name_problem`)."""
    if not (RUN_NAME.fullmatch(name) and len(name) <= RUN_NAME_MAX):
        raise JobError(
            f"{field} {name!r}: use letters, digits, '.', '_' and '-' only (not first), at most "
            f"{RUN_NAME_MAX} characters"
        )
    problem = windows_name_problem(name)
    if problem is not None:
        raise JobError(f"{field} {name!r}: {problem}")
    return name


def _new_run_dir(root: Path, name: str, field: str = "run name") -> Path:
    """A folder for a new run directly under `root`, refused when a run (or an ensemble) lives there already, a
    trainer still owns it (one from the command line may not have written its config yet) or it holds any other
    file (`train.foreign_entry`: the trainer would refuse it)."""
    run_dir = root / check_run_name(name, field)
    if run_dir.resolve().parent != root.resolve():  # e.g. a link to a folder elsewhere
        raise JobError(f"{field} {name!r}: {run_dir} is not a folder of the runs folder {root}")
    if any((run_dir / f).exists() for f in ("config.json", "metrics.jsonl", "model.safetensors")):
        raise JobError(f"{run_dir} holds a run already; pick another name or resume it")
    _refuse_if_owned(run_dir)
    entry = foreign_entry(run_dir)  # what the trainer would refuse: files a new run would write over
    if entry is not None:
        raise JobError(f"{entry}: exists already; {run_dir} is not a new run folder, so pick another name")
    return run_dir


def _refuse_if_owned(run_dir: Path) -> None:
    """A JobError naming the run when a trainer process holds its folder's lock."""
    holder = run_lock_holder(run_dir)
    if holder is not None:
        raise JobError(f"run {run_dir.name!r} is still running ({holder}, {run_dir}); stop it or wait for it to end")


def _read_run_config(path: Path) -> dict[str, Any]:
    """A run's config.json as a JSON object; a JobError naming the file when it is unreadable or damaged."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bytes that are not UTF-8
        raise JobError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(saved, dict):
        raise JobError(f"{path}: not a run configuration (a JSON {type(saved).__name__}, not an object)")
    return saved


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


def _weights_meta(path: str, role: str = "") -> dict[str, Any]:
    """The JSON of weights a run will read, or a JobError naming them (`role`, e.g. "teacher ", says which)."""
    try:
        return read_meta(path)
    except WeightsError as exc:
        raise JobError(f"{role.strip()}: {exc}" if role else str(exc)) from None


# Form option → DataConfig field: what decides the split a new run draws (the CLI's defaults elsewhere).
DATA_OPTIONS: dict[str, str] = {
    "data": "data_dir",
    "seed": "seed",
    "limit": "limit",
    "label_fraction": "label_fraction",
}


def form_data_config(options: Mapping[str, Any]) -> DataConfig:
    """The data settings a form's options give the trainer (`--data`, `--seed`, `--limit`, `--label-fraction`;
    no manifest and the default validation and test shares, as the CLI sets them), each value of its field's
    type: the split the new run will draw, so weights can be checked against it before a process starts."""
    given = {DATA_OPTIONS[k]: v for k, v in options.items() if k in DATA_OPTIONS and v is not None and v != ""}
    try:
        return run_config_from_dict({"data": given}).data
    except ValueError as exc:
        raise JobError(str(exc).removeprefix("config field ")) from None


def _check_read_weights(options: Mapping[str, Any], metadata: pd.DataFrame | None = None) -> None:
    """Refuse, before launching, start-from (`init_weights`) or teacher (`distill_from`) weights the trainer
    would refuse: unreadable, an ensemble to start from, or trained on another split than this run's
    (`metadata`: the data folder's CSV as `_checked_data_root` read it)."""
    read: list[tuple[str, dict[str, Any], str]] = []  # (path, weights JSON, role for the message)
    if options.get("init_weights"):
        path = str(options["init_weights"])
        meta = _weights_meta(path)
        if meta.get("ensemble"):
            raise JobError(f"{path}: an ensemble cannot start a run; start from one of its members")
        read.append((path, meta, ""))
    if options.get("distill_from"):
        path = str(options["distill_from"])
        read.append((path, _weights_meta(path, "teacher "), "teacher "))
    if read:
        _refuse_other_split(read, form_data_config(options), metadata)


def _refuse_other_split(
    read: Sequence[tuple[str, dict[str, Any], str]], data: DataConfig, metadata: pd.DataFrame | None = None
) -> None:
    """A JobError when weights the run will read were trained on another split than the one `data` draws:
    they have seen this run's validation or test images, and the trainer would refuse them a minute later.
    Weights that record checksums of their data (`manifest_sha256`, `split_sha256`) are judged as the trainer
    judges them (`weights_split_problem`), on the split drawn here as the trainer draws it (`split_dataset`:
    the metadata and file names, no image decoded); others by their recorded split settings alone."""
    recorded = any(isinstance(meta.get(k), str) for _, meta, _ in read for k in ("manifest_sha256", "split_sha256"))
    dataset = _run_split(data, metadata) if recorded else None
    for path, meta, role in read:
        if dataset is None:
            mismatch = split_mismatch(meta, to_dict(data))
        else:
            mismatch = weights_split_problem(meta, data, dataset)
        if mismatch:
            raise JobError(f"{role}{path}: {mismatch}")


def _run_split(data: DataConfig, metadata: pd.DataFrame | None = None) -> Dataset:
    """The split a new run will draw (`train.split_dataset`, from `metadata` when read already), or a JobError
    naming the data folder when it cannot be drawn: the trainer would fail on it the same way, after a minute
    of starting."""
    try:
        return split_dataset(data, metadata)
    except DataError as exc:
        raise JobError(f"data folder: {exc}") from None
    except OSError as exc:  # a folder that cannot be listed, a CSV that cannot be opened
        where = exc.filename or data.data_dir
        raise JobError(f"data folder: {where}: cannot be read ({exc.strerror or exc})") from None


def resume_job(run_dir: str | os.PathLike[str], runs: str | os.PathLike[str] | None = None) -> Job:
    """Continue a stopped run from its last checkpoint, in the same folder; refused while a trainer still owns
    the folder (a command-line run quiet for a while reads as interrupted only by its metrics' age)."""
    run = Path(run_dir)
    _refuse_if_owned(run)
    config_path = run / "config.json"
    if not resumable(run):
        raise JobError(f"{run}: nothing to resume (no checkpoint)")
    config = _read_run_config(config_path).get("config", {})
    stage = config.get("stage", "both") if isinstance(config, dict) else None
    if stage not in STAGE_COMMANDS:
        raise JobError(f"{config_path}: config.stage is {stage!r}, not pretrain, finetune or both")
    _refuse_damaged_checkpoint(run)
    teacher = _teacher_needed(config)
    if teacher is not None and not _keeps_teacher(run):
        _refuse_missing_teacher(teacher, config_path)
    return _launch(stage, run, build_command(stage, run, {}, resume=True), runs_dir(runs))


def resumable(run_dir: str | os.PathLike[str]) -> bool:
    """Whether a run folder holds what Resume continues from: its config.json and last checkpoint (a job
    cancelled before it trained holds neither)."""
    run = Path(run_dir)
    return (run / "checkpoints" / "last.pt").exists() and (run / "config.json").exists()


def _refuse_damaged_checkpoint(run: Path) -> None:
    """A JobError, in the trainer's words, when the run's checkpoint cannot be read: the resumed trainer would
    fail on it at once (`train.read_checkpoint`, memory-mapped: only its index is read; imported here as it
    loads torch)."""
    from dermai.train import TrainingError, read_checkpoint

    try:
        read_checkpoint(run / "checkpoints" / "last.pt", mmap=True)
    except (TrainingError, OSError) as exc:
        raise JobError(str(exc)) from None


def _keeps_teacher(run: Path) -> bool:
    """Whether the run's checkpoint stores its teacher's probabilities, so that its resume needs no teacher file
    (`train.checkpoint_keeps_teacher`; imported here as it loads torch)."""
    from dermai.train import checkpoint_keeps_teacher

    return checkpoint_keeps_teacher(run)


def _teacher_needed(config: Mapping[str, Any]) -> str | None:
    """The teacher a run's saved config learns from (train.distill_from with a share > 0, in a run that
    fine-tunes): the trainer scores the training images with it when the run starts, and again on a resume
    whose checkpoint predates stored teacher probabilities (`_keeps_teacher`)."""
    train = config.get("train")
    if config.get("stage") == "pretrain" or not isinstance(train, dict):
        return None
    teacher, share = train.get("distill_from"), train.get("distill_weight")
    if not isinstance(teacher, str) or not teacher or not isinstance(share, int | float) or share <= 0:
        return None
    return teacher


def recorded_weights(text: str) -> Path:
    """A weights path as a run's config records it (`FILE#K` names member K of FILE), as the trainer saw it:
    jobs run from the repository folder, so a relative path is from there."""
    return member_reference(_from_repo(text))[0]


def _from_repo(text: str) -> Path:
    """A recorded path, relative ones taken from the repository folder (where the app's jobs run)."""
    path = Path(text)
    return path if path.is_absolute() else REPO_ROOT / path


def _refuse_missing_teacher(teacher: str, config_path: Path) -> None:
    """A JobError naming the teacher's file when it is gone: the resumed trainer would fail on it at once."""
    try:
        resolve_weights_path(recorded_weights(teacher))
    except WeightsError as exc:
        raise JobError(
            f"{config_path}: this run learns from the teacher {teacher} (train.distill_from), which cannot be read "
            f"({exc}); it cannot resume without it: restore that file, or start a new run"
        ) from None


def stop_job(run_dir: str | os.PathLike[str]) -> Path:
    """Ask a run to stop: it checkpoints after the current step and ends with status "stopped"; while it still
    prepares its data (`train.Trainer._prepare`), it ends before training starts, with nothing trained. A file,
    not a signal: it reaches a trainer started from the command line too, which the app must not kill."""
    path = Path(run_dir) / STOP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def cancel_job(runs: str | os.PathLike[str] | None = None, run_dir: str | os.PathLike[str] | None = None) -> Job | None:
    """End the running job at once (SIGTERM to its process group): for a job still preparing its data, where
    there is nothing to keep, and for an ensemble job, which has no STOP to honour. With `run_dir`, only when
    the running job is that run's (a page shown a while ago must not end a job started since)."""
    job = current_job(runs)
    if job is None or job.pid <= 0:
        return None
    if run_dir is not None and Path(job.run_dir).resolve() != Path(run_dir).resolve():
        return None
    with contextlib.suppress(OSError), open(Path(job.run_dir) / LOG_NAME, "ab") as log:
        log.write(job_event_line(CANCELLED))  # the run then reads "stopped" (by the user), not "failed"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(job.pid, signal.SIGTERM)
    return job


def _job_events(run: Path) -> list[tuple[str, float]]:
    """The app's own lines in a run's job.log, as (event, time), oldest first; none without a log."""
    try:
        text = (run / LOG_NAME).read_text(errors="replace")
    except OSError:
        return []
    return [(m[1], float(m[2])) for line in text.splitlines() if (m := JOB_EVENT.match(line))]


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


def _since_end(run: Path, records: list[dict[str, Any]], end_index: int | None) -> str | None:
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
    if end_index is None:
        return by_user
    end_time = records[end_index].get("time")
    end_time = end_time if isinstance(end_time, int | float) else None
    launches = [t for event, t in events if event == STARTED]
    if launches and end_time is not None and end_time < launches[-1]:
        return by_user or "continued"
    # A finished run is never resumed (the trainer refuses it before taking the lock), so file times after its
    # record prove nothing: a plain `cp -r` of the run stamps its lock and log with the time of the copy.
    finished = records[end_index].get("status") == "finished"
    if taken is not None and end_time is not None and end_time < taken and not finished:
        return by_user or "continued outside"
    if any(r.get("kind") in ("step", "epoch") for r in records[end_index + 1 :]):
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


def run_status(run_dir: str | os.PathLike[str], runs: str | os.PathLike[str] | None = None) -> RunStatus:
    """What a run folder says about itself: running while its job is alive or a trainer holds the folder's
    lock (also one started from the command line); "stopped" when the user cancelled its job (or stopped it before
    it trained); else what its last status record says, unless a later job trained on or was launched, or a
    trainer from the command line took the folder's lock, and wrote no status of its own (a resume that failed
    at its start or part-way): that run is "interrupted", as is one that never wrote one."""
    run = Path(run_dir)
    records = read_metrics(run)
    steps = [r for r in records if r.get("kind") in ("step", "epoch")]
    last = steps[-1] if steps else {}
    end_index = next((i for i in reversed(range(len(records))) if records[i].get("kind") == "status"), None)
    end = records[end_index] if end_index is not None else None
    best = [r["best_val_auroc"] for r in records if r.get("best_val_auroc") is not None]
    metrics_path = run / "metrics.jsonl"
    since_end = _since_end(run, records, end_index)
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
    elif records:
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
        eta_s=running_eta(records) if status == "running" else None,
        best_val_auroc=max(best) if best else (end or {}).get("best_score"),
        weights=weights if weights.exists() else None,
        started=records[0].get("time") if records else None,
        note=_note(run, since_end),
        epochs_done=completed_epochs(records),
    )


def log_tail(run_dir: str | os.PathLike[str], lines: int = 20) -> str:
    """The last lines of a run's job.log (the process's stdout and stderr)."""
    path = Path(run_dir) / LOG_NAME
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


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


def is_listed_run(run: Path) -> bool:
    """Whether `list_runs` lists the folder as a run: a visible folder with a run's config.json, or with a job's
    log (a job that failed before its trainer wrote one). Only such a folder may be deleted as a run: any other
    in the runs folder is someone's own."""
    visible = run.is_dir() and not run.name.startswith(".")
    return visible and ((run / "config.json").exists() or (run / LOG_NAME).exists())


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


# ------------------------------------------------------------------------------------------- disk space


def folder_bytes(path: str | os.PathLike[str]) -> int:
    """The bytes the files below `path` take (links are counted, not followed); 0 for a missing folder."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while we walk
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free bytes on the disk that holds `path`, or would hold it (its nearest existing parent)."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    return shutil.disk_usage(where).free


def check_free_space(runs: Path, need: int = MIN_FREE_BYTES) -> None:
    """A JobError when the runs folder's disk has less than `need` bytes free: a run that fills the disk fails
    mid-way, at a checkpoint or the pixel cache, so it is refused before it starts."""
    free = free_bytes(runs)
    if free < need:
        raise JobError(
            f"only {free / 1e9:.2f} GB free on the disk holding the runs folder {runs}; a run needs at least "
            f"{need / 1e9:.1f} GB (checkpoints, and the pixel cache at a new image size). Delete runs you no "
            "longer need (Training page: choose the run, then Delete), or free space on that disk"
        )


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
