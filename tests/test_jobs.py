"""dermai.jobs and the modules that read its runs (run_status, run_table, run_deletion, disk_space): one training
process at a time, live status, clean stop, resume, stale locks, the Runs table, deleting runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from dermai import disk_space, jobs, run_deletion, run_status, run_table
from dermai.cli import main
from dermai.config import DataConfig, RunConfig, to_dict
from dermai.splits import manifest_checksum, split_checksum
from dermai.train import (
    OWNER_FILE,
    STOP_FILE,
    Trainer,
    TrainingError,
    read_metrics,
    run_lock,
    run_lock_holder,
    split_dataset,
)
from tests.conftest import HAM

TINY = {"data": str(HAM), "limit": 64, "image_size": 32, "pretrain_epochs": 1, "finetune_epochs": 1, "batch_size": 16}


def wait_for(condition, timeout: float = 120.0, what: str = "condition") -> None:  # noqa: ANN001
    """Poll `condition()` every 0.2 s until true, or fail naming `what`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_build_command_maps_form_options(tmp_path: Path) -> None:
    command = jobs.build_command("both", tmp_path / "r", {"lambda_ntxent": 0.3, "limit": None, "lr": 1e-3})
    assert command[:4] == [sys.executable, "-m", "dermai", "train"]
    assert "--lambda" in command and "--limit" not in command and command[command.index("--lr") + 1] == "0.001"
    swa = jobs.build_command("finetune", tmp_path, {"swa_epochs": 5, "swa_lr": None, "weight_decay": 0.05})
    assert swa[swa.index("--swa-epochs") + 1] == "5" and "--swa-lr" not in swa  # None: the cosine runs on
    assert swa[swa.index("--weight-decay") + 1] == "0.05"
    assert jobs.build_command("pretrain", tmp_path, {}, resume=True)[-1] == "--resume"
    kd = jobs.build_command("finetune", tmp_path, {"distill_from": "ens/model.safetensors", "distill_weight": 0.5})
    assert kd[kd.index("--distill-from") + 1] == "ens/model.safetensors"
    assert kd[kd.index("--distill-weight") + 1] == "0.5"
    with pytest.raises(jobs.JobError, match="unknown stage"):
        jobs.build_command("distill", tmp_path, {})
    with pytest.raises(jobs.JobError, match="unknown training option"):
        jobs.build_command("both", tmp_path, {"epochs": 3})


def test_stale_lock_is_cleared(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / jobs.LOCK_NAME
    lock.write_text(
        json.dumps(
            {"pid": dead.pid, "run_dir": str(tmp_path / "old"), "stage": "both", "command": [], "started": time.time()}
        )
    )
    assert jobs.current_job(tmp_path) is None
    assert not lock.exists()
    lock.write_text("{not json")
    (tmp_path / jobs.LOCK_NAME).touch()
    assert jobs.current_job(tmp_path) is not None  # a lock being written counts as a starting job for 10 s


def test_a_pid_reused_by_another_dermai_process_is_not_the_job(tmp_path: Path) -> None:
    """The lock names its job's pid and command: after a restart, a pid reused by another process (here one whose
    command line also says dermai) is not the job, so the lock is stale and Cancel cannot signal that process."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # python -m dermai predict"])
    try:
        command = [sys.executable, "-m", "dermai", "train", "--out", str(tmp_path / "old"), "--quiet"]
        record = {"pid": other.pid, "run_dir": str(tmp_path / "old"), "stage": "both", "started": time.time()}
        lock = tmp_path / jobs.LOCK_NAME
        lock.write_text(json.dumps({**record, "command": command}))
        assert jobs.current_job(tmp_path) is None and not lock.exists()
        lock.write_text(json.dumps({**record, "command": other.args}))  # its own command: the job
        assert jobs.current_job(tmp_path).pid == other.pid
    finally:
        other.kill()
        other.wait()


@pytest.mark.slow
def test_job_lifecycle_start_refuse_stop_resume(tmp_path: Path) -> None:
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    runs = tmp_path / "runs"
    job = jobs.start_job("both", TINY, runs, name="tiny")
    run = Path(job.run_dir)
    try:
        assert jobs.current_job(runs).pid == job.pid
        with pytest.raises(jobs.JobError, match="already running: run 'tiny'"):
            jobs.start_job("both", TINY, runs, name="second")
        wait_for(lambda: any(r.get("kind") == "step" for r in read_metrics(run)), what="the first step record")
        status = run_status.run_status(run, runs)
        assert status.status == "running" and status.stage == "pretrain" and 0 < status.progress < 1
        assert jobs.command_line_runs(runs) == []  # the app's own job owns its folder: not a command-line run
        jobs.stop_job(run)
        wait_for(lambda: jobs.current_job(runs) is None, what="the job to end after STOP")
        status = run_status.run_status(run, runs)
        assert status.status == "stopped", run_status.log_tail(run)
        assert (run / "checkpoints" / "last.pt").exists() and status.weights is not None
        table = run_table.list_runs(runs)
        assert table.loc[0, "name"] == "tiny" and table.loc[0, "status"] == "stopped"

        jobs.resume_job(run, runs)
        assert run_status.run_status(run, runs).status == "running"
        wait_for(lambda: jobs.current_job(runs) is None, what="the resumed job to finish")
        assert run_status.run_status(run, runs).status == "finished", run_status.log_tail(run)
    finally:
        jobs.cancel_job(runs)


def test_build_command_passes_flags_only_when_set_and_lists_item_by_item(tmp_path: Path) -> None:
    options = {"init_weights": "w.safetensors", "train_seed": 3, "reset_classifier": True}
    command = jobs.build_command("finetune", tmp_path, options)
    assert command[command.index("--train-seed") + 1] == "3" and "--reset-classifier" in command
    unset = jobs.build_command(
        "finetune", tmp_path, {"train_seed": None, "reset_classifier": False, "augment": None, "simclr_augment": []}
    )
    assert "--train-seed" not in unset and "--reset-classifier" not in unset and "--augment" not in unset
    augmented = jobs.build_command("both", tmp_path, {"augment": ["hair_p=0.3", "crop_scale=0.5,1.0"]})
    assert augmented[-4:] == ["--augment", "hair_p=0.3", "--augment", "crop_scale=0.5,1.0"]


HOLD_LOCK = (  # the trainer's lock protocol (train.run_lock) in a bare process: flock .owner, write the pid, wait
    "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
    "os.write(fd, str(os.getpid()).encode()); print('held', flush=True); sys.stdin.read()"
)


def held(run: Path) -> subprocess.Popen[bytes]:
    """A process holding the run folder's owner lock, as a trainer started from a terminal does."""
    run.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run / OWNER_FILE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout.readline().strip() == b"held"
    return holder


def stopped_run(runs: Path, name: str = "cli-run", quiet_s: float = 3600) -> Path:
    """A run folder as a trainer leaves it mid-way: config, checkpoint, step records last written `quiet_s` ago."""
    run = runs / name
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"model": {}, "stage": "pretrain", "epoch": 0, "batch": 3}, run / "checkpoints" / "last.pt")
    (run / "config.json").write_text(json.dumps({"config": {"stage": "both", "train": {}}}))
    step = {"time": time.time() - quiet_s, "kind": "step", "stage": "pretrain", "global_step": 3, "total_steps": 9}
    (run / "metrics.jsonl").write_text(json.dumps(step) + "\n")
    os.utime(run / "metrics.jsonl", (time.time() - quiet_s, time.time() - quiet_s))
    return run


