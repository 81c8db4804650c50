"""Bad inputs to the command line (a damaged checkpoint, an empty manifest, weights of another split, a
malformed --metadata row) end in one `error:` line naming the file, exit 2, before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dermai import jobs
from dermai.config import RunConfig, to_dict
from tests.test_cli_outputs import refused
from tests.test_jobs import stopped_run


def damaged_run(run: Path, kind: str) -> Path:
    """A stopped run folder (config.json) whose checkpoints/last.pt is damaged: random bytes, empty, or a real
    checkpoint cut short (as a copy interrupted, or a disk that filled while it was saved)."""
    (run / "checkpoints").mkdir(parents=True)
    saved = to_dict(RunConfig(stage="finetune"))
    (run / "config.json").write_text(json.dumps({"config": saved, "command": "python -m dermai"}))
    last = run / "checkpoints" / "last.pt"
    if kind == "random":
        last.write_bytes(bytes(range(256)) * 20)
    elif kind == "empty":
        last.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"model": {"w": torch.zeros(20000)}, "stage": "pretrain", "epoch": 0, "batch": 1}, last)
        last.write_bytes(last.read_bytes()[:40000])
    else:  # readable, but not a checkpoint of a run
        torch.save({"weights": torch.zeros(3)}, last)
    return last


@pytest.mark.parametrize("kind", ["random", "empty", "truncated", "foreign"])
def test_resume_from_a_damaged_checkpoint_names_it(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Random bytes and an empty file ended in a traceback (UnpicklingError, EOFError), a truncated one in
    torch's zip error naming no file."""
    last = damaged_run(tmp_path / "run", kind)
    err = refused(["finetune", "--out", str(tmp_path / "run"), "--resume", "--quiet"], capsys)
    assert err.startswith(f"error: {last}: damaged checkpoint (") and "delete it to start over" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_the_apps_resume_refuses_a_damaged_checkpoint_in_the_trainers_words(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = stopped_run(runs, "cut")
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(jobs.JobError, match=rf"^{last}: damaged checkpoint \("):
        jobs.resume_job(run, runs)
    assert jobs.current_job(runs) is None  # nothing launched
