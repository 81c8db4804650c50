"""What a process killed outright (SIGKILL, out of memory) leaves behind, and how the app recovers: a trainer
whose starter died before recording it in the job lock, and the pixel-cache temporary of a killed decode. Each
is simulated with a real child process killed by SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dermai import jobs, run_status
from dermai.pixel_cache import load_pixels, prune_cache
from dermai.train import OWNER_FILE, run_lock_holder
from tests.test_app_pages import REPO, app_env, assert_clean, page  # noqa: F401  (app_env: a fixture)
from tests.test_interrupted_batches import _clinic
from tests.test_jobs import harmless, wait_for

CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # the children import this checkout's dermai

# The app as it launches a job and is killed (SIGKILL) at `sys.argv[2]`: "popen" as it would start the trainer,
# "record" as it would record the started trainer's pid in the lock. The trainer's command follows.
STARTER = """
import os, signal, sys
from pathlib import Path
from dermai import jobs
from dermai.pixel_cache import load_pixels, prune_cache

runs, at, trainer = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if at == "popen":
    jobs.subprocess.Popen = killed
else:
    jobs.write_json_atomic = killed
jobs._launch("finetune", runs / "orphan", trainer, runs)
"""
# A stand-in trainer: it owns its run folder as `train.run_lock` does (flock .owner, write its pid), then works.
TRAINER = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
    "os.write(fd, str(os.getpid()).encode()); time.sleep(120)"
)


def killed_starter(runs: Path, at: str, trainer: list[str]) -> None:
    """Run the app's launch of `trainer` in a child killed at `at` ("popen" or "record"; see STARTER)."""
    starter = subprocess.run([sys.executable, "-c", STARTER, str(runs), at, *trainer], env=CHILD_ENV, timeout=300)
    assert starter.returncode == -signal.SIGKILL


def orphaned_trainer(runs: Path) -> tuple[Path, int, list[str]]:
    """A trainer started by an app killed before it recorded the trainer's pid: its run folder, pid, command."""
    run = runs / "orphan"
    trainer = [sys.executable, "-c", TRAINER, str(run / OWNER_FILE)]
    killed_starter(runs, "record", trainer)
    wait_for(lambda: run_lock_holder(run) is not None, 120, "the trainer to take its run folder's lock")
    return run, int(str(run_lock_holder(run)).removeprefix("pid ")), trainer


def end(pid: int) -> None:
    """Kill a process this test left running (not our child: its starter died)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_a_trainer_whose_starter_died_before_recording_it_is_the_job_and_can_be_cancelled(tmp_path: Path) -> None:
    """The app killed between starting a trainer and writing its pid left an empty lock: "a job is starting" for
    10 s, then a "command-line run" that the page could neither cancel (no Cancel while it prepares its data) nor
    stop if it was an ensemble. The lock now names the run before the trainer starts, and the trainer that owns
    that run folder with the recorded command is the job."""
    runs = tmp_path / "runs"
    run, pid, trainer = orphaned_trainer(runs)
    try:
        job = jobs.current_job(runs)
        assert job is not None
        assert (job.pid, job.run_dir, job.stage, job.command) == (pid, str(run), "finetune", trainer)
        assert json.loads((runs / jobs.LOCK_NAME).read_text())["pid"] == pid  # recorded for good
        assert jobs.command_line_runs(runs) == []  # the app's job, not a run from a terminal
        assert run_status.run_status(run, runs).status == "running"
        with pytest.raises(jobs.JobError, match=f"already running: run 'orphan' \\(finetune, pid {pid}"):
            jobs.start_job("both", {}, runs, name="second")
        cancelled = jobs.cancel_job(runs, run)
        assert cancelled is not None and cancelled.pid == pid
        wait_for(lambda: run_lock_holder(run) is None, 60, "the cancelled trainer to end")
    finally:
        end(pid)
    assert jobs.current_job(runs) is None and not (runs / jobs.LOCK_NAME).exists()
    assert run_status.run_status(run, runs).status == "stopped"  # cancelled by the user


def test_the_training_page_shows_and_cancels_a_trainer_whose_starter_died(app_env: Path) -> None:  # noqa: F811
    runs = jobs.runs_dir()
    run, pid, _trainer = orphaned_trainer(runs)
    try:
        at = page("training").run()
        assert_clean(at)
        assert not [c.value for c in at.caption if "command line" in c.value]
        assert any("orphan" in p.proto.text for p in at.get("progress"))
        next(b for b in at.button if b.label == "Cancel").click()
        at.run()
        assert_clean(at)
        wait_for(lambda: run_lock_holder(run) is None, 60, "the cancelled trainer to end")
    finally:
        end(pid)


@pytest.mark.parametrize("at", ["popen", "record"])
def test_a_dead_starters_lock_blocks_new_jobs_only_for_the_starting_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: str
) -> None:
    """Killed before its trainer started ("popen"), or after starting one that ended before owning its folder
    ("record"): the lock names no live trainer, and reads as a starting job only for its first seconds."""
    runs = tmp_path / "runs"
    killed_starter(runs, at, [sys.executable, "-c", "pass"])
    lock = runs / jobs.LOCK_NAME
    assert lock.exists()
    then = time.time() - 60  # the starter died a minute ago
    os.utime(lock, (then, then))
    assert jobs.current_job(runs) is None and not lock.exists()
    monkeypatch.setattr(jobs, "build_command", lambda *args, **kwargs: harmless(0))
    job = jobs.start_job("both", {"image_size": 64}, runs, name="next")
    assert job.pid > 0 and job.name == "next"
    wait_for(lambda: jobs.current_job(runs) is None, 30, "the stand-in job to end")


# A decode of `sys.argv[2:]` into the pixel cache at `sys.argv[1]` that stalls on its second image, to be killed.
DECODER = """
import sys, time
from dermai import pixel_cache