def test_a_held_run_lock_reads_running_and_refuses_resume_and_start(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = stopped_run(runs)
    assert run_status.run_status(run, runs).status == "interrupted"  # quiet for an hour, no trainer: resumable
    holder = held(run)
    try:
        assert run_status.run_status(run, runs).status == "running"  # however long since it last wrote
        assert run_table.list_runs(runs).loc[0, "status"] == "running"
        with pytest.raises(jobs.JobError, match=f"run 'cli-run' is still running \\(pid {holder.pid}"):
            jobs.resume_job(run, runs)
        assert jobs.current_job(runs) is None and not (run / jobs.LOG_NAME).exists()  # nothing was launched
    finally:
        holder.kill()
        holder.wait()
    assert run_lock_holder(run) is None  # the OS let go when the holder died
    assert run_status.run_status(run, runs).status == "interrupted"
    # killed a moment after its last write: interrupted at once, not "running" until its metrics go quiet
    os.utime(run / "metrics.jsonl")
    assert run_status.run_status(run, runs).status == "interrupted"
    (run / OWNER_FILE).unlink()  # a trainer of a version that took no lock: its recent writes still read running
    assert run_status.run_status(run, runs).status == "running"


def test_a_command_line_run_in_the_runs_folder_holds_the_machine_as_a_job_does(tmp_path: Path) -> None:
    """A `python -m dermai` run from a terminal, training in the runs folder: the app starts, resumes and
    combines nothing beside it (one training process at a time), and says which run and process to wait for."""
    runs = tmp_path / "runs"
    run = stopped_run(runs)
    other = stopped_run(runs, "other")
    assert jobs.command_line_runs(runs) == []
    holder = held(run)
    try:
        assert jobs.command_line_runs(runs) == [(run, f"pid {holder.pid}")]
        refused = re.escape(f"run 'cli-run' is training from the command line (pid {holder.pid}, {run}); one job at")
        with pytest.raises(jobs.JobError, match=refused):
            jobs.start_job("both", TINY, runs, name="new")
        with pytest.raises(jobs.JobError, match=refused):
            jobs.resume_job(other, runs)
        with pytest.raises(jobs.JobError, match=refused):
            jobs.start_ensemble_job([str(run), str(other)], runs)
        assert jobs.current_job(runs) is None and not (runs / "new").exists()
        assert not (other / jobs.LOG_NAME).exists()  # nothing was launched
    finally:
        holder.kill()
        holder.wait()
    assert jobs.command_line_runs(runs) == []  # the OS let go of the lock with the process


def test_start_refuses_a_folder_a_trainer_owns_before_it_wrote_its_config(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with run_lock(runs / "prep"):  # a CLI trainer still preparing its data: no config.json yet
        with pytest.raises(jobs.JobError, match=f"run 'prep' is still running \\(pid {os.getpid()}"):
            jobs.start_job("both", {}, runs, name="prep")
    assert jobs.current_job(runs) is None and not (runs / "prep" / jobs.LOG_NAME).exists()


@pytest.mark.parametrize(
    ("stage", "options", "message"),
    [
        ("both", {"finetune_epochs": 0}, "finetune_epochs must be a whole number ≥ 1 when the stage is both"),
        ("pretrain", {"pretrain_epochs": 0}, "pretrain_epochs must be a whole number ≥ 1 when the stage is pretrain"),
        ("finetune", {"temperature": 0.0}, "temperature"),
        ("both", {"label_smoothing": 1.5}, r"label_smoothing must be in \[0, 1\)"),
        # each value of its field's type: 2.7 epochs was cut to 2 here, then refused by the CLI in a failed run
        ("both", {"pretrain_epochs": 2.7}, "^pretrain_epochs must be a whole number, got 2.7$"),
        ("both", {"lr": [0.001]}, r"^lr must be a number, got \[0.001\]$"),
    ],
)
def test_start_refuses_settings_the_trainer_would_refuse(
    tmp_path: Path, stage: str, options: dict, message: str
) -> None:
    """The form's numbers are checked as the trainer checks them, before a process (and its log) starts."""
    runs = tmp_path / "runs"
    with pytest.raises(jobs.JobError, match=message):
        jobs.start_job(stage, options, runs, name="bad")
    assert jobs.current_job(runs) is None and not (runs / "bad").exists()
    assert jobs.form_config("pretrain", {"finetune_epochs": 0, "lr": 0.01}).train.lr == 0.01  # stage not run: ok


@pytest.mark.parametrize("where", ["file", "below_file"])
def test_a_runs_folder_that_is_a_file_holds_no_job_and_refuses_plainly(tmp_path: Path, where: str) -> None:
    """The Training page reads the lock on every refresh: a runs folder that is a file (or lies below one)
    is "no job", and starting a run there names the folder instead of an errno."""
    (tmp_path / "afile").write_text("x")
    runs = tmp_path / "afile" if where == "file" else tmp_path / "afile" / "runs"
    assert jobs.current_job(runs) is None
    with pytest.raises(jobs.JobError, match=f"runs folder {runs}: cannot be created or used"):
        jobs.start_job("finetune", {"finetune_epochs": 1}, runs, name="x")


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_start_refuses_a_data_folder_it_cannot_read(tmp_path: Path, folder: str) -> None:
    """A data folder that is missing or holds no metadata CSV is refused before a process starts (not a run
    that fails a minute later)."""
    data = tmp_path / folder
    if folder == "empty":
        data.mkdir()
    runs = tmp_path / "runs"
    with pytest.raises(jobs.JobError, match="data folder: .*(no data folder found|no metadata CSV)"):
        jobs.start_job("finetune", {"data": str(data), "finetune_epochs": 1}, runs, name="x")
    assert jobs.current_job(runs) is None and not (runs / "x").exists()


def harmless(seconds: float) -> list[str]:
    """A command that stands in for the trainer: it lives `seconds` and touches nothing."""
    return [sys.executable, "-c", f"import time; time.sleep({seconds})"]


def test_resume_clears_a_stale_stop_before_launching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    run = stopped_run(runs, "stopped")
    (run / STOP_FILE).touch()  # left by the Stop that ended it: the resumed run must not stop at its first step
    launched = []
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: launched.append(args) or harmless(0))
    job = jobs.resume_job(run, runs)
    assert launched[0][:2] == ("both", run) and not (run / STOP_FILE).exists()
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the stand-in job to end")
    assert job.run_dir == str(run)


def test_a_job_that_fails_before_its_trainer_writes_a_config_is_a_failed_row_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    error = "error: cannot read the data folder /nowhere: no metadata CSV"
    failing = [sys.executable, "-c", f"import sys, time; time.sleep(1); print('loading'); sys.exit({error!r})"]
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: failing)
    job = jobs.start_job("both", {"image_size": 64}, runs, name="early")
    table = run_table.list_runs(runs).set_index("name")
    assert table.loc["early", "status"] == "running"  # listed from its start, not only once it wrote a config
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the failing job to end")
    row = run_table.list_runs(runs).set_index("name").loc["early"]
    assert row["status"] == "failed" and row["problem"] == error and row["path"] == job.run_dir
    assert "problem" in run_table.shown_run_columns(run_table.list_runs(runs))
    run_deletion.delete_run(job.run_dir, runs)  # and it can be cleared away like any run
    assert run_table.list_runs(runs).empty


