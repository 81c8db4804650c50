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
A run's status, the Runs table and deleting runs live in `run_status`, `run_table` and `run_deletion`, which
build on this module (it imports none of them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dermai.config import DataConfig, RunConfig, check_run_config, run_config_from_dict, to_dict, train_config_from_dict
from dermai.data import DataError, Dataset, find_metadata_csv, read_metadata, resolve_data_root
from dermai.disk_space import free_bytes
from dermai.ensemble import EnsembleError, ensemble_meta, image_sizes_arg, member_reference
from dermai.losses import check_mask_weight
from dermai.preprocess import InputSize
from dermai.safe_write import windows_name_problem, write_json_atomic
from dermai.train import (
    JOB_LOG,
    STOP_FILE,
    STOPPED_UNTRAINED,
    foreign_entry,
    job_event_line,
    run_lock_holder,
    split_dataset,
    split_mismatch,
    weights_split_problem,
)
from dermai.weights import WeightsError, read_meta, resolve_weights_path

LOCK_NAME = ".job.json"
LOG_NAME = JOB_LOG
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
    could not be copied to Windows as it is (`safe_write.windows_name_problem`)."""
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


# ------------------------------------------------------------------------------------------- disk space


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