real = pixel_cache.decode_image
def stalled(path, size):
    if path.endswith("1.png"):
        time.sleep(300)
    return real(path, size)
pixel_cache.decode_image = stalled
pixel_cache.load_pixels(sys.argv[2:], 32, cache_dir=sys.argv[1], workers=1)
"""


def test_a_killed_decodes_cache_temporary_goes_at_its_rerun_not_a_day_later(tmp_path: Path) -> None:
    """A decode killed outright (SIGKILL, out of memory) and rerun at once left its `.pixels-….tmp` (hundreds of
    MB) for a day: only its age told it from a decode in progress. Its name now records its writer (pid and
    host): a writer gone from this host is dead, and its temporary goes at once; another host's waits the day."""
    cache, images = tmp_path / "cache", [str(p) for p in _clinic(tmp_path / "clinic", 3)]
    decoder = subprocess.Popen([sys.executable, "-c", DECODER, str(cache), *images], env=CHILD_ENV)
    try:
        wait_for(lambda: any(cache.glob(".pixels-*.tmp")), 120, "the decode to start writing")
        [leftover] = cache.glob(".pixels-*.tmp")
        assert f".{decoder.pid}@" in leftover.name
        assert prune_cache(cache, cache / "pixels-other-32px.npy", limit=10**12) == []  # its writer is alive
        assert leftover.exists()
    finally:
        decoder.send_signal(signal.SIGKILL)
        decoder.wait()
    elsewhere = cache / re.sub(r"@[^.]+\.", "@elsewhere.", leftover.name)  # a writer on another host sharing the cache
    elsewhere.write_bytes(b"\0" * 10)
    pixels = load_pixels(images, 32, cache_dir=cache)  # the rerun
    assert pixels.shape == (3, 32, 32, 3) and not leftover.exists()
    assert elsewhere.exists()  # its pid means nothing here: it is kept until it is a day old
    assert sorted(p.name.startswith("pixels-") for p in cache.iterdir()) == [False, True]


def test_a_file_name_near_the_systems_limit_is_still_written_atomically(tmp_path: Path) -> None:
    """The temporary's name carries the file's name, the writer's pid and host (`safe_write._temporary_beside`): for a
    report named after a long upload (240 characters, under the usual 255 limit) it grew past the limit and the
    write failed with "File name too long". The file's name in the temporary is cut; the writer stays readable."""
    from dermai.safe_write import atomic_target, atomic_write_bytes, dead_writer

    target = tmp_path / ("a" * 235 + ".html")
    atomic_write_bytes(target, b"report")
    assert target.read_bytes() == b"report" and [p.name for p in tmp_path.iterdir()] == [target.name]
    with atomic_target(target) as tmp:
        assert len(tmp.name) <= 255 and tmp.name.startswith(".aaa") and not dead_writer(tmp.name)