@pytest.mark.parametrize("name", [".", "..", "../x", "/abs", "grp/run1", ".hidden", "-x", "a b", "x" * 101])
def test_run_and_ensemble_names_must_be_one_plain_folder(tmp_path: Path, name: str) -> None:
    runs = tmp_path / "runs"
    with pytest.raises(jobs.JobError, match=r"^run name .*: use letters, digits, '\.', '_' and '-' only"):
        jobs.start_job("both", {}, runs, name=name)
    with pytest.raises(jobs.JobError, match=r"^ensemble name .*: use letters, digits"):
        jobs.start_ensemble_job(["a", "b"], runs, name=name)
    assert not tmp_path.joinpath("x").exists() and not Path("/abs").exists() and jobs.current_job(runs) is None
    assert not runs.exists() or list(runs.iterdir()) == []


def test_a_run_name_that_links_outside_the_runs_folder_is_refused(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(jobs.JobError, match="run name 'elsewhere': .* is not a folder of the runs folder"):
        jobs.start_job("both", {}, runs, name="elsewhere")
    assert jobs.check_run_name("run_1.v2-b") == "run_1.v2-b"


def test_damaged_run_folders_are_rows_naming_the_file(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    good = stopped_run(runs, "good")
    with open(good / "metrics.jsonl", "ab") as handle:  # stray lines that are not records are skipped
        handle.write(b'"oops"\n[1, 2]\n\xff\xfe{"kind": 1}\n{"torn": ')
    os.utime(good / "metrics.jsonl", (time.time() - 3600, time.time() - 3600))  # quiet: not running elsewhere
    assert [r["kind"] for r in read_metrics(good)] == ["step"]
    for name, config in (("bytes", b'{"config": \xff}'), ("string", b'"oops"'), ("json", b"{not json")):
        (runs / name).mkdir()
        (runs / name / "config.json").write_bytes(config)
    typed = stopped_run(runs, "typed")
    (typed / "metrics.jsonl").write_text('{"kind": "step", "global_step": 1, "total_steps": "x"}\n')

    table = run_table.list_runs(runs).set_index("name")
    assert table.loc["good", "status"] == "interrupted" and pd.isna(table.loc["good", "problem"])
    for name in ("bytes", "string", "json"):
        assert table.loc[name, "status"] == run_table.UNREADABLE
        assert table.loc[name, "problem"].startswith(f"{runs / name / 'config.json'}: ")
    assert "not a run configuration (a JSON str" in table.loc["string", "problem"]
    assert "utf-8" in table.loc["bytes", "problem"]
    assert table.loc["typed", "problem"].startswith(f"{typed / 'metrics.jsonl'}: cannot be read (TypeError")
    assert run_table.finished_weights(runs) == {}  # the Training page's first call: no traceback either

    for name, what in (("bytes", "cannot be read"), ("string", "not a run configuration")):
        (runs / name / "checkpoints").mkdir()
        (runs / name / "checkpoints" / "last.pt").write_bytes(b"")
        with pytest.raises(jobs.JobError, match=f"^{runs / name / 'config.json'}: {what}"):
            jobs.resume_job(runs / name, runs)
    (typed / "config.json").write_text('{"config": {"stage": "distill"}}')
    with pytest.raises(jobs.JobError, match="config.json: config.stage is 'distill'"):
        jobs.resume_job(typed, runs)
    assert jobs.current_job(runs) is None


def test_cancel_with_a_run_ends_only_that_runs_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: harmless(60))
    job = jobs.start_job("both", {}, runs, name="long")
    try:
        assert jobs.cancel_job(runs, runs / "other") is None
        time.sleep(0.3)
        assert jobs.current_job(runs).pid == job.pid  # still alive
        assert jobs.cancel_job(runs, runs / "long").pid == job.pid
        wait_for(lambda: jobs.current_job(runs) is None, 30, "the cancelled job to end")
    finally:
        jobs.cancel_job(runs)


def test_runs_table_shows_the_epochs_and_input_size_of_the_stages_a_run_trains(tmp_path: Path) -> None:
    train = {"pretrain_epochs": 100, "finetune_epochs": 15, "image_size": 96}
    assert run_table.stage_epochs("finetune", train) == "15"  # not the unused pretraining default
    assert run_table.stage_epochs("pretrain", train) == "100"
    assert run_table.stage_epochs("both", train) == "100 + 15"
    for name, stage in (("ft", "finetune"), ("pre", "pretrain")):
        (tmp_path / name).mkdir()
        saved = {"config": {"stage": stage, "train": {**train, "image_size": 64 if stage == "pretrain" else 96}}}
        (tmp_path / name / "config.json").write_text(json.dumps(saved))
    table = run_table.list_runs(tmp_path).set_index("name")
    assert table.loc["ft", ["epochs", "input"]].tolist() == ["0/15", "96 px"]  # completed/planned: none yet
    assert table.loc["pre", ["epochs", "input"]].tolist() == ["0/100", "64 px"]


def test_delete_run_removes_only_an_idle_run_folder_of_the_runs_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = stopped_run(runs, "old")
    (run / "checkpoints" / "last.pt").write_bytes(b"x" * 5000)
    keep = stopped_run(runs, "keep")
    outside = stopped_run(tmp_path / "elsewhere", "precious")
    (runs / "link").symlink_to(outside, target_is_directory=True)
    for path, message in ((runs / "link", "not a run folder"), (outside, "not a run folder"), (runs, "not a run")):
        with pytest.raises(jobs.JobError, match=message):
            run_deletion.delete_run(path, runs)
    assert (outside / "config.json").exists() and (runs / "link").is_symlink()

    assert run_table.list_runs(runs).set_index("name").loc["old", "disk_gb"] * 1e9 >= 5000
    freed = run_deletion.delete_run(run, runs)
    assert freed >= 5000 and not run.exists()
    assert not list(runs.glob(".*")) and keep.exists()  # nothing hidden left behind, the other run untouched
    assert set(run_table.list_runs(runs)["name"]) == {"link", "keep"}


def test_delete_run_refuses_a_run_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    run = stopped_run(runs)
    holder = held(run)
    try:
        with pytest.raises(jobs.JobError, match="run 'cli-run' is still running"):  # a command-line trainer
            run_deletion.delete_run(run, runs)
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: harmless(60))
    job = jobs.resume_job(run, runs)  # the app's own job
    try:
        with pytest.raises(jobs.JobError, match=f"run 'cli-run' is running .*pid {job.pid}.*stop it first"):
            run_deletion.delete_run(run, runs)
    finally:
        jobs.cancel_job(runs)
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the job to end")
    assert (run / "config.json").exists()
    run_deletion.delete_run(run, runs)
    assert not run.exists()


