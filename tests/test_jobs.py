"""dermai.jobs: one training process at a time, live status, clean stop, resume, stale locks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dermai import jobs
from dermai.train import read_metrics
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
        status = jobs.run_status(run, runs)
        assert status.status == "running" and status.stage == "pretrain" and 0 < status.progress < 1
        jobs.stop_job(run)
        wait_for(lambda: jobs.current_job(runs) is None, what="the job to end after STOP")
        status = jobs.run_status(run, runs)
        assert status.status == "stopped", jobs.log_tail(run)
        assert (run / "checkpoints" / "last.pt").exists() and status.weights is not None
        table = jobs.list_runs(runs)
        assert table.loc[0, "name"] == "tiny" and table.loc[0, "status"] == "stopped"

        jobs.resume_job(run, runs)
        assert jobs.run_status(run, runs).status == "running"
        wait_for(lambda: jobs.current_job(runs) is None, what="the resumed job to finish")
        assert jobs.run_status(run, runs).status == "finished", jobs.log_tail(run)
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
