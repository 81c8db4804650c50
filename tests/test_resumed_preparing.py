"""A resumed run prepares its data again (minutes at a new image size) before it trains, and its STOP then ends it
before training: the Training page's "Current job" must show that preparing state and its control, not the Stop
"after the current step" that its earlier sessions' metrics used to bring."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from dermai import jobs, run_status
from dermai.train import STOP_FILE, read_metrics, train
from dermai.ui import runs_view
from tests.test_app_pages import app_env, assert_clean, page  # noqa: F401 (app_env: a fixture)
from tests.test_jobs import held, stopped_run
from tests.test_page_training import STOPS
from tests.test_train import tiny_config

TRAINING_STOP_HELP = "Ends after the current step with a checkpoint; resume it later"


def earlier_session(runs: Path, name: str) -> Path:
    """A run stopped an hour ago after an epoch: its metrics (a step, an epoch, its status) and checkpoint."""
    run = stopped_run(runs, name)
    hour_ago = time.time() - 3600
    records = [
        {"time": hour_ago, "kind": "epoch", "stage": "pretrain", "epoch": 0, "global_step": 3, "total_steps": 9},
        {"time": hour_ago, "kind": "status", "status": "stopped", "weights": None, "best_score": None},
    ]
    with open(run / "metrics.jsonl", "a") as log:
        log.write("".join(json.dumps(r) + "\n" for r in records))
    return run


def trained_a_step(run: Path) -> None:
    """What the resumed trainer writes once it trains: a step record, stamped now."""
    step = {"time": time.time(), "kind": "step", "stage": "pretrain", "epoch": 1, "global_step": 4, "total_steps": 9}
    with open(run / "metrics.jsonl", "a") as log:
        log.write(json.dumps(step) + "\n")


def app_job(run: Path) -> subprocess.Popen[bytes]:
    """The app's job lock naming `run` (a resume it launched), with a stand-in for its process."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "dermai"], start_new_session=True)
    record = {"pid": process.pid, "run_dir": str(run), "stage": "both", "command": [], "started": time.time()}
    (run.parent / jobs.LOCK_NAME).write_text(json.dumps(record))
    return process


def controls(at: object) -> dict[str, str | None]:
    return {b.label: b.help for b in at.button if b.label in STOPS}  # type: ignore[attr-defined]


def preparing_page() -> AppTest:
    """The Training page, rendered clean, showing its current job as preparing its data."""
    at = page("training").run()
    assert_clean(at)
    captions = [c.value for c in at.caption]
    assert "Preparing data (the first run at a new image size decodes the pixel cache)…" in captions
    return at


def test_only_steps_written_since_the_trainer_took_the_folder_count_as_training(tmp_path: Path) -> None:
    run = earlier_session(tmp_path / "runs", "resumed")
    assert not run_status.trained_this_job(run, read_metrics(run))  # no trainer holds it: nothing trains now
    holder = held(run)
    try:
        assert not run_status.trained_this_job(run, read_metrics(run))  # the earlier session's steps only
        trained_a_step(run)
        assert run_status.trained_this_job(run, read_metrics(run))
    finally:
        holder.kill()
        holder.wait()


def test_an_app_resumed_job_preparing_its_data_is_cancelled_until_it_trains_again(app_env: Path) -> None:  # noqa: F811
    runs = Path(jobs.runs_dir())
    run = earlier_session(runs, "resumed")
    trainer = held(run)  # the resumed trainer took the folder's lock and prepares its data
    process = app_job(run)
    try:
        at = preparing_page()
        assert controls(at) == {"Cancel": runs_view.RESUMED_CANCEL_HELP}  # as for a new job: nothing to stop after
        assert len(at.get("plotly_chart")) == 2  # its earlier curves, live and in the runs list
        trained_a_step(run)
        at.run()
        assert_clean(at)
        assert controls(at) == {"Stop": TRAINING_STOP_HELP}
        assert not any(c.value.startswith("Preparing data") for c in at.caption)
    finally:
        for p in (trainer, process):
            p.kill()
            p.wait()


def test_a_command_line_resume_preparing_its_data_says_its_stop_keeps_the_checkpoint(app_env: Path) -> None:  # noqa: F811
    runs = Path(jobs.runs_dir())
    run = earlier_session(runs, "cli-resumed")
    holder = held(run)
    try:
        at = preparing_page()
        assert controls(at) == {"Stop": runs_view.RESUMED_PREPARING_STOP_HELP}
        next(b for b in at.button if b.label == "Stop").click()
        at.run()
        assert_clean(at)
        assert (run / STOP_FILE).exists()
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()


def test_a_resumed_run_logs_its_first_step_whatever_its_logging_interval(ham_root: Path, tmp_path: Path) -> None:
    """The first step a trainer takes is logged, so the page sees at once that the resumed run trains again."""
    cfg = tiny_config(ham_root, log_every=1000, batch_size=4)
    run = tmp_path / "run"
    assert train(cfg, run, callback=lambda r: r.get("kind") != "step").status == "stopped"  # after its first step
    stop_at = len(read_metrics(run))
    assert train(cfg, run, resume=True, callback=lambda r: r.get("kind") != "step").status == "stopped"
    steps = [r for r in read_metrics(run)[stop_at:] if r.get("kind") == "step"]
    assert [(r["step"], r["global_step"]) for r in steps] == [(1, 2)]  # the first step of the resumed job