def test_a_leftover_of_a_deletion_cut_short_is_hidden_and_cleared(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    leftover = stopped_run(runs, run_deletion.DELETING_PREFIX + "half-123")
    other = stopped_run(runs, "other")
    assert run_table.list_runs(runs)["name"].tolist() == ["other"]
    run_deletion.delete_run(other, runs)
    assert not leftover.exists() and run_table.list_runs(runs).empty


def test_jobs_are_refused_on_a_nearly_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    run = stopped_run(runs)
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: harmless(60))
    monkeypatch.setattr(jobs, "free_bytes", lambda path: 300_000_000)
    for start in (lambda: jobs.start_job("both", {}, runs, name="new"), lambda: jobs.resume_job(run, runs)):
        with pytest.raises(jobs.JobError, match=f"only 0.30 GB free on the disk holding the runs folder {runs}"):
            start()
    assert jobs.current_job(runs) is None and not (runs / "new").exists() and not (run / jobs.LOG_NAME).exists()


def test_free_bytes_reads_the_disk_of_the_nearest_existing_folder(tmp_path: Path) -> None:
    assert (
        0 < disk_space.free_bytes(tmp_path / "not" / "yet") == pytest.approx(disk_space.free_bytes(tmp_path), rel=0.01)
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 1234)
    (tmp_path / "a" / "g").symlink_to(tmp_path / "a" / "f")
    assert 1234 <= disk_space.folder_bytes(tmp_path / "a") < 1234 + 200  # the link counts as itself, not its target
    assert disk_space.folder_bytes(tmp_path / "none") == 0


