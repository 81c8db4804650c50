"""A multi-process (torchrun) run reads its STOP file while it prepares its data too: rank 0 reads it at each
preparation step and every rank follows, so all end before training together (ranks that disagreed would wait on
each other for ever), and rank 0 alone writes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from dermai import jobs
from dermai.train import JOB_LOG, OWNER_FILE, STOP_FILE, STOPPED_UNTRAINED, job_event_line
from tests.test_distributed import REPO, _torchrun


def test_two_processes_stop_before_training_when_rank_0_alone_sees_stop(ham_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / JOB_LOG).write_bytes(job_event_line(jobs.STARTED))  # as the app's launcher leaves it
    (run / STOP_FILE).touch()
    args = ["--data", str(ham_root), "--out", str(run), "--limit", "64", "--image-size", "32", "--quiet"]
    cmd = _torchrun(str(REPO / "tests" / "ddp_stop_check.py"), "train", *args, "--precision", "fp32")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DERMAI_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["status"] for r in reports] == ["stopped"], done.stderr[-2000:]  # rank 0 reports, once
    assert done.stderr.count("stopped before training started (STOP file); nothing was trained") == 1
    assert sorted(os.listdir(run)) == sorted([JOB_LOG, OWNER_FILE])  # nothing trained or written; STOP honoured
    assert (run / JOB_LOG).read_text().count(f"job {STOPPED_UNTRAINED}") == 1