@pytest.mark.slow
def test_a_cancel_while_the_pixel_cache_decodes_leaves_no_half_written_cache(tmp_path: Path) -> None:
    """SIGTERM (the app's Cancel) is handled as Ctrl-C: the half-decoded cache file (up to 1.5 GB) is removed,
    the images not yet decoded are dropped, and the command says it was interrupted."""
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "dermai", "finetune", "--data", str(HAM), "--image-size", "40"]
    trainer = subprocess.Popen(
        [*command, "--out", str(tmp_path / "run"), "--quiet"],
        env={**os.environ, "DERMAI_CACHE": str(cache)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: any(cache.glob(".pixels-*.tmp")), 120, "the pixel cache's decode to start")
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(30) == 130
    finally:
        trainer.kill()
    assert "error: interrupted" in trainer.stderr.read()
    assert not list(cache.iterdir())  # neither a half-written temporary nor a cache file that claims to be whole


def test_cli_lists_and_deletes_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    stopped_run(runs, "old")
    stopped_run(runs, "newer", quiet_s=1800)
    assert main(["runs", "--runs", str(runs)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["name", "status", "stage", "epochs", "input", "best_val_auroc", "started", "disk_gb"]
    assert [line.split()[:2] for line in listed[1:3]] == [["newer", "interrupted"], ["old", "interrupted"]]
    assert listed[-1].startswith(f"2 runs in {runs} take 0.00 GB; ")
    assert main(["runs", "--runs", str(runs), "--delete", "old"]) == 0
    assert capsys.readouterr().out.startswith(f"deleted {runs / 'old'} (0.00 GB freed)")
    assert not (runs / "old").exists() and (runs / "newer").exists()
    for name, message in (("old", "no run named 'old' in the runs folder"), ("..", "run name '..': use letters")):
        assert main(["runs", "--runs", str(runs), "--delete", name]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["runs", "--runs", str(tmp_path / "file")]) == 2
    assert f"runs folder {tmp_path / 'file'}: not a folder" in capsys.readouterr().err


def status_record(run: Path, status: str, at: float) -> None:
    """Append the trainer's end record (what `Trainer._run` writes last) to a run's metrics, stamped `at`."""
    append_record(run, {"time": at, "kind": "status", "status": status, "weights": None, "best_score": None})


def append_record(run: Path, record: dict) -> None:
    """Append a metrics record stamped `record["time"]`, the file last written then (quiet since: no trainer of
    a version without the folder lock is still writing it)."""
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    os.utime(run / "metrics.jsonl", (record["time"], record["time"]))


def test_a_resume_that_dies_part_way_reads_interrupted_not_stopped(tmp_path: Path) -> None:
    """A status record followed by step records: a later job trained on and wrote no end of its own (killed,
    crashed). No process runs it now, so it is interrupted, not still "stopped"."""
    runs = tmp_path / "runs"
    run = stopped_run(runs, "resumed")
    status_record(run, "stopped", time.time() - 3000)
    assert run_status.run_status(run, runs).status == "stopped" and run_status.run_status(run, runs).note is None
    append_record(
        run, {"time": time.time() - 2000, "kind": "step", "stage": "finetune", "global_step": 5, "total_steps": 9}
    )
    status = run_status.run_status(run, runs)
    assert status.status == "interrupted" and status.stage == "finetune"
    assert status.note.startswith("Its last job ended without finishing")
    assert run_table.list_runs(runs).loc[0, "status"] == "interrupted"
    status_record(run, "stopped", time.time() - 1000)  # resumed again, and stopped cleanly this time
    assert run_status.run_status(run, runs).status == "stopped" and run_status.run_status(run, runs).note is None


def test_a_resume_that_fails_at_its_start_reads_interrupted_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume whose trainer dies before its first step (data folder changed, a teacher gone) writes no record
    at all: its launch, after the run's "stopped" record, says a later job ran and failed."""
    runs = tmp_path / "runs"
    run = stopped_run(runs, "halfway")
    status_record(run, "stopped", time.time() - 3000)
    (run / jobs.LOG_NAME).write_text('{"status": "stopped"}\n')  # the first job's last line
    os.utime(run / jobs.LOG_NAME, (time.time() - 2999, time.time() - 2999))
    error = "error: the split rebuilt from /data is not the one this run started on"
    failing = [sys.executable, "-c", f"import sys; sys.exit({error!r})"]
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: failing)
    jobs.resume_job(run, runs)
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the failing resume to end")
    status = run_status.run_status(run, runs)
    assert status.status == "interrupted", run_status.log_tail(run)
    assert "the log below says why" in status.note
    assert run_status.log_tail(run).splitlines()[-1] == error
    assert "--- dermai app: job started " in run_status.log_tail(run)
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: harmless(0))  # the same run resumes again
    jobs.resume_job(run, runs)
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the stand-in resume to end")
    status_record(run, "stopped", time.time())  # …and this job writes its own end
    assert run_status.run_status(run, runs).status == "stopped"


def test_a_command_line_resume_that_dies_before_its_first_step_reads_interrupted(tmp_path: Path) -> None:
    """`python -m dermai … --resume` from a terminal writes no job.log line; until its first record its only trace
    is the folder lock it took (`run_lock` rewrites OWNER_FILE with its pid). Killed or failing before a record,
    it leaves the run's "stopped" record last: the run is interrupted (resumable), not stopped. A cancel from the
    app stands for the job it ended, not for a trainer that took the folder after it."""
    runs = tmp_path / "runs"
    run = stopped_run(runs, "cli")
    status_record(run, "stopped", time.time() - 3000)
    with run_lock(run):  # the trainer that wrote that record
        pass
    os.utime(run / OWNER_FILE, (time.time() - 3600, time.time() - 3600))
    assert (run_status.run_status(run, runs).status, run_status.run_status(run, runs).note) == ("stopped", None)
    with run_lock(run):  # the command-line resume takes the folder…
        assert run_status.run_status(run, runs).status == "running"
    status = run_status.run_status(run, runs)  # …and dies before its first step record
    assert status.status == "interrupted" and status.note.startswith("A trainer started outside the app")
    assert run_table.list_runs(runs).loc[0, "status"] == "interrupted"
    status_record(run, "stopped", time.time())  # resumed again, and stopped cleanly this time
    assert (run_status.run_status(run, runs).status, run_status.run_status(run, runs).note) == ("stopped", None)

    now = time.time()  # the app resumes it; its trainer takes the folder; the user cancels that job
    events = [(jobs.STARTED, now + 1), (jobs.CANCELLED, now + 5)]
    log = "".join(f"--- dermai app: job {event} 2026-01-01 00:00:00 (t={t:.3f}) ---\n" for event, t in events)
    (run / jobs.LOG_NAME).write_text(log)
    os.utime(run / OWNER_FILE, (now + 2, now + 2))
    status = run_status.run_status(run, runs)
    assert status.status == "stopped" and status.note.startswith("Cancelled by the user")
    os.utime(run / OWNER_FILE, (now + 9, now + 9))  # then a command-line resume took it, and died
    assert run_status.run_status(run, runs).status == "interrupted"


def test_a_log_of_an_older_version_newer_than_the_end_record_reads_interrupted(tmp_path: Path) -> None:
    """A job.log without the app's start lines (written by an older version): written well after the last
    status record, it is a later job's, which wrote no end of its own; just after it, the first job's last line."""
    runs = tmp_path / "runs"
    run = stopped_run(runs)
    status_record(run, "stopped", time.time() - 3000)
    (run / jobs.LOG_NAME).write_text("error: no metadata CSV\n")
    os.utime(run / jobs.LOG_NAME, (time.time() - 2999, time.time() - 2999))
    assert run_status.run_status(run, runs).status == "stopped"
    os.utime(run / jobs.LOG_NAME)
    assert run_status.run_status(run, runs).status == "interrupted"


def test_a_job_cancelled_while_preparing_its_data_reads_stopped_by_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancel ends a job that has trained nothing yet: the run reads "stopped" (the user's doing), with no
    problem, not "failed" with the trainer's "error: interrupted"; a resume cancelled so is stopped too."""
    runs = tmp_path / "runs"
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: harmless(60))
    job = jobs.start_job("both", {}, runs, name="early")
    try:
        assert jobs.cancel_job(runs, runs / "early").pid == job.pid
        wait_for(lambda: jobs.current_job(runs) is None, 30, "the cancelled job to end")
    finally:
        jobs.cancel_job(runs)
    row = run_table.list_runs(runs).set_index("name").loc["early"]
    assert row["status"] == "stopped" and pd.isna(row["problem"])
    assert run_status.run_status(runs / "early", runs).note == (
        "Cancelled by the user before it saved a checkpoint: there is nothing to resume."
    )
    assert not jobs.resumable(runs / "early")

    run = stopped_run(runs, "resumed")
    status_record(run, "stopped", time.time() - 3000)
    jobs.resume_job(run, runs)
    jobs.cancel_job(runs, run)
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the cancelled resume to end")
    status = run_status.run_status(run, runs)
    assert status.status == "stopped" and status.note.startswith("Cancelled by the user; Resume continues")
    assert jobs.resumable(run)


def test_start_reads_the_default_data_folder_and_its_metadata_before_launching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No data folder given (the app found none, or uses the default): the folder the trainer would use is
    found and its metadata read first, so a job bound to fail is not launched; a good one is passed on."""
    from tests.conftest import ham_rows, make_folder

    launched = []
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: launched.append(args) or harmless(0))
    runs = tmp_path / "runs"
    monkeypatch.setattr("dermai.data.candidate_roots", lambda explicit=None: [tmp_path / "nowhere"])
    with pytest.raises(jobs.JobError, match=r"^data folder: no data folder found; tried: .*nowhere"):
        jobs.start_job("finetune", {"finetune_epochs": 1}, runs, name="x")
    rows = ham_rows(n_lesions_per_dx=1, images_per_lesion=1)
    rows[2]["dx"] = "melanomaa"
    data = make_folder(tmp_path / "data", rows)
    monkeypatch.setattr("dermai.data.candidate_roots", lambda explicit=None: [Path(explicit or data)])
    with pytest.raises(jobs.JobError, match=re.escape(f"data folder: {data / 'metadata.csv'}, row 4: ")):
        jobs.start_job("finetune", {"finetune_epochs": 1}, runs, name="x")
    assert not launched and jobs.current_job(runs) is None and not (runs / "x").exists()
    rows[2]["dx"] = "mel"
    make_folder(data, rows)
    jobs.start_job("finetune", {"finetune_epochs": 1}, runs, name="x")
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the stand-in job to end")
    assert launched[0][2]["data"] == str(data.resolve())  # the folder checked is the one the trainer reads


def test_dependent_runs_and_a_resume_whose_teacher_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs that start from or learn from a run's weights are found by their config; deleting the teacher of a
    stopped run is then refused at Resume, naming the missing file, before any process starts."""
    runs = tmp_path / "runs"
    base = stopped_run(runs, "base")
    weights = base / "model.safetensors"

    def follower(name: str, train: dict, init: str | None = None) -> Path:
        run = stopped_run(runs, name)
        config = {"config": {"stage": "finetune", "train": train}, "init_weights": init}
        (run / "config.json").write_text(json.dumps(config))
        status_record(run, "stopped", time.time() - 3000)
        return run

    student = follower("student", {"distill_from": str(weights), "distill_weight": 0.5})
    follower("child", {}, init=str(base))  # a folder names its one weights file
    follower("unused", {"distill_from": str(weights), "distill_weight": 0.0})  # never reads the teacher
    follower("other", {"distill_from": str(tmp_path / "elsewhere.safetensors"), "distill_weight": 0.5})
    damaged = follower("typed", {"distill_from": str(weights), "distill_weight": 0.5})
    (damaged / "metrics.jsonl").write_text('{"kind": "step", "global_step": 1, "total_steps": "x"}\n')
    found = run_deletion.dependent_runs(base, runs)
    assert [(d.name, d.role, d.status) for d in found] == [
        ("child", "start", "stopped"),
        ("student", "teacher", "stopped"),
        ("typed", "teacher", run_table.UNREADABLE),  # listed all the same: no traceback in the delete dialog
    ]
    assert "stay valid" in found[0].consequence() and "can no longer resume" in found[1].consequence()
    assert run_deletion.dependent_runs(student, runs) == []

    assert main(["runs", "--runs", str(runs), "--delete", "base"]) == 2  # the student could not resume
    assert base.is_dir()
    assert main(["runs", "--runs", str(runs), "--delete", "base", "--force"]) == 0
    assert not base.exists()
    launched = []
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: launched.append(args) or harmless(0))
    missing = re.escape(f"teacher {weights} (train.distill_from), which cannot be read ({weights}: weights file not")
    with pytest.raises(jobs.JobError, match=f"^{re.escape(str(student / 'config.json'))}: .*{missing}"):
        jobs.resume_job(student, runs)
    assert not launched and not (student / jobs.LOG_NAME).exists()


def test_a_student_whose_checkpoint_keeps_the_teachers_scores_resumes_without_the_teacher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints store the teacher's probabilities (`teacher_probs`): deleting the teacher's run then leaves a
    stopped student resumable, and both the delete dialog's words and Resume say so."""

    runs = tmp_path / "runs"
    base = stopped_run(runs, "base")
    weights = base / "model.safetensors"
    student = stopped_run(runs, "student")
    config = {"config": {"stage": "finetune", "train": {"distill_from": str(weights), "distill_weight": 0.5}}}
    (student / "config.json").write_text(json.dumps(config))
    status_record(student, "stopped", time.time() - 3000)
    checkpoint = {"model": {}, "stage": "finetune", "epoch": 0, "batch": 3, "teacher_probs": torch.zeros(4, 2)}
    torch.save(checkpoint, student / "checkpoints" / "last.pt")
    (found,) = run_deletion.dependent_runs(base, runs)
    assert found.keeps_teacher and not found.breaks and "so it can resume" in found.consequence()

    assert main(["runs", "--runs", str(runs), "--delete", "base"]) == 0  # nothing needs it: no --force
    launched = []
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: launched.append(args) or harmless(0))
    jobs.resume_job(student, runs)
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the stand-in resume to end")
    assert launched and launched[0][1] == student


def test_is_running_and_the_runs_that_can_be_compared(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = stopped_run(runs, "trained")
    assert not run_status.is_running(run, runs)
    with run_lock(run):  # a trainer calibrating its saved weights, say
        assert run_status.is_running(run, runs)
    (runs / "early").mkdir()
    (runs / "early" / jobs.LOG_NAME).write_text("error: no metadata CSV\n")  # failed before writing a config
    (runs / "ens").mkdir()
    (runs / "ens" / "config.json").write_text(json.dumps({"members": ["a", "b"]}))
    (runs / "bad").mkdir()
    (runs / "bad" / "config.json").write_text("{not json")
    table = run_table.list_runs(runs)
    assert set(table["name"]) == {"trained", "early", "ens", "bad"}
    assert run_table.comparable_runs(table)["name"].tolist() == ["trained"]


def recorded_weights(folder: Path, data: DataConfig) -> Path:
    """Weights as a fine-tuning run on `data` saves them, as far as the app reads them before launching: the JSON
    (its config and its split's checksums) beside a placeholder tensor file."""
    dataset = split_dataset(data)
    meta = {
        "classes": list(dataset.classes),
        "stages": ["finetune"],
        "config": to_dict(RunConfig(stage="finetune", data=data)),
        "manifest_sha256": manifest_checksum(dataset),
        "split_sha256": split_checksum(dataset),
    }
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps(meta))
    (folder / "model.safetensors").write_bytes(b"")
    return folder / "model.safetensors"


def test_start_refuses_weights_whose_recorded_split_sides_differ_before_launching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-from or teacher weights of the same split settings but another data folder (one image fewer) put
    images on other sides (`split_sha256`): the trainer refuses them once it has read the data, so the app draws
    the run's split as the trainer will (metadata only) and refuses them first, in the trainer's words. Weights
    of this folder's split pass, at another label fraction too; weights recording no checksum are judged by
    their split settings, as the trainer judges them."""
    from tests.conftest import ham_rows, make_folder

    rows = ham_rows()
    data = make_folder(tmp_path / "data", rows)
    foreign = recorded_weights(
        tmp_path / "foreign", DataConfig(data_dir=str(make_folder(tmp_path / "other", rows[1:])))
    )
    same = recorded_weights(tmp_path / "same", DataConfig(data_dir=str(data)))
    launched = []
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: launched.append(args) or harmless(0))
    runs = tmp_path / "runs"
    options = {"data": str(data), "finetune_epochs": 1}

    with pytest.raises(jobs.JobError) as refused:
        jobs.start_job("finetune", {**options, "init_weights": str(foreign)}, runs, name="x")
    trainer = Trainer(
        RunConfig(stage="finetune", data=DataConfig(data_dir=str(data))), tmp_path / "t", init_weights=str(foreign)
    )
    trainer.dataset = split_dataset(trainer.cfg.data)
    with pytest.raises(TrainingError) as trained:
        trainer._check_same_split(json.loads(foreign.with_suffix(".json").read_text()))
    assert str(refused.value) == str(trained.value)
    assert "the same split settings, but its images are not on the same sides" in str(refused.value)
    teacher = {**options, "distill_from": str(foreign), "distill_weight": 0.5}
    with pytest.raises(jobs.JobError, match=f"^teacher {re.escape(str(foreign))}: trained on another split"):
        jobs.start_job("finetune", teacher, runs, name="x")
    assert not launched and jobs.current_job(runs) is None and not (runs / "x").exists()

    jobs.start_job("finetune", {**options, "init_weights": str(same), "label_fraction": 0.5}, runs, name="x")
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the stand-in job to end")
    meta = json.loads(foreign.with_suffix(".json").read_text())
    for key in ("manifest_sha256", "split_sha256"):  # weights from before the checksums: their settings agree
        del meta[key]
    foreign.with_suffix(".json").write_text(json.dumps(meta))
    jobs.start_job("finetune", {**options, "distill_from": str(foreign), "distill_weight": 0.5}, runs, name="y")
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the stand-in job to end")
    assert [args[1].name for args in launched] == ["x", "y"]
